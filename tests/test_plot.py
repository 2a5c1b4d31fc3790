"""plot.py: the PNG line plots the study draws (numpy raster, PyAV encoder)."""

import math

import av
import numpy as np

from pictures import figures
from pictures import plot


def test_nice_ticks_cover_the_range_with_round_steps():
    ticks = plot.nice_ticks(0.93, 3.17)
    assert ticks[0] <= 0.93 and ticks[-1] >= 3.17 and 4 <= len(ticks) <= 8
    steps = np.diff(ticks)
    assert np.allclose(steps, steps[0]) and steps[0] in (0.2, 0.5, 1.0)
    flat = plot.nice_ticks(1.0, 1.0)  # a series that never moves (e.g. a short run's first measurements)
    assert flat[0] < 1.0 < flat[-1]


def test_text_draws_ink_in_its_box_only():
    image = np.full((20, 60, 3), 255, np.uint8)
    figures.text(image, 2, 3, "ab 1.0")
    ink = (image < 255).any(-1)
    rows, cols = np.nonzero(ink)
    assert ink.any() and rows.min() >= 3 and rows.max() < 3 + 5 * figures.FONT_SCALE
    assert cols.min() >= 2 and cols.max() < 2 + figures.text_width("ab 1.0")


def test_line_plots_png_has_every_series_colour(tmp_path):
    series = [("flat", [(0, 1.0), (100, 2.5), (200, 3.1)]), ("texture", [(0, 1.0), (100, math.nan), (200, 1.1)])]
    path = tmp_path / "curves.png"
    plot.save_line_plots(path, ["enrichment", "again"], [series, series], x_label="step")
    with av.open(str(path)) as container:
        image = next(container.decode(video=0)).to_ndarray(format="rgb24")
    assert image.shape[1] == 2 * (plot.PANEL_W + 2 * plot.MARGIN) and image.shape[0] > plot.PANEL_H
    for colour in plot.PALETTE[:2]:
        assert (image == colour).all(-1).sum() > 100  # drawn lines and legend swatches


def test_a_series_of_one_point_is_drawn_as_a_dot():
    image = plot.panel("one epoch", [("a", [(0, 1.0), (10, 2.0)]), ("b", [(5, 1.5)])], x_label="step")
    dot = (image == plot.PALETTE[1]).all(-1)
    rows, cols = np.nonzero(dot)
    assert 0 < dot.sum() <= 36 and np.ptp(rows) < 6 and np.ptp(cols) < 6  # a 6 x 6 dot, no segment

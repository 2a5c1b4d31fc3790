"""Line plots as PNG with numpy only (the project has no plotting library): axes, ticks, lines, a
legend, and labels in figures.py's bitmap font. Written with `figures.save_png` (PyAV).

    save_line_plots("curves.png", ["loss"], [[("run a", [(0, 1.0), (100, 0.5)]), ...]], x_label="step")
"""

import math

import numpy as np

from pictures.figures import save_png, text, text_width

PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
PANEL_W, PANEL_H, MARGIN = 420, 260, 48


def line(image, p, q, colour, width=2):
    """A straight segment from p to q (x, y floats), `width` pixels thick, by dense sampling."""
    n = int(max(abs(q[0] - p[0]), abs(q[1] - p[1]))) + 1
    for s in np.linspace(0, 1, n + 1):
        x, y = round(p[0] + s * (q[0] - p[0])), round(p[1] + s * (q[1] - p[1]))
        image[max(y - width // 2, 0):y + (width + 1) // 2, max(x - width // 2, 0):x + (width + 1) // 2] = colour


def nice_ticks(lo, hi, count=5):
    """About `count` round tick values covering [lo, hi] (a unit range around a flat series)."""
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    raw = (hi - lo) / count
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 5, 10) if step * m >= raw)
    return [k * step for k in range(math.floor(lo / step), math.ceil(hi / step) + 1)]


def panel(title, series, x_label):
    """One plot (PANEL_H + 2 * MARGIN, PANEL_W + 2 * MARGIN, 3) of series [(name, [(x, y)])]."""
    image = np.full((PANEL_H + 2 * MARGIN, PANEL_W + 2 * MARGIN, 3), 255, np.uint8)
    points = [(x, y) for _, pts in series for x, y in pts if math.isfinite(y)]
    xs, ys = [x for x, _ in points], [y for _, y in points]
    x_ticks, y_ticks = nice_ticks(min(xs), max(xs)), nice_ticks(min(ys), max(ys))
    (x_lo, x_hi), (y_lo, y_hi) = (x_ticks[0], x_ticks[-1]), (y_ticks[0], y_ticks[-1])

    def at(x, y):  # data -> pixel (column, row)
        return (MARGIN + (x - x_lo) / (x_hi - x_lo) * PANEL_W,
                MARGIN + PANEL_H - (y - y_lo) / (y_hi - y_lo) * PANEL_H)

    for y in y_ticks:
        line(image, at(x_lo, y), at(x_hi, y), (225, 225, 225), width=1)
        label = f"{y:g}"
        text(image, MARGIN - 6 - text_width(label), round(at(x_lo, y)[1]) - 5, label)
    for x in x_ticks:
        text(image, round(at(x, y_lo)[0]) - text_width(f"{x:g}") // 2, MARGIN + PANEL_H + 6, f"{x:g}")
    line(image, at(x_lo, y_lo), at(x_hi, y_lo), (0, 0, 0), width=1)
    line(image, at(x_lo, y_lo), at(x_lo, y_hi), (0, 0, 0), width=1)
    for k, (_, pts) in enumerate(series):
        pts = [(x, y) for x, y in pts if math.isfinite(y)]
        for p, q in zip(pts, pts[1:] or pts):  # a series of one point is drawn as a dot
            line(image, at(*p), at(*q), PALETTE[k % len(PALETTE)], width=2 if len(pts) > 1 else 6)
    text(image, MARGIN, MARGIN // 2 - 5, title)
    text(image, MARGIN + PANEL_W - text_width(x_label), MARGIN + PANEL_H + 26, x_label)
    return image


def legend(names, width):
    """Rows of colour swatches and names, wrapped to `width` pixels."""
    x, y, entries = MARGIN, 8, []
    for k, name in enumerate(names):
        w = 30 + text_width(name) + 24
        if x + w > width:
            x, y = MARGIN, y + 20
        entries.append((x, y, k, name))
        x += w
    image = np.full((y + 24, width, 3), 255, np.uint8)
    for x, y, k, name in entries:
        line(image, (x, y + 5), (x + 22, y + 5), PALETTE[k % len(PALETTE)], width=3)
        text(image, x + 30, y, name)
    return image


def save_line_plots(path, titles, panels, x_label):
    """Panels side by side (one per title, each a list of (name, [(x, y)]) series with the same names
    in the same order) over one shared legend, as a PNG."""
    image = np.concatenate([panel(t, s, x_label) for t, s in zip(titles, panels)], axis=1)
    image = np.concatenate([image, legend([name for name, _ in panels[0]], image.shape[1])], axis=0)
    save_png(image[: image.shape[0] // 2 * 2, : image.shape[1] // 2 * 2], path)

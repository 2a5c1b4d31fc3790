"""Shared fixtures: tiny real videos written with PyAV, made once per test session."""

import numpy as np
import pytest
import torch

from demo.synthetic import make_synthetic, write_video

# Tiny test models on a 2-core machine: intra-op threads only spin against each other.
torch.set_num_threads(1)

GREY_STEP = 6  # frame i of the numbered video is a solid grey of level GREY_STEP * i
NUMBERED_FRAMES = 40


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """A small synthetic set (8 videos, 32 frames, 64 px); `make_synthetic` returns its paths."""
    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic(root, num_videos=8, num_frames=32, size=64)
    return root


@pytest.fixture(scope="session")
def numbered_video(tmp_path_factory):
    """A 40-frame 32x48 MP4 whose frame i is a solid grey of level 6 * i. A short keyframe
    interval (x264 puts them at 0, 7, 14, ...) and B-frames exercise seeking and reordering."""
    levels = GREY_STEP * np.arange(NUMBERED_FRAMES, dtype=np.uint8)
    frames = np.repeat(levels[:, None, None, None], 32 * 48 * 3).reshape(-1, 32, 48, 3)
    path = tmp_path_factory.mktemp("numbered") / "numbered.mp4"
    write_video(path, frames, options={"g": "8", "bf": "2", "preset": "fast"})
    return path


@pytest.fixture(scope="session")
def frame_number():
    """Decoded numbered frame(s) (..., H, W, 3) uint8 -> the index(es) they encode."""
    def number(frames):
        levels = np.asarray(frames, dtype=np.float64).mean(axis=(-3, -2, -1))
        return np.rint(levels / GREY_STEP).astype(int).tolist()
    return number

"""augment.py and the fine-tuning train transform: RandAugment's draws and magnitudes, the ops at their
extremes, random erasing, and that one draw reaches every frame of a clip."""

import numpy as np
import pytest
import torch

import finetune
from augment import INCREASING_OPS, OPS, draw_rand_augment, parse_rand_augment, rand_augment, random_erasing
from data import VideoDataset, train_transform

RAND_AUG = "rand-m7-n4-mstd0.5-inc1"  # the authors' fine-tuning


def draws(spec, count=3000, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [draw_rand_augment(spec, g) for _ in range(count)]


def test_spec_is_parsed_and_malformed_specs_are_refused():
    assert parse_rand_augment(RAND_AUG) == (7.0, 4, 0.5, INCREASING_OPS) and len(INCREASING_OPS) == 15
    magnitude, num_ops, std, ops = parse_rand_augment("rand-m9-n2")
    assert (magnitude, num_ops, std) == (9.0, 2, 0.0) and "Posterize" in ops and "PosterizeIncreasing" not in ops
    for bad in ("auto-m7", "rand-m7-x3", "rand-mfast"):
        with pytest.raises(ValueError, match="RandAugment spec"):
            parse_rand_augment(bad)


def test_draws_choose_four_ops_each_kept_half_the_time_at_noisy_magnitude_7():
    clips = draws(RAND_AUG)
    counts = [len(ops) for ops in clips]
    assert max(counts) <= 4 and abs(np.mean(counts) - 2.0) < 0.1  # 4 ops, each applied with p = 0.5
    applied = [op for ops in clips for op in ops]
    assert {name for name, _ in applied} == set(INCREASING_OPS)  # every op of the inc1 list, and only those
    by_name = {}
    for name, arg in applied:
        by_name.setdefault(name, []).append(arg)
    rotate = np.array(by_name["Rotate"])
    level = np.abs(rotate) / 3.0  # 30 degrees at level 10
    assert np.abs(rotate).max() <= 30 and abs(level.mean() - 7) < 0.1 and abs(level.std() - 0.5) < 0.1
    assert 0.3 < (rotate > 0).mean() < 0.7  # random sign
    assert max(np.abs(by_name["ShearX"])) <= 0.3 and max(np.abs(by_name["TranslateYRel"])) <= 0.45
    for name in ("ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing"):
        factors = np.array(by_name[name])
        assert factors.min() >= 0.1 and factors.max() <= 1.9 and (np.abs(factors - 1) > 0.4).all()  # 1 -+ 0.63
    assert set(by_name["PosterizeIncreasing"]) <= {1, 2, 3}  # 4 - int(0.4 * level) bits kept
    thresholds = np.array(by_name["SolarizeIncreasing"])  # 256 - int(25.6 * level)
    assert thresholds.min() >= 0 and thresholds.max() <= 256 and abs(thresholds.mean() - (256 - 25.6 * 7)) < 3
    assert all(0 <= a <= 110 for a in by_name["SolarizeAdd"])
    levels = [abs(arg) / 3.0 for ops in draws("rand-m10-n4-mstd0.5", 1000) for name, arg in ops if name == "Rotate"]
    assert max(levels) <= 10 + 1e-9 and np.mean(levels) < 10  # magnitudes clipped to [0, 10]


def test_ops_at_their_extremes():
    g = torch.Generator().manual_seed(0)
    clip = torch.rand(2, 3, 12, 16, generator=g)
    assert torch.allclose(rand_augment(clip, [("Invert", None), ("Invert", None)]), clip)
    for name, neutral in [("BrightnessIncreasing", 1.0), ("ColorIncreasing", 1.0), ("ContrastIncreasing", 1.0),
                          ("SharpnessIncreasing", 1.0), ("SolarizeIncreasing", 256), ("SolarizeAdd", 0),
                          ("Rotate", 0.0), ("ShearX", 0.0), ("TranslateYRel", 0.0)]:
        torch.testing.assert_close(rand_augment(clip, [(name, neutral)]), clip, atol=1e-5, rtol=0, msg=name)
    assert torch.allclose(OPS["Solarize"](clip, 0), 1 - clip)                # threshold 0 inverts every value
    assert OPS["Posterize"](clip, 0).max() == 0                              # 0 bits kept: black
    assert OPS["Brightness"](clip, 0.1).max() <= 0.1                         # towards black
    grey = OPS["Color"](clip, 0.0)
    assert torch.allclose(grey[:, 0], grey[:, 1], atol=1e-6)                 # colour factor 0: grey
    stretched = OPS["AutoContrast"](0.25 + 0.5 * clip, None)
    assert torch.allclose(stretched.amin(dim=(2, 3)), torch.zeros(2, 3)) and torch.allclose(
        stretched.amax(dim=(2, 3)), torch.ones(2, 3))
    two_levels = torch.where(torch.rand(1, 3, 64, 64, generator=g) < 0.5, 0.2, 0.6)
    assert torch.unique(OPS["Equalize"](two_levels, None)).tolist() == [0.0, 1.0]  # spread to the ends
    assert torch.equal(OPS["Equalize"](two_levels[..., :8, :8], None), two_levels[..., :8, :8])  # < 255 px: as is
    shifted = OPS["TranslateXRel"](clip, 0.25)                               # content moves left by 4 of 16
    torch.testing.assert_close(shifted[..., :12], clip[..., 4:], atol=1e-5, rtol=0)
    torch.testing.assert_close(shifted[..., 13:], torch.full_like(shifted[..., 13:], 128 / 255), atol=1e-5, rtol=0)


def clip_of(frames):
    """(T, H, W, 3) uint8 numpy clip from a list of (H, W, 3) frames."""
    return np.stack(frames).astype(np.uint8)


@pytest.fixture
def frames():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (40, 56, 3))
    b = rng.integers(0, 256, (40, 56, 3))
    return a, b


def test_identical_frames_stay_identical_through_the_whole_train_transform(frames):
    a, _ = frames
    clip = clip_of([a] * 6)
    changed = 0
    for seed in range(12):
        g = torch.Generator().manual_seed(seed)
        out = train_transform(clip, 32, scale=(0.08, 1.0), generator=g, rand_aug="rand-m9-n4-mstd0.5-inc1")
        assert out.shape == (3, 6, 32, 32) and out.dtype == torch.float32 and torch.isfinite(out).all()
        assert all(torch.equal(out[:, t], out[:, 0]) for t in range(6)), seed
        plain = train_transform(clip, 32, scale=(0.08, 1.0), generator=torch.Generator().manual_seed(seed))
        changed += not torch.allclose(out, plain)
    assert changed >= 6  # RandAugment did act on most clips


def test_every_frame_gets_the_transform_it_would_get_alone(frames):
    a, b = frames
    for seed in range(8):
        kwargs = dict(scale=(0.08, 1.0), rand_aug=RAND_AUG)
        out = train_transform(clip_of([a, b, a, b]), 32, generator=torch.Generator().manual_seed(seed), **kwargs)
        alone_a = train_transform(clip_of([a]), 32, generator=torch.Generator().manual_seed(seed), **kwargs)
        alone_b = train_transform(clip_of([b]), 32, generator=torch.Generator().manual_seed(seed), **kwargs)
        torch.testing.assert_close(out[:, 0], alone_a[:, 0], atol=1e-5, rtol=0)
        torch.testing.assert_close(out[:, 1], alone_b[:, 0], atol=1e-5, rtol=0)
        assert torch.equal(out[:, 0], out[:, 2]) and torch.equal(out[:, 1], out[:, 3])


def test_random_erasing_cuts_the_same_box_from_every_frame(frames):
    a, _ = frames
    clip = clip_of([a] * 5)
    for seed in range(10):
        kept = train_transform(clip, 32, generator=torch.Generator().manual_seed(seed), rand_aug=RAND_AUG)
        out = train_transform(clip, 32, generator=torch.Generator().manual_seed(seed), rand_aug=RAND_AUG, reprob=1.0)
        erased = (out != kept).any(dim=0)                           # (T, H, W): where erasing wrote
        box = erased[0]
        rows, cols = box.any(dim=1).nonzero().flatten(), box.any(dim=0).nonzero().flatten()
        top, left, h, w = rows[0], cols[0], len(rows), len(cols)
        assert box[top:top + h, left:left + w].all() and box.sum() == h * w  # one rectangle
        assert all(torch.equal(erased[t], box) for t in range(5))  # the same on every frame
        assert 0.02 * 32 * 32 - 2 * 32 <= h * w <= 32 * 32 / 3 + 2 * 32
        noise = out[:, :, top:top + h, left:left + w]
        assert not torch.equal(noise[:, 0], noise[:, 1])          # fresh N(0, 1) noise per frame, as VideoMAE
    big = random_erasing(torch.zeros(3, 4, 64, 64), 1.0, torch.Generator().manual_seed(3), area=(0.3, 0.33))
    values = big[big != 0]
    assert abs(values.mean()) < 0.05 and abs(values.std() - 1) < 0.05
    untouched = torch.zeros(3, 4, 8, 8)
    assert random_erasing(untouched, 0.0) is untouched


def test_finetuning_defaults_and_switches(synthetic_root):
    args = finetune.get_args(["--data", "a.csv"])[0]
    assert (args.min_scale, args.rand_aug, args.reprob) == (0.08, RAND_AUG, 0.25)
    off = finetune.get_args(["--data", "a.csv", "--rand_aug", "", "--reprob", "0", "--min_scale", "0.5"])[0]
    assert (off.min_scale, off.rand_aug, off.reprob) == (0.5, "", 0.0)
    dataset = VideoDataset(synthetic_root / "train.csv", num_frames=8, stride=2, img_size=32, scale=(0.08, 1.0),
                           rand_aug=RAND_AUG, reprob=0.25)
    clip, label, skipped = dataset[0]
    assert clip.shape == (3, 8, 32, 32) and clip.dtype == torch.float32 and skipped.max() == -1  # none failed
    with pytest.raises(ValueError, match="unknown section"):
        VideoDataset(synthetic_root / "train.csv", rand_aug="rand-m7-q3")

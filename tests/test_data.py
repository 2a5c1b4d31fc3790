"""data.py on real tiny videos: exact frame indices, sampling positions, transforms that keep
frames aligned, the bad-file policy, and the synthetic set's determinism and boxes."""

import json
import warnings

import av
import numpy as np
import pytest
import torch

from data import (VideoDataset, VideoError, _as_float, _pick_frames, _resize, clip_indices, decode_frames,
                  dense_indices, eval_crops, find_videos, load_samples, random_resized_crop_box, read_frames,
                  read_list, scale_frames, segment_indices, spatial_offsets, temporal_starts, to_rgb,
                  train_transform, video_length)
from demo.synthetic import BACKGROUNDS, draw_clutter, draw_video, load_boxes, make_synthetic, write_video
from metrics import load_enrichment_clips
from test_model import small_cfg
from tokenizer import IMAGENET_MEAN, IMAGENET_STD

MEAN, STD = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)


def pixels(clip):
    """Normalised (3, T, H, W) clip -> (T, H, W, 3) values in 0..255, as decoded."""
    return ((clip.permute(1, 2, 3, 0) * STD + MEAN) * 255).numpy()


def remux_faststart(src, dst):
    """Copy an MP4 with its index (moov atom) moved to the front, as web-ready files have it."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is not None:  # skip the flush packet demux ends with
                packet.stream = stream
                out.mux(packet)


def synthetic_video(root, name):
    frames = decode_frames(root / name, range(video_length(root / name)), seek=False)
    return frames.astype(np.int16)


# ----------------------------------------------------------------------------- sources

def test_read_list_resolves_paths_and_allows_spaces(tmp_path):
    (tmp_path / "lists").mkdir()
    lst = tmp_path / "lists" / "train.csv"
    lst.write_text("a.mp4 3\n\n/abs/b c.mp4 0\r\nsub/my video.mp4 12\n")
    assert read_list(lst) == [(str(tmp_path / "lists" / "a.mp4"), 3), ("/abs/b c.mp4", 0),
                              (str(tmp_path / "lists" / "sub" / "my video.mp4"), 12)]


def test_read_list_videomae_v2_pretraining_form_and_data_root(tmp_path):
    """`path 0 -1` (VideoMAEv2's pre-training lists) is label -1; --data_root replaces the list's folder as the
    prefix of relative paths, and load_samples passes it on."""
    lst = tmp_path / "lists" / "pretrain.txt"
    lst.parent.mkdir()
    lst.write_text("k400/a b.mp4 0 -1\n/abs/c.mp4 0 -1\nk400/d.mp4 7\n")
    assert read_list(lst) == [(str(tmp_path / "lists/k400/a b.mp4"), -1), ("/abs/c.mp4", -1),
                              (str(tmp_path / "lists/k400/d.mp4"), 7)]
    assert load_samples(lst, data_root="/data") == [("/data/k400/a b.mp4", -1), ("/abs/c.mp4", -1),
                                                    ("/data/k400/d.mp4", 7)]


@pytest.mark.parametrize("bad", ["video.mp4", "video.mp4 cat", "video.mp4 -1", "video.mp4 1.5",
                                 "video.mp4 3 -1"])
def test_read_list_malformed_line_names_file_and_line(tmp_path, bad):
    lst = tmp_path / "list.txt"
    lst.write_text(f"ok.mp4 0\n\n{bad}\n")
    with pytest.raises(ValueError, match=rf"list\.txt:3: .*{bad}"):
        read_list(lst)


def test_find_videos_flat_and_per_class(tmp_path):
    for name in ["flat/x.mp4", "flat/deep/y.MKV", "flat/notes.txt",
                 "cls/b_dog/1.mp4", "cls/a_cat/2.webm", "cls/a_cat/3.avi"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    flat = find_videos(tmp_path / "flat")
    assert flat == [(str(tmp_path / "flat/deep/y.MKV"), -1), (str(tmp_path / "flat/x.mp4"), -1)]
    assert find_videos(tmp_path / "cls") == [(str(tmp_path / "cls/a_cat/2.webm"), 0),
                                             (str(tmp_path / "cls/a_cat/3.avi"), 0),
                                             (str(tmp_path / "cls/b_dog/1.mp4"), 1)]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no videos found"):
        load_samples(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_samples(tmp_path / "nowhere")


# ----------------------------------------------------------------------------- decoding

def test_decode_exact_frames_seek_and_no_seek_agree(numbered_video, frame_number):
    assert video_length(numbered_video) == 40
    indices = [17, 3, 3, 25, 38, 39, 9]  # unsorted, repeated, across several keyframe intervals
    sought = decode_frames(numbered_video, indices)
    linear = decode_frames(numbered_video, indices, seek=False)
    assert sought.shape == (7, 32, 48, 3) and sought.dtype == np.uint8
    assert frame_number(sought) == indices
    np.testing.assert_array_equal(sought, linear)
    assert _pick_frames(numbered_video, [17, 25], seek=True) is not None  # landed, no fallback
    for start in (0, 7, 8, 22):  # every position relative to a keyframe
        assert frame_number(decode_frames(numbered_video, [start, start + 1])) == [start, start + 1]


def test_length_of_container_without_frame_count_counts_packets(tmp_path, numbered_video,
                                                                 frame_number):
    frames = decode_frames(numbered_video, range(40), seek=False)
    mkv = tmp_path / "numbered.mkv"  # Matroska stores no frame count
    write_video(mkv, frames, options={"g": "8"})
    with av.open(str(mkv)) as container:
        assert container.streams.video[0].frames == 0
    assert video_length(mkv) == 40
    assert frame_number(decode_frames(mkv, [30, 12, 39])) == [30, 12, 39]


def test_short_video_pads_with_last_frame(numbered_video, frame_number):
    assert clip_indices(10, 4, 4, start=0) == [0, 4, 8, 9]
    assert frame_number(decode_frames(numbered_video, [38, 39, 45, 50])) == [38, 39, 39, 39]
    ds = VideoDataset([(str(numbered_video), 0)], num_frames=16, stride=4, img_size=32, train=False)
    clip, label, skipped = ds[0]
    assert clip.shape == (3, 16, 32, 32) and (label, skipped) == (0, 0)
    assert frame_number(pixels(clip)) == [0, 4, 8, 12, 16, 20, 24, 28, 32, 36] + [39] * 6


def test_truncated_faststart_mp4_decodes_what_exists(tmp_path, numbered_video, frame_number):
    # With the index (moov) at the front, a cut file still opens: the header claims 40 frames,
    # the frames before the cut decode, the rest repeat the last of them. Not a bad file.
    faststart = tmp_path / "faststart.mp4"
    remux_faststart(numbered_video, faststart)
    data = faststart.read_bytes()
    faststart.write_bytes(data[:len(data) * 3 // 4])  # past the first keyframe (700 B)
    assert video_length(faststart) == 40
    got = frame_number(decode_frames(faststart, [0, 5, 30, 39]))
    last = got[-1]
    assert 5 <= last < 30 and got == [0, 5, last, last]
    assert got == frame_number(decode_frames(faststart, [0, 5, 30, 39], seek=False))


def test_skipping_unwanted_frames_decodes_the_same_frames(numbered_video, frame_number):
    # The numbered video has B-frames (bf=2): the decoder drops the non-reference ones it is not asked for.
    for indices in ([17, 3, 3, 25, 38, 39, 9], [1, 5, 9, 13], [0, 2]):
        exact = decode_frames(numbered_video, indices)
        skipped = to_rgb(read_frames(numbered_video, indices, skip_unwanted=True))
        threaded = to_rgb(read_frames(numbered_video, indices, skip_unwanted=True, threads=0))
        np.testing.assert_array_equal(skipped, exact)
        np.testing.assert_array_equal(threaded, exact)
        assert frame_number(skipped) == indices


def textured_frames(seed, width=160, height=120, frames=4):
    """uint8 (T, H, W, 3): random colours in 4x4 cells, panning 3 px per frame (hard, saturated edges)."""
    cells = np.random.default_rng(seed).integers(0, 256, (height // 4, (width + 3 * frames) // 4 + 1, 3))
    texture = cells.repeat(4, axis=0).repeat(4, axis=1).astype(np.uint8)
    return np.stack([texture[:, 3 * i:3 * i + width] for i in range(frames)])


def exact_crop(rgb, box, size):
    """The exact path: full-resolution RGB -> crop in torch -> antialiased bilinear resize, in [0, 1]."""
    top, left, h, w = box
    return _resize(_as_float(rgb[:, top:top + h, left:left + w]), size)


def test_fast_crop_matches_the_exact_path_within_resize_tolerance(tmp_path):
    # Tolerance, in [0, 1] units. The two paths resample differently: the exact one upsamples chroma by
    # repetition to full-resolution RGB and then resizes with torch's antialiased bilinear; the fast one
    # scales the luma and the half-resolution chroma planes separately with swscale's bilinear (its own
    # kernel width and rounding) and interpolates chroma only at the output. On a smooth gradient that
    # leaves rounding: < 0.01 mean, < 0.04 anywhere (measured 0.005 and 0.028). On saturated random 4-px
    # colour cells, the worst case for 4:2:0 chroma, the colour of a cell edge differs a lot at single
    # pixels (RGB mean < 0.06, measured up to 0.05; single pixels up to 0.95), but luma, which carries the
    # geometry, stays close: mean < 0.01, max < 0.1 (measured 0.005 and 0.073).
    y, x = np.mgrid[:120, :160]
    gradient = np.stack([x * 255 / 159, y * 255 / 119, (x + y) * 255 / 278], -1).round().astype(np.uint8)
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    generator = torch.Generator().manual_seed(0)
    for name, frames in (("gradient", np.repeat(gradient[None], 4, axis=0)), ("texture", textured_frames(0))):
        write_video(tmp_path / f"{name}.mp4", frames)
        decoded = read_frames(tmp_path / f"{name}.mp4", range(4))
        rgb = to_rgb(decoded)
        for size in ((64, 64), (224, 224)):  # shrink and enlarge
            for _ in range(4):
                box = random_resized_crop_box(120, 160, generator=generator)
                exact, fast = exact_crop(rgb, box, size), _as_float(scale_frames(decoded, size, box))
                diff, luma_diff = (fast - exact).abs(), ((fast - exact) * luma).sum(1).abs()
                if name == "gradient":
                    assert diff.mean() < 0.01 and diff.max() < 0.04, (box, size)
                else:
                    assert diff.mean() < 0.06 and luma_diff.mean() < 0.01 and luma_diff.max() < 0.1, (box, size)


def test_fast_crop_puts_a_marker_where_the_box_says(tmp_path):
    # A white 8x8 square at rows 40..47, cols 100..107 of a black 160x120 video; boxes at even and odd
    # offsets, scaled 2x: the marker's centre (44, 104 in continuous source coordinates) lands at
    # ((44 - top) * 2, (104 - left) * 2) in the output. Then the training views of both paths, from the
    # same seed: the same boxes and flips put the marker in the same column of each view.
    frames = np.zeros((2, 120, 160, 3), np.uint8)
    frames[:, 40:48, 100:108] = 255
    write_video(tmp_path / "marker.mp4", frames)
    decoded = read_frames(tmp_path / "marker.mp4", [0, 1])
    rows, cols = np.mgrid[:64, :64] + 0.5  # pixel centres of the 64x64 output
    for top, left in ((24, 80), (25, 83)):
        out = scale_frames(decoded, (64, 64), (top, left, 32, 32)).astype(float).mean(-1)
        for image in out:
            weight = image / image.sum()
            assert (weight * rows).sum() == pytest.approx((44 - top) * 2, abs=0.3)
            assert (weight * cols).sum() == pytest.approx((104 - left) * 2, abs=0.3)
    views = {}
    for decode in ("fast", "exact"):
        torch.manual_seed(3)
        ds = VideoDataset([(str(tmp_path / "marker.mp4"), 0)], num_frames=2, stride=1, img_size=48,
                          scale=(0.2, 0.2), repeat_aug=4, decode=decode)
        views[decode] = ds[0][0]
    assert (views["fast"] - views["exact"]).abs().mean() < 0.05 * 4  # normalised units (std ~0.23)
    marker_col = [pixels(v)[0].mean((0, 2)).argmax() for v in views["fast"]]
    assert marker_col == [pixels(v)[0].mean((0, 2)).argmax() for v in views["exact"]]


def test_fast_and_exact_datasets_give_the_same_views(synthetic_root):
    for train, extra in ((True, dict(repeat_aug=2)), (False, dict(test_clips=2, test_crops=3))):
        clips = {}
        for decode in ("fast", "exact"):
            torch.manual_seed(5)
            ds = VideoDataset(synthetic_root / "train.csv", num_frames=8, stride=2, img_size=32, train=train,
                              decode=decode, **extra)
            clips[decode] = ds[1][0]
        assert clips["fast"].shape == clips["exact"].shape
        assert (clips["fast"] - clips["exact"]).abs().mean() < 0.05  # normalised units: same crops and flips
    with pytest.raises(ValueError, match="decode must be"):
        VideoDataset(synthetic_root / "train.csv", decode="gpu")


# ----------------------------------------------------------------------------- temporal sampling

def test_dense_indices_random_start_in_range():
    torch.manual_seed(0)
    starts = {dense_indices(100, 16, 4, train=True)[0] for _ in range(300)}
    assert min(starts) == 0 and max(starts) == 100 - 61
    assert dense_indices(100, 16, 4, train=False) == clip_indices(100, 16, 4, 19)
    assert dense_indices(30, 16, 4, train=True)[:8] == [0, 4, 8, 12, 16, 20, 24, 28]


def test_segment_indices_known_values():
    assert segment_indices(40, 8) == [2, 7, 12, 17, 22, 27, 32, 37]
    assert segment_indices(40, 8, position=0.0) == [0, 5, 10, 15, 20, 25, 30, 35]
    assert segment_indices(5, 8) == [0, 0, 1, 2, 2, 3, 4, 4]  # shorter than the clip: repeats
    torch.manual_seed(0)
    for _ in range(50):
        picks = segment_indices(40, 8, train=True)
        assert all(5 * k <= i < 5 * (k + 1) for k, i in enumerate(picks))


def test_temporal_starts_and_spatial_offsets_known_values():
    assert temporal_starts(100, 16, 4, 5) == [0, 9, 19, 29, 39]
    assert temporal_starts(100, 16, 4, 1) == [19]
    assert temporal_starts(40, 16, 4, 3) == [0, 0, 0]
    assert spatial_offsets(224, 298, 224, 3) == [(0, 0), (0, 37), (0, 74)]
    assert spatial_offsets(300, 224, 224, 3) == [(0, 0), (38, 0), (76, 0)]
    assert spatial_offsets(230, 300, 224, 1) == [(3, 38)]


def test_multiview_views_are_clip_major(numbered_video, frame_number):
    ds = VideoDataset([(str(numbered_video), 0)], num_frames=4, stride=2, img_size=32,
                      train=False, test_clips=2, test_crops=3)
    views, _, _ = ds[0]
    assert views.shape == (6, 3, 4, 32, 32)
    firsts = [frame_number(pixels(v))[0] for v in views]
    assert firsts == [0, 0, 0, 33, 33, 33]  # temporal_starts(40, 4, 2, 2) == [0, 33]


# ----------------------------------------------------------------------------- spatial transforms

def test_random_resized_crop_box_bounds_scale_and_aspect():
    g = torch.Generator().manual_seed(0)
    for h, w in [(64, 96), (240, 320), (100, 57)]:
        for _ in range(200):
            top, left, ch, cw = random_resized_crop_box(h, w, (0.5, 1.0), (3 / 4, 4 / 3), g)
            assert 0 <= top and top + ch <= h and 0 <= left and left + cw <= w
            assert 0.5 - 0.05 <= ch * cw / (h * w) <= 1.0
            assert 3 / 4 - 0.05 <= cw / ch <= 4 / 3 + 0.05
    # No try fits a square of the whole area into 60x100: centre crop at the widest allowed ratio.
    assert random_resized_crop_box(60, 100, (1, 1), (1, 1), g) == (0, 20, 60, 60)


def test_train_transform_same_crop_and_flip_on_every_frame():
    g = torch.Generator().manual_seed(1)
    still = np.repeat(np.random.default_rng(0).integers(0, 256, (1, 40, 60, 3), np.uint8), 5, 0)
    for _ in range(10):
        out = train_transform(still, 32, generator=g)
        assert out.shape == (3, 5, 32, 32) and out.dtype == torch.float32
        assert all(torch.equal(out[:, 0], out[:, t]) for t in range(5))

    # Against a frame-by-frame reference drawn from the same generator state.
    clip = np.random.default_rng(1).integers(0, 256, (4, 40, 60, 3), np.uint8)
    flips = set()
    for seed in range(8):
        out = train_transform(clip, 32, generator=torch.Generator().manual_seed(seed))
        g = torch.Generator().manual_seed(seed)
        top, left, ch, cw = random_resized_crop_box(40, 60, (0.5, 1.0), (3 / 4, 4 / 3), g)
        flip = bool(torch.rand((), generator=g) < 0.5)
        flips.add(flip)
        for t in range(4):
            frame = torch.as_tensor(clip[t, top:top + ch, left:left + cw]).permute(2, 0, 1)[None]
            ref = torch.nn.functional.interpolate(frame.float() / 255, size=(32, 32),
                                                  mode="bilinear", antialias=True)[0]
            ref = ref.flip(-1) if flip else ref
            ref = (ref - MEAN[:, None, None]) / STD[:, None, None]
            torch.testing.assert_close(out[:, t], ref)
    assert flips == {True, False}


def test_flip_off_never_mirrors():
    ramp = np.tile(np.arange(64, dtype=np.uint8) * 4, (2, 48, 1))[..., None].repeat(3, -1)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        out = train_transform(ramp, 32, scale=(1, 1), ratio=(4 / 3, 4 / 3), flip=False, generator=g)
        assert out[0, 0, 0, -1] > out[0, 0, 0, 0]  # the ramp still rises left to right


def test_eval_crops_centre_and_three_crops():
    clip = np.zeros((2, 40, 80, 3), np.uint8)
    clip[:, :, :20] = 255  # a white left quarter
    centre = eval_crops(clip, 20)
    assert centre.shape == (1, 3, 2, 20, 20)
    left, mid, right = eval_crops(clip, 20, num_crops=3)  # frames resized to 20x40
    # White is (1 - 0.485) / 0.229 = 2.25 in the red channel, black -2.12; 2 px of blur at edges.
    assert left[0, 0, :, :8].min() > 2 and left[0, 0, :, 12:].max() < -2
    assert mid[0, 0, :, 2:].max() < -2 and right[0].max() < -2


# ----------------------------------------------------------------------------- dataset

def test_dataset_shapes_and_repeat_aug(synthetic_root):
    train = VideoDataset(synthetic_root / "train.csv", num_frames=8, stride=2, img_size=32)
    clip, label, skipped = train[0]
    assert clip.shape == (3, 8, 32, 32) and clip.dtype == torch.float32
    assert label == 0 and skipped.tolist() == [-1] * train.max_failures  # no failed draw
    torch.manual_seed(0)
    rep = VideoDataset(synthetic_root / "train.csv", num_frames=8, stride=2, img_size=32,
                       repeat_aug=3)
    clips, label, _ = rep[1]
    assert clips.shape == (3, 3, 8, 32, 32) and label == 1
    assert not torch.allclose(clips[0], clips[1]) and not torch.allclose(clips[1], clips[2])
    seg = VideoDataset(synthetic_root / "val.csv", num_frames=8, img_size=32, train=False,
                       sampling="segment", test_clips=2, test_crops=3)
    assert seg[0][0].shape == (6, 3, 8, 32, 32)
    batch = next(iter(torch.utils.data.DataLoader(rep, batch_size=2, num_workers=0)))
    assert batch[0].shape == (2, 3, 3, 8, 32, 32)
    assert batch[2].shape == (2, rep.max_failures) and batch[2].max() == -1


def bad_files(tmp_path, numbered_video):
    """Each kind of file that cannot give a frame, by name."""
    text = tmp_path / "notes.mp4"
    text.write_text("these are not the frames you are looking for\n" * 20)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    cut = tmp_path / "cut.mp4"  # moov atom at the end (the default): the cut drops the index
    cut.write_bytes(numbered_video.read_bytes()[: numbered_video.stat().st_size * 3 // 10])
    no_frame = tmp_path / "no_frame.mp4"  # the index survives but not one frame's data
    remux_faststart(numbered_video, no_frame)
    data = no_frame.read_bytes()
    no_frame.write_bytes(data[: data.index(b"mdat") + 40])
    return {"missing": tmp_path / "missing.mp4", "empty": empty, "text": text, "cut": cut,
            "no_frame": no_frame}


@pytest.mark.parametrize("kind", ["missing", "empty", "text", "cut", "no_frame"])
def test_bad_file_is_skipped_with_warning_and_counted(tmp_path, numbered_video, kind):
    bad = bad_files(tmp_path, numbered_video)[kind]
    with pytest.raises(VideoError, match=bad.name):
        decode_frames(bad, [0, 1])
    ds = VideoDataset([(str(bad), 7), (str(numbered_video), 1)], num_frames=4, img_size=16)
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match=bad.name):
        clip, label, skipped = ds[0]
    failed = skipped[skipped >= 0].tolist()  # the dataset indices of the failed draws
    assert clip.shape == (3, 4, 16, 16) and label == 1 and len(failed) >= 1 and set(failed) == {0}


def test_all_bad_stops_with_runtime_error_naming_files(tmp_path, numbered_video):
    files = bad_files(tmp_path, numbered_video)
    ds = VideoDataset([(str(p), 0) for p in files.values()], max_failures=6)
    torch.manual_seed(0)
    with warnings.catch_warnings(record=True) as caught, \
            pytest.raises(RuntimeError, match="6 videos in a row") as error:
        warnings.simplefilter("always")
        ds[0]
    assert len(caught) == 6 and str(files["missing"]) in str(error.value)
    named = [str(p) for p in files.values() if str(p) in str(error.value)]
    assert all(str(p) in " ".join(str(w.message) for w in caught) for p in named)


# ----------------------------------------------------------------------------- synthetic set

def test_make_synthetic_is_deterministic_and_skips_when_done(tmp_path):
    a = make_synthetic(tmp_path / "a", num_videos=4, num_frames=12, size=32, seed=3)
    b = make_synthetic(tmp_path / "b", num_videos=4, num_frames=12, size=32, seed=3)
    for key in ("train", "val", "boxes"):
        assert a[key].read_text() == b[key].read_text()
    for name in load_boxes(tmp_path / "a"):
        np.testing.assert_array_equal(synthetic_video(tmp_path / "a", name),
                                      synthetic_video(tmp_path / "b", name))
    stamp = a["train"].stat().st_mtime_ns
    make_synthetic(tmp_path / "a", num_videos=4, num_frames=12, size=32, seed=3)
    assert a["train"].stat().st_mtime_ns == stamp
    make_synthetic(tmp_path / "a", num_videos=4, num_frames=12, size=32, seed=4)
    assert json.loads(a["params"].read_text())["seed"] == 4


@pytest.mark.parametrize("background", ["texture", "texture_object"])
def test_textured_backgrounds_are_static_detailed_and_deterministic(background):
    frames, boxes, backdrop = draw_video(np.random.default_rng([0, 1]), 1, 12, 64, background)
    again, _, _ = draw_video(np.random.default_rng([0, 1]), 1, 12, 64, background)
    np.testing.assert_array_equal(frames, again)
    patches = backdrop.reshape(8, 8, 8, 8, 3).astype(float)  # (row, y, col, x, colour)
    assert np.median(patches.std(axis=(1, 3)).max(-1)) > 4  # texture inside a patch, not a flat or a ramp
    for t, (x0, y0, x1, y1) in enumerate(boxes):
        outside = np.ones((64, 64), bool)
        outside[y0:y1, x0:x1] = False
        np.testing.assert_array_equal(frames[t][outside], backdrop[outside])  # the background never moves
    (a0, b0, a1, b1), (c0, d0, c1, d1) = boxes[0], boxes[-1]
    first, last = frames[0, b0:b1, a0:a1], frames[-1, d0:d1, c0:c1]
    shape = (first != backdrop[b0:b1, a0:a1]).any(-1) & (last != backdrop[d0:d1, c0:c1]).any(-1)
    assert shape.sum() > 0.3 * shape.size
    np.testing.assert_array_equal(first[shape], last[shape])  # the object's pixels travel with it
    assert (first[shape] == first[shape][0]).all() == (background == "texture")  # flat colour or textured
    with pytest.raises(ValueError, match="'marble'"):
        draw_video(np.random.default_rng(0), 0, 4, 32, "marble")
    assert BACKGROUNDS[:2] == ("flat", "gradient")


def test_clutter_pans_over_texture_with_several_objects_and_noise_and_has_no_boxes(tmp_path):
    def draw(**kw):
        return draw_clutter(np.random.default_rng([0, 2]), 12, 64, **kw)
    def part(image, dx, dy):  # the 64 - |d| square overlap of a frame with itself shifted by (dx, dy)
        return image[max(dy, 0):64 + min(dy, 0), max(dx, 0):64 + min(dx, 0)]
    world = draw(num_objects=0, noise=0)  # the same world and camera in every call: they are drawn first
    first, last = world[0], world[-1]
    shifts = [(dx, dy) for dx in range(-11, 12) for dy in range(-11, 12)
              if np.array_equal(part(last, dx, dy), part(first, -dx, -dy))]
    assert len(shifts) == 1 and shifts[0] != (0, 0)  # the camera panned: the whole world moved by one shift
    objects = (draw(noise=0) != world).any(-1)  # (T, H, W): where the shapes cover the world
    assert 0.03 < objects[0].mean() < 0.4 and not np.array_equal(objects[0], objects[-1])
    noise = draw(num_objects=0).astype(float) - world
    assert 2 < noise.std() < 4 and np.abs(noise.mean()) < 0.2  # 3 grey levels, fresh every frame
    np.testing.assert_array_equal(draw(), draw())
    frames, boxes, backdrop = draw_video(np.random.default_rng([0, 2]), 2, 12, 64, "clutter")
    np.testing.assert_array_equal(frames, draw())
    assert boxes is None and backdrop is None
    make_synthetic(tmp_path, num_videos=4, num_frames=8, size=32, val_fraction=0.5, background="clutter")
    assert set(load_boxes(tmp_path).values()) == {None}
    clips, fg = load_enrichment_clips(tmp_path, small_cfg(), stride=2)
    assert clips.shape == (4, 3, 4, 32, 32) and fg is None  # measured by the motion correlation only


def test_synthetic_lists_labels_and_split(synthetic_root):
    train, val = read_list(synthetic_root / "train.csv"), read_list(synthetic_root / "val.csv")
    assert len(train) == 4 and len(val) == 4  # 8 videos: one of the 2 per class goes to val
    assert sorted(label for _, label in val) == [0, 1, 2, 3]
    assert {label for _, label in train} == {0, 1, 2, 3}
    assert all(video_length(p) == 32 for p, _ in train + val)


def test_synthetic_boxes_hold_the_object(synthetic_root):
    boxes = load_boxes(synthetic_root)
    assert len(boxes) == 8
    for i, (name, per_frame) in enumerate(sorted(boxes.items())):
        frames = synthetic_video(synthetic_root, name)
        drawn, drawn_boxes, background = draw_video(np.random.default_rng([0, i]), i % 4, 32, 64)
        assert [list(b) for b in drawn_boxes] == per_frame
        assert np.abs(frames - drawn).mean() < 4  # the file holds what was drawn (yuv420 rounding)
        centres = np.array([[(x0 + x1) / 2, (y0 + y1) / 2] for x0, y0, x1, y1 in per_frame])
        step = centres[-1] - centres[0]
        expected = [(1, 0), (-1, 0), (0, 1), (0, -1)][i % 4]
        assert np.sign(step).tolist() == list(expected) and np.abs(step).max() >= 0.4 * 31 * 64 / 96
        for t in (0, 15, 31):
            x0, y0, x1, y1 = per_frame[t]
            assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
            assert 0.15 * 64 - 1 <= x1 - x0 <= 0.30 * 64 + 1
            object_px = np.abs(frames[t] - background).max(-1) > 40
            inside = np.zeros_like(object_px)
            inside[max(y0 - 1, 0):y1 + 1, max(x0 - 1, 0):x1 + 1] = True  # 1 px: chroma is 2x2
            assert object_px.sum() >= 0.4 * (x1 - x0) * (y1 - y0)
            assert not (object_px & ~inside).any()


def test_object_size_sets_the_side_of_the_moving_shape():
    """LABELLED_SET's larger objects: every box side within the shares asked for, the shape inside the frame."""
    for i in range(8):
        frames, boxes, _ = draw_video(np.random.default_rng([1, i]), i % 4, 16, 96, object_size=(0.35, 0.55))
        sides = {(x1 - x0, y1 - y0) for x0, y0, x1, y1 in boxes}
        [(w, h)] = sides  # one size for the whole video
        assert w == h and round(0.35 * 96) <= w <= round(0.55 * 96)
        assert all(0 <= x0 and x1 <= 96 and 0 <= y0 and y1 <= 96 for x0, y0, x1, y1 in boxes)

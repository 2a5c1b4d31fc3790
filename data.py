"""Video data: list files and folders -> decoded clips -> augmented, normalised tensors.

Owns everything between a file on disk and the (B, 3, T, H, W) batch the model sees (docs/data.md):
  * sources      `read_list` (VideoMAE `path label` and VideoMAEv2 `path 0 -1` lists), `find_videos`
                 (folders), `load_samples`
  * decoding     `video_length`, `read_frames` with PyAV: seek to the keyframe before the first
                 wanted frame, decode forward; then either the exact path, `decode_frames` (full-
                 resolution RGB of the frames returned), or the fast path, `scale_frames` (FFmpeg
                 crops, scales and converts to RGB at the model's size)
  * sampling     `clip_indices` / `dense_indices` (Kinetics: T frames at a fixed stride),
                 `segment_indices` (SSv2: one frame per segment), and the multi-view test
                 positions `temporal_starts` / `spatial_offsets`
  * transforms   `train_transform` (random resized crop + flip, and for fine-tuning RandAugment and
                 random erasing from augment.py; one draw per clip, identical on every frame),
                 `eval_crops` (short side resize + centre or 3 crops along the long side)
  * fast path    `fast_train_view`, `fast_eval_crops`: the same views as the transforms, cut and
                 scaled by `scale_frames`
  * dataset      `VideoDataset`, which skips unreadable files with a warning and counts them
The demo's generated videos live in synthetic.py.

Padding rule: a video shorter than a clip's span repeats its last frame (indices clamp to
length - 1); a file that ends before its header says repeats the last frame it could decode.
Bad-file policy: `VideoDataset.__getitem__` warns and says in its third item which files it skipped.
Training draws another random sample in the bad one's place and returns the dataset indices of the
failed draws (the loop names the epoch's distinct bad videos and counts them); evaluation never
substitutes: it returns an all-zero clip flagged 1, which the metric leaves out and reports by name.
"""

import math
import warnings
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F

from augment import draw_rand_augment, parse_rand_augment, rand_augment, random_erasing
from tokenizer import IMAGENET_MEAN, IMAGENET_STD

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v")


# ----------------------------------------------------------------------------- sources

def read_list(path, data_root=None):
    """VideoMAE list file -> [(video path, label)]; relative paths resolve against `data_root`, or
    without one against the list's folder.

    One `path label` per line (label >= 0), no header, blank lines ignored; the label follows the last
    whitespace, so a path may itself contain spaces. VideoMAEv2's pre-training form `path 0 -1` (a start
    index and no label) gives label -1. UTF-8 text, with or without a byte-order mark.
    """
    path = Path(path)
    root = Path(data_root) if data_root is not None else path.parent
    samples = []
    for number, line in enumerate(list_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        text = line.strip()
        parts = text.rsplit(None, 2)
        if parts[1:] == ["0", "-1"]:  # VideoMAEv2 pre-training: start index 0, no label
            video, label = parts[0], -1
        else:
            parts = text.rsplit(None, 1)
            if len(parts) != 2 or not parts[1].isdigit():
                raise ValueError(f"{path}:{number}: expected 'path label' with a label >= 0 or 'path 0 -1', "
                                 f"got {line!r}")
            video, label = parts[0], int(parts[1])
        video = Path(video)
        samples.append((str(video if video.is_absolute() else root / video), label))
    return samples


def list_text(path):
    """The text of a list file; a file that is no text (an image, a video of an unknown extension) is
    refused by name."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark (some editors write one) is not part of line 1
    except UnicodeDecodeError:
        text = None
    if text is None or "\0" in text:
        raise ValueError(f"{path}: not a list file ('path label' per line, UTF-8 text) nor a video with a known "
                         f"extension ({', '.join(VIDEO_EXTENSIONS)}); give a list, a folder or a video")
    return text


def _videos_under(folder):
    return sorted(str(p) for p in Path(folder).rglob("*")
                  if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())


def find_videos(root):
    """Folder -> [(video path, label)].

    If root holds no video directly and has two or more subfolders that each hold videos, it is
    one folder per class: label = index of the subfolder in sorted order. Otherwise every video
    under root (recursively) gets label -1 (pre-training needs no label).
    """
    root = Path(root)
    classes = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    per_class = [_videos_under(d) for d in classes]
    loose = [p for p in root.iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file()]
    if len(classes) >= 2 and all(per_class) and not loose:
        return [(video, label) for label, videos in enumerate(per_class) for video in videos]
    return [(video, -1) for video in _videos_under(root)]


def load_samples(source, data_root=None):
    """A list file, a folder or one video file -> [(video path, label)]; raises if it names no video.
    A lone video (a known extension) gets label -1; `data_root`: see `read_list`."""
    source = Path(source)
    if source.is_file() and source.suffix.lower() in VIDEO_EXTENSIONS:
        samples = [(str(source), -1)]
    elif source.is_file():
        samples = read_list(source, data_root)
    elif source.is_dir():
        samples = find_videos(source)
    else:
        raise FileNotFoundError(f"{source}: no such list file or folder")
    if not samples:
        raise ValueError(f"{source}: no videos found (extensions {', '.join(VIDEO_EXTENSIONS)})")
    return samples


# ----------------------------------------------------------------------------- decoding

class VideoError(ValueError):
    """A file that cannot give frames: missing, empty, not a video, or nothing decodable."""

    def __init__(self, path, reason):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason


def _open(path):
    path = Path(path)
    if not path.is_file():
        raise VideoError(path, "file not found")
    if path.stat().st_size == 0:
        raise VideoError(path, "file is empty (0 bytes)")
    try:
        container = av.open(str(path))
    except av.FFmpegError as e:
        raise VideoError(path, f"cannot open as a video ({e})") from e
    if not container.streams.video:
        container.close()
        raise VideoError(path, "no video stream")
    return container


def video_length(path):
    """Number of frames: the container's count, or (when it has none, e.g. webm) packets demuxed."""
    with _open(path) as container:
        stream = container.streams.video[0]
        if stream.frames > 0:
            return stream.frames
        try:
            return sum(1 for packet in container.demux(stream) if packet.size > 0)
        except av.FFmpegError as e:
            raise VideoError(path, f"cannot read packets ({e})") from e


def _frame_rate(stream):
    rate = stream.average_rate or stream.guessed_rate
    return Fraction(rate) if rate and stream.time_base else None


def _index_to_pts(index, stream):
    return (stream.start_time or 0) + int(index / (_frame_rate(stream) * stream.time_base))


def _pts_to_index(pts, stream):
    return round((pts - (stream.start_time or 0)) * stream.time_base * _frame_rate(stream))


def _pick_frames(path, wanted, seek, skip_unwanted=False, threads=1):
    """{wanted index: av.VideoFrame}; {} if nothing decodes; None if the seek landed past wanted[0].

    A wanted index that no frame carries (a gap in the timestamps) takes the latest earlier frame;
    indices past the last decodable frame (a truncated file) repeat it. skip_unwanted: the decoder
    drops the packets of unwanted frames that no other frame references (H.264's non-reference
    B-frames, `skip_frame = NONREF` per packet), which are then never anyone's "latest earlier frame".
    threads: the codec's threads (1 = none; 0 = FFmpeg's choice, frame and slice threading).
    """
    with _open(path) as container:
        stream = container.streams.video[0]
        context = stream.codec_context
        if threads != 1:
            stream.thread_type, context.thread_count = "AUTO", threads
        use_pts = _frame_rate(stream) is not None
        if seek and not use_pts:
            return None  # no frame rate: a frame index cannot be turned into a seek target
        wanted_set, picked, previous, k, count = set(wanted), {}, None, 0, 0
        try:
            if seek:
                container.seek(_index_to_pts(wanted[0], stream), stream=stream, backward=True)
            for packet in container.demux(stream):
                if skip_unwanted and use_pts:
                    unwanted = packet.pts is not None and _pts_to_index(packet.pts, stream) not in wanted_set
                    context.skip_frame = "NONREF" if unwanted else "DEFAULT"
                for frame in packet.decode():
                    if use_pts and frame.pts is not None:
                        index = _pts_to_index(frame.pts, stream)
                    elif seek:
                        return None  # no timestamps: a position after a seek is unknown
                    else:
                        index = count
                    count += 1
                    if seek and previous is None and index > wanted[0]:
                        return None
                    while k < len(wanted) and wanted[k] < index:
                        picked[wanted[k]] = previous if previous is not None else frame
                        k += 1
                    if k < len(wanted) and wanted[k] == index:
                        picked[index] = frame
                        k += 1
                    previous = frame
                if k == len(wanted):
                    break
        except av.FFmpegError:
            pass  # a failed seek or a truncated/corrupt packet: the video ends here
        if previous is None:
            return {}
        picked.update({i: previous for i in wanted[k:]})
        return picked


def read_frames(path, indices, seek=True, skip_unwanted=False, threads=1):
    """Decoded frames at `indices` (repeats allowed) -> list of av.VideoFrame, not yet converted; a
    repeated index (or a padded one) gives the same object.

    Frame indices count from 0 at the stream's start time, computed from each frame's pts.
    seek=True jumps to the keyframe before the first wanted frame; seek=False decodes from frame 0
    (the reference for tests and benchmarks). If the seek overshoots or finds nothing, it falls
    back to decoding from frame 0. skip_unwanted, threads: see `_pick_frames`.
    """
    indices = [int(i) for i in indices]
    if not indices or min(indices) < 0:
        raise ValueError(f"decode_frames({path}): indices must be non-empty and >= 0, got {indices}")
    wanted = sorted(set(indices))
    picked = _pick_frames(path, wanted, seek and wanted[0] > 0, skip_unwanted, threads)
    if not picked and seek and wanted[0] > 0:
        picked = _pick_frames(path, wanted, False, skip_unwanted, threads)
    if not picked:
        raise VideoError(path, "no frame could be decoded")
    return [picked[i] for i in indices]


def to_rgb(frames):
    """[av.VideoFrame] -> uint8 (T, H, W, 3) full-resolution RGB, one conversion per distinct frame."""
    rgb = {}
    for frame in frames:
        if id(frame) not in rgb:
            rgb[id(frame)] = frame.to_ndarray(format="rgb24")
    return np.stack([rgb[id(frame)] for frame in frames])


def decode_frames(path, indices, seek=True):
    """Frames at `indices` (repeats allowed) -> uint8 array (len(indices), H, W, 3), RGB: the exact
    path (`read_frames`, then `to_rgb`)."""
    return to_rgb(read_frames(path, indices, seek))


def _chroma_position(offset, size, chroma_size):
    """swscale's `in_*_chr_pos` (position of the first chroma sample, in luma pixels / 256) for a crop
    starting at `offset`. swscale's default for 4:2:0 is +128 (halfway between the first two luma
    pixels; of the positions tried, the one closest to the exact path). A 2x-subsampled plane cut at an
    odd offset starts one luma pixel before the crop, so its first sample sits at 128 - 256 = -128.
    No subsampling: -513, swscale's `auto`."""
    return 128 - 256 * (offset % 2) if chroma_size < size else -513


def scale_frames(frames, size, box=None):
    """[av.VideoFrame] -> uint8 (T, size[0], size[1], 3): the box (top, left, height, width, in
    source pixels; None = the whole frame) of every frame, scaled to `size` and converted to RGB inside
    FFmpeg: the fast path, in which no full-resolution RGB copy ever exists. `crop` moves plane
    pointers (exact=1: odd offsets too, the chroma position corrected by `_chroma_position`); `scale`
    is libswscale's bilinear, whose kernel widens when it shrinks, i.e. antialiases like
    `F.interpolate(..., antialias=True)`; accurate_rnd and full_chroma_int bring it within the
    tolerance that tests/test_data.py states. One filter graph per clip, one conversion per distinct frame.
    """
    first = frames[0]
    top, left, height, width = box or (0, 0, first.height, first.width)
    chroma = first.format
    graph = av.filter.Graph()
    chain = [graph.add_buffer(width=first.width, height=first.height, format=first.format.name,
                              time_base=first.time_base or Fraction(1, 25)),
             graph.add("crop", f"w={width}:h={height}:x={left}:y={top}:exact=1"),
             graph.add("scale", f"w={size[1]}:h={size[0]}:flags=bilinear+accurate_rnd+full_chroma_int"
                                f":in_h_chr_pos={_chroma_position(left, first.width, chroma.chroma_width())}"
                                f":in_v_chr_pos={_chroma_position(top, first.height, chroma.chroma_height())}"),
             graph.add("format", "rgb24"),
             graph.add("buffersink")]
    for a, b in zip(chain, chain[1:]):
        a.link_to(b)
    graph.configure()
    rgb = {}
    for frame in frames:
        if id(frame) not in rgb:
            graph.push(frame)
            rgb[id(frame)] = graph.pull().to_ndarray()
    return np.stack([rgb[id(frame)] for frame in frames])


# ----------------------------------------------------------------------------- temporal sampling

def clip_span(num_frames, stride):
    """Frames covered by a clip from its first to its last frame."""
    return (num_frames - 1) * stride + 1


def clip_indices(total, num_frames, stride, start):
    """start + i * stride for i < num_frames; a video too short for the clip repeats its last
    frame (indices clamp to total - 1), the padding VideoMAE applies to short videos."""
    return [min(start + i * stride, total - 1) for i in range(num_frames)]


def dense_indices(total, num_frames, stride, train, generator=None):
    """Kinetics-style clip: a random start in [0, total - span] for training, the centre at eval."""
    last_start = max(total - clip_span(num_frames, stride), 0)
    if train:
        start = int(torch.randint(last_start + 1, (), generator=generator))
    else:
        start = last_start // 2
    return clip_indices(total, num_frames, stride, start)


def segment_indices(total, num_frames, train=False, generator=None, position=0.5):
    """SSv2-style (TSN) clip: num_frames equal segments, one frame from each.

    Training picks a random frame in each segment; eval picks the frame at `position` (0 = start,
    0.5 = middle) of each segment. A video shorter than num_frames repeats frames.
    """
    length = total / num_frames
    indices = []
    for k in range(num_frames):
        first = int(k * length)
        if train:
            size = max(int((k + 1) * length) - first, 1)
            indices.append(first + int(torch.randint(size, (), generator=generator)))
        else:
            indices.append(int(k * length + position * length))
    return [min(i, total - 1) for i in indices]


def temporal_starts(total, num_frames, stride, num_clips):
    """Multi-view test: num_clips starts spread evenly over [0, total - span] (centre if one)."""
    last_start = max(total - clip_span(num_frames, stride), 0)
    if num_clips == 1:
        return [last_start // 2]
    return [int(k * last_start / (num_clips - 1)) for k in range(num_clips)]


def spatial_offsets(h, w, crop, num_crops=3):
    """Multi-view test: (top, left) of num_crops crops spread along the long side (start, centre,
    end for 3), centred on the short side. h, w are the size after the short-side resize."""
    if min(h, w) < crop:
        raise ValueError(f"spatial_offsets: frame {h}x{w} is smaller than the crop {crop}")
    long_room, short_room = (w - crop, h - crop) if w >= h else (h - crop, w - crop)
    if num_crops == 1:
        along = [long_room // 2]
    else:
        along = [int(k * long_room / (num_crops - 1)) for k in range(num_crops)]
    if w >= h:
        return [(short_room // 2, a) for a in along]
    return [(a, short_room // 2) for a in along]


# ----------------------------------------------------------------------------- spatial transforms

def random_resized_crop_box(h, w, scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3), generator=None):
    """(top, left, height, width) of a crop covering a random `scale` of the area with a random
    aspect `ratio` (log-uniform): torchvision's RandomResizedCrop, 10 tries then a centre crop."""
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        u = torch.rand(2, generator=generator).tolist()
        target = area * (scale[0] + u[0] * (scale[1] - scale[0]))
        aspect = math.exp(log_ratio[0] + u[1] * (log_ratio[1] - log_ratio[0]))
        cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            top = int(torch.randint(h - ch + 1, (), generator=generator))
            left = int(torch.randint(w - cw + 1, (), generator=generator))
            return top, left, ch, cw
    # Fallback: the whole frame, cut to the nearest allowed aspect ratio.
    if w / h < min(ratio):
        cw, ch = w, round(w / min(ratio))
    elif w / h > max(ratio):
        cw, ch = round(h * max(ratio)), h
    else:
        cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def _as_float(clip):
    """uint8 (T, H, W, 3) array or tensor -> float (T, 3, H, W) in [0, 1]."""
    clip = torch.as_tensor(clip)
    if clip.dtype != torch.uint8 or clip.ndim != 4 or clip.shape[-1] != 3:
        raise ValueError(f"expected a uint8 clip (T, H, W, 3), got {clip.dtype} {tuple(clip.shape)}")
    return clip.permute(0, 3, 1, 2).float().div_(255)


def _resize(x, size):
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def _normalise(x):
    """(T, 3, H, W) in [0, 1] -> (3, T, H, W) with ImageNet mean/std, the model's input layout."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((x - mean) / std).permute(1, 0, 2, 3).contiguous()


def train_transform(clip, img_size, scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3), flip=True,
                    generator=None, rand_aug=None, reprob=0.0):
    """uint8 (T, H, W, 3) -> float (3, T, img_size, img_size): one random resized crop and one
    horizontal flip (p = 0.5) drawn per clip and applied to every frame, so motion stays intact.
    Fine-tuning adds RandAugment (`rand_aug`, e.g. "rand-m7-n4-mstd0.5-inc1") on the crop and random
    erasing (probability `reprob`) after normalising, each also drawn once for the whole clip."""
    h, w = clip.shape[1:3]
    top, left, ch, cw = random_resized_crop_box(h, w, scale, ratio, generator)
    x = torch.as_tensor(clip)[:, top:top + ch, left:left + cw]  # crop before the float copy
    return _flip_and_augment(_resize(_as_float(x), (img_size, img_size)), flip, generator, rand_aug, reprob)


def _flip_and_augment(x, flip, generator, rand_aug, reprob):
    """The cropped clip (T, 3, S, S) in [0, 1] -> flipped (p = 0.5), RandAugment-ed, normalised to
    (3, T, S, S) and randomly erased: every draw once for the whole clip."""
    if flip and bool(torch.rand((), generator=generator) < 0.5):
        x = x.flip(-1)
    if rand_aug:
        x = rand_augment(x.clamp(0.0, 1.0), draw_rand_augment(rand_aug, generator))
    return random_erasing(_normalise(x), reprob, generator)


def eval_crops(clip, img_size, num_crops=1):
    """uint8 (T, H, W, 3) -> float (num_crops, 3, T, img_size, img_size): short side resized to
    img_size, then the centre crop (num_crops=1) or crops along the long side (`spatial_offsets`)."""
    x = _as_float(clip)
    h, w = x.shape[-2:]
    short = min(h, w)
    x = _resize(x, (round(h * img_size / short), round(w * img_size / short)))
    offsets = spatial_offsets(*x.shape[-2:], img_size, num_crops)
    return torch.stack([_normalise(x[..., t:t + img_size, l:l + img_size]) for t, l in offsets])


# ----------------------------------------------------------------------------- the fast path: crop and scale in FFmpeg

def fast_train_view(frames, img_size, scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3), flip=True, generator=None,
                    rand_aug=None, reprob=0.0):
    """[av.VideoFrame] -> float (3, T, img_size, img_size): `train_transform`'s crop, flip and
    augmentation, drawn in the same order from the same generator (so the same box and flip for the
    same seed) from the frame size alone, the crop cut and scaled by `scale_frames` instead of in torch."""
    box = random_resized_crop_box(frames[0].height, frames[0].width, scale, ratio, generator)
    x = _as_float(scale_frames(frames, (img_size, img_size), box))
    return _flip_and_augment(x, flip, generator, rand_aug, reprob)


def fast_eval_crops(frames, img_size, num_crops=1):
    """[av.VideoFrame] -> `eval_crops`' views, with the short-side resize done by `scale_frames`
    (eval_crops then finds the short side at img_size already and only cuts the crops)."""
    h, w = frames[0].height, frames[0].width
    size = (round(h * img_size / min(h, w)), round(w * img_size / min(h, w)))
    return eval_crops(scale_frames(frames, size), img_size, num_crops)


# ----------------------------------------------------------------------------- dataset

class VideoDataset(torch.utils.data.Dataset):
    """(clip, label, skipped) per video.

    clip: (3, T, S, S) float, ImageNet-normalised; (repeat_aug, 3, T, S, S) when training with
    repeat_aug > 1 (one decode, independent start/crop/flip per copy, as SpatioTemporal-MAE);
    (test_clips * test_crops, 3, T, S, S) at eval with several views, ordered clip-major.
    skipped: training: the dataset indices of the files that failed to decode before this sample was
    produced (another random video took their place), a (max_failures,) tensor padded with -1
    (engine.Epochs collects them). Evaluation: 1 when this very video is unreadable,
    its clip then all zeros - a placeholder to leave out, never a substitute that counts twice.
    Randomness comes from torch's global RNG, which DataLoader seeds differently in every worker.
    decode="fast" crops and scales in FFmpeg and lets the decoder drop unwanted non-reference frames
    (`fast_train_view`, `fast_eval_crops`); "exact" converts every frame to full-resolution RGB and
    crops and resizes in torch (`train_transform`, `eval_crops`). Both draw the same boxes and flips.
    decode_threads: the codec's threads per worker (1 = none, 0 = FFmpeg's choice).
    """

    def __init__(self, source, num_frames=16, stride=4, img_size=224, train=True, sampling="dense",
                 flip=True, scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3), repeat_aug=1, test_clips=1,
                 test_crops=1, max_failures=20, rand_aug=None, reprob=0.0, decode="fast", decode_threads=1):
        if decode not in ("fast", "exact"):
            raise ValueError(f"decode must be 'fast' or 'exact', got {decode!r}")
        if sampling not in ("dense", "segment"):
            raise ValueError(f"sampling must be 'dense' or 'segment', got {sampling!r}")
        if repeat_aug > 1 and not train:
            raise ValueError("repeat_aug > 1 is a training augmentation; use test_clips at eval")
        if test_clips * test_crops > 1 and train:
            raise ValueError("test_clips/test_crops are eval views; set train=False")
        self.samples = list(source) if isinstance(source, (list, tuple)) else load_samples(source)
        self.num_frames, self.stride, self.img_size = num_frames, stride, img_size
        self.train, self.sampling, self.flip = train, sampling, flip
        self.scale, self.ratio = scale, ratio
        if rand_aug:
            parse_rand_augment(rand_aug)  # a malformed spec fails here, not later in a worker
        self.rand_aug, self.reprob = rand_aug, reprob  # fine-tuning only (see train_transform)
        self.repeat_aug, self.test_clips, self.test_crops = repeat_aug, test_clips, test_crops
        self.max_failures = max_failures
        self.decode, self.decode_threads = decode, decode_threads
        self._lengths = {}  # per worker: counting packets of a webm/mkv costs a full demux

    def __len__(self):
        return len(self.samples)

    def _clip_plans(self, total):
        """Frame indices of every clip cut from one video."""
        T, s = self.num_frames, self.stride
        if self.train:
            if self.sampling == "segment":
                return [segment_indices(total, T, train=True) for _ in range(self.repeat_aug)]
            return [dense_indices(total, T, s, train=True) for _ in range(self.repeat_aug)]
        if self.sampling == "segment":
            return [segment_indices(total, T, position=(k + 0.5) / self.test_clips)
                    for k in range(self.test_clips)]
        return [clip_indices(total, T, s, start)
                for start in temporal_starts(total, T, s, self.test_clips)]

    def _decode(self, path):
        """Per clip its frames, decoding the union of their frames once: uint8 (T, H, W, 3) (exact)
        or a list of av.VideoFrame (fast; clips share the frame objects)."""
        if path not in self._lengths:
            self._lengths[path] = video_length(path)
        plans = self._clip_plans(self._lengths[path])
        union = sorted({i for plan in plans for i in plan})
        row = {index: k for k, index in enumerate(union)}
        if self.decode == "exact":
            frames = decode_frames(path, union)
            return [frames[[row[i] for i in plan]] for plan in plans]
        frames = read_frames(path, union, skip_unwanted=True, threads=self.decode_threads)
        return [[frames[row[i]] for i in plan] for plan in plans]

    def _transform(self, clips):
        fast = self.decode == "fast"
        if self.train:
            transform = fast_train_view if fast else train_transform
            views = [transform(c, self.img_size, self.scale, self.ratio, self.flip, rand_aug=self.rand_aug,
                               reprob=self.reprob) for c in clips]
            return views[0] if len(views) == 1 else torch.stack(views)
        crops = fast_eval_crops if fast else eval_crops
        views = torch.cat([crops(c, self.img_size, self.test_crops) for c in clips])
        return views[0] if len(views) == 1 else views

    def _view_shape(self):
        """Shape of one evaluation sample: (3, T, S, S), or (views, 3, T, S, S) with several views."""
        views = self.test_clips * self.test_crops
        return ((views,) if views > 1 else ()) + (3, self.num_frames, self.img_size, self.img_size)

    def __getitem__(self, index):
        failures = []  # (index, path, error) of each failed draw
        while True:
            path, label = self.samples[index]
            try:
                clips = self._decode(path)
            except Exception as e:  # any decoding failure marks the file bad, not the run
                if not self.train:
                    warnings.warn(f"unreadable video {path}, left out of the evaluation: {e}")
                    return torch.zeros(self._view_shape()), label, 1
                warnings.warn(f"skipping unreadable video {path}: {e}")
                failures.append((index, path, e))
                if len(failures) >= self.max_failures:
                    names = ", ".join(sorted({p for _, p, _ in failures}))
                    raise RuntimeError(f"{len(failures)} videos in a row failed to decode "
                                       f"(last error: {e}); files: {names}") from e
                index = int(torch.randint(len(self.samples), ()))
                continue
            if not self.train:
                return self._transform(clips), label, 0
            failed = torch.full((self.max_failures,), -1)  # a fixed size, so that the loader can stack it
            failed[:len(failures)] = torch.tensor([i for i, _, _ in failures], dtype=torch.long)
            return self._transform(clips), label, failed

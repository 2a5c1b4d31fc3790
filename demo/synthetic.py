"""The embedded demo's data: generated H.264 videos of a shape moving over a background, with the
object's box in every frame, so that the sampler's foreground enrichment can be measured (metrics.py).

  * `write_video`      uint8 frames -> H.264 MP4 with PyAV (also how the tests make their videos)
  * `draw_video`       one video: a square, disc or triangle moving right/left/down/up (the label) at a
                       constant speed over a flat, gradient or textured background (`BACKGROUNDS`), or
                       `draw_clutter`: several objects over texture, a panning camera, sensor noise
  * `make_synthetic`   the whole set: videos, train/val lists in VideoMAE's format, boxes.json
  * `pretraining_demo`, `labelled_demo`   the demos' sets under a run's out_dir
"""

import json
from pathlib import Path

import av
import numpy as np
import torch.distributed as dist

DIRECTIONS = ("right", "left", "down", "up")  # labels: index = direction of motion
# The pre-training demo's set (pretrain.py, study.py): 144 train / 16 held-out videos; a clip of 16 frames
# at stride 4 spans 61 of the 64 frames.
DEMO_SET = dict(num_videos=160, num_frames=64, size=96, val_fraction=0.1)
# The fine-tuning demo's labelled set (finetune.py, tools/probe.py): 280 train / 120 val videos, label = direction
# of motion; another seed than pre-training's, so the classifier is tested on videos pre-training never saw.
# Larger objects: the demo fine-tunes on 32 x 32 crops, where they are as many pixels across as the pre-training
# set's are in its 64 x 64 crops (docs/data.md).
LABELLED_SET = dict(num_videos=400, num_frames=64, size=96, seed=1, val_fraction=0.3, object_size=(0.35, 0.55))


def write_video(path, frames, fps=25, options=None):
    """uint8 (T, H, W, 3) RGB -> H.264 MP4 (yuv420p, so H and W must be even). `options` are
    extra libx264/codec options, e.g. {"g": "8", "bf": "2"} for keyframes every 8 frames."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18", "preset": "ultrafast", **(options or {})}
        stream.codec_context.thread_count = 1  # x264's output depends on its thread count
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def _shape_mask(shape, side):
    """Boolean (side, side) mask of a square, disc or upward triangle filling its box."""
    y, x = np.mgrid[:side, :side] + 0.5
    if shape == "square":
        return np.ones((side, side), bool)
    if shape == "disc":
        return (x - side / 2) ** 2 + (y - side / 2) ** 2 <= (side / 2) ** 2
    return np.abs(x - side / 2) <= y / 2  # triangle: apex at the top, base along the bottom row


def _distinct_colour(rng, c0, c1, min_distance=120.0):
    """A colour at least min_distance (RGB, L2) from every colour of the gradient c0 -> c1."""
    while True:
        colour = rng.integers(0, 256, 3).astype(float)
        d = c1 - c0
        t = np.clip(np.dot(colour - c0, d) / max(np.dot(d, d), 1e-9), 0, 1)
        if np.linalg.norm(colour - (c0 + t * d)) >= min_distance:
            return colour


BACKGROUNDS = ("flat", "gradient", "texture", "texture_object", "clutter")  # `draw_video`'s kinds
OBJECT_SIZE = (0.15, 0.30)  # `draw_video`'s default: the object's side, as shares of the frame's


def perlin_texture(rng, size):
    """(size, size) float in [0, 1]: one frame of FFmpeg's `perlin` source (fractal noise, through
    PyAV's lavfi input) at a random seed and feature scale, stretched to the full range. Cloud-like
    detail at every scale down to a few pixels, like foliage, grass or a carpet in real footage."""
    seed, scale = int(rng.integers(2 ** 31)), float(np.exp(rng.uniform(np.log(2), np.log(10))))
    source = (f"perlin=size={size}x{size}:octaves=5:persistence=0.6:xscale={scale:.4f}:yscale={scale:.4f}"
              f":random_mode=seed:random_seed={seed}")
    with av.open(source, format="lavfi") as container:
        grey = next(container.decode(video=0)).to_ndarray(format="gray").astype(np.float64)
    return (grey - grey.min()) / max(grey.max() - grey.min(), 1.0)


def _ramp(rng, size):
    """(size, size) float in [0, 1]: a linear ramp at a random angle (the gradient's profile)."""
    angle = rng.uniform(0, 2 * np.pi)
    y, x = np.mgrid[:size, :size] / (size - 1)
    along = x * np.cos(angle) + y * np.sin(angle)
    return (along - along.min()) / (along.max() - along.min())


def draw_video(rng, direction, num_frames, size, background="flat", object_size=OBJECT_SIZE):
    """One synthetic video: a shape moving in a straight line at constant speed over a static
    background. Backgrounds (`BACKGROUNDS`):
      flat            one colour (the default, on purpose: see below)
      gradient        a linear ramp between two colours
      texture         static fractal noise (`perlin_texture`) between two colours; flat-colour object
      texture_object  the same background, and the object filled with its own texture, which moves
                      with it (a textured thing moving over a textured scene, as in real footage)
      clutter         `draw_clutter`: no single object, so no boxes (None) and no backdrop (None)
    flat and gradient draw exactly the random numbers they always drew: their videos do not change
    as kinds are added. Which background the sampler can learn on, with which target of Eq. 4:
    docs/method.md, "What the sampler learns". The object's side is drawn in `object_size` (shares
    of the frame's side).

    Returns frames uint8 (T, size, size, 3), boxes [(x0, y0, x1, y1)] per frame (x1, y1
    exclusive; the shape lies inside its box) and the background uint8 (size, size, 3).
    """
    if background not in BACKGROUNDS:
        raise ValueError(f"background must be one of {', '.join(BACKGROUNDS)}, got {background!r}")
    if background == "clutter":
        return draw_clutter(rng, num_frames, size), None, None
    c0, c1 = rng.integers(0, 256, (2, 3)).astype(float)
    if background == "flat":
        c1 = c0
    t = _ramp(rng, size) if background in ("flat", "gradient") else perlin_texture(rng, size)
    backdrop = np.round(c0 + t[..., None] * (c1 - c0)).astype(np.uint8)
    colour = _distinct_colour(rng, c0, c1).astype(np.uint8)
    side = int(rng.integers(round(object_size[0] * size), round(object_size[1] * size) + 1))
    mask = _shape_mask(rng.choice(["square", "disc", "triangle"]), side)
    room = size - side  # top-left positions that keep the shape inside the frame
    speed = min(rng.uniform(0.5, 1.5) * size / 96, room / max(num_frames - 1, 1))
    travel = speed * (num_frames - 1)
    start = rng.uniform(0, room - travel)  # along the motion, leaving room for the whole path
    across = int(rng.integers(0, room + 1))
    sign = 1 if DIRECTIONS[direction] in ("right", "down") else -1
    paint = np.broadcast_to(colour, (side, side, 3))  # the object's pixels, carried along
    if background == "texture_object":
        second = _distinct_colour(rng, c0, c1)
        paint = np.round(colour + perlin_texture(rng, side)[..., None] * (second - colour)).astype(np.uint8)
    frames, boxes = np.repeat(backdrop[None], num_frames, axis=0), []
    for i in range(num_frames):
        pos = start + speed * i if sign > 0 else room - start - speed * i
        x0, y0 = (round(pos), across) if direction < 2 else (across, round(pos))
        frames[i, y0:y0 + side, x0:x0 + side][mask] = paint[mask]
        boxes.append((x0, y0, x0 + side, y0 + side))
    return frames, boxes, backdrop


def _straight_path(rng, room, speed, num_frames):
    """(start, velocity) per axis (2,) of a path at `speed` pixels a frame (at most what fits) in a random
    direction that stays within [0, room] on both axes for all frames."""
    angle = rng.uniform(0, 2 * np.pi)
    velocity = min(speed, room / max(num_frames - 1, 1)) * np.array([np.cos(angle), np.sin(angle)])
    travel = velocity * (num_frames - 1)
    return rng.uniform(np.maximum(0, -travel), room - np.maximum(0, travel)), velocity


def draw_clutter(rng, num_frames, size, num_objects=3, noise=3.0):
    """A scene closer to real footage than one shape on a still background: a textured world
    (`perlin_texture`, twice the frame's side) seen by a camera panning across it at constant speed,
    `num_objects` textured shapes each moving on its own straight path in the frame, and sensor noise
    (Gaussian, `noise` grey levels, fresh in every frame). The whole frame moves, so there is no object
    box: the sampler is scored by the motion correlation alone. Returns uint8 (T, size, size, 3)."""
    c0, c1 = rng.integers(0, 256, (2, 3)).astype(float)
    world = c0 + perlin_texture(rng, 2 * size)[..., None] * (c1 - c0)               # (2 size, 2 size, 3)
    scale = size / 96
    camera, pan = _straight_path(rng, size, rng.uniform(0.25, 0.5) * scale, num_frames)
    objects = []
    for _ in range(num_objects):
        side = int(rng.integers(round(0.12 * size), round(0.22 * size) + 1))
        colour, second = _distinct_colour(rng, c0, c1), _distinct_colour(rng, c0, c1)
        paint = colour + perlin_texture(rng, side)[..., None] * (second - colour)      # (side, side, 3)
        start, velocity = _straight_path(rng, size - side, rng.uniform(0.5, 1.5) * scale, num_frames)
        objects.append((_shape_mask(rng.choice(["square", "disc", "triangle"]), side), paint, start, velocity))
    frames = np.empty((num_frames, size, size, 3), np.uint8)
    for i in range(num_frames):
        x, y = np.round(camera + pan * i).astype(int)
        frame = world[y:y + size, x:x + size].copy()
        for mask, paint, start, velocity in objects:
            (x0, y0), side = np.round(start + velocity * i).astype(int), len(mask)
            frame[y0:y0 + side, x0:x0 + side][mask] = paint[mask]
        frames[i] = np.clip(np.round(frame + rng.normal(0, noise, frame.shape)), 0, 255)
    return frames


def make_synthetic(root, num_videos=64, num_frames=48, size=96, fps=25, seed=0, val_fraction=0.25,
                   background="flat", object_size=OBJECT_SIZE):
    """Write the synthetic set under root and return its paths.

    root/videos/NNNNN.mp4 (H.264), root/train.csv and root/val.csv (VideoMAE lists, paths relative
    to root, each direction split in the same proportion), root/boxes.json {"videos/NNNNN.mp4":
    [[x0, y0, x1, y1] per frame]}, root/synthetic.json (the parameters). Video i is drawn from
    np.random.default_rng([seed, i]) with label i % 4, so the set is identical on every run and
    machine. Skips the work when synthetic.json already records the same parameters.
    """
    if size % 2:
        raise ValueError(f"make_synthetic: size must be even for yuv420p, got {size}")
    root = Path(root)
    params = dict(num_videos=num_videos, num_frames=num_frames, size=size, fps=fps, seed=seed,
                  val_fraction=val_fraction, background=background, object_size=list(object_size))
    paths = {name: root / file for name, file in
             [("train", "train.csv"), ("val", "val.csv"), ("boxes", "boxes.json"),
              ("params", "synthetic.json")]}
    paths["videos"] = root / "videos"
    if paths["params"].is_file() and json.loads(paths["params"].read_text()) == params:
        return paths
    lines, boxes = {"train": [], "val": []}, {}
    for i in range(num_videos):
        name, label = f"videos/{i:05d}.mp4", i % len(DIRECTIONS)
        frames, boxes[name], _ = draw_video(np.random.default_rng([seed, i]), label, num_frames, size, background,
                                              object_size)
        write_video(root / name, frames, fps)
        # Within each class the last val_fraction of its videos (rounded half up) go to val.
        rank, per_class = i // len(DIRECTIONS), len(range(label, num_videos, len(DIRECTIONS)))
        split = "val" if rank >= per_class - int(per_class * val_fraction + 0.5) else "train"
        lines[split].append(f"{name} {label}\n")
    paths["train"].write_text("".join(lines["train"]))
    paths["val"].write_text("".join(lines["val"]))
    paths["boxes"].write_text(json.dumps(boxes))
    paths["params"].write_text(json.dumps(params))  # last: an interrupted run regenerates
    return paths


def pretraining_demo(out_dir, background="flat", rank=0, world=1):
    """The pre-training demo's set in out_dir/synthetic, written by rank 0 while the others wait: its root."""
    root = Path(out_dir) / "synthetic"
    if rank == 0:
        make_synthetic(root, seed=0, background=background, **DEMO_SET)
    if world > 1:
        dist.barrier()
    return root


def labelled_demo(out_dir, rank=0, world=1, given_val=None):
    """The fine-tuning demo's labelled set in out_dir/synthetic, written by rank 0 while the others wait:
    (train list, val list). A --val given without --data (`given_val`) is refused rather than replaced."""
    if given_val is not None:
        raise ValueError(f"--val {given_val} without --data: give the training list too (--data LIST), or "
                         f"neither for the demo's generated set")
    root = Path(out_dir) / "synthetic"
    if rank == 0:
        make_synthetic(root, **LABELLED_SET)
    if world > 1:
        dist.barrier()
    return str(root / "train.csv"), str(root / "val.csv")


def load_boxes(root):
    """root/boxes.json -> {"videos/NNNNN.mp4": [[x0, y0, x1, y1] per frame]}."""
    return json.loads((Path(root) / "boxes.json").read_text())

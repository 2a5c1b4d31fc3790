"""Benchmark pre-training cost per masking scheme (paper Table 1a/1b) and the data pipeline.

    python -m tools.bench                                    # tiny preset on CPU, the 10 masking configs: < 2 min
    python -m tools.bench --preset base --batch 16           # on a GPU: the paper's ViT-B at its Table 1 batch
    python -m tools.bench --configs adaptive:0.95,tube:0.9   # a subset; --compile, --dtype, --steps, --warmup
    python -m tools.bench --data                             # data pipeline: clips/s per worker, seek, exact vs fast decoding
                                                             # and a prepared 320p copy against its 720p source
    python -m tools.bench --json bench.json                  # also write every number as JSON

Training step: for each (mask type, rho) the step of pretrain.py (forward, L_R + lambda L_S, backward,
AdamW), with `engine.make_optimizer` and `engine.amp_setup`, on one fixed random batch. It
reports the median step time after warm-up, clips/s, peak memory, achieved TFLOP/s and MFU from the
analytic count `train_flops`, the share of the step spent in each stage, and any host-device syncs.
On CPU each configuration runs in a fresh process, so its peak RSS is its own.

Data: `data.VideoDataset` + DataLoader on generated Kinetics-like videos (320x240, 25 fps, 10 s, H.264),
how much faster `data.decode_frames` is when it seeks than when it decodes from frame 0, and the exact
against the fast decoding path (`VideoDataset(decode=...)`) on generated 1280x720 and 1920x1080 videos, and
the 1280x720 video against its copy made by `tools.prepare.reencode` (short side 320): clips/s per worker
and the workers per GPU that feed --feed's training rate (`train_flops` at --feed_mfu of --feed_peak_tflops).
"""

import gc
import json
import math
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import av
import numpy as np
import torch
from torch.overrides import TorchFunctionMode

from adamae import AdaMAE, AdaMAEConfig, split_indices
from data import VideoDataset, clip_indices, clip_span, decode_frames, video_length
from demo.synthetic import write_video
from engine import amp_setup, make_optimizer, make_parser
from sampler import MASK_TYPES
from tools.reencode import GOP, SHORT_SIDE, reencode

# ----------------------------------------------------------------------------- defaults
# Table 1b (adaptive at five ratios), then Table 1a's baselines.
PAPER_CONFIGS = ("adaptive:0.98,adaptive:0.95,adaptive:0.9,adaptive:0.85,adaptive:0.8,"
                 "tube:0.9,tube:0.75,random:0.9,random:0.75,frame:0.875")
# name: (default, help). argparse is generated from this table; `python -m tools.bench --help` prints it.
DEFAULTS = {
    # training step
    "preset": ("tiny", "AdaMAEConfig preset: tiny | base | large"),
    "configs": (PAPER_CONFIGS, "comma-separated mask_type:rho (default: paper Table 1a and 1b)"),
    "batch": (None, "clips per step; default 16 on CUDA (Table 1's memory column), 8 on CPU"),
    "steps": (None, "timed steps per configuration; default 20 on CUDA, 5 on CPU"),
    "warmup": (None, "untimed steps first (allocator, autotuning, compilation); default 5 on CUDA, 2 on CPU"),
    "dtype": (None, "bf16 | fp16 | fp32; default bf16 on CUDA, fp32 on CPU"),
    "compile": (False, "torch.compile the model (stage shares are then not measured)"),
    "peak_tflops": (None, "peak dense TFLOP/s of the device for MFU; default from the GPU name (16-bit only)"),
    "device": (None, "cuda | cpu; default cuda when available"),
    "threads": (None, "torch CPU threads (torch.set_num_threads); default torch's, one per core"),
    "seed": (0, "random seed"),
    "json": (None, "also write the results to this JSON file"),
    # data pipeline
    "data": (False, "benchmark the data pipeline instead of the training step"),
    "video_dir": ("runs/bench_videos", "cache of the generated test videos (made once)"),
    "gop": (250, "keyframe interval of the pipeline's videos (250: x264's default, what ffmpeg writes)"),
    "data_clips": (48, "clips timed per pipeline measurement"),
    "img_size": (224, "crop size of the pipeline (the paper's)"),
    "feed": ("base:adaptive:0.95", "the training the loader must feed, preset:mask_type:rho"),
    "feed_mfu": (0.4, "MFU of that training"),
    "feed_peak_tflops": (989.0, "dense 16-bit peak TFLOP/s of its GPU (989: H100 SXM)"),
}
TYPES = {"batch": int, "steps": int, "warmup": int, "dtype": str, "peak_tflops": float, "device": str,
         "threads": int, "json": str}
CUDA_DEFAULTS = dict(batch=16, steps=20, warmup=5, dtype="bf16")
CPU_DEFAULTS = dict(batch=8, steps=5, warmup=2, dtype="fp32")
# Dense (no sparsity) bf16/fp16 tensor-core peaks from NVIDIA's datasheets; first matching name wins.
PEAK_TFLOPS = (("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H200", 989.0), ("A100", 312.0))
# Table 1a/1b memory column: ViT-B, batch 16 on one GPU.
PAPER_MEMORY_GB = {("adaptive", 0.98): 14.1, ("adaptive", 0.95): 14.4, ("adaptive", 0.9): 15.1,
                   ("adaptive", 0.85): 15.9, ("adaptive", 0.8): 16.9, ("tube", 0.9): 14.7, ("tube", 0.75): 16.2,
                   ("random", 0.9): 14.7, ("random", 0.75): 16.2, ("frame", 0.875): 12.8}
STAGES = ("sampler", "encoder", "decoder", "loss")
CLIP = dict(num_frames=16, stride=4)  # the pre-training clip (docs/recipe.md): 16 frames, temporal stride 4
VIDEO = dict(width=320, height=240, fps=25, seconds=10)  # Kinetics clips last 10 s; 320x240: a usual re-encode
SEEK_GOPS = (12, 25, 50, 250)  # keyframe intervals the seek speed-up is measured at
HD_VIDEOS = ((1280, 720), (1920, 1080))  # real resolutions for the decoding paths: 8 s, 25 fps, a keyframe every 25
DECODE_PATHS = (("exact", 1), ("fast", 1), ("fast", 0))  # (VideoDataset decode, codec threads; 0 = FFmpeg's choice)


def get_args(argv=None):
    parser = make_parser(__doc__, DEFAULTS, TYPES)
    args = parser.parse_args(argv)
    if args.dtype not in (None, "bf16", "fp16", "fp32"):
        parser.error(f"--dtype must be bf16, fp16 or fp32, got {args.dtype!r}")
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    for key, value in (CUDA_DEFAULTS if args.device == "cuda" else CPU_DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.device == "cuda" and args.dtype == "bf16" and not torch.cuda.is_bf16_supported():
        args.dtype = "fp16"
    return args


def parse_configs(text):
    """'adaptive:0.95,tube:0.9' -> [('adaptive', 0.95), ('tube', 0.9)]."""
    configs = []
    for item in text.split(","):
        mask_type, _, ratio = item.strip().partition(":")
        if mask_type not in MASK_TYPES or not ratio:
            raise ValueError(f"--configs: expected mask_type:rho with mask_type in {MASK_TYPES}, got {item!r}")
        configs.append((mask_type, float(ratio)))
    return configs


# ----------------------------------------------------------------------------- FLOPs

def block_flops(n, dim, mlp_ratio):
    """Forward FLOPs (2 per multiply-add) of one transformer block on n tokens: the qkv, proj, fc1 and
    fc2 matmuls, 2n(4d^2 + 2 d h), and attention's QK^T and AV, 2 * 2 n^2 d."""
    return 2 * n * (4 * dim * dim + 2 * dim * int(dim * mlp_ratio)) + 2 * 2 * n * n * dim


def forward_flops(cfg):
    """Matmul and conv FLOPs of one clip's forward pass, per stage. Norms, softmax, GELU and the loss
    are elementwise and not counted (the usual convention for MFU)."""
    N, Nv, D, Dd = cfg.num_tokens, cfg.num_visible, cfg.encoder_dim, cfg.decoder_dim
    patch_dim = cfg.tubelet_size * cfg.patch_size ** 2 * cfg.in_chans
    return {
        "tokenizer": 2 * N * patch_dim * D,  # Conv3d = one Linear per tubelet
        # one or more blocks over all N tokens + Linear(D, 1); nothing for the baselines
        "sampler": (cfg.sampler_depth * block_flops(N, D, cfg.mlp_ratio) + 2 * N * D
                    if cfg.mask_type == "adaptive" else 0),
        "encoder": cfg.encoder_depth * block_flops(Nv, D, cfg.mlp_ratio),  # visible tokens only
        # encoder_to_decoder on N_v, blocks on all N, head on the N - N_v masked tokens
        "decoder": 2 * Nv * D * Dd + cfg.decoder_depth * block_flops(N, Dd, cfg.mlp_ratio)
                   + 2 * (N - Nv) * Dd * patch_dim,
    }


def train_flops(cfg):
    """FLOPs of one clip's training step: backward costs twice the forward (gradients of activations
    and of weights), except the tokenizer's, which needs no gradient of the video."""
    f = forward_flops(cfg)
    return 3 * sum(f.values()) - f["tokenizer"]


def default_peak_tflops(device, dtype):
    """The device's dense 16-bit peak from PEAK_TFLOPS; None for CPUs, fp32 and unknown GPUs."""
    if device.type != "cuda" or dtype == "fp32":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_TFLOPS if key in name), None)


# ----------------------------------------------------------------------------- measuring

# The `device.type == "cuda"` branches (synchronize, peak memory, sync debug mode, device name, peak TFLOP/s)
# need a GPU: no CPU test reaches them, and docs/performance.md says which GPU runs are still to do.

def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device):
    """Seconds of one call, the device drained before and after."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def peak_rss():
    """This process's high-water resident set size in bytes (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


HOST_READS = {"item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__", "__index__", "nonzero",
              "argwhere", "masked_select", "unique", "unique_consecutive"}
TORCH_DIR = str(Path(torch.__file__).parent) + os.sep


class HostReads(TorchFunctionMode):
    """Records the calls, made by code outside torch, that read a tensor's values on the host (each one
    is a host-device sync on a GPU): .item(), .tolist(), bool(), .nonzero(), boolean-mask indexing, ...
    torch's own internals (e.g. the unfused optimizer's step counters, kept on the host) are not ours."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        bool_index = name in ("__getitem__", "__setitem__") and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool
            for i in (args[1] if isinstance(args[1], tuple) else (args[1],)))
        caller = sys._getframe(1)
        if (name in HOST_READS or bool_index) and not caller.f_code.co_filename.startswith(TORCH_DIR):
            self.calls.append(f"{Path(caller.f_code.co_filename).name}:{caller.f_lineno} {name}")
        return func(*args, **(kwargs or {}))


def host_reads(fn):
    """Where fn() reads tensor values on the host from Python: ['file:line name', ...]."""
    with HostReads() as mode:
        fn()
    return mode.calls


def cuda_syncs(fn):
    """Where fn() makes the GPU and host wait for each other, as torch.cuda.set_sync_debug_mode reports
    it (this also sees syncs inside torch's C++ ops, which HostReads cannot)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return [f"{Path(w.filename).name}:{w.lineno}" for w in caught if "synchroniz" in str(w.message)]


def stage_seconds(model, video, autocast, device, repeats):
    """Median forward+backward seconds of each stage of AdaMAE.forward, each run on its own with the
    inputs it gets in a real step. Inputs enter as fresh leaves, so backward stops at the stage's edge.
    Stages alternate within each repeat, so a slow spell of the machine hits all of them alike."""
    with torch.no_grad(), autocast:
        tokens = model.tokenizer(video)
        log_probs, mask, num_visible = model.sample(tokens)
        visible, masked = split_indices(mask, num_visible)
        latent = model.encode(tokens, visible)
        pred = model.decode(latent, visible, masked)

    def leaf(x):
        return None if x is None else x.detach().requires_grad_()

    stages = {  # each returns the output to back-propagate from (None: nothing to train)
        "sampler": lambda: model.sample(tokens)[0],  # sampler network and the draw (a baseline: its mask)
        "encoder": lambda: model.encode(leaf(tokens), visible),
        "decoder": lambda: model.decode(leaf(latent), visible, masked),
        "loss": lambda: total_loss(model, model.losses(video, leaf(pred), mask, masked, leaf(log_probs))),
    }

    def forward_backward(stage):
        with autocast:
            out = stage()
        if out is not None:
            out.backward(torch.ones_like(out))

    seconds = {name: [] for name in stages}
    for _ in range(repeats + 1):  # the first round warms up
        for name, stage in stages.items():
            seconds[name].append(timed(lambda: forward_backward(stage), device))
    model.zero_grad(set_to_none=True)
    return {name: statistics.median(s[1:]) for name, s in seconds.items()}


def total_loss(model, out):
    """L_R + lambda * L_S, the loss pretrain.py's step back-propagates."""
    return out.recon_loss + model.cfg.sampling_weight * out.sampling_loss


def training_step(model, video, optimizer, scaler, autocast):
    """pretrain.py's step for one micro-batch without clipping: forward, loss, backward, AdamW."""
    with autocast:
        loss = total_loss(model, model(video))
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)


def measure_config(args, mask_type, mask_ratio):
    """One (mask type, rho): median step time, peak memory, host syncs and stage times; a table row."""
    device = torch.device(args.device)
    if args.threads:  # a fresh process starts with torch's default
        torch.set_num_threads(args.threads)
    if args.compile:  # compile from scratch, as this configuration's own run would, sharing no shapes
        torch._dynamo.reset()
    torch.manual_seed(args.seed)
    rss_before = peak_rss()
    cfg = AdaMAEConfig.preset(args.preset, mask_type=mask_type, mask_ratio=mask_ratio)
    model = AdaMAE(cfg).to(device)
    # The recipe's AdamW (docs/recipe.md); the learning rate does not change the cost.
    optimizer = make_optimizer(model, lr=1e-4, weight_decay=0.05, betas=(0.9, 0.95))
    autocast, scaler = amp_setup(args.dtype, device)
    step_model = torch.compile(model) if args.compile else model
    video = torch.randn(args.batch, cfg.in_chans, cfg.num_frames, cfg.img_size, cfg.img_size, device=device)

    def step(m=step_model):  # the benchmarked (maybe compiled) model; step(model) runs the eager one
        training_step(m, video, optimizer, scaler, autocast)

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)  # the peak from here on still counts live weights and state
    seconds = [timed(step, device) for _ in range(args.steps)]
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else peak_rss() - rss_before
    reads = host_reads(lambda: step(model))  # eager: the Python code paths of the model and the step
    syncs = cuda_syncs(step) if device.type == "cuda" else None
    stages = None if args.compile else stage_seconds(model, video, autocast, device, args.steps)

    step_s = statistics.median(seconds)
    flop_per_s = train_flops(cfg) * args.batch / step_s
    row = dict(mask_type=mask_type, mask_ratio=mask_ratio, num_tokens=cfg.num_tokens, num_visible=cfg.num_visible,
               batch=args.batch, step_ms=1e3 * step_s, step_ms_each=[1e3 * s for s in seconds],
               clips_per_s=args.batch / step_s, peak_memory_bytes=peak, train_gflop_per_clip=train_flops(cfg) / 1e9,
               tflops=flop_per_s / 1e12, mfu=flop_per_s / 1e12 / args.peak_tflops if args.peak_tflops else None,
               host_reads=reads, cuda_syncs=syncs, stage_ms=None, stage_share=None,
               paper_memory_gb=PAPER_MEMORY_GB.get((mask_type, mask_ratio)) if args.preset == "base" else None)
    if stages is not None:
        row["stage_ms"] = {name: 1e3 * s for name, s in stages.items()}
        row["stage_share"] = {name: s / step_s for name, s in stages.items()}
        row["stage_share"]["other"] = 1 - sum(stages.values()) / step_s
    return row


def in_fresh_process(fn, *args):
    """fn(*args) in a new process (spawn), so its peak RSS belongs to this call alone."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def cpu_name():
    cpuinfo = Path("/proc/cpuinfo")
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                  if line.startswith("model name")), None) if cpuinfo.exists() else None
    return model or platform.processor() or platform.machine()


def device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()}, {torch.get_num_threads()} torch thread(s)"


def bench_steps(args):
    device = torch.device(args.device)
    if args.peak_tflops is None:
        args.peak_tflops = default_peak_tflops(device, args.dtype)
    cfg = AdaMAEConfig.preset(args.preset)
    meta = dict(preset=args.preset, tokens=cfg.num_tokens, clip=f"{cfg.num_frames}x{cfg.img_size}x{cfg.img_size}",
                batch=args.batch, dtype=args.dtype, compile=args.compile, steps=args.steps, warmup=args.warmup,
                device=device.type, device_name=device_name(device), torch=torch.__version__,
                peak_tflops=args.peak_tflops)
    configs = parse_configs(args.configs)
    for mask_type, ratio in configs:  # a bad ratio fails here, before any measuring
        AdaMAEConfig.preset(args.preset, mask_type=mask_type, mask_ratio=ratio)
    rows = []
    for mask_type, ratio in configs:
        if device.type == "cpu":
            row = in_fresh_process(measure_config, args, mask_type, ratio)
        else:
            row = measure_config(args, mask_type, ratio)
            gc.collect()  # the next configuration's peak starts from its own allocations
            torch.cuda.empty_cache()
        print(f"{mask_type} {ratio}: {row['step_ms']:.1f} ms/step", file=sys.stderr, flush=True)
        rows.append(row)
    return dict(meta=meta, rows=rows)


# ----------------------------------------------------------------------------- data pipeline

def moving_frames(seed, width, height, fps, seconds, speed=1.7):
    """uint8 (T, H, W, 3): a soft random texture panning `speed` px per frame, sub-pixel so that motion
    compensation leaves residuals to code (about 300-500 kbit/s at 320x240), and a disc on a sine path."""
    rng = np.random.default_rng(seed)
    n = fps * seconds
    cells = rng.integers(0, 256, (height // 8 + 1, int(width + speed * n) // 8 + 2, 3)).astype(np.float32)
    texture = cells.repeat(8, axis=0).repeat(8, axis=1)[:height]
    texture = (texture + np.roll(texture, 1, 0) + np.roll(texture, 1, 1) + np.roll(texture, 1, (0, 1))) / 4
    y, x = np.mgrid[:height, :width]
    frames = np.empty((n, height, width, 3), np.uint8)
    for i in range(n):
        left, frac = int(speed * i), speed * i % 1  # linear interpolation between two whole-pixel shifts
        frame = (1 - frac) * texture[:, left:left + width] + frac * texture[:, left + 1:left + 1 + width]
        cx, cy = 3 * i % width, height / 2 + height / 4 * np.sin(i / 10)
        frame[(x - cx) ** 2 + (y - cy) ** 2 < (height / 8) ** 2] = (250, 40, 40)
        frames[i] = frame.round()
    return frames


def make_video(folder, seed, gop, width, height, fps, seconds):
    """Path of a generated H.264 MP4 (x264 'fast', crf 23: CABAC and B-frames, as real encodes have),
    a keyframe every `gop` frames; written once, then reused."""
    path = Path(folder) / f"{width}x{height}_{fps}fps_{seconds}s_gop{gop}_seed{seed}.mp4"
    if not path.exists():
        partial = path.with_suffix(".partial.mp4")  # an interrupted run never leaves a torn video behind
        write_video(partial, moving_frames(seed, width, height, fps, seconds), fps,
                    options={"preset": "fast", "crf": "23", "g": str(gop)})
        os.replace(partial, path)
    return path


def seek_speedup(path, num_frames=CLIP["num_frames"], stride=CLIP["stride"], starts=5, repeats=5):
    """Milliseconds to decode clips that start in the last third of the video, with and without seeking
    (mean over `starts` evenly spaced starts of the median of `repeats` runs), and their ratio."""
    total = video_length(path)
    last = total - clip_span(num_frames, stride)
    if last < 2 * total // 3:
        raise ValueError(f"{path}: {total} frames leave no {num_frames}x{stride} clip in the last third")
    cpu, seek_s, full_s = torch.device("cpu"), 0.0, 0.0
    for start in np.linspace(2 * total // 3, last, starts).round().astype(int):
        indices = clip_indices(total, num_frames, stride, int(start))
        if not np.array_equal(decode_frames(path, indices, seek=True), decode_frames(path, indices, seek=False)):
            raise AssertionError(f"{path}: seeking decoded other frames than decoding from frame 0")
        seek_s += statistics.median(timed(lambda: decode_frames(path, indices, seek=True), cpu) for _ in range(repeats))
        full_s += statistics.median(timed(lambda: decode_frames(path, indices, seek=False), cpu) for _ in range(repeats))
    return dict(seek_ms=1e3 * seek_s / starts, full_ms=1e3 * full_s / starts, speedup=full_s / seek_s)


def make_testsrc_video(folder, width, height, fps=25, seconds=8, gop=25):
    """Path of an H.264 MP4 of FFmpeg's `testsrc2` pattern (moving shapes, a counter, colour bars; x264
    fast, crf 23: about 2.8 Mbit/s at 720p, like a web video), streamed from PyAV's lavfi input into
    the encoder (no frame array in memory); written once, then reused."""
    path = Path(folder) / f"testsrc2_{width}x{height}_{fps}fps_{seconds}s_gop{gop}.mp4"
    if path.exists():
        return path
    partial = path.with_suffix(".partial.mp4")
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(f"testsrc2=size={width}x{height}:rate={fps}", format="lavfi") as source, \
            av.open(str(partial), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "fast", "crf": "23", "g": str(gop)}
        stream.codec_context.thread_count = 1
        for _, frame in zip(range(fps * seconds), source.decode(video=0)):
            frame = frame.reformat(format="yuv420p")
            frame.pts, frame.pict_type = None, av.video.frame.PictureType.NONE  # else x264 obeys lavfi's "I"
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    os.replace(partial, path)
    return path


def loader_clips_per_s(paths, workers, repeat_aug, clips, img_size, seed=0, **dataset_options):
    """Clips/s that VideoDataset + DataLoader deliver (training transforms, batch 1, random videos),
    timed after one item per worker so that start-up is not counted. Each repeat_aug copy is a clip.
    dataset_options: more VideoDataset arguments (decode, decode_threads)."""
    dataset = VideoDataset([(str(p), -1) for p in paths], img_size=img_size, train=True, repeat_aug=repeat_aug,
                           **CLIP, **dataset_options)
    items = math.ceil(clips / repeat_aug)
    sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=items + workers,
                                             generator=torch.Generator().manual_seed(seed))
    batches = iter(torch.utils.data.DataLoader(dataset, batch_size=1, sampler=sampler, num_workers=workers))
    for _ in range(workers):
        next(batches)
    start, delivered = time.perf_counter(), 0
    for video, _, _ in batches:
        delivered += math.prod(video.shape[:-4])  # (1, 3, T, S, S) or (1, R, 3, T, S, S)
    return delivered / (time.perf_counter() - start)


def bench_data(args):
    torch.manual_seed(args.seed)
    paths = [make_video(args.video_dir, seed, args.gop, **VIDEO) for seed in range(4)]
    meta = dict(videos=len(paths), **VIDEO, gop=args.gop, img_size=args.img_size, clips=args.data_clips, **CLIP,
                host=f"{cpu_name()}, {os.cpu_count()} logical cores", torch=torch.__version__)
    pipeline = []
    for workers in (1, 2):
        for repeat_aug in (1, 2):
            rate = loader_clips_per_s(paths, workers, repeat_aug, args.data_clips, args.img_size, args.seed)
            pipeline.append(dict(workers=workers, repeat_aug=repeat_aug, clips_per_s=rate,
                                 clips_per_s_per_worker=rate / workers))
            print(f"{workers} worker(s), repeat_aug {repeat_aug}: {rate:.1f} clips/s", file=sys.stderr, flush=True)
    seek = [dict(gop=gop, **seek_speedup(make_video(args.video_dir, 0, gop, **VIDEO))) for gop in SEEK_GOPS]
    return dict(meta=meta, pipeline=pipeline, seek=seek, decoding=decoding_paths(args), prepared=prepared_copy(args))


def worker_cpu_seconds():
    """CPU time of this process's finished children: the DataLoader workers once they have exited."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def decoding_paths(args):
    """Clips/s of one DataLoader worker and its CPU time per clip, for each decoding path on each HD video,
    in the same run (exact first, so the page cache is warm for every row)."""
    rows = []
    for width, height in HD_VIDEOS:
        path = make_testsrc_video(args.video_dir, width, height)
        exact = None
        for decode, threads in DECODE_PATHS:
            cpu = worker_cpu_seconds()
            rate = loader_clips_per_s([path], 1, 1, args.data_clips, args.img_size, args.seed, decode=decode,
                                      decode_threads=threads)
            cpu_ms = 1e3 * (worker_cpu_seconds() - cpu) / (args.data_clips + 1)  # + the warm-up item
            exact = exact or rate
            rows.append(dict(width=width, height=height, decode=decode, threads=threads, clips_per_s=rate,
                             worker_cpu_ms_per_clip=cpu_ms, speedup=rate / exact))
            print(f"{width}x{height} {decode} threads={threads}: {rate:.1f} clips/s", file=sys.stderr, flush=True)
    return rows


def feed_rate(args):
    """Clips/s that one GPU trains on in --feed's configuration at --feed_mfu of --feed_peak_tflops, and the
    FLOPs per clip it is computed from (`train_flops`)."""
    preset, _, config = args.feed.partition(":")
    ((mask_type, mask_ratio),) = parse_configs(config)
    flops = train_flops(AdaMAEConfig.preset(preset, mask_type=mask_type, mask_ratio=mask_ratio))
    return args.feed_peak_tflops * 1e12 * args.feed_mfu / flops, flops


def prepared_copy(args, short_side=SHORT_SIDE, gop=GOP):
    """One DataLoader worker's clips/s and CPU time per clip (fast path, one codec thread) on the 1280x720 video
    and on its copy by `tools.prepare.reencode` (the tool's defaults), with repeat_aug 1 and 2 (alternating, the
    same run), and the workers per GPU that deliver `feed_rate`."""
    source = make_testsrc_video(args.video_dir, *HD_VIDEOS[0])
    copy = Path(args.video_dir) / f"prepared{short_side}_gop{gop}" / source.name
    if not copy.exists():
        reencode(source, copy, short_side, gop)
    rate, flops = feed_rate(args)
    rows = []
    for repeat_aug in (1, 2):
        for name, path in (("source", source), ("prepared", copy)):
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                size = (stream.width, stream.height)
            cpu = worker_cpu_seconds()
            clips = loader_clips_per_s([path], 1, repeat_aug, args.data_clips, args.img_size, args.seed,
                                       decode="fast", decode_threads=1)
            cpu_ms = 1e3 * (worker_cpu_seconds() - cpu) / (math.ceil(args.data_clips / repeat_aug) + 1) / repeat_aug
            rows.append(dict(video=name, width=size[0], height=size[1], repeat_aug=repeat_aug,
                             clips_per_s_per_worker=clips, worker_cpu_ms_per_clip=cpu_ms,
                             workers_per_gpu=math.ceil(rate / clips)))
            print(f"{name} {size[0]}x{size[1]} repeat_aug {repeat_aug}: {clips:.1f} clips/s", file=sys.stderr,
                  flush=True)
    speedup = rows[1]["clips_per_s_per_worker"] / rows[0]["clips_per_s_per_worker"]
    cpu_speedup = rows[0]["worker_cpu_ms_per_clip"] / rows[1]["worker_cpu_ms_per_clip"]
    return dict(feed=args.feed, feed_mfu=args.feed_mfu, feed_peak_tflops=args.feed_peak_tflops,
                train_gflop_per_clip=flops / 1e9, train_clips_per_s=rate, short_side=short_side, gop=gop,
                rows=rows, speedup=speedup, cpu_speedup=cpu_speedup)


# ----------------------------------------------------------------------------- report

def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def fmt(value, spec, missing="–"):
    return missing if value is None else format(value, spec)


def steps_report(result):
    meta, rows = result["meta"], result["rows"]
    cuda = meta["device"] == "cuda"
    mode = "torch.compile" if meta["compile"] else "eager"
    memory = ("peak allocated (GiB): torch.cuda.max_memory_allocated over the timed steps (weights, "
              "gradients, AdamW state, activations)" if cuda else
              "peak RSS growth (GiB): high-water RSS of a fresh process running only this configuration, minus "
              "its value after imports (weights, gradients, AdamW state, activations, allocator slack"
              + (", and the compiler's own memory)" if meta["compile"] else ")"))
    lines = [f"AdaMAE training step: preset {meta['preset']} ({meta['tokens']} tokens, {meta['clip']} clips), "
             f"batch {meta['batch']}, {meta['dtype']}, {mode}, {meta['device_name']}, torch {meta['torch']}; "
             f"median of {meta['steps']} steps after {meta['warmup']} warm-up steps.",
             f"- {memory}.",
             "- GFLOP/clip: analytic matmul+conv count of forward + backward (bench.train_flops); MFU: "
             + (f"against {meta['peak_tflops']:g} TFLOP/s." if meta["peak_tflops"] else
                "no peak known for this device and dtype (--peak_tflops)."),
             "- sampler/encoder/decoder/loss: share of the median step taken by that stage's forward + backward, "
             "timed on its own with the step's inputs (synchronised); other = the rest of the step: tokenizer, "
             "index gathers, AdamW, and the difference between isolated and in-step timing (may be < 0)."]
    reads = sorted({call for row in rows for call in row["host_reads"]})
    lines.append(f"- host reads in the step's Python code (syncs on a GPU): {', '.join(reads) or 'none'}")
    if cuda:
        syncs = sorted({call for row in rows for call in row["cuda_syncs"]})
        lines.append(f"- CUDA syncs per step (torch.cuda.set_sync_debug_mode): {', '.join(syncs) or 'none'}")
    header = ["mask", "ρ", "visible", "GFLOP/clip", "step (ms)", "clips/s",
              "peak alloc (GiB)" if cuda else "peak RSS growth (GiB)", "TFLOP/s", "MFU", *STAGES, "other"]
    paper = meta["preset"] == "base"
    if paper:
        header.append("paper (GB, b16)")
    table = []
    for row in rows:
        share = row["stage_share"] or {}
        cells = [row["mask_type"], f"{row['mask_ratio']:g}", f"{row['num_visible']}/{row['num_tokens']}",
                 f"{row['train_gflop_per_clip']:.1f}", f"{row['step_ms']:.1f}", f"{row['clips_per_s']:.1f}",
                 f"{row['peak_memory_bytes'] / 2 ** 30:.2f}", f"{row['tflops']:.3g}", fmt(row["mfu"], ".1%"),
                 *[fmt(share.get(name), ".0%") for name in (*STAGES, "other")]]
        if paper:
            cells.append(fmt(row["paper_memory_gb"], ".1f"))
        table.append(cells)
    return "\n".join(lines) + "\n\n" + markdown_table(header, table)


def data_report(result):
    meta = result["meta"]
    lines = [f"Data pipeline: VideoDataset + DataLoader (batch 1), {meta['num_frames']} frames at stride "
             f"{meta['stride']}, random resized crop to {meta['img_size']}, flip; {meta['videos']} generated videos "
             f"{meta['width']}x{meta['height']}, {meta['fps']} fps, {meta['seconds']} s, H.264 (x264 fast, crf 23, a "
             f"keyframe every {meta['gop']} frames), in the page cache; {meta['clips']} clips per row after one "
             f"warm-up item per worker; {meta['host']}, torch {meta['torch']}.", ""]
    lines.append(markdown_table(["workers", "repeat_aug", "clips/s", "clips/s per worker"],
                                [[str(r["workers"]), str(r["repeat_aug"]), f"{r['clips_per_s']:.1f}",
                                  f"{r['clips_per_s_per_worker']:.1f}"] for r in result["pipeline"]]))
    lines += ["", "Seeking to the keyframe before the clip vs decoding from frame 0 (data.decode_frames), "
              "clips starting in the last third of the video (mean of 5 starts, median of 5 runs each):", ""]
    lines.append(markdown_table(["keyframe every", "from frame 0 (ms)", "seek (ms)", "speed-up"],
                                [[f"{r['gop']} frames", f"{r['full_ms']:.1f}", f"{r['seek_ms']:.1f}",
                                  f"{r['speedup']:.1f}x"] for r in result["seek"]]))
    lines += ["", f"Decoding paths, one DataLoader worker, the same clips and crops ({meta['clips']} per row) on "
              f"testsrc2 videos (8 s, 25 fps, x264 fast crf 23, a keyframe every 25 frames); exact: full-resolution "
              f"RGB, crop and resize in torch; fast: the decoder drops unwanted non-reference frames, FFmpeg crops, "
              f"scales and converts; codec threads 0 = FFmpeg's choice (more cores per worker):", ""]
    lines.append(markdown_table(["video", "decode", "codec threads", "clips/s", "worker CPU ms/clip", "speed-up"],
                                [[f"{r['width']}x{r['height']}", r["decode"], str(r["threads"]), f"{r['clips_per_s']:.1f}",
                                  f"{r['worker_cpu_ms_per_clip']:.0f}", f"{r['speedup']:.1f}x"]
                                 for r in result["decoding"]]))
    return "\n".join(lines + ["", prepared_report(result["prepared"])])


def prepared_report(prepared):
    p = prepared
    lines = [f"A copy made by tools.prepare (short side {p['short_side']}, a keyframe every {p['gop']} frames) against "
             f"its source, one DataLoader worker, fast path, one codec thread; workers per GPU to feed {p['feed']} at "
             f"{p['feed_mfu']:.0%} MFU of {p['feed_peak_tflops']:g} TFLOP/s: {p['train_gflop_per_clip']:.0f} "
             f"GFLOP/clip (train_flops), {p['train_clips_per_s']:.0f} clips/s:", ""]
    lines.append(markdown_table(["video", "repeat_aug", "clips/s per worker", "worker CPU ms/clip", "workers per GPU"],
                                [[f"{r['video']} {r['width']}x{r['height']}", str(r["repeat_aug"]),
                                  f"{r['clips_per_s_per_worker']:.1f}", f"{r['worker_cpu_ms_per_clip']:.0f}",
                                  str(r["workers_per_gpu"])] for r in p["rows"]]))
    return "\n".join(lines + ["", f"prepared / source at repeat_aug 1: {p['speedup']:.1f}x the clips/s per worker, "
                                   f"{p['cpu_speedup']:.1f}x less worker CPU per clip"])


def main(argv=None):
    args = get_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = bench_data(args) if args.data else bench_steps(args)
    print(data_report(result) if args.data else steps_report(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()

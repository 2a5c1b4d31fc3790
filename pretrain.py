"""Pre-train AdaMAE (paper Sec. 3.2 and 4; the recipe of Sec. 4 and the authors' code).

    python pretrain.py                      # the embedded demo: synthetic videos, tiny preset, CPU, ~3 min
    torchrun --nproc_per_node=8 pretrain.py --data k400_train.csv --preset base     # the paper's recipe

One script for CPU, one GPU and N GPUs: DDP only when torchrun sets RANK. Each step draws the visible
tokens from the sampler, trains the MAE on L_R (Eq. 4) and the sampler on L_S (Eq. 5) with one backward.
On the synthetic demo it also measures how much of the sampler's probability lands on the moving
object ("foreground enrichment", the paper's Fig. 3-4 claim as a number; 1.0 = random masking).
"""

import argparse
import json
import math
import os
import textwrap
import time
import warnings
from contextlib import nullcontext
from dataclasses import fields
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from adamae import AdaMAE, AdaMAEConfig
from convert import load_checkpoint_file
from data import VideoDataset, clip_indices, decode_frames, eval_crops, load_boxes, make_synthetic, read_list, \
    video_length
from tokenizer import patchify

# ----------------------------------------------------------------------------- defaults
# name: (default, help). argparse is generated from this table; `python pretrain.py --help` prints it.
DEFAULTS = {
    # data
    "data": (None, "VideoMAE list file ('path label' per line) or a folder of videos; none = the synthetic demo"),
    "stride": (4, "temporal stride between sampled frames (K400: 4; SSv2 in the reference: 2)"),
    "repeat_aug": (1, "clips cut from each decoded video (SpatioTemporal-MAE's repeated augmentation)"),
    "num_workers": (2, "DataLoader processes per GPU"),
    "decode": ("fast", "fast: crop and scale in FFmpeg | exact: full-resolution RGB, crop and resize in torch"),
    "synthetic_background": ("flat", "without --data: the generated videos' background, "
                                     "flat | gradient | texture | texture_object (data.draw_video)"),
    "probe_videos": (8, "real data: the sampler's motion correlation is measured on the first N videos of --data "
                        "(synthetic data: its 16 held-out clips)"),
    # model
    "preset": ("tiny", "AdaMAEConfig preset: tiny | small | base | large | huge"),
    "mask_type": ("adaptive", "adaptive | random | tube | frame (Table 1a)"),
    "mask_ratio": (None, "rho; default: the preset's (0.95)"),
    "sampling_weight": (None, "lambda on L_S; default: the preset's (1e-4)"),
    "sampler_dropout": (None, "dropout in the sampler's block while training; default: the preset's (0.1, as the "
                              "reference); runs saved before this option existed had 0"),
    "patch_size": (None, "spatial patch p; default: the preset's (tiny 8, base/large 16)"),
    "encoder_dim": (None, "encoder width (heads unchanged); default: the preset's"),
    # optimisation (paper Sec. 4; README: The recipe)
    "batch_size": (8, "videos per process per micro-step"),
    "accum_steps": (1, "micro-steps per optimizer step (gradient accumulation)"),
    "epochs": (800, "training epochs"),
    "warmup_epochs": (40, "linear warmup, then cosine to min_lr"),
    "base_lr": (1.5e-4, "lr = base_lr * effective_batch / 256"),
    "min_lr": (1e-5, "final lr, scaled like the lr"),
    "sampler_lr_scale": (1.0, "the sampler's lr relative to the MAE's (1 = the paper's single optimizer)"),
    "weight_decay": (0.05, "AdamW weight decay (none on biases, norms, position embeddings, mask token)"),
    "beta1": (0.9, "AdamW beta1"),
    "beta2": (0.95, "AdamW beta2"),
    "clip_grad": (None, "max gradient norm; default: no clipping"),
    # system
    "dtype": (None, "bf16 | fp16 | fp32; default: bf16 on CUDA when supported, else fp32"),
    "compile": (False, "torch.compile the model"),
    "seed": (0, "random seed (each rank and epoch derives its own)"),
    "out_dir": ("runs/pretrain", "checkpoint.pt, log.jsonl, vis/ and (without --data) the synthetic set"),
    "resume": (None, "checkpoint to resume from; default: out_dir/checkpoint.pt when it exists"),
    "log_every": (20, "optimizer steps between log lines (the only host-device syncs of the loop)"),
    "save_every": (1, "epochs between checkpoints"),
    "eval_every": (200, "steps between measurements of the sampler: motion correlation (any data) "
                        "and foreground enrichment (synthetic data)"),
    "vis_every": (500, "steps between pictures of a fixed held-out clip; 0 = never"),
    "max_steps": (None, "stop after this many optimizer steps (smoke tests)"),
}
TYPES = {"data": str, "mask_ratio": float, "sampling_weight": float, "sampler_dropout": float, "clip_grad": float,
         "dtype": str, "resume": str, "max_steps": int, "patch_size": int, "encoder_dim": int}
# The embedded demo (no --data): what a 2-core laptop trains in about 3 minutes on the synthetic set.
DEMO = dict(epochs=30, warmup_epochs=2, base_lr=0.03, min_lr=3e-4, num_workers=1, eval_every=100, vis_every=250)
SYNTHETIC = dict(num_videos=160, num_frames=64, size=96, val_fraction=0.1)  # stride 4 x 16 frames spans 61


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help keeps the docstring's layout and ends each option with its default, unless its text already
    says what the default is."""

    def _get_help_string(self, action):
        return action.help if "default" in (action.help or "") else super()._get_help_string(action)


def make_parser(description, defaults, types, demo=None):
    """argparse from a {name: (default, help)} table (every script's options); booleans get --name/--no-name.
    `demo`: the values that replace the defaults when the script runs its demo (no --data), listed in --help."""
    epilog = None
    if demo:
        flags = [(f"--{k}" if v else f"--no-{k}") if isinstance(v, bool) else f"--{k} {v}" for k, v in demo.items()]
        epilog = textwrap.fill("without --data (the demo) these defaults change: " + ", ".join(flags), width=100)
    parser = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter, epilog=epilog)
    for key, (value, help) in defaults.items():
        if isinstance(value, bool) or types.get(key) is bool:
            parser.add_argument(f"--{key}", action=argparse.BooleanOptionalAction, default=value, help=help)
        else:
            parser.add_argument(f"--{key}", type=types.get(key, type(value)), default=value, help=help)
    return parser


def get_args(argv=None):
    parser = make_parser(__doc__, DEFAULTS, TYPES, DEMO)
    if parser.parse_known_args(argv)[0].data is None:
        parser.set_defaults(**DEMO)  # the demo recipe, unless a value is given on the command line
    return parser.parse_args(argv)


def model_config(args):
    overrides = {k: getattr(args, k) for k in ("mask_type", "mask_ratio", "sampling_weight", "sampler_dropout",
                                               "patch_size", "encoder_dim")
                 if getattr(args, k) is not None}
    return AdaMAEConfig.preset(args.preset, **overrides)


# ----------------------------------------------------------------------------- distributed and precision

def setup_distributed():
    """(rank, world_size, device). DDP only when torchrun set RANK; gloo on CPU, nccl on CUDA.

    RANK numbers the process among all nodes (it picks the data shard and who writes files);
    LOCAL_RANK numbers it on its own node, so it picks the GPU: node 1 of 2 x 8 GPUs runs
    RANK 8..15 on cuda:0..7."""
    if "RANK" not in os.environ:
        return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    if torch.cuda.is_available():  # needs GPUs: the CPU tests run the gloo branch and check_finite/all_reduce
        torch.cuda.set_device(local)
        dist.init_process_group("nccl")
        return rank, world, torch.device("cuda", local)
    dist.init_process_group("gloo")
    return rank, world, torch.device("cpu")


def collective_device():
    """Where a collective's tensors must live: the CPU when the process group has a CPU backend (gloo),
    else the current CUDA device (NCCL has none: a CPU tensor there fails with "No backend type
    associated with device type cpu")."""
    device_types = {item.split(":")[0] for item in dist.get_backend_config().split(",")}
    return torch.device("cpu") if "cpu" in device_types else torch.device("cuda")  # the one set_device chose


def all_reduce(value, op=dist.ReduceOp.SUM):
    """`value` (a tensor or a number) reduced over all processes, as a tensor on the caller's device.
    With this and `all_gather`, every collective of the project moves its tensors to
    `collective_device()` by construction; one process returns the value as it is."""
    tensor = torch.as_tensor(value)
    if not dist.is_initialized():
        return tensor
    reduced = tensor.to(collective_device(), copy=True)
    dist.all_reduce(reduced, op=op)
    return reduced.to(tensor.device)


def all_gather(tensor):
    """[every process's `tensor`] (same shape on all), in rank order, on the caller's device."""
    if not dist.is_initialized():
        return [tensor]
    local = tensor.to(collective_device())
    parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, local)
    return [part.to(tensor.device) for part in parts]


def amp_setup(dtype_name, device):
    """(autocast context, GradScaler): bf16 on CUDA when supported, else fp32; GradScaler only for fp16."""
    if dtype_name is None:  # the CUDA default needs a GPU; the tests run bf16 and fp16 on the CPU by name
        dtype_name = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype_name]
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    return autocast, scaler


# ----------------------------------------------------------------------------- optimisation

def no_weight_decay(name, param):
    """Biases, norms, position embeddings and the mask token are not decayed (README: The recipe)."""
    return param.ndim <= 1 or name.endswith("pos_embed") or name.endswith("mask_token")


def make_optimizer(model, lr, weight_decay, betas, sampler_lr_scale=1.0):
    """AdamW over theta and phi together (the paper trains both with one optimizer), fused (CUDA and the
    CPU both have the kernel). With sampler_lr_scale != 1 the sampler's parameters (theta) get their own
    groups whose `lr_scale` `set_lr` applies; at 1 the groups are the paper's, so existing checkpoints load."""
    def decay_groups(named, **extra):
        return [{"params": [p for n, p in named if not no_weight_decay(n, p)], "weight_decay": weight_decay, **extra},
                {"params": [p for n, p in named if no_weight_decay(n, p)], "weight_decay": 0.0, **extra}]

    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if sampler_lr_scale == 1.0:
        groups = decay_groups(params)
    else:
        theta = [(n, p) for n, p in params if n.startswith("sampler.")]
        phi = [(n, p) for n, p in params if not n.startswith("sampler.")]
        groups = decay_groups(phi) + decay_groups(theta, lr_scale=sampler_lr_scale)
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=betas, fused=True)


def get_lr(step, total_steps, warmup_steps, lr, min_lr):
    """Linear warmup to lr, then half a cosine down to min_lr, per optimizer step."""
    if step < warmup_steps:
        return lr * step / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def mae_loss(model, video):
    """AdaMAE's objective: (L_R + lambda * L_S, the three numbers to report)."""
    out = model(video)
    return out.loss, torch.stack([out.loss, out.recon_loss, out.sampling_loss])


def train_step(model, micro_batches, optimizer, scaler, autocast, loss_fn=mae_loss, clip_grad=None):
    """One optimizer step over a list of micro-batches (gradient accumulation); `loss_fn(model, batch)`
    returns (loss, stats). Returns the mean stats as a device tensor: no host sync here."""
    stats = []
    for i, batch in enumerate(micro_batches):
        last = i == len(micro_batches) - 1
        # DDP all-reduces gradients only on the last micro-step.
        with model.no_sync() if isinstance(model, DDP) and not last else nullcontext():
            with autocast:
                loss, batch_stats = loss_fn(model, batch)
            scaler.scale(loss / len(micro_batches)).backward()
        stats.append(batch_stats.detach().float())
    if clip_grad:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return torch.stack(stats).mean(dim=0)


def set_lr(optimizer, lr):
    """The schedule's lr for this step, times each group's own scale (layer-wise decay in finetune.py)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def make_loader(name, dataset, batch_size, accum_steps, rank, world, seed, num_workers, device):
    """(sampler, loader, optimizer steps per epoch): shuffled shards of equal size for every rank (a
    DistributedSampler also for one process, so there is one code path)."""
    sampler = torch.utils.data.DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed,
                                                  drop_last=True)
    # Pinned pages make the transfers asynchronous (non_blocking); pinning needs CUDA, so no CPU test runs it.
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=True,
                                         num_workers=num_workers, pin_memory=device.type == "cuda")
    steps = len(loader) // accum_steps
    if steps == 0:
        raise ValueError(f"{name}: {len(dataset)} videos give no full step of {batch_size} x {accum_steps} per process "
                         f"on {world} process(es)")
    return sampler, loader, steps


def epoch_micro_batches(loader, sampler, epoch, seed, rank, steps, accum_steps):
    """One epoch as `steps` lists of `accum_steps` loader batches, reseeded so that resuming at an
    epoch replays it exactly (data order, augmentation in the main process, masks)."""
    sampler.set_epoch(epoch)
    torch.manual_seed(seed + 1000 * epoch + rank)
    batches = iter(loader)
    for _ in range(steps):
        yield [next(batches) for _ in range(accum_steps)]


def check_finite(finite, when, ckpt_path):
    """Stop every process on a non-finite loss in any of them, before anything is saved: DDP's averaged
    gradients carry one process's NaN into all weights, so rank 0 must not save even if its own loss was
    finite. Every process calls this at the same steps and raises the same error. One host sync."""
    bad = int(all_reduce((~finite).long()))  # processes that saw a non-finite loss
    if bad:
        world = dist.get_world_size() if dist.is_initialized() else 1
        raise FloatingPointError(
            f"non-finite loss {when} in {bad} of {world} process(es); stopped without saving: {ckpt_path} is the "
            f"last good state. Resume from it, e.g. with --clip_grad 1.0 or --dtype bf16 (README: Troubleshooting)")


def append_jsonl(path, record):
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


# ----------------------------------------------------------------------------- checkpoints

def save_checkpoint(path, model, optimizer, scaler, step, epoch, cfg, args, **extra):
    """Everything to resume exactly, as plain types, written atomically: a crash never leaves a torn file."""
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
             "step": step, "epoch": epoch, "config": cfg.to_dict(), "args": vars(args), **extra}
    tmp = Path(str(path) + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def find_resume(explicit, ckpt_path):
    """The checkpoint to resume from: `explicit` (--resume), else ckpt_path when it exists, else None.
    Every process must agree: a node that cannot see out_dir would start over while the others resume."""
    resume = explicit or (ckpt_path if Path(ckpt_path).exists() else None)
    found, world = int(all_reduce(int(resume is not None))), dist.get_world_size() if dist.is_initialized() else 1
    if found not in (0, world):
        raise FileNotFoundError(f"{ckpt_path}: seen by {found} of {world} processes; put out_dir on a disk every "
                                f"node sees (or pass --resume with a path every node can read)")
    return resume


def load_checkpoint(path, model, optimizer=None, scaler=None):
    """Restore a pre-training checkpoint (weights_only: never unpickles arbitrary objects). Returns it."""
    ckpt = load_checkpoint_file(path)
    saved = AdaMAEConfig.from_dict(ckpt["config"])
    if saved != model.cfg:
        changed = {f.name: (getattr(saved, f.name), getattr(model.cfg, f.name)) for f in fields(saved)
                   if getattr(saved, f.name) != getattr(model.cfg, f.name)}
        raise ValueError(f"{path} was written for another model config (saved, now): {changed}; give the saved "
                         f"values as options (e.g. --sampler_dropout 0) or use another --out_dir")
    model.load_state_dict(ckpt["model"])
    if optimizer is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
    if scaler is not None:
        scaler.load_state_dict(ckpt["scaler"])
    return ckpt


# ----------------------------------------------------------------------------- foreground enrichment

def foreground_tokens(boxes, indices, cfg, video_size):
    """(N,) bool: token overlaps the object's box in any frame of its tubelet. Boxes are in video pixels
    (x0, y0, x1, y1, exclusive); the evaluation clip is the whole square frame resized to img_size."""
    t, p = cfg.tubelet_size, cfg.patch_size
    gt, gh, gw = cfg.grid
    scale = cfg.img_size / video_size
    box = torch.tensor([boxes[i] for i in indices], dtype=torch.float32).reshape(gt, t, 4) * scale
    lo = torch.arange(gh) * p  # patch edges in pixels, the same for rows and columns
    rows = (lo[None, None, :] < box[..., 3:4]) & (lo[None, None, :] + p > box[..., 1:2])  # (gt, t, gh)
    cols = (lo[None, None, :] < box[..., 2:3]) & (lo[None, None, :] + p > box[..., 0:1])  # (gt, t, gw)
    hit = (rows[..., :, None] & cols[..., None, :]).any(dim=1)  # (gt, gh, gw)
    return hit.flatten()


def load_enrichment_clips(root, cfg, stride, max_clips=16):
    """Held-out synthetic clips (start 0, whole frame) with their foreground token masks."""
    boxes, info = load_boxes(root), json.loads((Path(root) / "synthetic.json").read_text())
    clips, fg = [], []
    for path, _ in read_list(Path(root) / "val.csv")[:max_clips]:
        key = Path(path).resolve().relative_to(Path(root).resolve()).as_posix()  # as boxes.json names it
        indices = clip_indices(video_length(path), cfg.num_frames, stride, start=0)
        clips.append(eval_crops(decode_frames(path, indices), cfg.img_size)[0])
        fg.append(foreground_tokens(boxes[key], indices, cfg, info["size"]))
    return torch.stack(clips), torch.stack(fg)


@torch.no_grad()
def foreground_enrichment(model, clips, fg, device, batch=8):
    """(share of P on foreground tokens) / (share of tokens in the foreground), and the same for the
    sampled visible tokens; mean over clips. Random masking scores 1 on both."""
    model.eval()
    prob_share, vis_share = [], []
    for i in range(0, len(clips), batch):
        out = model(clips[i:i + batch].to(device))
        f = fg[i:i + batch].to(device).float()
        base = f.mean(dim=1)
        vis_share.append(((~out.mask).float() * f).sum(1) / (~out.mask).sum(1) / base)
        if out.log_probs is not None:
            prob_share.append((out.log_probs.exp() * f).sum(1) / base)
    model.train()
    prob = torch.cat(prob_share).mean().item() if prob_share else float("nan")
    return prob, torch.cat(vis_share).mean().item()


# ----------------------------------------------------------------------------- motion correlation (no boxes needed)

def average_ranks(x):
    """Ranks along the last dim (1 = smallest); tied values share the average of their ranks."""
    less = (x[..., None, :] < x[..., :, None]).sum(-1)  # (..., N): how many are smaller
    equal = (x[..., None, :] == x[..., :, None]).sum(-1)  # (..., N): ties, itself included
    return less + (equal + 1) / 2


def spearman(a, b):
    """Spearman rank correlation of a and b along the last dim (Pearson of average ranks). A constant
    side (e.g. the uniform P of an untrained sampler) prefers nothing: its correlation is 0, not nan."""
    ra, rb = average_ranks(a.float()), average_ranks(b.float())
    ra, rb = ra - ra.mean(-1, keepdim=True), rb - rb.mean(-1, keepdim=True)
    norm = (ra.square().sum(-1) * rb.square().sum(-1)).sqrt()
    return torch.where(norm > 0, (ra * rb).sum(-1) / norm.clamp_min(1e-12), torch.zeros_like(norm))


def motion_energy(clips, cfg):
    """(B, C, T, H, W) -> (B, N): per token, the mean squared difference between each of its frames
    and the frame before it, over its t x p x p pixels and channels (the clip's first frame takes its
    difference to the second). Zero where nothing moves, whatever the texture."""
    diff = clips.float().diff(dim=2).square()  # (B, C, T - 1, H, W)
    diff = torch.cat([diff[:, :, :1], diff], dim=2)  # (B, C, T, H, W)
    return patchify(diff, cfg.patch_size, cfg.tubelet_size).mean(-1)


@torch.no_grad()
def motion_correlation(model, clips, device, batch=8):
    """Mean over clips of Spearman(P, motion energy) per token: +1 when the sampler ranks tokens
    exactly by how much they move, 0 for random masking (P uniform). Needs no boxes, so it also
    checks a run on real data, where static texture and sensor noise compete with motion."""
    if model.sampler is None:
        return float("nan")
    model.eval()
    rho = []
    for i in range(0, len(clips), batch):
        video = clips[i:i + batch].to(device)
        rho.append(spearman(model(video).log_probs.exp(), motion_energy(video, model.cfg)))
    model.train()
    return torch.cat(rho).mean().item()


def load_probe_clips(synthetic_root, samples, cfg, stride, num_videos):
    """The fixed clips the sampler is measured on, (clips, foreground masks or None): the synthetic
    set's held-out clips with their object boxes, or the evaluation view of the data's first readable
    videos (None if none of them is)."""
    if synthetic_root is not None:
        return load_enrichment_clips(synthetic_root, cfg, stride)
    views = VideoDataset(samples[:num_videos], cfg.num_frames, stride, cfg.img_size, train=False)
    clips = [clip for clip, _, unreadable in (views[i] for i in range(len(views))) if not unreadable]
    return (torch.stack(clips), None) if clips else None  # unreadable ones are left out (the dataset warned)


def measure_sampler(model, probe, device):
    """{"motion_correlation": ...} and, with object boxes, the two foreground enrichments."""
    clips, fg = probe
    record = {"motion_correlation": motion_correlation(model, clips, device)}
    if fg is not None:
        record["enrichment"], record["enrichment_visible"] = foreground_enrichment(model, clips, fg, device)
    return record


def describe_sampler(record):
    """`measure_sampler`'s record as the line the training loop prints."""
    motion = f"motion correlation {record['motion_correlation']:+.2f}"
    if "enrichment" not in record:
        return motion
    return (f"foreground enrichment {record['enrichment']:.2f} (sampled visible tokens "
            f"{record['enrichment_visible']:.2f}), {motion}")


# ----------------------------------------------------------------------------- main

def main(argv=None):
    args = get_args(argv)
    rank, world, device = setup_distributed()
    is_main = rank == 0
    out_dir = Path(args.out_dir)
    synthetic_root = None
    if args.data is None:
        synthetic_root = out_dir / "synthetic"
        if is_main:
            make_synthetic(synthetic_root, seed=0, background=args.synthetic_background, **SYNTHETIC)
        if world > 1:
            dist.barrier()  # the other ranks wait for the set to exist
        args.data = str(synthetic_root / "train.csv")
    torch.manual_seed(args.seed + rank)

    cfg = model_config(args)
    model = AdaMAE(cfg).to(device)  # the module whose state is saved, whatever wraps it below
    autocast, scaler = amp_setup(args.dtype, device)
    dataset = VideoDataset(args.data, num_frames=cfg.num_frames, stride=args.stride, img_size=cfg.img_size,
                           train=True, repeat_aug=args.repeat_aug, decode=args.decode)
    data_sampler, loader, steps_per_epoch = make_loader(args.data, dataset, args.batch_size, args.accum_steps, rank, world,
                                                        args.seed, args.num_workers, device)
    total_steps = args.epochs * steps_per_epoch
    effective_batch = args.batch_size * args.repeat_aug * args.accum_steps * world
    lr, min_lr = args.base_lr * effective_batch / 256, args.min_lr * effective_batch / 256
    optimizer = make_optimizer(model, lr, args.weight_decay, (args.beta1, args.beta2), args.sampler_lr_scale)

    ckpt_path = out_dir / "checkpoint.pt"
    resume = find_resume(args.resume, ckpt_path)
    step, start_epoch = 0, 0
    if resume:
        ckpt = load_checkpoint(resume, model, optimizer, scaler)
        step, start_epoch = ckpt["step"], ckpt["epoch"] + 1
    compiled = torch.compile(model) if args.compile else model
    ddp_model = DDP(compiled) if world > 1 else compiled

    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        n_sampler = sum(p.numel() for p in model.sampler.parameters()) if model.sampler is not None else 0
        n_all = sum(p.numel() for p in model.parameters())
        print(f"data {args.data}: {len(dataset)} videos; {world} process(es) on {device}; {steps_per_epoch} steps/epoch")
        print(f"effective batch {args.batch_size} videos x {args.repeat_aug} clips x {args.accum_steps} accum x "
              f"{world} procs = {effective_batch}; lr = {args.base_lr:g} x {effective_batch}/256 = {lr:.3g} "
              f"(min {min_lr:.3g}), warmup {args.warmup_epochs} of {args.epochs} epochs")
        print(f"tokens: {cfg.num_tokens} = {cfg.grid}, visible {cfg.num_visible}, masked "
              f"{cfg.num_tokens - cfg.num_visible} ({cfg.mask_type}, rho {cfg.mask_ratio}); parameters: "
              f"sampler {n_sampler / 1e6:.2f}M, MAE {(n_all - n_sampler) / 1e6:.2f}M")
        if resume:
            print(f"resumed from {resume} at step {step}, epoch {start_epoch}")

    probe, vis_clip = None, None
    if is_main:
        probe = load_probe_clips(synthetic_root, dataset.samples, cfg, args.stride, args.probe_videos)
        vis_clip = probe[0][:1] if probe else None  # (1, 3, T, H, W): a fixed held-out clip, drawn as training goes

    def measure(step):
        record = measure_sampler(model, probe, device)
        append_jsonl(out_dir / "log.jsonl", {"step": step, **record})
        return describe_sampler(record)

    if probe is not None and step == 0:
        print(f"before training: {measure(step)}")
    bar = tqdm(total=total_steps, initial=step, disable=not is_main, dynamic_ncols=True)
    finite = torch.ones((), dtype=torch.bool, device=device)
    t_log, clips_since = time.time(), 0
    for epoch in range(start_epoch, args.epochs):
        skipped = 0  # unreadable videos replaced in this epoch, on this process
        for batches in epoch_micro_batches(loader, data_sampler, epoch, args.seed, rank, steps_per_epoch,
                                           args.accum_steps):
            if args.max_steps is not None and step >= args.max_steps:
                break
            skipped += sum(int(bad.sum()) for _, _, bad in batches)
            micro = [(video.flatten(0, 1) if args.repeat_aug > 1 else video).to(device, non_blocking=True)
                     for video, _, _ in batches]  # (B*R, 3, T, H, W) with repeated augmentation
            set_lr(optimizer, get_lr(step, total_steps, args.warmup_epochs * steps_per_epoch, lr, min_lr))
            stats = train_step(ddp_model, micro, optimizer, scaler, autocast, clip_grad=args.clip_grad)
            finite &= torch.isfinite(stats).all()
            step += 1
            clips_since += sum(len(v) for v in micro) * world
            bar.update()
            if step % args.log_every == 0 or step == total_steps:
                check_finite(finite, f"by step {step}", ckpt_path)
                loss, recon, samp = stats.tolist()
                speed = clips_since / (time.time() - t_log)
                t_log, clips_since = time.time(), 0
                current_lr = optimizer.param_groups[0]["lr"]
                bar.set_postfix(loss=f"{loss:.4f}", recon=f"{recon:.4f}", samp=f"{samp:.3f}",
                                lr=f"{current_lr:.2e}", clips_s=f"{speed:.1f}")
                if is_main:
                    append_jsonl(out_dir / "log.jsonl", {"step": step, "epoch": epoch, "loss": loss, "recon_loss": recon,
                                                         "sampling_loss": samp, "lr": current_lr, "clips_per_s": speed})
            if probe is not None and args.eval_every and step % args.eval_every == 0:
                bar.write(f"step {step}: {measure(step)}")
            if is_main and vis_clip is not None and args.vis_every and step % args.vis_every == 0:
                write_picture(model, vis_clip.to(device), out_dir / "vis" / f"step{step:07d}.png")
        else:  # the epoch ran to its end
            check_finite(finite, f"in epoch {epoch}", ckpt_path)
            skipped = int(all_reduce(skipped))
            if is_main:
                if skipped:
                    warnings.warn(f"epoch {epoch}: skipped {skipped} unreadable videos (named above)")
                append_jsonl(out_dir / "log.jsonl", {"epoch": epoch, "skipped_videos": skipped})
                if (epoch + 1) % args.save_every == 0 or epoch + 1 == args.epochs:
                    save_checkpoint(ckpt_path, model, optimizer, scaler, step, epoch, cfg, args)
            continue
        break  # max_steps reached inside the epoch: its partial progress is not checkpointed
    bar.close()
    if is_main:
        print(f"final: {measure(step)} (random masking: enrichment 1.00, motion correlation 0) on "
              f"{len(probe[0])} {'held-out' if probe[1] is not None else 'fixed'} clips")
        if vis_clip is not None:
            write_picture(model, vis_clip.to(device), out_dir / "vis" / "final.png")
        print(f"checkpoint: {ckpt_path}")
    if world > 1:
        dist.barrier()  # a rank tearing gloo down while another still finishes a collective can abort
        dist.destroy_process_group()


def write_picture(model, clip, path):
    from visualize import save_figure  # the picture needs nothing else from training
    path.parent.mkdir(parents=True, exist_ok=True)
    model.eval()
    save_figure(model, clip, path)
    model.train()


if __name__ == "__main__":
    main()

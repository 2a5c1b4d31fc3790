"""The training machinery `pretrain.py` and `finetune.py` share (as mae's engine and util/misc):
nothing here is specific to one recipe.

  * options      `make_parser`: argparse from a script's {name: (default, help)} table
  * processes    `setup_distributed` (torchrun's RANK / LOCAL_RANK), `all_reduce` / `all_gather` /
                 `gather_rows`: every collective, its tensors on the process group's device
  * precision    `amp_setup`: one autocast context and a GradScaler for fp16
  * optimiser    `make_optimizer` (AdamW groups), `get_lr` (warmup + cosine), `set_lr`
  * steps        `train_step` (accumulation, no_sync, clipping), `make_loader`, `epoch_micro_batches`
  * safety       `check_finite` (one stop for every process), `find_resume`, `save_checkpoint`
                 (atomic), `append_jsonl`
"""

import argparse
import json
import math
import os
import textwrap
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP


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


def gather_rows(rows, index, total):
    """Every process's rows (n, K) of dataset videos `index` (n,) -> all `total` videos' rows in dataset
    order, the same on every process. Shards differ in size by at most one and may be empty; padding rows
    carry index -1. Float64, so indices and labels stay exact integers."""
    rows = torch.cat([index[:, None].double(), rows.double()], dim=1)
    world = dist.get_world_size() if dist.is_initialized() else 1
    padded = rows.new_full((math.ceil(total / world), rows.shape[1]), -1.0)
    padded[:len(rows)] = rows
    rows = torch.cat(all_gather(padded))
    rows = rows[rows[:, 0] >= 0]
    rows = rows[rows[:, 0].argsort()]
    if not torch.equal(rows[:, 0].long(), torch.arange(total)):
        raise RuntimeError(f"evaluation gathered {len(rows)} rows for {total} videos: some counted twice or never")
    return rows[:, 1:]


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


def set_lr(optimizer, lr):
    """The schedule's lr for this step, times each group's own scale (layer-wise decay in finetune.py)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


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


# ----------------------------------------------------------------------------- safety: non-finite stop, resume, checkpoints

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


def find_resume(explicit, ckpt_path):
    """The checkpoint to resume from: `explicit` (--resume), else ckpt_path when it exists, else None.
    Every process must agree: a node that cannot see out_dir would start over while the others resume."""
    resume = explicit or (ckpt_path if Path(ckpt_path).exists() else None)
    found, world = int(all_reduce(int(resume is not None))), dist.get_world_size() if dist.is_initialized() else 1
    if found not in (0, world):
        raise FileNotFoundError(f"{ckpt_path}: seen by {found} of {world} processes; put out_dir on a disk every "
                                f"node sees (or pass --resume with a path every node can read)")
    return resume


def save_checkpoint(path, model, optimizer, scaler, step, epoch, cfg, args, **extra):
    """Everything to resume exactly, as plain types, written atomically: a crash never leaves a torn file."""
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
             "step": step, "epoch": epoch, "config": cfg.to_dict(), "args": vars(args), **extra}
    tmp = Path(str(path) + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def append_jsonl(path, record):
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")

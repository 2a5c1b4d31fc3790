"""Pre-train AdaMAE (paper Sec. 3.2 and 4).

    python pretrain.py                                        # recipe demo: generated videos, tiny model, CPU, ~5 min
    torchrun --nproc_per_node=8 pretrain.py --data k400.csv   # recipe paper: ViT-B, rho 0.95, 32 clips/GPU, 800 epochs

One script for CPU, one GPU and N GPUs: DDP only when torchrun sets RANK. Each optimizer step draws the
visible tokens from the sampler, and one backward of L_R + lambda * L_S trains the MAE on Eq. 4 and the
sampler on Eq. 5 (`train_step`). On the demo's generated videos it also measures how much of the sampler's
probability lands on the moving object ("foreground enrichment", 1.0 = random masking; paper Fig. 3-4).
"""

import warnings
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from adamae import AdaMAE, AdaMAEConfig
from data import VideoDataset
from demo.synthetic import pretraining_demo
from engine import COUNT, FRACTION, NON_NEGATIVE, POSITIVE, POSITIVE_INT, TRAINING_TYPES, Epochs, RunLock, TrainLog, \
    amp_setup, append_jsonl, apply_recipe, clip_gradients, find_resume, finish, get_lr, load_checkpoint_file, \
    make_loader, make_optimizer, make_parser, one_of, resume_text, set_lr, setup_distributed, sync_gradients
from metrics import describe_sampler, load_probe_clips, measure_sampler
from pictures.figures import save_figure
from weights.convert import require_kind


# ----------------------------------------------------------------------------- recipes
@dataclass(frozen=True)
class Recipe:
    """Everything a pre-training recipe decides; docs/recipe.md has the table (a test keeps them equal)."""
    preset: str            # AdaMAEConfig preset: the model and the clip (frames, size, tubelets)
    mask_ratio: float      # rho
    batch_size: int        # clips per process per micro-step
    epochs: int
    warmup_epochs: int
    base_lr: float         # lr = base_lr * effective batch / 256
    min_lr: float
    weight_decay: float
    beta2: float
    stride: int            # frames between sampled frames
    num_workers: int       # DataLoader processes per process
    eval_every: int        # steps between measurements of the sampler
    vis_every: int         # steps between pictures


RECIPES = {
    # Sec. 4 "Pre-training setting": ViT-B, 800 epochs of AdamW, 32 clips per GPU on 8 GPUs, K400's stride 4.
    "paper": Recipe(preset="base", mask_ratio=0.95, batch_size=32, epochs=800, warmup_epochs=40, base_lr=1.5e-4,
                    min_lr=1e-5, weight_decay=0.05, beta2=0.95, stride=4, num_workers=2, eval_every=200, vis_every=500),
    # What 2 CPU cores train in about 5 minutes: the tiny preset on 144 generated videos, 540 steps; a higher lr
    # because 540 steps at the paper's lr would barely move the weights (docs/recipe.md).
    "demo": Recipe(preset="tiny", mask_ratio=0.95, batch_size=8, epochs=30, warmup_epochs=2, base_lr=0.03,
                   min_lr=3e-4, weight_decay=0.05, beta2=0.95, stride=4, num_workers=1, eval_every=100, vis_every=250),
}

# ----------------------------------------------------------------------------- options
# name: (default, help); None for the recipe's values. argparse is generated from this table.
OPTIONS = {
    # data
    "data": (None, "VideoMAE list file ('path label' per line) or a folder of videos; none: the demo's generated set"),
    "stride": (None, "temporal stride between sampled frames (K400: 4; SSv2: 2)"),
    "repeat_aug": (1, "clips cut from each decoded video (repeated augmentation: one decode, several clips)"),
    "num_workers": (None, "DataLoader processes per GPU"),
    "decode": ("fast", "fast: crop and scale in FFmpeg | exact: full-resolution RGB, crop and resize in torch"),
    "synthetic_background": ("flat", "without --data: the generated videos' background, "
                                     "flat | gradient | texture | texture_object | clutter (demo/synthetic.py)"),
    "probe_videos": (8, "with --data: the sampler's motion correlation is measured on the first N videos"),
    # model
    "preset": (None, "AdaMAEConfig preset: tiny | small | base | large | huge"),
    "mask_type": ("adaptive", "adaptive | random | tube | frame (Table 1a)"),
    "mask_ratio": (None, "rho, the share of tokens hidden from the encoder"),
    "sampling_weight": (None, "lambda, the weight of L_S (Eq. 5) in the loss; default: AdaMAEConfig's (1e-4)"),
    "sampler_dropout": (None, "dropout in the sampler's block while training; default: AdaMAEConfig's (0.1)"),
    "target": (None, "what the decoder predicts (Eq. 4): patch_norm (pixels normalised per patch, footnote 1) | pixel "
                     "(the clip's ImageNet-normalised pixels); default: AdaMAEConfig's (patch_norm; docs/method.md)"),
    "position_table": (None, "fixed position table: 1d (over the flattened index, the released weights') | 3d (one "
                             "sinusoid per axis); default: AdaMAEConfig's (1d)"),
    "patch_size": (None, "spatial patch p; default: the preset's (tiny 8, others 16)"),
    "encoder_dim": (None, "encoder width (heads unchanged); default: the preset's"),
    # optimisation
    "batch_size": (None, "clips per process per micro-step"),
    "accum_steps": (1, "micro-steps per optimizer step (gradient accumulation)"),
    "epochs": (None, "training epochs"),
    "warmup_epochs": (None, "linear warmup, then cosine to min_lr"),
    "base_lr": (None, "lr = base_lr * effective_batch / 256"),
    "min_lr": (None, "final lr, scaled like the lr"),
    "sampler_lr_scale": (1.0, "the sampler's lr relative to the MAE's (1 = one optimizer for both, as the paper)"),
    "weight_decay": (None, "AdamW weight decay (none on biases, norms, position embeddings, mask token)"),
    "beta1": (0.9, "AdamW beta1"),
    "beta2": (None, "AdamW beta2"),
    "clip_grad": (None, "max gradient norm; default: no clipping"),
    # system
    "dtype": (None, "bf16 | fp16 | fp32; default: bf16 on CUDA when supported, else fp32"),
    "compile": (False, "torch.compile the model"),
    "seed": (0, "random seed (each rank and epoch derives its own)"),
    "out_dir": ("runs/pretrain", "checkpoint.pt, log.jsonl, vis/ and (without --data) the generated set"),
    "resume": (None, "checkpoint to resume from; default: out_dir/checkpoint.pt when it exists"),
    "log_every": (20, "optimizer steps between log lines (the only host-device syncs of the loop)"),
    "save_every": (1, "epochs between checkpoints"),
    "eval_every": (None, "steps between measurements of the sampler: motion correlation (any data) and "
                         "foreground enrichment (the demo's set); 0 = never"),
    "vis_every": (None, "steps between pictures of a fixed held-out clip; 0 = never"),
    "max_steps": (None, "stop after this many optimizer steps (smoke tests)"),
}
TYPES = {**TRAINING_TYPES, "repeat_aug": POSITIVE_INT, "decode": one_of("fast", "exact"), "probe_videos": COUNT,
         "preset": str, "mask_ratio": float, "sampling_weight": NON_NEGATIVE,
         "sampler_dropout": FRACTION, "patch_size": POSITIVE_INT, "encoder_dim": POSITIVE_INT,
         "sampler_lr_scale": POSITIVE, "beta1": FRACTION, "beta2": FRACTION, "eval_every": COUNT, "vis_every": COUNT,
         "target": str, "position_table": str}


def get_args(argv=None):
    """(args, the recipe line a run prints first)."""
    args = make_parser(__doc__, OPTIONS, TYPES, RECIPES).parse_args(argv)
    return args, apply_recipe(args, RECIPES, args.data)


def model_config(args):
    overrides = {k: getattr(args, k) for k in ("mask_type", "mask_ratio", "sampling_weight", "sampler_dropout",
                                               "target", "position_table", "patch_size", "encoder_dim")
                 if getattr(args, k) is not None}
    return AdaMAEConfig.preset(args.preset, **overrides)


# ----------------------------------------------------------------------------- the step

def train_step(model, micro_batches, optimizer, scaler, autocast, clip_grad=None):
    """One optimizer step over `micro_batches` (gradient accumulation); the mean loss terms, on the device."""
    cfg, stats = unwrap(model).cfg, []
    for i, video in enumerate(micro_batches):
        with sync_gradients(model, now=i == len(micro_batches) - 1):  # DDP all-reduces on the last only
            with autocast:
                out = model(video)                                           # Fig. 2, adamae.py
                loss = out.recon_loss + cfg.sampling_weight * out.sampling_loss  # L_R + lambda * L_S
            scaler.scale(loss / len(micro_batches)).backward()  # L_R reaches phi only, L_S theta only
        stats.append(torch.stack([loss, out.recon_loss, out.sampling_loss]).detach().float())
    clip_gradients(model, optimizer, scaler, clip_grad)
    scaler.step(optimizer)  # skipped by the GradScaler when fp16 gradients overflowed
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return torch.stack(stats).mean(dim=0)  # (loss, L_R, L_S)


def unwrap(model):
    """The AdaMAE inside DDP and torch.compile wrappers."""
    model = model.module if isinstance(model, DDP) else model
    return getattr(model, "_orig_mod", model)


# ----------------------------------------------------------------------------- main

def main(argv=None):
    args, recipe_line = get_args(argv)
    rank, world, device = setup_distributed()
    is_main = rank == 0
    if is_main:
        print(recipe_line)
    lock = RunLock(args.out_dir, rank)  # one run per out_dir, before anything is written there
    demo_root = None if args.data else pretraining_demo(args.out_dir, args.synthetic_background, rank, world)
    args.data = args.data or str(demo_root / "train.csv")
    torch.manual_seed(args.seed + rank)

    cfg = model_config(args)
    model = AdaMAE(cfg).to(device)  # the module whose state is saved, whatever wraps it below
    autocast, scaler = amp_setup(args.dtype, device)
    dataset = VideoDataset(args.data, num_frames=cfg.num_frames, stride=args.stride, img_size=cfg.img_size,
                           train=True, repeat_aug=args.repeat_aug, decode=args.decode)
    data_sampler, loader, steps_per_epoch = make_loader(args.data, dataset, args.batch_size, args.accum_steps, rank,
                                                        world, args.seed, args.num_workers, device)
    total_steps, warmup_steps = args.epochs * steps_per_epoch, args.warmup_epochs * steps_per_epoch
    effective_batch = args.batch_size * args.repeat_aug * args.accum_steps * world
    lr, min_lr = args.base_lr * effective_batch / 256, args.min_lr * effective_batch / 256
    optimizer = make_optimizer(model, lr, args.weight_decay, (args.beta1, args.beta2), args.sampler_lr_scale)

    ckpt_path = Path(args.out_dir) / "checkpoint.pt"
    resume = find_resume(args.resume, ckpt_path)
    step, start_epoch, saved_args = load_checkpoint(resume, model, optimizer, scaler) if resume else (0, 0, None)
    compiled = torch.compile(model) if args.compile else model
    ddp_model = DDP(compiled) if world > 1 else compiled
    if is_main:
        print_setup(args, model, dataset, world, device, steps_per_epoch, effective_batch, lr, min_lr)
        print(resume_text(resume, step, start_epoch, saved_args, args) if resume else "starting from step 0")
    log = TrainLog(args.out_dir, total_steps, step, args.log_every, is_main, resume=resume)
    probe = SamplerProbe(args, model, dataset, demo_root, device, log) if is_main else None
    if probe and step == 0:
        probe.measure(step, "before training")
    epochs = Epochs(loader, data_sampler, steps_per_epoch, args.accum_steps, args.seed, rank, args.max_steps)
    finite = torch.ones((), dtype=torch.bool, device=device)  # checked on every rank at log steps and epoch ends
    for epoch in range(start_epoch, args.epochs):
        for batches in epochs.epoch(epoch, step):
            micro = [(video.flatten(0, 1) if args.repeat_aug > 1 else video).to(device, non_blocking=True)
                     for video, _, _ in batches]  # (B, 3, T, H, W); B * repeat_aug with repeated augmentation
            set_lr(optimizer, get_lr(step, total_steps, warmup_steps, lr, min_lr))
            loss, recon, samp = train_step(ddp_model, micro, optimizer, scaler, autocast, args.clip_grad)
            finite &= torch.isfinite(loss)
            step += 1
            log.step(step, epoch, {"loss": loss, "recon_loss": recon, "sampling_loss": samp}, finite,
                     sum(len(v) for v in micro) * world, optimizer.param_groups[0]["lr"])
            if probe:
                probe.after(step)
        if not epochs.complete:
            break  # --max_steps ended the run inside this epoch: its partial progress is not checkpointed
        log.write({"step": step, "epoch": epoch, **log.end_of_epoch(epoch, step, finite, model, optimizer, epochs)})
        if (epoch + 1) % args.save_every == 0 or epoch + 1 == args.epochs:
            log.save(ckpt_path, model, optimizer, scaler, step, epoch, cfg, args)
    log.bar.close()
    if probe:
        probe.measure(step, "final")
        print(f"checkpoint: {log.last_good[0]} (step {log.last_good[1]})" if log.last_good else
              "no checkpoint written: the run ended before its first save")
    finish(None, world, lock)


def load_checkpoint(path, model, optimizer, scaler):
    """Restore a pre-training checkpoint into model, optimizer and scaler; (step, next epoch, its run's options)."""
    ckpt = require_kind(path, load_checkpoint_file(path), ("pretrain.py",), "pretrain.py --resume")
    saved = AdaMAEConfig.from_dict(ckpt["config"], path)
    if saved != model.cfg:
        changed = {f.name: (getattr(saved, f.name), getattr(model.cfg, f.name)) for f in fields(saved)
                   if getattr(saved, f.name) != getattr(model.cfg, f.name)}
        raise ValueError(f"{path} was written for another model config (saved, now): {changed}; give the saved "
                         f"values as options or use another --out_dir")
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scaler.load_state_dict(ckpt["scaler"])
    return ckpt["step"], ckpt["epoch"] + 1, ckpt.get("args", {})


def print_setup(args, model, dataset, world, device, steps_per_epoch, effective_batch, lr, min_lr):
    """The derived sizes a run depends on: data, batch and lr, tokens, parameters."""
    cfg = model.cfg
    n_sampler = sum(p.numel() for p in model.sampler.parameters()) if model.sampler is not None else 0
    n_all = sum(p.numel() for p in model.parameters())
    print(f"data {args.data}: {len(dataset)} videos; {world} process(es) on {device}; {steps_per_epoch} steps/epoch")
    print(f"effective batch {args.batch_size} videos x {args.repeat_aug} clips x {args.accum_steps} accum x "
          f"{world} procs = {effective_batch}; lr = {args.base_lr:g} x {effective_batch}/256 = {lr:.3g} "
          f"(min {min_lr:.3g}), warmup {args.warmup_epochs} of {args.epochs} epochs")
    print(f"tokens: {cfg.num_tokens} = {cfg.grid}, visible {cfg.num_visible}, masked "
          f"{cfg.num_tokens - cfg.num_visible} ({cfg.mask_type}, rho {cfg.mask_ratio}); parameters: "
          f"sampler {n_sampler / 1e6:.2f}M, MAE {(n_all - n_sampler) / 1e6:.2f}M")


class SamplerProbe:
    """What the sampler has learned, on fixed clips (rank 0): every eval_every steps the measurements of
    metrics.py (foreground enrichment on the demo's held-out clips, motion correlation on any data), and
    every vis_every steps the paper's Fig. 4 for one clip in out_dir/vis/."""

    def __init__(self, args, model, dataset, demo_root, device, log):
        self.args, self.model, self.device, self.log = args, model, device, log
        self.clips = load_probe_clips(demo_root, dataset.samples, model.cfg, args.stride, args.probe_videos)
        if self.clips is None:
            warnings.warn(f"none of the first {args.probe_videos} videos of {args.data} is readable: "
                          f"no measurements of the sampler and no pictures")

    def after(self, step):
        if self.clips and self.args.eval_every and step % self.args.eval_every == 0:
            self.measure(step, f"step {step}")
        if self.clips and self.args.vis_every and step % self.args.vis_every == 0:
            self.picture(f"step{step:07d}.png")

    def measure(self, step, when):
        if self.clips is None:
            return
        record = measure_sampler(self.model, self.clips, self.device)
        append_jsonl(Path(self.args.out_dir) / "log.jsonl", {"step": step, **record})
        if when == "final":
            kind = "held-out" if self.clips[1] is not None else "fixed"
            self.log.print(f"final: {describe_sampler(record)} (random masking: enrichment 1.00, motion correlation "
                           f"0) on {len(self.clips[0])} {kind} clips")
            self.picture("final.png")
        else:
            self.log.print(f"{when}: {describe_sampler(record)}")

    def picture(self, name):
        self.model.eval()
        save_figure(self.model, self.clips[0][:1].to(self.device), Path(self.args.out_dir) / "vis" / name)
        self.model.train()


if __name__ == "__main__":
    main()

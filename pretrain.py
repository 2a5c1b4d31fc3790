"""Pre-train AdaMAE (paper Sec. 3.2 and 4; the recipe of Sec. 4 and the authors' code).

    python pretrain.py                      # the embedded demo: synthetic videos, tiny preset, CPU, ~3 min
    torchrun --nproc_per_node=8 pretrain.py --data k400_train.csv --preset base     # the paper's recipe

One script for CPU, one GPU and N GPUs: DDP only when torchrun sets RANK. Each step draws the visible
tokens from the sampler, trains the MAE on L_R (Eq. 4) and the sampler on L_S (Eq. 5) with one backward.
On the synthetic demo it also measures how much of the sampler's probability lands on the moving
object ("foreground enrichment", the paper's Fig. 3-4 claim as a number; 1.0 = random masking).
"""

import time
import warnings
from dataclasses import fields
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from adamae import AdaMAE, AdaMAEConfig
from weights.convert import load_checkpoint_file
from data import VideoDataset
from engine import all_reduce, amp_setup, append_jsonl, check_finite, epoch_micro_batches, find_resume, get_lr, \
    make_loader, make_optimizer, make_parser, save_checkpoint, set_lr, setup_distributed, train_step
from pictures.figures import save_figure
from metrics import describe_sampler, load_probe_clips, measure_sampler
from demo.synthetic import DEMO_SET, make_synthetic

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
                                     "flat | gradient | texture | texture_object (synthetic.draw_video)"),
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
DEMO_TEXT = "the tiny preset on generated videos, " + ", ".join(f"{k} {v}" for k, v in DEMO.items())


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


# ----------------------------------------------------------------------------- checkpoints

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


# ----------------------------------------------------------------------------- main

def main(argv=None):
    args = get_args(argv)
    rank, world, device = setup_distributed()
    is_main = rank == 0
    synthetic_root = make_demo_data(args, rank, world) if args.data is None else None
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
    step, start_epoch = 0, 0
    if resume:
        ckpt = load_checkpoint(resume, model, optimizer, scaler)
        step, start_epoch = ckpt["step"], ckpt["epoch"] + 1
    compiled = torch.compile(model) if args.compile else model
    ddp_model = DDP(compiled) if world > 1 else compiled
    if is_main:
        print_setup(args, model, dataset, world, device, steps_per_epoch, effective_batch, lr, min_lr)
        if resume:
            print(f"resumed from {resume} at step {step}, epoch {start_epoch}")
    report = Report(args, model, dataset, synthetic_root, device, total_steps, step, is_main)

    finite = torch.ones((), dtype=torch.bool, device=device)  # checked (on all ranks) by report and at epoch ends
    for epoch in range(start_epoch, args.epochs):
        if args.max_steps is not None and step >= args.max_steps:
            break
        skipped = 0  # unreadable videos replaced in this epoch, on this process
        for batches in epoch_micro_batches(loader, data_sampler, epoch, args.seed, rank, steps_per_epoch,
                                           args.accum_steps):
            if args.max_steps is not None and step >= args.max_steps:
                break  # inside an epoch: its partial progress is not checkpointed
            skipped += sum(int(bad.sum()) for _, _, bad in batches)
            micro = [(video.flatten(0, 1) if args.repeat_aug > 1 else video).to(device, non_blocking=True)
                     for video, _, _ in batches]  # (B*R, 3, T, H, W) with repeated augmentation
            set_lr(optimizer, get_lr(step, total_steps, warmup_steps, lr, min_lr))
            stats = train_step(ddp_model, micro, optimizer, scaler, autocast, clip_grad=args.clip_grad)
            finite &= torch.isfinite(stats).all()
            step += 1
            report(step, epoch, stats, finite, sum(len(v) for v in micro) * world, optimizer.param_groups[0]["lr"])
        else:  # the epoch ran to its end: every rank checks, then rank 0 saves
            report.end_of_epoch(epoch, finite, skipped)
            if is_main and ((epoch + 1) % args.save_every == 0 or epoch + 1 == args.epochs):
                save_checkpoint(ckpt_path, model, optimizer, scaler, step, epoch, cfg, args)
    report.close(step, ckpt_path)
    if world > 1:
        dist.barrier()  # a rank tearing gloo down while another still finishes a collective can abort
        dist.destroy_process_group()


def make_demo_data(args, rank, world):
    """Without --data: the synthetic set (written by rank 0, the others wait) becomes --data."""
    root = Path(args.out_dir) / "synthetic"
    if rank == 0:
        print(f"demo recipe (no --data): {DEMO_TEXT}; the paper's recipe: --data LIST --preset base "
              f"(README: The recipe)")
        make_synthetic(root, seed=0, background=args.synthetic_background, **DEMO_SET)
    if world > 1:
        dist.barrier()
    args.data = str(root / "train.csv")
    return root


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


class Report:
    """What a run reports as it goes: log lines (log.jsonl and the progress bar) every log_every steps, the
    sampler's measurements (metrics.py) every eval_every, pictures of a fixed clip every vis_every, the
    count of unreadable videos per epoch. Files and measurements on rank 0; the non-finite checks, which
    are collective, on every rank."""

    def __init__(self, args, model, dataset, synthetic_root, device, total_steps, step, is_main):
        self.args, self.model, self.device, self.is_main = args, model, device, is_main
        self.out_dir = Path(args.out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.probe = (load_probe_clips(synthetic_root, dataset.samples, model.cfg, args.stride, args.probe_videos)
                      if is_main else None)
        self.vis_clip = self.probe[0][:1] if self.probe else None  # (1, 3, T, H, W), the same all run long
        if self.probe is not None and step == 0:
            print(f"before training: {self.measure(step)}")
        self.bar = tqdm(total=total_steps, initial=step, disable=not is_main, dynamic_ncols=True)
        self.t_log, self.clips = time.time(), 0

    def __call__(self, step, epoch, stats, finite, clips, lr):
        """After optimizer step `step`, whose (loss, L_R, L_S) are `stats` (a device tensor: read only here)."""
        args = self.args
        self.bar.update()
        self.clips += clips
        if step % args.log_every == 0 or step == self.bar.total:
            check_finite(finite, f"by step {step}", self.out_dir / "checkpoint.pt")
            self.log(step, epoch, stats.tolist(), lr)
        if self.probe is not None and args.eval_every and step % args.eval_every == 0:
            self.bar.write(f"step {step}: {self.measure(step)}")
        if self.vis_clip is not None and args.vis_every and step % args.vis_every == 0:
            self.picture(f"step{step:07d}.png")

    def log(self, step, epoch, stats, lr):
        loss, recon, samp = stats
        speed = self.clips / (time.time() - self.t_log)
        self.t_log, self.clips = time.time(), 0
        self.bar.set_postfix(loss=f"{loss:.4f}", recon=f"{recon:.4f}", samp=f"{samp:.3f}", lr=f"{lr:.2e}",
                             clips_s=f"{speed:.1f}")
        if self.is_main:
            append_jsonl(self.out_dir / "log.jsonl", {"step": step, "epoch": epoch, "loss": loss, "recon_loss": recon,
                                                      "sampling_loss": samp, "lr": lr, "clips_per_s": speed})

    def end_of_epoch(self, epoch, finite, skipped):
        """Before anything is saved: stop every rank on a non-finite loss; count unreadable videos on all."""
        check_finite(finite, f"in epoch {epoch}", self.out_dir / "checkpoint.pt")
        skipped = int(all_reduce(skipped))
        if self.is_main:
            if skipped:
                warnings.warn(f"epoch {epoch}: skipped {skipped} unreadable videos (named above)")
            append_jsonl(self.out_dir / "log.jsonl", {"epoch": epoch, "skipped_videos": skipped})

    def measure(self, step):
        record = measure_sampler(self.model, self.probe, self.device)
        append_jsonl(self.out_dir / "log.jsonl", {"step": step, **record})
        return describe_sampler(record)

    def picture(self, name):
        self.model.eval()
        save_figure(self.model, self.vis_clip.to(self.device), self.out_dir / "vis" / name)
        self.model.train()

    def close(self, step, ckpt_path):
        self.bar.close()
        if self.probe is not None:
            kind = "held-out" if self.probe[1] is not None else "fixed"
            print(f"final: {self.measure(step)} (random masking: enrichment 1.00, motion correlation 0) on "
                  f"{len(self.probe[0])} {kind} clips")
        if self.vis_clip is not None:
            self.picture("final.png")
        if self.is_main:
            print(f"checkpoint: {ckpt_path}")


if __name__ == "__main__":
    main()

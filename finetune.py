"""Fine-tune a pre-trained AdaMAE encoder for action classification, and evaluate it (paper Sec. 4, Tables 2-3).

    python finetune.py                 # recipe demo: runs/pretrain/checkpoint.pt, then from scratch, on the CPU
    torchrun --nproc_per_node=8 finetune.py --data k400_train.csv --val k400_val.csv \\
        --pretrained runs/k400/checkpoint.pt                          # recipe paper (K400); --recipe ssv2 for SSv2
    python finetune.py --eval --resume runs/finetune/pretrained/best.pt --val k400_val.csv     # the test only

The classifier is the pre-trained encoder over ALL tokens (no masking) with the fixed sinusoid table, mean
pooling, LayerNorm and a linear head (classifier.py). Training: random resized crop, RandAugment and random
erasing per clip, mixup / cutmix and label smoothing per batch (augment.py), AdamW with layer-wise lr decay and
drop-path, soft-target cross-entropy (`train_step`). Each epoch reports single-view validation top-1 (best.pt
keeps the best); the end reports the multi-view test: K clips x crops per video, softmax averaged.
Features, linear probes and one-video predictions: python -m tools.features / tools.probe / tools.predict.
"""

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

from adamae import AdaMAEConfig
from augment import mix_batch
from classifier import VideoClassifier, evaluate, left_out_text, load_encoder, topk_accuracy, views_dataset
from data import VideoDataset
from demo.synthetic import labelled_demo
from engine import FRACTION, NON_NEGATIVE, POSITIVE_INT, PROBABILITY, TRAINING_TYPES, Epochs, RunLock, TrainLog, \
    amp_setup, apply_recipe, checked, clip_gradients, find_resume, finish, get_lr, load_checkpoint_file, make_loader, \
    make_parser, no_weight_decay, one_of, resume_text, set_lr, setup_distributed, sync_gradients
from weights.convert import read_classifier, read_pretrained, require_kind
from weights.resize import at_clip_size


# ----------------------------------------------------------------------------- recipes
@dataclass(frozen=True)
class Recipe:
    """Everything a fine-tuning recipe decides; docs/recipe.md has the table (a test keeps them equal)."""
    pretrained: str        # the pre-training checkpoint to start from ('' = none given)
    compare: bool          # also train from scratch and print both
    batch_size: int        # clips per process per micro-step
    epochs: int
    warmup_epochs: int
    base_lr: float         # lr = base_lr * effective batch / 256
    min_lr: float
    weight_decay: float
    layer_decay: float
    drop_path: float
    sampling: str          # dense (frames at a fixed stride) | segment (one frame per segment)
    stride: int
    num_frames: int | None  # frames per clip; None = the checkpoint's
    img_size: int | None    # crop side in pixels; None = the checkpoint's
    num_workers: int       # DataLoader processes per process
    flip: bool
    min_scale: float       # random resized crop: smallest share of the frame's area
    rand_aug: str          # RandAugment spec; '' = off
    reprob: float          # random erasing probability
    mixup: float
    cutmix: float
    smoothing: float
    test_clips: int
    test_crops: int


PAPER = Recipe(pretrained="", compare=False, batch_size=8, epochs=100, warmup_epochs=5, base_lr=1e-3, min_lr=1e-6,
               weight_decay=0.05, layer_decay=0.75, drop_path=0.1, sampling="dense", stride=4, num_frames=None,
               img_size=None, num_workers=2, flip=True,
               min_scale=0.08, rand_aug="rand-m7-n4-mstd0.5-inc1", reprob=0.25, mixup=0.8, cutmix=1.0,
               smoothing=0.1, test_clips=5, test_crops=3)
RECIPES = {
    # Sec. 4 "Fine-tuning setting" on Kinetics-400.
    "paper": PAPER,
    # The same on Something-Something v2: one frame per segment, no flip (labels such as "left to right").
    "ssv2": Recipe(**{**vars(PAPER), "epochs": 50, "base_lr": 5e-4, "sampling": "segment", "flip": False,
                      "test_clips": 2}),
    # The CPU demo: the pre-training demo's checkpoint, then from scratch, on 280 labelled videos, in 4-frame
    # 32-pixel clips with light augmentation (docs/recipe.md says why each value differs from the paper's).
    "demo": Recipe(**{**vars(PAPER), "pretrained": "runs/pretrain/checkpoint.pt", "compare": True, "epochs": 30,
                      "warmup_epochs": 2, "base_lr": 0.03, "stride": 16, "num_frames": 4, "img_size": 32,
                      "flip": False, "min_scale": 0.5, "rand_aug": "", "reprob": 0.0, "mixup": 0.0, "cutmix": 0.0,
                      "test_clips": 2, "test_crops": 1}),
}

# ----------------------------------------------------------------------------- options
# name: (default, help); None for the recipe's values. argparse is generated from this table.
OPTIONS = {
    # data
    "data": (None, "training list file ('path label' per line) or a folder per class; none: the demo's labelled set"),
    "val": (None, "validation list or folder: per-epoch top-1 and the final multi-view test"),
    "num_classes": (None, "default: the largest label + 1"),
    "sampling": (None, "dense (Kinetics: frames at a fixed stride) | segment (SSv2: one frame per segment)"),
    "stride": (None, "temporal stride of dense sampling"),
    "flip": (None, "random horizontal flip"),
    "min_scale": (None, "random resized crop: smallest share of the frame's area"),
    "rand_aug": (None, "RandAugment, one draw per clip for all its frames (m: magnitude of 10, n: ops, mstd: "
                       "magnitude noise, inc1: ops that grow with m); '' = off"),
    "reprob": (None, "random erasing: probability of one box, the same on every frame, of N(0, 1) noise; 0 = off"),
    "test_clips": (None, "final test: temporal clips per video, spread evenly"),
    "test_crops": (None, "final test: spatial crops per clip along the long side"),
    "num_workers": (None, "DataLoader processes per GPU"),
    # model
    "pretrained": (None, "pre-training checkpoint: pretrain.py's, the authors' AdaMAE file, VideoMAE's, or a Hugging "
                         "Face VideoMAE folder (weights/huggingface.py); its config (inferred for the authors' and "
                         "VideoMAE's files, config.json for a folder) fixes the architecture, its encoder the init"),
    "scratch": (False, "random init: the architecture of --pretrained when given, else --preset"),
    "compare": (None, "after fine-tuning --pretrained, train the same model from scratch and print both"),
    "preset": ("tiny", "AdaMAEConfig preset for --scratch without --pretrained"),
    "num_frames": (None, "frames per clip; None: the checkpoint's. Another length fine-tunes or evaluates the "
                         "same weights (the encoder's sinusoid table follows the token grid)"),
    "img_size": (None, "crop side in pixels; None: the checkpoint's; another size works as --num_frames does"),
    "drop_path": (None, "stochastic depth, rising linearly to this rate over the blocks"),
    # optimisation
    "batch_size": (None, "clips per process per micro-step"),
    "accum_steps": (1, "micro-steps per optimizer step (gradient accumulation)"),
    "epochs": (None, "training epochs"),
    "warmup_epochs": (None, "linear warmup, then cosine to min_lr"),
    "base_lr": (None, "lr = base_lr * effective_batch / 256"),
    "min_lr": (None, "final lr, scaled like the lr"),
    "weight_decay": (None, "AdamW weight decay (none on biases and norms)"),
    "layer_decay": (None, "lr of layer l is scaled by layer_decay^(top - l); patch embedding = 0, head = top"),
    "clip_grad": (None, "max gradient norm; default: no clipping"),
    "mixup": (None, "mixup alpha; 0 = off"),
    "cutmix": (None, "cutmix alpha (boxes over H and W, the same on every frame); 0 = off"),
    "smoothing": (None, "label smoothing"),
    # system
    "dtype": (None, "bf16 | fp16 | fp32; default: bf16 on CUDA when supported, else fp32"),
    "compile": (False, "torch.compile the model"),
    "seed": (0, "random seed (each rank and epoch derives its own)"),
    "out_dir": ("runs/finetune", "runs go to out_dir/pretrained and out_dir/scratch (checkpoint.pt, best.pt, "
                                 "log.jsonl); the demo's videos to out_dir/synthetic"),
    "resume": (None, "checkpoint to resume from; default: the run's checkpoint.pt when it exists"),
    "eval": (False, "no training: the multi-view test on --val of --resume FILE (finetune.py's best.pt or "
                    "checkpoint.pt, an authors'/VideoMAE fine-tuned classifier, or a Hugging Face "
                    "VideoMAEForVideoClassification folder)"),
    "log_every": (20, "optimizer steps between log lines"),
    "save_every": (1, "epochs between checkpoints"),
    "max_steps": (None, "stop training after this many optimizer steps (smoke tests)"),
}
SHARE = checked(float, lambda v: 0 < v <= 1, "a number in (0, 1]")
TYPES = {**TRAINING_TYPES, "val": str, "num_classes": POSITIVE_INT, "sampling": one_of("dense", "segment"),
         "flip": bool, "min_scale": SHARE, "rand_aug": str, "reprob": PROBABILITY, "test_clips": POSITIVE_INT,
         "test_crops": POSITIVE_INT, "pretrained": str, "compare": bool, "drop_path": FRACTION, "layer_decay": SHARE,
         "mixup": NON_NEGATIVE, "cutmix": NON_NEGATIVE, "smoothing": FRACTION, "num_frames": POSITIVE_INT,
         "img_size": POSITIVE_INT}
PRETRAIN_HINT = "run `python pretrain.py` first (it writes runs/pretrain/checkpoint.pt) or pass --pretrained PATH"


def get_args(argv=None):
    """(args, the recipe line a run prints first). --eval and --scratch train one model: no comparison."""
    args = make_parser(__doc__, OPTIONS, TYPES, RECIPES).parse_args(argv)
    line = apply_recipe(args, RECIPES, args.data or args.val)
    args.pretrained = args.pretrained or None
    args.compare = args.compare and not (args.scratch or args.eval)
    return args, line


# ----------------------------------------------------------------------------- optimisation

def layer_id(name, num_blocks):
    """Depth of a parameter for layer-wise lr decay: patch embedding 0, block i -> i + 1, fc_norm/head top."""
    if name.startswith("tokenizer."):
        return 0
    if name.startswith("encoder.blocks."):
        return int(name.split(".")[2]) + 1
    if name.startswith(("fc_norm.", "head.")):
        return num_blocks + 1
    raise ValueError(f"layer_id: no layer for parameter {name!r}")


def param_groups(model, weight_decay, layer_decay):
    """One AdamW group per (layer, decayed or not); each group's lr_scale = layer_decay^(top - layer)."""
    top = len(model.encoder.blocks) + 1
    groups = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        layer, decay = layer_id(name, top - 1), not no_weight_decay(name, param)
        group = groups.setdefault((layer, decay), {"params": [], "weight_decay": weight_decay if decay else 0.0,
                                                   "lr_scale": layer_decay ** (top - layer)})
        group["params"].append(param)
    return [groups[key] for key in sorted(groups)]


def make_optimizer(model, lr, weight_decay, layer_decay):
    return torch.optim.AdamW(param_groups(model, weight_decay, layer_decay), lr=lr, betas=(0.9, 0.999), fused=True)


# ----------------------------------------------------------------------------- the step

def soft_cross_entropy(logits, soft_target):
    """Cross-entropy against soft targets (mixup / cutmix / smoothing), in float32 even under autocast."""
    return torch.sum(-soft_target * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()


def train_step(model, micro_batches, optimizer, scaler, autocast, clip_grad=None):
    """One optimizer step over `micro_batches` [(video, soft target)] (gradient accumulation); the mean loss."""
    losses = []
    for i, (video, soft_target) in enumerate(micro_batches):
        with sync_gradients(model, now=i == len(micro_batches) - 1):  # DDP all-reduces on the last only
            with autocast:
                loss = soft_cross_entropy(model(video), soft_target)
            scaler.scale(loss / len(micro_batches)).backward()
        losses.append(loss.detach())
    clip_gradients(model, optimizer, scaler, clip_grad)
    scaler.step(optimizer)  # skipped by the GradScaler when fp16 gradients overflowed
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return torch.stack(losses).mean()


# ----------------------------------------------------------------------------- one run

def make_datasets(args, cfg):
    """(train, val single view, test multi-view) datasets and the number of classes (--num_classes, else the
    largest label + 1)."""
    common = dict(num_frames=cfg.num_frames, stride=args.stride, img_size=cfg.img_size, sampling=args.sampling)
    train = VideoDataset(args.data, train=True, flip=args.flip, scale=(args.min_scale, 1.0), rand_aug=args.rand_aug,
                         reprob=args.reprob, **common)
    val = VideoDataset(args.val, train=False, **common)
    test = views_dataset(args.val, cfg, args.stride, args.sampling, args.test_clips, args.test_crops)
    return train, val, test, check_labels(train.samples + val.samples, args.num_classes, f"{args.data} / {args.val}")


def check_labels(samples, num_classes, source):
    """The number of classes (given, else the largest label + 1), after checking every label fits it."""
    labels = [label for _, label in samples]
    if min(labels) < 0:
        raise ValueError(f"{source}: fine-tuning needs labels (a 'path label' list or a folder per class)")
    num_classes = num_classes or max(labels) + 1
    if max(labels) >= num_classes:
        raise ValueError(f"{source}: label {max(labels)} does not fit the {num_classes} classes")
    return num_classes


def test_only(args, rank, world, device):
    """--eval: the multi-view test on --val of the classifier --resume names (finetune.py's best.pt or
    checkpoint.pt, or an authors'/VideoMAE fine-tuned classifier); no training."""
    if args.resume is None:
        raise ValueError("--eval needs --resume FILE: the classifier to test (e.g. runs/finetune/pretrained/best.pt)")
    cfg, state, num_classes = read_classifier(args.resume)
    cfg = at_clip_size(cfg, args.num_frames, args.img_size)
    model = VideoClassifier(cfg, num_classes).to(device)
    model.load_state_dict(state)
    test_set = views_dataset(args.val, cfg, args.stride, args.sampling, args.test_clips, args.test_crops)
    check_labels(test_set.samples, num_classes, args.val)
    if rank == 0:
        print(f"[eval] {args.resume}: {num_classes} classes, {cfg.num_tokens} tokens {cfg.grid}; {len(test_set)} "
              f"videos of {args.val}")
    log = TrainLog(eval_dir(args), 0, 0, args.log_every, rank == 0, show_bar=False)
    return final_test(args, model, test_set, device, amp_setup(args.dtype, device)[0], rank, world, log, 0, None,
                      num_classes)


def eval_dir(args):
    """Where --eval logs: its own folder, so that a test can run while training writes out_dir."""
    return Path(args.out_dir) / "eval"


def finetune(args, rank, world, device):
    """One run (from --pretrained, or from scratch) in out_dir/pretrained or out_dir/scratch.
    Returns the final multi-view test {"top1": ..., "topk": ..., "k": ...} on every rank."""
    is_main = rank == 0
    run_dir = Path(args.out_dir) / ("scratch" if args.scratch else "pretrained")
    ckpt_path = run_dir / "checkpoint.pt"
    resume = find_resume(args.resume, ckpt_path)
    cfg, start = starting_point(args, resume)
    cfg = at_clip_size(cfg, args.num_frames, args.img_size)

    torch.manual_seed(args.seed + rank)
    train_set, val_set, test_set, num_classes = make_datasets(args, cfg)
    model = VideoClassifier(cfg, num_classes, args.drop_path).to(device)  # the module whose state is saved
    autocast, scaler = amp_setup(args.dtype, device)
    sampler, loader, steps_per_epoch = make_loader(args.data, train_set, args.batch_size, args.accum_steps, rank,
                                                   world, args.seed, args.num_workers, device)
    total_steps, warmup_steps = args.epochs * steps_per_epoch, args.warmup_epochs * steps_per_epoch
    effective_batch = args.batch_size * args.accum_steps * world
    lr, min_lr = args.base_lr * effective_batch / 256, args.min_lr * effective_batch / 256
    optimizer = make_optimizer(model, lr, args.weight_decay, args.layer_decay)
    step, start_epoch, best = load_start(start, model, optimizer, scaler, args, is_main)  # best: val top-1 so far
    compiled = torch.compile(model) if args.compile else model
    ddp_model = DDP(compiled) if world > 1 else compiled
    if is_main:
        print_setup(args, run_dir.name, model, optimizer, train_set, val_set, world, device, steps_per_epoch,
                    effective_batch, lr, min_lr)
        if resume:
            print(f"[{run_dir.name}] {resume_text(resume, step, start_epoch, start[1].get('args', {}), args)}")

    log = TrainLog(run_dir, total_steps, step, args.log_every, is_main, resume=resume)
    epochs = Epochs(loader, sampler, steps_per_epoch, args.accum_steps, args.seed, rank, args.max_steps)
    finite = torch.ones((), dtype=torch.bool, device=device)  # checked on every rank at log steps and epoch ends
    for epoch in range(start_epoch, args.epochs):
        for batches in epochs.epoch(epoch, step):
            micro = [mix_batch(video.to(device, non_blocking=True), label.to(device, non_blocking=True),
                               num_classes, args.mixup, args.cutmix, args.smoothing) for video, label, _ in batches]
            set_lr(optimizer, get_lr(step, total_steps, warmup_steps, lr, min_lr))
            loss = train_step(ddp_model, micro, optimizer, scaler, autocast, args.clip_grad)
            finite &= torch.isfinite(loss)
            step += 1
            log.step(step, epoch, {"loss": loss}, finite, effective_batch, optimizer.param_groups[-1]["lr"])
        if not epochs.complete:
            break  # --max_steps ended the run inside this epoch: its partial progress is not checkpointed
        skipped = log.end_of_epoch(epoch, step, finite, model, optimizer, epochs)
        top1 = validation(log, epoch, step, evaluate(model, val_set, device, autocast, args.batch_size,
                                                     args.num_workers, rank, world), skipped)
        improved, best = best is None or top1 > best, top1 if best is None else max(best, top1)
        for path, due in ((run_dir / "best.pt", improved),
                          (ckpt_path, (epoch + 1) % args.save_every == 0 or epoch + 1 == args.epochs)):
            if due:  # the best val top-1 rides along, so a resumed run keeps best.pt's bar
                log.save(path, model, optimizer, scaler, step, epoch, cfg, args, best_val_top1=best)
    log.bar.close()
    return final_test(args, model, test_set, device, autocast, rank, world, log, step, best, num_classes)


def starting_point(args, resume):
    """(config, (kind, state)): where the run's weights come from. The checkpoint being resumed; else a
    pre-training file (its encoder); else --scratch with the preset."""
    if resume:
        ckpt = require_kind(resume, load_checkpoint_file(resume), ("finetune.py",), "finetune.py --resume")
        return AdaMAEConfig.from_dict(ckpt["config"], resume), ("resume", ckpt)
    if args.pretrained is not None:
        cfg, state = read_pretrained(args.pretrained)
        return cfg, (None if args.scratch else "pretrained", state)  # --scratch: its architecture only
    if args.scratch:
        return AdaMAEConfig.preset(args.preset), (None, None)
    raise ValueError("give --pretrained CHECKPOINT (from pretrain.py) or --scratch")


def load_start(start, model, optimizer, scaler, args, is_main):
    """Put the starting weights (and, resuming, the optimizer and scaler) in place; (step, epoch, best)."""
    kind, state = start
    if kind == "resume":
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        return state["step"], state["epoch"] + 1, state["best_val_top1"]
    if kind == "pretrained":
        loaded, missing, dropped = load_encoder(model, state)
        if is_main:
            parts = sorted({k.rsplit(".", 1)[0] if k.startswith("encoder.") else k.split(".")[0] for k in dropped})
            print(f"loaded {len(loaded)} tensors (tokenizer, {model.cfg.encoder_depth} encoder blocks) from "
                  f"{args.pretrained}; dropped (pre-training only): {', '.join(parts)}; "
                  f"missing (new, random init): {', '.join(missing)}")
    return 0, 0, None


def print_setup(args, name, model, optimizer, train_set, val_set, world, device, steps_per_epoch, effective_batch,
                lr, min_lr):
    """The derived sizes a run depends on: data and augmentation, batch and lr, tokens, parameters."""
    cfg = model.cfg
    scales = sorted({round(g["lr_scale"], 4) for g in optimizer.param_groups})
    print(f"[{name}] {len(train_set)} train / {len(val_set)} val videos, {model.head.out_features} classes; "
          f"{world} process(es) on {device}; {steps_per_epoch} steps/epoch; crop scale [{args.min_scale}, 1], "
          f"flip {args.flip}, RandAugment {args.rand_aug or 'off'}, erasing {args.reprob}, mixup {args.mixup}, "
          f"cutmix {args.cutmix}, smoothing {args.smoothing}")
    print(f"[{name}] effective batch {args.batch_size} x {args.accum_steps} accum x {world} procs = "
          f"{effective_batch}; lr = {args.base_lr:g} x {effective_batch}/256 = {lr:.3g} (min {min_lr:.3g}), "
          f"warmup {args.warmup_epochs} of {args.epochs} epochs; layer-decay scales {scales}")
    print(f"[{name}] {cfg.num_tokens} tokens {cfg.grid}, encoder {cfg.encoder_dim} x {cfg.encoder_depth}"
          f", {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters")


def validation(log, epoch, step, evaluation, skipped):
    """An epoch's single-view val top-1 (returned), printed and logged with the unreadable training videos
    (`skipped`: TrainLog.end_of_epoch's record)."""
    probs, labels, left_out = evaluation
    top1 = topk_accuracy(probs, labels, 1)
    log.print(f"[{log.out_dir.name}] epoch {epoch}: val top-1 {100 * top1:.1f}% (single view, {len(labels)} "
              f"videos{left_out_text(left_out)})")
    log.write({"epoch": epoch, "step": step, "val_top1": top1, **skipped, "val_left_out": len(left_out)})
    return top1


def final_test(args, model, test_set, device, autocast, rank, world, log, step, best, num_classes):
    """The multi-view test (K clips x crops per video, softmax averaged), logged and printed; the result."""
    test_batch = max(1, args.batch_size // (args.test_clips * args.test_crops))  # about batch_size clips a forward
    probs, labels, left_out = evaluate(model, test_set, device, autocast, test_batch, args.num_workers, rank, world)
    k = min(5, num_classes)
    result = {"top1": topk_accuracy(probs, labels, 1), "topk": topk_accuracy(probs, labels, k), "k": k,
              "best_val_top1": best, "videos": len(labels), "left_out": left_out,
              "minutes": (time.time() - log.t_start) / 60}
    views = f"{args.test_clips} clips x {args.test_crops} crops"
    log.write({"step": step, "test": views, **result})
    if rank == 0:
        best_text = "none" if best is None else f"{100 * best:.1f}%"
        topk = f", top-{k} {100 * result['topk']:.1f}%" if k < num_classes else ""  # top-all is always 100%
        print(f"[{log.out_dir.name}] multi-view test ({views}, {len(labels)} videos{left_out_text(left_out)}): "
              f"top-1 {100 * result['top1']:.1f}%{topk} (best single-view val top-1 {best_text}; "
              f"{result['minutes']:.1f} min)")
    return result


# ----------------------------------------------------------------------------- main

def main(argv=None):
    args, recipe_line = get_args(argv)
    if args.eval and args.val is None:
        raise ValueError("--eval needs --val LIST: the videos to test on")
    if args.pretrained is not None and not (args.eval or args.resume) and not Path(args.pretrained).exists():
        raise FileNotFoundError(f"{args.pretrained}: no pre-training checkpoint; {PRETRAIN_HINT}")  # before any work
    rank, world, device = setup_distributed()
    if rank == 0:
        print(recipe_line)
    lock = RunLock(eval_dir(args) if args.eval else args.out_dir, rank)  # one run per folder, before any write
    if args.eval:
        return finish({"eval": test_only(args, rank, world, device)}, world, lock)
    if args.data is None:  # the demo: a labelled generated set, label = direction of motion
        args.data, args.val = labelled_demo(args.out_dir, rank, world, given_val=args.val)
    if args.val is None:
        raise ValueError("--val LIST is needed with --data (validation and the multi-view test)")
    results = {} if args.scratch else {"pretrained": finetune(args, rank, world, device)}
    if args.scratch or args.compare:
        # an explicit --resume belongs to the run it names: the pre-trained one when comparing
        scratch = {**vars(args), "scratch": True, "resume": args.resume if args.scratch else None}
        results["scratch"] = finetune(argparse.Namespace(**scratch), rank, world, device)
    if rank == 0 and len(results) == 2:
        pre, scr = results["pretrained"], results["scratch"]
        print(f"multi-view top-1: pre-trained {100 * pre['top1']:.1f}% vs from scratch {100 * scr['top1']:.1f}% "
              f"({100 * (pre['top1'] - scr['top1']):+.1f} points)")
    return finish(results, world, lock)


if __name__ == "__main__":
    main()

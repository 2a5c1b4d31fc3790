"""Fine-tune a pre-trained AdaMAE encoder for action classification (paper Sec. 4, Tables 2-3; the authors' recipe).

    python finetune.py              # the demo: fine-tune runs/pretrain/checkpoint.pt and train from scratch, CPU
    python finetune.py --scratch    # the demo's from-scratch run only
    torchrun --nproc_per_node=8 finetune.py --data ssv2_train.csv --val ssv2_val.csv --sampling segment \\
        --base_lr 5e-4 --epochs 50 --test_clips 2 --pretrained runs/ssv2/checkpoint.pt      # the paper's SSv2 recipe
    python finetune.py --probe      # linear probe of runs/pretrain/checkpoint.pt vs random weights, few labels
    python finetune.py --features feats.npy --data videos/ --pretrained runs/pretrain/checkpoint.pt
    python finetune.py --predict clip.mp4 --resume runs/finetune/pretrained/best.pt --classes names.txt

The classifier is the pre-trained encoder over ALL tokens (no masking) with the fixed sinusoid table, mean
pooling, LayerNorm and a linear head. Training: random resized crop (scale [0.08, 1]), RandAugment and random
erasing as the authors' fine-tuning (augment.py), AdamW with layer-wise lr decay, drop-path, mixup/cutmix and
label smoothing (soft-target cross-entropy). Each epoch reports single-view validation top-1 (best.pt keeps
the best); the end reports the multi-view test: K clips x 3 crops per video, softmax averaged.
The encoder modes (--probe, --features, --predict) train no encoder: they read it from a checkpoint.
"""

import argparse
import math
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from adamae import AdaMAEConfig
from classifier import VideoClassifier, encode_views, evaluate, labelled_subset, left_out_text, load_encoder, \
    mean_and_error, probe, topk_accuracy
from weights.convert import load_checkpoint_file, read_classifier, read_pretrained
from weights.resize import at_clip_size
from data import VideoDataset, load_samples, video_length
from engine import all_reduce, amp_setup, append_jsonl, check_finite, epoch_micro_batches, find_resume, get_lr, \
    make_loader, make_parser, no_weight_decay, save_checkpoint, set_lr, setup_distributed, train_step
from demo.synthetic import make_synthetic

# ----------------------------------------------------------------------------- defaults
# name: (default, help). argparse is generated from this table; `python finetune.py --help` prints it.
DEFAULTS = {
    # data
    "data": (None, "training list file ('path label' per line) or a folder per class; none = the synthetic demo"),
    "val": (None, "validation list or folder: per-epoch top-1 and the final multi-view test"),
    "num_classes": (None, "default: the largest label + 1"),
    "sampling": ("dense", "dense (Kinetics: frames at a fixed stride) | segment (SSv2: one frame per segment)"),
    "stride": (4, "temporal stride of dense sampling"),
    "flip": (None, "random horizontal flip; default: on for dense sampling, off for segment sampling "
                   "(SSv2 labels such as 'left to right') and for the synthetic demo (labels are directions)"),
    "min_scale": (0.08, "random resized crop: smallest share of the frame's area (the authors' fine-tuning; "
                        "pre-training uses 0.5)"),
    "rand_aug": ("rand-m7-n4-mstd0.5-inc1", "RandAugment, one draw per clip for all its frames (m: magnitude of 10, "
                                            "n: ops, mstd: magnitude noise, inc1: ops that grow with m); '' = off"),
    "reprob": (0.25, "random erasing: probability of one box, the same on every frame, of N(0, 1) noise; 0 = off"),
    "test_clips": (5, "final test: temporal clips per video, spread evenly (K400: 5; SSv2: 2)"),
    "test_crops": (3, "final test: spatial crops per clip along the long side"),
    "num_workers": (2, "DataLoader processes per GPU"),
    # model
    "pretrained": (None, "pre-training checkpoint: pretrain.py's, the authors' AdaMAE file, VideoMAE's, or a Hugging "
                         "Face VideoMAE folder (weights/huggingface.py); its config (inferred for the authors' and "
                         "VideoMAE's files, config.json for a folder) fixes the architecture, its encoder the init"),
    "scratch": (False, "random init: the architecture of --pretrained when given, else --preset"),
    "compare": (False, "after fine-tuning --pretrained, train the same model from scratch and print both"),
    "preset": ("tiny", "AdaMAEConfig preset for --scratch without --pretrained"),
    "num_frames": (None, "frames per clip; default: the checkpoint's. Another length fine-tunes or evaluates the "
                         "same weights (the encoder's sinusoid table follows the token grid)"),
    "img_size": (None, "crop side in pixels; default: the checkpoint's; another size works as --num_frames does"),
    "drop_path": (0.1, "stochastic depth, rising linearly to this rate over the blocks"),
    # optimisation (README: The recipe, fine-tuning)
    "batch_size": (8, "videos per process per micro-step"),
    "accum_steps": (1, "micro-steps per optimizer step (gradient accumulation)"),
    "epochs": (100, "training epochs (K400: 100; SSv2: 50)"),
    "warmup_epochs": (5, "linear warmup, then cosine to min_lr"),
    "base_lr": (1e-3, "lr = base_lr * effective_batch / 256 (K400: 1e-3; SSv2: 5e-4)"),
    "min_lr": (1e-6, "final lr, scaled like the lr"),
    "weight_decay": (0.05, "AdamW weight decay (none on biases and norms)"),
    "layer_decay": (0.75, "lr of layer l is scaled by layer_decay^(top - l); patch embedding = 0, head = top"),
    "clip_grad": (None, "max gradient norm; default: no clipping"),
    "mixup": (0.8, "mixup alpha; 0 = off"),
    "cutmix": (1.0, "cutmix alpha (boxes over H and W, the same on every frame); 0 = off"),
    "smoothing": (0.1, "label smoothing"),
    # system
    "dtype": (None, "bf16 | fp16 | fp32; default: bf16 on CUDA when supported, else fp32"),
    "compile": (False, "torch.compile the model"),
    "seed": (0, "random seed (each rank and epoch derives its own)"),
    "out_dir": ("runs/finetune", "runs go to out_dir/pretrained and out_dir/scratch (checkpoint.pt, best.pt, "
                                 "log.jsonl); the demo's videos to out_dir/synthetic"),
    "resume": (None, "checkpoint to resume from; default: the run's checkpoint.pt when it exists"),
    "eval": (False, "no training: the multi-view test of --resume FILE (finetune.py's best.pt or checkpoint.pt, or "
                    "an authors'/VideoMAE fine-tuned classifier, or a Hugging Face "
                    "VideoMAEForVideoClassification folder)"),
    "log_every": (20, "optimizer steps between log lines"),
    "save_every": (1, "epochs between checkpoints"),
    "max_steps": (None, "stop training after this many optimizer steps (smoke tests)"),
    # using the encoder (no training of the encoder): the encoder of --resume (classifier), else of --pretrained,
    # or random weights with --scratch; views: test_clips x test_crops per video
    "probe": (False, "linear probe of the frozen encoder: fit on --data, multi-view test on --val; with --compare "
                     "also of random weights of the same architecture"),
    "probe_per_class": (None, "labelled training videos per class for the probe, drawn with the seed; default: all"),
    "probe_seeds": (1, "probe with seeds seed, seed + 1, ...: the labelled subset and the random weights"),
    "probe_wd": (1e-3, "L2 penalty of the probe's logistic regression (on standardised features)"),
    "probe_steps": (300, "L-BFGS iterations of the probe (full batch)"),
    "features": (None, "write features of --data (a list, a folder or one video) to this .npy: one row per video, "
                       "the mean over its views of the mean-pooled encoder output; the paths to the same name .txt"),
    "per_clip": (False, "--features: every view (clip x crop) of a video: (videos, views, dim) instead of the mean"),
    "predict": (None, "a video: print the top-5 classes of the --resume classifier (multi-view test) and stop"),
    "classes": (None, "--predict: class names, one per line (line i = class i)"),
}
TYPES = {"data": str, "val": str, "num_classes": int, "flip": bool, "pretrained": str, "clip_grad": float, "dtype": str,
         "resume": str, "max_steps": int, "probe_per_class": int, "features": str, "predict": str, "classes": str,
         "num_frames": int, "img_size": int}
# The embedded demo (no --data): each run about 2 minutes on 2 CPU cores (175 steps). The videos are square,
# so 3 crops along the long side would be 3 copies of one crop: 2 clips x 1 crop.
DEMO = dict(pretrained="runs/pretrain/checkpoint.pt", compare=True, flip=False, epochs=5, warmup_epochs=1,
            base_lr=0.03, num_workers=1, test_clips=2, test_crops=1, log_every=10)
# The payoff demo (`python finetune.py --probe`): see the README's "Use the encoder".
PROBE_DEMO = dict(probe_per_class=10, probe_seeds=3)
# Labelled videos of its own (another seed than pre-training's): 280 train / 120 val, for a steadier top-1.
SYNTHETIC = dict(num_videos=400, num_frames=64, size=96, seed=1, val_fraction=0.3)


def get_args(argv=None):
    parser = make_parser(__doc__, DEFAULTS, TYPES, DEMO)
    known = parser.parse_known_args(argv)[0]
    if known.data is None and known.predict is None:
        parser.set_defaults(**DEMO)  # the demo recipe, unless a value is given on the command line
        if known.probe:
            parser.set_defaults(**PROBE_DEMO)
    args = parser.parse_args(argv)
    if args.scratch or args.eval:
        args.compare = False  # --scratch alone is the from-scratch run only
    if args.flip is None:
        args.flip = args.sampling == "dense"
    return args


CLASSIFIER_HINT = "pass --resume PATH: best.pt or checkpoint.pt of a finetune.py run"
PRETRAIN_HINT = "run `python pretrain.py` first (it writes runs/pretrain/checkpoint.pt) or pass --pretrained PATH"


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


# ----------------------------------------------------------------------------- mixup, cutmix, label smoothing
# As timm's Mixup (mix_prob 1, switch_prob 0.5, batch mode: sample i pairs with sample B-1-i), but cutmix
# cuts H and W of the video (the reference cut T and H) with the same box on every frame.
# Randomness comes from torch's global RNG, which the training loop seeds per epoch.

def smooth_one_hot(target, num_classes, smoothing):
    """(B,) labels -> (B, C) soft targets: 1 - smoothing + smoothing/C on the label, smoothing/C elsewhere."""
    off = smoothing / num_classes
    return torch.full((len(target), num_classes), off, device=target.device).scatter_(
        1, target[:, None], 1.0 - smoothing + off)


def cutmix_box(h, w, lam, generator=None):
    """(top, bottom, left, right) of a box of about (1 - lam) of the h x w frame, its centre uniform,
    clipped at the border (timm's rand_bbox); the clipped area is what `mix_batch` counts."""
    cut = math.sqrt(1.0 - lam)
    ch, cw = int(h * cut), int(w * cut)
    cy, cx = (int(torch.randint(n, (), generator=generator)) for n in (h, w))
    top, bottom = max(cy - ch // 2, 0), min(cy + ch // 2, h)
    left, right = max(cx - cw // 2, 0), min(cx + cw // 2, w)
    return top, bottom, left, right


def mix_batch(video, target, num_classes, mixup=0.8, cutmix=1.0, smoothing=0.1):
    """(B, C, T, H, W) video and (B,) labels -> mixed video and (B, num_classes) soft targets.

    Mixup blends whole clips with weight lam ~ Beta(mixup, mixup); cutmix pastes a box of the partner
    clip, over H and W on every frame, with lam ~ Beta(cutmix, cutmix) corrected to 1 - pasted area.
    With both on, each batch uses one of them with probability 0.5."""
    soft = smooth_one_hot(target, num_classes, smoothing)
    if mixup <= 0 and cutmix <= 0:
        return video, soft
    use_cutmix = cutmix > 0 and (mixup <= 0 or bool(torch.rand(()) < 0.5))
    alpha = cutmix if use_cutmix else mixup
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    partner = video.flip(0)
    if use_cutmix:
        H, W = video.shape[-2:]
        top, bottom, left, right = cutmix_box(H, W, lam)
        video = video.clone()
        video[..., top:bottom, left:right] = partner[..., top:bottom, left:right]  # all channels and frames
        lam = 1.0 - (bottom - top) * (right - left) / (H * W)
    else:
        video = lam * video + (1.0 - lam) * partner
    return video, lam * soft + (1.0 - lam) * soft.flip(0)


def soft_cross_entropy(logits, soft_target):
    """Cross-entropy against soft targets, in float32 even under autocast."""
    return torch.sum(-soft_target * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()


def classification_loss(model, batch):
    """(soft-target cross-entropy, the same number to report) for engine.train_step."""
    video, soft_target = batch
    loss = soft_cross_entropy(model(video), soft_target)
    return loss, loss[None]


# ----------------------------------------------------------------------------- frozen encoder: features, probe, predict

def frozen_encoder(args, device):
    """(VideoClassifier in eval mode without gradients, where its weights come from) for --features and --probe:
    the encoder of a fine-tuned classifier (--resume), of a pre-training checkpoint (--pretrained), or random
    weights drawn with --seed (--scratch; the architecture of --pretrained if given, else --preset), the
    baseline that shows what pre-training added. Only the encoder is used: `VideoClassifier.features`."""
    if args.scratch:
        cfg = read_pretrained(args.pretrained)[0] if args.pretrained else AdaMAEConfig.preset(args.preset)
        torch.manual_seed(args.seed)
        model, source = VideoClassifier(cfg, 1), f"random weights (seed {args.seed})"
    elif args.resume:
        cfg, state, num_classes = read_classifier(args.resume)
        model, source = VideoClassifier(cfg, num_classes), f"the encoder of {args.resume}"
        model.load_state_dict(state)
    elif args.pretrained:
        cfg, state = read_pretrained(args.pretrained)
        model, source = VideoClassifier(cfg, 1), f"the encoder of {args.pretrained}"
        load_encoder(model, state)
    else:
        raise ValueError("which encoder? --pretrained (pre-training checkpoint), --resume (classifier) or --scratch")
    return model.to(device).eval().requires_grad_(False), source


def views_dataset(source, cfg, args):
    """Every video of `source` ([(path, label)], a list file or a folder) as its multi-view test views:
    test_clips x test_crops, clip-major."""
    return VideoDataset(source, num_frames=cfg.num_frames, stride=args.stride, img_size=cfg.img_size, train=False,
                        sampling=args.sampling, test_clips=args.test_clips, test_crops=args.test_crops)


def run_probes(args, rank, world, device):
    """--probe: linear probes of the frozen encoder on --data, tested on --val, one per seed (seed, seed + 1, ...,
    --probe_seeds of them; a seed draws the labelled subset and, for random weights, the init). With --compare
    the same for random weights of the same architecture: what pre-training adds. -> {arm: [result per seed]}."""
    train_samples, test_samples = load_samples(args.data), load_samples(args.val)
    train_labels = torch.tensor([label for _, label in train_samples])
    num_classes = args.num_classes or max(label for _, label in train_samples + test_samples) + 1
    if min(label for _, label in train_samples + test_samples) < 0:
        raise ValueError(f"{args.data} / {args.val}: a probe needs labels (a 'path label' list or a folder per class)")
    arms = {} if args.scratch else {"fine-tuned" if args.resume else "pretrained": args}
    if args.scratch or args.compare:
        arms["random init"] = argparse.Namespace(**{**vars(args), "scratch": True})
    autocast, batch = amp_setup(args.dtype, device)[0], max(1, args.batch_size // (args.test_clips * args.test_crops))
    results, cached = {arm: [] for arm in arms}, {}
    for seed in range(args.seed, args.seed + args.probe_seeds):
        chosen = labelled_subset(train_labels, args.probe_per_class, seed).tolist()
        for arm, arm_args in arms.items():
            t_start = time.time()
            if arm_args.scratch or arm not in cached:  # random weights: a new draw per seed; a checkpoint: once
                model, source = frozen_encoder(argparse.Namespace(**{**vars(arm_args), "seed": seed}), device)
                test = encode_views(model, views_dataset(test_samples, model.cfg, args), device, autocast, batch,
                                    args.num_workers, rank, world)
                cached[arm] = model, source, test
            model, source, test = cached[arm]
            train = encode_views(model, views_dataset([train_samples[i] for i in chosen], model.cfg, args), device,
                                 autocast, batch, args.num_workers, rank, world)
            result = probe(train, test, num_classes, args.probe_wd, args.probe_steps)
            results[arm].append({**result, "seed": seed, "seconds": time.time() - t_start})
            if rank == 0:
                r = results[arm][-1]
                topk = f", top-{r['k']} {100 * r['topk']:.1f}%" if r["k"] < num_classes else ""
                print(f"[probe {arm}, seed {seed}] {source}: {r['train_videos']} train / {r['test_videos']} test "
                      f"videos, {args.test_clips} clips x {args.test_crops} crops: top-1 {100 * r['top1']:.1f}%{topk}")
    if rank == 0:
        print_comparison(results, args)
    return results


def print_comparison(results, args):
    """Each arm's probe top-1 over the seeds, and the gap between the first two arms in standard errors."""
    labelled = "all" if args.probe_per_class is None else args.probe_per_class
    seeds = f"{args.seed}..{args.seed + args.probe_seeds - 1}"
    print(f"linear probe top-1 ({labelled} labelled videos per class; seeds {seeds}):")
    stats = {}
    for arm, runs in results.items():
        top1 = [100 * r["top1"] for r in runs]
        stats[arm] = mean_and_error(top1)
        print(f"  {arm:12s} {' / '.join(f'{v:.1f}' for v in top1)}%  mean {stats[arm][0]:.1f} "
              f"± {stats[arm][1]:.1f} (standard error); {sum(r['seconds'] for r in runs):.0f} s")
    if len(stats) == 2:
        (a, (mean_a, err_a)), (b, (mean_b, err_b)) = stats.items()
        error = math.hypot(err_a, err_b)
        sigmas = f" = {(mean_a - mean_b) / error:.1f} standard errors" if error > 0 else ""
        print(f"{a} - {b}: {mean_a - mean_b:+.1f} points{sigmas}")


def read_class_names(path, num_classes):
    """One class name per line, line i = class i; the count must match the classifier's."""
    names = Path(path).read_text().splitlines()
    if len(names) != num_classes:
        raise ValueError(f"{path}: {len(names)} class names for a classifier of {num_classes} classes "
                         f"(one name per line, line i = class i)")
    return names


def predict(args, device):
    """--predict VIDEO: the --resume classifier's top-5 classes with their probabilities, from the multi-view
    test (test_clips x test_crops views, softmax averaged: `evaluate`). Returns [(class, name, probability)]."""
    if args.resume is None:
        raise ValueError(f"--predict needs a classifier; {CLASSIFIER_HINT}")
    cfg, state, num_classes = read_classifier(args.resume)
    cfg = at_clip_size(cfg, args.num_frames, args.img_size)
    names = read_class_names(args.classes, num_classes) if args.classes else [str(c) for c in range(num_classes)]
    video_length(args.predict)  # an unreadable video stops here, named, instead of being swapped for another
    model = VideoClassifier(cfg, num_classes).to(device)
    model.load_state_dict(state)
    dataset = views_dataset([(args.predict, 0)], cfg, args)
    probs = evaluate(model, dataset, device, amp_setup(args.dtype, device)[0], batch_size=1)[0][0]
    top = probs.topk(min(5, num_classes))
    print(f"{args.predict}: {args.test_clips} clips x {args.test_crops} crops, softmax averaged")
    ranked = [(c, names[c], p) for p, c in zip(top.values.tolist(), top.indices.tolist())]
    for _, name, p in ranked:
        print(f"{100 * p:6.2f}%  {name}")
    return ranked


def write_features(args, rank, world, device):
    """--features OUT: one row per video of --data (a list, a folder or one video) to OUT (.npy), the mean of its
    views' mean-pooled features (N, D), or every view (N, V, D) with --per_clip; the video paths, one per line
    in the same order, to OUT with the suffix .txt. Rows of unreadable videos are NaN."""
    model, source = frozen_encoder(args, device)
    samples = load_samples(args.data)
    dataset = views_dataset(samples, model.cfg, args)
    autocast = amp_setup(args.dtype, device)[0]
    batch = max(1, args.batch_size // (args.test_clips * args.test_crops))  # about batch_size clips a forward
    feats = encode_views(model, dataset, device, autocast, batch, args.num_workers, rank, world, args.per_clip)[0]
    out = Path(args.features)
    out = out if out.suffix == ".npy" else out.with_name(out.name + ".npy")  # as np.save would name it
    if rank == 0:
        out.parent.mkdir(parents=True, exist_ok=True)
        np.save(out, feats.cpu().numpy())
        out.with_suffix(".txt").write_text("".join(f"{path}\n" for path, _ in samples))
        print(f"features of {len(samples)} videos from {source}: {out} {tuple(feats.shape)}, "
              f"paths {out.with_suffix('.txt')}")
    return feats


# ----------------------------------------------------------------------------- main

def make_datasets(args, cfg, saved_classes=None):
    """(train, val single view, test multi-view) datasets and the number of classes (--num_classes, else the
    classifier's being evaluated, else the largest label + 1)."""
    common = dict(num_frames=cfg.num_frames, stride=args.stride, img_size=cfg.img_size, sampling=args.sampling)
    train = VideoDataset(args.data, train=True, flip=args.flip, scale=(args.min_scale, 1.0), rand_aug=args.rand_aug,
                         reprob=args.reprob, **common)
    val = VideoDataset(args.val, train=False, **common)
    test = views_dataset(args.val, cfg, args)
    labels = [label for _, label in train.samples + val.samples]
    if min(labels) < 0:
        raise ValueError(f"{args.data} / {args.val}: fine-tuning needs labels (a 'path label' list or a folder "
                         f"per class)")
    num_classes = args.num_classes or saved_classes or max(labels) + 1
    if max(labels) >= num_classes:
        raise ValueError(f"label {max(labels)} does not fit --num_classes {num_classes}")
    return train, val, test, num_classes


def finetune(args, rank, world, device):
    """One run (from --pretrained, or from scratch) in out_dir/pretrained or out_dir/scratch.
    Returns the final multi-view test {"top1": ..., "topk": ..., "k": ...} on every rank."""
    is_main = rank == 0
    run_dir = Path(args.out_dir) / ("scratch" if args.scratch else "pretrained")
    ckpt_path = run_dir / "checkpoint.pt"
    resume = find_resume(args.resume, ckpt_path)
    cfg, start, saved_classes = starting_point(args, resume, ckpt_path)
    cfg = at_clip_size(cfg, args.num_frames, args.img_size)

    torch.manual_seed(args.seed + rank)
    train_set, val_set, test_set, num_classes = make_datasets(args, cfg, saved_classes)
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
        run_dir.mkdir(parents=True, exist_ok=True)
        print_setup(args, run_dir.name, model, optimizer, train_set, val_set, world, device, steps_per_epoch,
                    effective_batch, lr, min_lr)
        if resume:
            print(f"[{run_dir.name}] resumed from {resume} at step {step}, epoch {start_epoch}")

    report = StepLog(args, run_dir, total_steps, step, is_main)
    finite = torch.ones((), dtype=torch.bool, device=device)  # checked at log steps and before saving
    for epoch in range(start_epoch, 0 if args.eval else args.epochs):
        if args.max_steps is not None and step >= args.max_steps:
            break
        skipped = 0  # unreadable training videos replaced in this epoch, on this process
        for batches in epoch_micro_batches(loader, sampler, epoch, args.seed, rank, steps_per_epoch,
                                           args.accum_steps):
            if args.max_steps is not None and step >= args.max_steps:
                break  # inside an epoch: its partial progress is not checkpointed
            skipped += sum(int(bad.sum()) for _, _, bad in batches)
            micro = [mix_batch(video.to(device, non_blocking=True), label.to(device, non_blocking=True),
                               num_classes, args.mixup, args.cutmix, args.smoothing) for video, label, _ in batches]
            set_lr(optimizer, get_lr(step, total_steps, warmup_steps, lr, min_lr))
            loss = train_step(ddp_model, micro, optimizer, scaler, autocast, classification_loss, args.clip_grad)[0]
            finite &= torch.isfinite(loss)
            step += 1
            report(step, epoch, loss, finite, effective_batch, optimizer.param_groups[-1]["lr"])
        else:  # the epoch ran to its end: check on every rank, validate, then rank 0 saves
            check_finite(finite, f"in epoch {epoch}", ckpt_path)
            top1 = report.validation(epoch, step, evaluate(model, val_set, device, autocast, args.batch_size,
                                                           args.num_workers, rank, world), int(all_reduce(skipped)))
            improved, best = best is None or top1 > best, top1 if best is None else max(best, top1)
            for path, due in ((run_dir / "best.pt", improved),
                              (ckpt_path, (epoch + 1) % args.save_every == 0 or epoch + 1 == args.epochs)):
                if is_main and due:  # the best val top-1 rides along, so a resumed run keeps best.pt's bar
                    save_checkpoint(path, model, optimizer, scaler, step, epoch, cfg, args, best_val_top1=best)
    report.bar.close()
    return final_test(args, model, test_set, device, autocast, rank, world, report, step, best, num_classes)


def starting_point(args, resume, ckpt_path):
    """(config, (kind, state), saved number of classes or None): where the run's weights come from. The
    checkpoint being resumed, or (--eval) any fine-tuned classifier, ours or the authors'/VideoMAE's;
    else a pre-training file (its encoder); else --scratch with the preset."""
    if args.eval and not resume:
        raise FileNotFoundError(f"--eval: no checkpoint at {ckpt_path}; pass --resume PATH")
    if args.eval:
        cfg, state, num_classes = read_classifier(resume)
        return cfg, ("classifier", state), num_classes
    if resume:
        ckpt = load_checkpoint_file(resume)
        return AdaMAEConfig.from_dict(ckpt["config"]), ("resume", ckpt), None
    if args.pretrained is not None:
        cfg, state = read_pretrained(args.pretrained)
        return cfg, (None if args.scratch else "pretrained", state), None  # --scratch: its architecture only
    if args.scratch:
        return AdaMAEConfig.preset(args.preset), (None, None), None
    raise ValueError("give --pretrained CHECKPOINT (from pretrain.py) or --scratch")


def load_start(start, model, optimizer, scaler, args, is_main):
    """Put the starting weights (and, resuming, the optimizer and scaler) in place; (step, epoch, best)."""
    kind, state = start
    if kind == "resume":
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        return state["step"], state["epoch"] + 1, state["best_val_top1"]
    if kind == "classifier":
        model.load_state_dict(state)
    elif kind == "pretrained":
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


class StepLog:
    """Log lines of a fine-tuning run (progress bar and run_dir/log.jsonl, rank 0) and its results."""

    def __init__(self, args, run_dir, total_steps, step, is_main):
        self.args, self.run_dir, self.is_main = args, run_dir, is_main
        self.bar = tqdm(total=total_steps, initial=step, disable=not is_main or args.eval, dynamic_ncols=True)
        self.t_log, self.clips, self.t_start = time.time(), 0, time.time()

    def __call__(self, step, epoch, loss, finite, clips, lr):
        """After optimizer step `step` of `clips` clips; `loss` is a device tensor, read only at log steps."""
        self.bar.update()
        self.clips += clips
        if step % self.args.log_every == 0 or step == self.bar.total:
            check_finite(finite, f"by step {step}", self.run_dir / "checkpoint.pt")
            speed = self.clips / (time.time() - self.t_log)
            self.t_log, self.clips = time.time(), 0
            self.bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.2e}", clips_s=f"{speed:.1f}")
            self.write({"step": step, "epoch": epoch, "loss": loss.item(), "lr": lr, "clips_per_s": speed})

    def write(self, record):
        if self.is_main:
            append_jsonl(self.run_dir / "log.jsonl", record)

    def validation(self, epoch, step, evaluation, skipped):
        """An epoch's single-view val top-1 (returned), printed and logged with the unreadable videos."""
        probs, labels, left_out = evaluation
        top1 = topk_accuracy(probs, labels, 1)
        if self.is_main:
            if skipped:
                warnings.warn(f"epoch {epoch}: skipped {skipped} unreadable videos (named above)")
            self.bar.write(f"[{self.run_dir.name}] epoch {epoch}: val top-1 {100 * top1:.1f}% (single view, "
                           f"{len(labels)} videos{left_out_text(left_out)})")
        self.write({"epoch": epoch, "step": step, "val_top1": top1, "skipped_videos": skipped,
                    "val_left_out": len(left_out)})
        return top1


def final_test(args, model, test_set, device, autocast, rank, world, report, step, best, num_classes):
    """The multi-view test (K clips x crops per video, softmax averaged), logged and printed; the result."""
    test_batch = max(1, args.batch_size // (args.test_clips * args.test_crops))  # about batch_size clips a forward
    probs, labels, left_out = evaluate(model, test_set, device, autocast, test_batch, args.num_workers, rank, world)
    k = min(5, num_classes)
    result = {"top1": topk_accuracy(probs, labels, 1), "topk": topk_accuracy(probs, labels, k), "k": k,
              "best_val_top1": best, "videos": len(labels), "left_out": left_out,
              "minutes": (time.time() - report.t_start) / 60}
    views = f"{args.test_clips} clips x {args.test_crops} crops"
    report.write({"step": step, "test": views, **result})
    if rank == 0:
        best_text = "none" if best is None else f"{100 * best:.1f}%"
        topk = f", top-{k} {100 * result['topk']:.1f}%" if k < num_classes else ""  # top-all is always 100%
        print(f"[{report.run_dir.name}] multi-view test ({views}, {len(labels)} videos{left_out_text(left_out)}): "
              f"top-1 {100 * result['top1']:.1f}%{topk} (best single-view val top-1 {best_text}; "
              f"{result['minutes']:.1f} min)")
    return result


def main(argv=None):
    args = get_args(argv)
    if args.predict is not None:  # one video in one process: nothing to set up
        return predict(args, torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    if args.features is not None and args.data is None:
        raise ValueError("--features OUT needs --data: a list file, a folder or one video")
    if args.pretrained is not None and not args.eval and not Path(args.pretrained).exists():  # a file or an HF folder
        raise FileNotFoundError(f"{args.pretrained}: no pre-training checkpoint; {PRETRAIN_HINT}")  # before any work
    rank, world, device = setup_distributed()
    if args.data is None:  # the demo: a labelled synthetic set, label = direction of motion
        root = Path(args.out_dir) / "synthetic"
        if rank == 0:
            make_synthetic(root, **SYNTHETIC)
        if world > 1:
            dist.barrier()  # the other ranks wait for the set to exist
        args.data, args.val = str(root / "train.csv"), str(root / "val.csv")
    if args.features is not None:
        return finish(write_features(args, rank, world, device), world)
    if args.val is None:
        raise ValueError("--val LIST is needed with --data (validation and the multi-view test)")
    if args.probe:
        return finish(run_probes(args, rank, world, device), world)
    results = {"pretrained": finetune(args, rank, world, device)} if not args.scratch else {}
    if args.scratch or args.compare:
        # an explicit --resume belongs to the run it names: the pre-trained one when comparing
        scratch = {**vars(args), "scratch": True, "resume": args.resume if args.scratch else None}
        results["scratch"] = finetune(argparse.Namespace(**scratch), rank, world, device)
    if rank == 0 and len(results) == 2:
        pre, scr = results["pretrained"], results["scratch"]
        print(f"multi-view top-1: pre-trained {100 * pre['top1']:.1f}% vs from scratch {100 * scr['top1']:.1f}% "
              f"({100 * (pre['top1'] - scr['top1']):+.1f} points)")
    return finish(results, world)


def finish(results, world):
    """Leave the process group together and return the results."""
    if world > 1:
        dist.barrier()  # a rank tearing gloo down while another still finishes a collective can abort
        dist.destroy_process_group()
    return results


if __name__ == "__main__":
    main()

"""Linear probe of a frozen encoder: how much of the labels its features already hold (MAE's linear probe).

    python -m tools.probe --data train.csv --val val.csv --pretrained runs/pretrain/checkpoint.pt --compare
    python -m tools.probe --pretrained runs/pretrain/checkpoint.pt --compare --probe_per_class 10 \\
        --probe_seeds 3 --test_clips 2 --test_crops 1      # the demo: without --data, the demo's labelled set

A logistic regression on the mean-pooled features of every training view (classifier.fit_probe), tested like
fine-tuning: softmax averaged over each --val video's views. One probe per seed (seed, seed + 1, ...): a seed
draws the labelled subset and, for random weights, the init. --compare adds random weights of the same
architecture: what pre-training adds.
"""

import argparse
import math
import time

import torch

from classifier import encode_views, labelled_subset, mean_and_error, probe
from data import load_samples
from demo.synthetic import labelled_demo
from engine import finish, make_parser, setup_distributed
from tools.encoder import ENCODER_OPTIONS, ENCODER_TYPES, autocast_and_batch, load_encoder_for, views_of

OPTIONS = {
    "data": (None, "training list or folder per class; none: the demo's labelled set in out_dir/synthetic"),
    "val": (None, "test list or folder per class"),
    "num_classes": (None, "default: the largest label + 1"),
    "compare": (False, "also probe random weights of the same architecture"),
    "probe_per_class": (None, "labelled training videos per class, drawn with the seed; default: all"),
    "probe_seeds": (1, "probe with seeds seed, seed + 1, ...: the labelled subset and the random weights"),
    "probe_wd": (1e-3, "L2 penalty of the logistic regression (on standardised features)"),
    "probe_steps": (300, "L-BFGS iterations (full batch)"),
    "out_dir": ("runs/probe", "the demo's videos go to out_dir/synthetic"),
    **ENCODER_OPTIONS,
}
TYPES = {"data": str, "val": str, "num_classes": int, "probe_per_class": int, **ENCODER_TYPES}


def get_args(argv=None):
    return make_parser(__doc__, OPTIONS, TYPES).parse_args(argv)


def probe_arms(args):
    """{arm name: the options naming its encoder}: the checkpoint's encoder and/or random weights."""
    arms = {} if args.scratch else {"fine-tuned" if args.resume else "pretrained": args}
    if args.scratch or args.compare:
        arms["random init"] = argparse.Namespace(**{**vars(args), "scratch": True})
    return arms


def run_probes(args, rank, world, device):
    """One probe per seed and arm -> {arm: [result per seed]}; each result printed as it comes."""
    train_samples, test_samples = load_samples(args.data), load_samples(args.val)
    train_labels = torch.tensor([label for _, label in train_samples])
    labels = [label for _, label in train_samples + test_samples]
    if min(labels) < 0:
        raise ValueError(f"{args.data} / {args.val}: a probe needs labels (a 'path label' list or a folder per class)")
    num_classes = args.num_classes or max(labels) + 1
    arms, (autocast, batch) = probe_arms(args), autocast_and_batch(args, device)
    results, cached = {arm: [] for arm in arms}, {}
    for seed in range(args.seed, args.seed + args.probe_seeds):
        chosen = labelled_subset(train_labels, args.probe_per_class, seed).tolist()
        for arm, arm_args in arms.items():
            t_start = time.time()
            if arm_args.scratch or arm not in cached:  # random weights: a new draw per seed; a checkpoint: once
                model, source = load_encoder_for(arm_args, device, seed)
                test = encode_views(model, views_of(test_samples, model.cfg, args), device, autocast, batch,
                                    args.num_workers, rank, world)
                cached[arm] = model, source, test
            model, source, test = cached[arm]
            train = encode_views(model, views_of([train_samples[i] for i in chosen], model.cfg, args), device,
                                 autocast, batch, args.num_workers, rank, world)
            r = {**probe(train, test, num_classes, args.probe_wd, args.probe_steps), "seed": seed,
                 "seconds": time.time() - t_start}
            results[arm].append(r)
            if rank == 0:
                topk = f", top-{r['k']} {100 * r['topk']:.1f}%" if r["k"] < num_classes else ""
                print(f"[probe {arm}, seed {seed}] {source}: {r['train_videos']} train / {r['test_videos']} test "
                      f"videos, {args.test_clips} clips x {args.test_crops} crops: top-1 {100 * r['top1']:.1f}%{topk}")
    return results


def print_comparison(results, args):
    """Each arm's probe top-1 over the seeds, and the gap between the first two arms in standard errors."""
    labelled = "all" if args.probe_per_class is None else args.probe_per_class
    print(f"linear probe top-1 ({labelled} labelled videos per class; seeds {args.seed}.."
          f"{args.seed + args.probe_seeds - 1}):")
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


def main(argv=None):
    args = get_args(argv)
    rank, world, device = setup_distributed()
    if args.data is None:
        if rank == 0:
            print(f"no --data: the demo's labelled set in {args.out_dir}/synthetic")
        args.data, args.val = labelled_demo(args.out_dir, rank, world, given_val=args.val)
    if args.val is None:
        raise ValueError("--val LIST is needed with --data: the probe's test videos")
    results = run_probes(args, rank, world, device)
    if rank == 0:
        print_comparison(results, args)
    return finish(results, world)


if __name__ == "__main__":
    main()

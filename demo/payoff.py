"""What pre-training buys, measured as MAE papers show it: top-1 against the number of labelled videos per class
and against fine-tuning steps, pre-trained vs from scratch (docs/results.md, "What pre-training buys").

    python -m demo.payoff                                  # after python pretrain.py: 5/10/25/all x seeds 0,1,2
    python -m demo.payoff --per_class 5,all --seeds 0      # a piece; finished points are not run again

Each point is one `python finetune.py --recipe demo` (both arms: the --pretrained checkpoint's encoder, then the
same ViT from scratch) on K labelled videos of each class of the demo's labelled set, chosen by the seed, and
tested on the whole validation set; K = all is the demo itself, `python finetune.py --seed SEED`. A subset is
listed over and over up to the full set's length, so every point trains the same number of steps with the same
schedule and only the number of distinct videos changes; the seed also sets the initialisation and the order
of the batches. Writes out_dir/K/SEED/ (the run and its run.json
record) and into --docs: payoff.json (the summary and every run), payoff.csv (one row per K: each arm's mean and
standard error of the multi-view top-1 over the seeds, and the paired gap), payoff.png (top-1 against K) and
payoff_steps.png (single-view validation top-1 after each epoch against steps, the mean over seeds).
"""

import json
from pathlib import Path

import numpy as np

from data import read_list
from demo.runs import (finetune_numbers, labelled_lists, mean_curve, mean_se, read_log, run_recorded,
                       write_summary)
from engine import POSITIVE_INT, make_parser
from pictures import plot

ARMS = ("pretrained", "scratch")
OPTIONS = {
    "per_class": ("5,10,25,all", "comma-separated labelled videos per class; all = every training video"),
    "seeds": ("0,1,2", "comma-separated seeds: the subset, the initialisation and the batches"),
    "pretrained": ("runs/pretrain/checkpoint.pt", "the pre-training checkpoint both arms' architecture comes from"),
    "data": (None, "training list; default: the fine-tuning demo's labelled set, generated in out_dir/synthetic"),
    "val": (None, "validation list (with --data)"),
    "epochs": (None, "fine-tuning epochs per run; default: the demo recipe's"),
    "out_dir": ("runs/payoff", "one folder per point: out_dir/K/SEED"),
    "docs": ("docs/results", "where payoff.json, payoff.csv and the plots go"),
}


def subset_list(samples, per_class, seed, path):
    """Write a list of `per_class` videos of each class, drawn by `seed` (a smaller K's videos are among a
    larger K's at the same seed), interleaved by class and repeated up to len(samples) lines; its path."""
    by_class = {}
    for video, label in samples:
        by_class.setdefault(label, []).append(video)
    rng = np.random.default_rng(seed)
    chosen = {label: [videos[i] for i in rng.permutation(len(videos))][:per_class] for label, videos in
              sorted(by_class.items())}
    rounds = max(len(videos) for videos in chosen.values())
    # absolute paths: a list's relative paths resolve against its own folder, and this one is written elsewhere
    lines = [f"{Path(videos[i]).resolve()} {label}\n" for i in range(rounds) for label, videos in chosen.items()
             if i < len(videos)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(lines[i % len(lines)] for i in range(len(samples))))
    return path


def val_curves(run_dir):
    """Each arm's single-view validation top-1 after every epoch: {arm_val: [{step, val_top1}]}."""
    return {f"{arm}_val": [{"step": r["step"], "val_top1": r["val_top1"]}
                           for r in read_log(Path(run_dir) / arm / "log.jsonl") if "val_top1" in r] for arm in ARMS}


def run(per_class, seed, train, val, args):
    """One point (skipped when its run.json records the same command): its record."""
    run_dir = Path(args.out_dir) / str(per_class or "all") / str(seed)
    # all: the list itself, so that this point is `python finetune.py --seed SEED` on the demo's set
    subset = train if per_class is None else subset_list(read_list(train), per_class, seed, run_dir / "train.csv")
    argv = ["finetune.py", "--recipe", "demo", "--compare", "--data", str(subset), "--val", str(val),
            "--pretrained", args.pretrained, "--seed", str(seed), "--out_dir", str(run_dir),
            *(["--epochs", str(args.epochs)] if args.epochs else [])]
    listed = read_list(subset)
    head = {"per_class": per_class or "all", "videos": len(set(listed)), "classes": len({l for _, l in listed}),
            "seed": seed}
    return run_recorded(argv, run_dir / "run.json", head, lambda: {**finetune_numbers(run_dir), **val_curves(run_dir)})


def summary(records):
    """One row per K: videos, seeds, each arm's mean and standard error of the multi-view top-1, and the gap
    (pre-trained minus scratch, paired by seed) with its standard error."""
    groups = {}
    for r in records:
        groups.setdefault(r["per_class"], []).append(r)
    rows = []
    for per_class, runs in groups.items():
        row = {"per_class": per_class, "videos": runs[0]["videos"], "seeds": " ".join(str(r["seed"]) for r in runs)}
        for name, values in [*((arm, [r[f"{arm}_top1"] for r in runs]) for arm in ARMS),
                             ("gap", [r["pretrained_top1"] - r["scratch_top1"] for r in runs])]:
            mean, se = mean_se(values)
            row[f"{name}_mean"], row[f"{name}_se"] = round(mean, 4), None if se is None else round(se, 4)
        row["cpu_s_mean"] = round(float(np.mean([r["cpu_s"] for r in runs])), 1)
        rows.append(row)
    return rows


def write_results(records, docs):
    docs, rows = Path(docs), summary(records)
    write_summary(docs, "payoff", rows, records)
    classes = records[0]["classes"]
    points = {arm: sorted((row["videos"] / classes, row[f"{arm}_mean"]) for row in rows) for arm in ARMS}
    plot.save_line_plots(docs / "payoff.png", ["multi-view top-1"], [[(arm, points[arm]) for arm in ARMS]],
                         x_label="labelled videos per class")
    groups = {}
    for r in records:
        groups.setdefault(r["per_class"], []).append(r)
    plot.save_line_plots(docs / "payoff_steps.png", ["single-view val top-1"],
                         [[(f"{arm} K={k}", mean_curve(runs, f"{arm}_val", "val_top1")) for k, runs in groups.items()
                           for arm in ARMS]], x_label="step")
    for row in rows:
        print(json.dumps(row))


def main(argv=None):
    args = make_parser(__doc__, OPTIONS, {"data": str, "val": str, "epochs": POSITIVE_INT}).parse_args(argv)
    train, val = labelled_lists(args.pretrained, args.data, args.val, args.out_dir)
    per_class = [None if k.strip() == "all" else int(k) for k in args.per_class.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    records = [run(k, seed, train, val, args) for k in per_class for seed in seeds]
    write_results(records, args.docs)


if __name__ == "__main__":
    main()

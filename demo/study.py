"""When does the sampler learn where the motion is? The pre-training demo over backgrounds, targets and seeds.

docs/method.md, "What the sampler learns". Each run is one `python pretrain.py` of the demo recipe (the same
data set size and step budget for every run; only the named settings change) on one background of
demo/synthetic.py, with one reconstruction target of Eq. 4 (`--target`), at one seed. It measures the sampler
every `--eval_every` steps on the 16 held-out clips: foreground enrichment (share of P on the moving object /
share of its tokens, 1 = random masking; not for `clutter`, which has no object box) and the motion
correlation (Spearman of P against per-token frame-difference energy, 0 = random). The knobs (Table 1b's rho,
the patch, the width, the sampler's lr, the 3D position table) run on `texture` with `--knob_targets`.

    python -m demo.study                                   # every run: backgrounds x targets x seeds, then knobs
    python -m demo.study --backgrounds texture --targets pixel --seeds 0 --knobs none    # one piece
    python -m demo.study --plot_only                       # the tables and plots of the finished runs

Writes out_dir/SETTING/TARGET/SEED/ (the run, its run.json record with the command and the curves), and into
--docs: study.json (the summary and every run), study.csv (one row per setting and target: mean and standard
error over the seeds), study.png (enrichment, motion correlation and L_R against steps, the mean over seeds,
one line per background and target), study_knobs.png (the same for the knobs) and study_texture_TARGET.png
(the paper's Fig. 4 for the first held-out texture clip after the first seed's run). A run whose run.json
records the same command is not run again, so the study can run in pieces; the tables hold every finished run
under out_dir that the current options describe.
"""

import json
import math
import os
import shutil
import statistics
import sys
from pathlib import Path

from adamae import AdaMAEConfig
from data import read_list
from demo.runs import mean_curve, mean_se, pretrain_numbers, read_log, recorded, run_recorded, write_summary
from demo.synthetic import BACKGROUNDS, DEMO_SET, make_synthetic
from engine import make_parser
from pictures import plot

BATCH = 8  # the demo recipe's batch, given explicitly
# name: pretrain.py options on top of the demo's, on the texture background
KNOBS = {
    "rho 0.9": ["--mask_ratio", "0.9"],              # Table 1b's range
    "patch 16": ["--patch_size", "16"],              # 4x4x8 = 128 tokens
    "width 384": ["--encoder_dim", "384"],           # twice the tiny width
    "sampler lr x10": ["--sampler_lr_scale", "10"],  # the sampler's own, faster learning rate
    "position 3d": ["--position_table", "3d"],       # one sinusoid per axis, the paper's "3D periodic" table
}
METRICS = ("enrichment", "enrichment_visible", "motion_correlation", "recon_loss")
OPTIONS = {
    "backgrounds": (",".join(BACKGROUNDS), "comma-separated, from: " + ", ".join(BACKGROUNDS)),
    "targets": (",".join(AdaMAEConfig.TARGETS), "comma-separated pretrain.py --target values"),
    "seeds": ("0,1,2", "comma-separated pretrain.py --seed values"),
    "knobs": (",".join(KNOBS), f"comma-separated, on the texture background, or none; from: {', '.join(KNOBS)}"),
    "knob_targets": ("pixel", "the targets the knobs run with"),
    "steps": (540, "optimizer steps per run (the demo's budget: 540 = 30 epochs of 18)"),
    "eval_every": (60, "steps between measurements of the sampler"),
    "log_every": (20, "steps between logged losses (the L_R curve)"),
    "out_dir": ("runs/study", "one folder per run, and the generated sets in sets/"),
    "docs": ("docs/results", "where study.json, study.csv and the pictures go"),
    "plot_only": (False, "train nothing: the tables and plots of the finished runs"),
}


def names(text, known, what):
    """A comma-separated option -> its names, each checked against `known`; 'none' is no name."""
    chosen = [n.strip() for n in text.split(",") if n.strip() and n.strip() != "none"]
    unknown = [n for n in chosen if n not in known]
    if unknown:
        raise ValueError(f"--{what}: unknown {unknown}; choose from {list(known)}")
    return chosen


def plan(args):
    """Every run the options select, as (background, knob or None, target, seed): the backgrounds' grid first."""
    targets = names(args.targets, AdaMAEConfig.TARGETS, "targets")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    runs = [(b, None, t, s) for b in names(args.backgrounds, BACKGROUNDS, "backgrounds") for t in targets for s in seeds]
    return runs + [("texture", k, t, s) for k in names(args.knobs, KNOBS, "knobs")
                   for t in names(args.knob_targets, AdaMAEConfig.TARGETS, "knob_targets") for s in seeds]


def run_argv(background, knob, target, seed, args):
    """pretrain.py's options for one run, and its folder. The generated set is shared by every run on the same
    background (out_dir/sets/BACKGROUND, linked as the run's synthetic/); args.steps as whole epochs where it
    is a multiple of one, else cut short by --max_steps."""
    setting = background if knob is None else f"{background} {knob}"
    run_dir = Path(args.out_dir) / setting.replace(" ", "_") / target / str(seed)
    shared = make_synthetic(Path(args.out_dir) / "sets" / background, seed=0, background=background, **DEMO_SET)
    per_epoch = len(read_list(shared["train"])) // BATCH
    argv = ["pretrain.py", "--out_dir", str(run_dir), "--batch_size", str(BATCH),
            "--epochs", str(math.ceil(args.steps / per_epoch)), "--eval_every", str(args.eval_every),
            "--log_every", str(args.log_every), "--vis_every", "0", "--seed", str(seed), "--synthetic_background", background, "--target", target,
            *(KNOBS[knob] if knob else [])]
    return argv + (["--max_steps", str(args.steps)] if args.steps % per_epoch else []), run_dir, shared["train"].parent


def read_curve(run_dir):
    """log.jsonl -> {"sampler": [{step, motion_correlation[, enrichment, enrichment_visible]}], "loss": [{step,
    recon_loss}]}; the last step is measured twice (at its step and as the final one): kept once."""
    records = read_log(Path(run_dir) / "log.jsonl")
    sampler = {r["step"]: r for r in records if "motion_correlation" in r}
    return {"sampler": list(sampler.values()),
            "loss": [{"step": r["step"], "recon_loss": r["recon_loss"]} for r in records if "recon_loss" in r]}


def run(background, knob, target, seed, args):
    """Train one run unless its run.json records the same command."""
    argv, run_dir, shared = run_argv(background, knob, target, seed, args)
    if recorded(run_dir / "run.json", argv) is not None:
        return
    for old in ("log.jsonl", "checkpoint.pt"):  # a half-finished run would mix two runs' steps
        (run_dir / old).unlink(missing_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / "synthetic").exists():
        (run_dir / "synthetic").symlink_to(os.path.relpath(shared, run_dir), target_is_directory=True)
    setting = background if knob is None else f"{background} {knob}"
    head = {"setting": setting, "background": background, "knob": knob, "target": target, "seed": seed,
            "out_dir": str(run_dir)}
    # one thread per run: two pieces of the study can run side by side on two cores
    run_recorded(argv, run_dir / "run.json", head, lambda: {**pretrain_numbers(run_dir), **read_curve(run_dir)},
                 env={**os.environ, "OMP_NUM_THREADS": "1"})


def finished(args):
    """Every run.json under out_dir whose command is the one the current options give its run, in the study's
    order: backgrounds, then knobs; targets; seeds."""
    records = []
    for path in sorted(Path(args.out_dir).glob("*/*/*/run.json")):
        r = json.loads(path.read_text())
        if r["background"] in BACKGROUNDS and (r["knob"] is None or r["knob"] in KNOBS) and \
                recorded(path, run_argv(r["background"], r["knob"], r["target"], r["seed"], args)[0]) is not None:
            records.append(r)
    order = [None, *KNOBS]
    return sorted(records, key=lambda r: (order.index(r["knob"]), BACKGROUNDS.index(r["background"]),
                                          AdaMAEConfig.TARGETS.index(r["target"]), r["seed"]))


def summary(records):
    """One row per (setting, target), in the order of the runs: seeds, steps, mean and standard error of each
    final number, mean CPU seconds."""
    groups = {}
    for r in records:
        groups.setdefault((r["setting"], r["target"]), []).append(r)
    rows = []
    for (setting, target), runs in groups.items():
        row = {"setting": setting, "target": target, "seeds": " ".join(str(r["seed"]) for r in runs),
               "steps": runs[0]["steps"]}
        for metric in METRICS:
            mean, se = mean_se([r.get(metric) for r in runs])
            row[f"{metric}_mean"], row[f"{metric}_se"] = rounded(mean), rounded(se)
        row["cpu_s_mean"] = round(statistics.fmean(r["cpu_s"] for r in runs), 1)
        rows.append(row)
    return rows


def rounded(x):
    return None if x is None else round(x, 4)


def save_plot(path, records):
    """Enrichment, motion correlation and L_R against steps, one line per (setting, target): the mean over seeds.
    A panel no run measured (enrichment of clutter alone) is left out."""
    groups = {}
    for r in records:
        groups.setdefault(f"{r['setting']} {r['target']}", []).append(r)
    panels = [("foreground enrichment", "sampler", "enrichment"),
              ("motion correlation", "sampler", "motion_correlation"), ("reconstruction loss l_r", "loss", "recon_loss")]
    drawn = [(title, [(name, mean_curve(runs, part, key)) for name, runs in groups.items()])
             for title, part, key in panels]
    drawn = [(title, series) for title, series in drawn if any(points for _, points in series)]
    plot.save_line_plots(path, [title for title, _ in drawn], [series for _, series in drawn], x_label="step")


def write_results(records, args):
    """study.json, study.csv, study.png, study_knobs.png and the texture pictures into args.docs."""
    docs, rows = Path(args.docs), summary(records)
    write_summary(docs, "study", rows, records)
    backgrounds = [r for r in records if r["knob"] is None]
    if backgrounds:
        save_plot(docs / "study.png", backgrounds)
    knob_targets = {r["target"] for r in records if r["knob"]}
    if knob_targets:  # each knob beside plain texture at the same targets
        save_plot(docs / "study_knobs.png", [r for r in records if r["background"] == "texture" and
                                             (r["knob"] or r["target"] in knob_targets)])
    for target in AdaMAEConfig.TARGETS:  # the first seed's picture of the first held-out clip
        runs = [r for r in backgrounds if r["background"] == "texture" and r["target"] == target]
        if runs and (Path(runs[0]["out_dir"]) / "vis" / "final.png").is_file():
            shutil.copyfile(Path(runs[0]["out_dir"]) / "vis" / "final.png", docs / f"study_texture_{target}.png")
    for row in rows:
        print(json.dumps(row))


def main(argv=None):
    args = make_parser(__doc__, OPTIONS, {}).parse_args(argv)
    planned = plan(args)
    for point in [] if args.plot_only else planned:
        run(*point, args)
    records = finished(args)
    if not records:
        sys.exit(f"no finished run under {args.out_dir} for these options")
    write_results(records, args)


if __name__ == "__main__":
    main()

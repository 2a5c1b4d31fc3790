"""When does the sampler learn where the motion is? Pre-training curves on synthetic backgrounds.

docs/method.md, "What the sampler learns, and when it cannot". Each curve is one `python pretrain.py` run of the
embedded demo (the same recipe, data set size and step budget for every curve; only the named
settings change) that measures the sampler every `--eval_every` steps on 16 held-out clips:
foreground enrichment (share of P on the moving object / share of its tokens, 1 = random masking)
and the motion correlation (Spearman of P against per-token frame-difference energy, 0 = random).

    python -m demo.study                                  # every curve, 540 steps each (the demo's budget)
    python -m demo.study --curves flat,texture --steps 2000 --out_dir runs/study_long
    python -m demo.study --plot_only                      # redraw from the finished runs

Writes out_dir/NAME/ (the runs), and docs/study.json (curves), docs/study.csv (one row per curve)
and docs/study.png (enrichment, motion correlation and the MAE's loss L_R against steps). A finished curve (its
curve.json records the same command) is not run again.
"""

import csv
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from pictures import plot
from data import read_list
from engine import make_parser
from demo.synthetic import DEMO_SET, make_synthetic

BATCH = 8  # pretrain.py's default --batch_size, given explicitly

# name: pretrain.py options on top of the demo's. Knobs the paper varies, on the static texture.
CURVES = {
    "flat": [],
    "gradient": ["--synthetic_background", "gradient"],
    "texture": ["--synthetic_background", "texture"],
    "texture_object": ["--synthetic_background", "texture_object"],
    "texture rho 0.9": ["--synthetic_background", "texture", "--mask_ratio", "0.9"],  # Table 1b
    "texture patch 16": ["--synthetic_background", "texture", "--patch_size", "16"],  # 4x4 patches
    "texture width 384": ["--synthetic_background", "texture", "--encoder_dim", "384"],
    "texture sampler lr x10": ["--synthetic_background", "texture", "--sampler_lr_scale", "10"],
}
DEFAULTS = {
    "curves": (",".join(CURVES), f"comma-separated, from: {', '.join(CURVES)}"),
    "steps": (540, "optimizer steps per curve (rounded up to whole epochs; the demo's budget is 540)"),
    "eval_every": (60, "steps between measurements of the sampler"),
    "seed": (0, "pretrain.py --seed"),
    "out_dir": ("runs/study", "one folder per curve"),
    "docs": ("docs", "where study.json, study.csv and study.png go"),
    "plot_only": (False, "redraw the picture and tables from finished curves, train nothing"),
}


def curve_argv(name, args, out_dir):
    """pretrain.py options of a curve: the demo recipe, args.steps as whole epochs."""
    extra = CURVES[name]
    background = extra[extra.index("--synthetic_background") + 1] if "--synthetic_background" in extra else "flat"
    synthetic = make_synthetic(out_dir / "synthetic", seed=0, background=background, **DEMO_SET)
    epochs = math.ceil(args.steps / (len(read_list(synthetic["train"])) // BATCH))
    return ["--out_dir", str(out_dir), "--batch_size", str(BATCH), "--epochs", str(epochs), "--eval_every", str(args.eval_every),
            "--vis_every", "0", "--seed", str(args.seed), *extra]


def read_curve(log_path):
    """log.jsonl -> {"sampler": [{step, enrichment, enrichment_visible, motion_correlation}],
    "loss": [{step, recon_loss}]}."""
    records = [json.loads(line) for line in Path(log_path).read_text().splitlines()]
    sampler = {r["step"]: r for r in records if "motion_correlation" in r}  # the last step is measured twice
    return {"sampler": list(sampler.values()),
            "loss": [{"step": r["step"], "recon_loss": r["recon_loss"]} for r in records if "recon_loss" in r]}


def cpu_seconds():
    """CPU time of this process and its finished children (the DataLoader workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_curve(name, args):
    """Train one curve unless curve.json already holds it for the same command; returns the curve."""
    out_dir = Path(args.out_dir) / name.replace(" ", "_")
    argv = curve_argv(name, args, out_dir)
    done = out_dir / "curve.json"
    if done.is_file() and json.loads(done.read_text())["argv"] == argv:
        return json.loads(done.read_text())
    if args.plot_only:
        return None
    for stale in ("log.jsonl", "checkpoint.pt"):  # a half-finished run would mix two curves
        (out_dir / stale).unlink(missing_ok=True)
    wall, cpu = time.time(), cpu_seconds()
    # one thread, one curve per core: run several studies side by side instead
    subprocess.run([sys.executable, str(Path(__file__).parent.parent / "pretrain.py"), *argv], check=True,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    curve = {"name": name, "argv": argv, "command": "python pretrain.py " + " ".join(argv),
             "wall_s": round(time.time() - wall, 1), "cpu_s": round(cpu_seconds() - cpu, 1),
             **read_curve(out_dir / "log.jsonl")}
    done.write_text(json.dumps(curve))
    return curve


def summary_row(curve):
    """One line of study.csv: the sampler at the first and last measurement, the last L_R, the cost."""
    first, last = curve["sampler"][0], curve["sampler"][-1]
    return {"setting": curve["name"], "steps": last["step"],
            "enrichment_start": round(first["enrichment"], 2), "enrichment_end": round(last["enrichment"], 2),
            "motion_correlation_end": round(last["motion_correlation"], 2),
            "recon_loss_end": round(curve["loss"][-1]["recon_loss"], 3) if curve["loss"] else None,
            "wall_s": curve["wall_s"], "cpu_s": curve["cpu_s"], "command": curve["command"]}


def write_results(curves, docs):
    """docs/study.json (every curve), docs/study.csv (summary rows), docs/study.png (three panels)."""
    docs = Path(docs)
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "study.json").write_text(json.dumps(curves, indent=1))
    rows = [summary_row(c) for c in curves]
    with open(docs / "study.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    panels = [("foreground enrichment", "sampler", "enrichment"), ("motion correlation", "sampler", "motion_correlation"),
              ("reconstruction loss l_r", "loss", "recon_loss")]
    series = [[(c["name"], [(p["step"], p[key]) for p in c[part]]) for c in curves] for _, part, key in panels]
    plot.save_line_plots(docs / "study.png", [title for title, _, _ in panels], series, x_label="step")
    for row in rows:
        print(f"{row['setting']:>24}: enrichment {row['enrichment_start']:.2f} -> {row['enrichment_end']:.2f}, "
              f"motion correlation {row['motion_correlation_end']:+.2f}, L_R {row['recon_loss_end']}, "
              f"{row['steps']} steps, {row['cpu_s']:.0f} CPU-s")


def main(argv=None):
    args = make_parser(__doc__, DEFAULTS, {}).parse_args(argv)
    names = [n.strip() for n in args.curves.split(",") if n.strip()]
    unknown = [n for n in names if n not in CURVES]
    if unknown:
        raise ValueError(f"unknown curve(s) {unknown}; choose from {list(CURVES)}")
    curves = [c for c in (run_curve(name, args) for name in names) if c is not None]
    if not curves:
        sys.exit("no finished curve to plot")
    write_results(curves, args.docs)


if __name__ == "__main__":
    main()

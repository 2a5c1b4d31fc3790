"""What the demo's experiment scripts share (demo.seeds, demo.study): a training command run as a child process
and recorded in a JSON file, skipped when that file already records the same command, and the numbers read
back from the run's own log.jsonl.

    record = run_recorded(["pretrain.py", "--seed", "1", "--out_dir", "runs/x"], Path("runs/x/run.json"),
                          {"seed": 1}, lambda: pretrain_numbers("runs/x"))
"""

import csv
import json
import math
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from demo.synthetic import labelled_demo


def commit():
    """The checked-out commit, with '+changes' when the tree differs from it; 'unknown' outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
        return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def children_cpu_seconds():
    """CPU time of this process's finished children (a run and its DataLoader workers)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def read_log(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def pretrain_numbers(out_dir):
    """The final measurement of the sampler (the last one logged; foreground enrichment only where the set has
    object boxes) and the last L_R of a pretrain.py run."""
    records = read_log(Path(out_dir) / "log.jsonl")
    final = [r for r in records if "motion_correlation" in r][-1]
    sampler = {k: final[k] for k in ("enrichment", "enrichment_visible", "motion_correlation") if k in final}
    return {"steps": final["step"], **sampler, "recon_loss": [r["recon_loss"] for r in records if "recon_loss" in r][-1]}


def final_test(log_path):
    """The last multi-view test record of a finetune.py log.jsonl (a training run's, or --eval's)."""
    return [r for r in read_log(log_path) if "test" in r][-1]


def finetune_numbers(out_dir):
    """Each arm's multi-view test top-1 and its best single-view validation top-1 (finetune.py with --compare)."""
    numbers = {}
    for arm in ("pretrained", "scratch"):
        test = final_test(Path(out_dir) / arm / "log.jsonl")
        numbers[f"{arm}_top1"], numbers[f"{arm}_best_val_top1"] = test["top1"], test["best_val_top1"]
    return numbers


def mean_se(values):
    """(mean, standard error over the values) of the values that are there; None where there are none (or, for
    the error, only one)."""
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else None
    return statistics.fmean(values), se


def mean_curve(runs, part, key):
    """[(step, mean over the runs that measured it)] of one curve of several seeds: each run's r[part] is a list
    of {step, key: value} points."""
    by_step = {}
    for r in runs:
        for point in r[part]:
            if point.get(key) is not None:
                by_step.setdefault(point["step"], []).append(point[key])
    return sorted((step, statistics.fmean(v)) for step, v in by_step.items())


def write_csv(path, rows):
    """Rows of equal keys as a CSV file with a header."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_summary(docs, name, rows, records):
    """docs/NAME.json ({"summary": rows, "runs": records}) and docs/NAME.csv (the rows), creating docs."""
    docs = Path(docs)
    docs.mkdir(parents=True, exist_ok=True)
    (docs / f"{name}.json").write_text(json.dumps({"summary": rows, "runs": records}, indent=1))
    write_csv(docs / f"{name}.csv", rows)


def labelled_lists(pretrained, data, val, out_dir):
    """(train list, val list) for fine-tuning runs from the checkpoint `pretrained` (checked first): --data and
    --val as given, or neither for the fine-tuning demo's labelled set, generated in out_dir/synthetic."""
    if not Path(pretrained).is_file():
        raise SystemExit(f"{pretrained}: no pre-training checkpoint; run `python pretrain.py` first")
    if (data is None) != (val is None):
        raise SystemExit("give --data and --val together, or neither for the demo's labelled set")
    return (data, val) if data else labelled_demo(out_dir)


def launch(argv, env=None):
    """`python *argv` as a child process in the current folder; raises if it fails."""
    subprocess.run([sys.executable, *argv], check=True, env=env)


def recorded(record_path, argv):
    """The record at record_path if it records the command `python *argv`, else None."""
    record_path = Path(record_path)
    if not record_path.is_file():
        return None
    record = json.loads(record_path.read_text())
    return record if record["command"] == "python " + " ".join(argv) else None


def run_recorded(argv, record_path, head, numbers, env=None):
    """Run `python *argv` unless record_path already records the same command; returns the record: `head`, the
    command, the commit, wall and CPU seconds, then `numbers()` read after the run. Written last, through a
    temporary file, so an interrupted run leaves no record and runs again."""
    done = recorded(record_path, argv)
    if done is not None:
        return done
    wall, cpu = time.time(), children_cpu_seconds()
    launch(argv, env)
    record = {**head, "command": "python " + " ".join(argv), "commit": commit(), "wall_s": round(time.time() - wall, 1),
              "cpu_s": round(children_cpu_seconds() - cpu, 1), **numbers()}
    record_path = Path(record_path)
    record_path.parent.mkdir(parents=True, exist_ok=True)
    temporary = record_path.with_suffix(".tmp")
    temporary.write_text(json.dumps(record))
    temporary.replace(record_path)
    return record

"""What the demo's experiment scripts share (demo.seeds, demo.study): a training command run as a child process
and recorded in a JSON file, skipped when that file already records the same command, and the numbers read
back from the run's own log.jsonl.

    record = run_recorded(["pretrain.py", "--seed", "1", "--out_dir", "runs/x"], Path("runs/x/run.json"),
                          {"seed": 1}, lambda: pretrain_numbers("runs/x"))
"""

import json
import resource
import subprocess
import sys
import time
from pathlib import Path


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

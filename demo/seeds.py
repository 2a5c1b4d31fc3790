"""The demos over several seeds, as the results doc reports them (docs/results.md).

    python -m demo.seeds                         # seeds 0, 1, 2: python pretrain.py, then python finetune.py
    python -m demo.seeds --stages pretrain       # the pre-training demo only

Each run is the README's own command plus `--seed S --out_dir runs/seeds/S/...`, run as a process with the
threads torch picks; its numbers are read back from the run's log.jsonl. Writes docs/results/demo.json (every
run: command, commit, wall and CPU seconds, the final numbers) and docs/results/demo_STAGE.csv (one row per run).
A run whose folder already records the same command is not run again.
"""

import json
from pathlib import Path

from demo.runs import finetune_numbers, pretrain_numbers, run_recorded, write_csv
from engine import make_parser

OPTIONS = {
    "seeds": ("0,1,2", "comma-separated seeds"),
    "stages": ("pretrain,finetune", "pretrain (python pretrain.py) and/or finetune (python finetune.py on the "
                                    "pre-training demo of the same seed)"),
    "out_dir": ("runs/seeds", "one folder per seed"),
    "docs": ("docs/results", "where demo.json and demo.csv go"),
}


def run(stage, seed, root):
    """One demo run (skipped when its folder records the same command): {command, commit, seconds, numbers}."""
    pretrain_dir, finetune_dir = root / str(seed) / "pretrain", root / str(seed) / "finetune"
    argv = {"pretrain": ["pretrain.py", "--seed", str(seed), "--out_dir", str(pretrain_dir)],
            "finetune": ["finetune.py", "--seed", str(seed), "--out_dir", str(finetune_dir),
                         "--pretrained", str(pretrain_dir / "checkpoint.pt")]}[stage]
    record_path = (pretrain_dir if stage == "pretrain" else finetune_dir) / "seed_run.json"
    numbers = (lambda: pretrain_numbers(pretrain_dir)) if stage == "pretrain" else lambda: finetune_numbers(finetune_dir)
    return run_recorded(argv, record_path, {"stage": stage, "seed": seed}, numbers)


def main(argv=None):
    args = make_parser(__doc__, OPTIONS, {}).parse_args(argv)
    seeds, stages = [int(s) for s in args.seeds.split(",")], [s.strip() for s in args.stages.split(",")]
    records = [run(stage, seed, Path(args.out_dir)) for seed in seeds for stage in stages]
    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "demo.json").write_text(json.dumps(records, indent=1))
    for stage in stages:
        rows = [r for r in records if r["stage"] == stage]
        write_csv(docs / f"demo_{stage}.csv", rows)
    for r in records:
        print(json.dumps(r))


if __name__ == "__main__":
    main()

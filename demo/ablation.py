"""Why the paper's fine-tuning recipe leaves both arms at chance on the demo's 280 labelled videos: the demo recipe,
then the paper's values put back one group at a time, each run with both arms and each arm then tested on its own
training videos (docs/results.md, "The fine-tuning demo").

    python -m demo.ablation                  # after python pretrain.py; every row
    python -m demo.ablation --rows demo,paper_aug,previous           # the rows docs/results.md reports

Each row is one `python finetune.py --recipe demo --seed 0` with the row's options, on the demo's labelled set,
then `python finetune.py --eval` of each arm's last checkpoint on the training list (the same multi-view test):
a classifier that does not fit its own training videos is underfitting, not overfitting. The last row is the
demo recipe as it was before this table (`previous`): the paper's augmentation, 5 epochs, the pre-training
clip. Writes out_dir/ROW/ and, into --docs, ablation.json (every run) and ablation.csv (one row per run).
"""

import json
from pathlib import Path

from demo.runs import final_test, finetune_numbers, labelled_lists, run_recorded, write_csv
from engine import make_parser

PAPER_AUGMENTATION = ["--min_scale", "0.08", "--rand_aug", "rand-m7-n4-mstd0.5-inc1", "--reprob", "0.25",
                      "--mixup", "0.8", "--cutmix", "1.0"]
FIVE_EPOCHS = ["--epochs", "5", "--warmup_epochs", "1"]
PRETRAINING_CLIP = ["--num_frames", "16", "--img_size", "64", "--stride", "4"]  # the checkpoint's 16 x 64 x 64
ROWS = {  # name: the options added to the demo recipe
    "demo": [],
    "short": FIVE_EPOCHS,
    "paper_aug": PAPER_AUGMENTATION,
    "paper_aug_short": PAPER_AUGMENTATION + FIVE_EPOCHS,
    "previous": PAPER_AUGMENTATION + FIVE_EPOCHS + PRETRAINING_CLIP,  # the demo recipe before this table
}
OPTIONS = {
    "rows": (",".join(ROWS), "comma-separated rows to run, of: " + ", ".join(ROWS)),
    "pretrained": ("runs/pretrain/checkpoint.pt", "the pre-training checkpoint"),
    "data": (None, "training list; default: the fine-tuning demo's labelled set, generated in out_dir/synthetic"),
    "val": (None, "validation list (with --data)"),
    "out_dir": ("runs/ablation", "one folder per row"),
    "docs": ("docs/results", "where ablation.json and ablation.csv go"),
}


def train_top1(run_dir, arm, options, train):
    """The multi-view top-1 of an arm's last checkpoint on the training list (finetune.py --eval)."""
    eval_dir = Path(run_dir) / f"train_{arm}"
    argv = ["finetune.py", "--eval", "--recipe", "demo", "--resume", str(Path(run_dir) / arm / "checkpoint.pt"),
            "--val", train, "--out_dir", str(eval_dir), *options]
    record = run_recorded(argv, eval_dir / "run.json", {},
                          lambda: {"top1": final_test(eval_dir / "eval" / "log.jsonl")["top1"]})
    return record["top1"]


def run(name, train, val, args):
    """One row (skipped when its run.json records the same command): its record, train top-1 per arm included."""
    run_dir = Path(args.out_dir) / name
    options = ROWS[name]
    argv = ["finetune.py", "--recipe", "demo", "--seed", "0", "--data", train, "--val", val,
            "--pretrained", args.pretrained, "--out_dir", str(run_dir), *options]
    head = {"row": name, "options": " ".join(options)}
    record = run_recorded(argv, run_dir / "run.json", head, lambda: finetune_numbers(run_dir))
    return {**record, **{f"{arm}_train_top1": train_top1(run_dir, arm, options, train)
                         for arm in ("pretrained", "scratch")}}


def main(argv=None):
    args = make_parser(__doc__, OPTIONS, {"data": str, "val": str}).parse_args(argv)
    names = [name.strip() for name in args.rows.split(",")]
    unknown = [name for name in names if name not in ROWS]
    if unknown:
        raise SystemExit(f"--rows: unknown {', '.join(unknown)}; choose from {', '.join(ROWS)}")
    train, val = labelled_lists(args.pretrained, args.data, args.val, args.out_dir)
    records = [run(name, train, val, args) for name in names]
    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "ablation.json").write_text(json.dumps(records, indent=1))
    write_csv(docs / "ablation.csv", records)
    for r in records:
        print(json.dumps(r))


if __name__ == "__main__":
    main()

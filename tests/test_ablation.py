"""demo.ablation on a tiny budget: each row launches the demo recipe with its options and both arms' test on
their own training videos, the files it writes hold those runs' numbers, and finished rows are not run again."""

import csv
import json

import pytest

import finetune
from demo import ablation, runs
from demo.synthetic import make_synthetic
from test_finetune import write_pretrained


def test_ablation_runs_each_row_tests_both_arms_on_their_training_videos(tmp_path, monkeypatch):
    root = make_synthetic(tmp_path / "set", num_videos=16, num_frames=32, size=64, val_fraction=0.5)["train"].parent
    ckpt = write_pretrained(tmp_path / "pretrain.pt")
    launched = []

    def in_process(argv, env=None):  # the tiny model's sizes: 1 epoch of 2 steps, no worker processes
        launched.append(argv)
        finetune.main([*argv[1:], "--batch_size", "4", "--stride", "2", "--num_workers", "0", "--warmup_epochs", "0",
                       "--epochs", "1", "--test_clips", "1", "--num_frames", "4", "--img_size", "32"])

    monkeypatch.setattr(runs, "launch", in_process)
    out, docs = tmp_path / "runs", tmp_path / "docs"
    options = ["--rows", "paper_aug", "--pretrained", str(ckpt), "--data", str(root / "train.csv"),
               "--val", str(root / "val.csv"), "--out_dir", str(out), "--docs", str(docs)]
    ablation.main(options)
    train, evals = launched[0], launched[1:]
    assert train[:3] == ["finetune.py", "--recipe", "demo"] and "--mixup" in train and "--eval" not in train
    assert len(evals) == 2 and all("--eval" in a and a[a.index("--val") + 1] == str(root / "train.csv") for a in evals)
    [record] = json.loads((docs / "ablation.json").read_text())
    assert record["row"] == "paper_aug" and record["options"] == " ".join(ablation.PAPER_AUGMENTATION)
    for arm in ("pretrained", "scratch"):
        tested = [json.loads(line) for line in (out / "paper_aug" / f"train_{arm}" / "eval" / "log.jsonl").open()]
        assert record[f"{arm}_train_top1"] == tested[-1]["top1"] and tested[-1]["videos"] == 8  # the 8 train videos
        assert 0 <= record[f"{arm}_top1"] <= 1
    with open(docs / "ablation.csv") as f:
        [row] = list(csv.DictReader(f))
    assert float(row["pretrained_train_top1"]) == pytest.approx(record["pretrained_train_top1"])

    ablation.main(options)  # finished: nothing runs again
    assert len(launched) == 3
    with pytest.raises(SystemExit, match="unknown nonsense"):
        ablation.main([*options, "--rows", "nonsense"])

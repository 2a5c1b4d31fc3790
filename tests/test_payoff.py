"""demo.payoff on a tiny budget: the label subsets it writes, the runs it launches, the summary (mean and
standard error over seeds, the paired gap), the files, and that finished points are not run again."""

import csv
import json
from collections import Counter

import pytest

import finetune
from data import read_list
from demo import payoff, runs
from demo.synthetic import make_synthetic
from test_finetune import write_pretrained


def test_subsets_are_balanced_nested_and_as_long_as_the_full_set(tmp_path):
    samples = [(f"v{i}.mp4", i % 4) for i in range(40)]
    small = read_list(payoff.subset_list(samples, 2, 0, tmp_path / "2.csv"))
    large = read_list(payoff.subset_list(samples, 5, 0, tmp_path / "5.csv"))
    other = read_list(payoff.subset_list(samples, 2, 1, tmp_path / "other.csv"))
    for listed, k in ((small, 2), (large, 5)):
        assert len(listed) == len(samples)
        assert Counter(label for _, label in set(listed)) == {c: k for c in range(4)}  # k distinct videos a class
        assert max(Counter(listed).values()) - min(Counter(listed).values()) <= 1      # each repeated evenly
    assert {v for v, _ in small} < {v for v, _ in large}
    assert {v for v, _ in small} != {v for v, _ in other}


def test_a_subset_names_the_videos_of_a_list_with_relative_paths_from_its_own_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # read_list gives paths relative to here, as for runs/payoff/synthetic/train.csv
    samples = [(f"set/videos/v{i}.mp4", i % 4) for i in range(8)]
    listed = read_list(payoff.subset_list(samples, 1, 0, tmp_path / "runs" / "1" / "0" / "train.csv"))
    assert {v for v, _ in listed} <= {str(tmp_path / v) for v, _ in samples}


def test_payoff_runs_both_arms_per_point_and_summarises(tmp_path, monkeypatch):
    root = make_synthetic(tmp_path / "set", num_videos=16, num_frames=32, size=64, val_fraction=0.5)["train"].parent
    ckpt = write_pretrained(tmp_path / "pretrain.pt")
    launched = []

    def in_process(argv, env=None):  # the tiny model's sizes: 2 steps of 4 clips an epoch, no worker processes
        launched.append(argv)
        finetune.main([*argv[1:], "--batch_size", "4", "--stride", "2", "--num_workers", "0", "--warmup_epochs", "0",
                       "--test_clips", "1"])

    monkeypatch.setattr(runs, "launch", in_process)
    out, docs = tmp_path / "runs", tmp_path / "docs"
    options = ["--per_class", "1,all", "--seeds", "0,1", "--epochs", "2", "--pretrained", str(ckpt),
               "--data", str(root / "train.csv"), "--val", str(root / "val.csv"), "--out_dir", str(out),
               "--docs", str(docs)]
    payoff.main(options)
    assert len(launched) == 4 and all(a[:3] == ["finetune.py", "--recipe", "demo"] for a in launched)
    records = [json.loads((out / k / s / "run.json").read_text()) for k in ("1", "all") for s in "01"]
    assert [(r["per_class"], r["videos"], r["seed"]) for r in records] == [(1, 4, 0), (1, 4, 1), ("all", 8, 0),
                                                                         ("all", 8, 1)]
    for r in records:
        assert [p["step"] for p in r["pretrained_val"]] == [2, 4] == [p["step"] for p in r["scratch_val"]]
    with open(docs / "payoff.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["per_class"] for row in rows] == ["1", "all"] and rows[0]["seeds"] == "0 1"
    for row, pair in zip(rows, (records[:2], records[2:])):  # mean and standard error of two values, computed here
        for name, (a, b) in [("pretrained", [r["pretrained_top1"] for r in pair]),
                             ("gap", [r["pretrained_top1"] - r["scratch_top1"] for r in pair])]:
            assert float(row[f"{name}_mean"]) == pytest.approx((a + b) / 2, abs=1e-4)
            assert float(row[f"{name}_se"]) == pytest.approx(abs(a - b) / 2, abs=1e-4)
    for picture in ("payoff.png", "payoff_steps.png"):
        assert (docs / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    payoff.main(options)  # every point finished: nothing runs again
    assert len(launched) == 4

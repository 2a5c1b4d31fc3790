"""demo.study on a tiny budget: the runs it launches, their records, the summary (mean and standard error over
seeds), the files it writes, and that finished runs are not run again."""

import csv
import json

import pytest

import pretrain
from demo import runs, study

RECORD_FIELDS = {"setting", "background", "knob", "target", "seed", "out_dir", "command", "commit", "wall_s", "cpu_s",
                 "steps", "enrichment", "enrichment_visible", "motion_correlation", "recon_loss", "sampler", "loss"}


def test_study_records_runs_summarises_seeds_and_skips_finished_runs(tmp_path, monkeypatch):
    launched = []

    def in_process(argv, env=None):  # pretrain.py in this process and without a DataLoader worker: seconds
        launched.append(argv)
        pretrain.main([*argv[1:], "--num_workers", "0"])

    monkeypatch.setattr(runs, "launch", in_process)
    out, docs = tmp_path / "runs", tmp_path / "docs"
    options = ["--backgrounds", "texture", "--targets", "pixel", "--seeds", "0,1", "--knobs", "none", "--steps", "1",
               "--eval_every", "5", "--log_every", "1", "--out_dir", str(out), "--docs", str(docs)]  # measured at 0 and 1
    study.main(options)
    assert len(launched) == 2 and all(a[0] == "pretrain.py" for a in launched)
    assert all(" ".join(a).endswith("--synthetic_background texture --target pixel --max_steps 1") for a in launched)
    records = [json.loads((out / "texture" / "pixel" / seed / "run.json").read_text()) for seed in "01"]
    for seed, r in enumerate(records):
        assert set(r) == RECORD_FIELDS and (r["seed"], r["target"], r["knob"], r["steps"]) == (seed, "pixel", None, 1)
        assert [p["step"] for p in r["sampler"]] == [0, 1] and [p["step"] for p in r["loss"]] == [1]
        assert (out / "texture" / "pixel" / str(seed) / "synthetic").is_symlink()  # one shared set per background
    with open(docs / "study.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and rows[0]["setting"] == "texture" and rows[0]["seeds"] == "0 1"
    for metric in study.METRICS:  # the mean and the standard error of two values, computed here
        a, b = (r[metric] for r in records)
        assert float(rows[0][f"{metric}_mean"]) == pytest.approx((a + b) / 2, abs=1e-4)
        assert float(rows[0][f"{metric}_se"]) == pytest.approx(abs(a - b) / 2, abs=1e-4)
    summary = json.loads((docs / "study.json").read_text())
    assert len(summary["runs"]) == 2 and summary["summary"][0]["enrichment_mean"] == float(rows[0]["enrichment_mean"])
    for picture in ("study.png", "study_texture_pixel.png"):
        assert (docs / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (docs / "study_knobs.png").exists()  # no knob ran

    study.main([*options[:4], "--seeds", "1", *options[6:]])  # a piece already done: nothing runs
    assert len(launched) == 2
    assert json.loads((docs / "study.json").read_text())["summary"][0]["seeds"] == "0 1"  # every finished run
    with pytest.raises(SystemExit, match="no finished run"):  # another budget describes other runs: none finished
        study.main([*options, "--steps", "2", "--plot_only"])
    assert len(launched) == 2


def test_study_refuses_unknown_names():
    with pytest.raises(ValueError, match=r"--backgrounds: unknown \['marble'\]"):
        study.main(["--backgrounds", "marble"])

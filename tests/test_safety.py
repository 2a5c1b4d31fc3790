"""Nothing lost, every error names its cause: one test per failure a hostile user found (docs/recipe.md:
Troubleshooting). Non-finite weights are never saved; one run per out_dir; the safe loader names the file
whatever its format; bad options stop when parsed; --val is never replaced; an unwritable out_dir and a
checkpoint of the wrong kind are named; unreadable videos are counted and named once each, a resume replays
nothing into log.jsonl and says what changed."""

import hashlib
import math
import os
import pickle
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

import finetune
import pretrain
from classifier import VideoClassifier
from data import load_samples
from engine import load_checkpoint_file, save_checkpoint
from test_convert import Payload
from test_distributed import run_pretrain_with
from test_finetune import small_config
from test_pretrain import free_port, read_log, run_args
from tools import visualize


def digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- 1. non-finite weights are never saved

def nan_update_worker(rank, world, port, argv, poison_step, out_dir):
    """pretrain.main as torchrun starts it. At optimizer step `poison_step` of this run rank 1's gradient of one
    weight turns NaN during backward: DDP averages it into every rank's update, while the loss (computed
    before the update) stays finite."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    real_step, steps = pretrain.train_step, []

    def train_step(model, *args, **kwargs):
        steps.append(None)
        if rank != 1 or len(steps) != poison_step:
            return real_step(model, *args, **kwargs)
        hook = next(model.parameters()).register_hook(lambda grad: grad * float("nan"))
        try:
            return real_step(model, *args, **kwargs)
        finally:
            hook.remove()

    run_pretrain_with(train_step, argv, out_dir, rank)


def test_weights_made_non_finite_by_the_last_update_of_an_epoch_are_not_saved(synthetic_root, tmp_path):
    out = tmp_path / "run"
    pretrain.main(run_args(synthetic_root, out, "--epochs", "1"))  # one process: epoch 0 = steps 1-2, saved
    ckpt = out / "checkpoint.pt"
    before = digest(ckpt)
    # two ranks of 2 videos: one step per epoch, so the NaN update is the last (and only) one of epoch 1
    argv = run_args(synthetic_root, out, "--epochs", "2")
    mp.spawn(nan_update_worker, args=(2, free_port(), argv, 1, str(tmp_path)), nprocs=2)
    outcomes = [(tmp_path / f"outcome{r}.txt").read_text() for r in range(2)]
    assert outcomes[0] == outcomes[1], outcomes  # every rank stops, with the same message
    assert outcomes[0] == (f"FloatingPointError: weights or optimizer state not finite after step 3 in 2 of 2 "
                           f"process(es); nothing saved: {ckpt} is still the last good state (from step 2); resume "
                           f"from it, e.g. with --clip_grad 1.0, a lower --base_lr or --dtype bf16 (docs/recipe.md: "
                           f"Troubleshooting)")
    step3 = [r for r in read_log(out) if r.get("step") == 3 and "loss" in r]
    assert len(step3) == 1 and math.isfinite(step3[0]["loss"])  # the loss check alone would have let it pass
    assert digest(ckpt) == before
    assert torch.load(ckpt, weights_only=True)["step"] == 2


# ----------------------------------------------------------------------------- 2. one run per out_dir

def test_a_second_run_on_an_out_dir_in_use_stops_at_its_start(synthetic_root, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    host = socket.gethostname()
    (out / "run.lock").write_text(f"{holder.pid} {host}")  # a run of another process, still going
    try:
        with pytest.raises(RuntimeError) as error:
            pretrain.main(run_args(synthetic_root, out, "--max_steps", "2"))
        assert str(error.value) == (f"--out_dir {out} is in use by process {holder.pid} on {host} (lock "
                                    f"{out / 'run.lock'}); wait for it to end or choose another --out_dir")
        assert sorted(p.name for p in out.iterdir()) == ["run.lock"]  # stopped before writing anything
    finally:
        holder.kill()
        holder.wait()
    # the holder was killed: its lock is taken over with a note, and given back at the end
    (out / "checkpoint.pt.tmp").write_text("another process's write in progress")
    pretrain.main(run_args(synthetic_root, out, "--max_steps", "2"))
    printed = capsys.readouterr().out
    assert f"note: {out / 'run.lock'} named process {holder.pid} on {host}, which is gone (killed?)" in printed
    assert not (out / "run.lock").exists() and torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 2
    assert (out / "checkpoint.pt.tmp").read_text() == "another process's write in progress"  # its own temp name
    assert sorted(p.name for p in out.glob("*.tmp")) == ["checkpoint.pt.tmp"]


# ----------------------------------------------------------------------------- 3. the safe loader names the file

def test_the_safe_loader_names_the_file_whatever_its_format(tmp_path):
    marker = tmp_path / "executed"
    legacy, plain, text, garbage = (tmp_path / name for name in ("legacy.pt", "plain.pkl", "text.pt", "garbage.pt"))
    torch.save({"model": {}, "extra": Payload(marker)}, legacy, _use_new_zipfile_serialization=False)
    plain.write_bytes(pickle.dumps({"extra": Payload(marker)}))
    text.write_bytes(b"not a checkpoint at all " * 10)
    garbage.write_bytes(b"hello world garbage" * 10)
    unsafe = "torch.load(weights_only=True) refused this file: it holds objects other than tensors"
    for path, reason in ((legacy, f"{unsafe}, plain containers and argparse.Namespace (io.open)"),
                         (plain, "not a readable PyTorch checkpoint (no torch.save file"),
                         (text, "not a readable PyTorch checkpoint (no torch.save file"),
                         (garbage, "not a readable PyTorch checkpoint (KeyError")):
        with pytest.raises(ValueError, match=re.escape(f"{path}: ")) as error:
            load_checkpoint_file(path)
        assert reason in str(error.value) and "\n" not in str(error.value), str(error.value)
    assert not marker.exists()


# ----------------------------------------------------------------------------- 4. options stop when parsed

@pytest.mark.parametrize("script, option, value, meaning", [
    (pretrain, "accum_steps", "0", "a whole number >= 1"), (pretrain, "log_every", "0", "a whole number >= 1"),
    (pretrain, "save_every", "0", "a whole number >= 1"), (pretrain, "dtype", "bogus", "one of bf16, fp16, fp32"),
    (pretrain, "repeat_aug", "0", "a whole number >= 1"), (pretrain, "batch_size", "0", "a whole number >= 1"),
    (pretrain, "stride", "0", "a whole number >= 1"), (pretrain, "epochs", "0", "a whole number >= 1"),
    (pretrain, "base_lr", "nan", "a finite number > 0"), (finetune, "accum_steps", "0", "a whole number >= 1"),
    (finetune, "reprob", "1.5", "a number in [0, 1]"), (finetune, "test_clips", "0", "a whole number >= 1")])
def test_a_bad_option_is_refused_in_one_line_when_parsed(script, option, value, meaning, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        script.main([f"--{option}", value, "--out_dir", str(tmp_path / "run")])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_.value.code == 2 and error.endswith(f"argument --{option}: {value!r} is not {meaning}")
    assert not (tmp_path / "run").exists()  # refused before any work


@pytest.mark.parametrize("name, data", [("frame.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe"),
                                        ("clip.flv", b"FLV\x01\x05\x00\x00\x00\t\x00\x00\x00\x00\xd0\x9f\xff")])
def test_a_binary_file_given_as_data_is_named(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(ValueError, match=re.escape(f"{path}: not a list file ('path label' per line, UTF-8 text)")):
        load_samples(path)


# ----------------------------------------------------------------------------- 5. --val is never replaced

def test_val_without_data_is_refused_not_replaced_by_the_demo(synthetic_root, tmp_path, capsys):
    val = tmp_path / "val.csv"
    lines = (synthetic_root / "val.csv").read_text().splitlines()
    val.write_text("".join(f"{synthetic_root / line}\n" for line in lines))
    text = val.read_text()
    classifier = VideoClassifier(small_config(), num_classes=4)
    best = tmp_path / "best.pt"
    save_checkpoint(best, classifier, torch.optim.AdamW(classifier.parameters()),
                    torch.amp.GradScaler("cpu", enabled=False), 4, 1, classifier.cfg, finetune.get_args([])[0],
                    best_val_top1=0.5)
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=re.escape(f"--val {val} without --data: give the training list too")):
        finetune.main(["--resume", str(best), "--val", str(val), "--out_dir", str(out)])
    assert not (out / "synthetic").exists()
    result = finetune.main(["--eval", "--resume", str(best), "--val", str(val), "--out_dir", str(out), "--stride",
                            "2", "--test_clips", "1", "--test_crops", "1", "--num_workers", "0"])["eval"]
    assert result["videos"] == 4 and not (out / "synthetic").exists() and val.read_text() == text


# ----------------------------------------------------------------------------- 6. the folder or file is named

@pytest.mark.parametrize("kind", ["under a file", "read-only"])
def test_an_out_dir_that_cannot_be_written_is_named_at_the_start(synthetic_root, tmp_path, kind):
    if kind == "read-only":
        out = tmp_path / "locked"
        out.mkdir(mode=0o555)
        if os.geteuid() == 0:  # root writes through permissions; /proc refuses a new folder to everyone
            out = Path("/proc") / f"adamae-{os.getpid()}"
    else:
        (tmp_path / "file").write_text("")
        out = tmp_path / "file" / "run"
    with pytest.raises(RuntimeError, match=re.escape(f"--out_dir {out} cannot be written (")) as error:
        pretrain.main(run_args(synthetic_root, out))
    assert str(error.value).endswith("); choose a folder you can write")


def test_a_checkpoint_of_the_wrong_kind_is_named_with_what_was_needed(synthetic_root, tmp_path):
    classifier = VideoClassifier(small_config(), num_classes=4)
    best = tmp_path / "best.pt"
    save_checkpoint(best, classifier, torch.optim.AdamW(classifier.parameters()),
                    torch.amp.GradScaler("cpu", enabled=False), 4, 1, classifier.cfg, finetune.get_args([])[0])
    fine_tuned, pre_training = "a finetune.py checkpoint (a fine-tuned classifier)", "a pretrain.py checkpoint"
    with pytest.raises(ValueError, match=re.escape(f"{best} is {fine_tuned}, but tools.visualize --checkpoint "
                                                   f"needs {pre_training} (pre-training) or the authors'")):
        visualize.load_model(best)
    with pytest.raises(ValueError, match=re.escape(f"{best} is {fine_tuned}, but pretrain.py --resume needs "
                                                   f"{pre_training} (pre-training)")):
        pretrain.main(run_args(synthetic_root, tmp_path / "pre", "--resume", str(best)))
    pretrained = tmp_path / "pre" / "checkpoint.pt"
    pretrain.main(run_args(synthetic_root, tmp_path / "pre", "--max_steps", "2"))
    with pytest.raises(ValueError, match=re.escape(f"{pretrained} is {pre_training} (pre-training), but "
                                                   f"finetune.py --resume needs {fine_tuned}")):
        finetune.main(["--data", str(synthetic_root / "train.csv"), "--val", str(synthetic_root / "val.csv"),
                       "--resume", str(pretrained), "--out_dir", str(tmp_path / "ft")])


# ----------------------------------------------------------------------------- 7. unreadable videos, resume

def test_unreadable_videos_are_counted_once_each_and_a_resume_replays_nothing(synthetic_root, tmp_path, capsys):
    (tmp_path / "empty.mp4").write_bytes(b"")
    lines = (synthetic_root / "train.csv").read_text().splitlines()
    train = tmp_path / "train.csv"  # saved with a byte-order mark; its first line is a good video
    good = "".join(f"{synthetic_root / line}\n" for line in lines)
    train.write_text("\ufeff" + good + "empty.mp4 0\nmissing.mp4 1\n", encoding="utf-8")
    assert load_samples(train)[0] == (str(synthetic_root / lines[0].split()[0]), 0)
    out = tmp_path / "run"  # 6 videos, 3 steps of 2 per epoch; the run stops inside epoch 1, after step 4
    pretrain.main(run_args(synthetic_root, out, "--data", str(train), "--max_steps", "4"))
    pretrain.main(run_args(synthetic_root, out, "--data", str(train)))  # resumes at step 3, the end of epoch 0
    removed = "removed 2 record(s) after step 3, which this run repeats"  # step 4's loss, the stopped run's probe
    assert f"{out / 'log.jsonl'}: {removed}" in capsys.readouterr().out
    records = read_log(out)
    assert sorted(r["step"] for r in records if "loss" in r) == [1, 2, 3, 4, 5, 6]  # step 4 once, not twice
    epochs = [r for r in records if "skipped_videos" in r]
    assert [r["epoch"] for r in epochs] == [0, 1]
    for record in epochs:  # two distinct bad files, however often they were drawn; each named in the log
        assert record["skipped_videos"] == 2 and record["skipped_draws"] >= 2
        assert record["skipped_files"] == sorted([str(tmp_path / "empty.mp4"), str(tmp_path / "missing.mp4")])


def test_a_resume_says_which_values_changed(synthetic_root, tmp_path, capsys):
    out = tmp_path / "run"
    pretrain.main(run_args(synthetic_root, out, "--max_steps", "2"))
    capsys.readouterr()
    pretrain.main(run_args(synthetic_root, out, "--base_lr", "0.04", "--batch_size", "1", "--epochs", "3",
                           "--max_steps", "3"))
    assert (f"resumed from {out / 'checkpoint.pt'} at step 2, epoch 1; changed on resume: batch_size 2 -> 1, "
            f"epochs 2 -> 3, base_lr 0.05 -> 0.04, max_steps 2 -> 3") in capsys.readouterr().out

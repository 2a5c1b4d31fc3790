"""Multi-process runs (2 gloo ranks on the CPU): collectives on the process group's device, one stop for
every rank on a non-finite loss, evaluation with empty shards and unreadable videos."""

import ast
import hashlib
import inspect
import json
import os
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import finetune
import engine
import pretrain
from data import VideoDataset
from classifier import VideoClassifier, evaluate
from test_finetune import NumberedViews, ReadNumber, small_config
from test_layout import PROJECT, project_files
from test_pretrain import free_port, read_log, run_args

COLLECTIVES = {"all_reduce", "all_gather", "all_gather_object", "all_gather_into_tensor", "broadcast",
               "broadcast_object_list", "reduce", "reduce_scatter", "reduce_scatter_tensor", "gather", "scatter",
               "all_to_all", "all_to_all_single"}


def test_every_collective_goes_through_the_device_helpers():
    """NCCL has no CPU backend: a collective given a CPU tensor crashes on GPUs only. So no code calls
    torch.distributed's collectives except `all_reduce` / `all_gather`, which move tensors first."""
    helpers = {(inspect.getsourcefile(f), f.__name__) for f in (engine.all_reduce, engine.all_gather)}
    direct = []
    for path in project_files():
        tree = ast.parse(path.read_text())
        for function in ast.walk(tree):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in
                        COLLECTIVES and isinstance(node.func.value, ast.Name) and node.func.value.id == "dist"
                        and (str(path), function.name) not in helpers):
                    direct.append(f"{path.relative_to(PROJECT)}:{node.lineno} in {function.name}")
    assert not direct, f"collectives outside engine.all_reduce/all_gather: {direct}"


def device_worker(rank, world, port, backend, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group(backend, rank=rank, world_size=world)
    device = engine.collective_device()
    if backend == "gloo":  # a real reduction as well, of a plain number and of a bool flag
        total = engine.all_reduce(rank + 1)
        flags = engine.all_reduce(torch.tensor(rank == 1).long())
        record = {"device": str(device), "total": int(total), "flags": int(flags)}
    else:  # "cuda:gloo" has no CPU backend, like NCCL; a CPU tensor given to it fails (checked here)
        try:
            dist.all_reduce(torch.zeros((), dtype=torch.long))
            error = ""
        except RuntimeError as e:
            error = str(e)
        record = {"device": str(device), "error": error}
    Path(out_dir, f"{backend.replace(':', '_')}{rank}.json").write_text(json.dumps(record))
    if world > 1:
        dist.barrier()
    dist.destroy_process_group()


def test_collective_device_follows_the_process_group(tmp_path):
    mp.spawn(device_worker, args=(2, free_port(), "gloo", str(tmp_path)), nprocs=2)
    for rank in range(2):
        assert json.loads((tmp_path / f"gloo{rank}.json").read_text()) == {"device": "cpu", "total": 3, "flags": 1}
    mp.spawn(device_worker, args=(1, free_port(), "cuda:gloo", str(tmp_path)), nprocs=1)
    record = json.loads((tmp_path / "cuda_gloo0.json").read_text())
    assert record["device"] == "cuda" and "No backend type associated with device type cpu" in record["error"]


# ----------------------------------------------------------------------------- one stop for every rank

def pretrain_worker(rank, world, port, argv, poison_step, out_dir):
    """pretrain.main as torchrun would start it; rank 1 feeds NaN videos at optimizer step `poison_step`."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    real_step, steps = pretrain.train_step, []

    def train_step(model, micro, *args, **kwargs):
        steps.append(None)
        if rank == 1 and len(steps) == poison_step:
            micro = [video * float("nan") for video in micro]  # a real NaN loss, and NaN gradients for DDP to share
        return real_step(model, micro, *args, **kwargs)

    run_pretrain_with(train_step, argv, out_dir, rank)


def run_pretrain_with(train_step, argv, out_dir, rank):
    """pretrain.main with `train_step` in place of its own; out_dir/outcome{rank}.txt: "finished", or the
    FloatingPointError that stopped the run."""
    pretrain.train_step = train_step
    try:
        pretrain.main(argv)
        outcome = "finished"
    except FloatingPointError as e:
        outcome = f"{type(e).__name__}: {e}"
        dist.barrier()  # both ranks stopped at the same check; tearing gloo down while the other still talks aborts
        dist.destroy_process_group()
    Path(out_dir, f"outcome{rank}.txt").write_text(outcome)


def test_a_nan_on_one_rank_stops_both_and_keeps_the_checkpoint(synthetic_root, tmp_path):
    # 4 videos, 2 of them unreadable: each rank gets 2 per epoch (one step of 2); the bad ones are replaced
    train = tmp_path / "train.csv"
    (tmp_path / "empty.mp4").write_bytes(b"")
    lines = (synthetic_root / "train.csv").read_text().splitlines()[:2]
    train.write_text("".join(f"{synthetic_root / line}\n" for line in lines) + "empty.mp4 0\nmissing.mp4 1\n")
    out = tmp_path / "run"
    argv = run_args(synthetic_root, out, "--data", str(train), "--epochs", "1")
    mp.spawn(pretrain_worker, args=(2, free_port(), argv, 0, str(tmp_path)), nprocs=2)
    assert [(tmp_path / f"outcome{r}.txt").read_text() for r in range(2)] == ["finished"] * 2
    skipped = [r["skipped_videos"] for r in read_log(out) if "skipped_videos" in r]
    assert skipped == [2]  # over both ranks: each unreadable video once, however often it was drawn
    ckpt = out / "checkpoint.pt"
    digest = hashlib.sha256(ckpt.read_bytes()).hexdigest()

    argv = run_args(synthetic_root, out, "--data", str(train), "--epochs", "3", "--log_every", "100")
    mp.spawn(pretrain_worker, args=(2, free_port(), argv, 1, str(tmp_path)), nprocs=2)  # epoch 1's only step
    outcomes = [(tmp_path / f"outcome{r}.txt").read_text() for r in range(2)]
    assert outcomes[0] == outcomes[1], outcomes  # the same error on both ranks, rank 0's own loss was finite
    assert outcomes[0].startswith("FloatingPointError: non-finite loss in epoch 1 in 1 of 2 process(es)")
    assert hashlib.sha256(ckpt.read_bytes()).hexdigest() == digest  # rank 0 did not save NaN weights


# ----------------------------------------------------------------------------- evaluation

def eval_worker(rank, world, port, dataset, model, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    probs, labels, left_out = evaluate(model, dataset, torch.device("cpu"), torch.autocast("cpu", enabled=False),
                                       batch_size=2, rank=rank, world=world)
    torch.save({"probs": probs, "labels": labels, "left_out": left_out}, os.path.join(out_dir, f"eval{rank}.pt"))
    dist.barrier()  # no rank tears gloo down while another still finishes a collective
    dist.destroy_process_group()


def spawn_evaluation(tmp_path, dataset, model):
    mp.spawn(eval_worker, args=(2, free_port(), dataset, model, str(tmp_path)), nprocs=2)
    return [torch.load(tmp_path / f"eval{r}.pt") for r in range(2)]


def test_evaluation_with_fewer_videos_than_ranks(tmp_path):
    out = spawn_evaluation(tmp_path, NumberedViews(1, views=2), ReadNumber())  # rank 1's shard is empty
    for r in range(2):
        assert out[r]["labels"].tolist() == [0] and out[r]["left_out"] == []
        assert out[r]["probs"].shape == (1, 3) and out[r]["probs"].argmax().item() == 0


def test_an_unreadable_validation_video_is_left_out_and_named(synthetic_root, tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    videos = [(str(empty), 3)] + [(str(synthetic_root / line.split()[0]), int(line.split()[1]))
                                  for line in (synthetic_root / "val.csv").read_text().splitlines()]
    cfg = small_config()
    dataset = VideoDataset(videos, num_frames=cfg.num_frames, stride=2, img_size=cfg.img_size, train=False,
                           test_clips=2, test_crops=1)
    torch.manual_seed(0)
    model = VideoClassifier(cfg, num_classes=4)
    out = spawn_evaluation(tmp_path, dataset, model)
    single = evaluate(model, VideoDataset(videos[1:], num_frames=cfg.num_frames, stride=2, img_size=cfg.img_size,
                                          train=False, test_clips=2, test_crops=1),
                      torch.device("cpu"), torch.autocast("cpu", enabled=False), batch_size=4)
    for r in range(2):
        assert out[r]["left_out"] == [str(empty)]
        assert out[r]["labels"].tolist() == [label for _, label in videos[1:]]  # each readable video once
        torch.testing.assert_close(out[r]["probs"], single[0])  # the same as evaluating only the readable ones


def test_finetune_reports_how_many_videos_it_left_out(synthetic_root, tmp_path, capsys):
    (tmp_path / "empty.mp4").write_bytes(b"")
    val = tmp_path / "val.csv"
    val.write_text("empty.mp4 0\n" + "".join(f"{synthetic_root / line}\n" for line in
                                             (synthetic_root / "val.csv").read_text().splitlines()))
    argv = ["--data", str(synthetic_root / "train.csv"), "--val", str(val), "--scratch", "--preset", "tiny",
            "--out_dir", str(tmp_path / "run"), "--batch_size", "2", "--stride", "2", "--num_workers", "0",
            "--epochs", "1", "--warmup_epochs", "0", "--max_steps", "1", "--test_clips", "1", "--test_crops", "1"]
    result = finetune.main(argv)["scratch"]
    printed = capsys.readouterr().out
    assert result["videos"] == 4 and result["left_out"] == [str(tmp_path / "empty.mp4")]
    assert f"4 videos; 1 unreadable video(s) left out: {tmp_path / 'empty.mp4'}" in printed


def resume_worker(rank, world, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    node_dir = Path(out_dir, f"node{rank}")  # out_dir on a disk of each node's own: only node 0 has the file
    node_dir.mkdir()
    if rank == 0:
        (node_dir / "checkpoint.pt").write_bytes(b"")
    try:
        engine.find_resume(None, node_dir / "checkpoint.pt")
        outcome = "resumed"
    except FileNotFoundError as e:
        outcome = str(e)
    Path(out_dir, f"resume{rank}.txt").write_text(outcome)
    dist.barrier()
    dist.destroy_process_group()


def test_processes_agree_on_resuming(tmp_path):
    mp.spawn(resume_worker, args=(2, free_port(), str(tmp_path)), nprocs=2)
    for rank in range(2):
        assert "seen by 1 of 2 processes" in (tmp_path / f"resume{rank}.txt").read_text()

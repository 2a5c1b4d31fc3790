"""bench.py: one real benchmarked configuration end to end, the FLOP count against torch's counter,
the host-read detector, and the data-pipeline measurements on a short generated video."""

import itertools
import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import av
import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from tools import bench
from adamae import AdaMAE, AdaMAEConfig
from engine import amp_setup, make_optimizer
from pretrain import train_step


def test_one_configuration_prints_the_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    # One thread: a second one only waits for a busy core when the machine runs other work.
    bench.main(["--configs", "adaptive:0.95", "--steps", "1", "--warmup", "0", "--batch", "2", "--threads", "1",
                "--json", str(out)])
    printed = capsys.readouterr().out
    assert "| mask | ρ | visible | GFLOP/clip | step (ms) | clips/s | peak RSS growth (GiB) |" in printed
    assert "| adaptive | 0.95 | 25/512 |" in printed
    result = json.loads(out.read_text())
    assert result["meta"]["preset"] == "tiny" and result["meta"]["batch"] == 2 and result["meta"]["dtype"] == "fp32"
    (row,) = result["rows"]
    assert row["mask_type"] == "adaptive" and row["num_visible"] == 25 and len(row["step_ms_each"]) == 1
    assert row["step_ms"] > 0 and row["clips_per_s"] == pytest.approx(2 / (row["step_ms"] / 1e3))
    assert row["train_gflop_per_clip"] == pytest.approx(bench.train_flops(AdaMAEConfig.preset("tiny")) / 1e9)
    assert row["tflops"] > 0 and row["mfu"] is None  # no peak is known for a CPU
    assert 0 < row["peak_memory_bytes"] < 4 * 2 ** 30
    assert row["host_reads"] == [] and row["cuda_syncs"] is None
    assert set(row["stage_share"]) == {"sampler", "encoder", "decoder", "loss", "other"}
    assert sum(row["stage_share"].values()) == pytest.approx(1)
    assert all(row["stage_ms"][name] > 0 for name in bench.STAGES)


@pytest.mark.parametrize("mask_type", ["adaptive", "tube", "frame"])
def test_flop_count_matches_torch_flop_counter(mask_type):
    """Forward per stage exactly, and forward + backward in total. The math attention backend turns
    attention into bmm calls the counter sees (the CPU's fused kernel has no FLOP formula)."""
    cfg = AdaMAEConfig.preset("tiny", mask_type=mask_type, mask_ratio=0.875 if mask_type == "frame" else 0.9,
                              encoder_depth=2)
    model, batch = AdaMAE(cfg), 2
    video = torch.randn(batch, 3, cfg.num_frames, cfg.img_size, cfg.img_size)
    with sdpa_kernel(SDPBackend.MATH):
        with FlopCounterMode(display=False) as forward:
            out = model(video)
        with FlopCounterMode(display=False) as step:
            bench.total_loss(model, model(video)).backward()
    counted = {name: sum(ops.values()) for name, ops in forward.get_flop_counts().items()}
    expected = bench.forward_flops(cfg)
    assert counted["AdaMAE.tokenizer"] == batch * expected["tokenizer"]
    assert counted.get("AdaMAE.sampler", 0) == batch * expected["sampler"]
    assert counted["AdaMAE.encoder"] == batch * expected["encoder"]
    decoder = sum(counted.get(f"AdaMAE.{m}", 0) for m in ("encoder_to_decoder", "decoder", "head"))
    assert decoder == batch * expected["decoder"]
    assert counted["Global"] == batch * sum(expected.values())
    assert out.recon_loss.isfinite() and out.sampling_loss.isfinite()
    assert sum(step.get_flop_counts()["Global"].values()) == batch * bench.train_flops(cfg)


def test_host_reads_sees_syncing_calls_and_none_in_the_training_step():
    x = torch.randn(8)
    calls = bench.host_reads(lambda: (x.sum().item(), x[x > 0], bool(x.any()), x.nonzero()))
    assert [c.split()[-1] for c in calls] == ["item", "__getitem__", "__bool__", "nonzero"]
    assert all(c.startswith("test_bench.py:") for c in calls)
    for mask_type in ("adaptive", "random", "tube", "frame"):
        cfg = AdaMAEConfig.preset("tiny", mask_type=mask_type, mask_ratio=0.875, img_size=32, encoder_depth=1,
                                  decoder_depth=1)
        model = AdaMAE(cfg)
        optimizer = make_optimizer(model, 1e-4, 0.05, (0.9, 0.95))
        autocast, scaler = amp_setup("fp32", torch.device("cpu"))
        video = torch.randn(2, 3, cfg.num_frames, cfg.img_size, cfg.img_size)
        assert bench.host_reads(lambda: train_step(model, [video], optimizer, scaler, autocast)) == [], mask_type


def test_parse_configs():
    assert bench.parse_configs("adaptive:0.95, tube:0.9") == [("adaptive", 0.95), ("tube", 0.9)]
    with pytest.raises(ValueError, match="mask_type:rho"):
        bench.parse_configs("patch:0.9")


def test_seek_speedup_and_loader_on_a_short_video(tmp_path):
    video = dict(width=160, height=120, fps=25, seconds=8)
    path = bench.make_video(tmp_path, seed=0, gop=12, **video)
    assert bench.make_video(tmp_path, seed=0, gop=12, **video) == path  # made once
    assert not list(tmp_path.glob("*.partial.mp4"))
    # It raises if seeking returns other frames. Its speed is bench's to report, not a test's to assert:
    # a busy machine turns these few milliseconds around.
    seek = bench.seek_speedup(path, num_frames=8, stride=2, starts=2, repeats=1)
    assert seek["seek_ms"] > 0 and seek["speedup"] == pytest.approx(seek["full_ms"] / seek["seek_ms"])
    assert bench.loader_clips_per_s([path], workers=1, repeat_aug=2, clips=4, img_size=32) > 0


def test_testsrc_video_keeps_its_keyframe_interval_and_paths_are_compared(tmp_path, monkeypatch):
    path = bench.make_testsrc_video(tmp_path, 64, 48, seconds=2, gop=8)
    assert bench.make_testsrc_video(tmp_path, 64, 48, seconds=2, gop=8) == path  # made once
    with av.open(str(path)) as container:
        keyframes = [p.is_keyframe for p in container.demux(video=0) if p.size]
    assert len(keyframes) == 50 and sum(keyframes) == 7  # every 8 frames, not lavfi's every-frame "I"
    monkeypatch.setattr(bench, "HD_VIDEOS", ((64, 48),))
    args = SimpleNamespace(video_dir=tmp_path, data_clips=2, img_size=32, seed=0)
    monkeypatch.setattr(bench, "make_testsrc_video", lambda folder, w, h: path)
    rows = bench.decoding_paths(args)
    assert [(r["decode"], r["threads"]) for r in rows] == list(bench.DECODE_PATHS)
    assert rows[0]["speedup"] == 1.0 and all(r["clips_per_s"] > 0 and r["worker_cpu_ms_per_clip"] > 0 for r in rows)


def test_prepared_copy_against_its_source_and_workers_per_gpu(tmp_path, monkeypatch):
    source = bench.make_testsrc_video(tmp_path, 96, 64, seconds=2, gop=8)
    monkeypatch.setattr(bench, "make_testsrc_video", lambda folder, w, h: source)
    args = SimpleNamespace(video_dir=tmp_path, data_clips=2, img_size=32, seed=0, feed="base:adaptive:0.95",
                           feed_mfu=0.4, feed_peak_tflops=989.0)
    result = bench.prepared_copy(args, short_side=32, gop=8)
    flops = bench.train_flops(AdaMAEConfig.preset("base", mask_type="adaptive", mask_ratio=0.95))
    assert result["train_clips_per_s"] == pytest.approx(989e12 * 0.4 / flops)  # ~1,500 clips/s on an H100
    assert [(r["video"], r["repeat_aug"], r["width"], r["height"]) for r in result["rows"]] == [
        ("source", 1, 96, 64), ("prepared", 1, 48, 32), ("source", 2, 96, 64), ("prepared", 2, 48, 32)]
    for row in result["rows"]:
        assert row["workers_per_gpu"] == math.ceil(result["train_clips_per_s"] / row["clips_per_s_per_worker"])
        assert row["worker_cpu_ms_per_clip"] > 0
    source_rate, prepared_rate = (row["clips_per_s_per_worker"] for row in result["rows"][:2])
    assert result["speedup"] == prepared_rate / source_rate
    assert "| prepared 48x32 | 1 |" in bench.prepared_report(result)


def table_numbers(text, header):
    """The numbers of each row of the markdown table under `header` in `text` (1280×720 and 1280x720 alike)."""
    lines = text[text.index(header):].splitlines()[2:]
    rows = itertools.takewhile(lambda line: line.startswith("|"), lines)
    return [re.findall(r"\d+(?:\.\d+)?", row) for row in rows]


def test_performance_doc_prepared_table_is_the_bench_json():
    """docs/performance.md's table of the prepared copy against its source holds bench's own numbers."""
    docs = Path(__file__).parent.parent / "docs"
    prepared = json.loads((docs / "results" / "bench_data.json").read_text())["prepared"]
    header = "| video | repeat_aug | clips/s per worker | worker CPU ms/clip | workers per GPU |"
    doc, report = (docs / "performance.md").read_text(), bench.prepared_report(prepared)
    assert table_numbers(doc, header) == table_numbers(report, header) and len(prepared["rows"]) == 4
    for number in (f"{prepared['train_gflop_per_clip']:.0f} GFLOP", f"so {prepared['train_clips_per_s']:.0f} clips/s",
                   f"{prepared['feed_mfu']:.0%} MFU of {prepared['feed_peak_tflops']:g} TFLOP/s",
                   f"{prepared['speedup']:.1f}× the clips/s", f"({prepared['cpu_speedup']:.1f}× less worker CPU"):
        assert number in doc

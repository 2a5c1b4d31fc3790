"""tools/prepare.py on small stand-ins of the public formats: SSv2's label JSONs and VP9 webm videos, a Kinetics
annotation CSV and H.264 clips (flat and in a class folder), with a broken video and a missing one; the re-encode,
an interrupted one that resumes, and the command line."""

import csv
import json
import multiprocessing
import subprocess
import sys

import av
import numpy as np
import pytest

from data import find_videos, read_list, video_length
from demo.synthetic import write_video
from tools import prepare, reencode

FRAMES = 12


def frames(seed, height=48, width=64):
    return np.random.default_rng(seed).integers(0, 256, (FRAMES, height, width, 3), dtype=np.uint8)


def write_webm(path, seed):
    """A VP9 webm, as SSv2 ships its videos."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libvpx-vp9", rate=12)
        stream.height, stream.width = 48, 64
        stream.pix_fmt, stream.options = "yuv420p", {"deadline": "realtime", "cpu-used": "8"}
        for frame in frames(seed):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


@pytest.fixture
def ssv2(tmp_path):
    """labels.json in id order unlike its key order; id 3 a broken file; id 4 has no file."""
    labels = {"Pushing something from left to right": "1", "Holding something next to something": "0",
              "Something falling like a rock": "2"}
    train = [dict(id="1", label="holding a cup next to a pen", template="Holding [something] next to [something]",
                  placeholders=["a cup", "a pen"]),
             dict(id="2", label="pushing a box from left to right",
                  template="Pushing [something] from left to right", placeholders=["a box"]),
             dict(id="3", label="a ball falling like a rock", template="[Something] falling like a rock",
                  placeholders=["a ball"])]
    validation = [dict(id="4", label="pushing a pen from left to right",
                       template="Pushing [something] from left to right", placeholders=["a pen"])]
    annotations = tmp_path / "labels"
    annotations.mkdir()
    for name, content in (("labels", labels), ("train", train), ("validation", validation)):
        (annotations / f"{name}.json").write_text(json.dumps(content))
    for seed in (1, 2):
        write_webm(tmp_path / "videos" / f"{seed}.webm", seed)
    (tmp_path / "videos" / "3.webm").write_bytes(b"\x1aE\xdf\xa3 not really a webm")
    return annotations, tmp_path / "videos"


@pytest.fixture
def kinetics(tmp_path):
    """K400's header (with its extra is_cc column); a clip in a class folder, one flat, one 0-byte, one missing."""
    rows = [("abseiling", "aaa", 10, 20, "train"), ("playing cards, poker", "bbb", 0, 10, "train"),
            ("abseiling", "ccc", 5, 15, "val"), ("playing cards, poker", "ddd", 30, 40, "val")]
    table = tmp_path / "train.csv"
    with open(table, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["label", "youtube_id", "time_start", "time_end", "split", "is_cc"])
        writer.writerows(row + (0,) for row in rows)
    videos = tmp_path / "k400"
    write_video(videos / "abseiling" / "aaa_000010_000020.mp4", frames(0, 64, 96))
    write_video(videos / "bbb_000000_000010.mp4", frames(1, 96, 64))
    (videos / "ccc_000005_000015.mp4").write_bytes(b"")
    return table, videos


def test_ssv2_lists_classes_and_report(ssv2, tmp_path):
    annotations, videos = ssv2
    out = tmp_path / "out"
    summary = prepare.main(["ssv2", "--annotations", str(annotations), "--videos", str(videos), "--out", str(out),
                            "--workers", "1"])
    assert (out / "classes.txt").read_text().splitlines() == [
        "Holding something next to something", "Pushing something from left to right", "Something falling like a rock"]
    assert read_list(out / "train.csv") == [(str(videos / "1.webm"), 0), (str(videos / "2.webm"), 1)]
    assert read_list(out / "train.csv")[0][0] == (out / "train.csv").read_text().split()[0]  # absolute: outside out
    assert (out / "val.csv").read_text() == ""
    assert (out / "missing.txt").read_text().splitlines() == [str(videos / "4.webm")]
    (broken,) = (out / "unreadable.txt").read_text().splitlines()
    assert broken.startswith(f"{videos / '3.webm'}\t") and len(broken.split("\t")[1]) > 0
    assert summary["counts"] == {"checked": 2, "unreadable": 1, "missing": 1}
    assert summary["lists"] == {"train.csv": 2, "val.csv": 0} and summary["out_bytes"] == 0


def test_ssv2_reencode_keeps_a_small_video_s_size_and_every_frame(ssv2, tmp_path):
    annotations, videos = ssv2
    out = tmp_path / "out"
    summary = prepare.main(["ssv2", "--annotations", str(annotations), "--videos", str(videos), "--out", str(out),
                            "--reencode", "--workers", "1"])
    assert (out / "train.csv").read_text() == "videos/1.mp4 0\nvideos/2.mp4 1\n"
    for path, _ in read_list(out / "train.csv"):  # VP9 webm -> H.264 MP4, 64x48 under the 320 short side: kept
        with av.open(path) as container:
            stream = container.streams.video[0]
            assert (stream.codec_context.name, stream.width, stream.height) == ("h264", 64, 48)
        assert video_length(path) == FRAMES
    assert summary["counts"] == {"encoded": 2, "unreadable": 1, "missing": 1}


def test_ssv2_template_that_names_no_class_is_an_error(ssv2):
    annotations, videos = ssv2
    entries = json.loads((annotations / "train.json").read_text())
    entries[1]["template"] = "Pushing [something] to the left"
    (annotations / "train.json").write_text(json.dumps(entries))
    with pytest.raises(ValueError, match=r"train\.json: entry 1 \(id 2\): template 'Pushing \[something\] to the le"):
        prepare.ssv2_splits(annotations, videos)


def keyframes(path):
    with av.open(str(path)) as container:
        return [i for i, p in enumerate(p for p in container.demux(video=0) if p.size) if p.is_keyframe]


def test_kinetics_reencode_in_two_processes(kinetics, tmp_path, monkeypatch, capsys):
    table, videos = kinetics
    out, pools, pool = tmp_path / "out", [], multiprocessing.Pool
    monkeypatch.setattr(multiprocessing, "Pool", lambda n: pools.append(n) or pool(n))
    summary = prepare.main(["kinetics", "--csv", str(table), "--videos", str(videos), "--out", str(out),
                            "--reencode", "--short_side", "32", "--gop", "5", "--workers", "2"])
    printed = capsys.readouterr()
    assert pools == [2] and "3/3" in printed.err.splitlines()[-1]  # the progress bar's last state: all 3 videos
    size = f"inputs {summary['in_bytes'] / 1e6:.1f} MB -> copies {summary['out_bytes'] / 1e6:.1f} MB"
    assert size in printed.out and f"{summary['seconds']:.1f} s, " in printed.out
    assert (out / "classes.txt").read_text().splitlines() == ["abseiling", "playing cards, poker"]
    assert (out / "train.csv").read_text() == ("videos/abseiling/aaa_000010_000020.mp4 0\n"
                                               "videos/bbb_000000_000010.mp4 1\n")
    assert (out / "val.csv").read_text() == ""
    assert (out / "missing.txt").read_text() == f"{videos / 'ddd_000030_000040.mp4'}\n"
    assert (out / "unreadable.txt").read_text().startswith(f"{videos / 'ccc_000005_000015.mp4'}\t")
    for (path, _), size in zip(read_list(out / "train.csv"), [(48, 32), (32, 48)]):  # short side 32, aspect kept
        with av.open(path) as container:
            stream = container.streams.video[0]
            assert (stream.width, stream.height) == size and not container.streams.audio
        assert video_length(path) == FRAMES
        starts = keyframes(path)  # x264 may add one at a scene cut (here: noise), never leaves a longer gap
        assert starts[0] == 0 and max(np.diff(starts + [FRAMES])) <= 5
    assert summary["counts"] == {"encoded": 2, "unreadable": 1, "missing": 1}
    assert 0 < summary["out_bytes"] < summary["in_bytes"] and summary["seconds"] > 0
    assert not list(out.rglob("*.partial"))


def test_scaled_size_never_upscales_and_stays_even():
    assert reencode.scaled_size(1280, 720, 320) == (568, 320)
    assert reencode.scaled_size(720, 1280, 320) == (320, 568)
    assert reencode.scaled_size(427, 240, 320) == (426, 240)  # SSv2's 240-pixel videos keep their size


def test_interrupted_reencode_resumes_without_redoing_finished_files(kinetics, tmp_path, monkeypatch):
    table, videos = kinetics
    write_video(videos / "ddd_000030_000040.mp4", frames(3, 64, 96))  # no clip missing this time
    args = ["kinetics", "--csv", str(table), "--videos", str(videos), "--out", str(tmp_path / "out"),
            "--reencode", "--short_side", "32", "--workers", "1"]
    transcode, calls, copies = reencode._transcode, [], tmp_path / "out" / "videos"

    def interrupted(*a):  # the second video is written in full, then Ctrl-C comes before the rename
        calls.append(transcode(*a))
        if len(calls) == 2:
            calls.append(sorted(p.name for p in copies.rglob("*") if p.is_file()))
            raise KeyboardInterrupt

    monkeypatch.setattr(reencode, "_transcode", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare.main(args)
    assert calls[2] == ["aaa_000010_000020.mp4", "bbb_000000_000010.mp4.partial"]  # not yet under its own name
    first, second = copies / "abseiling" / "aaa_000010_000020.mp4", copies / "bbb_000000_000010.mp4"
    assert first.is_file() and not second.exists() and not list(copies.rglob("*.partial"))
    before = first.stat()
    stale = copies / "ddd_000030_000040.mp4.partial"  # what a killed run (no clean-up) leaves
    stale.write_bytes(b"torn")
    assert [p for p, _ in find_videos(copies)] == [str(first)]  # a torn file is no video to a folder scan
    monkeypatch.setattr(reencode, "_transcode", transcode)
    summary = prepare.main(args[:-1] + ["2"])
    assert summary["counts"] == {"finished": 1, "encoded": 2, "unreadable": 1, "missing": 0}
    after = first.stat()
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (before.st_ino, before.st_mtime_ns, before.st_size)
    assert second.is_file() and not stale.exists()
    assert [video_length(p) for p, _ in read_list(tmp_path / "out" / "val.csv")] == [FRAMES]


def test_list_from_another_project_with_data_root(kinetics, tmp_path):
    _, videos = kinetics
    lst = tmp_path / "k400_pretrain.txt"
    lst.write_text("abseiling/aaa_000010_000020.mp4 0 -1\nbbb_000000_000010.mp4 0 -1\nnot_here.mp4 0 -1\n")
    summary = prepare.main(["list", "--list", str(lst), "--data_root", str(videos), "--out", str(tmp_path / "out"),
                            "--workers", "1"])
    assert read_list(tmp_path / "out" / "k400_pretrain.csv") == [
        (str(videos / "abseiling/aaa_000010_000020.mp4"), -1), (str(videos / "bbb_000000_000010.mp4"), -1)]
    assert summary["counts"] == {"checked": 2, "missing": 1} and not (tmp_path / "out" / "classes.txt").exists()


def test_kinetics_first_folder_with_a_clip_wins(kinetics, tmp_path):
    """CVDF ships replacements for corrupted clips in a folder of their own: named first, they win."""
    table, videos = kinetics
    replacement = tmp_path / "replacement" / "ccc_000005_000015.mp4"
    replacement.parent.mkdir()
    replacement.write_bytes(b"a good copy")
    splits, _ = prepare.kinetics_splits([table], [replacement.parent, videos])
    assert splits["val"] == [(replacement, 0), (replacement.parent / "ddd_000030_000040.mp4", 1)]
    assert splits["train"] == [(videos / "abseiling" / "aaa_000010_000020.mp4", 0),
                               (videos / "bbb_000000_000010.mp4", 1)]


def test_kinetics_csv_without_the_columns_names_them(tmp_path):
    table = tmp_path / "test.csv"
    table.write_text("youtube_id,time_start,time_end,split\nxyz,0,10,test\n")
    with pytest.raises(ValueError, match=r"test\.csv: header .* lacks \['label'\]"):
        prepare.kinetics_splits([table], [tmp_path])


def test_help_runs():
    done = subprocess.run([sys.executable, "-m", "tools.prepare", "--help"], capture_output=True, text=True, check=True)
    assert "ssv2" in done.stdout and "kinetics" in done.stdout

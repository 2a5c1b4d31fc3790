"""Prepare a public video data set for training: its annotations -> list files, optionally a re-encoded copy.

    python -m tools.prepare ssv2 --annotations labels --videos 20bn-something-something-v2 --out data/ssv2
    python -m tools.prepare kinetics --csv train.csv val.csv --videos k400 --out data/k400 --reencode
    python -m tools.prepare list --list k400_pretrain.txt --data_root /datasets --out data/k400_v2

Owns the step from a data set as published to the lists that data.py reads (docs/data.md: From a public data set):
  * annotations  `ssv2_splits`: labels.json (template -> class id) and train.json / validation.json
                 (entries whose id names <id>.webm and whose template has [something] where labels.json
                 has something); `kinetics_splits`: the annotation CSVs (label,youtube_id,time_start,
                 time_end,split), clips named <youtube_id>_<start:06d>_<end:06d> found anywhere under
                 the --videos folders; `list_splits`: a list file in any form `data.read_list` reads (--data_root)
  * videos       `process`: check that a video's first frame decodes, or re-encode it (`reencode`: short
                 side --short_side, never upscaled; H.264, a keyframe every --gop frames, no audio; written
                 under <name>.partial, then renamed); `run_all`: --workers processes behind a progress
                 bar. A finished output is skipped, so an interrupted run resumes where it stopped.
  * outputs      one list per split, <split>.csv (`path label`, single space; `path 0 -1` without a
                 label), readable videos only; classes.txt (line k names class k); missing.txt (named by
                 the annotations, no file) and unreadable.txt (`path<TAB>reason`); a summary of counts,
                 sizes and time.
"""

import argparse
import csv
import json
import multiprocessing
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import NamedTuple

from tqdm import tqdm

from data import find_videos, read_frames, read_list
from tools.reencode import GOP, SHORT_SIDE, reencode

SPLIT_NAMES = {"train": "train", "validation": "val"}  # SSv2 annotation file -> list name
KINETICS_COLUMNS = ("label", "youtube_id", "time_start", "time_end")


# ----------------------------------------------------------------------------- annotations -> {split: [(video, label)]}

def _ssv2_file(folder, name):
    """labels.json / train.json / validation.json, or the same with the something-something-v2- prefix."""
    for candidate in (Path(folder) / f"{name}.json", Path(folder) / f"something-something-v2-{name}.json"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{folder}: neither {name}.json nor something-something-v2-{name}.json")


def ssv2_classes(labels_file):
    """labels.json ({template without brackets: "id"}) -> {template: id} and the names in id order."""
    ids = {template: int(i) for template, i in json.loads(Path(labels_file).read_text()).items()}
    if sorted(ids.values()) != list(range(len(ids))):
        raise ValueError(f"{labels_file}: class ids are not 0..{len(ids) - 1}: {sorted(ids.values())}")
    return ids, sorted(ids, key=ids.get)


def ssv2_splits(annotations, videos):
    """SSv2's annotation folder and video folder -> ({"train": [...], "val": [...]}, class names)."""
    labels_file = _ssv2_file(annotations, "labels")
    ids, classes = ssv2_classes(labels_file)
    splits = {}
    for name, split in SPLIT_NAMES.items():
        path = _ssv2_file(annotations, name)
        splits[split] = []
        for k, entry in enumerate(json.loads(path.read_text())):
            template = entry["template"].replace("[", "").replace("]", "")
            if template not in ids:
                raise ValueError(f"{path}: entry {k} (id {entry['id']}): template {entry['template']!r} "
                                 f"is not a class of {labels_file}")
            splits[split].append((Path(videos) / f"{entry['id']}.webm", ids[template]))
    return splits, classes


def _kinetics_rows(path):
    """One annotation CSV -> [(line number, row)], its header checked."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        absent = [c for c in (*KINETICS_COLUMNS, "split") if c not in (reader.fieldnames or ())]
        if absent:
            raise ValueError(f"{path}: header {reader.fieldnames} lacks {absent} "
                             f"(expected {','.join(KINETICS_COLUMNS)},split)")
        return [(reader.line_num, row) for row in reader]


def kinetics_clip_name(row, where):
    """<youtube_id>_<start:06d>_<end:06d>, the name the common downloaders give a clip."""
    try:
        start, end = int(float(row["time_start"])), int(float(row["time_end"]))
    except ValueError as e:
        raise ValueError(f"{where}: time_start/time_end must be seconds, got {row['time_start']!r}, "
                         f"{row['time_end']!r}") from e
    return f"{row['youtube_id']}_{start:06d}_{end:06d}"


def kinetics_splits(csv_files, video_folders):
    """Kinetics annotation CSVs and the folders of downloaded clips (each flat or one folder per class;
    a clip in several: the first folder's, e.g. CVDF's replacements for corrupted clips before the rest) ->
    ({split column value: [...]}, class names sorted, as usual for Kinetics). A clip found nowhere gets the
    path <first folder>/<name>.mp4, which does not exist: the report lists it as missing."""
    found = {}
    for folder in video_folders:
        for path, _ in find_videos(folder):
            found.setdefault(Path(path).stem, Path(path))
    rows = [(f"{path}:{line}", row) for path in csv_files for line, row in _kinetics_rows(path)]
    classes = sorted({row["label"] for _, row in rows})
    splits = {}
    for where, row in rows:
        name = kinetics_clip_name(row, where)
        video = found.get(name, Path(video_folders[0]) / f"{name}.mp4")
        splits.setdefault(row["split"], []).append((video, classes.index(row["label"])))
    return splits, classes


def list_splits(list_file, data_root=None):
    """A list file from another project -> ({its name: [...]}, None: a list names no classes)."""
    samples = [(Path(os.path.abspath(p)), label) for p, label in read_list(list_file, data_root)]
    return {Path(list_file).stem: samples}, None


# ----------------------------------------------------------------------------- videos: check or re-encode

class Job(NamedTuple):
    source: Path
    output: Path | None  # None: only check that the source decodes
    short_side: int
    gop: int


def process(job):
    """One video -> {source, output, status, reason, in_bytes, out_bytes}; status is "checked",
    "encoded", "finished" (an output from an earlier run, kept) or "unreadable" (with the reason)."""
    result = dict(source=str(job.source), output=str(job.output) if job.output else None, status=None, reason=None,
                  in_bytes=job.source.stat().st_size, out_bytes=0)
    try:
        if job.output is None:
            read_frames(job.source, [0], seek=False)
            result["status"] = "checked"
        elif job.output.exists():
            result["status"] = "finished"
        else:
            reencode(job.source, job.output, job.short_side, job.gop)
            result["status"] = "encoded"
    except Exception as e:  # any failure marks this video broken, not the run
        return {**result, "status": "unreadable", "reason": str(e)}
    if job.output is not None:
        result["out_bytes"] = job.output.stat().st_size
    return result


def run_all(jobs, workers):
    """[process(job)] in `workers` processes (1: this one), in completion order, behind a progress bar."""
    bar = dict(total=len(jobs), unit="video", file=sys.stderr, smoothing=0.05)
    if workers <= 1 or len(jobs) <= 1:
        return [process(job) for job in tqdm(jobs, **bar)]
    with multiprocessing.Pool(workers) as pool:
        return list(tqdm(pool.imap_unordered(process, jobs), **bar))


# ----------------------------------------------------------------------------- outputs

def _list_path(video, out):
    """A video as a list names it: relative to the list's folder when inside it, else absolute."""
    relative = os.path.relpath(os.path.abspath(video), os.path.abspath(out))
    return relative if not relative.startswith("..") else os.path.abspath(video)


def write_lists(out, splits, usable):
    """<split>.csv per split, the videos in `usable` ({source: path to list}) only -> {file name: lines}."""
    written = {}
    for split, samples in splits.items():
        lines = [f"{_list_path(usable[str(v)], out)} {label if label >= 0 else '0 -1'}"
                 for v, label in samples if str(v) in usable]
        (out / f"{split}.csv").write_text("".join(line + "\n" for line in lines))
        written[f"{split}.csv"] = len(lines)
    return written


def _copy_path(source, root, out):
    """Where the re-encoded copy of `source` goes: <out>/videos/, the layout under `root` kept, .mp4."""
    return out / "videos" / Path(os.path.relpath(os.path.abspath(source), root)).with_suffix(".mp4")


def prepare(splits, classes, out, reencode_videos=False, short_side=SHORT_SIDE, gop=GOP, workers=1):
    """Check (or re-encode into <out>/videos/) every video the splits name; write the lists, classes.txt,
    missing.txt and unreadable.txt into `out`; print and return a summary."""
    out, start = Path(out), time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    sources = list(dict.fromkeys(Path(v) for samples in splits.values() for v, _ in samples))
    if not sources:
        raise ValueError(f"the annotations name no video (splits: {', '.join(splits) or 'none'})")
    root = os.path.commonpath([os.path.dirname(os.path.abspath(v)) for v in sources])
    missing = [v for v in sources if not v.is_file()]
    jobs = [Job(v, _copy_path(v, root, out) if reencode_videos else None, short_side, gop)
            for v in sources if v.is_file()]
    results = run_all(jobs, workers)
    broken = sorted((r["source"], r["reason"]) for r in results if r["status"] == "unreadable")
    usable = {r["source"]: r["output"] or r["source"] for r in results if r["status"] != "unreadable"}
    written = write_lists(out, splits, usable)
    if classes is not None:
        (out / "classes.txt").write_text("".join(name + "\n" for name in classes))
    (out / "missing.txt").write_text("".join(f"{v}\n" for v in missing))
    (out / "unreadable.txt").write_text("".join(f"{v}\t{reason}\n" for v, reason in broken))
    summary = dict(counts={**Counter(r["status"] for r in results), "missing": len(missing)}, lists=written,
                   classes=None if classes is None else len(classes), seconds=time.perf_counter() - start,
                   in_bytes=sum(r["in_bytes"] for r in results), out_bytes=sum(r["out_bytes"] for r in results))
    print(summary_text(summary, out), flush=True)
    return summary


def summary_text(summary, out):
    """The summary as printed: lists and their lengths, videos per status, sizes, time."""
    lists = ", ".join(f"{name} ({n} videos)" for name, n in summary["lists"].items())
    classes = f", classes.txt ({summary['classes']} classes)" if summary["classes"] is not None else ""
    counts = ", ".join(f"{n} {status}" for status, n in sorted(summary["counts"].items()))
    size = f"inputs {summary['in_bytes'] / 1e6:.1f} MB"
    if summary["out_bytes"]:
        size += f" -> copies {summary['out_bytes'] / 1e6:.1f} MB ({summary['out_bytes'] / summary['in_bytes']:.0%})"
    seconds, opened = summary["seconds"], sum(n for status, n in summary["counts"].items() if status != "missing")
    return (f"{out}: {lists}{classes}\nvideos: {counts} (missing.txt and unreadable.txt name them)\n"
            f"{size}; {seconds:.1f} s, {opened / seconds:.1f} videos/s")


# ----------------------------------------------------------------------------- command line

def get_parser():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", required=True, type=Path, help="folder of the lists, classes.txt, the report")
    common.add_argument("--reencode", action="store_true",
                        help="also re-encode every video into <out>/videos (the lists then name the copies)")
    common.add_argument("--short_side", type=int, default=SHORT_SIDE, help="short side of the copies (never upscaled)")
    common.add_argument("--gop", type=int, default=GOP, help="keyframe interval of the copies, frames")
    common.add_argument("--workers", type=int, default=os.cpu_count(), help="parallel processes")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    ssv2 = commands.add_parser("ssv2", parents=[common], help="Something-Something v2: labels.json, train.json, "
                               "validation.json and the <id>.webm videos")
    ssv2.add_argument("--annotations", required=True, type=Path, help="folder of the label JSON files")
    ssv2.add_argument("--videos", required=True, type=Path, help="folder of the <id>.webm files")
    kinetics = commands.add_parser("kinetics", parents=[common], help="Kinetics: annotation CSVs and the clips")
    kinetics.add_argument("--csv", required=True, type=Path, nargs="+", help="annotation CSVs (train, val)")
    kinetics.add_argument("--videos", required=True, type=Path, nargs="+",
                          help="folders of the clips, flat or per class, searched recursively; a clip in several: "
                          "the first folder's")
    lists = commands.add_parser("list", parents=[common], help="a list file from another project")
    lists.add_argument("--list", required=True, type=Path, help="`path label` or `path 0 -1` lines")
    lists.add_argument("--data_root", type=Path, help="prefix of the list's relative paths")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    if args.command == "ssv2":
        splits, classes = ssv2_splits(args.annotations, args.videos)
    elif args.command == "kinetics":
        splits, classes = kinetics_splits(args.csv, args.videos)
    else:
        splits, classes = list_splits(args.list, args.data_root)
    return prepare(splits, classes, args.out, args.reencode, args.short_side, args.gop, args.workers)


if __name__ == "__main__":
    main()

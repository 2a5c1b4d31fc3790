"""Frozen features of a video set: one row per video, the encoder's mean-pooled output averaged over its views.

    python -m tools.features feats.npy --data videos/ --pretrained runs/pretrain/checkpoint.pt
    torchrun --nproc_per_node=8 -m tools.features feats.npy --data k400_val.csv --resume best.pt --per_clip

Writes OUT.npy ((videos, D), or (videos, views, D) with --per_clip) and OUT.txt (the video paths, one per line,
in the same order). Rows of unreadable videos are NaN. Under torchrun every process encodes its shard.
"""

from pathlib import Path

import numpy as np

from classifier import encode_views
from data import load_samples
from engine import finish, make_parser, setup_distributed
from tools.encoder import ENCODER_OPTIONS, ENCODER_TYPES, autocast_and_batch, load_encoder_for, views_of

OPTIONS = {
    "data": (None, "a list file, a folder or one video (required)"),
    "per_clip": (False, "every view (clip x crop) of a video: (videos, views, dim) instead of the mean"),
    **ENCODER_OPTIONS,
}


def get_args(argv=None):
    parser = make_parser(__doc__, OPTIONS, {"data": str, **ENCODER_TYPES})
    parser.add_argument("out", help="the .npy to write (the paths go to the same name .txt)")
    args = parser.parse_args(argv)
    if args.data is None:
        parser.error("--data is required: a list file, a folder or one video")
    return args


def write_features(args, rank, world, device):
    """One row per video of --data to OUT.npy, the paths to OUT.txt; returns the features."""
    model, source = load_encoder_for(args, device)
    samples = load_samples(args.data)
    autocast, batch = autocast_and_batch(args, device)
    feats = encode_views(model, views_of(samples, model.cfg, args), device, autocast, batch, args.num_workers, rank,
                         world, args.per_clip)[0]
    out = Path(args.out)
    out = out if out.suffix == ".npy" else out.with_name(out.name + ".npy")  # as np.save would name it
    if rank == 0:
        out.parent.mkdir(parents=True, exist_ok=True)
        np.save(out, feats.cpu().numpy())
        out.with_suffix(".txt").write_text("".join(f"{path}\n" for path, _ in samples))
        print(f"features of {len(samples)} videos from {source}: {out} {tuple(feats.shape)}, "
              f"paths {out.with_suffix('.txt')}")
    return feats


def main(argv=None):
    args = get_args(argv)
    rank, world, device = setup_distributed()
    feats = write_features(args, rank, world, device)
    return finish(feats, world)


if __name__ == "__main__":
    main()

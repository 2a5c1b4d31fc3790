"""See what the sampler sees: the paper's Fig. 4 (and Fig. 1, mask types side by side) for a video,
from a checkpoint of pretrain.py, the authors' released weights or a Hugging Face VideoMAEForPreTraining
folder. The pictures are drawn by figures.py (what each row shows is written there and in docs/method.md).

    python -m tools.visualize --checkpoint runs/pretrain/checkpoint.pt --video clip.mp4
    python -m tools.visualize --checkpoint runs/pretrain/checkpoint.pt --list runs/pretrain/synthetic/val.csv \
        --index 0 --compare random,tube,frame,adaptive
"""

from pathlib import Path

import torch

from adamae import AdaMAE, AdaMAEConfig
from engine import load_checkpoint_file
from weights import huggingface
from weights.convert import load_reference_pretrained, require_kind
from weights.shapes import check_shapes, expected_shapes
from data import VideoDataset
from engine import make_parser
from pictures.figures import block_name, render, save_blocks
from sampler import BASELINE_MASKS, MASK_TYPES

# ----------------------------------------------------------------------------- command line
# name: (default, help). argparse is generated from this table, as in pretrain.py.
DEFAULTS = {
    # what to draw
    "checkpoint": (None, "pretrain.py checkpoint, an authors' released pre-training checkpoint, or a Hugging Face "
                         "VideoMAEForPreTraining folder (required)"),
    "video": (None, "a video file (or give --list)"),
    "list": (None, "a VideoMAE list file ('path label' per line); --index picks the line"),
    "index": (0, "line of --list to draw, from 0"),
    "stride": (4, "temporal stride between sampled frames (K400: 4; SSv2 in the reference: 2)"),
    # which masks
    "mask_type": (None, "adaptive | random | tube | frame; default: the checkpoint's own"),
    "compare": (None, "comma-separated mask types, one block each (paper Fig. 1), e.g. random,tube,frame,adaptive"),
    "mask_ratio": (None, "rho for every block; default: the checkpoint's"),
    "seed": (0, "seeds the mask draws"),
    "preset": ("base", "AdaMAEConfig preset of an authors' checkpoint (it stores no config of ours)"),
    # output
    "out": ("out/visualize", "folder for NAME_MASKTYPES.png and the animation"),
    "animation": ("gif", "gif | mp4 | none"),
    "fps": (4, "animation frames per second"),
}
TYPES = {"checkpoint": str, "video": str, "list": str, "mask_type": str, "compare": str, "mask_ratio": float}


def parse_args(argv=None):
    parser = make_parser(__doc__, DEFAULTS, TYPES)
    args = parser.parse_args(argv)
    if args.checkpoint is None or (args.video is None) == (args.list is None):
        parser.error("give --checkpoint and exactly one of --video, --list")
    if args.mask_type and args.compare:
        parser.error("give --mask_type or --compare, not both")
    chosen = args.compare or args.mask_type
    args.mask_types = [t.strip() for t in chosen.split(",")] if chosen else []
    unknown = [t for t in args.mask_types if t not in MASK_TYPES]
    if unknown:
        parser.error(f"unknown mask types {unknown}; choose from {', '.join(MASK_TYPES)}")
    if args.animation not in ("gif", "mp4", "none"):
        parser.error(f"--animation must be gif, mp4 or none, got {args.animation!r}")
    if args.preset not in AdaMAEConfig.PRESETS:
        parser.error(f"--preset must be one of {sorted(AdaMAEConfig.PRESETS)}")
    return args


def load_model(path, preset="base", mask_ratio=None):
    """A checkpoint of pretrain.py (it stores its config), an authors' pre-training checkpoint (config =
    `preset`, see convert.py) or a Hugging Face VideoMAEForPreTraining folder (a tube model: the layout holds
    no sampler) -> AdaMAE in eval mode; mask_ratio overrides rho."""
    if Path(path).is_dir():
        cfg, state = huggingface.read_pretrained(path, mask_ratio=mask_ratio)
        check_shapes(state, expected_shapes(cfg), path, "model to draw: VideoMAEForPreTraining (it needs the decoder)")
        model = AdaMAE(cfg)
        model.load_state_dict(state)
        return model.eval()
    checkpoint = require_kind(path, load_checkpoint_file(path), ("pretrain.py", "adamae", "videomae"),
                              "tools.visualize --checkpoint")
    overrides = {} if mask_ratio is None else {"mask_ratio": mask_ratio}
    if "config" not in checkpoint:
        return load_reference_pretrained(checkpoint, preset, **overrides)
    model = AdaMAE(AdaMAEConfig.from_dict({**checkpoint["config"], **overrides}))
    model.load_state_dict(checkpoint["model"])
    return model.eval()


def mask_for(model, mask_type):
    """None when the model draws this type itself (its own type), else a baseline mask (1, N)."""
    cfg = model.cfg
    if mask_type == cfg.mask_type:
        return None
    if mask_type == "adaptive":
        raise ValueError(f"this model was trained with {cfg.mask_type!r} masking: "
                         "it has no sampler to draw adaptive masks")
    return BASELINE_MASKS[mask_type](1, cfg.grid, cfg.mask_ratio)


def read_clip(cfg, video=None, list_file=None, index=0, stride=4):
    """The evaluation clip (centre in time, short side resized, centre crop) as (1, 3, T, S, S)."""
    dataset = VideoDataset([(video, -1)] if video else list_file, cfg.num_frames, stride, cfg.img_size, train=False)
    if not 0 <= index < len(dataset):
        raise ValueError(f"--index {index} is out of range: {list_file} lists {len(dataset)} videos")
    clip, _, unreadable = dataset[index]
    if unreadable:
        raise ValueError(f"{dataset.samples[index][0]}: unreadable video (see the warning above)")
    return clip[None]


def main(argv=None):
    args = parse_args(argv)
    model = load_model(args.checkpoint, args.preset, args.mask_ratio)
    cfg = model.cfg
    video = read_clip(cfg, args.video, args.list, args.index, args.stride)
    types = args.mask_types or [cfg.mask_type]
    torch.manual_seed(args.seed)
    blocks = [render(model, video, mask_for(model, t)) for t in types]
    name = Path(args.video).stem if args.video else f"{Path(args.list).stem}_{args.index}"
    png = Path(args.out) / f"{name}_{'-'.join(types)}.png"
    anim = None if args.animation == "none" else png.with_suffix("." + args.animation)
    save_blocks(blocks, [block_name(cfg, t) for t in types], cfg.tubelet_size, png, anim, args.fps)
    print(f"{cfg.num_tokens} tokens, rho = {cfg.mask_ratio}; blocks top to bottom: {', '.join(types)}")
    for path in (png, anim):
        if path is not None:
            print(f"wrote {path}")
    return png, anim


if __name__ == "__main__":
    main()

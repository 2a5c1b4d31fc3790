"""What the encoder tools share (features, probe, predict): their common options, where the encoder and
the videos come from, and the class names file. The encoder is read from a checkpoint and never trained here."""

from pathlib import Path

import torch

from classifier import frozen_encoder, views_dataset
from engine import amp_setup

# name: (default, help), the options every encoder tool takes; each tool adds its own.
ENCODER_OPTIONS = {
    "pretrained": (None, "pre-training checkpoint (pretrain.py's, the authors' AdaMAE file, VideoMAE's, or a Hugging "
                         "Face VideoMAE folder): its encoder"),
    "resume": (None, "fine-tuned classifier (finetune.py's best.pt or checkpoint.pt, a VideoMAE/AdaMAE one, or a "
                     "Hugging Face VideoMAEForVideoClassification folder): its encoder"),
    "scratch": (False, "random weights drawn with --seed: the architecture of --pretrained when given, else --preset"),
    "preset": ("tiny", "AdaMAEConfig preset for --scratch without --pretrained"),
    "num_frames": (None, "frames per clip; default: the checkpoint's (another length: the sinusoid table follows "
                         "the token grid)"),
    "img_size": (None, "crop side in pixels; default: the checkpoint's"),
    "sampling": ("dense", "dense (frames at a fixed stride) | segment (one frame per segment)"),
    "stride": (4, "temporal stride of dense sampling"),
    "test_clips": (5, "views per video: temporal clips, spread evenly"),
    "test_crops": (3, "views per video: spatial crops per clip along the long side"),
    "batch_size": (8, "about this many clips per forward"),
    "num_workers": (2, "DataLoader processes"),
    "dtype": (None, "bf16 | fp16 | fp32; default: bf16 on CUDA when supported, else fp32"),
    "seed": (0, "random seed"),
}
ENCODER_TYPES = {"pretrained": str, "resume": str, "dtype": str, "num_frames": int, "img_size": int}


def load_encoder_for(args, device, seed=None):
    """The frozen encoder the options name and where it comes from (classifier.frozen_encoder)."""
    return frozen_encoder(device, resume=args.resume, pretrained=args.pretrained, scratch=args.scratch,
                          preset=args.preset, seed=args.seed if seed is None else seed,
                          num_frames=args.num_frames, img_size=args.img_size)


def views_of(source, cfg, args):
    """Every video of `source` as its test_clips x test_crops views (classifier.views_dataset)."""
    return views_dataset(source, cfg, args.stride, args.sampling, args.test_clips, args.test_crops)


def autocast_and_batch(args, device):
    """(autocast context, videos per forward: about --batch_size clips)."""
    return amp_setup(args.dtype, device)[0], max(1, args.batch_size // (args.test_clips * args.test_crops))


def read_class_names(path, num_classes):
    """One class name per line, line i = class i; the count must match the classifier's."""
    names = Path(path).read_text().splitlines()
    if len(names) != num_classes:
        raise ValueError(f"{path}: {len(names)} class names for a classifier of {num_classes} classes "
                         f"(one name per line, line i = class i)")
    return names


def default_device():
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")

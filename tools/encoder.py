"""What the encoder tools share (features, probe, predict): their common options and where the encoder and
the videos come from. The encoder is read from a checkpoint and never trained here."""

import torch

from classifier import frozen_encoder, views_dataset
from engine import amp_setup

# name: (default, help), the options every encoder tool takes; each tool adds its own.
ENCODER_OPTIONS = {
    "pretrained": (None, "pre-training checkpoint (pretrain.py's, the authors' AdaMAE file or VideoMAE's): its encoder"),
    "resume": (None, "fine-tuned classifier (finetune.py's best.pt or checkpoint.pt, or a VideoMAE/AdaMAE one): its "
                     "encoder"),
    "scratch": (False, "random weights drawn with --seed: the architecture of --pretrained when given, else --preset"),
    "preset": ("tiny", "AdaMAEConfig preset for --scratch without --pretrained"),
    "sampling": ("dense", "dense (frames at a fixed stride) | segment (one frame per segment)"),
    "stride": (4, "temporal stride of dense sampling"),
    "test_clips": (5, "views per video: temporal clips, spread evenly"),
    "test_crops": (3, "views per video: spatial crops per clip along the long side"),
    "batch_size": (8, "about this many clips per forward"),
    "num_workers": (2, "DataLoader processes"),
    "dtype": (None, "bf16 | fp16 | fp32; default: bf16 on CUDA when supported, else fp32"),
    "seed": (0, "random seed"),
}
ENCODER_TYPES = {"pretrained": str, "resume": str, "dtype": str}


def load_encoder_for(args, device, seed=None):
    """The frozen encoder the options name and where it comes from (classifier.frozen_encoder)."""
    return frozen_encoder(device, resume=args.resume, pretrained=args.pretrained, scratch=args.scratch,
                          preset=args.preset, seed=args.seed if seed is None else seed)


def views_of(source, cfg, args):
    """Every video of `source` as its test_clips x test_crops views (classifier.views_dataset)."""
    return views_dataset(source, cfg, args.stride, args.sampling, args.test_clips, args.test_crops)


def autocast_and_batch(args, device):
    """(autocast context, videos per forward: about --batch_size clips)."""
    return amp_setup(args.dtype, device)[0], max(1, args.batch_size // (args.test_clips * args.test_crops))


def default_device():
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")

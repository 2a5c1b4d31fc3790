"""Checkpoints from disk: the project's one safe loader, and the authors' released weights (SPEC B).

  * `load_checkpoint_file`        torch.load with weights_only=True; allows exactly argparse.Namespace
                                  (the `args` entry of the authors' checkpoints) besides tensors and
                                  plain containers; anything else is refused with a clear message
  * `reference_to_adamae`         authors' pre-training keys (VideoMAE fork) -> `adamae.AdaMAE` keys
  * `load_reference_pretrained`   a released pre-training checkpoint -> `AdaMAE`, loaded strictly
  * `reference_to_classifier`     fine-tuned VideoMAE/AdaMAE classifier keys -> our classifier keys

The only change of values: the reference stores separate `attn.q_bias` / `attn.v_bias` and no k
bias; we store one `attn.qkv.bias` = cat(q_bias, 0, v_bias). A k bias adds the same amount to every
logit of a query row, which softmax cancels, so zeros reproduce the reference exactly.
"""

import argparse
import os
import pickle

import torch

from adamae import AdaMAE, AdaMAEConfig

# (reference prefix, our prefix), first match wins. The sampler is the reference's
# `encoder.get_token_probs` = Sequential(Block, Linear, Flatten) plus `encoder.pos_embed_probs`.
PRETRAIN_PREFIXES = [
    ("encoder.patch_embed.proj.", "tokenizer.proj."),
    ("encoder.pos_embed_probs", "sampler.pos_embed"),
    ("encoder.get_token_probs.0.", "sampler.blocks.0."),
    ("encoder.get_token_probs.1.", "sampler.head."),
    ("encoder.blocks.", "encoder.blocks."),
    ("encoder.norm.", "encoder.norm."),
    ("encoder_to_decoder.", "encoder_to_decoder."),
    ("mask_token", "mask_token"),
    ("decoder.blocks.", "decoder.blocks."),
    ("decoder.norm.", "decoder.norm."),
    ("decoder.head.", "head."),
]

# Fine-tuned classifiers (mean pooling): the same blocks without the `encoder.` prefix, no final
# encoder norm, then fc_norm and the class head.
CLASSIFIER_PREFIXES = [
    ("patch_embed.proj.", "tokenizer.proj."),
    ("blocks.", "encoder.blocks."),
    ("fc_norm.", "fc_norm."),
    ("head.", "head."),
]

# Reference `args` fields that fix the shape or masking of the model -> AdaMAEConfig fields.
REFERENCE_ARGS = {"mask_ratio": "mask_ratio", "decoder_depth": "decoder_depth",
                  "num_frames": "num_frames", "input_size": "img_size"}


def load_checkpoint_file(path):
    """torch.load(path) on the CPU with weights_only=True: tensors, plain containers and values,
    and argparse.Namespace only. Returns whatever the file holds (usually a dict)."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message is long; its last part names the object it refused.
        reason = str(e).split("WeightsUnpickler error:")[-1].split(" Please use")[0].strip()
        raise ValueError(
            f"{path}: torch.load(weights_only=True) refused this checkpoint: it holds an object other than "
            f"tensors, plain containers and argparse.Namespace ({reason}). Unpickling such objects can run "
            f"arbitrary code; if you trust the file, re-save just its tensors.") from e
    except (RuntimeError, EOFError) as e:  # a truncated or corrupt file (e.g. a copy cut short)
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({e})") from e


def state_dict_of(checkpoint):
    """The weights inside a checkpoint dict ('model' or 'module' entry), or the dict itself."""
    for key in ("model", "module"):
        if isinstance(checkpoint.get(key), dict):
            return checkpoint[key]
    return checkpoint


def rename(state_dict, prefixes):
    """Apply the first matching (old, new) prefix to every key; unknown keys are an error."""
    out, unknown = {}, []
    for key, value in state_dict.items():
        match = next(((old, new) for old, new in prefixes if key.startswith(old)), None)
        if match is None:
            unknown.append(key)
        else:
            out[match[1] + key[len(match[0]):]] = value
    if unknown:
        raise ValueError(f"keys with no counterpart in this model: {sorted(unknown)}")
    return out


def merge_qkv_bias(state_dict):
    """attn.q_bias + attn.v_bias -> attn.qkv.bias = cat(q_bias, zeros, v_bias); blocks without them
    (the sampler's) keep no qkv bias."""
    out = {}
    for key, value in state_dict.items():
        if key.endswith("attn.q_bias"):
            prefix = key[:-len("q_bias")]
            v_bias = state_dict[prefix + "v_bias"]
            out[prefix + "qkv.bias"] = torch.cat([value, torch.zeros_like(v_bias), v_bias])
        elif not key.endswith("attn.v_bias"):
            out[key] = value
    return out


def reference_to_adamae(checkpoint):
    """Authors' pre-training state dict (or the checkpoint holding it) -> `AdaMAE.state_dict()` keys."""
    return merge_qkv_bias(rename(state_dict_of(checkpoint), PRETRAIN_PREFIXES))


def reference_to_classifier(checkpoint):
    """Fine-tuned VideoMAE/AdaMAE classifier state dict (or the checkpoint holding it under 'model'
    or 'module') -> keys of our classifier: tokenizer.proj, encoder.blocks.i, fc_norm, head."""
    return merge_qkv_bias(rename(state_dict_of(checkpoint), CLASSIFIER_PREFIXES))


def load_reference_pretrained(path_or_checkpoint, preset="base", **overrides):
    """A released AdaMAE pre-training checkpoint (file or loaded dict) -> AdaMAE in eval mode.

    The config is the preset, updated from the checkpoint's `args` (mask_ratio, decoder_depth,
    num_frames, input_size) when present, then by `overrides`. Loading is strict: a missing,
    unexpected or mis-shaped tensor raises. VideoMAE's own pre-training checkpoints have the same
    names but no sampler: load them with mask_type="tube" (a model without a sampler)."""
    checkpoint = path_or_checkpoint
    if isinstance(checkpoint, (str, os.PathLike)):
        checkpoint = load_checkpoint_file(checkpoint)
    args = checkpoint.get("args")
    args = vars(args) if isinstance(args, argparse.Namespace) else (args or {})
    from_args = {ours: args[theirs] for theirs, ours in REFERENCE_ARGS.items() if theirs in args}
    model = AdaMAE(AdaMAEConfig.preset(preset, **{**from_args, **overrides}))
    model.load_state_dict(reference_to_adamae(checkpoint))
    return model.eval()

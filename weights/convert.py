"""Checkpoints in other layouts: the authors' (and VideoMAE's) released weights in this project's names.
Every file is opened by `engine.load_checkpoint_file`, the project's one safe loader.

  * `reference_to_adamae`         authors' pre-training keys (VideoMAE fork) -> `adamae.AdaMAE` keys
  * `load_reference_pretrained`   a released pre-training checkpoint -> `AdaMAE`, loaded strictly
  * `reference_to_classifier`     fine-tuned VideoMAE/AdaMAE classifier keys -> our classifier keys
  * `read_pretrained`             any pre-training file (pretrain.py's, the authors' AdaMAE, VideoMAE's)
                                  -> (AdaMAEConfig, state dict in AdaMAE's names), recognised by its keys
  * `read_classifier`             any fine-tuned classifier (finetune.py's, the authors'/VideoMAE's)
                                  -> (AdaMAEConfig, classifier state dict, number of classes)
  * `read_checkpoint`             either of the two, told apart by the keys (tools/export_hf.py)
                                  Both read a Hugging Face VideoMAE folder too (weights/huggingface.py)
  * `require_kind`                a loaded file of the kind a command needs, else an error saying what it is

The only change of values: the reference stores separate `attn.q_bias` / `attn.v_bias` and no k
bias; we store one `attn.qkv.bias` = cat(q_bias, 0, v_bias). A k bias adds the same amount to every
logit of a query row, which softmax cancels, so zeros reproduce the reference exactly.
"""

import argparse
import os
import re
import warnings
from pathlib import Path

import torch

from adamae import AdaMAE, AdaMAEConfig
from engine import load_checkpoint_file
from weights import huggingface
from weights.shapes import check_shapes, expected_shapes, state_dict_of

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


# ----------------------------------------------------------------------------- any file -> (config, weights)

def reference_args(checkpoint):
    """The `args` entry of an authors' checkpoint (argparse.Namespace or dict) as a dict; {} if absent."""
    args = checkpoint.get("args")
    return vars(args) if isinstance(args, argparse.Namespace) else dict(args or {})


def block_count(state_dict, prefix):
    """Number of transformer blocks named prefix{i}. in a state dict."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({m.group(1) for m in map(pattern.match, state_dict) if m})


def infer_config(state_dict, checkpoint, path, mask_type, patch_key, blocks_prefix, decoder=True):
    """AdaMAEConfig of an authors' file, inferred rather than assumed: the preset whose encoder width and
    depth match the tensors (it fixes the head counts, which shapes cannot show), the patch geometry and
    MLP ratio from the tensors, the decoder's depth from its blocks, and img_size, num_frames and rho from
    the file's `args` (REFERENCE_ARGS). Raises if no preset matches; warns for each value not in the file."""
    width, in_chans, tubelet, patch, _ = state_dict[patch_key].shape
    depth = block_count(state_dict, blocks_prefix)
    presets = {n: AdaMAEConfig.preset(n) for n in AdaMAEConfig.PRESETS}
    name = next((n for n, p in presets.items() if (p.encoder_dim, p.encoder_depth) == (width, depth)), None)
    if name is None:
        known = {n: (p.encoder_dim, p.encoder_depth) for n, p in presets.items()}
        raise ValueError(f"{path}: an encoder of width {width} and depth {depth} matches no preset "
                         f"(width, depth): {known}")
    fields = dict(encoder_dim=width, encoder_depth=depth, in_chans=in_chans, tubelet_size=tubelet, patch_size=patch,
                  mlp_ratio=state_dict[f"{blocks_prefix}0.mlp.fc1.weight"].shape[0] / width, mask_type=mask_type)
    if decoder:
        fields["decoder_depth"] = block_count(state_dict, "decoder.blocks.")  # the tensors, not args, decide
        decoder_width = state_dict["decoder.norm.weight"].shape[0]
        if decoder_width != presets[name].decoder_dim:
            raise ValueError(f"{path}: decoder width {decoder_width} differs from preset {name!r}'s "
                             f"{presets[name].decoder_dim}; its head count is unknown")
    args = reference_args(checkpoint)
    from_args = {ours: args[theirs] for theirs, ours in REFERENCE_ARGS.items()
                 if theirs in args and ours != "decoder_depth" and (decoder or ours != "mask_ratio")}
    if mask_type == "tube" and "mask_ratio" not in from_args:
        from_args["mask_ratio"] = 0.9  # VideoMAE's default ratio; the sampler's 0.95 is AdaMAE's
    wanted = ["img_size", "num_frames"] + (["mask_ratio"] if decoder else [])
    cfg = AdaMAEConfig.preset(name, **{**fields, **from_args})
    guessed = [k for k in wanted if k not in from_args]
    if guessed:
        warnings.warn(f"{path}: no {', '.join(guessed)} in its args; using those of preset {name!r}: "
                      f"{', '.join(f'{k}={getattr(cfg, k)}' for k in guessed)}")
    return cfg


def file_kind(checkpoint):
    """What a loaded checkpoint is, by its keys: 'pretrain.py' / 'finetune.py' (ours: a 'config' entry),
    'adamae' / 'videomae' (the authors' pre-training files, with or without the sampler), 'classifier'
    (a VideoMAE-style fine-tuned file), or None."""
    if not isinstance(checkpoint, dict):
        return None
    state = state_dict_of(checkpoint)
    if "config" in checkpoint and "model" in checkpoint:
        return "finetune.py" if "fc_norm.weight" in state else "pretrain.py"
    if "encoder.patch_embed.proj.weight" in state:
        return "adamae" if "encoder.pos_embed_probs" in state else "videomae"
    if {"patch_embed.proj.weight", "fc_norm.weight", "head.weight"} <= set(state):
        return "classifier"
    return None


KINDS = {"pretrain.py": "a pretrain.py checkpoint (pre-training)",
         "finetune.py": "a finetune.py checkpoint (a fine-tuned classifier)",
         "adamae": "the authors' AdaMAE pre-training file", "videomae": "a VideoMAE pre-training file",
         "classifier": "a fine-tuned VideoMAE/AdaMAE classifier", None: "of no checkpoint layout this project knows"}


def require_kind(path, checkpoint, kinds, use):
    """`checkpoint` (loaded from `path`) when its `file_kind` is one of `kinds`; else one line naming the file,
    what it is and what `use` needs, e.g. "best.pt is a finetune.py checkpoint (a fine-tuned classifier), but
    pretrain.py --resume needs a pretrain.py checkpoint (pre-training)"."""
    kind = file_kind(checkpoint)
    if kind not in kinds:
        raise ValueError(f"{path} is {KINDS[kind]}, but {use} needs {' or '.join(KINDS[k] for k in kinds)}")
    return checkpoint


def _load(path):
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    checkpoint = load_checkpoint_file(path)
    return checkpoint, file_kind(checkpoint)


CLASSIFIER_KINDS = ("finetune.py", "classifier")
PRETRAIN_FORMATS = ("pretrain.py's checkpoint ('config' and 'model' entries), the authors' AdaMAE pre-training "
                    "file ('encoder.patch_embed.proj.weight', 'encoder.pos_embed_probs', 'encoder.get_token_probs.*', "
                    "'decoder.*') or VideoMAE's (the same without the sampler's two)")
CLASSIFIER_FORMATS = ("finetune.py's checkpoint ('config' and 'model' entries) or a VideoMAE/AdaMAE fine-tuned "
                      "classifier with mean pooling ('patch_embed.proj.*', 'blocks.{i}.*', 'fc_norm.*', 'head.*')")


def read_pretrained(path):
    """A pre-training checkpoint -> (AdaMAEConfig, AdaMAE state dict), recognised by its keys:
    pretrain.py's (its saved config), the authors' AdaMAE file (mask_type 'adaptive') or VideoMAE's
    (no sampler: mask_type 'tube'); the config of the last two is inferred (`infer_config`).
    Anything else, or a tensor missing or mis-shaped, raises a ValueError naming the file. A folder is read
    as a Hugging Face VideoMAE folder (weights/huggingface.py: a tube model, no sampler)."""
    if Path(path).is_dir():
        return huggingface.read_pretrained(path)
    return pretrained_from(*_load(path), path)


def pretrained_from(checkpoint, kind, path):
    """read_pretrained of a loaded checkpoint of this file_kind."""
    if kind == "pretrain.py":
        cfg, state = AdaMAEConfig.from_dict(checkpoint["config"]), checkpoint["model"]
    elif kind in ("adamae", "videomae"):
        state = state_dict_of(checkpoint)
        cfg = infer_config(state, checkpoint, path, "adaptive" if kind == "adamae" else "tube",
                           "encoder.patch_embed.proj.weight", "encoder.blocks.")
        state = reference_to_adamae(state)
    else:
        what = "a fine-tuned classifier (use read_classifier)" if kind in CLASSIFIER_KINDS else "not recognised"
        raise ValueError(f"{path}: {what}; expected {PRETRAIN_FORMATS}")
    check_shapes(state, expected_shapes(cfg), path, f"{cfg.mask_type} pre-training checkpoint")
    return cfg, state


def read_classifier(path):
    """A fine-tuned classifier -> (AdaMAEConfig, classifier state dict, number of classes): finetune.py's
    checkpoint, or the authors'/VideoMAE's fine-tuned file (mean pooling, fc_norm + head; the config
    inferred from the shapes and `args`), or a Hugging Face VideoMAEForVideoClassification folder
    (weights/huggingface.py). Anything else raises a ValueError naming the file."""
    if Path(path).is_dir():
        return huggingface.read_classifier(path)
    return classifier_from(*_load(path), path)


def classifier_from(checkpoint, kind, path):
    """read_classifier of a loaded checkpoint of this file_kind."""
    if kind == "finetune.py":
        cfg, state = AdaMAEConfig.from_dict(checkpoint["config"]), checkpoint["model"]
    elif kind == "classifier":
        state = state_dict_of(checkpoint)
        cfg = infer_config(state, checkpoint, path, "tube", "patch_embed.proj.weight", "blocks.", decoder=False)
        state = reference_to_classifier(state)
    else:
        pretraining = kind in ("pretrain.py", "adamae", "videomae")
        what = "a pre-training file (use read_pretrained)" if pretraining else "not recognised"
        raise ValueError(f"{path}: {what}; expected {CLASSIFIER_FORMATS}")
    num_classes = state["head.weight"].shape[0]
    check_shapes(state, expected_shapes(cfg, num_classes), path, "classifier")
    return cfg, state, num_classes


def read_checkpoint(path):
    """Any checkpoint read_pretrained or read_classifier takes, told apart by its keys (a file is loaded once)
    -> (AdaMAEConfig, state dict, number of classes): None classes for a pre-training checkpoint (AdaMAE's
    names), the head's size for a classifier."""
    if Path(path).is_dir():
        if huggingface.read_folder(path)[2] == "classifier":
            return huggingface.read_classifier(path)
        return (*huggingface.read_pretrained(path), None)
    checkpoint, kind = _load(path)
    if kind in CLASSIFIER_KINDS:
        return classifier_from(checkpoint, kind, path)
    return (*pretrained_from(checkpoint, kind, path), None)

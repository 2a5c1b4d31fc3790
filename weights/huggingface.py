"""Hugging Face VideoMAE folders (`config.json` + `model.safetensors` or `pytorch_model.bin`) <-> our classes.

transformers' three VideoMAE classes, and what each is here ("kind"):

    VideoMAEForPreTraining           "pretraining"  encoder + final norm + decoder  <-> AdaMAE
    VideoMAEModel                    "encoder"      the encoder alone               ->  AdaMAE's encoder part
    VideoMAEForVideoClassification   "classifier"   encoder + fc_norm + classifier  <-> VideoClassifier

  * `to_adamae_config` / `to_hf_config`      config.json <-> AdaMAEConfig; what our classes cannot express is
                                             refused, naming the field
  * `hf_name`, `to_ours` / `to_hf`           tensor names (one table, used both ways) and the attention layout
  * `read_pretrained` / `read_classifier`    a folder -> what weights.convert's readers return (they dispatch here)
  * `write_pretrained` / `write_encoder`     our weights -> a folder that transformers' `from_pretrained` loads
    / `write_classifier`                     (tools/export_hf.py runs them on a checkpoint)

What the layout cannot hold, and what happens to it:
  * the sampler (AdaMAE's learned token distribution): not written; read back as a tube model, or with
    mask_type="adaptive" a freshly initialised sampler (uniform P, as a new AdaMAE starts)
  * the k bias: HF has q and v biases only. Ours is dropped on write, which is exact: it adds the same amount
    to every logit of a query row, and softmax cancels it (weights/convert.py)
  * LayerNorm eps: ours is 1e-6 (VideoMAE's) everywhere. HF's blocks take `layer_norm_eps` (1e-12 in its
    releases; we write 1e-6), its fc_norm and decoder norm a fixed 1e-5. A LayerNorm's output then differs by
    the factor sqrt((var + 1e-6) / (var + eps)): about 5e-6 relative at unit variance, below the float32 noise
    of a ViT-B forward; values above 1e-5 are refused
"""

import json
from dataclasses import replace
from pathlib import Path

import torch

from adamae import AdaMAE, AdaMAEConfig
from engine import load_checkpoint_file
from weights.shapes import check_shapes, expected_shapes, state_dict_of
from weights.safetensors import load_file, save_file

ARCHITECTURES = {"pretraining": "VideoMAEForPreTraining", "encoder": "VideoMAEModel",
                 "classifier": "VideoMAEForVideoClassification"}
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")

# transformers' VideoMAEConfig defaults (5.24), for fields a config.json leaves out.
HF_DEFAULTS = dict(model_type="videomae", image_size=224, patch_size=16, num_channels=3, num_frames=16, tubelet_size=2,
                   hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                   hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                   initializer_range=0.02, layer_norm_eps=1e-12, use_mean_pooling=True,
                   decoder_num_attention_heads=6, decoder_hidden_size=384, decoder_num_hidden_layers=4,
                   decoder_intermediate_size=1536, norm_pix_loss=True)
# config.json field -> AdaMAEConfig field, the same value (image_size and patch_size: one side of a square)
FIELDS = {"image_size": "img_size", "patch_size": "patch_size", "num_channels": "in_chans", "num_frames": "num_frames",
          "tubelet_size": "tubelet_size", "hidden_size": "encoder_dim", "num_hidden_layers": "encoder_depth",
          "num_attention_heads": "encoder_heads", "decoder_hidden_size": "decoder_dim",
          "decoder_num_hidden_layers": "decoder_depth", "decoder_num_attention_heads": "decoder_heads"}
MAX_EPS = 1e-5

# ----------------------------------------------------------------------------- config.json <-> AdaMAEConfig


def qv_bias(hf):
    """Whether the folder's attention has q and v biases (`qv_bias`; `qkv_bias` before transformers 5)."""
    return hf.get("qv_bias", hf.get("qkv_bias", True))


def square(hf, field, path):
    """image_size / patch_size: an int, or [h, w] with h == w; anything else is refused."""
    value = hf[field]
    if isinstance(value, (list, tuple)):
        if len(set(value)) != 1:
            raise ValueError(f"{path}: config.json {field}={value!r}: our models take square frames and patches")
        value = value[0]
    return value


def refusals(hf, kind, mlp_ratio):
    """(field, ok, why) for every config.json value our classes must match for this kind of folder."""
    checks = [
        ("model_type", hf["model_type"] == "videomae", "not a VideoMAE config"),
        ("use_learnable_position_embeddings", not hf.get("use_learnable_position_embeddings"),
         "our encoder adds the fixed sinusoid table; it has no learned position embedding"),
        ("hidden_act", hf["hidden_act"] == "gelu", "our MLPs use exact GELU ('gelu')"),
        ("hidden_dropout_prob", hf["hidden_dropout_prob"] == 0, "our encoder has no dropout"),
        ("attention_probs_dropout_prob", hf["attention_probs_dropout_prob"] == 0, "our attention has no dropout"),
        ("num_channels", hf["num_channels"] == 3, "our data and loss are RGB with ImageNet statistics"),
        ("layer_norm_eps", hf["layer_norm_eps"] <= MAX_EPS, f"ours is 1e-6; values up to {MAX_EPS} are read as it"),
        ("intermediate_size", int(hf["hidden_size"] * mlp_ratio) == hf["intermediate_size"],
         "not a width our MLP (int(hidden_size * ratio)) can have"),
    ]
    if kind == "pretraining":
        checks += [
            ("decoder_intermediate_size", int(hf["decoder_hidden_size"] * mlp_ratio) == hf["decoder_intermediate_size"],
             f"our decoder's MLP ratio is the encoder's, {mlp_ratio:g}"),
            ("use_mean_pooling", not hf["use_mean_pooling"], "our pre-training encoder ends in a LayerNorm"),
            ("norm_pix_loss", hf["norm_pix_loss"], "its other target is pixels in [0, 1]; ours are patch-normalised "
                                                   "or, with AdaMAEConfig.target 'pixel', ImageNet-normalised"),
        ]
    if kind == "classifier":
        checks.append(("use_mean_pooling", hf["use_mean_pooling"],
                       "our classifier mean-pools the tokens (HF's alternative takes the first patch token)"))
    return checks


def to_adamae_config(hf, path, kind, mask_type="tube", mask_ratio=None):
    """A config.json dict -> AdaMAEConfig, or a ValueError naming the file, the field and its value. mask_ratio
    (not in the folder) defaults to VideoMAE's 0.9, or AdaMAE's 0.95 for mask_type 'adaptive'."""
    hf = {**HF_DEFAULTS, **hf}
    mlp_ratio = hf["intermediate_size"] / hf["hidden_size"]
    for field, ok, why in refusals(hf, kind, mlp_ratio):
        if not ok:
            raise ValueError(f"{path}: config.json {field}={hf.get(field)!r}: {why}")
    values = {ours: square(hf, theirs, path) if theirs in ("image_size", "patch_size") else hf[theirs]
              for theirs, ours in FIELDS.items()}
    if mask_ratio is None:
        mask_ratio = 0.95 if mask_type == "adaptive" else 0.9
    return AdaMAEConfig(**values, mlp_ratio=mlp_ratio, mask_type=mask_type, mask_ratio=mask_ratio)


def to_hf_config(cfg, kind, class_names=None):
    """AdaMAEConfig -> config.json for a folder of this kind. The pre-training encoder keeps its final norm
    (use_mean_pooling false, as VideoMAE's released pre-training folders); the classifier mean-pools. A config
    the layout cannot express is refused by field: another position table than the 1D sinusoid transformers
    adds, or a pre-training target other than patch_norm (its norm_pix_loss false means pixels in [0, 1])."""
    for field, ok in [("position_table", cfg.position_table == "1d"),
                      ("target", kind != "pretraining" or cfg.target == "patch_norm")]:
        if not ok:
            raise ValueError(f"AdaMAEConfig.{field}={getattr(cfg, field)!r}: a Hugging Face VideoMAE {kind} folder "
                             f"cannot express it")
    hf = {**HF_DEFAULTS, **{theirs: getattr(cfg, ours) for theirs, ours in FIELDS.items()}}
    hf.update(architectures=[ARCHITECTURES[kind]], intermediate_size=int(cfg.encoder_dim * cfg.mlp_ratio),
              decoder_intermediate_size=int(cfg.decoder_dim * cfg.mlp_ratio), layer_norm_eps=1e-6, qkv_bias=True,
              use_mean_pooling=kind == "classifier")
    if class_names is not None:  # transformers counts the classes by id2label
        hf["id2label"] = {str(i): name for i, name in enumerate(class_names)}
        hf["label2id"] = {name: i for i, name in enumerate(class_names)}
    return hf


# ----------------------------------------------------------------------------- tensor names and layout

# (ours, HF) prefixes, first match wins; a block's index is followed by one of BLOCK_PARTS. Our `head.` is the
# decoder's head in AdaMAE and the class head in VideoClassifier: HEADS.
PREFIXES = [
    ("tokenizer.proj.", "videomae.embeddings.patch_embeddings.projection."),
    ("encoder.blocks.", "videomae.encoder.layer."),
    ("encoder.norm.", "videomae.layernorm."),
    ("encoder_to_decoder.", "encoder_to_decoder."),
    ("mask_token", "mask_token"),
    ("decoder.blocks.", "decoder.decoder_layers."),
    ("decoder.norm.", "decoder.norm."),
    ("fc_norm.", "fc_norm."),
]
HEADS = {"pretraining": "decoder.head.", "classifier": "classifier."}
# attn.qkv. (one fused Linear here) is HF's attention.attention.{query,key,value} plus q_bias, v_bias: to_ours / to_hf
BLOCK_PARTS = [("norm1.", "layernorm_before."), ("attn.qkv.", "attention.attention."),
               ("attn.proj.", "attention.output.dense."), ("norm2.", "layernorm_after."),
               ("mlp.fc1.", "intermediate.dense."), ("mlp.fc2.", "output.dense.")]
QKV = ("query", "key", "value")


def swap_prefix(key, pairs):
    """key with the first matching (ours, HF) prefix replaced, or a ValueError."""
    for ours, theirs in pairs:
        if key.startswith(ours):
            return theirs, key[len(ours):]
    raise ValueError(f"{key!r} has no counterpart in a Hugging Face VideoMAE folder")


def hf_name(key, kind):
    """Our tensor name -> HF's; attn.qkv.{weight,bias} -> the prefix its query/key/value tensors share + weight/bias."""
    if key.startswith("head."):
        return HEADS[kind] + key[len("head."):]
    prefix, rest = swap_prefix(key, PREFIXES)
    if not prefix.endswith("layer.") and not prefix.endswith("layers."):
        return prefix + rest
    index, rest = rest.split(".", 1)
    part, rest = swap_prefix(rest, BLOCK_PARTS)
    return f"{prefix}{index}.{part}{rest}"


def to_hf(state, kind):
    """Our state dict -> HF's names: attn.qkv splits into query/key/value weights and q_bias, v_bias (the k bias
    dropped: softmax cancels it)."""
    out = {}
    for key, value in state.items():
        name = hf_name(key, kind)
        if key.endswith("attn.qkv.weight"):
            out.update({name[:-len("weight")] + f"{p}.weight": w for p, w in zip(QKV, value.chunk(3))})
        elif key.endswith("attn.qkv.bias"):
            q, _, v = value.chunk(3)
            out.update({name[:-len("bias")] + "q_bias": q, name[:-len("bias")] + "v_bias": v})
        else:
            out[name] = value
    return out


def to_ours(weights, expected, kind, with_qv_bias, path):
    """HF tensors -> the state dict with exactly the `expected` names ({name: shape}): query/key/value stack into
    attn.qkv.weight; attn.qkv.bias = cat(q, 0, v) (zeros without qv_bias). q_bias is also found as query.bias
    (transformers 5's in-memory name). A missing or left-over tensor raises a ValueError naming the file."""
    theirs, out, missing = dict(weights), {}, []

    def take(*names):
        found = next((n for n in names if n in theirs), None)
        if found is None:
            missing.append(names[0])
        return theirs.pop(found, None)

    for key, shape in expected.items():
        name = hf_name(key, kind)
        if key.endswith("attn.qkv.weight"):
            parts = [take(name[:-len("weight")] + f"{p}.weight") for p in QKV]
            out[key] = None if None in parts else torch.cat(parts)
        elif key.endswith("attn.qkv.bias"):
            base, zeros = name[:-len("bias")], torch.zeros(shape[0] // 3)
            q, v = ((take(base + "q_bias", base + "query.bias"), take(base + "v_bias", base + "value.bias"))
                    if with_qv_bias else (zeros, zeros))
            out[key] = None if q is None or v is None else torch.cat([q.to(zeros.dtype), zeros, v.to(zeros.dtype)])
        else:
            out[key] = take(name)
    if missing or theirs:
        raise ValueError(f"{path}: not the {ARCHITECTURES[kind]} these classes build: missing {missing[:8]}, "
                         f"unexpected {sorted(theirs)[:8]}")
    return out


# ----------------------------------------------------------------------------- folders


def folder_kind(weights):
    """'pretraining', 'classifier' or 'encoder' by the tensors a folder holds, or None."""
    if "decoder.head.weight" in weights:
        return "pretraining"
    if "classifier.weight" in weights:
        return "classifier"
    if "videomae.embeddings.patch_embeddings.projection.weight" in weights:
        return "encoder"
    return None


def read_folder(folder):
    """A Hugging Face model folder -> (config.json as a dict, its tensors under the `videomae.` prefix, kind).
    A VideoMAEModel saved alone has no prefix; it is added. .bin files go through the safe loader."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: a folder without config.json, not a Hugging Face model folder")
    hf = json.loads((folder / "config.json").read_text())
    path = next((folder / name for name in WEIGHT_FILES if (folder / name).is_file()), None)
    if path is None:
        sharded = (folder / "model.safetensors.index.json").is_file()
        raise FileNotFoundError(f"{folder}: no {' or '.join(WEIGHT_FILES)}" + (
            " (sharded weights are not read: save them again with a larger max_shard_size)" if sharded else ""))
    weights = load_file(path) if path.suffix == ".safetensors" else state_dict_of(load_checkpoint_file(path))
    if "embeddings.patch_embeddings.projection.weight" in weights:
        weights = {"videomae." + k: v for k, v in weights.items()}
    kind = folder_kind(weights)
    if kind is None:
        raise ValueError(f"{path}: no VideoMAE tensors ({' / '.join(ARCHITECTURES.values())}); "
                         f"its first names: {sorted(weights)[:5]}")
    return hf, weights, kind


def read_pretrained(folder, mask_type="tube", mask_ratio=None):
    """A VideoMAEForPreTraining folder -> (AdaMAEConfig, AdaMAE state dict). mask_type 'tube' (VideoMAE's
    masking) or another baseline gives a model without a sampler; 'adaptive' adds a freshly initialised one.
    A VideoMAEModel folder -> (config, the encoder part only: tokenizer, encoder blocks and, without mean
    pooling, encoder.norm): enough to fine-tune or take features, not to pre-train."""
    hf, weights, kind = read_folder(folder)
    if kind == "classifier":
        raise ValueError(f"{folder}: a fine-tuned classifier ({ARCHITECTURES[kind]}; use read_classifier)")
    cfg = to_adamae_config(hf, folder, kind, mask_type, mask_ratio)
    expected = expected_shapes(replace(cfg, mask_type="tube"))  # everything but a sampler
    if kind == "encoder":
        kept = ("tokenizer.", "encoder.blocks.") + (() if {**HF_DEFAULTS, **hf}["use_mean_pooling"] else ("encoder.norm.",))
        expected = {k: v for k, v in expected.items() if k.startswith(kept)}
    state = to_ours(weights, expected, kind, qv_bias(hf), folder)
    check_shapes(state, expected, folder, ARCHITECTURES[kind])
    if cfg.mask_type == "adaptive":
        state.update({"sampler." + k: v for k, v in AdaMAE(cfg).sampler.state_dict().items()})
    return cfg, state


def read_classifier(folder):
    """A VideoMAEForVideoClassification folder (mean pooling) -> (AdaMAEConfig, VideoClassifier state dict,
    number of classes)."""
    hf, weights, kind = read_folder(folder)
    if kind != "classifier":
        raise ValueError(f"{folder}: a pre-training folder ({ARCHITECTURES[kind]}; use read_pretrained)")
    cfg = to_adamae_config(hf, folder, kind)
    num_classes = weights["classifier.weight"].shape[0]
    expected = expected_shapes(cfg, num_classes)
    state = to_ours(weights, expected, kind, qv_bias(hf), folder)
    check_shapes(state, expected, folder, ARCHITECTURES[kind])
    return cfg, state, num_classes


def write_folder(folder, hf_config, tensors):
    """config.json and model.safetensors (metadata format 'pt', which transformers checks) into folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n")


def write_pretrained(folder, cfg, state):
    """AdaMAE weights -> a VideoMAEForPreTraining folder (encoder with its final norm, decoder). The sampler has
    no place in the layout: it is left out. Returns the names left out."""
    left_out = sorted(k for k in state if k.startswith("sampler."))
    kept = {k: v for k, v in state.items() if not k.startswith("sampler.")}
    tube = replace(cfg, mask_type="tube")  # the names and shapes of everything but the sampler
    check_shapes(kept, expected_shapes(tube), folder, "AdaMAE state dict to write")
    write_folder(folder, to_hf_config(cfg, "pretraining"), to_hf(kept, "pretraining"))
    return left_out


def write_encoder(folder, cfg, state):
    """The encoder of AdaMAE weights (tokenizer, blocks, final norm) -> a VideoMAEModel folder, its names without
    the `videomae.` prefix as VideoMAEModel.save_pretrained writes them; use_mean_pooling false, so transformers
    applies the final norm as ours does. Returns the names left out (sampler, decoder)."""
    parts = ("tokenizer.", "encoder.blocks.", "encoder.norm.")
    kept = {k: v for k, v in state.items() if k.startswith(parts)}
    expected = {k: v for k, v in expected_shapes(replace(cfg, mask_type="tube")).items() if k.startswith(parts)}
    check_shapes(kept, expected, folder, "AdaMAE encoder to write")
    tensors = {k[len("videomae."):]: v for k, v in to_hf(kept, "encoder").items()}
    write_folder(folder, to_hf_config(cfg, "encoder"), tensors)
    return sorted(set(state) - set(kept))


def write_classifier(folder, cfg, state, class_names=None):
    """VideoClassifier weights -> a VideoMAEForVideoClassification folder; class_names (one per class) become
    its id2label, else LABEL_0, LABEL_1, ... as transformers names them."""
    num_classes = state["head.weight"].shape[0]
    names = list(class_names) if class_names is not None else [f"LABEL_{i}" for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for a classifier of {num_classes} classes")
    check_shapes(state, expected_shapes(cfg, num_classes), folder, "classifier state dict to write")
    write_folder(folder, to_hf_config(cfg, "classifier", names), to_hf(state, "classifier"))

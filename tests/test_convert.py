"""Released weights: the safe loader, the key maps, and equivalence with the authors' forward pass.

The oracle `reference_forward` transcribes the reference code (AdaMAE's fork of VideoMAE's
`modeling_pretrain.py` and `modeling_finetune.Attention`, eval mode, a given mask) as plain tensor
ops on a state dict in the reference naming. `reference_shapes` rebuilds that naming for any size
and is checked against the key list of the real ViT-B checkpoint (official_pretrain_keys.txt).
"""

import argparse
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from adamae import AdaMAE, AdaMAEConfig
from engine import load_checkpoint_file
from weights.convert import load_reference_pretrained, read_classifier, read_pretrained, \
    reference_to_adamae, reference_to_classifier
from sampler import random_mask
from test_model import small_cfg, video_for
from tokenizer import Tokenizer
from vit import Transformer

OFFICIAL_KEYS = Path(__file__).with_name("official_pretrain_keys.txt")


# ---------------------------------------------------------------- the reference format

def reference_block_shapes(prefix, dim, qv_bias=True):
    shapes = {f"{prefix}norm1.weight": (dim,), f"{prefix}norm1.bias": (dim,)}
    if qv_bias:  # VideoMAE blocks: separate q and v biases, no k bias; the sampler block has none
        shapes.update({f"{prefix}attn.q_bias": (dim,), f"{prefix}attn.v_bias": (dim,)})
    shapes.update({
        f"{prefix}attn.qkv.weight": (3 * dim, dim),
        f"{prefix}attn.proj.weight": (dim, dim), f"{prefix}attn.proj.bias": (dim,),
        f"{prefix}norm2.weight": (dim,), f"{prefix}norm2.bias": (dim,),
        f"{prefix}mlp.fc1.weight": (4 * dim, dim), f"{prefix}mlp.fc1.bias": (4 * dim,),
        f"{prefix}mlp.fc2.weight": (dim, 4 * dim), f"{prefix}mlp.fc2.bias": (dim,)})
    return shapes


def reference_shapes(cfg):
    """{name: shape} of the authors' PretrainVisionTransformer built for `cfg`."""
    D, Dd, N = cfg.encoder_dim, cfg.decoder_dim, cfg.num_tokens
    patch_dim = cfg.tubelet_size * cfg.patch_size ** 2 * cfg.in_chans
    shapes = {"mask_token": (1, 1, Dd), "encoder.pos_embed_probs": (1, N, D),
              "encoder.patch_embed.proj.weight": (D, cfg.in_chans, cfg.tubelet_size, cfg.patch_size, cfg.patch_size),
              "encoder.patch_embed.proj.bias": (D,)}
    for i in range(cfg.encoder_depth):
        shapes.update(reference_block_shapes(f"encoder.blocks.{i}.", D))
    shapes.update({"encoder.norm.weight": (D,), "encoder.norm.bias": (D,)})
    shapes.update(reference_block_shapes("encoder.get_token_probs.0.", D, qv_bias=False))
    shapes.update({"encoder.get_token_probs.1.weight": (1, D), "encoder.get_token_probs.1.bias": (1,)})
    for i in range(cfg.decoder_depth):
        shapes.update(reference_block_shapes(f"decoder.blocks.{i}.", Dd))
    shapes.update({"decoder.norm.weight": (Dd,), "decoder.norm.bias": (Dd,),
                   "decoder.head.weight": (patch_dim, Dd), "decoder.head.bias": (patch_dim,),
                   "encoder_to_decoder.weight": (Dd, D)})
    return shapes


def random_state_dict(shapes, seed=0):
    """Random weights at a sane scale (fan-in scaled matrices, norms near 1, biases non-zero, so a
    wrong q/k/v bias order shows)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in shapes.items():
        x = torch.randn(shape, generator=g)
        if "norm" in name and name.endswith("weight"):
            x = 1 + 0.1 * x
        elif name.endswith("weight") and len(shape) >= 2:
            x /= math.sqrt(math.prod(shape[1:]))
        else:
            x *= 0.1
        out[name] = x
    return out


def test_reference_shapes_reproduce_the_official_vit_b_key_list():
    official = {}
    for line in OFFICIAL_KEYS.read_text().splitlines():
        name, shape = line.split()
        official[name] = tuple(int(s) for s in shape.split("x"))
    assert len(official) == 232
    assert reference_shapes(AdaMAEConfig()) == official
    assert sum(math.prod(s) for s in official.values()) == 102_501_505


# ---------------------------------------------------------------- the oracle

def sinusoid(n, d):
    """The reference's get_sinusoid_encoding_table, in numpy as there."""
    table = np.array([[pos / np.power(10000, 2 * (j // 2) / d) for j in range(d)] for pos in range(n)])
    table[:, 0::2], table[:, 1::2] = np.sin(table[:, 0::2]), np.cos(table[:, 1::2])
    return torch.tensor(table, dtype=torch.float32)[None]


def reference_block(sd, prefix, x, heads, eps):
    def norm(name, y):
        return F.layer_norm(y, y.shape[-1:], sd[prefix + name + ".weight"], sd[prefix + name + ".bias"], eps)

    B, N, C = x.shape
    qkv_bias = None
    if prefix + "attn.q_bias" in sd:
        v_bias = sd[prefix + "attn.v_bias"]
        qkv_bias = torch.cat((sd[prefix + "attn.q_bias"], torch.zeros_like(v_bias), v_bias))
    qkv = F.linear(norm("norm1", x), sd[prefix + "attn.qkv.weight"], qkv_bias)
    q, k, v = qkv.reshape(B, N, 3, heads, -1).permute(2, 0, 3, 1, 4)
    attn = ((q * (C // heads) ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
    y = F.linear((attn @ v).transpose(1, 2).reshape(B, N, -1), sd[prefix + "attn.proj.weight"],
                 sd[prefix + "attn.proj.bias"])
    x = x + y
    h = F.gelu(F.linear(norm("norm2", x), sd[prefix + "mlp.fc1.weight"], sd[prefix + "mlp.fc1.bias"]))
    return x + F.linear(h, sd[prefix + "mlp.fc2.weight"], sd[prefix + "mlp.fc2.bias"])


def reference_forward(sd, cfg, video, mask):
    """PretrainVisionTransformer.forward (eval) for a given mask -> (pred of masked tokens, P)."""
    t, p = cfg.tubelet_size, cfg.patch_size
    x = F.conv3d(video, sd["encoder.patch_embed.proj.weight"], sd["encoder.patch_embed.proj.bias"],
                 stride=(t, p, p)).flatten(2).transpose(1, 2)
    B, N, C = x.shape
    # get_mask: the sampler reads the patch embedding + its own position embedding (no sinusoid)
    z = reference_block(sd, "encoder.get_token_probs.0.", x + sd["encoder.pos_embed_probs"], cfg.sampler_heads, 1e-5)
    p_x = F.linear(z, sd["encoder.get_token_probs.1.weight"], sd["encoder.get_token_probs.1.bias"]).flatten(1)
    p_x = p_x.softmax(dim=-1)
    # encoder on the visible tokens
    x = x + sinusoid(N, C)
    x_vis = x[~mask].reshape(B, -1, C)
    for i in range(cfg.encoder_depth):
        x_vis = reference_block(sd, f"encoder.blocks.{i}.", x_vis, cfg.encoder_heads, 1e-6)
    x_vis = F.layer_norm(x_vis, (C,), sd["encoder.norm.weight"], sd["encoder.norm.bias"], 1e-6)
    # decoder: visible then mask tokens, each with its own sinusoid position (no unshuffle)
    x_vis = F.linear(x_vis, sd["encoder_to_decoder.weight"])
    Cd = x_vis.shape[-1]
    pos = sinusoid(N, Cd).expand(B, -1, -1)
    x = torch.cat([x_vis + pos[~mask].reshape(B, -1, Cd), sd["mask_token"] + pos[mask].reshape(B, -1, Cd)], dim=1)
    for i in range(cfg.decoder_depth):
        x = reference_block(sd, f"decoder.blocks.{i}.", x, cfg.decoder_heads, 1e-6)
    x = F.linear(F.layer_norm(x, (Cd,), sd["decoder.norm.weight"], sd["decoder.norm.bias"], 1e-6),
                 sd["decoder.head.weight"], sd["decoder.head.bias"])  # decoder(x_full, -1): every token
    num_masked = int(mask[0].sum())
    return x[:, -num_masked:], p_x  # the training loop keeps the last N_mask outputs


# ---------------------------------------------------------------- equivalence

@pytest.mark.parametrize("mask_source", ["sampler", "random"])
def test_converted_model_matches_the_reference_forward(mask_source):
    torch.manual_seed(0)
    cfg = small_cfg(sampler_heads=8)  # 8 heads in the sampler, as the reference hard-codes
    sd = random_state_dict(reference_shapes(cfg))
    model = AdaMAE(cfg).eval()
    model.load_state_dict(reference_to_adamae(sd))  # strict
    video = video_for(cfg, batch=3)
    with torch.no_grad():
        mask = None if mask_source == "sampler" else random_mask(3, cfg.grid, cfg.mask_ratio)
        out = model(video, mask=mask)
        pred, p_x = reference_forward(sd, cfg, video, out.mask)
        log_probs = model.sampler(model.tokenizer(video))
    torch.testing.assert_close(out.pred, pred, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(log_probs.exp(), p_x, rtol=1e-4, atol=1e-7)
    if mask_source == "sampler":
        torch.testing.assert_close(out.log_probs, log_probs)


def test_released_vit_b_checkpoint_loads_strictly_and_runs(tmp_path):
    """A checkpoint with exactly the official names and shapes, in the authors' top-level format."""
    shapes = {line.split()[0]: tuple(int(s) for s in line.split()[1].split("x"))
              for line in OFFICIAL_KEYS.read_text().splitlines()}
    args = argparse.Namespace(model="pretrain_videomae_base_patch16_224", mask_ratio=0.9, decoder_depth=4,
                              num_frames=16, input_size=224, window_size=(8, 14, 14), patch_size=(16, 16))
    path = tmp_path / "checkpoint-799.pth"
    torch.save({"model": random_state_dict(shapes), "optimizer": {}, "epoch": 0, "scaler": {}, "args": args}, path)

    model = load_reference_pretrained(load_checkpoint_file(path))
    assert model.cfg == AdaMAEConfig(mask_ratio=0.9)  # ViT-B; the ratio comes from args
    cfg, state = read_pretrained(path)  # the same file, its config inferred from shapes and args
    assert cfg == model.cfg and state.keys() == model.state_dict().keys()
    assert not model.training
    video = torch.randn(1, 3, 16, 224, 224)
    start = time.perf_counter()
    with torch.no_grad():
        out = model(video)
    seconds = time.perf_counter() - start
    print(f"ViT-B forward, 16x224x224, batch 1: {seconds:.2f} s")
    assert out.pred.shape == (1, 1568 - 156, 1536)
    assert torch.isfinite(out.pred).all() and torch.isfinite(out.log_probs).all()
    assert seconds < 30


def test_missing_or_foreign_keys_are_refused():
    cfg = small_cfg()
    sd = random_state_dict(reference_shapes(cfg))
    with pytest.raises(ValueError, match="encoder.cls_token"):
        reference_to_adamae({**sd, "encoder.cls_token": torch.zeros(1, 1, 32)})
    sd.pop("decoder.norm.bias")
    with pytest.raises(RuntimeError, match="decoder.norm.bias"):
        load_reference_pretrained({"model": sd}, **cfg.to_dict())


def test_videomae_checkpoint_without_sampler_loads_as_a_tube_model():
    cfg = small_cfg(mask_type="tube")
    sd = {k: v for k, v in random_state_dict(reference_shapes(cfg)).items() if "probs" not in k}  # no sampler
    model = load_reference_pretrained({"model": sd}, **cfg.to_dict())
    assert model.sampler is None and model.cfg.mask_type == "tube"


# ---------------------------------------------------------------- any file -> (config, weights)

def write_reference_pretrain(path, cfg, args=True, sampler=True, seed=0):
    """A pre-training file in the authors' layout for `cfg` ('model', 'args' Namespace, 'optimizer', 'epoch');
    without the sampler's tensors it is VideoMAE's. Returns its state dict."""
    sd = random_state_dict(reference_shapes(cfg), seed)
    if not sampler:
        sd = {k: v for k, v in sd.items() if "probs" not in k}
    ckpt = {"model": sd, "optimizer": {}, "epoch": 799}
    if args:
        ckpt["args"] = argparse.Namespace(model="pretrain_videomae_base_patch16_224", mask_ratio=cfg.mask_ratio,
                                          decoder_depth=cfg.decoder_depth, num_frames=cfg.num_frames,
                                          input_size=cfg.img_size, batch_size=32)
    torch.save(ckpt, path)
    return sd


def test_read_pretrained_takes_the_authors_adamae_file_and_infers_its_config(tmp_path):
    tiny = AdaMAEConfig.preset("tiny", mask_ratio=0.9)
    sd = write_reference_pretrain(tmp_path / "adamae.pth", tiny)
    cfg, state = read_pretrained(tmp_path / "adamae.pth")
    assert cfg == tiny  # preset from the shapes, rho / frames / size from args
    assert (cfg.target, cfg.position_table) == ("patch_norm", "1d")  # the target and table the weights were trained with
    model = AdaMAE(cfg).eval()
    model.load_state_dict(state)  # strict
    video = video_for(cfg, batch=2)
    mask = random_mask(2, cfg.grid, 0.9)
    with torch.no_grad():
        pred, _ = reference_forward(sd, cfg, video, mask)
        torch.testing.assert_close(model(video, mask=mask).pred, pred, rtol=1e-4, atol=1e-5)


def test_read_pretrained_takes_videomae_files_as_tube_models_and_our_own(tmp_path):
    tiny = AdaMAEConfig.preset("tiny", mask_type="tube", mask_ratio=0.9)
    write_reference_pretrain(tmp_path / "videomae.pth", tiny, sampler=False)
    cfg, state = read_pretrained(tmp_path / "videomae.pth")
    assert cfg == tiny and AdaMAE(cfg).sampler is None
    AdaMAE(cfg).load_state_dict(state)
    ours = AdaMAE(small_cfg())
    torch.save({"model": ours.state_dict(), "config": ours.cfg.to_dict(), "step": 3}, tmp_path / "ours.pt")
    cfg, state = read_pretrained(tmp_path / "ours.pt")
    assert cfg == small_cfg() and all(torch.equal(state[k], v) for k, v in ours.state_dict().items())


def test_read_pretrained_without_args_says_what_it_assumed(tmp_path):
    write_reference_pretrain(tmp_path / "bare.pth", AdaMAEConfig.preset("tiny"), args=False)
    with pytest.warns(UserWarning, match=r"bare.pth: no img_size, num_frames, mask_ratio in its args; using those "
                                         r"of preset 'tiny': img_size=64, num_frames=16, mask_ratio=0.95"):
        cfg, _ = read_pretrained(tmp_path / "bare.pth")
    assert cfg == AdaMAEConfig.preset("tiny")


def test_files_of_no_known_layout_are_refused_by_name(tmp_path):
    torch.save({"model": {"conv1.weight": torch.zeros(3)}}, tmp_path / "resnet.pth")
    with pytest.raises(ValueError, match=r"resnet.pth: not recognised; expected pretrain.py's checkpoint"):
        read_pretrained(tmp_path / "resnet.pth")
    with pytest.raises(ValueError, match=r"resnet.pth: not recognised; expected finetune.py's checkpoint"):
        read_classifier(tmp_path / "resnet.pth")
    write_reference_pretrain(tmp_path / "odd.pth", small_cfg())  # a 32-wide encoder: no preset has its heads
    with pytest.raises(ValueError, match=r"odd.pth: an encoder of width 32 and depth 2 matches no preset"):
        read_pretrained(tmp_path / "odd.pth")
    with pytest.raises(ValueError, match="odd.pth: a pre-training file"):
        read_classifier(tmp_path / "odd.pth")
    sd = write_reference_pretrain(tmp_path / "big.pth", AdaMAEConfig.preset("tiny", img_size=96))
    torch.save({"model": sd}, tmp_path / "big.pth")  # 1152 sampler positions, and no args to say why
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=r"big.pth: not a loadable.*sampler.pos_embed"):
        read_pretrained(tmp_path / "big.pth")


# ---------------------------------------------------------------- classifiers

class Classifier(nn.Module):
    """The attribute names finetune.py's classifier uses, enough to load strictly."""

    def __init__(self, cfg, num_classes):
        super().__init__()
        self.tokenizer = Tokenizer(cfg.patch_size, cfg.tubelet_size, cfg.in_chans, cfg.encoder_dim)
        self.encoder = Transformer(cfg.encoder_dim, cfg.encoder_depth, cfg.encoder_heads, final_norm=False)
        self.fc_norm = nn.LayerNorm(cfg.encoder_dim, eps=1e-6)
        self.head = nn.Linear(cfg.encoder_dim, num_classes)


@pytest.mark.parametrize("wrapper", ["model", "module", None])
def test_classifier_keys_map_onto_the_finetuning_model(wrapper):
    cfg = small_cfg()
    D = cfg.encoder_dim
    shapes = {"patch_embed.proj.weight": (D, 3, 2, 8, 8), "patch_embed.proj.bias": (D,),
              "fc_norm.weight": (D,), "fc_norm.bias": (D,), "head.weight": (5, D), "head.bias": (5,)}
    for i in range(cfg.encoder_depth):
        shapes.update(reference_block_shapes(f"blocks.{i}.", D))
    sd = random_state_dict(shapes)
    converted = reference_to_classifier({wrapper: sd, "epoch": 3} if wrapper else sd)
    Classifier(cfg, num_classes=5).load_state_dict(converted)  # strict: nothing missing or extra
    expected_bias = torch.cat([sd["blocks.1.attn.q_bias"], torch.zeros(D), sd["blocks.1.attn.v_bias"]])
    assert torch.equal(converted["encoder.blocks.1.attn.qkv.bias"], expected_bias)
    assert torch.equal(converted["tokenizer.proj.weight"], sd["patch_embed.proj.weight"])
    with pytest.raises(ValueError, match="pos_embed_probs"):
        reference_to_classifier({**sd, "pos_embed_probs": torch.zeros(1)})


# ---------------------------------------------------------------- the safe loader

class Payload:
    """Unpickling this would create a file: proof that code from the checkpoint ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


class CustomDict(dict):
    pass


def test_safe_loader_allows_namespace_and_plain_values(tmp_path):
    path = tmp_path / "ok.pth"
    torch.save({"model": {"w": torch.ones(2)}, "args": argparse.Namespace(mask_ratio=0.95),
                "epoch": 7, "scaler": {"scale": 1024.0}, "names": ["a", ("b", 2)]}, path)
    loaded = load_checkpoint_file(path)
    assert loaded["args"].mask_ratio == 0.95 and loaded["epoch"] == 7
    assert torch.equal(loaded["model"]["w"], torch.ones(2))


@pytest.mark.parametrize("foreign", ["code", "class"])
def test_safe_loader_refuses_other_objects(tmp_path, foreign):
    marker = tmp_path / "executed"
    obj = Payload(marker) if foreign == "code" else CustomDict(a=torch.zeros(1))
    path = tmp_path / "bad.pth"
    torch.save({"model": {}, "extra": obj}, path)
    with pytest.raises(ValueError, match=r"bad\.pth: torch\.load\(weights_only=True\) refused") as info:
        load_checkpoint_file(path)
    assert ("open" if foreign == "code" else "CustomDict") in str(info.value)
    assert not marker.exists()


def test_a_truncated_checkpoint_is_refused_by_name(tmp_path):
    path = tmp_path / "cut.pt"
    torch.save({"model": {"w": torch.zeros(1000)}}, path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ValueError, match="cut.pt: not a readable PyTorch checkpoint"):
        load_checkpoint_file(path)

"""Core model: tokenizer, sampler (+ baselines), ViT attention, AdaMAE losses and gradient isolation."""

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from adamae import AdaMAE, AdaMAEConfig, split_indices
from classifier import VideoClassifier
import pretrain
from engine import load_checkpoint_file
from sampler import MASK_TYPES, AdaptiveTokenSampler, sample_without_replacement, visible_count, BASELINE_MASKS
from tokenizer import Tokenizer, patchify, position_table, sinusoid_table, unpatchify
from vit import Attention

PAPER_GRID = (8, 14, 14)


def small_cfg(**overrides):
    """32 tokens (4 frames of 32x32, 2x8x8 tubelets): every test model runs in milliseconds."""
    base = dict(img_size=32, num_frames=4, patch_size=8, encoder_dim=32, encoder_depth=2, encoder_heads=4,
                decoder_dim=16, decoder_depth=1, decoder_heads=2, sampler_heads=4, mask_ratio=0.75)
    return AdaMAEConfig(**{**base, **overrides})


def video_for(cfg, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, cfg.in_chans, cfg.num_frames, cfg.img_size, cfg.img_size, generator=g)


# ---------------------------------------------------------------- tokenizer

def test_paper_config_gives_1568_tokens_of_width_768():
    cfg = AdaMAEConfig()
    assert cfg.num_tokens == 1568 and cfg.grid == PAPER_GRID
    tok = Tokenizer(cfg.patch_size, cfg.tubelet_size, cfg.in_chans, cfg.encoder_dim)
    assert tok(torch.zeros(1, 3, 16, 224, 224)).shape == (1, 1568, 768)


def test_patchify_roundtrip_is_exact_and_order_is_pixel_major_channel_minor():
    t, p, C = 2, 4, 3
    video = torch.randn(2, C, 6, 8, 12)
    tokens = patchify(video, p, t)
    assert tokens.shape == (2, 3 * 2 * 3, t * p * p * C)
    assert torch.equal(unpatchify(tokens, (3, 2, 3), p, t, C), video)
    # b c (T t) (H p) (W p) -> b (T H W) (t p p c), checked element by element at random places
    gen = np.random.default_rng(0)
    for _ in range(50):
        b, c, T, H, W = gen.integers(2), gen.integers(C), gen.integers(3), gen.integers(2), gen.integers(3)
        ti, hi, wi = gen.integers(t), gen.integers(p), gen.integers(p)
        token = (T * 2 + H) * 3 + W
        value = ((ti * p + hi) * p + wi) * C + c
        assert tokens[b, token, value] == video[b, c, T * t + ti, H * p + hi, W * p + wi]


def test_tokenizer_conv_matches_linear_map_of_patchify():
    """The Conv3d tokens and the patchify targets use the same token order."""
    tok = Tokenizer(patch_size=4, tubelet_size=2, in_chans=3, embed_dim=5)
    video = torch.randn(2, 3, 4, 8, 8)
    weight = tok.proj.weight.permute(0, 2, 3, 4, 1).reshape(5, -1)  # (D, t p p c)
    expected = patchify(video, 4, 2) @ weight.T + tok.proj.bias
    torch.testing.assert_close(tok(video), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n, d", [(1568, 768), (1568, 384), (20, 16)])
def test_sinusoid_table_matches_the_float64_reference_formula(n, d):
    """The reference's numpy table (float64): pos / 10000^(2 floor(j/2) / d), sin on even j, cos on odd j."""
    pos, j = np.arange(n, dtype=np.float64)[:, None], np.arange(d)
    ref = pos / np.power(10000, 2 * (j // 2) / d)
    ref[:, 0::2], ref[:, 1::2] = np.sin(ref[:, 0::2]), np.cos(ref[:, 1::2])
    before_cast = sinusoid_table(n, d, dtype=torch.float64).numpy()
    assert np.abs(before_cast - ref).max() <= 1e-7
    # the float32 table is the float64 one rounded once (half an ulp of 1 is 6e-8)
    assert np.abs(sinusoid_table(n, d).double().numpy() - ref).max() <= 1e-7


@pytest.mark.parametrize("grid, d", [((8, 14, 14), 768), ((2, 4, 4), 16), ((2, 2, 2), 32)])
def test_3d_table_is_one_sinusoid_per_axis_and_the_default_stays_1d(grid, d):
    table = position_table("3d", grid, d).double()
    side = 2 * (d // 6)
    widths = [d - 2 * side, side, side]
    t, h, w = np.meshgrid(*(np.arange(n) for n in grid), indexing="ij")
    for part, coord, width in zip(table.split(widths, dim=1), (t, h, w), widths):
        # the same formula as the 1D table, over one coordinate, row i being token i (time slowest)
        one_axis = sinusoid_table(max(grid), width, dtype=torch.float64).numpy()  # (positions, width)
        assert np.abs(part.numpy() - one_axis[coord.flatten()]).max() <= 1e-7
    assert len(torch.unique(table, dim=0)) == grid[0] * grid[1] * grid[2]  # every token its own position
    torch.testing.assert_close(position_table("1d", grid, d), sinusoid_table(grid[0] * grid[1] * grid[2], d))
    assert AdaMAEConfig().position_table == "1d"  # the released weights' table
    cfg = small_cfg(position_table="3d")
    model, default = AdaMAE(cfg).eval(), AdaMAE(small_cfg()).eval()
    model.load_state_dict(default.state_dict())  # no parameters: the same weights, another table
    video, mask = video_for(cfg), BASELINE_MASKS["random"](2, cfg.grid, cfg.mask_ratio)
    assert not torch.allclose(model(video, mask=mask).pred, default(video, mask=mask).pred)
    classifier = VideoClassifier(cfg, num_classes=2).eval()  # fine-tuning adds the model's own table too
    with torch.no_grad():
        tokens = classifier.tokenizer(video) + position_table("3d", cfg.grid, cfg.encoder_dim)
        torch.testing.assert_close(classifier.features(video), classifier.encoder(tokens).mean(dim=1))
    with pytest.raises(ValueError, match=r"position_table='2d'"):
        small_cfg(position_table="2d")


def test_position_tables_are_not_in_the_state_dict():
    keys = AdaMAE(small_cfg()).state_dict().keys()
    assert not any("pos" in k and "sampler" not in k for k in keys)
    assert "sampler.pos_embed" in keys  # the sampler's own embedding is learnable


# ---------------------------------------------------------------- masking

@pytest.mark.parametrize("mask_type", MASK_TYPES)
@pytest.mark.parametrize("ratio", [0.75, 0.9, 0.95, 0.98])
def test_every_sample_keeps_exactly_the_visible_count(mask_type, ratio):
    B, N = 16, 1568
    n_vis = visible_count(mask_type, PAPER_GRID, ratio)
    if mask_type == "adaptive":
        log_probs = torch.log_softmax(torch.randn(B, N) * 3, dim=-1)
        visible = sample_without_replacement(log_probs, n_vis)
        mask = torch.ones(B, N, dtype=torch.bool).scatter(1, visible, False)
    else:
        mask = BASELINE_MASKS[mask_type](B, PAPER_GRID, ratio)
    assert mask.shape == (B, N) and mask.dtype == torch.bool
    assert ((~mask).sum(dim=1) == n_vis).all()
    slices = mask.reshape(B, 8, 196)
    if mask_type == "tube":  # one spatial pattern repeated over time
        assert (slices == slices[:, :1]).all()
    if mask_type == "frame":  # whole temporal slices
        assert ((slices.all(dim=2)) | (~slices).all(dim=2)).all()


def test_visible_counts_of_the_authors_and_videomae():
    # adaptive, as the authors' code: floor(N (1 - rho)) visible
    assert visible_count("adaptive", PAPER_GRID, 0.95) == 78    # floor(78.4)
    assert visible_count("adaptive", PAPER_GRID, 0.9) == 156    # floor(156.8)
    assert visible_count("adaptive", PAPER_GRID, 0.9999) == 1   # at least one
    # baselines, as VideoMAE's generators: floor(N rho) masked
    assert visible_count("random", PAPER_GRID, 0.9) == 157      # 1568 - floor(1411.2)
    assert visible_count("random", PAPER_GRID, 0.75) == 392     # 1568 - 1176
    assert visible_count("tube", PAPER_GRID, 0.9) == 8 * 20     # 196 - floor(176.4) per slice
    assert visible_count("tube", PAPER_GRID, 0.75) == 8 * 49    # 196 - 147
    assert visible_count("frame", PAPER_GRID, 0.875) == 196     # 8 - 7 slices
    assert visible_count("frame", PAPER_GRID, 0.8) == 2 * 196   # 8 - floor(6.4) slices
    # products that land a hair below an integer in floats still count as that integer
    assert visible_count("random", (1, 10, 20), 0.9) == 20      # 200 - 180
    assert visible_count("adaptive", (1, 10, 20), 0.9) == 20    # 200 * (1 - 0.9) = 19.999...
    assert visible_count("tube", (8, 10, 10), 0.29) == 8 * 71   # 100 * 0.29 = 28.999...
    assert visible_count("random", (8, 8, 8), 0.9) == 52 and visible_count("tube", (8, 8, 8), 0.9) == 56  # tiny


def test_model_masks_have_the_configured_count_for_every_type():
    for mask_type in MASK_TYPES:
        cfg = small_cfg(mask_type=mask_type, mask_ratio=0.5)
        out = AdaMAE(cfg)(video_for(cfg, batch=3))
        assert ((~out.mask).sum(dim=1) == cfg.num_visible).all()
        assert out.pred.shape == (3, cfg.num_tokens - cfg.num_visible, 2 * 8 * 8 * 3)
        assert (out.log_probs is not None) == (mask_type == "adaptive")


# ---------------------------------------------------------------- sampling without replacement

def check_distinct_sorted_in_range(visible, n):
    assert (visible[:, 1:] > visible[:, :-1]).all(), "indices must be strictly ascending (so distinct)"
    assert visible.min() >= 0 and visible.max() < n


def test_sampling_survives_probabilities_that_underflow_to_zero():
    logits = torch.full((4, 1568), -1e4)
    logits[:, :3] = 0.0  # three tokens hold all the mass; exp(-1e4) == 0 in float32
    log_probs = torch.log_softmax(logits, dim=-1)
    assert (log_probs.exp() == 0).sum() == 4 * 1565
    visible = sample_without_replacement(log_probs, 78)
    check_distinct_sorted_in_range(visible, 1568)
    assert (visible[:, :3] == torch.arange(3)).all()  # the certain tokens are always drawn
    minus_inf = log_probs.clone()
    minus_inf[:, 3:] = float("-inf")
    check_distinct_sorted_in_range(sample_without_replacement(minus_inf, 78), 1568)


def test_sampling_under_bf16_autocast():
    cfg = small_cfg()
    model = AdaMAE(cfg)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(video_for(cfg, batch=4))
    assert out.log_probs.dtype == torch.float32
    torch.testing.assert_close(out.log_probs.exp().sum(dim=1), torch.ones(4))
    visible, _ = split_indices(out.mask, cfg.num_visible)
    check_distinct_sorted_in_range(visible, cfg.num_tokens)
    assert torch.isfinite(out.recon_loss) and torch.isfinite(out.sampling_loss)


def test_draws_follow_successive_sampling_without_replacement():
    """Inclusion frequencies of k=2 draws from N=5 against the exact values
    P(i in S) = p_i + sum_{j != i} p_j * p_i / (1 - p_j)."""
    torch.manual_seed(0)
    p = torch.tensor([0.4, 0.3, 0.15, 0.1, 0.05], dtype=torch.float64)
    exact = p + torch.stack([sum(p[j] * p[i] / (1 - p[j]) for j in range(5) if j != i) for i in range(5)])
    draws = 200_000
    visible = sample_without_replacement(p.log().float().expand(draws, 5), 2)
    check_distinct_sorted_in_range(visible, 5)
    freq = torch.bincount(visible.flatten(), minlength=5).double() / draws
    sigma = (exact * (1 - exact) / draws).sqrt()
    assert ((freq - exact).abs() < 5 * sigma).all(), (freq, exact)
    # ordered pairs too: P({i, j}) = p_i p_j / (1 - p_i) + p_j p_i / (1 - p_j)
    pair = visible[:, 0] * 5 + visible[:, 1]
    pair_freq = torch.bincount(pair, minlength=25).double() / draws
    for i in range(5):
        for j in range(i + 1, 5):
            q = p[i] * p[j] / (1 - p[i]) + p[j] * p[i] / (1 - p[j])
            assert abs(pair_freq[i * 5 + j] - q) < 5 * math.sqrt(q * (1 - q) / draws)


# ---------------------------------------------------------------- gradient isolation (Sec. 3.2)

def grads_by_owner(model):
    sampler = {id(p) for p in model.sampler.parameters()}
    split = {"sampler": [], "mae": []}
    for name, p in model.named_parameters():
        nonzero = p.grad is not None and p.grad.abs().sum() > 0
        split["sampler" if id(p) in sampler else "mae"].append((name, nonzero))
    return split


def test_sampler_starts_uniform():
    out = AdaMAE(small_cfg())(video_for(small_cfg()))
    torch.testing.assert_close(out.log_probs, torch.full_like(out.log_probs, -math.log(32)))


def test_sampling_loss_reaches_only_the_sampler():
    model = AdaMAE(small_cfg())
    torch.nn.init.normal_(model.sampler.head.weight)  # past its zero init, so every sampler weight gets a gradient
    model(video_for(model.cfg)).sampling_loss.backward()
    split = grads_by_owner(model)
    assert any(nonzero for _, nonzero in split["sampler"])
    assert sum(nonzero for _, nonzero in split["sampler"]) >= len(split["sampler"]) - 1
    leaked = [name for name, nonzero in split["mae"] if nonzero]
    assert not leaked, f"L_S reached MAE parameters {leaked}"  # tokenizer included


def test_reconstruction_loss_never_reaches_the_sampler():
    model = AdaMAE(small_cfg())
    model(video_for(model.cfg)).recon_loss.backward()
    split = grads_by_owner(model)
    assert not any(nonzero for _, nonzero in split["sampler"])
    assert any(nonzero for name, nonzero in split["mae"] if name.startswith("tokenizer"))


# ---------------------------------------------------------------- losses

def direct_errors(out, video, cfg):
    """L_R^i and log P_i of every masked token, patch by patch from the definition of cfg.target (Eq. 4)."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1, 1)
    t, p = cfg.tubelet_size, cfg.patch_size
    _, gh, gw = cfg.grid
    errors, log_p = [], []
    for b in range(video.shape[0]):
        pixels = video[b] * std + mean  # back to [0, 1]
        masked = [i for i in range(cfg.num_tokens) if out.mask[b, i]]
        for k, i in enumerate(masked):  # prediction k belongs to the k-th masked token (ascending)
            ti, hi, wi = i // (gh * gw), (i // gw) % gh, i % gw
            where = (slice(None), slice(ti * t, (ti + 1) * t), slice(hi * p, (hi + 1) * p), slice(wi * p, (wi + 1) * p))
            if cfg.target == "pixel":  # the raw patch of the model's input
                patch = video[b][where].reshape(3, -1)
            else:
                patch = pixels[where].reshape(3, -1)  # (C, t*p*p)
                patch = (patch - patch.mean(dim=1, keepdim=True)) / (patch.std(dim=1, unbiased=True, keepdim=True) + 1e-6)
            target = patch.T.reshape(-1)  # (t p p c): pixel-major, channel-minor
            errors.append(((out.pred[b, k] - target) ** 2).mean())
            if out.log_probs is not None:
                log_p.append(out.log_probs[b, i])
    return torch.stack(errors), (torch.stack(log_p) if log_p else None)


def test_losses_match_a_direct_computation():
    torch.manual_seed(0)
    cfg = small_cfg()
    model = AdaMAE(cfg)
    video = video_for(cfg)
    out = model(video)
    errors, log_p = direct_errors(out, video, cfg)
    torch.testing.assert_close(out.recon_loss, errors.mean(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.sampling_loss, -(log_p * errors.detach()).mean(), rtol=1e-5, atol=1e-6)
    # the step back-propagates L_R + lambda * L_S and reports the three (pretrain.train_step)
    torch.manual_seed(0)
    step_model = AdaMAE(cfg).eval()  # no sampler dropout: the same P for the same weights and draw
    torch.manual_seed(1)
    loss, recon, samp = pretrain.train_step(step_model, [video], torch.optim.SGD(step_model.parameters(), lr=0.0),
                                            torch.amp.GradScaler("cpu", enabled=False), torch.autocast("cpu", enabled=False))
    torch.manual_seed(1)
    with torch.no_grad():
        again = step_model(video)
    torch.testing.assert_close(loss, again.recon_loss + cfg.sampling_weight * again.sampling_loss)
    torch.testing.assert_close(torch.stack([recon, samp]), torch.stack([again.recon_loss, again.sampling_loss]))


def test_pixel_target_is_the_mse_against_the_raw_patches_and_the_default_is_unchanged():
    torch.manual_seed(0)
    default = AdaMAE(small_cfg()).eval()
    pixel = AdaMAE(small_cfg(target="pixel")).eval()
    pixel.load_state_dict(default.state_dict())  # the target adds no parameter: the same weights load
    video = video_for(default.cfg)
    torch.manual_seed(1)
    out = pixel(video)
    errors, log_p = direct_errors(out, video, pixel.cfg)
    torch.testing.assert_close(out.recon_loss, errors.mean(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.token_error.flatten(), errors, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.sampling_loss, -(log_p * errors).mean(), rtol=1e-5, atol=1e-6)
    torch.manual_seed(1)
    same_draw = default(video)  # the same weights and draw: the same mask and predictions, another target
    assert torch.equal(same_draw.mask, out.mask) and torch.equal(same_draw.pred, out.pred)
    assert AdaMAEConfig().target == "patch_norm"
    assert not torch.allclose(same_draw.recon_loss, out.recon_loss)
    with pytest.raises(ValueError, match=r"AdaMAEConfig.target='raw'"):
        small_cfg(target="raw")


def test_given_mask_bypasses_the_sampler():
    cfg = small_cfg()
    model = AdaMAE(cfg)
    mask = torch.ones(2, cfg.num_tokens, dtype=torch.bool)
    mask[0, [0, 5, 9]] = False
    mask[1, [1, 2, 31]] = False
    out = model(video_for(cfg), mask=mask)
    assert torch.equal(out.mask, mask) and out.log_probs is None
    assert out.pred.shape[1] == cfg.num_tokens - 3 and out.sampling_loss == 0
    with pytest.raises(ValueError, match="same number"):
        model(video_for(cfg), mask=mask.clone().index_fill_(1, torch.tensor([3]), False).logical_or_(
            torch.tensor([[False], [True]])))


def test_split_indices_ascending_complement():
    mask = torch.tensor([[True, False, True, False, True], [False, True, True, True, False]])
    visible, masked = split_indices(mask, 2)
    assert visible.tolist() == [[1, 3], [0, 4]] and masked.tolist() == [[0, 2, 4], [1, 2, 3]]


def test_every_mask_type_trains_through_the_same_step():
    for mask_type in MASK_TYPES:
        torch.manual_seed(0)
        cfg = small_cfg(mask_type=mask_type, mask_ratio=0.5)
        model = AdaMAE(cfg)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        video = video_for(cfg, batch=4)
        losses = []
        for _ in range(15):
            out = model(video)
            opt.zero_grad()
            (out.recon_loss + cfg.sampling_weight * out.sampling_loss).backward()
            opt.step()
            losses.append(out.recon_loss.item())
        assert all(math.isfinite(x) for x in losses)
        assert np.mean(losses[-3:]) < np.mean(losses[:3]), (mask_type, losses)


# ---------------------------------------------------------------- attention and config

def test_attention_matches_plain_softmax_attention():
    torch.manual_seed(0)
    attn = Attention(dim=24, num_heads=3)
    x = torch.randn(2, 7, 24)
    q, k, v = attn.qkv(x).reshape(2, 7, 3, 3, 8).permute(2, 0, 3, 1, 4)
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(8), dim=-1)
    expected = attn.proj((weights @ v).transpose(1, 2).reshape(2, 7, 24))
    torch.testing.assert_close(attn(x), expected, rtol=1e-5, atol=1e-5)


def test_attention_goes_through_sdpa(monkeypatch):
    calls = []
    real = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or real(*a, **k))
    AdaMAE(small_cfg())(video_for(small_cfg()))
    assert len(calls) == 2 + 1 + 1  # encoder blocks + decoder block + sampler block


@pytest.mark.parametrize("field, value", [
    ("mask_ratio", 1.0), ("mask_ratio", 0.0), ("mask_ratio", -0.1), ("img_size", 30),
    ("num_frames", 5), ("encoder_dim", 30), ("decoder_dim", 15), ("mask_type", "checkerboard"),
])
def test_impossible_configs_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        small_cfg(**{field: value})


def test_ratio_that_hides_nothing_is_refused():
    with pytest.raises(ValueError, match="mask_ratio"):
        small_cfg(mask_ratio=1e-9)  # floor(32 * (1 - 1e-9) + 1e-6) = 32: all visible


def test_presets_and_overrides():
    cfg = AdaMAEConfig.preset("tiny", mask_ratio=0.9)
    assert cfg.mask_ratio == 0.9 and cfg.encoder_dim == 192
    assert AdaMAEConfig.preset("base") == AdaMAEConfig()
    assert AdaMAEConfig.preset("large").encoder_depth == 24
    small, huge = AdaMAEConfig.preset("small"), AdaMAEConfig.preset("huge")  # VideoMAE's ViT-S and ViT-H
    assert (small.encoder_dim, small.encoder_heads, small.decoder_dim, small.decoder_heads) == (384, 6, 192, 3)
    assert (huge.encoder_dim, huge.encoder_depth, huge.encoder_heads, huge.decoder_dim) == (1280, 32, 16, 640)
    assert AdaMAEConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="preset"):
        AdaMAEConfig.preset("giant")


def test_sampler_dropout_is_the_references_and_only_in_training():
    assert AdaMAEConfig().sampler_dropout == 0.1
    model = AdaMAE(small_cfg(sampler_dropout=0.5))
    nn.init.normal_(model.sampler.head.weight)  # a non-zero head, so the block's output reaches P
    block = model.sampler.blocks[0]
    assert block.attn.proj_drop.p == 0.5 and block.mlp.drop.p == 0.5  # attention projection and MLP output
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert dropouts == [block.attn.proj_drop, block.mlp.drop]  # encoder and decoder have none
    tokens = model.tokenizer(video_for(model.cfg)).detach()
    model.train()
    assert not torch.equal(model.sampler(tokens), model.sampler(tokens))
    model.eval()
    torch.testing.assert_close(model.sampler(tokens), model.sampler(tokens), rtol=0, atol=0)
    no_dropout = AdaMAE(small_cfg(sampler_dropout=0.0))
    no_dropout.load_state_dict(model.state_dict())  # dropout adds no parameters: the same weights load
    no_dropout.eval()
    torch.testing.assert_close(no_dropout.sampler(tokens), model.sampler(tokens))


def test_config_round_trips_through_a_checkpoint_and_a_field_missing_is_named(tmp_path):
    cfg = small_cfg(sampler_dropout=0.2, mask_type="adaptive", target="pixel", position_table="3d")
    torch.save({"config": cfg.to_dict()}, tmp_path / "ckpt.pt")
    assert AdaMAEConfig.from_dict(load_checkpoint_file(tmp_path / "ckpt.pt")["config"]) == cfg
    # a config without a field (or with one this version lacks) is refused, naming it and the way out: a field's
    # default is not assumed, since a model trained with another target or table would load and be wrong
    old = {k: v for k, v in cfg.to_dict().items() if k not in ("sampler_dropout", "target")}
    with pytest.raises(ValueError, match=r"old.pt: .*missing \['sampler_dropout', 'target'\]\); add each missing"):
        AdaMAEConfig.from_dict(old, "old.pt")
    with pytest.raises(ValueError, match=r"unknown fields \['colour'\]"):
        AdaMAEConfig.from_dict({**cfg.to_dict(), "colour": 1})
    with pytest.raises(ValueError, match="sampler_dropout"):
        small_cfg(sampler_dropout=1.0)


def test_base_parameter_count_matches_reference_up_to_k_bias():
    """The released ViT-B: 102,501,505 parameters; we store a (zero) k bias in every encoder/decoder block."""
    model = AdaMAE(AdaMAEConfig())
    k_bias = 12 * 768 + 4 * 384
    assert sum(p.numel() for p in model.parameters()) == 102_501_505 + k_bias
    assert isinstance(model.sampler, AdaptiveTokenSampler)

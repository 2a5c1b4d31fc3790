"""AdaMAE (paper Fig. 2): tokenizer -> adaptive token sampler -> encoder -> decoder -> losses.

    tokens   = Tokenizer(video)                          (B, N, D)        tokenizer.py
    log P    = Sampler(tokens.detach())                  (B, N)           Eq. 2-3, sampler.py
    I_v      ~ Categorical(P), N_v draws w/o replacement (B, N_v)         sampler.py
    F_v      = Encoder((tokens + pos)[I_v])              (B, N_v, D)      vit.py
    V_hat    = Decoder([F_v + pos'[I_v]; f_m + pos'[I_m]])[masked]        (B, N - N_v, t*p*p*C)
    L_R      = mean over masked tokens of the MSE to the target V~ (patch-normalised pixels)  Eq. 4
    L_S      = -mean over masked tokens of log P_i * L_R^i (L_R^i detached)        Eq. 5
    loss     = L_R + sampling_weight * L_S, one backward       (pretrain.train_step)

Parameters of `model.sampler` are theta of Eq. 5; all others are phi. The sampler reads detached
tokens and the reward L_R^i is detached, so L_S reaches only theta and L_R never reaches theta.
Mask convention: `mask[b, i] == True` means token i is masked (see sampler.py).
"""

from dataclasses import asdict, dataclass, fields
from typing import ClassVar, Optional

import torch
import torch.nn as nn

from sampler import BASELINE_MASKS, MASK_TYPES, AdaptiveTokenSampler, indices_to_mask, \
    sample_without_replacement, visible_count
from tokenizer import POSITION_TABLES, Tokenizer, imagenet_stats, patchify, position_table
from vit import Transformer, init_weights


@dataclass
class AdaMAEConfig:
    # input: 16 frames of 224x224 RGB, tubelets of 2x16x16 -> 8*14*14 = 1568 tokens
    img_size: int = 224
    num_frames: int = 16
    patch_size: int = 16
    tubelet_size: int = 2
    in_chans: int = 3
    # ViT-B encoder, 4-block decoder (Table 1c), one MHA block in the sampler (Table 1f)
    encoder_dim: int = 768
    encoder_depth: int = 12
    encoder_heads: int = 12
    decoder_dim: int = 384
    decoder_depth: int = 4
    decoder_heads: int = 6
    sampler_depth: int = 1
    sampler_heads: int = 8
    sampler_dropout: float = 0.1  # in the sampler's block, training only
    mlp_ratio: float = 4.0
    drop_path: float = 0.0
    # masking: rho = 0.95 adaptive is the paper's best (Table 1b); lambda = 1e-4 (docs/fidelity.md)
    mask_ratio: float = 0.95
    mask_type: str = "adaptive"
    sampling_weight: float = 1e-4
    # what the decoder predicts (Eq. 4): "patch_norm", pixels normalised per patch (footnote 1, the paper's and
    # the released weights'), or "pixel", the clip's pixels as the model reads them (ImageNet-normalised)
    target: str = "patch_norm"
    # fixed position table of encoder and decoder: "1d" over the flattened token index (the released weights'),
    # or "3d", one sinusoid per axis (time, height, width) side by side (tokenizer.position_table)
    position_table: str = "1d"

    TARGETS: ClassVar[tuple] = ("patch_norm", "pixel")

    # ViT-S/B/L/H as VideoMAE's pre-training models (encoder width, depth, heads; decoder width, heads)
    PRESETS: ClassVar[dict] = {
        "small": dict(encoder_dim=384, encoder_heads=6, decoder_dim=192, decoder_heads=3),
        "base": {},
        "large": dict(encoder_dim=1024, encoder_depth=24, encoder_heads=16, decoder_dim=512, decoder_heads=8),
        "huge": dict(encoder_dim=1280, encoder_depth=32, encoder_heads=16, decoder_dim=640, decoder_heads=8),
        # trains in minutes on a laptop CPU: 16x64x64 clips, 8x8 patches -> 512 tokens, 25 visible
        "tiny": dict(img_size=64, patch_size=8, encoder_dim=192, encoder_depth=4, encoder_heads=3,
                     decoder_dim=96, decoder_depth=2, decoder_heads=3, sampler_heads=4),
    }

    @classmethod
    def preset(cls, name, **overrides):
        if name not in cls.PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose from {sorted(cls.PRESETS)}")
        return cls(**{**cls.PRESETS[name], **overrides})

    @classmethod
    def from_dict(cls, d, source="config"):
        """Rebuild from `asdict(cfg)` (a checkpoint's "config"); every field must be there, none unknown."""
        names = {f.name for f in fields(cls)}
        unknown, missing = sorted(set(d) - names), sorted(names - set(d))
        if unknown or missing:
            raise ValueError(f"{source}: not an AdaMAEConfig of this version (unknown fields {unknown}, missing "
                             f"{missing}); add each missing field, with the value the model was trained with, to the "
                             f"checkpoint's 'config' entry and save it again")
        return cls(**d)

    def to_dict(self):
        return asdict(self)

    def __post_init__(self):
        def check(ok, field, why):
            if not ok:
                raise ValueError(f"AdaMAEConfig.{field}={getattr(self, field)!r}: {why}")
        check(0 < self.mask_ratio < 1, "mask_ratio", "must lie strictly between 0 and 1")
        check(0 <= self.sampler_dropout < 1, "sampler_dropout", "must lie in [0, 1)")
        check(self.mask_type in MASK_TYPES, "mask_type", f"must be one of {MASK_TYPES}")
        check(self.target in self.TARGETS, "target", f"must be one of {self.TARGETS}")
        check(self.position_table in POSITION_TABLES, "position_table", f"must be one of {POSITION_TABLES}")
        check(self.img_size % self.patch_size == 0, "img_size", f"not divisible by patch_size {self.patch_size}")
        check(self.num_frames % self.tubelet_size == 0, "num_frames",
              f"not divisible by tubelet_size {self.tubelet_size}")
        for width, heads in [("encoder_dim", "encoder_heads"), ("decoder_dim", "decoder_heads"),
                             ("encoder_dim", "sampler_heads")]:
            check(getattr(self, width) % getattr(self, heads) == 0, width, f"not divisible by {heads}")
        check(self.num_visible < self.num_tokens, "mask_ratio",
              f"leaves {self.num_visible} of {self.num_tokens} tokens visible for {self.mask_type!r}; nothing to predict")

    @property
    def grid(self):
        """Token grid (T/t, H/p, W/p)."""
        side = self.img_size // self.patch_size
        return (self.num_frames // self.tubelet_size, side, side)

    @property
    def num_tokens(self):
        return self.grid[0] * self.grid[1] * self.grid[2]

    @property
    def num_visible(self):
        return visible_count(self.mask_type, self.grid, self.mask_ratio)


@dataclass
class AdaMAEOutput:
    recon_loss: torch.Tensor       # Eq. 4
    sampling_loss: torch.Tensor    # Eq. 5 (0 when the sampler did not choose the mask)
    pred: torch.Tensor             # (B, N - N_v, t*p*p*C), masked tokens in ascending index order
    mask: torch.Tensor             # (B, N) bool, True = masked
    log_probs: Optional[torch.Tensor]  # (B, N) float32 log P, None unless the sampler drew the mask
    token_error: torch.Tensor      # (B, N - N_v) L_R^i per masked token, float32, detached


class AdaMAE(nn.Module):
    def __init__(self, cfg: AdaMAEConfig):
        super().__init__()
        self.cfg = cfg
        N, patch_dim = cfg.num_tokens, cfg.tubelet_size * cfg.patch_size ** 2 * cfg.in_chans
        self.tokenizer = Tokenizer(cfg.patch_size, cfg.tubelet_size, cfg.in_chans, cfg.encoder_dim)
        self.sampler = (AdaptiveTokenSampler(N, cfg.encoder_dim, cfg.sampler_heads, cfg.sampler_depth, cfg.mlp_ratio,
                                             cfg.sampler_dropout) if cfg.mask_type == "adaptive" else None)
        self.encoder = Transformer(cfg.encoder_dim, cfg.encoder_depth, cfg.encoder_heads, cfg.mlp_ratio, cfg.drop_path)
        self.encoder_to_decoder = nn.Linear(cfg.encoder_dim, cfg.decoder_dim, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.decoder_dim))  # f_m in Sec. 3.1
        self.decoder = Transformer(cfg.decoder_dim, cfg.decoder_depth, cfg.decoder_heads, cfg.mlp_ratio)
        self.head = nn.Linear(cfg.decoder_dim, patch_dim)
        self._init_weights()

    def _init_weights(self):
        self.apply(init_weights)
        # Tokenizer initialised like a Linear over the flattened tubelet (as MAE), not Conv3d's default.
        nn.init.xavier_uniform_(self.tokenizer.proj.weight.view(self.cfg.encoder_dim, -1))
        nn.init.trunc_normal_(self.mask_token, std=0.02)  # as VideoMAE
        if self.sampler is not None:
            # A zero head makes P uniform at step 0: AdaMAE starts as random masking, so any preference
            # the sampler shows later was learned (a random head already favours whatever looks unusual).
            nn.init.zeros_(self.sampler.head.weight)

    def forward(self, video, mask=None):
        """video (B, C, T, H, W), ImageNet-normalised. `mask` (B, N) bool bypasses the sampler."""
        tokens = self.tokenizer(video)                          # (B, N, D)
        log_probs, mask, num_visible = self.sample(tokens, mask)  # (B, N), (B, N)
        visible, masked = split_indices(mask, num_visible)      # (B, N_v), (B, N - N_v)
        latent = self.encode(tokens, visible)                   # (B, N_v, D)
        pred = self.decode(latent, visible, masked)             # (B, N - N_v, t*p*p*C)
        return self.losses(video, pred, mask, masked, log_probs)

    def sample(self, tokens, mask=None):
        """Adaptive Token Sampler (Eq. 2-3) and the draw of I_v; or a baseline mask; or the given one."""
        B, N = tokens.shape[:2]
        cfg = self.cfg
        if mask is not None:
            return None, mask, self.check_mask(mask, B)
        if self.sampler is None:
            return None, BASELINE_MASKS[cfg.mask_type](B, cfg.grid, cfg.mask_ratio, tokens.device), cfg.num_visible
        log_probs = self.sampler(tokens.detach())  # detached: L_S must not reach the tokenizer (Sec. 3.2)
        visible = sample_without_replacement(log_probs.detach(), cfg.num_visible)
        return log_probs, indices_to_mask(visible, N), cfg.num_visible

    def check_mask(self, mask, batch):
        """A caller's mask: right shape and dtype, the same visible count in every row; returns that count."""
        if mask.shape != (batch, self.cfg.num_tokens) or mask.dtype != torch.bool:
            raise ValueError(f"mask must be a ({batch}, {self.cfg.num_tokens}) bool tensor, got "
                             f"{tuple(mask.shape)} {mask.dtype}")
        visible = (~mask).sum(dim=1).tolist()
        if len(set(visible)) != 1 or not 0 < visible[0] < mask.shape[1]:
            raise ValueError(f"every row of the mask must keep the same number (>0, <N) of visible tokens, got {visible}")
        return visible[0]

    def encode(self, tokens, visible):
        """Encoder on the visible tokens only: F_v = ViT((X + pos)[I_v])."""
        pos = position_table(self.cfg.position_table, self.cfg.grid, self.cfg.encoder_dim, tokens.device)
        x = tokens + pos.to(tokens.dtype)                                         # (B, N, D)
        return self.encoder(gather_tokens(x, visible))

    def decode(self, latent, visible, masked):
        """Decoder: [F_v + pos[I_v] ; f_m + pos[I_m]] -> blocks -> head on the masked part (no unshuffle)."""
        x = self.encoder_to_decoder(latent)                                       # (B, N_v, D')
        pos = position_table(self.cfg.position_table, self.cfg.grid, self.cfg.decoder_dim, x.device).to(x.dtype)
        pos = pos.expand(x.shape[0], -1, -1)                                      # (B, N, D')
        x = torch.cat([x + gather_tokens(pos, visible),
                       self.mask_token.to(x.dtype) + gather_tokens(pos, masked)], dim=1)  # (B, N, D')
        x = self.decoder(x)
        return self.head(x[:, visible.shape[1]:])                                 # (B, N - N_v, t*p*p*C)

    def target(self, video):
        """What the decoder learns to predict for every token, V~ of Eq. 4, (B, N, t*p*p*C):
          patch_norm  the pixels in [0, 1], normalised per token and channel: (x - mean) / (std + 1e-6)
                      over its t*p*p values (footnote 1). Each patch's brightness and contrast are removed,
                      so a near-flat patch (a gentle ramp, faint texture, codec noise) is stretched to unit
                      variance, as hard to predict as a patch of the moving object.
          pixel       the pixels as the model reads them (ImageNet-normalised), patch for patch: a patch's
                      error counts its brightness and contrast, so near-flat patches are easy."""
        if self.cfg.target == "pixel":
            return patchify(video.float(), self.cfg.patch_size, self.cfg.tubelet_size)   # (B, N, t*p*p*C)
        x = self.patch_pixels(video)                                                     # (B, N, t*p*p, C)
        x = (x - x.mean(dim=2, keepdim=True)) / (x.std(dim=2, unbiased=True, keepdim=True) + 1e-6)
        return x.flatten(2)                                                              # (B, N, t*p*p*C)

    def patch_pixels(self, video):
        """(B, C, T, H, W) ImageNet-normalised -> pixels in [0, 1] per token and channel, (B, N, t*p*p, C)."""
        mean, std = imagenet_stats(video.device)
        pixels = patchify(video.float() * std + mean, self.cfg.patch_size, self.cfg.tubelet_size)
        return pixels.reshape(*pixels.shape[:2], -1, self.cfg.in_chans)

    def predicted_pixels(self, video, pred, masked):
        """The inverse of `target` for the masked tokens: pred (B, K, t*p*p*C) -> pixels in [0, 1] (unclamped),
        (B, K, t*p*p*C). A patch-normalised prediction carries no brightness or contrast, so the true patch's
        own mean and std are put back; a pixel prediction only needs the ImageNet normalisation undone."""
        C = self.cfg.in_chans
        pred = pred.float().reshape(*pred.shape[:2], -1, C)                              # (B, K, t*p*p, C)
        if self.cfg.target == "pixel":
            mean, std = imagenet_stats(video.device).reshape(2, C)
            return (pred * std + mean).flatten(2)
        truth = gather_tokens(self.patch_pixels(video).flatten(2), masked).reshape(pred.shape)
        std = truth.std(dim=2, unbiased=True, keepdim=True)
        return (pred * (std + 1e-6) + truth.mean(dim=2, keepdim=True)).flatten(2)

    def losses(self, video, pred, mask, masked, log_probs):
        """L_R (Eq. 4) and L_S (Eq. 5).

        L_R is the mean over the batch and the masked tokens of each token's error
        L_R^i = mean((V_hat_i - V~_i)^2), the MSE the text of Sec. 3.2 asks for.

        L_S trains the sampler (theta) as a policy (REINFORCE, Sec. 3.2): drawing the visible set from P is
        the action, the MAE is the environment, and the reward is the reconstruction error, because tokens
        the MAE cannot guess are the ones worth showing it. A draw is not differentiable, but REINFORCE
        (Eq. 1) estimates the gradient of an expected reward from the action taken: R * d log p(a) / d theta.
        The reward of token i, its error L_R^i, is observed for the masked tokens, so Eq. 5 (L_S = -E[L_R],
        "we take logarithm") becomes  L_S = -mean over masked i of  log P_i * L_R^i.  Minimising it raises
        P_i in proportion to how hard token i was, so hard (moving) regions are drawn visible more often.
          * log P, not P: R * grad log P is the REINFORCE estimate of the expected reward's gradient.
          * L_R^i is detached: it is the reward, a number; L_S must not teach the MAE to make errors large.
          * P comes from detached tokens (`sample`): L_S reaches theta and nothing else, while L_R, which
            never touches P, reaches phi and nothing else (tests/test_model.py checks both).
          * the mean, not Eq. 5's sum: the scale is lambda's (`sampling_weight`), and AdamW normalises it.
        """
        with torch.no_grad():
            target = gather_tokens(self.target(video), masked)                   # (B, N - N_v, t*p*p*C)
        token_error = ((pred.float() - target) ** 2).mean(dim=-1)              # L_R^i, (B, N - N_v)
        recon_loss = token_error.mean()                                          # Eq. 4
        if log_probs is None:  # a baseline mask: no sampler to train
            sampling_loss = recon_loss.new_zeros(())
        else:                                                                    # Eq. 5
            sampling_loss = -(log_probs.gather(1, masked) * token_error.detach()).mean()
        return AdaMAEOutput(recon_loss, sampling_loss, pred, mask, log_probs, token_error.detach())


def split_indices(mask, num_visible):
    """(B, N) mask with num_visible False per row -> visible (B, N_v) and masked (B, N - N_v) indices,
    each ascending: a stable sort of the 0/1 mask puts the visible tokens first."""
    order = torch.argsort(mask.to(torch.uint8), dim=1, stable=True)
    return order[:, :num_visible], order[:, num_visible:]


def gather_tokens(x, index):
    """x (B, N, D), index (B, K) -> (B, K, D)."""
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))

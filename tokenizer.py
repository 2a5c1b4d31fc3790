"""Tokenizer (paper Sec. 3.1, Fig. 2 "Tokenizer"): video -> tubelet tokens.

Owns the three ways a video becomes a sequence of N tokens, all with the same token order
(time slowest, then height, then width; docs/method.md):
  * `Tokenizer`          the learnable tubelet embedding, a Conv3d with kernel = stride = (t, p, p)
  * `patchify`           raw pixel values per token, the reconstruction target of Eq. 4
  * `position_table`     the fixed position table added to encoder and decoder tokens: `sinusoid_table`
                         over the flattened index, or `sinusoid_table_3d`, one sinusoid per axis
With the paper's config (16x3x224x224, tubelet 2x16x16) N = 8 * 14 * 14 = 1568.
"""

import functools

import torch
import torch.nn as nn

# Videos enter the model normalised with ImageNet statistics (data.py); the loss undoes it.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Tokenizer(nn.Module):
    """(B, C, T, H, W) video -> (B, N, D) tokens, one per t x p x p tubelet."""

    def __init__(self, patch_size, tubelet_size, in_chans, embed_dim):
        super().__init__()
        kernel = (tubelet_size, patch_size, patch_size)
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=kernel, stride=kernel)

    def forward(self, video):
        x = self.proj(video)                 # (B, D, T/t, H/p, W/p)
        return x.flatten(2).transpose(1, 2)  # (B, N, D), index = t*(H/p)(W/p) + h*(W/p) + w


def patchify(video, patch_size, tubelet_size):
    """(B, C, T, H, W) -> (B, N, t*p*p*C); per token the values run pixel-major, channel-minor:
    b c (T t) (H p) (W p) -> b (T H W) (t p p c), the order of the released VideoMAE/AdaMAE heads."""
    B, C, T, H, W = video.shape
    t, p = tubelet_size, patch_size
    x = video.reshape(B, C, T // t, t, H // p, p, W // p, p)
    x = x.permute(0, 2, 4, 6, 3, 5, 7, 1)  # (B, T/t, H/p, W/p, t, p, p, C)
    return x.reshape(B, (T // t) * (H // p) * (W // p), t * p * p * C)


def unpatchify(tokens, grid, patch_size, tubelet_size, in_chans=3):
    """Exact inverse of `patchify`: (B, N, t*p*p*C) -> (B, C, T, H, W) for grid = (T/t, H/p, W/p)."""
    B = tokens.shape[0]
    gt, gh, gw = grid
    t, p, C = tubelet_size, patch_size, in_chans
    x = tokens.reshape(B, gt, gh, gw, t, p, p, C)
    x = x.permute(0, 7, 1, 4, 2, 5, 3, 6)  # (B, C, T/t, t, H/p, p, W/p, p)
    return x.reshape(B, C, gt * t, gh * p, gw * p)


POSITION_TABLES = ("1d", "3d")  # AdaMAEConfig.position_table


def sinusoid(pos, dim):
    """(n,) float64 positions -> (n, dim) float64: angle = pos / 10000^(2*floor(j/2)/dim), sin on even j, cos
    on odd j. float64 throughout: with the exponent in float32 the entries of late tokens are off by up to
    5.5e-5 at 1568 x 384, enough to move a released ViT-B's reconstruction by 2e-5."""
    j = torch.arange(dim, dtype=torch.float64)
    angle = pos[:, None] / torch.pow(10000.0, 2 * torch.floor(j / 2) / dim)
    return torch.where(j % 2 == 0, torch.sin(angle), torch.cos(angle))


@functools.lru_cache(maxsize=16)
def sinusoid_table(num_tokens, dim, device=None, dtype=torch.float32):
    """Fixed (num_tokens, dim) sinusoid over the flattened token index (time slowest), the table the released
    weights were trained with (the paper calls it "3D periodic"; docs/fidelity.md).
    A cached constant per device, not a parameter or buffer: nothing to save, nothing for DDP to sync.
    Computed in float64 and cast to `dtype` at the end."""
    return sinusoid(torch.arange(num_tokens, dtype=torch.float64), dim).to(device=device, dtype=dtype)


@functools.lru_cache(maxsize=16)
def sinusoid_table_3d(grid, dim, device=None, dtype=torch.float32):
    """Factorised (N, dim) table for grid (T/t, H/p, W/p): each token's row is a sinusoid of its time index,
    one of its row and one of its column, side by side (height and width 2*floor(dim/6) channels each, time
    the rest). Tokens at the same place in different frames share their height and width channels exactly,
    which the 1D table spreads over the whole index. Cached and cast like `sinusoid_table`."""
    side = 2 * (dim // 6)
    t, h, w = torch.meshgrid(*(torch.arange(n, dtype=torch.float64) for n in grid), indexing="ij")  # each grid
    parts = [sinusoid(t.flatten(), dim - 2 * side), sinusoid(h.flatten(), side), sinusoid(w.flatten(), side)]
    return torch.cat(parts, dim=1).to(device=device, dtype=dtype)                    # (N, dim), index as tokens


def position_table(kind, grid, dim, device=None):
    """The fixed (N, dim) float32 table of AdaMAEConfig.position_table `kind` ("1d" or "3d") for grid."""
    if kind == "1d":
        return sinusoid_table(grid[0] * grid[1] * grid[2], dim, device)
    return sinusoid_table_3d(tuple(grid), dim, device)


@functools.lru_cache(maxsize=16)
def imagenet_stats(device=None):
    """(2, 1, C, 1, 1, 1): ImageNet mean and std, each broadcasting over a (B, C, T, H, W) video;
    cached per device like the position table."""
    return torch.tensor([IMAGENET_MEAN, IMAGENET_STD], device=device).reshape(2, 1, 3, 1, 1, 1)

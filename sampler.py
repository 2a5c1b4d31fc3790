"""Which tokens the encoder sees (paper Sec. 3.1 "Adaptive Token Sampler", Eq. 2-3, Fig. 1).

Mask convention, used everywhere in this project: `mask[b, i] == True` means token i is MASKED
(hidden from the encoder, predicted by the decoder); False means visible.

  * `AdaptiveTokenSampler`   MHA block + Linear + softmax over all N tokens -> log P   (Eq. 2, 3)
  * `sample_without_replacement`   N_v distinct indices from Categorical(P) (Gumbel-top-k)
  * `random_mask`, `tube_mask`, `frame_mask`   the baselines of Table 1a, same output contract
  * `visible_count`          how many tokens stay visible for a mask type and ratio rho
"""

import torch
import torch.nn as nn

from vit import Block

MASK_TYPES = ("adaptive", "random", "tube", "frame")


def keep_count(n, mask_ratio):
    """floor(n * (1 - rho)), at least 1; the 1e-6 absorbs float error (200 * (1 - 0.9) = 19.999...)."""
    return max(1, int(n * (1 - mask_ratio) + 1e-6))


def mask_count(n, mask_ratio):
    """floor(n * rho) masked, so n - floor(n * rho) visible; the 1e-6 as in `keep_count`."""
    return int(n * mask_ratio + 1e-6)


def visible_count(mask_type, grid, mask_ratio):
    """N_v for a token grid (T/t, H/p, W/p), the one place the counts are decided.

    Adaptive keeps floor(N (1 - rho)) as the authors' code: 78 of 1568 at rho = 0.95. The baselines of
    Table 1a are VideoMAE's, whose generators floor the MASKED count: random rho = 0.9 keeps
    1568 - 1411 = 157, tube rho = 0.9 keeps 196 - 176 = 20 per slice (160). VideoMAE has no frame
    generator; frame masking is rounded like its tube and random ones (rho = 0.875: 1 of 8 slices)."""
    slices, space = grid[0], grid[1] * grid[2]
    if mask_type == "adaptive":
        return keep_count(slices * space, mask_ratio)
    if mask_type == "tube":  # the same spatial positions in every temporal slice
        return slices * max(1, space - mask_count(space, mask_ratio))
    if mask_type == "frame":  # whole temporal slices
        return max(1, slices - mask_count(slices, mask_ratio)) * space
    return max(1, slices * space - mask_count(slices * space, mask_ratio))


class AdaptiveTokenSampler(nn.Module):
    """Eq. 2-3: Z = MHA(X); P = Softmax(Linear(Z)). Returns log P, (B, N) float32.

    It reads the tokenizer's output detached (the caller's job, see AdaMAE.sample) plus a learnable
    position embedding of its own, so the sampling loss reaches only these parameters (theta)."""

    def __init__(self, num_tokens, dim, num_heads, depth=1, mlp_ratio=4.0, dropout=0.1):
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, dim))
        # No qkv bias and LayerNorm eps 1e-5, so the authors' released sampler loads as it is (docs/fidelity.md);
        # dropout (training only) on its attention projection and MLP output.
        self.blocks = nn.ModuleList(
            Block(dim, num_heads, mlp_ratio, qkv_bias=False, norm_eps=1e-5, drop=dropout) for _ in range(depth))
        self.head = nn.Linear(dim, 1)

    def forward(self, tokens):
        z = tokens + self.pos_embed
        for block in self.blocks:
            z = block(z)                                      # Eq. 2: Z = MHA(X)
        # Eq. 3 in float32 even under autocast: P of 1568 tokens is ~1e-3 each, below bf16's resolution.
        with torch.autocast(z.device.type, enabled=False):
            logits = self.head(z.float()).squeeze(-1)         # (B, N)
            return torch.log_softmax(logits, dim=-1)          # Eq. 3, as log P


def sample_without_replacement(log_probs, k):
    """k distinct indices per row from Categorical(exp(log_probs)), sorted ascending: (B, k).

    The paper draws the N_v visible tokens from P without replacement. Gumbel-top-k does that in one
    parallel step: add independent Gumbel noise g_i = -log(-log u_i) to every log P_i and keep the k largest.
    Why it is the same: the argmax of log P_i + g_i is token i with probability exactly P_i (the Gumbel-max
    trick), and given that winner, the remaining perturbed values are still independent Gumbels around
    their log P_j, so the runner-up is distributed as a draw from P renormalised without the winner, and so
    on: the top k are k successive draws without replacement (tests/test_model.py compares the frequencies
    with the exact probabilities of successive draws). Unlike torch.multinomial it never fails when probabilities underflow to 0,
    and it runs on the device without a host sync."""
    u = torch.rand(log_probs.shape, device=log_probs.device).clamp_min(1e-20)
    gumbel = -torch.log(-torch.log(u))
    return (log_probs.float() + gumbel).topk(k, dim=-1).indices.sort(dim=-1).values


def indices_to_mask(visible, num_tokens):
    """(B, N_v) visible indices -> (B, N) bool mask, True = masked."""
    mask = torch.ones(visible.shape[0], num_tokens, dtype=torch.bool, device=visible.device)
    return mask.scatter(1, visible, False)


def random_mask(batch, grid, mask_ratio, device=None):
    """Random patch masking [11]: visible tokens uniform over space-time."""
    n = grid[0] * grid[1] * grid[2]
    uniform = torch.zeros(batch, n, device=device)
    visible = sample_without_replacement(uniform, visible_count("random", grid, mask_ratio))
    return indices_to_mask(visible, n)


def tube_mask(batch, grid, mask_ratio, device=None):
    """Tube masking [48]: one random spatial mask, repeated over every temporal slice."""
    space = grid[1] * grid[2]
    uniform = torch.zeros(batch, space, device=device)
    visible = sample_without_replacement(uniform, visible_count("tube", grid, mask_ratio) // grid[0])
    return indices_to_mask(visible, space).repeat(1, grid[0])  # (B, T/t * space): slice-major, as the token index


def frame_mask(batch, grid, mask_ratio, device=None):
    """Frame masking [11, 48]: whole temporal slices hidden (rho = 87.5% keeps 1 of 8)."""
    slices, space = grid[0], grid[1] * grid[2]
    uniform = torch.zeros(batch, slices, device=device)
    visible = sample_without_replacement(uniform, visible_count("frame", grid, mask_ratio) // space)
    return indices_to_mask(visible, slices).repeat_interleave(space, dim=1)  # (B, T/t * space)


BASELINE_MASKS = {"random": random_mask, "tube": tube_mask, "frame": frame_mask}

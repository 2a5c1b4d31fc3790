"""Vision Transformer pieces shared by the sampler, encoder, decoder and classifier (paper Sec. 3.1).

Pre-norm blocks: x + Attn(LN(x)), then x + MLP(LN(x)). Attention always goes through
`F.scaled_dot_product_attention`, which picks a flash / memory-efficient kernel when the hardware
has one. `init_weights` is the one place where Linear/LayerNorm initialisation is decided.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


class Attention(nn.Module):
    def __init__(self, dim, num_heads, qkv_bias=True, proj_drop=0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop) if proj_drop > 0 else nn.Identity()

    def forward(self, x):
        B, N, D = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, D // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, N, D/heads)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(B, N, D)))


class MLP(nn.Module):
    def __init__(self, dim, hidden, drop=0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        # dropout on the output only, as VideoMAE's Mlp (the one after the activation is commented out there)
        self.drop = nn.Dropout(drop) if drop > 0 else nn.Identity()

    def forward(self, x):
        return self.drop(self.fc2(self.act(self.fc1(x))))


def drop_path(x, p, training):
    """Stochastic depth: drop the whole residual branch per sample with probability p."""
    if p == 0.0 or not training:
        return x
    keep = torch.rand(x.shape[0], *([1] * (x.dim() - 1)), device=x.device) >= p
    return x * keep.to(x.dtype) / (1 - p)


class Block(nn.Module):
    """`drop`: dropout on the attention projection and the MLP output in training (the sampler's 0.1);
    0 everywhere else, and then no dropout layer at all (nothing drawn from the random stream)."""

    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=True, drop_path=0.0, norm_eps=1e-6, drop=0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias, proj_drop=drop)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = MLP(dim, int(dim * mlp_ratio), drop)
        self.drop_path = drop_path

    def forward(self, x):
        x = x + drop_path(self.attn(self.norm1(x)), self.drop_path, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training)


class Transformer(nn.Module):
    """`depth` blocks (drop-path rising linearly to `drop_path`), then an optional final LayerNorm."""

    def __init__(self, dim, depth, num_heads, mlp_ratio=4.0, drop_path=0.0, final_norm=True):
        super().__init__()
        rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(Block(dim, num_heads, mlp_ratio, drop_path=r) for r in rates)
        self.norm = nn.LayerNorm(dim, eps=1e-6) if final_norm else nn.Identity()

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


def init_weights(module):
    """Xavier-uniform Linear weights, zero biases, LayerNorm 1/0 (as MAE/VideoMAE)."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)

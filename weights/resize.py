"""A checkpoint at another clip size than it was trained with (e.g. 16 -> 8 or 32 frames, 224 -> 160 or 288 px).

num_frames and img_size change the token grid (T/t, H/p, W/p) and N, nothing else. The tokenizer and the
transformer blocks do not depend on N, and the encoder's and decoder's position table is a fixed sinusoid,
recomputed for the grid of every clip (tokenizer.position_table). What is laid out on the grid is the sampler's
learned position embedding (1, N, D): for further pre-training at another size it is resampled over (T, H, W).

  * `at_clip_size`           AdaMAEConfig with another num_frames / img_size (None keeps the value)
  * `resize_pos_embed`       (1, N, D) on one grid -> (1, N', D) on another, trilinear; the identity at equal size
  * `resize_pretrained`      (config, AdaMAE state dict) -> the same at another clip size
"""

from dataclasses import replace

import torch.nn.functional as F


def at_clip_size(cfg, num_frames=None, img_size=None):
    """cfg with num_frames and/or img_size replaced; the config's own checks (divisibility by tubelet and
    patch size, tokens left to predict) raise a ValueError naming the field."""
    changes = {k: v for k, v in (("num_frames", num_frames), ("img_size", img_size)) if v is not None}
    return replace(cfg, **changes) if changes else cfg


def resize_pos_embed(pos_embed, grid, new_grid):
    """(1, T*H*W, D) embedding in token order (time slowest, then height, width) -> (1, T'*H'*W', D): trilinear
    interpolation with align_corners=False, so each new token samples the old grid where its centre falls."""
    (T, H, W), D = grid, pos_embed.shape[-1]
    x = pos_embed.reshape(1, T, H, W, D).permute(0, 4, 1, 2, 3)                    # (1, D, T, H, W)
    x = F.interpolate(x.float(), size=tuple(new_grid), mode="trilinear", align_corners=False)
    return x.permute(0, 2, 3, 4, 1).reshape(1, -1, D).to(pos_embed.dtype)           # (1, T'*H'*W', D)


def resize_pretrained(cfg, state, num_frames=None, img_size=None):
    """(AdaMAEConfig, AdaMAE state dict) -> the same at another clip size: the config's grid changes and the
    sampler's position embedding, when there is one, is resampled to it; every other tensor is kept as is."""
    new = at_clip_size(cfg, num_frames, img_size)
    state = dict(state)
    if "sampler.pos_embed" in state:
        state["sampler.pos_embed"] = resize_pos_embed(state["sampler.pos_embed"], cfg.grid, new.grid)
    return new, state

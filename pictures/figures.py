"""Pictures: the paper's Fig. 4 (and Fig. 1, mask types side by side) for one clip, line plots of
curves (study.py), a small bitmap font for their labels, and writing PNG / GIF / MP4 with PyAV.

For one clip, `figure` draws 5 named rows, one column per temporal slice of tubelets (the column
shows the first of the slice's `tubelet_size` frames):

  (a) input           the clip, un-normalised with the ImageNet mean/std
  (b) P               the sampler's probability of each token (Eq. 3), a heat map scaled by the
                      clip's largest P (dark = unlikely, bright yellow = the most likely token);
                      random/tube/frame masks draw every token alike, so their row is uniform bright
  (c) mask            visible patches as in the input, masked patches grey
  (d) reconstruction  predicted patches turned back into pixels (`AdaMAE.predicted_pixels`, the
                      inverse of `AdaMAE.target`: a patch-normalised prediction gets each true
                      patch's own per-channel mean and std back); visible patches pasted from the input
  (e) error           L_R^i of each masked token (`token_error`, Eq. 4) scaled by the clip's largest
                      error, same colours as (b); visible tokens are grey (nothing was predicted)

Several blocks (one per mask type, each titled with it) stack top to bottom for the same model and
clip: baselines enter through `model(video, mask=...)`. `animation_frames` shows the same five panels
side by side for every frame of the clip. Heat maps use an approximation of matplotlib's "inferno".
Small clips are enlarged by an integer nearest-neighbour factor so a tile is at least MIN_TILE pixels
high. Pictures are written with PyAV: PNG stills, GIF (256-colour palette) or H.264 MP4 animations.
"""

from pathlib import Path

import av
import numpy as np
import torch

from adamae import split_indices
from tokenizer import imagenet_stats, patchify, unpatchify

GREY = 128        # masked patches in (c), visible tokens in (e)
GAP = 4           # white pixels between and around tiles
MIN_TILE = 128    # small clips are enlarged until a tile is at least this high
# "inferno" at 5 evenly spaced points, interpolated linearly in between
INFERNO = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float64)


# 3x5 glyphs, rows top to bottom, "1" = ink. Upper case is drawn as lower case.
GLYPHS = dict(zip(
    "0123456789abcdefghijklmnopqrstuvwxyz.-+_()=/,: ",
    """111101101101111 010110010010111 111001111100111 111001111001111 101101111001001
       111100111001111 111100111101111 111001001010010 111101111101111 111101111001111
       010101111101101 110101110101110 011100100100011 110101101101110 111100110100111
       111100110100100 011100101101011 101101111101101 111010010010111 001001001101010
       101101110101101 100100100100111 101111111101101 110101101101101 010101101101010
       110101110100100 010101101110011 110101110101101 011100010001110 111010010010010
       101101101101111 101101101101010 101101111111101 101101010101101 101101010010010
       111001010100111 000000000000010 000000111000000 000010111010000 000000000000111
       010100100100010 010001001001010 000111000111000 001001010100100 000000000010100
       000010000010000 000000000000000""".split()))
FONT_SCALE = 2    # screen pixels per glyph pixel: letters 6 x 10 pixels, 8 pixels apart
ROW_NAMES = ("input", "p (eq. 3)", "mask", "reconstruction", "error (eq. 4)")


def text(image, x, y, string, colour=(0, 0, 0)):
    """Draw `string` (lower case; characters without a glyph as spaces) with its top-left corner at (x, y)."""
    for k, char in enumerate(string.lower()):
        bits = np.array([c == "1" for c in GLYPHS.get(char, GLYPHS[" "])]).reshape(5, 3)
        glyph = np.kron(bits, np.ones((FONT_SCALE, FONT_SCALE), bool))      # (5 * scale, 3 * scale)
        region = image[y:y + glyph.shape[0], x + 4 * FONT_SCALE * k:x + 4 * FONT_SCALE * (k + 1) - FONT_SCALE]
        region[glyph[:region.shape[0], :region.shape[1]]] = colour


def text_width(string):
    return len(string) * 4 * FONT_SCALE


def colormap(values):
    """Floats in [0, 1], any shape -> uint8 RGB (..., 3)."""
    stops = np.linspace(0, 1, len(INFERNO))
    v = np.clip(values, 0, 1)
    return np.stack([np.interp(v, stops, INFERNO[:, c]) for c in range(3)], axis=-1).round().astype(np.uint8)


def to_uint8(x):
    """Tensor in [0, 1] -> uint8 array."""
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def token_map(values, cfg):
    """(N,) per-token values -> (T, H, W): every pixel of a tubelet carries its token's value."""
    x = values.reshape(cfg.grid)
    x = x.repeat_interleave(cfg.tubelet_size, 0).repeat_interleave(cfg.patch_size, 1)
    return x.repeat_interleave(cfg.patch_size, 2)


@torch.no_grad()
def render(model, video, mask=None):
    """One clip (1, C, T, H, W), ImageNet-normalised -> the five panels (a)-(e) for every frame,
    uint8 (5, T, H, W, 3). `mask` (1, N) bool (True = masked) replaces the model's own draw; the
    P row is then uniform, as it is for random/tube/frame models (no sampler chose the mask)."""
    if video.shape[0] != 1:
        raise ValueError(f"render takes one clip (1, C, T, H, W), got {tuple(video.shape)}")
    cfg = model.cfg
    was_training = model.training
    model.eval()
    out = model(video, mask=mask)
    model.train(was_training)
    N, C, t, p = cfg.num_tokens, cfg.in_chans, cfg.tubelet_size, cfg.patch_size
    is_masked = out.mask.cpu()                                                  # (1, N)
    masked = split_indices(out.mask, N - out.pred.shape[1])[1]                  # (1, N - N_v), on the device
    predicted = model.predicted_pixels(video, out.pred, masked).cpu()           # (1, N - N_v, t*p*p*C) in [0, 1]
    masked = masked[0].cpu()                                                    # (N - N_v,)

    mean, std = imagenet_stats()
    pixels = video.float().cpu() * std + mean                                   # (1, C, T, H, W) in [0, 1]
    recon = patchify(pixels, p, t).clone()                                      # (1, N, t*p*p*C), own memory
    recon[:, masked] = predicted
    recon = unpatchify(recon, cfg.grid, p, t, C)                                # (1, C, T, H, W)

    if out.log_probs is None:  # a baseline mask: every token equally likely
        probs = torch.full((N,), 1.0 / N)
    else:
        probs = out.log_probs[0].float().cpu().exp()
    error = torch.zeros(N)
    error[masked] = out.token_error[0].float().cpu()
    hidden = token_map(is_masked[0], cfg).numpy()[..., None]                     # (T, H, W, 1)

    frames = to_uint8(pixels[0].permute(1, 2, 3, 0))                             # (T, H, W, 3)
    prob_map = colormap(token_map(probs / probs.max(), cfg).numpy())
    masked_frames = np.where(hidden, np.uint8(GREY), frames)
    recon_frames = to_uint8(recon[0].permute(1, 2, 3, 0))
    error_map = colormap(token_map(error / error.max().clamp_min(1e-12), cfg).numpy())
    error_map = np.where(hidden, error_map, np.uint8(GREY))
    return np.stack([frames, prob_map, masked_frames, recon_frames, error_map])


def upscale_factor(size):
    """Integer nearest-neighbour factor that makes a tile of `size` pixels at least MIN_TILE high."""
    return max(1, -(-MIN_TILE // size))


def label_margins(row_names, col_names):
    """(top, left): room for the column names above the tiles and the row names left of them."""
    top = 5 * FONT_SCALE + 2 * GAP if col_names else 0
    return top, max(map(text_width, row_names), default=-GAP) + 2 * GAP


def tile(images, row_names=(), col_names=()):
    """(rows, cols, h, w, 3) uint8 -> one picture: each image enlarged by upscale_factor(h), GAP white
    pixels between and around them, names written left of the rows and above the columns."""
    rows, cols, h, w, _ = images.shape
    s = upscale_factor(h)
    h, w = h * s, w * s
    top, left = label_margins(row_names, col_names)
    canvas = np.full((top + rows * (h + GAP) + GAP, left + cols * (w + GAP), 3), 255, dtype=np.uint8)
    for r in range(rows):
        for c in range(cols):
            y, x = top + GAP + r * (h + GAP), left + c * (w + GAP)
            canvas[y:y + h, x:x + w] = images[r, c].repeat(s, axis=0).repeat(s, axis=1)
    for r, name in enumerate(row_names):
        text(canvas, GAP, top + GAP + r * (h + GAP) + (h - 5 * FONT_SCALE) // 2, name)
    for c, name in enumerate(col_names):
        text(canvas, left + c * (w + GAP) + (w - text_width(name)) // 2, GAP, name)
    return canvas


def titled(picture, title):
    """A band with `title` above the picture (the mask type of a block)."""
    band = np.full((5 * FONT_SCALE + 2 * GAP, picture.shape[1], 3), 255, dtype=np.uint8)
    text(band, GAP, GAP, title)
    return np.concatenate([band, picture], axis=0)


def stack(pictures):
    """Pictures of equal width, one above the other, with a wider white band between them."""
    band = np.full((3 * GAP, pictures[0].shape[1], 3), 255, dtype=np.uint8)
    parts = [part for picture in pictures for part in (band, picture)][1:]
    return np.concatenate(parts, axis=0)


def still(blocks, tubelet_size, names):
    """Panels of one or more blocks (each from `render`) -> per block its name, then 5 named rows x T/t
    columns (one per temporal slice: t = 0, 2, ...)."""
    columns = [f"t={f}" for f in range(0, blocks[0].shape[1], tubelet_size)]
    return stack([titled(tile(panels[:, ::tubelet_size], ROW_NAMES, columns), name)
                  for panels, name in zip(blocks, names)])


def moving(blocks, names):
    """Panels of one or more blocks -> one picture per frame: a row per block (named on the left), its
    five panels named above."""
    return [tile(np.stack([panels[:, f] for panels in blocks]), names, ROW_NAMES) for f in range(blocks[0].shape[1])]


def block_name(cfg, mask_type=None):
    """What a block shows: the mask type (the model's own without one) and rho."""
    return f"{mask_type or cfg.mask_type} masking, rho = {cfg.mask_ratio:g}"


def figure(model, video, mask=None):
    """The Fig. 4 picture of one clip (1, C, T, H, W): uint8 (height, width, 3), rows (a)-(e)."""
    return still([render(model, video, mask)], model.cfg.tubelet_size, [block_name(model.cfg)])


def animation_frames(model, video, mask=None):
    """One uint8 picture per frame: input | P | mask | reconstruction | error."""
    return moving([render(model, video, mask)], [block_name(model.cfg)])


# ----------------------------------------------------------------------------- writing files

def save_png(image, path):
    """uint8 (H, W, 3) RGB -> PNG file, encoded by PyAV."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="image2") as container:
        stream = container.add_stream("png")
        stream.height, stream.width = image.shape[:2]
        stream.pix_fmt = "rgb24"
        container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")))
        container.mux(stream.encode())


def rgb15(pixels):
    """uint8 (..., 3) -> (...,) index of the colour at 5 bits per channel, one of 32768 bins."""
    p = pixels.astype(np.int64) >> 3
    return (p[..., 0] << 10) | (p[..., 1] << 5) | p[..., 2]


def gif_palette(frames):
    """GIF holds 256 colours: the 256 most frequent 5-bit colours of all frames (each entry the mean
    colour of its bin) and a lookup table from each of the 32768 bins to its nearest entry."""
    pixels = np.concatenate([f.reshape(-1, 3) for f in frames])
    codes = rgb15(pixels)
    counts = np.bincount(codes, minlength=1 << 15)
    top = np.argsort(-counts, kind="stable")[:256]
    sums = np.stack([np.bincount(codes, weights=pixels[:, c], minlength=1 << 15)[top] for c in range(3)], 1)
    palette = np.round(sums / np.maximum(counts[top], 1)[:, None]).astype(np.uint8)   # (256, 3)
    bins = np.arange(1 << 15)
    centres = (np.stack([bins >> 10, (bins >> 5) & 31, bins & 31], 1) * 8 + 4).astype(np.float32)
    entries = palette.astype(np.float32)
    distance = (centres ** 2).sum(1, keepdims=True) - 2 * centres @ entries.T + (entries ** 2).sum(1)
    return palette, distance.argmin(1).astype(np.uint8)


def save_animation(frames, path, fps=4):
    """uint8 (H, W, 3) frames -> .gif (one shared 256-colour palette) or .mp4 (H.264), by PyAV."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".gif":
        palette, lookup = gif_palette(frames)
        argb = np.concatenate([np.full((256, 1), 255, np.uint8), palette], axis=1)  # PyAV takes ARGB
        video = [av.VideoFrame.from_ndarray((lookup[rgb15(f)], argb), format="pal8") for f in frames]
    elif suffix == ".mp4":  # yuv420p needs even sides: pad with white
        pad = ((0, frames[0].shape[0] % 2), (0, frames[0].shape[1] % 2), (0, 0))
        video = [av.VideoFrame.from_ndarray(np.pad(f, pad, constant_values=255), format="rgb24") for f in frames]
    else:
        raise ValueError(f"{path}: animations are written as .gif or .mp4")
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("gif" if suffix == ".gif" else "libx264", rate=fps)
        stream.height, stream.width = video[0].height, video[0].width
        stream.pix_fmt = "pal8" if suffix == ".gif" else "yuv420p"
        for frame in video:
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def save_blocks(blocks, names, tubelet_size, png_path, anim_path=None, fps=4):
    """Blocks of panels (from `render`) and their names -> the still as PNG and, if anim_path is given,
    the animation."""
    save_png(still(blocks, tubelet_size, names), png_path)
    if anim_path is not None:
        save_animation(moving(blocks, names), anim_path, fps)


def save_figure(model, video, png_path, anim_path=None, mask=None):
    """Write the Fig. 4 still to png_path and, if given, the animation (.gif or .mp4), both from
    the same forward pass (the same drawn mask)."""
    save_blocks([render(model, video, mask)], [block_name(model.cfg)], model.cfg.tubelet_size, png_path, anim_path)

"""Fine-tuning augmentation (docs/recipe.md): RandAugment "rand-m7-n4-mstd0.5-inc1" and random erasing
p = 0.25 in 'pixel' mode on each clip, mixup / cutmix and label smoothing on each batch, on float tensors
with torch only. Everything random is drawn ONCE per clip and applied to every frame: a clip's motion
stays intact.

  * `parse_rand_augment(spec)`     "rand-m7-n4-mstd0.5-inc1" -> (magnitude, ops per clip, std, op names)
  * `draw_rand_augment(spec)`      one clip's draw: [(op name, argument)], each op kept with prob 0.5
  * `rand_augment(clip, ops)`      apply a draw to a float (T, 3, H, W) clip in [0, 1]
  * `random_erasing(video, p)`     one box, the same on every frame, N(0, 1) noise in it (after normalising)
  * `mix_batch(video, labels, C)`  mixup or cutmix (a box over H and W on every frame), smoothed soft targets

Magnitudes as timm's RandAugment (m on a 0..10 scale, noise of std `mstd` per op, clipped to [0, 10]):
rotate up to 30 degrees, shear up to 0.3, translate up to 45% of the side (random sign each), colour /
contrast / brightness / sharpness factors 1 -+ 0.9 m/10, posterize to 4 - int(0.4 m) bits, solarize above
256 - int(25.6 m), solarize-add int(11 m). Where the tensor version differs from PIL's: values stay
float between ops (PIL rounds to 8 bits after each); AutoContrast stretches the float min..max; the
geometric ops sample bicubically (their default) with a grey (128) fill that blends at the border.
"""

import math
import re

import torch
import torch.nn.functional as F

# The "inc1" op list: photometric ops whose strength grows with the magnitude, then the geometric ones.
INCREASING_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing",
                  "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing",
                  "SharpnessIncreasing", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
PLAIN_OPS = tuple(name.replace("Increasing", "") for name in INCREASING_OPS)  # "inc0"
MAX_LEVEL = 10.0
FILL = 128 / 255
GREY = (0.299, 0.587, 0.114)  # PIL's RGB -> L weights


def parse_rand_augment(spec):
    """"rand-m7-n4-mstd0.5-inc1" -> (magnitude 7.0, 4 ops per clip, magnitude std 0.5, INCREASING_OPS)."""
    parts = spec.split("-")
    if parts[0] != "rand":
        raise ValueError(f"RandAugment spec {spec!r} must start with 'rand-'")
    magnitude, num_ops, std, ops = MAX_LEVEL, 2, 0.0, PLAIN_OPS
    for part in parts[1:]:
        match = re.fullmatch(r"([a-z]+)(\d+(?:\.\d+)?)", part)
        key, value = match.groups() if match else (part, "")
        if key == "m":
            magnitude = float(value)
        elif key == "n":
            num_ops = int(value)
        elif key == "mstd":
            std = float(value)
        elif key == "inc":
            ops = INCREASING_OPS if int(value) else PLAIN_OPS
        else:
            raise ValueError(f"RandAugment spec {spec!r}: unknown section {part!r} (known: m, n, mstd, inc)")
    return magnitude, num_ops, std, ops


def _signed(value, generator):
    return -value if bool(torch.rand((), generator=generator) < 0.5) else value


def op_argument(name, level, generator=None):
    """The argument an op takes at `level` in [0, 10] (timm's level_to_arg; signs drawn here)."""
    f = level / MAX_LEVEL
    if name in ("AutoContrast", "Equalize", "Invert"):
        return None
    if name == "Rotate":
        return _signed(30.0 * f, generator)  # degrees
    if name in ("ShearX", "ShearY"):
        return _signed(0.3 * f, generator)
    if name in ("TranslateXRel", "TranslateYRel"):
        return _signed(0.45 * f, generator)  # share of the width / height
    if name == "Posterize":
        return int(4 * f)  # bits kept
    if name == "PosterizeIncreasing":
        return 4 - int(4 * f)
    if name == "Solarize":
        return int(256 * f)  # threshold on the 0..255 scale
    if name == "SolarizeIncreasing":
        return 256 - int(256 * f)
    if name == "SolarizeAdd":
        return int(110 * f)  # added below 128
    if name.endswith("Increasing"):  # Color / Contrast / Brightness / Sharpness: 1 -+ 0.9 f
        return 1.0 + _signed(0.9 * f, generator)
    return 1.8 * f + 0.1  # the same four, plain: 0.1 .. 1.9


def draw_rand_augment(spec, generator=None):
    """One clip's RandAugment: n ops chosen uniformly with replacement, each applied with probability 0.5
    at magnitude ~ N(m, mstd) clipped to [0, 10]. Returns [(op name, argument)] of the ops applied."""
    magnitude, num_ops, std, names = parse_rand_augment(spec)
    chosen = torch.randint(len(names), (num_ops,), generator=generator).tolist()
    ops = []
    for index in chosen:
        if bool(torch.rand((), generator=generator) > 0.5):
            continue
        level = magnitude + std * float(torch.randn((), generator=generator)) if std > 0 else magnitude
        level = min(MAX_LEVEL, max(0.0, level))
        ops.append((names[index], op_argument(names[index], level, generator)))
    return ops


def rand_augment(clip, ops):
    """Apply a draw of `draw_rand_augment` to a float (T, 3, H, W) clip in [0, 1]: every frame alike."""
    for name, arg in ops:
        clip = OPS[name.replace("Increasing", "")](clip, arg).clamp(0.0, 1.0)
    return clip


# ----------------------------------------------------------------------------- photometric ops (per frame)

def _grey(clip):
    """(T, 3, H, W) -> (T, 1, H, W) luminance, as PIL's convert('L')."""
    return sum(w * clip[:, c:c + 1] for c, w in enumerate(GREY))


def _blend(degenerate, clip, factor):
    """PIL's ImageEnhance: degenerate + factor * (clip - degenerate)."""
    return degenerate + factor * (clip - degenerate)


def _bytes(clip):
    return (clip * 255).round()


def auto_contrast(clip, _):
    """Each frame's channels stretched so their min..max spans 0..1 (flat channels unchanged)."""
    lo, hi = clip.amin(dim=(2, 3), keepdim=True), clip.amax(dim=(2, 3), keepdim=True)
    return torch.where(hi > lo, (clip - lo) / (hi - lo).clamp_min(1e-12), clip)


def equalize(clip, _):
    """PIL's histogram equalisation per frame and channel, on the 8-bit values."""
    T, C, H, W = clip.shape
    q = _bytes(clip).long().reshape(T * C, H * W)
    hist = torch.zeros(T * C, 256).scatter_add_(1, q, torch.ones(T * C, H * W))
    last = 255 - (hist.flip(1) > 0).float().argmax(dim=1, keepdim=True)  # the highest value present
    step = (hist.sum(1, keepdim=True) - hist.gather(1, last)) // 255
    before = hist.cumsum(1) - hist  # pixels below each value
    lut = ((step // 2 + before) // step.clamp_min(1)).clamp(max=255)
    lut = torch.where(step > 0, lut, torch.arange(256.0))  # one value only: unchanged, as PIL
    return (lut.gather(1, q) / 255).reshape(T, C, H, W)


def invert(clip, _):
    return 1.0 - clip


def posterize(clip, bits):
    """Keep the `bits` most significant bits of each 8-bit value (0 bits: black)."""
    if bits >= 8:
        return clip
    step = 2 ** (8 - bits)
    return torch.div(_bytes(clip), step, rounding_mode="floor") * step / 255


def solarize(clip, threshold):
    """Invert the values >= threshold (0..256 scale)."""
    return torch.where(_bytes(clip) >= threshold, 1.0 - clip, clip)


def solarize_add(clip, add):
    """Add `add` (0..255 scale) to the values below 128."""
    return torch.where(_bytes(clip) < 128, clip + add / 255, clip)


def color(clip, factor):
    return _blend(_grey(clip), clip, factor)


def contrast(clip, factor):
    """Blend with each frame's mean grey level."""
    return _blend(_grey(clip).mean(dim=(1, 2, 3), keepdim=True), clip, factor)


def brightness(clip, factor):
    return _blend(torch.zeros_like(clip), clip, factor)


def sharpness(clip, factor):
    """Blend with PIL's SMOOTH filter (3x3, centre 5, others 1, / 13); the border keeps its pixels."""
    kernel = torch.ones(1, 1, 3, 3, dtype=clip.dtype)
    kernel[..., 1, 1] = 5.0
    T, C, H, W = clip.shape
    smooth = F.conv2d(clip.reshape(T * C, 1, H, W), kernel / 13).reshape(T, C, H - 2, W - 2)
    degenerate = clip.clone()
    degenerate[..., 1:-1, 1:-1] = smooth
    return _blend(degenerate, clip, factor)


# ----------------------------------------------------------------------------- geometric ops (PIL affine)

def affine(clip, matrix):
    """PIL's Image.transform(AFFINE, (a, b, c, d, e, f)): output pixel (x, y) reads the input at
    (a x + b y + c, d x + e y + f), pixel centres at +0.5; bicubic; outside the frame grey 128."""
    T, _, H, W = clip.shape
    a, b, c, d, e, f = matrix
    y, x = torch.meshgrid(torch.arange(H, dtype=clip.dtype) + 0.5, torch.arange(W, dtype=clip.dtype) + 0.5,
                          indexing="ij")
    x_in, y_in = a * x + b * y + c, d * x + e * y + f                  # input pixel coordinates, (H, W) each
    grid = torch.stack([2 * x_in / W - 1, 2 * y_in / H - 1], dim=-1)   # grid_sample's [-1, 1], (H, W, 2)
    # zeros outside the frame, shifted so that they read as the grey fill
    return F.grid_sample(clip - FILL, grid.expand(T, H, W, 2), mode="bicubic", padding_mode="zeros",
                         align_corners=False) + FILL


def rotate(clip, degrees):
    """Counter-clockwise about the centre, as PIL's Image.rotate."""
    H, W = clip.shape[-2:]
    angle = -math.radians(degrees)
    cos, sin = math.cos(angle), math.sin(angle)
    cx, cy = W / 2, H / 2
    return affine(clip, (cos, sin, cx - cos * cx - sin * cy, -sin, cos, cy + sin * cx - cos * cy))


OPS = {
    "AutoContrast": auto_contrast, "Equalize": equalize, "Invert": invert, "Rotate": rotate,
    "Posterize": posterize, "Solarize": solarize, "SolarizeAdd": solarize_add, "Color": color,
    "Contrast": contrast, "Brightness": brightness, "Sharpness": sharpness,
    "ShearX": lambda clip, s: affine(clip, (1, s, 0, 0, 1, 0)),
    "ShearY": lambda clip, s: affine(clip, (1, 0, 0, s, 1, 0)),
    "TranslateXRel": lambda clip, share: affine(clip, (1, 0, share * clip.shape[-1], 0, 1, 0)),
    "TranslateYRel": lambda clip, share: affine(clip, (1, 0, 0, 0, 1, share * clip.shape[-2])),
}


# ----------------------------------------------------------------------------- random erasing

def random_erasing(video, probability, generator=None, area=(0.02, 1 / 3), min_aspect=0.3, tries=100):
    """With `probability`, one box of a random area share and log-uniform aspect ratio, the same on every
    frame, refilled with per-pixel N(0, 1) noise: timm's RandomErasing(mode='pixel', count 1) as VideoMAE
    applies it to a clip (fresh noise per frame), after normalisation. video (3, T, H, W); a new tensor."""
    if probability <= 0 or bool(torch.rand((), generator=generator) >= probability):
        return video
    C, T, H, W = video.shape
    log_aspect = (math.log(min_aspect), -math.log(min_aspect))
    for _ in range(tries):
        u = torch.rand(2, generator=generator).tolist()
        target = (area[0] + u[0] * (area[1] - area[0])) * H * W
        aspect = math.exp(log_aspect[0] + u[1] * (log_aspect[1] - log_aspect[0]))
        h, w = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if w < W and h < H:
            top = int(torch.randint(H - h + 1, (), generator=generator))
            left = int(torch.randint(W - w + 1, (), generator=generator))
            video = video.clone()
            video[:, :, top:top + h, left:left + w] = torch.randn(C, T, h, w, generator=generator, dtype=video.dtype)
            return video
    return video


# ----------------------------------------------------------------------------- mixup, cutmix, label smoothing
# On a batch in the training loop (finetune.py): sample i pairs with sample B-1-i; cutmix cuts H and W with the
# same box on every frame. Randomness comes from torch's global RNG, which the training loop seeds per epoch.

def smooth_one_hot(target, num_classes, smoothing):
    """(B,) labels -> (B, C) soft targets: 1 - smoothing + smoothing/C on the label, smoothing/C elsewhere."""
    off = smoothing / num_classes
    return torch.full((len(target), num_classes), off, device=target.device).scatter_(
        1, target[:, None], 1.0 - smoothing + off)


def cutmix_box(h, w, lam, generator=None):
    """(top, bottom, left, right) of a box of about (1 - lam) of the h x w frame, its centre uniform,
    clipped at the border (timm's rand_bbox); the clipped area is what `mix_batch` counts."""
    cut = math.sqrt(1.0 - lam)
    ch, cw = int(h * cut), int(w * cut)
    cy, cx = (int(torch.randint(n, (), generator=generator)) for n in (h, w))
    top, bottom = max(cy - ch // 2, 0), min(cy + ch // 2, h)
    left, right = max(cx - cw // 2, 0), min(cx + cw // 2, w)
    return top, bottom, left, right


def mix_batch(video, target, num_classes, mixup=0.8, cutmix=1.0, smoothing=0.1):
    """(B, C, T, H, W) video and (B,) labels -> mixed video and (B, num_classes) soft targets.

    Mixup blends whole clips with weight lam ~ Beta(mixup, mixup); cutmix pastes a box of the partner
    clip, over H and W on every frame, with lam ~ Beta(cutmix, cutmix) corrected to 1 - pasted area.
    With both on, each batch uses one of them with probability 0.5."""
    soft = smooth_one_hot(target, num_classes, smoothing)
    if mixup <= 0 and cutmix <= 0:
        return video, soft
    use_cutmix = cutmix > 0 and (mixup <= 0 or bool(torch.rand(()) < 0.5))
    alpha = cutmix if use_cutmix else mixup
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    partner = video.flip(0)
    if use_cutmix:
        H, W = video.shape[-2:]
        top, bottom, left, right = cutmix_box(H, W, lam)
        video = video.clone()
        video[..., top:bottom, left:right] = partner[..., top:bottom, left:right]  # all channels and frames
        lam = 1.0 - (bottom - top) * (right - left) / (H * W)
    else:
        video = lam * video + (1.0 - lam) * partner
    return video, lam * soft + (1.0 - lam) * soft.flip(0)

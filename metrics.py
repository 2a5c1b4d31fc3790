"""What the sampler has learned, as numbers (the paper's Fig. 3-4 claim: P concentrates where the video
moves). `pretrain.py` logs them every `--eval_every` steps; `study.py` draws them against steps.

  * foreground enrichment   (share of P on the moving object) / (share of its tokens), on synthetic
                            clips whose object boxes are known; random masking scores 1
  * motion correlation      Spearman rank correlation of P with each token's frame-difference energy;
                            needs no boxes, so it also checks real data; random masking scores 0
"""

import json
from pathlib import Path

import torch

from data import VideoDataset, clip_indices, decode_frames, eval_crops, read_list, video_length
from demo.synthetic import load_boxes
from tokenizer import patchify

# ----------------------------------------------------------------------------- foreground enrichment

def foreground_tokens(boxes, indices, cfg, video_size):
    """(N,) bool: token overlaps the object's box in any frame of its tubelet. Boxes are in video pixels
    (x0, y0, x1, y1, exclusive); the evaluation clip is the whole square frame resized to img_size."""
    t, p = cfg.tubelet_size, cfg.patch_size
    gt, gh, gw = cfg.grid
    scale = cfg.img_size / video_size
    box = torch.tensor([boxes[i] for i in indices], dtype=torch.float32).reshape(gt, t, 4) * scale
    lo = torch.arange(gh) * p  # patch edges in pixels, the same for rows and columns
    rows = (lo[None, None, :] < box[..., 3:4]) & (lo[None, None, :] + p > box[..., 1:2])  # (gt, t, gh)
    cols = (lo[None, None, :] < box[..., 2:3]) & (lo[None, None, :] + p > box[..., 0:1])  # (gt, t, gw)
    hit = (rows[..., :, None] & cols[..., None, :]).any(dim=1)  # (gt, gh, gw)
    return hit.flatten()


def load_enrichment_clips(root, cfg, stride, max_clips=16):
    """Held-out synthetic clips (start 0, whole frame) with their foreground token masks, or None for a set
    without object boxes (demo.synthetic.draw_clutter's scenes)."""
    boxes, info = load_boxes(root), json.loads((Path(root) / "synthetic.json").read_text())
    clips, fg = [], []
    for path, _ in read_list(Path(root) / "val.csv")[:max_clips]:
        key = Path(path).resolve().relative_to(Path(root).resolve()).as_posix()  # as boxes.json names it
        indices = clip_indices(video_length(path), cfg.num_frames, stride, start=0)
        clips.append(eval_crops(decode_frames(path, indices), cfg.img_size)[0])
        fg.append(None if boxes[key] is None else foreground_tokens(boxes[key], indices, cfg, info["size"]))
    return torch.stack(clips), (None if any(f is None for f in fg) else torch.stack(fg))


@torch.no_grad()
def foreground_enrichment(model, clips, fg, device, batch=8):
    """(share of P on foreground tokens) / (share of tokens in the foreground), and the same for the
    sampled visible tokens; mean over clips. Random masking scores 1 on both."""
    model.eval()
    prob_share, vis_share = [], []
    for i in range(0, len(clips), batch):
        out = model(clips[i:i + batch].to(device))
        f = fg[i:i + batch].to(device).float()
        base = f.mean(dim=1)
        vis_share.append(((~out.mask).float() * f).sum(1) / (~out.mask).sum(1) / base)
        if out.log_probs is not None:
            prob_share.append((out.log_probs.exp() * f).sum(1) / base)
    model.train()
    prob = torch.cat(prob_share).mean().item() if prob_share else float("nan")
    return prob, torch.cat(vis_share).mean().item()


# ----------------------------------------------------------------------------- motion correlation (no boxes needed)

def average_ranks(x):
    """Ranks along the last dim (1 = smallest); tied values share the average of their ranks."""
    less = (x[..., None, :] < x[..., :, None]).sum(-1)  # (..., N): how many are smaller
    equal = (x[..., None, :] == x[..., :, None]).sum(-1)  # (..., N): ties, itself included
    return less + (equal + 1) / 2


def spearman(a, b):
    """Spearman rank correlation of a and b along the last dim (Pearson of average ranks). A constant
    side (e.g. the uniform P of an untrained sampler) prefers nothing: its correlation is 0, not nan."""
    ra, rb = average_ranks(a.float()), average_ranks(b.float())
    ra, rb = ra - ra.mean(-1, keepdim=True), rb - rb.mean(-1, keepdim=True)
    norm = (ra.square().sum(-1) * rb.square().sum(-1)).sqrt()
    return torch.where(norm > 0, (ra * rb).sum(-1) / norm.clamp_min(1e-12), torch.zeros_like(norm))


def motion_energy(clips, cfg):
    """(B, C, T, H, W) -> (B, N): per token, the mean squared difference between each of its frames
    and the frame before it, over its t x p x p pixels and channels (the clip's first frame takes its
    difference to the second). Zero where nothing moves, whatever the texture."""
    diff = clips.float().diff(dim=2).square()  # (B, C, T - 1, H, W)
    diff = torch.cat([diff[:, :, :1], diff], dim=2)  # (B, C, T, H, W)
    return patchify(diff, cfg.patch_size, cfg.tubelet_size).mean(-1)


@torch.no_grad()
def motion_correlation(model, clips, device, batch=8):
    """Mean over clips of Spearman(P, motion energy) per token: +1 when the sampler ranks tokens
    exactly by how much they move, 0 for random masking (P uniform). Needs no boxes, so it also
    checks a run on real data, where static texture and sensor noise compete with motion."""
    if model.sampler is None:
        return float("nan")
    model.eval()
    rho = []
    for i in range(0, len(clips), batch):
        video = clips[i:i + batch].to(device)
        rho.append(spearman(model(video).log_probs.exp(), motion_energy(video, model.cfg)))
    model.train()
    return torch.cat(rho).mean().item()


# ----------------------------------------------------------------------------- both, on fixed clips

def load_probe_clips(synthetic_root, samples, cfg, stride, num_videos):
    """The fixed clips the sampler is measured on, (clips, foreground masks or None): the synthetic
    set's held-out clips with their object boxes, or the evaluation view of the data's first readable
    videos (None if none of them is)."""
    if synthetic_root is not None:
        return load_enrichment_clips(synthetic_root, cfg, stride)
    views = VideoDataset(samples[:num_videos], cfg.num_frames, stride, cfg.img_size, train=False)
    clips = [clip for clip, _, unreadable in (views[i] for i in range(len(views))) if not unreadable]
    return (torch.stack(clips), None) if clips else None  # unreadable ones are left out (the dataset warned)


def measure_sampler(model, probe, device):
    """{"motion_correlation": ...} and, with object boxes, the two foreground enrichments."""
    clips, fg = probe
    record = {"motion_correlation": motion_correlation(model, clips, device)}
    if fg is not None:
        record["enrichment"], record["enrichment_visible"] = foreground_enrichment(model, clips, fg, device)
    return record


def describe_sampler(record):
    """`measure_sampler`'s record as the line the training loop prints."""
    motion = f"motion correlation {record['motion_correlation']:+.2f}"
    if "enrichment" not in record:
        return motion
    return (f"foreground enrichment {record['enrichment']:.2f} (sampled visible tokens "
            f"{record['enrichment_visible']:.2f}), {motion}")

"""The pre-trained encoder put to use (paper Sec. 4): the classifier fine-tuning trains, the multi-view
evaluation of Tables 2-3, and the frozen encoder's features with a linear probe on them.

  * `VideoClassifier`   the AdaMAE encoder over all N tokens, mean pooling, LayerNorm, a linear head
  * `load_encoder`      the tokenizer and encoder blocks of a pre-training checkpoint into it
  * `evaluate`          each video's views -> softmax averaged, gathered over every process in order;
                        unreadable videos left out and named, never replaced
  * `encode_views`      the frozen encoder's mean-pooled features per view, gathered the same way
  * `fit_probe`         a linear classifier on standardised features (MAE's linear probe), L-BFGS
  * `views_dataset`     a source's videos as their multi-view test views
  * `frozen_encoder`    the encoder of a classifier, of a pre-training checkpoint, or random weights, frozen
"""

import math

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from adamae import AdaMAEConfig
from data import VideoDataset
from engine import all_reduce, gather_rows
from tokenizer import Tokenizer, position_table
from vit import Transformer, init_weights
from weights.convert import read_classifier, read_pretrained
from weights.resize import at_clip_size

# ----------------------------------------------------------------------------- model

class VideoClassifier(nn.Module):
    """(B, 3, T, H, W) video -> (B, num_classes) logits: the AdaMAE encoder over all N tokens, mean pooling,
    LayerNorm, Linear. Parameter names match `convert.read_classifier` (VideoMAE's classifiers)."""

    def __init__(self, cfg: AdaMAEConfig, num_classes, drop_path=0.1):
        super().__init__()
        self.cfg = cfg
        self.tokenizer = Tokenizer(cfg.patch_size, cfg.tubelet_size, cfg.in_chans, cfg.encoder_dim)
        # No final norm: mean pooling then fc_norm replaces it, as in VideoMAE's fine-tuning model.
        self.encoder = Transformer(cfg.encoder_dim, cfg.encoder_depth, cfg.encoder_heads, cfg.mlp_ratio, drop_path,
                                   final_norm=False)
        self.fc_norm = nn.LayerNorm(cfg.encoder_dim, eps=1e-6)
        self.head = nn.Linear(cfg.encoder_dim, num_classes)
        self._init_weights()

    def _init_weights(self):
        self.apply(init_weights)
        nn.init.xavier_uniform_(self.tokenizer.proj.weight.view(self.cfg.encoder_dim, -1))  # as AdaMAE
        # A near-zero head starts every class at the same logit, so early steps do not wreck the encoder.
        with torch.no_grad():
            self.head.weight.mul_(0.001)
            self.head.bias.mul_(0.001)

    def features(self, video):
        """(B, 3, T, H, W) -> (B, D): the encoder over all N tokens, mean-pooled (before fc_norm)."""
        x = self.tokenizer(video)                    # (B, N, D)
        pos = position_table(self.cfg.position_table, self.cfg.grid, x.shape[2], x.device).to(x.dtype)
        x = self.encoder(x + pos)   # (B, N, D), all tokens: no masking at fine-tuning
        return x.mean(dim=1)

    def forward(self, video):
        return self.head(self.fc_norm(self.features(video)))  # (B, num_classes)


def is_encoder_key(key):
    """The pre-trained tensors a classifier takes: the patch embedding and the encoder blocks."""
    return key.startswith("tokenizer.") or key.startswith("encoder.blocks.")


def load_encoder(model, state_dict):
    """Copy the tokenizer and encoder blocks of an AdaMAE state dict into a VideoClassifier; the sampler,
    decoder, encoder_to_decoder, mask_token, head and the encoder's final norm are dropped.
    Returns (loaded, missing, dropped) key lists; raises if a tensor the encoder needs is absent."""
    kept = {k: v for k, v in state_dict.items() if is_encoder_key(k)}
    missing, _ = model.load_state_dict(kept, strict=False)  # shapes are still checked: a mismatch raises
    needed = [k for k in missing if not k.startswith(("fc_norm.", "head."))]
    if needed:
        raise ValueError(f"the pre-training checkpoint lacks encoder tensors {needed}")
    return sorted(kept), sorted(missing), sorted(k for k in state_dict if not is_encoder_key(k))


# ----------------------------------------------------------------------------- evaluation

def average_views(logits):
    """(B, V, C) logits of V views per video -> (B, C) mean of the views' softmax (not of the logits:
    one over-confident view must not outvote the others)."""
    return logits.float().softmax(dim=-1).mean(dim=1)


def topk_accuracy(probs, labels, k):
    """Share of videos whose label is among the k most probable classes."""
    return (probs.topk(k, dim=-1).indices == labels[:, None]).any(dim=-1).float().mean().item()


@torch.no_grad()
def per_video(fn, dataset, device, autocast, batch_size, num_workers=0, rank=0, world=1, progress=False):
    """`fn` of each video's views ((B, V, 3, T, H, W) on the device -> (B, K)) for every video of the dataset
    -> (rows (N, K) float64, labels (N,), unreadable (N,) bool), in dataset order and the same on every rank.
    Rank r takes videos r, r + world, ...: none padded in, none dropped (no drop_last); with fewer videos
    than ranks a shard is empty. An unreadable video's row is computed from the dataset's placeholder:
    the caller leaves it out."""
    shard = range(rank, len(dataset), world)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=shard, num_workers=num_workers,
                                         pin_memory=device.type == "cuda")  # as engine.make_loader
    rows = []  # per video: label, unreadable, fn's row (K)
    for views, label, unreadable in tqdm(loader, desc="videos", unit="batch", disable=not progress or rank != 0,
                                         dynamic_ncols=True):
        views = views.reshape(len(label), -1, *views.shape[-4:])   # (B, V, 3, T, H, W); one view: V = 1
        with autocast:
            out = fn(views.to(device, non_blocking=True)).float().cpu()
        rows.append(torch.cat([label[:, None], unreadable[:, None], out], dim=1).double())
    width = int(all_reduce(rows[0].shape[1] if rows else 0, op=dist.ReduceOp.MAX))  # what an empty shard lacks
    rows = gather_rows(torch.cat(rows) if rows else torch.zeros(0, width), torch.tensor(list(shard)), len(dataset))
    return rows[:, 2:], rows[:, 0].long(), rows[:, 1] > 0


def evaluate(model, dataset, device, autocast, batch_size, num_workers=0, rank=0, world=1):
    """Softmax averaged over each video's views -> (probs (N, C), labels (N,), left_out), the same on every
    rank: N readable videos in dataset order, and the paths of the unreadable ones, left out of the metric
    (never replaced by another video, which would count one twice). Sharded as `per_video`."""
    def video_probs(views):  # (B, V, 3, T, H, W) -> (B, C)
        return average_views(model(views.flatten(0, 1)).reshape(*views.shape[:2], -1))

    was_training = model.training
    model.eval()
    probs, labels, unreadable = per_video(video_probs, dataset, device, autocast, batch_size, num_workers, rank, world)
    model.train(was_training)
    left_out = [dataset.samples[i][0] for i in unreadable.nonzero().flatten().tolist()]
    return probs[~unreadable].float(), labels[~unreadable], left_out


def left_out_text(left_out):
    """How a result says which videos it could not count."""
    if not left_out:
        return ""
    names = ", ".join(left_out[:5]) + (", ..." if len(left_out) > 5 else "")
    return f"; {len(left_out)} unreadable video(s) left out: {names}"


# ----------------------------------------------------------------------------- frozen features and the linear probe

def encode_views(model, dataset, device, autocast, batch_size, num_workers=0, rank=0, world=1, per_view=True):
    """Mean-pooled encoder features of every view -> ((N, V, D) float32, or (N, D) averaged over the views when
    not per_view; labels (N,)), in dataset order on every rank, sharded as `per_video`, with a progress bar on
    rank 0. An unreadable video gets a row of NaN (the dataset warned with its name and gave a placeholder
    clip, whose features must not stand for it)."""
    def video_features(views):  # (B, V, 3, T, H, W) -> (B, V * D) or (B, D)
        f = model.features(views.flatten(0, 1)).reshape(*views.shape[:2], -1)
        return (f if per_view else f.mean(dim=1)).flatten(1)

    feats, labels, unreadable = per_video(video_features, dataset, device, autocast, batch_size, num_workers, rank,
                                          world, progress=True)
    feats[unreadable] = float("nan")
    return (feats.reshape(len(dataset), -1, model.cfg.encoder_dim) if per_view else feats).float(), labels


def fit_probe(features, labels, num_classes, weight_decay, steps):
    """Multinomial logistic regression on frozen features (n, D) -> nn.Linear(D, num_classes) on raw features.

    The features are standardised per dimension with their own mean and std, and the scaling is folded into
    the returned layer. That is MAE's linear probe (a BatchNorm without affine before the head): with features
    computed once, its statistics are exactly these. Not fc_norm: it is a LayerNorm that fine-tuning learns,
    and a pre-training checkpoint has none. Full-batch L-BFGS on cross-entropy + weight_decay/2 |W|^2 from
    zeros: a convex problem, so the result does not depend on a seed."""
    mean, std = features.mean(dim=0), features.std(dim=0).clamp_min(1e-6)
    x = (features - mean) / std
    layer = nn.Linear(features.shape[1], num_classes).to(features.device)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    optimizer = torch.optim.LBFGS(layer.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(layer(x), labels) + weight_decay / 2 * layer.weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():  # W (x - mean) / std + b = (W / std) x + (b - (W / std) mean)
        layer.weight.div_(std)
        layer.bias.sub_(layer.weight @ mean)
    return layer.requires_grad_(False)


def labelled_subset(labels, per_class, seed):
    """Indices of `per_class` training videos of every class drawn with `seed` (all videos when None)."""
    if per_class is None:
        return torch.arange(len(labels))
    generator, chosen = torch.Generator().manual_seed(seed), []
    for c in labels.unique().tolist():
        members = (labels == c).nonzero().flatten().cpu()
        if len(members) < per_class:
            raise ValueError(f"--probe_per_class {per_class}: class {c} has only {len(members)} training videos")
        chosen.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
    return torch.cat(chosen).sort().values


def readable(features, labels):
    """The rows of the videos whose features are not NaN (`encode_views` marks unreadable videos so)."""
    keep = ~features.isnan().flatten(1).any(dim=1)
    return features[keep], labels[keep]


def probe(train, test, num_classes, weight_decay, steps):
    """A linear probe fitted on every view of the training videos, tested like fine-tuning: softmax averaged
    over each test video's views. train, test: ((N, V, D) features, (N,) labels); videos with NaN features
    (unreadable) are left out. -> {"top1", "topk", "k", "train_videos", "test_videos"}."""
    (x, y), (x_test, y_test) = readable(*train), readable(*test)
    layer = fit_probe(x.flatten(0, 1), y.repeat_interleave(x.shape[1]), num_classes, weight_decay, steps)
    probs = average_views(layer(x_test))  # (n, V, C) -> (n, C)
    k = min(5, num_classes)
    return {"top1": topk_accuracy(probs, y_test, 1), "topk": topk_accuracy(probs, y_test, k), "k": k,
            "train_videos": len(x), "test_videos": len(x_test)}


def mean_and_error(values):
    """(mean, standard error of the mean) of a list; the error is 0 for a single value."""
    t = torch.tensor(values, dtype=torch.float64)
    return t.mean().item(), (t.std() / math.sqrt(len(t))).item() if len(t) > 1 else 0.0


# ----------------------------------------------------------------------------- sources

def views_dataset(source, cfg, stride, sampling, test_clips, test_crops):
    """Every video of `source` ([(path, label)], a list file or a folder) as its multi-view test views:
    test_clips x test_crops, clip-major."""
    return VideoDataset(source, num_frames=cfg.num_frames, stride=stride, img_size=cfg.img_size, train=False,
                        sampling=sampling, test_clips=test_clips, test_crops=test_crops)


def frozen_encoder(device, resume=None, pretrained=None, scratch=False, preset="tiny", seed=0, num_frames=None,
                   img_size=None):
    """(VideoClassifier in eval mode without gradients, where its weights come from): the encoder of a fine-tuned
    classifier (`resume`), of a pre-training checkpoint (`pretrained`), or random weights drawn with `seed`
    (`scratch`; the architecture of `pretrained` if given, else `preset`), the baseline that shows what
    pre-training added. Only the encoder is used: `VideoClassifier.features`. num_frames / img_size (None:
    the checkpoint's) run the same weights at another clip size."""
    if scratch:
        cfg = read_pretrained(pretrained)[0] if pretrained else AdaMAEConfig.preset(preset)
        state, num_classes, source = None, 1, f"random weights (seed {seed})"
        torch.manual_seed(seed)
    elif resume:
        cfg, state, num_classes = read_classifier(resume)
        source = f"the encoder of {resume}"
    elif pretrained:
        (cfg, state), num_classes, source = read_pretrained(pretrained), 1, f"the encoder of {pretrained}"
    else:
        raise ValueError("which encoder? --pretrained (pre-training checkpoint), --resume (classifier) or --scratch")
    model = VideoClassifier(at_clip_size(cfg, num_frames, img_size), num_classes)
    if resume and not scratch:
        model.load_state_dict(state)
    elif state is not None:
        load_encoder(model, state)
    return model.to(device).eval().requires_grad_(False), source

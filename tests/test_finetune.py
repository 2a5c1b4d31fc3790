"""finetune.py: layer-decay groups, mixup/cutmix, multi-view positions, softmax averaging, the pre-trained
key mapping, real fine-tuning steps with resume, and distributed evaluation that counts every video once."""

import argparse
import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

import classifier
import finetune
from adamae import AdaMAE, AdaMAEConfig
from classifier import VideoClassifier, average_views, evaluate, load_encoder, topk_accuracy
from weights.convert import read_classifier, read_pretrained, reference_to_classifier
from data import VideoDataset
from engine import gather_rows, save_checkpoint
from augment import cutmix_box, mix_batch
from data import load_samples
from finetune import make_optimizer
from tools import features, predict, probe
from demo.synthetic import write_video
from test_convert import random_state_dict, reference_block, reference_block_shapes, sinusoid, \
    write_reference_pretrain
from test_pretrain import free_port, losses_by_step, read_log
from tokenizer import IMAGENET_MEAN, IMAGENET_STD


def small_config():
    """8 frames of 32 px, 8 px patches: 64 tokens, a 2-block encoder; fast enough for real training steps."""
    return AdaMAEConfig(img_size=32, num_frames=8, patch_size=8, encoder_dim=32, encoder_depth=2, encoder_heads=4,
                        decoder_dim=16, decoder_depth=1, decoder_heads=2, sampler_heads=4, mask_ratio=0.75)


def write_pretrained(path):
    """A pretrain.py checkpoint of a small AdaMAE at path, written by engine.save_checkpoint."""
    torch.manual_seed(0)
    model = AdaMAE(small_config())
    opt = torch.optim.AdamW(model.parameters())
    save_checkpoint(path, model, opt, torch.amp.GradScaler("cpu", enabled=False), 10, 0, model.cfg,
                    finetune.get_args([])[0])
    return path


@pytest.fixture(scope="module")
def pretrained_path(tmp_path_factory):
    return write_pretrained(tmp_path_factory.mktemp("pretrain") / "checkpoint.pt")


# ----------------------------------------------------------------------------- optimiser

def test_layer_decay_groups_cover_every_parameter_once_with_the_expected_scales():
    model = VideoClassifier(AdaMAEConfig.preset("tiny"), num_classes=4)  # 4 blocks: layers 0..5
    opt = make_optimizer(model, 1e-3, 0.05, 0.75)
    grouped = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())
    group_of = {id(p): g for g in opt.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    expected = {"tokenizer.proj.weight": 0.75 ** 5, "encoder.blocks.0.attn.qkv.weight": 0.75 ** 4,
                "encoder.blocks.3.mlp.fc2.bias": 0.75, "fc_norm.weight": 1.0, "head.weight": 1.0}
    for name, scale in expected.items():
        assert group_of[id(named[name])]["lr_scale"] == pytest.approx(scale), name
    for name in ("tokenizer.proj.bias", "encoder.blocks.1.norm1.weight", "fc_norm.bias", "head.bias"):
        assert group_of[id(named[name])]["weight_decay"] == 0.0, name
    for name in ("tokenizer.proj.weight", "encoder.blocks.1.attn.qkv.weight", "head.weight"):
        assert group_of[id(named[name])]["weight_decay"] == 0.05, name


# ----------------------------------------------------------------------------- mixup, cutmix

def test_cutmix_box_covers_h_and_w_on_every_frame_and_lambda_is_the_kept_area():
    torch.manual_seed(0)
    video = torch.stack([torch.zeros(3, 4, 12, 16), torch.ones(3, 4, 12, 16)])  # (2, C, T, H, W)
    target = torch.tensor([0, 1])
    for _ in range(20):
        mixed, soft = mix_batch(video, target, num_classes=2, mixup=0.0, cutmix=1.0, smoothing=0.0)
        pasted = mixed[0]  # sample 0 is zeros: the ones are sample 1's box
        assert torch.equal(pasted, pasted[:1, :1].expand_as(pasted))  # the same box in every channel and frame
        rows, cols = pasted[0, 0].any(dim=1), pasted[0, 0].any(dim=0)
        assert torch.equal(pasted[0, 0].bool(), rows[:, None] & cols[None, :])  # a rectangle over H and W
        lam = 1 - pasted[0, 0].mean().item()
        assert soft[0].tolist() == pytest.approx([lam, 1 - lam])
        assert soft[1].tolist() == pytest.approx([1 - lam, lam])
        assert torch.equal(mixed[1] + mixed[0], torch.ones_like(mixed[0]))  # partners swap the same box
    top, bottom, left, right = cutmix_box(10, 20, lam=0.75, generator=torch.Generator().manual_seed(3))
    assert 0 <= top <= bottom <= 10 and 0 <= left <= right <= 20 and bottom - top <= 5 and right - left <= 10


def test_mixup_targets_sum_to_one_and_match_the_blend():
    torch.manual_seed(1)
    video, target = torch.randn(4, 3, 2, 8, 8), torch.tensor([0, 1, 2, 2])
    mixed, soft = mix_batch(video, target, num_classes=5, mixup=0.8, cutmix=0.0, smoothing=0.1)
    assert soft.sum(dim=1).tolist() == pytest.approx([1.0] * 4)
    lam = ((mixed[0] - video[3]) / (video[0] - video[3])).mean().item()  # sample 0 pairs with sample 3
    torch.testing.assert_close(mixed, lam * video + (1 - lam) * video.flip(0), rtol=1e-4, atol=1e-5)
    assert soft[0, 0].item() == pytest.approx(lam * (0.9 + 0.02) + (1 - lam) * 0.02, abs=1e-5)
    plain, smooth = mix_batch(video, target, 5, mixup=0, cutmix=0, smoothing=0.1)
    assert plain is video and smooth[0].tolist() == pytest.approx([0.92, 0.02, 0.02, 0.02, 0.02])


# ----------------------------------------------------------------------------- multi-view test

def test_multiview_clip_starts_and_crop_offsets(tmp_path, numbered_video, frame_number):
    # time: 40 numbered frames, clips of 4 frames at stride 2 span 7 -> starts spread over [0, 33]
    ds = VideoDataset([(str(numbered_video), 0)], num_frames=4, stride=2, img_size=32, train=False,
                      test_clips=3, test_crops=3)
    views = ds[0][0]
    denorm = lambda v: ((v.permute(1, 2, 3, 0) * torch.tensor(IMAGENET_STD) + torch.tensor(IMAGENET_MEAN)) * 255)
    assert [frame_number(denorm(v).numpy())[0] for v in views] == [0, 0, 0, 16, 16, 16, 33, 33, 33]
    # space: a 32x48 frame whose column x has grey level 5x; 32 px crops start at x = 0, 8, 16
    ramp = np.repeat((5 * np.arange(48, dtype=np.uint8))[None, None, :, None], 32, axis=1)
    write_video(tmp_path / "ramp.mp4", np.repeat(np.repeat(ramp, 3, axis=3), 8, axis=0))
    ds = VideoDataset([(str(tmp_path / "ramp.mp4"), 0)], num_frames=4, stride=1, img_size=32, train=False,
                      test_clips=1, test_crops=3)
    first_columns = [denorm(v)[0, :, 0].mean().item() / 5 for v in ds[0][0]]
    assert first_columns == pytest.approx([0, 8, 16], abs=0.6)


def test_views_are_merged_by_averaging_softmax_not_logits():
    # one over-confident view for class 1, two moderate views for class 0
    logits = torch.tensor([[[0.0, 10.0], [2.0, 0.0], [2.0, 0.0]]])
    assert logits.mean(dim=1).argmax().item() == 1
    probs = average_views(logits)
    assert probs.argmax().item() == 0
    torch.testing.assert_close(probs, logits.softmax(-1).mean(dim=1))
    labels = torch.tensor([0, 2])
    two = torch.tensor([[0.5, 0.3, 0.2], [0.5, 0.3, 0.2]])
    assert topk_accuracy(two, labels, 1) == 0.5 and topk_accuracy(two, labels, 3) == 1.0


# ----------------------------------------------------------------------------- loading

def test_pretrained_encoder_is_kept_and_pretraining_parts_dropped(pretrained_path):
    cfg, state = read_pretrained(pretrained_path)
    assert cfg == small_config()
    torch.manual_seed(1)
    model = VideoClassifier(cfg, num_classes=3)
    head = model.head.weight.clone()
    loaded, missing, dropped = load_encoder(model, state)
    assert set(loaded) == {k for k in model.state_dict() if k.startswith(("tokenizer.", "encoder.blocks."))}
    assert missing == ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
    assert {"encoder.norm.weight", "encoder.norm.bias", "mask_token", "encoder_to_decoder.weight", "head.weight",
            "sampler.pos_embed", "decoder.blocks.0.attn.qkv.weight"} <= set(dropped)
    assert set(loaded) | set(dropped) == set(state)
    for key in loaded:
        assert torch.equal(model.state_dict()[key], state[key]), key
    assert torch.equal(model.head.weight, head) and head.abs().max() < 0.01  # head init scaled by 0.001
    broken = {k: v for k, v in state.items() if k != "encoder.blocks.1.mlp.fc1.weight"}
    with pytest.raises(ValueError, match="encoder.blocks.1.mlp.fc1.weight"):
        load_encoder(VideoClassifier(cfg, 3), broken)
    with pytest.raises(FileNotFoundError, match="missing.pt: no such checkpoint file"):
        read_pretrained(pretrained_path.parent / "missing.pt")


def test_demo_without_a_pretraining_checkpoint_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="run `python pretrain.py` first"):
        finetune.main(["--out_dir", str(tmp_path / "ft"), "--pretrained", str(tmp_path / "none.pt")])
    assert not (tmp_path / "ft").exists()  # it stops before generating the demo's videos


def test_classifier_names_match_the_reference_classifier_converter():
    """A VideoMAE-named classifier (patch_embed, blocks.i with q/v biases, fc_norm, head) loads strictly."""
    cfg = small_config()
    ours = VideoClassifier(cfg, num_classes=5).state_dict()
    theirs = {}
    for key, value in ours.items():
        key = key.replace("tokenizer.", "patch_embed.").replace("encoder.blocks.", "blocks.")
        if key.endswith("attn.qkv.bias"):
            q, _, v = value.chunk(3)
            theirs[key.replace("qkv.bias", "q_bias")], theirs[key.replace("qkv.bias", "v_bias")] = q, v
        else:
            theirs[key] = value
    VideoClassifier(cfg, num_classes=5).load_state_dict(reference_to_classifier({"model": theirs}))


def write_reference_classifier(path, cfg, num_classes, seed=0):
    """A fine-tuned classifier in VideoMAE's layout (mean pooling: fc_norm + head) with its `args`."""
    D, p, t = cfg.encoder_dim, cfg.patch_size, cfg.tubelet_size
    shapes = {"patch_embed.proj.weight": (D, 3, t, p, p), "patch_embed.proj.bias": (D,), "fc_norm.weight": (D,),
              "fc_norm.bias": (D,), "head.weight": (num_classes, D), "head.bias": (num_classes,)}
    for i in range(cfg.encoder_depth):
        shapes.update(reference_block_shapes(f"blocks.{i}.", D))
    sd = random_state_dict(shapes, seed)
    args = argparse.Namespace(model="vit_small_patch16_224", input_size=cfg.img_size, num_frames=cfg.num_frames,
                              nb_classes=num_classes, tubelet_size=t)
    torch.save({"model": sd, "args": args, "epoch": 29, "optimizer": {}}, path)
    return sd


def reference_classifier_forward(sd, cfg, video):
    """VideoMAE's VisionTransformer.forward (modeling_finetune.py, mean pooling, eval) as tensor ops."""
    t, p = cfg.tubelet_size, cfg.patch_size
    x = F.conv3d(video, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=(t, p, p))
    x = x.flatten(2).transpose(1, 2)
    x = x + sinusoid(x.shape[1], x.shape[2])
    for i in range(cfg.encoder_depth):
        x = reference_block(sd, f"blocks.{i}.", x, cfg.encoder_heads, 1e-6)
    x = F.layer_norm(x.mean(1), x.shape[-1:], sd["fc_norm.weight"], sd["fc_norm.bias"], 1e-6)
    return F.linear(x, sd["head.weight"], sd["head.bias"])


def test_read_classifier_takes_the_authors_finetuned_file_and_ours(tmp_path):
    tiny = AdaMAEConfig.preset("tiny")
    sd = write_reference_classifier(tmp_path / "k400_finetuned.pth", tiny, num_classes=5)
    cfg, state, num_classes = read_classifier(tmp_path / "k400_finetuned.pth")
    assert num_classes == 5 and (cfg.encoder_dim, cfg.encoder_depth, cfg.encoder_heads) == (192, 4, 3)
    assert (cfg.img_size, cfg.num_frames, cfg.patch_size, cfg.tubelet_size) == (64, 16, 8, 2)
    model = VideoClassifier(cfg, num_classes).eval()
    model.load_state_dict(state)  # strict
    video = torch.randn(2, 3, 16, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(video), reference_classifier_forward(sd, cfg, video), rtol=1e-4, atol=1e-5)
    # finetune.py's own checkpoint
    ours = VideoClassifier(small_config(), num_classes=3)
    opt = torch.optim.AdamW(ours.parameters())
    save_checkpoint(tmp_path / "best.pt", ours, opt, torch.amp.GradScaler("cpu", enabled=False), 4, 1,
                    ours.cfg, finetune.get_args([])[0], best_val_top1=0.5)
    cfg, state, num_classes = read_classifier(tmp_path / "best.pt")
    assert cfg == small_config() and num_classes == 3 and state.keys() == ours.state_dict().keys()
    with pytest.raises(ValueError, match="best.pt: a fine-tuned classifier"):
        read_pretrained(tmp_path / "best.pt")


def test_flip_defaults_follow_the_labels():
    assert finetune.get_args([])[0].flip is False  # the demo's labels are directions
    assert finetune.get_args(["--data", "a.csv"])[0].flip is True
    ssv2 = finetune.get_args(["--data", "a.csv", "--recipe", "ssv2"])[0]  # labels such as "left to right"
    assert ssv2.flip is False and ssv2.sampling == "segment"
    assert finetune.get_args(["--data", "a.csv", "--no-flip"])[0].flip is False


# ----------------------------------------------------------------------------- real steps and resume

def run_args(root, out_dir, pretrained, *extra):
    """The small pre-trained model on the shared synthetic set (4 train, 4 val): 2 steps of 2 clips per epoch."""
    return ["--data", str(root / "train.csv"), "--val", str(root / "val.csv"), "--pretrained", str(pretrained),
            "--out_dir", str(out_dir), "--batch_size", "2", "--stride", "2", "--num_workers", "0", "--epochs", "2",
            "--warmup_epochs", "1", "--base_lr", "0.5", "--log_every", "1", "--test_clips", "2", "--test_crops", "3",
            *extra]


def test_finetuning_steps_log_checkpoint_and_test(synthetic_root, pretrained_path, tmp_path, capsys):
    results = finetune.main(run_args(synthetic_root, tmp_path, pretrained_path, "--compare"))
    printed = capsys.readouterr().out
    assert "loaded 26 tensors" in printed and "dropped (pre-training only): decoder, encoder.norm" in printed
    assert "multi-view test (2 clips x 3 crops, 4 videos)" in printed and "vs from scratch" in printed
    assert sorted(results) == ["pretrained", "scratch"] and (tmp_path / "scratch" / "checkpoint.pt").exists()
    result = results["pretrained"]
    run_dir = tmp_path / "pretrained"
    records = read_log(run_dir)
    losses = losses_by_step(records)
    assert sorted(losses) == [1, 2, 3, 4] and all(np.isfinite(list(losses.values())))
    assert [r["epoch"] for r in records if "val_top1" in r] == [0, 1]
    assert records[-1]["top1"] == result["top1"] and result["k"] == 4 and result["topk"] == 1.0
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 4 and ckpt["epoch"] == 1 and (run_dir / "best.pt").exists()
    assert ckpt["best_val_top1"] == max(r["val_top1"] for r in records if "val_top1" in r)
    assert not list(run_dir.glob("*.tmp"))


def test_the_authors_files_go_straight_into_finetuning_and_evaluation(synthetic_root, tmp_path, capsys):
    tiny = AdaMAEConfig.preset("tiny", mask_ratio=0.9)
    write_reference_pretrain(tmp_path / "adamae.pth", tiny)
    write_reference_pretrain(tmp_path / "videomae.pth", AdaMAEConfig.preset("tiny", mask_type="tube"), sampler=False)
    common = ["--data", str(synthetic_root / "train.csv"), "--val", str(synthetic_root / "val.csv"), "--stride", "2",
              "--num_workers", "0", "--batch_size", "2", "--test_clips", "1", "--test_crops", "1"]
    for name in ("adamae.pth", "videomae.pth"):
        finetune.main([*common, "--pretrained", str(tmp_path / name), "--out_dir", str(tmp_path / name[:-4]),
                       "--max_steps", "1"])
        printed = capsys.readouterr().out
        assert f"loaded 50 tensors (tokenizer, 4 encoder blocks) from {tmp_path / name}" in printed  # 2 + 4 x 12
        assert "multi-view test (1 clips x 1 crops, 4 videos)" in printed
    write_reference_classifier(tmp_path / "finetuned.pth", tiny, num_classes=6)
    result = finetune.main([*common, "--eval", "--resume", str(tmp_path / "finetuned.pth"),
                            "--out_dir", str(tmp_path / "eval")])["eval"]
    printed = capsys.readouterr().out
    assert "6 classes" in printed and result["k"] == 5 and 0 <= result["top1"] <= 1


def test_resume_continues_with_the_same_losses(synthetic_root, pretrained_path, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    finetune.main(run_args(synthetic_root, straight, pretrained_path))
    finetune.main(run_args(synthetic_root, resumed, pretrained_path, "--max_steps", "2"))  # stops after epoch 0
    assert torch.load(resumed / "pretrained" / "checkpoint.pt", weights_only=True)["step"] == 2
    finetune.main(run_args(synthetic_root, resumed, pretrained_path))  # picks up its checkpoint.pt by itself
    expected, got = losses_by_step(read_log(straight / "pretrained")), losses_by_step(read_log(resumed / "pretrained"))
    assert sorted(got) == [1, 2, 3, 4]
    for step in (3, 4):
        assert got[step] == pytest.approx(expected[step], rel=1e-6, abs=1e-7), step


# ----------------------------------------------------------------------------- distributed evaluation

class NumberedViews(torch.utils.data.Dataset):
    """Video i: `views` views filled with the value i, label i % 3; skipped count 0."""

    def __init__(self, size, views):
        self.size, self.views = size, views
        self.samples = [(f"video{i}", i % 3) for i in range(size)]

    def __len__(self):
        return self.size

    def __getitem__(self, i):
        return torch.full((self.views, 1, 1, 1, 1), float(i)), i % 3, 0


class ReadNumber(torch.nn.Module):
    """Logits that put class (i % 3) first for a clip filled with i, and record every clip it sees."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, video):
        number = video.flatten(1).mean(dim=1).round().long()
        self.seen += number.tolist()
        return 4.0 * torch.nn.functional.one_hot(number % 3, 3).float()


def eval_worker(rank, world, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    model = ReadNumber()
    probs, labels, _ = evaluate(model, NumberedViews(7, views=2), torch.device("cpu"),
                                torch.autocast("cpu", enabled=False), batch_size=2, rank=rank, world=world)
    torch.save({"probs": probs, "labels": labels, "seen": model.seen}, os.path.join(out_dir, f"eval{rank}.pt"))
    dist.barrier()  # no rank tears gloo down while another still finishes a collective
    dist.destroy_process_group()


def test_distributed_evaluation_counts_every_video_once(tmp_path):
    mp.spawn(eval_worker, args=(2, free_port(), str(tmp_path)), nprocs=2)
    out = [torch.load(tmp_path / f"eval{r}.pt") for r in range(2)]
    assert sorted(out[0]["seen"] + out[1]["seen"]) == sorted(2 * list(range(7)))  # 7 videos x 2 views, no padding
    for r in range(2):
        assert out[r]["labels"].tolist() == [i % 3 for i in range(7)]  # all videos, in order, on every rank
        assert topk_accuracy(out[r]["probs"], out[r]["labels"], 1) == 1.0
    torch.testing.assert_close(out[0]["probs"], out[1]["probs"])
    single = evaluate(ReadNumber(), NumberedViews(7, views=2), torch.device("cpu"),
                      torch.autocast("cpu", enabled=False), batch_size=3)
    torch.testing.assert_close(single[0], out[0]["probs"])
    with pytest.raises(RuntimeError, match="counted twice or never"):
        gather_rows(torch.ones(2, 3), torch.tensor([0, 0]), total=2)


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_mixed_precision_finetuning(synthetic_root, pretrained_path, tmp_path, dtype):
    """Autocast (and fp16's GradScaler) through training, validation and the multi-view test, as on a GPU."""
    result = finetune.main(run_args(synthetic_root, tmp_path, pretrained_path, "--dtype", dtype, "--epochs", "1"))
    losses = losses_by_step(read_log(tmp_path / "pretrained"))
    assert sorted(losses) == [1, 2] and all(np.isfinite(list(losses.values())))
    assert result["pretrained"]["videos"] == 4 and 0 <= result["pretrained"]["top1"] <= 1
    ckpt = torch.load(tmp_path / "pretrained" / "checkpoint.pt", weights_only=True)
    assert (ckpt["scaler"].get("scale", 0) > 0) == (dtype == "fp16")


# ----------------------------------------------------------------------------- using the encoder

def write_list(path, samples):
    path.write_text("".join(f"{video} {label}\n" for video, label in samples))
    return path


@pytest.fixture(scope="module")
def two_colours(tmp_path_factory):
    """(train list, val list): 8-frame 32x32 videos, reddish (label 0) or bluish (label 1), with random noise."""
    root, rng, samples = tmp_path_factory.mktemp("colours"), np.random.default_rng(0), []
    for i in range(12):
        label = i % 2
        frames = rng.integers(0, 60, (8, 32, 32, 3)) + np.array([180, 40, 40] if label == 0 else [40, 40, 180])
        write_video(root / f"{i}.mp4", frames.clip(0, 255).astype(np.uint8))
        samples.append((f"{i}.mp4", label))
    return write_list(root / "train.csv", samples[:8]), write_list(root / "val.csv", samples[8:])


def encoder_args(*extra):
    return ["--test_clips", "2", "--test_crops", "1", "--stride", "1", "--num_workers", "0", "--batch_size", "4",
            *extra]


def test_probe_of_random_features_separates_two_colours(two_colours, pretrained_path, capsys):
    train, val = two_colours
    results = probe.main(["--data", str(train), "--val", str(val), "--pretrained", str(pretrained_path),
                             "--compare", "--probe_per_class", "2", "--probe_seeds", "2", *encoder_args()])
    assert sorted(results) == ["pretrained", "random init"]  # the small pre-trained model is random too
    for arm, runs in results.items():
        assert [r["seed"] for r in runs] == [0, 1]
        for r in runs:
            assert (r["train_videos"], r["test_videos"], r["top1"]) == (4, 4, 1.0), arm
    printed = capsys.readouterr().out
    assert "linear probe top-1 (2 labelled videos per class; seeds 0..1)" in printed
    assert "pretrained - random init: +0.0 points" in printed


def test_probe_layer_applies_the_standardisation_it_was_fitted_with():
    torch.manual_seed(0)
    x = torch.randn(40, 6) * torch.tensor([100.0, 1, 1, 1, 1, 0.01]) + 50  # very different scales
    y = (x[:, 5] > 50).long()  # only the smallest-scale dimension decides
    layer = classifier.fit_probe(x, y, 2, weight_decay=1e-3, steps=100)
    assert (layer(x).argmax(dim=1) == y).all()
    assert layer.weight[:, 5].abs().min() > 100 * layer.weight[:, 0].abs().max()


def test_labelled_subset_draws_per_class_and_names_a_short_class():
    labels = torch.tensor([0, 1, 0, 1, 0, 1, 2, 2])
    chosen = classifier.labelled_subset(labels, 2, seed=0)
    assert labels[chosen].sort().values.tolist() == [0, 0, 1, 1, 2, 2] and len(set(chosen.tolist())) == 6
    assert torch.equal(chosen, classifier.labelled_subset(labels, 2, seed=0))
    assert classifier.labelled_subset(labels, None, seed=0).tolist() == list(range(8))
    with pytest.raises(ValueError, match="class 2 has only 2"):
        classifier.labelled_subset(labels, 3, seed=0)


def video_features(pretrained_path, video):
    """Reference: the encoder's mean-pooled features of one video's 2 views, computed alone."""
    cfg, state = read_pretrained(pretrained_path)
    model = VideoClassifier(cfg, 1)
    load_encoder(model, state)
    views = VideoDataset([(video, 0)], cfg.num_frames, stride=1, img_size=cfg.img_size, train=False, test_clips=2)[0][0]
    with torch.no_grad():
        return model.eval().features(views)  # (2, D)


def test_features_rows_follow_the_list_and_per_clip_keeps_every_view(synthetic_root, pretrained_path, tmp_path):
    listed = [path for path, _ in load_samples(synthetic_root / "val.csv")]
    out = tmp_path / "feats.npy"
    features.main([str(out), "--data", str(synthetic_root / "val.csv"),
                   "--pretrained", str(pretrained_path), *encoder_args()])
    feats = np.load(out)
    assert feats.shape == (len(listed), 32) and out.with_suffix(".txt").read_text().splitlines() == listed
    for row, video in zip(feats, listed):
        np.testing.assert_allclose(row, video_features(pretrained_path, video).mean(dim=0).numpy(), atol=1e-5)
    features.main([str(tmp_path / "views"), "--per_clip", "--data", listed[1],
                   "--pretrained", str(pretrained_path), *encoder_args()])
    views = np.load(tmp_path / "views.npy")
    assert views.shape == (1, 2, 32) and (tmp_path / "views.txt").read_text() == f"{listed[1]}\n"
    np.testing.assert_allclose(views.mean(axis=1)[0], feats[1], atol=1e-6)
    (tmp_path / "broken.mp4").write_bytes(b"")  # unreadable: its row is NaN, not another video's features
    mixed = write_list(tmp_path / "mixed.csv", [(listed[0], 0), (tmp_path / "broken.mp4", 0), (listed[1], 0)])
    with pytest.warns(UserWarning, match="broken.mp4"):
        features.main([str(tmp_path / "mixed.npy"), "--data", str(mixed),
                       "--pretrained", str(pretrained_path), *encoder_args()])
    rows = np.load(tmp_path / "mixed.npy")
    assert np.isnan(rows[1]).all() and not np.isnan(rows[[0, 2]]).any()
    np.testing.assert_allclose(rows[[0, 2]], feats[:2], atol=1e-6)


def features_worker(rank, world, port, videos, pretrained_path, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    model, _ = classifier.frozen_encoder(torch.device("cpu"), pretrained=pretrained_path)
    dataset = classifier.views_dataset([(v, i) for i, v in enumerate(videos)], model.cfg, stride=1, sampling="dense",
                                       test_clips=2, test_crops=1)
    feats, labels = classifier.encode_views(model, dataset, torch.device("cpu"), torch.autocast("cpu", enabled=False),
                                          batch_size=1, rank=rank, world=world)
    torch.save({"feats": feats, "labels": labels}, os.path.join(out_dir, f"feats{rank}.pt"))
    dist.barrier()  # no rank tears gloo down while another still finishes a collective
    dist.destroy_process_group()


def test_features_of_three_processes_come_back_in_list_order(synthetic_root, pretrained_path, tmp_path):
    videos = [path for path, _ in load_samples(synthetic_root / "val.csv")][:2]  # rank 2 gets no video
    mp.spawn(features_worker, args=(3, free_port(), videos, str(pretrained_path), str(tmp_path)), nprocs=3)
    expected = torch.stack([video_features(pretrained_path, v) for v in videos])  # (2, 2 views, D)
    for rank in range(3):
        out = torch.load(tmp_path / f"feats{rank}.pt")
        assert out["labels"].tolist() == [0, 1]
        torch.testing.assert_close(out["feats"], expected, atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def classifier_path(tmp_path_factory):
    """A finetune.py checkpoint of a small 7-class VideoClassifier with a random, non-trivial head."""
    torch.manual_seed(2)
    model = VideoClassifier(small_config(), num_classes=7)
    torch.nn.init.normal_(model.head.weight, std=0.5)
    opt = make_optimizer(model, 1e-3, 0.05, 0.75)
    path = tmp_path_factory.mktemp("classifier") / "best.pt"
    save_checkpoint(path, model, opt, torch.amp.GradScaler("cpu", enabled=False), 1, 0, model.cfg,
                    finetune.get_args([])[0], best_val_top1=0.5)
    return path


def test_predict_prints_the_top5_of_the_multiview_test(synthetic_root, classifier_path, pretrained_path, tmp_path,
                                                      capsys):
    video = load_samples(synthetic_root / "val.csv")[0][0]
    names = tmp_path / "names.txt"
    names.write_text("".join(f"class {c}\n" for c in "abcdefg"))
    ranked = predict.main([video, "--resume", str(classifier_path), "--classes", str(names),
                            "--test_clips", "2", "--test_crops", "3", "--stride", "2"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{video}: 2 clips x 3 crops, softmax averaged" and len(lines) == 6
    cfg, state, num_classes = read_classifier(classifier_path)
    model = VideoClassifier(cfg, num_classes)
    model.load_state_dict(state)
    dataset = VideoDataset([(video, 0)], cfg.num_frames, stride=2, img_size=cfg.img_size, train=False,
                           test_clips=2, test_crops=3)
    probs = evaluate(model, dataset, torch.device("cpu"), torch.autocast("cpu", enabled=False), batch_size=1)[0][0]
    top = probs.topk(5)
    assert [c for c, _, _ in ranked] == top.indices.tolist()
    assert [p for _, _, p in ranked] == pytest.approx(top.values.tolist(), abs=1e-6)
    assert sum(p for _, _, p in ranked) <= 1 + 1e-6 and len({p for _, _, p in ranked}) == 5  # not a flat guess
    for line, (c, name, p) in zip(lines[1:], ranked):
        assert line == f"{100 * p:6.2f}%  class {'abcdefg'[c]}" and name == f"class {'abcdefg'[c]}"
    names.write_text("a\nb\n")
    with pytest.raises(ValueError, match="2 class names for a classifier of 7 classes"):
        predict.main([video, "--resume", str(classifier_path), "--classes", str(names)])
    with pytest.raises(ValueError, match="a pre-training file"):
        predict.main([video, "--resume", str(pretrained_path)])  # a pre-training checkpoint


def reference_features(sd, cfg, video, prefix=""):
    """The mean-pooled encoder output of a VideoMAE/AdaMAE-layout state dict, as tensor ops (no fc_norm)."""
    t, p = cfg.tubelet_size, cfg.patch_size
    x = F.conv3d(video, sd[f"{prefix}patch_embed.proj.weight"], sd[f"{prefix}patch_embed.proj.bias"], stride=(t, p, p))
    x = x.flatten(2).transpose(1, 2)
    x = x + sinusoid(x.shape[1], x.shape[2])
    for i in range(cfg.encoder_depth):
        x = reference_block(sd, f"{prefix}blocks.{i}.", x, cfg.encoder_heads, 1e-6)
    return x.mean(1)


def test_features_probe_and_predict_take_the_authors_files(synthetic_root, two_colours, tmp_path, capsys):
    tiny = AdaMAEConfig.preset("tiny")
    pretrain_sd = write_reference_pretrain(tmp_path / "adamae.pth", tiny)
    videos = [path for path, _ in load_samples(synthetic_root / "val.csv")][:2]
    data = write_list(tmp_path / "two.csv", [(v, 0) for v in videos])
    features.main([str(tmp_path / "feats"), "--data", str(data), "--pretrained",
                   str(tmp_path / "adamae.pth"), *encoder_args()])
    views = [VideoDataset([(v, 0)], tiny.num_frames, stride=1, img_size=tiny.img_size, train=False,
                          test_clips=2)[0][0] for v in videos]
    expected = torch.stack([reference_features(pretrain_sd, tiny, v, "encoder.").mean(0) for v in views])
    np.testing.assert_allclose(np.load(tmp_path / "feats.npy"), expected.numpy(), rtol=1e-4, atol=1e-4)

    train, val = two_colours
    results = probe.main(["--data", str(train), "--val", str(val), "--pretrained",
                             str(tmp_path / "adamae.pth"), "--probe_per_class", "2", "--probe_seeds", "1",
                             *encoder_args()])
    assert [r["top1"] for r in results["pretrained"]] == [1.0]

    classifier_sd = write_reference_classifier(tmp_path / "k400_finetuned.pth", tiny, num_classes=5)
    capsys.readouterr()
    ranked = predict.main([videos[0], "--resume", str(tmp_path / "k400_finetuned.pth"),
                            "--test_clips", "2", "--test_crops", "1", "--stride", "1"])
    logits = reference_features(classifier_sd, tiny, views[0])
    logits = F.linear(F.layer_norm(logits, logits.shape[-1:], classifier_sd["fc_norm.weight"],
                                   classifier_sd["fc_norm.bias"], 1e-6), classifier_sd["head.weight"],
                      classifier_sd["head.bias"])
    probs = logits.softmax(-1).mean(0)  # the 2 views' softmax, averaged
    assert [c for c, _, _ in ranked] == probs.topk(5).indices.tolist()
    assert [p for _, _, p in ranked] == pytest.approx(probs.topk(5).values.tolist(), abs=1e-5)
    assert len(capsys.readouterr().out.splitlines()) == 6

"""pretrain.py: real training steps, resume, non-finite stop, DDP equivalence, enrichment geometry."""

import hashlib
import json
import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import pretrain
from test_model import small_cfg
from adamae import AdaMAE, AdaMAEConfig
from engine import amp_setup, get_lr, make_optimizer, set_lr
from pretrain import train_step
from metrics import average_ranks, foreground_enrichment, foreground_tokens, load_enrichment_clips, \
    motion_correlation, motion_energy, spearman


def run_args(root, out_dir, *extra):
    """The demo's recipe (tiny preset) on the 4 training videos of the shared synthetic set: 2 steps of 2 clips
    per epoch."""
    return ["--recipe", "demo", "--data", str(root / "train.csv"), "--out_dir", str(out_dir), "--batch_size", "2", "--stride", "2",
            "--num_workers", "0", "--epochs", "2", "--warmup_epochs", "1", "--base_lr", "0.05", "--log_every", "1",
            "--eval_every", "0", "--vis_every", "0", *extra]


def read_log(out_dir):
    return [json.loads(line) for line in (out_dir / "log.jsonl").read_text().splitlines()]


def losses_by_step(records):
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def test_training_steps_write_log_and_checkpoint(synthetic_root, tmp_path, capsys):
    pretrain.main(run_args(synthetic_root, tmp_path, "--vis_every", "2"))
    printed = capsys.readouterr().out
    assert "lr = 0.05 x 2/256" in printed and "visible 25, masked 487" in printed
    losses = losses_by_step(read_log(tmp_path))
    assert sorted(losses) == [1, 2, 3, 4]
    assert all(torch.isfinite(torch.tensor(list(losses.values()))))
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 4 and ckpt["epoch"] == 1
    assert AdaMAEConfig.from_dict(ckpt["config"]) == AdaMAEConfig.preset("tiny")
    assert set(ckpt) >= {"model", "optimizer", "scaler", "args"}
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave no temporary file
    pictures = sorted(p.name for p in (tmp_path / "vis").glob("*.png"))  # a fixed clip, also on real data
    assert pictures == ["final.png", "step0000002.png", "step0000004.png"]
    probes = [r for r in read_log(tmp_path) if "motion_correlation" in r]  # real data: no boxes, no enrichment
    assert [r["step"] for r in probes] == [0, 4] and all("enrichment" not in r for r in probes)
    assert probes[0]["motion_correlation"] == 0.0 and -1 <= probes[1]["motion_correlation"] <= 1
    assert "before training: motion correlation +0.00" in printed and "on 4 fixed clips" in printed


def test_the_readme_command_cut_short(tmp_path, monkeypatch, capsys):
    """`python pretrain.py` as a newcomer runs it (relative out_dir, synthetic demo), for 3 steps."""
    monkeypatch.chdir(tmp_path)
    pretrain.main(["--max_steps", "3", "--num_workers", "0"])
    printed = capsys.readouterr().out
    assert "before training: foreground enrichment 1.00" in printed
    assert "final: foreground enrichment" in printed
    out = tmp_path / "runs" / "pretrain"
    assert (out / "synthetic" / "train.csv").exists() and (out / "vis" / "final.png").exists()
    assert [r["enrichment"] for r in read_log(out) if "enrichment" in r][0] == pytest.approx(1.0, abs=1e-4)


def test_resume_continues_the_same_steps_with_the_same_losses(synthetic_root, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    pretrain.main(run_args(synthetic_root, straight))
    pretrain.main(run_args(synthetic_root, resumed, "--max_steps", "2"))  # stops after epoch 0
    assert torch.load(resumed / "checkpoint.pt", weights_only=True)["step"] == 2
    pretrain.main(run_args(synthetic_root, resumed))  # picks up out_dir/checkpoint.pt by itself
    expected, got = losses_by_step(read_log(straight)), losses_by_step(read_log(resumed))
    assert sorted(got) == [1, 2, 3, 4]
    for step in (3, 4):
        assert got[step] == pytest.approx(expected[step], rel=1e-6, abs=1e-7), step


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(synthetic_root, tmp_path, monkeypatch):
    pretrain.main(run_args(synthetic_root, tmp_path, "--max_steps", "2", "--epochs", "3"))
    ckpt = tmp_path / "checkpoint.pt"
    digest = hashlib.sha256(ckpt.read_bytes()).hexdigest()

    real_step = pretrain.train_step

    def poisoned(model, *args, **kwargs):  # a weight goes bad, as after an overflow
        with torch.no_grad():
            model.head.weight[0, 0] = float("nan")
        return real_step(model, *args, **kwargs)

    monkeypatch.setattr(pretrain, "train_step", poisoned)
    with pytest.raises(FloatingPointError, match="non-finite loss.*last good state"):
        pretrain.main(run_args(synthetic_root, tmp_path, "--epochs", "3"))
    assert hashlib.sha256(ckpt.read_bytes()).hexdigest() == digest


def test_resume_refuses_a_checkpoint_of_another_model(synthetic_root, tmp_path):
    pretrain.main(run_args(synthetic_root, tmp_path, "--max_steps", "2"))
    with pytest.raises(ValueError, match="mask_ratio"):
        pretrain.main(run_args(synthetic_root, tmp_path, "--mask_ratio", "0.9"))


@pytest.mark.parametrize("script, epochs", [("pretrain", 800), ("finetune", 100)])
def test_help_shows_every_default_and_every_recipe_value(script, epochs, capsys):
    module = __import__(script)
    demo_epochs = module.RECIPES["demo"].epochs
    with pytest.raises(SystemExit):
        module.get_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines anywhere
    assert f"training epochs (default: the recipe's: paper {epochs}" in text and f"demo {demo_epochs})" in text
    assert "AdamW weight decay" in text and "paper 0.05" in text
    options = text.split("options:")[1]
    assert options.count("default") >= len(module.OPTIONS)  # every option states its default, one way or another


def test_data_alone_selects_the_paper_recipe_and_says_so(synthetic_root, tmp_path, monkeypatch, capsys):
    """`torchrun pretrain.py --data LIST` trains ViT-B at rho 0.95, 32 clips per GPU, 800 epochs, and prints
    every value of the recipe on its first line; no --data is the demo, named the same way."""
    args, line = pretrain.get_args(["--data", "k400.csv"])
    assert args.recipe == "paper" and (args.preset, args.mask_ratio, args.batch_size, args.epochs) == ("base", 0.95, 32, 800)
    assert (args.warmup_epochs, args.base_lr, args.min_lr, args.beta2) == (40, 1.5e-4, 1e-5, 0.95)
    assert line.startswith("recipe paper: preset base, mask_ratio 0.95, batch_size 32, epochs 800, warmup_epochs 40")
    assert "changed" not in line
    args, line = pretrain.get_args(["--data", "k400.csv", "--batch_size", "16"])
    assert args.batch_size == 16 and line.endswith("changed on the command line: batch_size 16")
    args, line = pretrain.get_args([])
    assert args.recipe == "demo" and args.preset == "tiny" and line.startswith("recipe demo: preset tiny")
    # the paper's recipe really runs: its first printed line, the ViT-B sizes (no step: max_steps 0)
    list_file = tmp_path / "k400.csv"
    list_file.write_text("".join(f"{synthetic_root / l}\n" for l in (synthetic_root / "train.csv").read_text().splitlines()))
    many = tmp_path / "many.csv"
    many.write_text(list_file.read_text() * 8)  # 32 videos: one full batch of the recipe
    pretrain.main(["--data", str(many), "--out_dir", str(tmp_path / "run"), "--max_steps", "0", "--num_workers", "0",
                   "--probe_videos", "0"])
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("recipe paper: preset base, mask_ratio 0.95, batch_size 32, epochs 800")
    assert any("tokens: 1568 = (8, 14, 14), visible 78, masked 1490" in p for p in printed)


def test_target_and_position_table_options_reach_the_model_config():
    cfg = pretrain.model_config(pretrain.get_args(["--target", "pixel", "--position_table", "3d"])[0])
    assert (cfg.target, cfg.position_table) == ("pixel", "3d")
    default = pretrain.model_config(pretrain.get_args([])[0])
    assert (default.target, default.position_table) == ("patch_norm", "1d")  # the paper's, without the options
    with pytest.raises(ValueError, match=r"AdaMAEConfig.target='raw'"):
        pretrain.model_config(pretrain.get_args(["--target", "raw"])[0])


def test_lr_schedule_warmup_then_cosine():
    assert get_lr(0, 100, 10, 1.0, 0.1) == 0.0
    assert get_lr(5, 100, 10, 1.0, 0.1) == pytest.approx(0.5)
    assert get_lr(10, 100, 10, 1.0, 0.1) == pytest.approx(1.0)
    assert get_lr(55, 100, 10, 1.0, 0.1) == pytest.approx(0.55)
    assert get_lr(100, 100, 10, 1.0, 0.1) == pytest.approx(0.1)


def test_weight_decay_groups_cover_every_parameter_once():
    model = AdaMAE(AdaMAEConfig.preset("tiny"))
    opt = make_optimizer(model, 1e-3, 0.05, (0.9, 0.95))
    grouped = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())
    no_decay = {id(p) for p in opt.param_groups[1]["params"]}
    named = dict(model.named_parameters())
    for name in ("mask_token", "sampler.pos_embed", "encoder.norm.weight", "head.bias"):
        assert id(named[name]) in no_decay, name
    assert id(named["encoder.blocks.0.attn.qkv.weight"]) not in no_decay


def test_foreground_tokens_of_a_box():
    cfg = AdaMAEConfig.preset("tiny")  # 64 px, 8 px patches, 2-frame tubelets: grid (8, 8, 8)
    boxes = [[16, 8, 24, 16]] * 32  # video pixels (x0, y0, x1, y1), video of 64 px: scale 1
    fg = foreground_tokens(boxes, list(range(0, 32, 2)), cfg, 64).reshape(8, 8, 8)
    assert fg.sum() == 8 and fg[:, 1, 2].all()  # row 1 (y 8..16), column 2 (x 16..24), every slice
    moving = [[0, 0, 8, 8]] * 2 + [[56, 56, 64, 64]] * 30  # the box jumps after frame 1
    fg = foreground_tokens(moving, list(range(16)), cfg, 64).reshape(8, 8, 8)
    assert fg[0, 0, 0] and not fg[0, 7, 7] and fg[1:, 7, 7].all() and not fg[1:, 0, 0].any() and fg.sum() == 8


def test_enrichment_clips_and_random_masking_scores_one(synthetic_root, monkeypatch):
    monkeypatch.chdir(synthetic_root.parent)  # a relative root, as the default out_dir is
    cfg = AdaMAEConfig.preset("tiny", mask_type="random")
    clips, fg = load_enrichment_clips(synthetic_root.name, cfg, stride=2)
    assert clips.shape == (4, 3, 16, 64, 64) and fg.shape == (4, 512)
    assert (fg.sum(dim=1) > 0).all() and (fg.float().mean(dim=1) < 0.5).all()  # the object, not the frame
    torch.manual_seed(0)
    model = AdaMAE(cfg)
    prob, visible = foreground_enrichment(model, clips.repeat(20, 1, 1, 1, 1), fg.repeat(20, 1), "cpu", batch=80)
    assert prob != prob and visible == pytest.approx(1.0, abs=0.2)  # no P (nan); uniform draws score 1
    uniform = AdaMAE(AdaMAEConfig.preset("tiny"))  # a zero-initialised sampler head: P uniform
    assert foreground_enrichment(uniform, clips, fg, "cpu")[0] == pytest.approx(1.0, abs=1e-4)


def test_sampler_lr_scale_gives_the_sampler_its_own_learning_rate():
    model = AdaMAE(AdaMAEConfig.preset("tiny"))
    theta = {id(p) for p in model.sampler.parameters()}
    default = make_optimizer(model, 1e-3, 0.05, (0.9, 0.95))
    assert len(default.param_groups) == 2  # the paper's single optimizer: checkpoints keep their layout
    opt = make_optimizer(model, 1e-3, 0.05, (0.9, 0.95), sampler_lr_scale=10)
    set_lr(opt, 2e-3)
    lr_of = {id(p): (g["lr"], g["weight_decay"]) for g in opt.param_groups for p in g["params"]}
    assert sorted(lr_of) == sorted(id(p) for p in model.parameters())  # each parameter once
    for name, p in model.named_parameters():
        assert lr_of[id(p)][0] == pytest.approx(2e-2 if id(p) in theta else 2e-3), name
    decay = {id(p): g["weight_decay"] for g in default.param_groups for p in g["params"]}
    assert all(lr_of[i][1] == decay[i] for i in decay)  # weight decay unchanged by the split


def test_spearman_uses_average_ranks_and_scores_constants_zero():
    assert average_ranks(torch.tensor([10.0, 20.0, 20.0, 5.0])).tolist() == [2.0, 3.5, 3.5, 1.0]
    a = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    assert spearman(a, a ** 3).item() == pytest.approx(1.0) and spearman(a, -a).item() == pytest.approx(-1.0)
    x, y = torch.tensor([1.0, 2.0, 2.0, 3.0, 7.0]), torch.tensor([1.0, 3.0, 2.0, 4.0, 0.0])
    ranks = torch.stack([average_ranks(x), average_ranks(y)]).double()
    assert spearman(x, y).item() == pytest.approx(torch.corrcoef(ranks)[0, 1].item(), abs=1e-6)
    assert spearman(torch.ones(5), a).item() == 0.0  # an untrained sampler's uniform P prefers nothing
    assert spearman(torch.stack([a, a]), torch.stack([a, -a])).tolist() == pytest.approx([1.0, -1.0])


def test_motion_correlation_sees_the_moving_region_whatever_the_texture():
    cfg = AdaMAEConfig.preset("tiny")  # 16x64x64 clips, 8x8 patches, 2-frame tubelets: grid (8, 8, 8)
    torch.manual_seed(0)
    clips = torch.rand(1, 3, 1, 64, 64).repeat(1, 1, 16, 1, 1)  # a static random texture
    clips[:, :, :, 16:32, 8:24] = torch.rand(1, 3, 16, 16, 16)  # 2x2 patches that change every frame
    energy = motion_energy(clips, cfg)
    moving = torch.zeros(8, 8, 8, dtype=torch.bool)
    moving[:, 2:4, 1:3] = True
    assert torch.equal(energy[0] > 0, moving.flatten())  # static texture has no energy, however busy
    graded = torch.softmax(energy * 100, dim=-1)  # P ordered like the motion: rank correlation 1
    assert spearman(graded, energy).item() == pytest.approx(1.0)
    on_motion = torch.where(moving.flatten(), 1.0, 0.01)[None]  # P concentrated on the moving tokens
    off_motion = torch.where(moving.flatten(), 0.01, 1.0)[None]
    assert spearman(on_motion, energy).item() > 0.99 and spearman(off_motion, energy).item() < -0.99
    model = AdaMAE(cfg)  # the sampler's head starts at zero: P uniform, correlation 0 (not nan)
    assert motion_correlation(model, clips, "cpu") == 0.0
    assert math.isnan(motion_correlation(AdaMAE(AdaMAEConfig.preset("tiny", mask_type="tube")), clips, "cpu"))


# ----------------------------------------------------------------------------- DDP

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FixedMask(torch.nn.Module):
    """Feeds each rank its slice of a fixed mask, so 2 ranks and 1 process see the same batch."""

    def __init__(self, model, mask):
        super().__init__()
        self.model, self.mask = model, mask
        self.cfg = model.cfg  # what the step reads lambda from

    def forward(self, video):
        return self.model(video, mask=self.mask)


def fixed_batch():
    g = torch.Generator().manual_seed(1)
    video = torch.randn(4, 3, 4, 32, 32, generator=g)
    mask = torch.rand(4, 32, generator=g).argsort(dim=1).argsort(dim=1) >= 8  # 8 visible per row
    return video, mask


def train_fixed(rank, world, steps=3):
    """The same global batch of 4, split over `world` ranks, a few steps; returns the flat parameters."""
    torch.manual_seed(0)
    video, mask = fixed_batch()
    share = slice(rank * 4 // world, (rank + 1) * 4 // world)
    model = FixedMask(AdaMAE(small_cfg(mask_type="random")), mask[share])
    # plain SGD: Adam would turn float noise in near-zero gradients into lr-sized differences
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    for _ in range(steps):
        train_step(ddp, [video[share]], opt, torch.amp.GradScaler("cpu", enabled=False), torch.autocast("cpu", enabled=False))
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def ddp_worker(rank, world, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.save(train_fixed(rank, world), os.path.join(out_dir, f"fixed{rank}.pt"))
    # the adaptive model with accumulation (no_sync on the first micro-step): ranks must stay identical
    torch.manual_seed(0)
    model = AdaMAE(small_cfg())
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    opt = make_optimizer(model, 1e-2, 0.05, (0.9, 0.95))
    torch.manual_seed(100 + rank)  # each rank its own data and masks
    for _ in range(3):
        micro = [torch.randn(2, 3, 4, 32, 32) for _ in range(2)]
        train_step(ddp, micro, opt, torch.amp.GradScaler("cpu", enabled=False), torch.autocast("cpu", enabled=False))
    torch.save(torch.cat([p.detach().flatten() for p in model.parameters()]), os.path.join(out_dir, f"ada{rank}.pt"))
    dist.barrier()  # no rank tears gloo down while another still finishes a collective
    dist.destroy_process_group()


def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    mp.spawn(ddp_worker, args=(2, free_port(), str(tmp_path)), nprocs=2)
    fixed = [torch.load(tmp_path / f"fixed{r}.pt") for r in range(2)]
    assert torch.equal(fixed[0], fixed[1])
    torch.testing.assert_close(fixed[0], train_fixed(0, 1), rtol=1e-5, atol=1e-6)
    ada = [torch.load(tmp_path / f"ada{r}.pt") for r in range(2)]
    assert torch.equal(ada[0], ada[1])


# ----------------------------------------------------------------------------- the CUDA paths, on the CPU

@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_mixed_precision_runs_and_keeps_float32_weights(synthetic_root, tmp_path, dtype):
    """The GPU default (bf16) and fp16 with a GradScaler, both of which the CPU has too."""
    autocast, scaler = amp_setup(dtype, torch.device("cpu"))
    model = AdaMAE(small_cfg())
    with autocast:
        out = model(torch.randn(2, 3, 4, 32, 32))
    assert out.pred.dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    assert out.log_probs.dtype == torch.float32  # Eq. 3 stays float32 under autocast
    assert scaler.is_enabled() == (dtype == "fp16")

    pretrain.main(run_args(synthetic_root, tmp_path, "--dtype", dtype, "--epochs", "1"))
    losses = losses_by_step(read_log(tmp_path))
    assert sorted(losses) == [1, 2] and all(torch.isfinite(torch.tensor(list(losses.values()))))
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert all(v.dtype == torch.float32 for v in ckpt["model"].values() if v.is_floating_point())
    assert (ckpt["scaler"].get("scale", 0) > 0) == (dtype == "fp16")  # the scaler's state resumes too


def test_compiled_run_saves_the_plain_module(synthetic_root, tmp_path, monkeypatch):
    """--compile: graph capture and AOT autograd as on a GPU; `aot_eager` skips inductor's C++ build, which
    takes minutes on 2 cores (the slow test below runs it)."""
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model: real_compile(model, backend="aot_eager"))
    pretrain.main(run_args(synthetic_root, tmp_path, "--compile", "--epochs", "1"))
    assert all(torch.isfinite(torch.tensor(list(losses_by_step(read_log(tmp_path)).values()))))
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    AdaMAE(AdaMAEConfig.preset("tiny")).load_state_dict(ckpt["model"])  # no "_orig_mod." prefixes


@pytest.mark.slow
def test_compiled_run_with_inductor(synthetic_root, tmp_path):
    """`python -m pytest -m slow`: the real --compile (inductor) for two steps, about 2 minutes on 2 cores."""
    pretrain.main(run_args(synthetic_root, tmp_path, "--compile", "--epochs", "1"))
    assert all(torch.isfinite(torch.tensor(list(losses_by_step(read_log(tmp_path)).values()))))

"""Checkpoints at another clip size: the sampler's position embedding resampled over (T, H, W), and a 16-frame
checkpoint fine-tuned at 8 and 32 frames."""

import pytest
import torch

import finetune
from adamae import AdaMAE, AdaMAEConfig
from engine import save_checkpoint
from weights.resize import at_clip_size, resize_pos_embed, resize_pretrained


def sixteen_frames():
    """16 frames of 32 px, 8 px patches: grid (8, 4, 4), 128 tokens; a 2-block encoder."""
    return AdaMAEConfig(img_size=32, num_frames=16, patch_size=8, encoder_dim=32, encoder_depth=2, encoder_heads=4,
                        decoder_dim=16, decoder_depth=1, decoder_heads=2, sampler_heads=4, mask_ratio=0.75)


def test_sampler_position_embedding_is_the_identity_at_equal_size_and_follows_the_grid():
    cfg = sixteen_frames()
    torch.manual_seed(0)
    model = AdaMAE(cfg)
    torch.nn.init.normal_(model.sampler.pos_embed)
    same_cfg, same = resize_pretrained(cfg, model.state_dict())
    assert same_cfg == cfg and torch.equal(same["sampler.pos_embed"], model.sampler.pos_embed)
    assert torch.equal(resize_pos_embed(model.sampler.pos_embed, cfg.grid, cfg.grid), model.sampler.pos_embed)

    # an embedding linear in t, h and w stays linear on the new grid (inside the old one's span)
    t, h, w = torch.meshgrid(*(torch.arange(n, dtype=torch.float32) for n in (8, 4, 4)), indexing="ij")
    ramp = torch.stack([t, h, w], dim=-1).reshape(1, 128, 3)
    halved = resize_pos_embed(ramp, (8, 4, 4), (4, 4, 4)).reshape(4, 4, 4, 3)
    torch.testing.assert_close(halved[:, 0, 0, 0], torch.tensor([0.5, 2.5, 4.5, 6.5]))  # centres of frame pairs
    torch.testing.assert_close(halved[0, :, :, 1:], ramp.reshape(8, 4, 4, 3)[0, :, :, 1:])  # space untouched

    for frames, size in ((8, 32), (32, 24)):
        new_cfg, state = resize_pretrained(cfg, model.state_dict(), num_frames=frames, img_size=size)
        assert new_cfg.grid == (frames // 2, size // 8, size // 8)
        resized = AdaMAE(new_cfg)
        resized.load_state_dict(state)  # strict: every other tensor as it was
        out = resized(torch.randn(1, 3, frames, size, size))
        assert torch.isfinite(out.recon_loss) and torch.isfinite(out.sampling_loss)


def test_clip_size_refuses_what_the_grid_cannot_take():
    with pytest.raises(ValueError, match="num_frames=7: not divisible by tubelet_size 2"):
        at_clip_size(sixteen_frames(), num_frames=7)
    assert at_clip_size(sixteen_frames()) == sixteen_frames()


def test_a_16_frame_checkpoint_fine_tunes_at_8_and_32_frames(synthetic_root, tmp_path, capsys):
    torch.manual_seed(0)
    model = AdaMAE(sixteen_frames())
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, model, torch.optim.AdamW(model.parameters()), torch.amp.GradScaler("cpu", enabled=False),
                    1, 0, model.cfg, finetune.get_args([])[0])
    for frames in (8, 32):
        out = tmp_path / f"at{frames}"
        result = finetune.main(["--data", str(synthetic_root / "train.csv"), "--val", str(synthetic_root / "val.csv"),
                                "--pretrained", str(path), "--num_frames", str(frames), "--stride", "1",
                                "--out_dir", str(out), "--num_workers", "0", "--batch_size", "2", "--epochs", "1", "--warmup_epochs", "1",
                                "--test_clips", "1", "--test_crops", "1"])["pretrained"]
        printed = capsys.readouterr().out
        assert f"{frames * 8} tokens ({frames // 2}, 4, 4)" in printed and result["videos"] == 4
        saved = torch.load(out / "pretrained" / "checkpoint.pt", weights_only=True)["config"]
        assert (saved["num_frames"], saved["img_size"]) == (frames, 32)

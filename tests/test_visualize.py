"""visualize.py: the five panels, the layout of the still and the animation, the files, the CLI."""

import av
import numpy as np
import pytest
import torch

from pictures import figures as V
from tools import visualize
from adamae import AdaMAE, AdaMAEConfig, gather_tokens, split_indices
from demo.synthetic import write_video
from sampler import MASK_TYPES
from test_convert import random_state_dict, reference_shapes
from test_model import small_cfg, video_for

SCALE = 4  # small_cfg clips are 32 px: enlarged 4x to MIN_TILE = 128


def model_for(mask_type):
    torch.manual_seed(0)
    return AdaMAE(small_cfg(mask_type=mask_type)).eval()


def panels_and_pixels(model, seed=0):
    video = video_for(model.cfg, batch=1, seed=seed)
    torch.manual_seed(seed)
    panels = V.render(model, video)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1, 1)
    frames = V.to_uint8((video[0] * std + mean).permute(1, 2, 3, 0))  # (T, H, W, 3)
    return video, panels, frames


def masked_pixels(model, video, seed=0):
    """(T, H, W) bool, True where the token is masked, for the mask `render` drew with this seed."""
    torch.manual_seed(seed)
    mask = model(video).mask[0]
    return V.token_map(mask, model.cfg).numpy()


def upscaled(image, s=SCALE):
    return image.repeat(s, axis=0).repeat(s, axis=1)


def tile_at(picture, row, col, h, w, top=0, left=V.GAP):
    top, left = top + V.GAP + row * (h + V.GAP), left + col * (w + V.GAP)
    return picture[top:top + h, left:left + w]


def still_size(blocks, h, w, columns):
    """(height, width) of a still: per block a title band, 5 named rows; columns named t=0, t=2, ..."""
    top, left = V.label_margins(V.ROW_NAMES, ["t=0"])
    block = TITLE + top + 5 * (h + V.GAP) + V.GAP
    return blocks * block + (blocks - 1) * 3 * V.GAP, left + columns * (w + V.GAP)


TITLE = 5 * V.FONT_SCALE + 2 * V.GAP  # the band with a block's name


def decode(path):
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


@pytest.mark.parametrize("mask_type", MASK_TYPES)
def test_panels_show_input_mask_reconstruction_and_error(mask_type):
    model = model_for(mask_type)
    video, panels, frames = panels_and_pixels(model)
    hidden = masked_pixels(model, video)
    cfg = model.cfg
    assert panels.shape == (5, cfg.num_frames, cfg.img_size, cfg.img_size, 3) and panels.dtype == np.uint8
    assert hidden.any() and (~hidden).any()
    assert np.array_equal(panels[0], frames)                                   # (a) input
    assert (panels[2][hidden] == V.GREY).all()                                 # (c) masked grey ...
    assert np.array_equal(panels[2][~hidden], frames[~hidden])                 # ... visible as input
    assert np.array_equal(panels[3][~hidden], frames[~hidden])                 # (d) visible pasted
    assert (panels[4][~hidden] == V.GREY).all()                                # (e) visible grey
    assert not (panels[4][hidden] == V.GREY).all(axis=-1).any()
    if mask_type != "adaptive":                                                # (b) uniform
        assert (panels[1] == V.colormap(1.0)).all()


def test_probability_row_is_the_samplers_distribution():
    model = model_for("adaptive")
    video, panels, _ = panels_and_pixels(model)
    with torch.no_grad():
        probs = model.sampler(model.tokenizer(video))[0].exp()
    expected = V.colormap(V.token_map(probs / probs.max(), model.cfg).numpy())
    assert np.array_equal(panels[1], expected)
    assert (panels[1][V.token_map(probs == probs.max(), model.cfg).numpy()] == V.colormap(1.0)).all()


class PerfectAdaMAE(AdaMAE):
    """Predicts exactly the normalised target, so the reconstruction must give back the input."""

    def forward(self, video, mask=None):
        out = super().forward(video, mask)
        _, masked = split_indices(out.mask, self.cfg.num_tokens - out.pred.shape[1])
        out.pred = gather_tokens(self.target(video), masked)
        return out


@pytest.mark.parametrize("target", AdaMAEConfig.TARGETS)
def test_reconstruction_inverts_the_target(target):
    """A prediction equal to the target of either kind gives back the clip's pixels."""
    torch.manual_seed(0)
    model = PerfectAdaMAE(small_cfg(patch_size=4, target=target)).eval()  # 32 pixels a patch: a biased std shows
    video = video_for(model.cfg, batch=1)
    panels = V.render(model, video)
    difference = np.abs(panels[3].astype(int) - panels[0].astype(int))
    assert difference.max() <= 1  # float round-off may flip a rounding
    masked = split_indices(model(video).mask, model.cfg.num_visible)[1]
    wrong = model.predicted_pixels(video, gather_tokens(model.target(video), masked) + 0.5, masked)
    truth = gather_tokens(model.patch_pixels(video).flatten(2), masked)
    assert (wrong - truth).abs().min() > 1e-3  # a wrong prediction does not come back as the clip


@pytest.mark.parametrize("mask_type", ["adaptive", "tube"])
def test_still_and_animation_layout(mask_type):
    model = model_for(mask_type)
    cfg = model.cfg
    video, panels, _ = panels_and_pixels(model)
    torch.manual_seed(0)
    picture = V.figure(model, video)
    h = w = cfg.img_size * SCALE
    columns = cfg.num_frames // cfg.tubelet_size
    assert picture.shape == (*still_size(1, h, w, columns), 3)
    top, left = V.label_margins(V.ROW_NAMES, ["t=0"])
    for row in range(5):
        for col in range(columns):  # column k shows the first frame of tubelet slice k
            assert np.array_equal(tile_at(picture, row, col, h, w, TITLE + top, left),
                                  upscaled(panels[row, col * cfg.tubelet_size]))
    torch.manual_seed(0)
    frames = V.animation_frames(model, video)
    assert len(frames) == cfg.num_frames
    top, left = V.label_margins([V.block_name(cfg)], V.ROW_NAMES)
    for f, frame in enumerate(frames):
        assert frame.shape == (top + h + 2 * V.GAP, left + 5 * (w + V.GAP), 3)
        for col in range(5):
            assert np.array_equal(tile_at(frame, 0, col, h, w, top, left), upscaled(panels[col, f]))


def test_saved_files_decode_with_pyav(tmp_path):
    model = model_for("adaptive")
    video = video_for(model.cfg, batch=1)
    torch.manual_seed(0)
    picture = V.figure(model, video)
    for suffix in ("gif", "mp4"):
        torch.manual_seed(0)
        V.save_figure(model, video, tmp_path / "fig.png", tmp_path / f"fig.{suffix}")
        assert np.array_equal(decode(tmp_path / "fig.png")[0], picture)  # PNG is lossless
        frames = decode(tmp_path / f"fig.{suffix}")
        assert len(frames) == model.cfg.num_frames
        torch.manual_seed(0)
        expected = V.animation_frames(model, video)[0]
        h, w = expected.shape[:2]
        assert frames[0].shape == (h + h % 2, w + w % 2, 3)  # mp4 pads to even sides
        assert np.abs(frames[0][:h, :w].astype(int) - expected).mean() < 8  # lossy: palette / H.264


def test_comparison_stacks_one_block_per_mask_type(tmp_path):
    cfg = small_cfg()
    model = model_for("adaptive")
    checkpoint = tmp_path / "checkpoint.pt"
    torch.save({"model": model.state_dict(), "config": cfg.to_dict(), "optimizer": {}, "step": 3}, checkpoint)
    rng = np.random.default_rng(0)
    clip = tmp_path / "clip.mp4"
    write_video(clip, rng.integers(0, 256, (12, 40, 48, 3), dtype=np.uint8))
    (tmp_path / "val.csv").write_text("clip.mp4 2\n")

    png, gif = visualize.main(["--checkpoint", str(checkpoint), "--video", str(clip), "--out", str(tmp_path / "out"),
                       "--compare", "random,tube,frame,adaptive", "--stride", "2"])
    assert png.name == "clip_random-tube-frame-adaptive.png"
    assert decode(png)[0].shape == (*still_size(4, 32 * SCALE, 32 * SCALE, 2), 3)
    assert len(decode(gif)) == cfg.num_frames

    png, mp4 = visualize.main(["--checkpoint", str(checkpoint), "--list", str(tmp_path / "val.csv"), "--index", "0",
                       "--out", str(tmp_path / "out"), "--mask_type", "tube", "--animation", "mp4",
                       "--mask_ratio", "0.5"])
    assert png.name == "val_0_tube.png" and decode(png)[0].shape[0] == still_size(1, 32 * SCALE, 32 * SCALE, 2)[0]
    assert len(decode(mp4)) == cfg.num_frames

    with pytest.raises(ValueError, match="out of range"):
        visualize.main(["--checkpoint", str(checkpoint), "--list", str(tmp_path / "val.csv"), "--index", "1"])


def test_adaptive_needs_a_sampler_and_help_works(capsys):
    with pytest.raises(ValueError, match="no sampler"):
        visualize.mask_for(model_for("random"), "adaptive")
    with pytest.raises(SystemExit) as exit_info:
        visualize.main(["--help"])
    assert exit_info.value.code == 0 and "--compare" in capsys.readouterr().out


def test_authors_checkpoint_loads_through_the_preset(tmp_path):
    cfg = AdaMAEConfig.preset("tiny")
    path = tmp_path / "released.pth"
    torch.save({"model": random_state_dict(reference_shapes(cfg)), "epoch": 799}, path)
    model = visualize.load_model(path, preset="tiny", mask_ratio=0.9)
    assert model.cfg == AdaMAEConfig.preset("tiny", mask_ratio=0.9) and not model.training
    assert V.figure(model, video_for(cfg, batch=1)).shape == (*still_size(1, 128, 128, 8), 3)


def test_an_unreadable_video_is_an_error_naming_it(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="empty.mp4: unreadable video"):
        visualize.read_clip(AdaMAEConfig.preset("tiny"), video=str(empty))


def test_labels_are_drawn_where_they_belong():
    """Row names left of the rows, block names above the blocks: ink where the text goes, and the glyphs'
    own pattern (a picture without labels would be white there)."""
    model = model_for("adaptive")
    torch.manual_seed(0)
    picture = V.figure(model, video_for(model.cfg, batch=1))
    h = model.cfg.img_size * SCALE
    top, left = V.label_margins(V.ROW_NAMES, ["t=0"])
    for row, name in enumerate(V.ROW_NAMES):
        y = TITLE + top + V.GAP + row * (h + V.GAP) + (h - 5 * V.FONT_SCALE) // 2
        label = picture[y:y + 5 * V.FONT_SCALE, V.GAP:V.GAP + V.text_width(name)]
        expected = np.full_like(label, 255)
        V.text(expected, 0, 0, name)
        assert np.array_equal(label, expected) and (label < 255).any(), name
    band = picture[:TITLE, :V.text_width(V.block_name(model.cfg)) + V.GAP]
    assert (band < 255).any() and V.block_name(model.cfg) == "adaptive masking, rho = 0.75"

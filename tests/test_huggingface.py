"""Hugging Face VideoMAE folders: safetensors without the library, the readers against outputs transformers
computed (tests/fixtures/hf, made by tests/fixtures/make_hf_fixtures.py), the writer's layout and round trip,
the refusals, tools.export_hf, and finetune.py, predict, features and visualize on folders. No network and no
transformers here."""

import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import finetune
from adamae import AdaMAE, AdaMAEConfig
from classifier import VideoClassifier, evaluate, load_encoder
from data import VideoDataset, load_samples
from tokenizer import sinusoid_table
from tools import export_hf, features, predict, visualize
from weights import convert, huggingface
from weights.safetensors import load_file, save_file

FIXTURES = Path(__file__).parent / "fixtures" / "hf"
HF_HEAD_EPS = 1e-5  # transformers' fc_norm and decoder norm: nn.LayerNorm's default, not configurable


@pytest.fixture(scope="module")
def outputs():
    """transformers' outputs on the fixed input, with the video in our (B, C, T, H, W) order."""
    out = load_file(FIXTURES / "outputs.safetensors")  # written by the safetensors library itself
    return {**out, "video": out["video"].transpose(1, 2)}


def with_hf_eps(model, hf_eps):
    """The model with transformers' LayerNorm eps: hf_eps (config.json's layer_norm_eps) in the blocks and the
    encoder's final norm, 1e-5 in fc_norm and the decoder's final norm. Only the eps differs from ours."""
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.LayerNorm):
            module.eps = HF_HEAD_EPS if name in ("fc_norm", "decoder.norm") else hf_eps
    return model


def hf_eps(folder):
    return json.loads((folder / "config.json").read_text())["layer_norm_eps"]


# ----------------------------------------------------------------------------- safetensors

def test_safetensors_round_trip_keeps_every_dtype_shape_and_value(tmp_path):
    g = torch.Generator().manual_seed(0)
    tensors = {"f32": torch.randn(3, 4, generator=g), "bf16": torch.randn(5, generator=g).bfloat16(),
               "f16": torch.randn(2, 3, generator=g).half(), "i64": torch.arange(-3, 4), "bool": torch.rand(7) > 0.5,
               "scalar": torch.tensor(2.5), "empty": torch.zeros(0, 4), "view": torch.randn(4, 6, generator=g).t()}
    save_file(tensors, tmp_path / "t.safetensors", metadata={"format": "pt"})
    raw = (tmp_path / "t.safetensors").read_bytes()
    assert (8 + int.from_bytes(raw[:8], "little")) % 8 == 0  # tensors start 8-byte aligned
    back = load_file(tmp_path / "t.safetensors")
    assert list(back) == list(tensors)
    for name, t in tensors.items():
        assert back[name].dtype == t.dtype and torch.equal(back[name], t), name


def test_safetensors_refuses_broken_files_by_name(tmp_path):
    save_file({"w": torch.ones(4, 4)}, tmp_path / "ok.safetensors")
    raw = (tmp_path / "ok.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(raw[:-8])
    with pytest.raises(ValueError, match=r"cut.safetensors: tensor 'w' of shape \[4, 4\] F32 needs 64 bytes"):
        load_file(tmp_path / "cut.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x10" + bytes(7) + b"not json at all!")
    with pytest.raises(ValueError, match="junk.safetensors: not a safetensors file"):
        load_file(tmp_path / "junk.safetensors")


# ----------------------------------------------------------------------------- readers against transformers

def test_pretraining_folder_reproduces_transformers_reconstruction(outputs):
    cfg, state = convert.read_pretrained(FIXTURES / "pretraining")  # convert dispatches a folder here
    assert (cfg.mask_type, cfg.sampler_heads, cfg.grid, cfg.mlp_ratio) == ("tube", 8, (2, 3, 3), 2.0)
    model = AdaMAE(cfg).eval()
    model.load_state_dict(state)  # strict: every tensor of a tube AdaMAE, nothing left over
    expected = outputs["pretraining_logits"]
    with torch.no_grad():
        as_read = model(outputs["video"], outputs["mask"]).pred
        torch.testing.assert_close(as_read, expected, rtol=0, atol=5e-5)  # our eps 1e-6 against HF's
        matched = with_hf_eps(model, hf_eps(FIXTURES / "pretraining"))(outputs["video"], outputs["mask"]).pred
    torch.testing.assert_close(matched, expected, rtol=0, atol=1e-5)


def test_encoder_folder_gives_transformers_hidden_states(outputs):
    cfg, state = huggingface.read_pretrained(FIXTURES / "encoder")
    assert not any(k.startswith(("decoder.", "encoder.norm.")) for k in state)  # mean pooling: no final norm
    model = VideoClassifier(cfg, num_classes=1).eval()
    loaded, missing, _ = load_encoder(model, state)
    assert len(loaded) == len(state) and missing == ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
    with torch.no_grad():
        tokens = model.tokenizer(outputs["video"])
        hidden = with_hf_eps(model, hf_eps(FIXTURES / "encoder")).encoder(
            tokens + sinusoid_table(tokens.shape[1], tokens.shape[2]))
    torch.testing.assert_close(hidden, outputs["encoder_hidden"], rtol=0, atol=1e-5)


def test_classifier_folder_reproduces_transformers_logits(outputs):
    cfg, state, num_classes = convert.read_classifier(FIXTURES / "classifier")
    model = VideoClassifier(cfg, num_classes).eval()
    model.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(model(outputs["video"]), outputs["classifier_logits"], rtol=0, atol=1e-5)
        matched = with_hf_eps(model, hf_eps(FIXTURES / "classifier"))(outputs["video"])
    torch.testing.assert_close(matched, outputs["classifier_logits"], rtol=0, atol=1e-5)


def test_adaptive_reading_adds_a_fresh_uniform_sampler():
    cfg, state = huggingface.read_pretrained(FIXTURES / "pretraining", mask_type="adaptive")
    tube_cfg, tube = huggingface.read_pretrained(FIXTURES / "pretraining")
    assert (cfg.mask_type, cfg.mask_ratio, tube_cfg.mask_ratio) == ("adaptive", 0.95, 0.9)
    model = AdaMAE(cfg).eval()
    model.load_state_dict(state)
    assert all(torch.equal(state[k], v) for k, v in tube.items())
    log_p = model.sampler(model.tokenizer(torch.randn(1, 3, 4, 12, 12)))
    torch.testing.assert_close(log_p.exp(), torch.full_like(log_p, 1 / cfg.num_tokens))  # P uniform at first


def test_pytorch_model_bin_reads_like_safetensors(tmp_path):
    folder = tmp_path / "bin"
    folder.mkdir()
    shutil.copy(FIXTURES / "classifier" / "config.json", folder)
    torch.save(load_file(FIXTURES / "classifier" / "model.safetensors"), folder / "pytorch_model.bin")
    _, state, _ = huggingface.read_classifier(folder)
    _, expected, _ = huggingface.read_classifier(FIXTURES / "classifier")
    assert all(torch.equal(state[k], v) for k, v in expected.items()) and state.keys() == expected.keys()


# ----------------------------------------------------------------------------- writer

@pytest.mark.parametrize("kind", ["pretraining", "classifier"])
def test_writer_lays_tensors_out_exactly_as_transformers_saved_them(tmp_path, kind):
    """Fixture -> our classes -> our writer: the same tensor names and values (the k bias HF lacks is zero)
    and the same architecture values in config.json."""
    if kind == "pretraining":
        cfg, state = huggingface.read_pretrained(FIXTURES / kind)
        huggingface.write_pretrained(tmp_path / kind, cfg, state)
    else:
        cfg, state, _ = huggingface.read_classifier(FIXTURES / kind)
        huggingface.write_classifier(tmp_path / kind, cfg, state)
    ours, theirs = load_file(tmp_path / kind / "model.safetensors"), load_file(FIXTURES / kind / "model.safetensors")
    assert sorted(ours) == sorted(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    written, saved = (json.loads((folder / kind / "config.json").read_text()) for folder in (tmp_path, FIXTURES))
    same = [*huggingface.FIELDS, "intermediate_size", "use_mean_pooling", "architectures", "norm_pix_loss",
            "hidden_act", "id2label"]
    assert {k: written.get(k) for k in same} == {k: saved.get(k) for k in same}
    assert written["layer_norm_eps"] == 1e-6 and written["qkv_bias"] is True


def test_our_models_round_trip_through_folders(tmp_path):
    torch.manual_seed(0)
    cfg = AdaMAEConfig(img_size=16, num_frames=4, patch_size=4, encoder_dim=16, encoder_depth=2, encoder_heads=2,
                       decoder_dim=8, decoder_depth=1, decoder_heads=2, mask_ratio=0.75)
    adamae = AdaMAE(cfg).eval()
    for p in adamae.parameters():  # every tensor non-trivial, the k bias included (dropped on write)
        torch.nn.init.normal_(p, std=0.2)
    left_out = huggingface.write_pretrained(tmp_path / "pre", cfg, adamae.state_dict())
    assert left_out and all(k.startswith("sampler.") for k in left_out)
    read_cfg, state = huggingface.read_pretrained(tmp_path / "pre", mask_type="adaptive", mask_ratio=0.75)
    assert read_cfg == cfg
    back = AdaMAE(read_cfg).eval()
    back.load_state_dict({**state, **{k: v for k, v in adamae.state_dict().items() if k.startswith("sampler.")}})
    video, mask = torch.randn(2, 3, 4, 16, 16), adamae.sample(torch.zeros(2, cfg.num_tokens, 1))[1]
    with torch.no_grad():
        torch.testing.assert_close(back(video, mask).pred, adamae(video, mask).pred, rtol=0, atol=1e-5)

    classifier = VideoClassifier(cfg, num_classes=4).eval()
    for p in classifier.parameters():
        torch.nn.init.normal_(p, std=0.2)
    huggingface.write_classifier(tmp_path / "cls", cfg, classifier.state_dict(), class_names="abcd")
    assert json.loads((tmp_path / "cls" / "config.json").read_text())["id2label"] == dict(zip("0123", "abcd"))
    read_cfg, state, num_classes = huggingface.read_classifier(tmp_path / "cls")
    back = VideoClassifier(read_cfg, num_classes).eval()
    back.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(back(video), classifier(video), rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------- refusals

@pytest.mark.parametrize("field, value, kind", [
    ("use_learnable_position_embeddings", True, "classifier"), ("hidden_act", "gelu_new", "classifier"),
    ("use_mean_pooling", False, "classifier"), ("use_mean_pooling", True, "pretraining"),
    ("image_size", [12, 16], "classifier"), ("layer_norm_eps", 1e-3, "encoder"), ("norm_pix_loss", False, "pretraining"),
    ("hidden_dropout_prob", 0.1, "encoder"), ("decoder_intermediate_size", 20, "pretraining")])
def test_configs_our_classes_cannot_express_are_refused_by_field(tmp_path, field, value, kind):
    folder = tmp_path / kind
    shutil.copytree(FIXTURES / kind, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, field: value}))
    read = huggingface.read_classifier if kind == "classifier" else huggingface.read_pretrained
    with pytest.raises(ValueError, match=re.escape(f"{kind}: config.json {field}={value!r}:")):
        read(folder)


@pytest.mark.parametrize("field, value, kind", [("target", "pixel", "pretraining"), ("position_table", "3d", "pretraining"),
                                               ("position_table", "3d", "classifier")])
def test_configs_the_folders_cannot_express_are_not_written(field, value, kind):
    cfg = AdaMAEConfig.preset("tiny", **{field: value})
    with pytest.raises(ValueError, match=re.escape(f"AdaMAEConfig.{field}={value!r}: a Hugging Face VideoMAE {kind}")):
        huggingface.to_hf_config(cfg, kind)
    for other in ("encoder", "classifier"):  # neither has a target: a pixel-trained model's are written
        huggingface.to_hf_config(AdaMAEConfig.preset("tiny", target="pixel"), other)


def test_the_wrong_reader_or_folder_is_named(tmp_path):
    with pytest.raises(ValueError, match="pretraining: a pre-training folder .VideoMAEForPreTraining; use read_pre"):
        convert.read_classifier(FIXTURES / "pretraining")
    with pytest.raises(ValueError, match="classifier: a fine-tuned classifier"):
        convert.read_pretrained(FIXTURES / "classifier")
    with pytest.raises(FileNotFoundError, match="without config.json"):
        convert.read_pretrained(tmp_path)
    shutil.copytree(FIXTURES / "encoder", tmp_path / "cut")
    state = load_file(tmp_path / "cut" / "model.safetensors")
    save_file({k: v for k, v in state.items() if "layer.1.output" not in k}, tmp_path / "cut" / "model.safetensors")
    with pytest.raises(ValueError, match=r"missing \['videomae.encoder.layer.1.output.dense.weight'"):
        huggingface.read_pretrained(tmp_path / "cut")


# ----------------------------------------------------------------------------- finetune.py on folders

def test_finetune_takes_folders_for_pretrained_and_eval(synthetic_root, tmp_path, capsys):
    common = ["--data", str(synthetic_root / "train.csv"), "--val", str(synthetic_root / "val.csv"), "--stride", "2",
              "--num_workers", "0", "--batch_size", "2", "--test_clips", "1", "--test_crops", "1"]
    result = finetune.main([*common, "--pretrained", str(FIXTURES / "pretraining"), "--out_dir", str(tmp_path / "ft"),
                            "--max_steps", "1"])["pretrained"]
    printed = capsys.readouterr().out
    assert f"loaded 26 tensors (tokenizer, 2 encoder blocks) from {FIXTURES / 'pretraining'}" in printed  # 2 + 2 x 12
    assert "18 tokens (2, 3, 3)" in printed and result["videos"] == 4
    result = finetune.main([*common, "--eval", "--resume", str(FIXTURES / "classifier"), "--num_frames", "8",
                            "--out_dir", str(tmp_path / "eval")])["eval"]
    assert "4 classes, 36 tokens (4, 3, 3)" in capsys.readouterr().out  # the folder's 4 frames run at 8
    assert result["videos"] == 4 and 0 <= result["top1"] <= 1


# ----------------------------------------------------------------------------- tools.export_hf

def scrambled(module):
    """Every tensor drawn non-trivially (the k bias and the sampler included), in eval mode."""
    torch.manual_seed(0)
    for p in module.parameters():
        torch.nn.init.normal_(p, std=0.2)
    return module.eval()


def test_export_hf_writes_our_checkpoints_and_reads_back_the_same_outputs(tmp_path, capsys):
    cfg = AdaMAEConfig(img_size=16, num_frames=4, patch_size=4, encoder_dim=16, encoder_depth=2, encoder_heads=2,
                       decoder_dim=8, decoder_depth=1, decoder_heads=2)  # adaptive: a sampler to leave out
    adamae = scrambled(AdaMAE(cfg))
    torch.save({"config": cfg.to_dict(), "model": adamae.state_dict()}, tmp_path / "pretrain.pt")  # pretrain.py's
    video, mask = torch.randn(2, 3, 4, 16, 16), adamae.sample(torch.zeros(2, cfg.num_tokens, 1))[1]

    result = export_hf.main([str(tmp_path / "pretrain.pt"), str(tmp_path / "pre")])
    assert result["architecture"] == "VideoMAEForPreTraining" and result["left_out"]
    assert all(k.startswith("sampler.") for k in result["left_out"])
    assert f"{len(result['left_out'])} tensors of sampler" in capsys.readouterr().out
    read_cfg, state = convert.read_pretrained(tmp_path / "pre")
    assert read_cfg == replace(cfg, mask_type="tube", mask_ratio=0.9)  # no sampler: a tube model
    back = AdaMAE(read_cfg).eval()
    back.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(back(video, mask).pred, adamae(video, mask).pred, rtol=0, atol=1e-5)

    result = export_hf.main([str(tmp_path / "pretrain.pt"), str(tmp_path / "enc"), "--encoder_only"])
    assert result["architecture"] == "VideoMAEModel"
    assert {k.split(".")[0] for k in result["left_out"]} == {"sampler", "encoder_to_decoder", "mask_token",
                                                             "decoder", "head"}
    assert not any(k.startswith("videomae.") for k in load_file(tmp_path / "enc" / "model.safetensors"))
    _, state = huggingface.read_pretrained(tmp_path / "enc")
    encoder = AdaMAE(read_cfg).eval()
    assert encoder.load_state_dict(state, strict=False).missing_keys == [
        k for k in back.state_dict() if k.startswith(("encoder_to_decoder", "mask_token", "decoder.", "head."))]
    with torch.no_grad():
        tokens, everything = adamae.tokenizer(video), torch.arange(cfg.num_tokens).expand(2, -1)
        torch.testing.assert_close(encoder.encode(encoder.tokenizer(video), everything),
                                   adamae.encode(tokens, everything), rtol=0, atol=1e-5)


def test_export_hf_writes_a_classifier_with_its_class_names(tmp_path):
    cfg = AdaMAEConfig(img_size=16, num_frames=4, patch_size=4, encoder_dim=16, encoder_depth=2, encoder_heads=2)
    model = scrambled(VideoClassifier(cfg, num_classes=3))
    torch.save({"config": cfg.to_dict(), "model": model.state_dict()}, tmp_path / "best.pt")  # finetune.py's
    (tmp_path / "names.txt").write_text("walk\nrun\njump\n")
    result = export_hf.main([str(tmp_path / "best.pt"), str(tmp_path / "cls"), "--classes", str(tmp_path / "names.txt")])
    assert result == {"architecture": "VideoMAEForVideoClassification", "tensors": len(model.state_dict()),
                      "left_out": []}
    config = json.loads((tmp_path / "cls" / "config.json").read_text())
    assert config["id2label"] == {"0": "walk", "1": "run", "2": "jump"} and config["use_mean_pooling"] is True
    read_cfg, state, num_classes = convert.read_classifier(tmp_path / "cls")
    back = VideoClassifier(read_cfg, num_classes).eval()
    back.load_state_dict(state)
    video = torch.randn(2, 3, 4, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(back(video), model(video), rtol=0, atol=1e-5)

    with pytest.raises(ValueError, match="--encoder_only: .*best.pt is a fine-tuned classifier"):
        export_hf.main([str(tmp_path / "best.pt"), str(tmp_path / "x"), "--encoder_only"])
    with pytest.raises(ValueError, match="--classes: .*pretraining is a pre-training checkpoint"):
        export_hf.main([str(FIXTURES / "pretraining"), str(tmp_path / "x"), "--classes", str(tmp_path / "names.txt")])
    (tmp_path / "names.txt").write_text("walk\nrun\n")
    with pytest.raises(ValueError, match="2 class names for a classifier of 3 classes"):
        export_hf.main([str(tmp_path / "best.pt"), str(tmp_path / "x"), "--classes", str(tmp_path / "names.txt")])


# ----------------------------------------------------------------------------- the tools on folders, other sizes

def test_predict_takes_a_classifier_folder_at_another_clip_size(synthetic_root):
    video = load_samples(synthetic_root / "val.csv")[0][0]
    ranked = predict.main([video, "--resume", str(FIXTURES / "classifier"), "--num_frames", "8", "--img_size", "16",
                           "--test_clips", "2", "--test_crops", "1", "--stride", "2"])
    cfg, state, num_classes = convert.read_classifier(FIXTURES / "classifier")
    cfg = replace(cfg, num_frames=8, img_size=16)  # the fixture's 4 frames of 12 px, run at 8 of 16
    model = VideoClassifier(cfg, num_classes)
    model.load_state_dict(state)
    views = VideoDataset([(video, 0)], 8, stride=2, img_size=16, train=False, test_clips=2, test_crops=1)
    probs = evaluate(model, views, torch.device("cpu"), torch.autocast("cpu", enabled=False), batch_size=1)[0][0]
    assert [c for c, _, _ in ranked] == probs.topk(4).indices.tolist()
    assert [p for _, _, p in ranked] == pytest.approx(probs.topk(4).values.tolist(), abs=1e-6)


def test_features_take_a_pretraining_folder_at_another_clip_size(synthetic_root, tmp_path):
    video = load_samples(synthetic_root / "val.csv")[0][0]
    features.main([str(tmp_path / "f.npy"), "--data", video, "--pretrained", str(FIXTURES / "pretraining"),
                   "--num_frames", "8", "--img_size", "16", "--test_clips", "2", "--test_crops", "1", "--stride", "2",
                   "--num_workers", "0"])
    cfg, state = convert.read_pretrained(FIXTURES / "pretraining")
    model = VideoClassifier(replace(cfg, num_frames=8, img_size=16), 1).eval()
    load_encoder(model, state)
    views = VideoDataset([(video, 0)], 8, stride=2, img_size=16, train=False, test_clips=2, test_crops=1)[0][0]
    with torch.no_grad():
        expected = model.features(views).mean(dim=0)  # (D,) over the 2 views
    np.testing.assert_allclose(np.load(tmp_path / "f.npy"), expected[None].numpy(), atol=1e-5)


def test_visualize_draws_a_pretraining_folder_and_names_what_an_encoder_folder_lacks(synthetic_root, tmp_path):
    video = load_samples(synthetic_root / "val.csv")[0][0]
    png, _ = visualize.main(["--checkpoint", str(FIXTURES / "pretraining"), "--video", video, "--out", str(tmp_path),
                             "--compare", "random,tube", "--animation", "none", "--stride", "2"])
    assert png.is_file() and visualize.load_model(FIXTURES / "pretraining", mask_ratio=0.5).cfg.mask_ratio == 0.5
    with pytest.raises(ValueError, match="it has no sampler"):
        visualize.main(["--checkpoint", str(FIXTURES / "pretraining"), "--video", video, "--out", str(tmp_path),
                        "--mask_type", "adaptive", "--animation", "none"])
    with pytest.raises(ValueError, match=r"encoder: not a loadable model to draw: VideoMAEForPreTraining .it needs "
                                         r"the decoder.: missing \['decoder.blocks"):
        visualize.load_model(FIXTURES / "encoder")

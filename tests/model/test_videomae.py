"""VideoMAE: parity with transformers' VideoMAE (the oracle) for the same random weights,
loading of its directories (classifiers, pre-trained encoders), falv's own round trip,
strict key errors, preprocessing and sampling read from the checkpoint."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from falv.config import ClipSampling
from falv.errors import CheckpointError, ConfigError
from falv.hub.families import describe, family_of, load_model
from falv.model.videomae import (
    VIDEOMAE_PRESETS,
    VideoMAEConfig,
    VideoMAEForVideoClassification,
    config_from_transformers,
    count_flops,
    count_parameters,
    sinusoid_table,
    videomae_preset,
    videomae_sampling,
)
from falv.model.transformer import VideoClassifierOutput

ATOL = RTOL = 1e-4
LABELS3 = {0: "a", 1: "b", 2: "c"}


def hf_config(**overrides) -> transformers.VideoMAEConfig:
    """A tiny transformers VideoMAE: 4 frames of 32 x 32, tubelets 2 x 16 x 16, 2 layers of width 32."""
    base = dict(image_size=32, patch_size=16, num_frames=4, tubelet_size=2, hidden_size=32, num_hidden_layers=2,
                num_attention_heads=4, intermediate_size=64, id2label=LABELS3,
                label2id={v: k for k, v in LABELS3.items()},
                decoder_hidden_size=16, decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
                decoder_intermediate_size=32)
    base.update(overrides)
    return transformers.VideoMAEConfig(**base)


def randomized(model: torch.nn.Module, seed: int = 0, std: float = 0.2) -> torch.nn.Module:
    """Every parameter random (q_bias / v_bias and the LayerNorms too; default init leaves them 0/1)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 1.0 if "norm" in name and name.endswith("weight") else 0.0  # LayerNorm scales around 1
            p.copy_(torch.randn(p.shape, generator=gen) * std + scale)
    return model.eval()


def write_hf(directory: Path, model_class, config, *, preprocessor: dict | None = None, seed: int = 0):
    """A transformers directory exactly as ``save_pretrained`` writes it; returns the oracle model."""
    model = randomized(model_class(config), seed)
    model.save_pretrained(directory)
    if preprocessor is not None:
        transformers.VideoMAEImageProcessorPil(**preprocessor).save_pretrained(directory)
    return model


def clip(batch: int = 2, frames: int = 4, size: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, frames, 3, size, size, generator=torch.Generator().manual_seed(seed))


def diffs(ours: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    abs_diff = (ours - ref).abs()
    return float(abs_diff.max()), float((abs_diff / ref.abs().clamp_min(1e-3)).max())


# -- parity with transformers ---------------------------------------------------------------------

CLASSIFIERS = {
    "mean_pooling": dict(),
    "first_token_layernorm": dict(use_mean_pooling=False),
    "patch8_eps1e-6": dict(patch_size=8, layer_norm_eps=1e-6),
    "no_qv_bias": dict(qv_bias=False),
    "wide_2heads_gelu_new": dict(hidden_size=64, num_attention_heads=2, intermediate_size=96, hidden_act="gelu_new"),
    "no_mean_pooling_patch8": dict(use_mean_pooling=False, patch_size=8, num_frames=6),
}


@pytest.mark.parametrize("variant", list(CLASSIFIERS))
def test_classifier_logits_and_features_match_transformers(tmp_path, variant):
    cfg = hf_config(**CLASSIFIERS[variant])
    ref = write_hf(tmp_path, transformers.VideoMAEForVideoClassification, cfg)
    model = load_model(tmp_path)  # auto-detected by config.json's model_type
    assert isinstance(model, VideoMAEForVideoClassification) and family_of(model) == "videomae"
    assert not model.training and model.config.labels == ["a", "b", "c"]
    assert model.config.pooling == ("mean" if cfg.use_mean_pooling else "first")
    for batch in (2, 1):
        x = clip(batch, frames=cfg.num_frames)
        with torch.no_grad():
            want = ref(x).logits
            tokens = ref.videomae(x).last_hidden_state
            ref_features = ref.fc_norm(tokens.mean(1)) if cfg.use_mean_pooling else tokens[:, 0]
            out = model(x)
        assert isinstance(out, VideoClassifierOutput) and out.logits.shape == (batch, 3)
        torch.testing.assert_close(out.logits, want, atol=ATOL, rtol=RTOL)
        torch.testing.assert_close(out.embeddings, ref_features, atol=ATOL, rtol=RTOL)
        torch.testing.assert_close(model.encode(x), tokens, atol=ATOL, rtol=RTOL)
        torch.testing.assert_close(model.forward_head(model.forward_features(x)), out.logits)
    print(f"{variant}: max abs / rel logit diff {diffs(out.logits, want)}")


def test_eager_oracle_too(tmp_path):
    """Against transformers' eager attention (explicit softmax), not only its SDPA path."""
    write_hf(tmp_path, transformers.VideoMAEForVideoClassification, hf_config())
    ref = transformers.VideoMAEForVideoClassification.from_pretrained(tmp_path, attn_implementation="eager").eval()
    x = clip()
    with torch.no_grad():
        torch.testing.assert_close(load_model(tmp_path)(x).logits, ref(x).logits, atol=ATOL, rtol=RTOL)


def test_position_table_is_transformers():
    from transformers.models.videomae.modeling_videomae import get_sinusoid_encoding_table

    torch.testing.assert_close(sinusoid_table(98, 48), get_sinusoid_encoding_table(98, 48), atol=1e-6, rtol=0)


def test_bf16_autocast_and_batch_one(tmp_path):
    ref = write_hf(tmp_path, transformers.VideoMAEForVideoClassification, hf_config())
    model = load_model(tmp_path)
    x = clip(1)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    with torch.no_grad():
        want = ref(x).logits
    assert out.logits.shape == (1, 3) and torch.isfinite(out.logits).all()
    torch.testing.assert_close(out.logits.float(), want, atol=0.1, rtol=0.1)
    bf16 = load_model(tmp_path, dtype=torch.bfloat16)  # a bf16 model, not just autocast
    with torch.no_grad():
        assert bf16(x.bfloat16()).logits.dtype == torch.bfloat16


# -- pre-trained encoders ---------------------------------------------------------------------------

ENCODERS = {
    "pretraining_layernorm": (transformers.VideoMAEForPreTraining, dict(use_mean_pooling=False)),
    "pretraining_mean_pooling": (transformers.VideoMAEForPreTraining, dict()),
    "model_layernorm": (transformers.VideoMAEModel, dict(use_mean_pooling=False)),
    "model_mean_pooling": (transformers.VideoMAEModel, dict(patch_size=8)),
}


@pytest.mark.parametrize("variant", list(ENCODERS))
def test_encoder_features_match_transformers(tmp_path, variant):
    model_class, overrides = ENCODERS[variant]
    cfg = hf_config(**overrides, id2label=None, label2id=None)
    ref = write_hf(tmp_path, model_class, cfg)
    encoder = ref.videomae if hasattr(ref, "videomae") else ref
    with pytest.warns(UserWarning, match="without a classifier"):
        model = load_model(tmp_path)
    x = clip()
    with torch.no_grad():
        tokens = encoder(x).last_hidden_state
        torch.testing.assert_close(model.encode(x), tokens, atol=ATOL, rtol=RTOL)
        features = model.forward_features(x)
    # without mean pooling: the mean of the final-normed tokens; with it: a fresh (identity) fc_norm of the mean
    want = tokens.mean(1) if not cfg.use_mean_pooling else torch.nn.functional.layer_norm(tokens.mean(1), (32,))
    torch.testing.assert_close(features, want, atol=ATOL, rtol=RTOL)
    assert model.config.pooling == "mean" and model.config.sampling is None
    assert model.config.num_labels == cfg.num_labels and model(x).logits.shape == (2, cfg.num_labels)
    # fine-tuning: labels= gives the new head, without a warning, same features
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tuned = load_model(tmp_path, labels=["p", "q", "r", "s"])
    assert tuned.config.labels == ["p", "q", "r", "s"] and tuned.head.weight.shape == (4, 32)
    with torch.no_grad():
        torch.testing.assert_close(tuned.forward_features(x), features)


def test_pretraining_decoder_is_ignored_but_encoder_keys_are_required(tmp_path):
    write_hf(tmp_path, transformers.VideoMAEForPreTraining, hf_config(use_mean_pooling=False))
    state = load_file(tmp_path / "model.safetensors")
    assert any(k.startswith("decoder.") for k in state) and "mask_token" in state
    del state["videomae.layernorm.weight"]
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"missing \['videomae.layernorm.weight'\]"):
        load_model(tmp_path, labels=["x"])


# -- falv's own layout -------------------------------------------------------------------------------

@pytest.mark.parametrize("source", ["classifier", "encoder"])
def test_save_pretrained_round_trip(tmp_path, source):
    hf_dir, falv_dir = tmp_path / "hf", tmp_path / "falv"
    if source == "classifier":
        write_hf(hf_dir, transformers.VideoMAEForVideoClassification, hf_config(num_labels=174, id2label=None,
                                                                                label2id=None))
        model = load_model(hf_dir)
        assert model.config.sampling.mode == "uniform" and model.config.sampling.clip_seconds is None  # SSv2
    else:
        write_hf(hf_dir, transformers.VideoMAEForPreTraining, hf_config(use_mean_pooling=False))
        model = load_model(hf_dir, labels=["x", "y"])
    model.save_pretrained(falv_dir)
    assert {p.name for p in falv_dir.iterdir()} == {"config.json", "model.safetensors", "preprocessor_config.json"}
    assert json.loads((falv_dir / "config.json").read_text())["model_type"] == "falv_videomae"
    again = load_model(falv_dir)
    assert isinstance(again, VideoMAEForVideoClassification) and family_of(again) == "videomae"
    assert again.config.to_dict() == model.config.to_dict()
    mine, theirs = model.state_dict(), again.state_dict()
    assert mine.keys() == theirs.keys()
    for key in mine:
        assert torch.equal(mine[key], theirs[key]), key
    x = clip()
    with torch.no_grad():
        assert torch.equal(model(x).logits, again(x).logits)
    relabelled = VideoMAEForVideoClassification.from_pretrained(falv_dir, labels=["u", "v", "w"])
    assert relabelled.config.labels == ["u", "v", "w"] and relabelled(x).logits.shape == (2, 3)
    with torch.no_grad():
        torch.testing.assert_close(relabelled.forward_features(x), model.forward_features(x))


def test_labels_give_a_new_head_on_a_classifier(tmp_path):
    write_hf(tmp_path, transformers.VideoMAEForVideoClassification, hf_config())
    model, tuned = load_model(tmp_path), load_model(tmp_path, labels=["p", "q"])
    assert tuned.config.labels == ["p", "q"] and tuned.head.weight.shape == (2, 32)
    assert not torch.equal(tuned.head.weight, model.head.weight[:2])
    assert torch.equal(tuned.head.bias, torch.zeros(2))
    x = clip()
    with torch.no_grad():
        torch.testing.assert_close(tuned.forward_features(x), model.forward_features(x))


def test_loss_and_gradients_reach_every_parameter():
    config = VideoMAEConfig(**{**dict(image_size=32, patch_size=16, num_frames=4, hidden_size=32, num_hidden_layers=2,
                                      num_attention_heads=4, intermediate_size=64), "id2label": LABELS3})
    model = VideoMAEForVideoClassification(config)
    labels = torch.tensor([0, 2])
    out = model(clip(), labels=labels)
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, labels))
    out.loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    with pytest.raises(ValueError, match="position table is fixed"):
        model(clip(frames=6))
    with pytest.raises(ValueError, match="batch, frames, channels"):
        model(torch.randn(4, 3, 32, 32))


# -- strict keys and refusals ---------------------------------------------------------------------------

def _edit_drop(state):
    del state["videomae.encoder.layer.1.attention.attention.v_bias"]
    return "videomae.encoder.layer.1.attention.attention.v_bias"


def _edit_add(state):
    state["videomae.encoder.layer.0.attention.attention.key.bias"] = torch.zeros(32)  # VideoMAE has no key bias
    return "videomae.encoder.layer.0.attention.attention.key.bias"


def _edit_shape(state):
    state["videomae.encoder.layer.0.intermediate.dense.weight"] = torch.zeros(65, 32)
    return "videomae.encoder.layer.0.intermediate.dense.weight (65, 32) != (64, 32)"


def _edit_classifier(state):
    state["classifier.weight"] = torch.zeros(5, 32)
    return "classifier.weight (5, 32) != (3, 32)"


@pytest.mark.parametrize("edit", [_edit_drop, _edit_add, _edit_shape, _edit_classifier])
def test_transformers_keys_are_strict(tmp_path, edit):
    write_hf(tmp_path, transformers.VideoMAEForVideoClassification, hf_config())
    state = load_file(tmp_path / "model.safetensors")
    named = edit(state)
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError) as info:
        load_model(tmp_path)
    assert named in str(info.value) and len(str(info.value).splitlines()) == 1


@pytest.mark.parametrize("edit", ["drop", "add", "shape"])
def test_falv_keys_are_strict(tmp_path, edit):
    write_hf(tmp_path / "hf", transformers.VideoMAEForVideoClassification, hf_config())
    load_model(tmp_path / "hf").save_pretrained(tmp_path / "falv")
    file = tmp_path / "falv" / "model.safetensors"
    state = load_file(file)
    if edit == "drop":
        del state[named := "blocks.1.attn.q_bias"]
    elif edit == "add":
        state[named := "blocks.0.attn.k_bias"] = torch.zeros(32)
    else:
        state["blocks.0.attn.qkv.weight"] = torch.zeros(96, 31)
        named = "blocks.0.attn.qkv.weight (96, 31) != (96, 32)"
    save_file(state, file)
    with pytest.raises(CheckpointError, match=named.replace("(", r"\(").replace(")", r"\)")):
        load_model(tmp_path / "falv")


def test_legacy_and_modern_bias_names_and_bin_weights(tmp_path):
    """Hub checkpoints are pytorch_model.bin with ``q_bias`` and configs with ``qkv_bias``;
    transformers 5 names the biases ``query.bias`` in memory: all read the same."""
    ref = write_hf(tmp_path / "hf", transformers.VideoMAEForVideoClassification, hf_config())
    x = clip()
    with torch.no_grad():
        want = ref(x).logits
    state = load_file(tmp_path / "hf" / "model.safetensors")
    modern = {k.replace("attention.attention.q_bias", "attention.attention.query.bias")
              .replace("attention.attention.v_bias", "attention.attention.value.bias"): v for k, v in state.items()}
    shutil.copytree(tmp_path / "hf", tmp_path / "modern")
    save_file(modern, tmp_path / "modern" / "model.safetensors")
    shutil.copytree(tmp_path / "hf", tmp_path / "bin")
    (tmp_path / "bin" / "model.safetensors").unlink()
    torch.save(state, tmp_path / "bin" / "pytorch_model.bin")
    config = json.loads((tmp_path / "bin" / "config.json").read_text())
    config["qkv_bias"] = config.pop("qv_bias")
    (tmp_path / "bin" / "config.json").write_text(json.dumps(config))
    for name in ("modern", "bin"):
        with torch.no_grad():
            torch.testing.assert_close(load_model(tmp_path / name)(x).logits, want, atol=ATOL, rtol=RTOL)


def test_missing_weights_and_other_families_are_refused(tmp_path):
    write_hf(tmp_path / "hf", transformers.VideoMAEForVideoClassification, hf_config())
    (tmp_path / "hf" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="has no weights"):
        load_model(tmp_path / "hf")
    # a videomae config.json over another model's weights: every VideoMAE key is named missing
    save_file({"model.blocks.0.attn.qkv.weight": torch.zeros(96, 32)}, tmp_path / "hf" / "model.safetensors")
    with pytest.raises(CheckpointError, match="missing.*patch_embeddings.projection"):
        load_model(tmp_path / "hf")
    # another family's directory is not VideoMAE's to read
    from falv.model.baseline import R2Plus1DConfig, R2Plus1DForVideoClassification

    R2Plus1DForVideoClassification(R2Plus1DConfig(num_frames=4, image_size=32, stem_width=8, widths=(8,), depths=(1,),
                                                  spatial_strides=(1,), temporal_strides=(1,))).save_pretrained(
        tmp_path / "cnn")
    assert family_of(load_model(tmp_path / "cnn")) == "r2plus1d"
    with pytest.raises(CheckpointError, match="model_type 'falv_r2plus1d'"):
        VideoMAEForVideoClassification.from_pretrained(tmp_path / "cnn")
    with pytest.raises(CheckpointError, match="not 'falv_videomae'"):
        VideoMAEConfig.from_json_file(tmp_path / "cnn" / "config.json")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "config.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError):
        VideoMAEForVideoClassification.from_pretrained(tmp_path / "junk")


# -- config, preprocessing, sampling -------------------------------------------------------------------

def test_preprocessor_config_is_read(tmp_path):
    pre = dict(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, image_mean=[0.5, 0.4, 0.3],
               image_std=[0.2, 0.25, 0.3])
    write_hf(tmp_path / "ok", transformers.VideoMAEForVideoClassification, hf_config(), preprocessor=pre)
    config = load_model(tmp_path / "ok").config
    assert config.image_mean == (0.5, 0.4, 0.3) and config.image_std == (0.2, 0.25, 0.3) and config.image_size == 32
    write_hf(tmp_path / "bad", transformers.VideoMAEForVideoClassification, hf_config(),
             preprocessor={**pre, "crop_size": {"height": 48, "width": 48}})
    with pytest.raises(CheckpointError, match="crops 48 px but config.json's image_size is 32"):
        load_model(tmp_path / "bad")


def test_sampling_by_label_count():
    kinetics = videomae_sampling(16, 400)
    assert kinetics == ClipSampling(mode="dense", frame_stride=4, fps=30.0, source=kinetics.source)
    assert kinetics.seconds(16) == pytest.approx(16 * 4 / 30)
    ssv2 = videomae_sampling(16, 174)
    assert ssv2.mode == "uniform" and ssv2.clip_seconds is None and ssv2.seconds(16) is None
    assert videomae_sampling(16, 3) is None and videomae_sampling(8, 400) is None
    published = dict(hf_config().to_dict(), image_size=224, patch_size=16, num_frames=16,
                     id2label={i: str(i) for i in range(400)})
    config = config_from_transformers(published)
    assert config.sampling == kinetics and config.image_mean == (0.485, 0.456, 0.406)
    assert config_from_transformers(published, classifier=False).sampling is None


def test_config_json_round_trip_and_validation(tmp_path):
    config = videomae_preset("videomae-small", num_labels=5, use_mean_pooling=False, pooling="mean",
                             sampling=videomae_sampling(16, 400))
    assert config.hidden_size == 384 and config.num_labels == 5 and config.model_type == "falv_videomae"
    config.save_pretrained(tmp_path)
    again = VideoMAEConfig.from_json_file(tmp_path / "config.json")
    assert again == config and again.to_dict() == config.to_dict()
    assert VideoMAEConfig(use_mean_pooling=False).pooling == "first" and VideoMAEConfig().pooling == "mean"
    bad = [dict(image_size=30), dict(num_frames=5), dict(hidden_size=30), dict(hidden_act="tanh"),
           dict(pooling="first"), dict(pooling="max", use_mean_pooling=False), dict(model_type="videomae"),
           dict(head_dropout_prob=1.0), dict(qv_bias="yes"), dict(layer_norm_eps=0)]
    for fields in bad:
        with pytest.raises(ConfigError):
            VideoMAEConfig(**fields)
    with pytest.raises(ConfigError, match="unknown VideoMAE preset"):
        videomae_preset("videomae-giant")


def test_meta_device_flops_parameters_and_family_license():
    hf = hf_config()
    config = config_from_transformers(hf.to_dict())
    reference = transformers.VideoMAEForVideoClassification(hf)
    assert count_parameters(config) == sum(p.numel() for p in reference.parameters())
    # 8 tokens of width 32 through 2 blocks, the tubelet conv and the head, multiply-add = 2 FLOPs
    n, d, m, layers = 8, 32, 64, 2
    block = 2 * n * d * 3 * d + 2 * 2 * n * n * d + 2 * n * d * d + 2 * 2 * n * d * m
    assert count_flops(config) == layers * block + 2 * n * d * (3 * 2 * 16 * 16) + 2 * d * 3
    base = videomae_preset("videomae-base", num_labels=400)
    # ViT-B 16x224: the paper's 180 G "FLOPs" per clip are multiply-adds, falv counts 2 FLOPs each
    assert 86e6 < count_parameters(base) < 88e6 and 350e9 < count_flops(base) < 370e9
    assert set(VIDEOMAE_PRESETS) == {"videomae-small", "videomae-base", "videomae-large", "videomae-huge"}
    row = next(r for r in describe() if r["name"] == "videomae")
    assert row["license"] == "CC-BY-NC-4.0 (published VideoMAE weights)"
    assert row["model_types"] == ["falv_videomae", "videomae"] and not row["reads_files"]

"""Public TimeSformer checkpoints: transformers directories and original .pyth files.

transformers' TimesformerForVideoClassification is the oracle: same weights, same logits.
"""

import pickle

import pytest
import torch

from falv import FALForVideoClassification
from falv.errors import CheckpointError
from falv.hub.convert import timesformer_key_map, transformers_to_original

from .conftest import randomize_, tiny_config

transformers = pytest.importorskip("transformers")


def hf_model(attention_type, **kw):
    cfg = transformers.TimesformerConfig(
        image_size=32, patch_size=8, num_frames=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, attention_type=attention_type, num_labels=5, **kw)
    return randomize_(transformers.TimesformerForVideoClassification(cfg)).eval()


@pytest.fixture(params=["divided_space_time", "joint_space_time"])
def hf_dir(request, tmp_path):
    model = hf_model(request.param)
    model.save_pretrained(tmp_path)
    return model, tmp_path


def test_same_logits_as_transformers(hf_dir):
    hf, path = hf_dir
    model = FALForVideoClassification.from_pretrained(path)
    assert model.config.attention_type == hf.config.attention_type
    x = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        assert (model(x).logits - hf(x).logits).abs().max() <= 1e-4
        # another frame count: both interpolate the time embedding (nearest)
        hf.config.num_frames = 6
        x6 = torch.randn(2, 6, 3, 32, 32)
        assert (model(x6).logits - hf(x6).logits).abs().max() <= 1e-4


def space_only_reference(hf, x):
    """The original TimeSformer's space-only output, from transformers' hidden states."""
    b, t = x.shape[:2]
    last = hf.timesformer(x, output_hidden_states=True).hidden_states[-1]  # (B*F, N+1, D), before LN
    tokens = last.reshape(b, t, *last.shape[1:]).mean(1)  # average over frames
    return hf.classifier(hf.timesformer.layernorm(tokens)[:, 0])


def test_space_only_follows_original_timesformer(tmp_path):
    """transformers returns B*F rows for space-only; falv averages frames, then LN, then head."""
    hf = hf_model("space_only")
    hf.save_pretrained(tmp_path)
    model = FALForVideoClassification.from_pretrained(tmp_path)
    x = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        assert hf(x).logits.shape == (8, 5)  # one row per frame in transformers
        assert (model(x).logits - space_only_reference(hf, x)).abs().max() <= 1e-4


def original_state(hf, attention_type):
    return transformers_to_original(hf.state_dict(), hf.config.num_hidden_layers)


@pytest.mark.parametrize("attention_type", ["divided_space_time", "joint_space_time", "space_only"])
def test_original_pyth_checkpoint(tmp_path, attention_type):
    hf = hf_model(attention_type)
    path = tmp_path / "TimeSformer_tiny.pyth"
    torch.save({"epoch": 3, "model_state": original_state(hf, attention_type), "cfg": "yaml text"}, path)
    # A space-only checkpoint has no time embedding, so nothing in it says its frame count.
    frames = {"num_frames": 4} if attention_type == "space_only" else {}
    model = FALForVideoClassification.from_pretrained(path, num_attention_heads=4, **frames)
    assert model.config.attention_type == attention_type
    assert (model.config.num_frames, model.config.image_size, model.config.num_labels) == (4, 32, 5)
    x = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        reference = space_only_reference(hf, x) if attention_type == "space_only" else hf(x).logits
        assert (model(x).logits - reference).abs().max() <= 1e-4


def test_key_map_is_explicit_and_complete():
    cfg = tiny_config()
    mapping = timesformer_key_map(cfg, "transformers")
    model_keys = set(FALForVideoClassification(cfg).state_dict())
    assert {dst for dst, _ in mapping.values()} == model_keys
    assert "timesformer.encoder.layer.1.temporal_dense.weight" in mapping
    with pytest.raises(CheckpointError, match="no 'axial' attention"):
        timesformer_key_map(tiny_config(attention_type="axial"), "original")


def test_strict_conversion_names_missing_unexpected_and_mismatched_keys(tmp_path):
    hf = hf_model("divided_space_time")
    state = original_state(hf, "divided_space_time")
    del state["model.blocks.1.temporal_fc.weight"]
    state["model.blocks.0.extra.weight"] = torch.zeros(2)
    torch.save({"model_state": state}, tmp_path / "bad.pyth")
    with pytest.raises(CheckpointError) as err:
        FALForVideoClassification.from_pretrained(tmp_path / "bad.pyth", num_attention_heads=4)
    assert "model.blocks.1.temporal_fc.weight" in str(err.value)
    assert "model.blocks.0.extra.weight" in str(err.value)

    state = original_state(hf, "divided_space_time")
    state["model.blocks.0.mlp.fc2.bias"] = torch.zeros(7)
    torch.save({"model_state": state}, tmp_path / "shape.pyth")
    with pytest.raises(CheckpointError, match="shape mismatch: model.blocks.0.mlp.fc2.bias"):
        FALForVideoClassification.from_pretrained(tmp_path / "shape.pyth", num_attention_heads=4)


class _Payload:
    def __reduce__(self):
        return (print, ("this would run arbitrary code",))


def test_pickles_with_code_are_refused(tmp_path):
    path = tmp_path / "evil.pyth"
    with open(path, "wb") as f:
        pickle.dump({"model_state": {"x": _Payload()}}, f, protocol=2)
    with pytest.raises(CheckpointError, match="never unpickles"):
        FALForVideoClassification.from_pretrained(path)


def test_hub_ids_resolve_through_huggingface_hub(tmp_path, monkeypatch):
    hf = hf_model("divided_space_time")
    hf.save_pretrained(tmp_path / "snapshot")
    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return str(tmp_path / "snapshot")

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    model = FALForVideoClassification.from_pretrained("SVECTOR-CORPORATION/FAL", revision="main")
    assert calls[0][0] == "SVECTOR-CORPORATION/FAL" and calls[0][1]["revision"] == "main"
    x = torch.randn(1, 4, 3, 32, 32)
    with torch.no_grad():
        assert (model(x).logits - hf(x).logits).abs().max() <= 1e-4


def test_unreachable_hub_gives_one_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="pass a local directory"):
        FALForVideoClassification.from_pretrained("nobody/no-such-model", local_files_only=True)


def test_convert_command_writes_a_falv_directory(hf_dir, tmp_path):
    from click.testing import CliRunner

    from falv.cli.main import cli

    hf, path = hf_dir
    (tmp_path / "labels.txt").write_text("a\nb\nc\nd\ne\n")
    out = tmp_path / "converted"
    result = CliRunner().invoke(cli, ["convert", str(path), str(out), "--labels", str(tmp_path / "labels.txt")])
    assert result.exit_code == 0, result.output
    model = FALForVideoClassification.from_pretrained(out)
    assert model.config.model_type == "fal" and model.config.labels == ["a", "b", "c", "d", "e"]
    x = torch.randn(1, 4, 3, 32, 32)
    with torch.no_grad():
        assert (model(x).logits - hf(x).logits).abs().max() <= 1e-4

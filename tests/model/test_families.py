"""The registry of model families: one loader for every checkpoint, recognised by content."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

import falv
from falv import FALForVideoClassification, preset
from falv.errors import CheckpointError
from falv.hub.families import describe, families, family_of, load_model, read_checkpoint
from falv.hub.convert import transformers_to_original
from falv.model.baseline import R2Plus1DForVideoClassification, baseline_preset

from .conftest import randomize_

transformers = pytest.importorskip("transformers")


def _timesformer(tmp_path):
    cfg = transformers.TimesformerConfig(image_size=32, patch_size=8, num_frames=4, hidden_size=32,
                                         num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                         num_labels=5)
    hf = randomize_(transformers.TimesformerForVideoClassification(cfg)).eval()
    return hf


def test_every_family_is_registered_once_with_what_it_reads():
    names = [f.name for f in families()]
    assert len(names) == len(set(names))
    assert {"fal", "r2plus1d"} <= set(names)
    types = [t for f in families() for t in f.model_types]
    assert len(types) == len(set(types)), "two families claim one model_type"
    rows = describe()
    assert all(row["description"] for row in rows)


@pytest.mark.parametrize("suffix", [".pyth", ".pkl", ".bin", ""])
def test_a_timesformer_checkpoint_is_recognised_by_content_whatever_its_name(tmp_path, suffix):
    hf = _timesformer(tmp_path)
    path = tmp_path / f"weights{suffix}"
    torch.save({"epoch": 1, "model_state": transformers_to_original(hf.state_dict(), 2), "cfg": "x"}, path)
    model = load_model(path, num_attention_heads=4)
    assert family_of(model) == "fal" and isinstance(model, FALForVideoClassification)
    x = torch.randn(1, 4, 3, 32, 32)
    with torch.no_grad():
        assert (model(x).logits - hf(x).logits).abs().max() <= 1e-4


def test_directories_go_to_their_family(tmp_path):
    hf = _timesformer(tmp_path)
    hf.save_pretrained(tmp_path / "ts")
    FALForVideoClassification(preset("tiny", num_labels=3)).save_pretrained(tmp_path / "fal")
    R2Plus1DForVideoClassification(baseline_preset("tiny", num_labels=3)).save_pretrained(tmp_path / "cnn")
    assert family_of(load_model(tmp_path / "ts")) == "fal"
    assert family_of(load_model(tmp_path / "fal")) == "fal"
    cnn = falv.load_model(tmp_path / "cnn")  # the public name
    assert family_of(cnn) == "r2plus1d" and isinstance(cnn, R2Plus1DForVideoClassification)
    assert not cnn.training


def test_labels_give_a_fresh_head_in_any_family(tmp_path):
    R2Plus1DForVideoClassification(baseline_preset("tiny", num_labels=3)).save_pretrained(tmp_path / "cnn")
    model = load_model(tmp_path / "cnn", labels=["a", "b", "c", "d"])
    assert model.config.labels == ["a", "b", "c", "d"]
    assert model(torch.randn(1, 8, 3, 64, 64)).logits.shape == (1, 4)


def test_options_a_family_does_not_take_are_named(tmp_path):
    R2Plus1DForVideoClassification(baseline_preset("tiny", num_labels=3)).save_pretrained(tmp_path / "cnn")
    with pytest.raises(CheckpointError, match="r2plus1d models do not take num_attention_heads"):
        load_model(tmp_path / "cnn", num_attention_heads=4)


def test_unknown_directories_and_files_get_one_clear_error(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(CheckpointError, match="model_type 'bert'; falv reads: .*timesformer"):
        load_model(tmp_path / "d")
    torch.save({"model_state": {"encoder.weight": torch.zeros(2)}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="no known family .*encoder.weight"):
        load_model(tmp_path / "other.pth")
    (tmp_path / "text.pyth").write_text("hello")
    with pytest.raises(CheckpointError, match="neither a PyTorch checkpoint"):
        load_model(tmp_path / "text.pyth")
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "missing.pyth")


class _Payload:
    ran = []

    def __reduce__(self):
        return (_Payload.ran.append, ("code ran",))


@pytest.mark.parametrize("protocol", [2, 4])
def test_pickles_that_would_run_code_are_refused_without_running_it(tmp_path, protocol):
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as handle:
        pickle.dump({"blobs": {"conv1_w": np.zeros(3), "x": _Payload()}}, handle, protocol=protocol)
    with pytest.raises(CheckpointError, match="never unpickles"):
        read_checkpoint(path)
    assert _Payload.ran == []


@pytest.mark.parametrize("protocol", [2, 4])
def test_caffe2_pickles_of_arrays_are_read(tmp_path, protocol):
    blobs = {"conv1_w": np.arange(6, dtype=np.float32).reshape(2, 3), "pred_b": np.zeros(2, np.float32),
             "lr": np.float32(0.1)}
    path = tmp_path / "c2.pkl"
    with open(path, "wb") as handle:
        pickle.dump({"blobs": blobs}, handle, protocol=protocol)
    checkpoint = read_checkpoint(path)
    assert checkpoint.format == "caffe2"
    np.testing.assert_array_equal(checkpoint.state()["conv1_w"], blobs["conv1_w"])

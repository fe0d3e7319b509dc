import pytest
import torch

from falv import FALConfig, FALForVideoClassification
from falv.model.baseline import R2Plus1DForVideoClassification, baseline_preset
from tests.model.conftest import randomize_

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")


def tiny_config(**overrides) -> FALConfig:
    """4 frames of 32x32, 8x8 patches, width 32, one block (every step of a scheme, fast to export)."""
    base = dict(image_size=32, patch_size=8, num_frames=4, hidden_size=32, num_hidden_layers=1,
                num_attention_heads=4, intermediate_size=64, id2label={0: "a", 1: "b", 2: "c"})
    return FALConfig(**{**base, **overrides})


def build_model(kind: str) -> torch.nn.Module:
    """A tiny FAL model of scheme ``kind`` (random weights large enough to matter) or the CNN baseline."""
    torch.manual_seed(0)
    if kind == "cnn":
        model = R2Plus1DForVideoClassification(baseline_preset("tiny", image_size=32, num_frames=4,
                                                               id2label={0: "a", 1: "b", 2: "c"}))
        with torch.no_grad():  # BatchNorm statistics that are not the identity
            for module in model.modules():
                if isinstance(module, torch.nn.BatchNorm3d):
                    module.running_mean.uniform_(-0.1, 0.1)
                    module.running_var.uniform_(0.5, 1.5)
        return model.eval()
    return randomize_(FALForVideoClassification(tiny_config(attention_type=kind))).eval()


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    """Exports made on the fly go to a per-test cache, never to ~/.cache."""
    monkeypatch.setenv("FALV_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def make_model():
    """``make_model(kind)``: a scheme of ATTENTION_TYPES or "cnn", tiny, fixed random weights."""
    return build_model

"""Importing falv registers it with transformers' Auto classes and video pipeline."""

import numpy as np
import pytest
import torch

import falv
from falv import FALForVideoClassification, preset

transformers = pytest.importorskip("transformers")
av = pytest.importorskip("av")


@pytest.fixture
def model_dir(tmp_path):
    model = FALForVideoClassification(preset("tiny", id2label={0: "left", 1: "right", 2: "still"})).eval()
    model.save_pretrained(tmp_path / "model")
    return model, tmp_path / "model"


def test_auto_classes_load_a_falv_directory(model_dir):
    model, path = model_dir
    assert falv.__version__
    config = transformers.AutoConfig.from_pretrained(path)
    assert config.model_type == "fal"
    hf = transformers.AutoModelForVideoClassification.from_pretrained(path).eval()
    x = torch.randn(2, 8, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(hf(pixel_values=x).logits, model(x).logits)
    processor = transformers.AutoImageProcessor.from_pretrained(path)
    pixels = processor(list(np.zeros((8, 80, 100, 3), np.uint8)), return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 8, 3, 64, 64)


def test_video_classification_pipeline(model_dir, tmp_path):
    _, path = model_dir
    video = tmp_path / "clip.mp4"
    with av.open(str(video), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        rng = np.random.default_rng(0)
        for _ in range(20):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    pipe = transformers.pipeline("video-classification", model=str(path))
    result = pipe(str(video), top_k=3)
    assert [r["label"] for r in result] and {r["label"] for r in result} == {"left", "right", "still"}
    assert abs(sum(r["score"] for r in result) - 1) < 1e-4

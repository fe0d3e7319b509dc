"""FALImageProcessor: inputs it accepts, the pixels it produces, its config file."""

import json

import numpy as np
import pytest
import torch

from falv import AutoImageProcessor, FALForVideoClassification, FALImageProcessor, preset

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.5)


def processor(size=64):
    return FALImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                             image_mean=MEAN, image_std=STD)


@pytest.mark.parametrize("frames,expected", [
    (list(np.zeros((8, 240, 320, 3), np.uint8)), (1, 8, 3, 64, 64)),       # HxWx3 uint8 frames
    (list(np.random.randn(8, 3, 224, 224)), (1, 8, 3, 64, 64)),            # 3xHxW float frames
    (np.zeros((5, 100, 60, 3), np.uint8), (1, 5, 3, 64, 64)),              # one array, portrait
    ([np.zeros((4, 70, 90, 3), np.uint8)] * 3, (3, 4, 3, 64, 64)),         # a batch of videos
    (torch.zeros(2, 4, 3, 64, 64), (2, 4, 3, 64, 64)),                     # already the right size
])
def test_accepted_inputs_and_shapes(frames, expected):
    out = processor()(frames, return_tensors="pt")
    assert out["pixel_values"].shape == expected and out.pixel_values.dtype == torch.float32


def test_constant_frames_give_normalised_constants():
    rgb = np.array([255, 51, 0], np.uint8)
    video = np.broadcast_to(rgb, (3, 90, 120, 3)).copy()
    out = processor()(video).pixel_values[0]
    expected = (rgb / 255.0 - np.array(MEAN)) / np.array(STD)
    for c in range(3):
        torch.testing.assert_close(out[:, c], torch.full((3, 64, 64), float(expected[c])), atol=1e-5, rtol=0)


def test_resize_keeps_aspect_then_crops_the_centre():
    # a 100x200 frame whose left and right quarters are white: after resizing the
    # short side to 64 (64x128) the centre 64x64 crop is the black middle half
    frame = np.zeros((100, 200, 3), np.uint8)
    frame[:, :50] = 255
    frame[:, 150:] = 255
    p = FALImageProcessor(size=64, crop_size=64, do_normalize=False)
    out = p([frame]).pixel_values[0, 0]
    assert out.shape == (3, 64, 64)
    assert out[:, :, 2:-2].max() < 0.05 and out.mean() < 0.05


def test_to_dtype_and_numpy_output():
    video = np.zeros((2, 64, 64, 3), np.uint8)
    assert processor()(video).to(torch.bfloat16).pixel_values.dtype == torch.bfloat16
    assert isinstance(processor()(video, return_tensors="np")["pixel_values"], np.ndarray)


@pytest.mark.parametrize("bad", [[], np.zeros((4, 4)), [np.zeros((8, 8, 3)), np.zeros((9, 9, 3))]])
def test_bad_inputs_raise_value_errors(bad):
    with pytest.raises(ValueError):
        processor()(bad)


def test_save_and_load_round_trip(tmp_path):
    p = processor(48)
    p.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert data["size"] == {"shortest_edge": 48} and data["image_mean"] == list(MEAN)
    loaded = AutoImageProcessor.from_pretrained(tmp_path)
    assert loaded.to_dict() == p.to_dict()


def test_reads_a_timesformer_preprocessor_config(tmp_path):
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "VideoMAEImageProcessor", "do_resize": True, "size": {"shortest_edge": 224},
        "do_center_crop": True, "crop_size": {"height": 224, "width": 224}, "do_rescale": True,
        "rescale_factor": 0.00392156862745098, "do_normalize": True, "image_mean": [0.45, 0.45, 0.45],
        "image_std": [0.225, 0.225, 0.225], "resample": 2}))
    p = FALImageProcessor.from_pretrained(tmp_path)
    assert p.image_mean == [0.45] * 3 and p.crop_size == {"height": 224, "width": 224}


def test_model_directory_carries_its_preprocessing(tmp_path):
    cfg = preset("tiny", image_mean=(0.45, 0.45, 0.45), image_std=(0.225, 0.225, 0.225))
    FALForVideoClassification(cfg).save_pretrained(tmp_path)
    p = AutoImageProcessor.from_pretrained(tmp_path)
    assert p.size == {"shortest_edge": 64} and p.image_std == [0.225] * 3 and p.num_frames == 8


def test_model_card_snippet_runs_as_written(tmp_path, capsys):
    """The README's 'Load and Run the Model' block, with only the model path substituted."""
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    block = readme.split("### Load and run the model", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    assert "from falv import AutoImageProcessor, FALVideoClassifierForVideoClassification" in block
    FALForVideoClassification(preset("tiny", id2label={0: "juggling", 1: "welding"})).save_pretrained(tmp_path)
    exec(compile(block.replace("path/to/model", str(tmp_path)), "README.md", "exec"), {})
    assert capsys.readouterr().out.startswith("Predicted class: ")


def test_processor_equals_the_eval_transform_used_in_training():
    """Inference and evaluation during training see the same pixels."""
    from falv.data.transforms import eval_transform

    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (4, 90, 130, 3), dtype=np.uint8)
    ours = processor()(video).pixel_values[0]
    theirs = eval_transform(shortest_edge=64, crop_size=64, mean=MEAN, std=STD)(video)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)

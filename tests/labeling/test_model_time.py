"""Windows of the model's clip duration, calibrated scores and the model directory's preprocessing."""

import json

import numpy as np
import pytest
import torch

from falv import FALForVideoClassification, preset
from falv.config import ClipSampling
from falv.labeling.engine import Engine, label
from falv.labeling.stages import LabelOptions, ModelSpec, default_window, window_plan
from falv.processing import FALImageProcessor
from falv.video.testing import write_test_video

SPEC = ModelSpec(num_frames=8, short_side=64, crop=(64, 64), mean=(0.5,) * 3, std=(0.5,) * 3, rescale=1 / 255)


# (model clip seconds, options) -> plan_windows arguments
@pytest.mark.parametrize("seconds, options, expected", [
    (None, {}, {"num_clips": 1, "window": None, "stride": None}),           # unknown: the whole video, as before
    (None, {"clips": 4}, {"num_clips": 4, "window": None, "stride": None}),  # unknown: 4 equal parts
    (2.5, {}, {"num_clips": None, "window": 2.5, "stride": None}),          # windows of 2.5 s over the video
    (2.5, {"clips": 4}, {"num_clips": 4, "window": 2.5, "stride": None}),   # 4 windows of 2.5 s spread over it
    (2.5, {"clip_seconds": 1.0}, {"num_clips": None, "window": 1.0, "stride": None}),  # overridden
    (None, {"clip_seconds": 1.0, "clips": 2}, {"num_clips": 2, "window": 1.0, "stride": None}),
    (2.5, {"window": 4.0, "stride": 2.0}, {"num_clips": None, "window": 4.0, "stride": 2.0}),  # explicit wins
])
def test_window_plan(seconds, options, expected):
    import dataclasses

    assert window_plan(dataclasses.replace(SPEC, clip_seconds=seconds), LabelOptions(**options)) == expected


def test_default_window():
    assert default_window(8) == 2.0 and default_window(8, 8.533) == 8.533 and default_window(1) == 0.25


@pytest.fixture(scope="module")
def timed_model():
    torch.manual_seed(0)
    config = preset("tiny", id2label={0: "a", 1: "b", 2: "c"}, sampling=ClipSampling(clip_seconds=1.0),
                    temperature=3.0)
    return FALForVideoClassification(config).eval()


def test_label_plans_windows_of_the_model_duration(tmp_path, timed_model):
    long = write_test_video(tmp_path / "long.mp4", frames=36, fps=12, size=(64, 64))   # 3 s
    short = write_test_video(tmp_path / "short.mp4", frames=9, fps=12, size=(64, 64))  # 0.75 s
    common = dict(workers=1, top_k=3, precision="fp32")
    by_default = {r.path: r for r in label([str(long), str(short)], timed_model, **common)}
    spans = [(w.start, w.end) for w in by_default[str(long)].windows]
    assert spans == [(0.0, 1.0), (1.0, 2.0), (2.0, 3.0)]
    assert [(w.start, w.end) for w in by_default[str(short)].windows] == [(0.0, 0.75)]
    (two,) = label([str(long)], timed_model, clips=2, **common)
    assert [(w.start, w.end) for w in two.windows] == [(0.0, 1.0), (2.0, 3.0)]
    (still_one,) = label([str(short)], timed_model, clips=8, **common)  # shorter than a window: one window
    assert len(still_one.windows) == 1
    # the temperature of the config is applied: scores are softmax(logits / 3), raw with temperature=1
    (raw,) = label([str(short)], timed_model, temperature=1.0, **common)
    calibrated = np.array([s.score for s in sorted(still_one.labels, key=lambda s: s.label)])
    uncalibrated = np.array([s.score for s in sorted(raw.labels, key=lambda s: s.label)])
    logits = np.log(uncalibrated)
    expected = np.exp(logits / 3.0) / np.exp(logits / 3.0).sum()
    np.testing.assert_allclose(calibrated, expected, atol=1e-5)
    assert calibrated.max() < uncalibrated.max()  # T > 1 softens


def test_label_reads_the_model_directorys_preprocessor_config(tmp_path, model_dir):
    # a transformers-style preprocessor config (ints for sizes, no num_frames) that differs from config.json
    (tmp_path / "m").mkdir()
    for name in ("config.json", "model.safetensors"):
        (tmp_path / "m" / name).write_bytes((model_dir / name).read_bytes())
    (tmp_path / "m" / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "VideoMAEImageProcessor", "size": {"shortest_edge": 80}, "crop_size": 72,
        "image_mean": [0.1, 0.2, 0.3], "image_std": [0.4, 0.5, 0.6], "resample": 2}))
    processor = FALImageProcessor.from_model_dir(tmp_path / "m")
    net = FALForVideoClassification.from_pretrained(tmp_path / "m")
    spec = Engine(net, LabelOptions(workers=1), None, "m", processor=processor).spec
    assert (spec.short_side, spec.crop, spec.mean, spec.std, spec.num_frames) == (
        80, (72, 72), (0.1, 0.2, 0.3), (0.4, 0.5, 0.6), net.config.num_frames)
    (tmp_path / "m" / "preprocessor_config.json").unlink()
    assert FALImageProcessor.from_model_dir(tmp_path / "m") is None  # none: the config's values apply


def test_cli_label_uses_the_preprocessor_config(tmp_path, model_dir, monkeypatch):
    from click.testing import CliRunner

    import falv.labeling.engine as engine_module
    from falv.cli.label import label as command

    (tmp_path / "m").mkdir()
    for name in ("config.json", "model.safetensors"):
        (tmp_path / "m" / name).write_bytes((model_dir / name).read_bytes())
    (tmp_path / "m" / "preprocessor_config.json").write_text(json.dumps({"size": {"shortest_edge": 96},
                                                                          "crop_size": {"height": 80, "width": 80},
                                                                          "image_mean": [0.2] * 3, "num_frames": 4}))
    video = write_test_video(tmp_path / "v.mp4", frames=12, fps=12, size=(64, 64))
    seen = []
    original = engine_module.Engine.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        seen.append(self.spec)

    monkeypatch.setattr(engine_module.Engine, "__init__", spy)
    result = CliRunner().invoke(command, [str(video), "-m", str(tmp_path / "m"), "-o", str(tmp_path / "out"),
                                          "--workers", "1", "-q"])
    assert result.exit_code == 0, result.output
    assert (seen[0].short_side, seen[0].crop, seen[0].mean[0], seen[0].num_frames) == (96, (80, 80), 0.2, 4)


def test_thresholds_flag(model_dir):
    from falv.cli.label import parse_thresholds
    from falv.errors import ConfigError

    config = preset("tiny", id2label={0: "a", 1: "b", 2: "c"}, problem_type="multi_label_classification",
                    thresholds=[0.2, 0.3, 0.4])
    assert parse_thresholds("0.7", config) == (0.7, 0.7, 0.7)
    assert parse_thresholds("b=0.9, c=0.1", config) == (0.2, 0.9, 0.1)
    with pytest.raises(ConfigError, match="unknown class 'd'"):
        parse_thresholds("d=0.5", config)
    with pytest.raises(ConfigError, match="multi-label"):
        parse_thresholds("0.5", preset("tiny"))

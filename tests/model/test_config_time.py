"""What a config says about time and scores: clip sampling, temperature, thresholds, num_labels."""

import json

import pytest

from falv import FALConfig, preset
from falv.config import ClipSampling
from falv.errors import ConfigError
from falv.hub.convert import config_from_timesformer, timesformer_sampling
from falv.model.baseline import R2Plus1DConfig


def test_num_labels_works_as_in_transformers():
    config = FALConfig(num_labels=4)
    assert config.labels == ["LABEL_0", "LABEL_1", "LABEL_2", "LABEL_3"]
    assert config.label2id == {"LABEL_0": 0, "LABEL_1": 1, "LABEL_2": 2, "LABEL_3": 3}
    assert FALConfig(num_labels=2, id2label={0: "a", 1: "b"}).labels == ["a", "b"]
    with pytest.raises(ConfigError, match="num_labels=3 but id2label has 2"):
        FALConfig(num_labels=3, id2label={0: "a", 1: "b"})
    with pytest.raises(ConfigError, match="num_labels"):
        FALConfig(num_labels=0)
    assert preset("tiny", num_labels=5).num_labels == 5
    assert R2Plus1DConfig(num_labels=3).labels == ["LABEL_0", "LABEL_1", "LABEL_2"]
    assert FALConfig.from_dict({"model_type": "fal", "num_labels": 3}).num_labels == 3
    config.num_labels = 2  # the setter renames, as transformers' does
    assert config.labels == ["LABEL_0", "LABEL_1"] and config.label2id == {"LABEL_0": 0, "LABEL_1": 1}


def test_old_configs_load_and_stay_as_they_were(tmp_path):
    old = FALConfig().to_dict()
    assert "sampling" not in old and "temperature" not in old  # nothing new written when unknown
    for key in ("sampling", "temperature"):
        old.pop(key, None)
    config = FALConfig.from_dict(old)
    assert config.sampling is None and config.temperature is None and config.clip_seconds is None


def test_sampling_and_temperature_round_trip(tmp_path):
    config = preset("tiny", sampling={"mode": "dense", "frame_stride": 32, "fps": 30}, temperature=1.7,
                    problem_type="multi_label_classification", thresholds=[0.3, 0.6])
    assert config.clip_seconds == pytest.approx(8 * 32 / 30)
    config.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["sampling"] == {"mode": "dense", "frame_stride": 32, "fps": 30.0}
    assert data["temperature"] == 1.7
    again = FALConfig.from_json_file(tmp_path / "config.json")
    assert again == config and isinstance(again.sampling, ClipSampling)
    uniform = FALConfig(sampling=ClipSampling(clip_seconds=2.5, source="falv train"))
    assert uniform.clip_seconds == 2.5
    assert FALConfig.from_dict(uniform.to_dict()).sampling == uniform.sampling
    assert FALConfig(sampling={"mode": "uniform"}).clip_seconds is None  # whole videos


@pytest.mark.parametrize("bad, message", [
    ({"sampling": {"mode": "dense", "fps": 30}}, "frame_stride"),
    ({"sampling": {"mode": "dense", "frame_stride": 4}}, "fps"),
    ({"sampling": {"mode": "uniform", "clip_seconds": -1}}, "clip_seconds"),
    ({"sampling": {"mode": "uniform", "frame_stride": 4}}, "mode='dense'"),
    ({"sampling": {"mode": "sparse"}}, "sampling mode"),
    ({"sampling": {"mode": "uniform", "seconds": 2}}, "unknown sampling field"),
    ({"sampling": "8x32"}, "sampling must be an object"),
    ({"temperature": 0}, "temperature"),
    ({"temperature": float("nan")}, "temperature"),
])
def test_bad_sampling_and_temperature(bad, message):
    with pytest.raises(ConfigError, match=message):
        FALConfig(**bad)


@pytest.mark.parametrize("text, expected", [
    ("8x32@30", ClipSampling(mode="dense", frame_stride=32, fps=30.0, source="user")),
    ("4@25", ClipSampling(mode="dense", frame_stride=4, fps=25.0, source="user")),
    ("2.5s", ClipSampling(mode="uniform", clip_seconds=2.5, source="user")),
    ("3", ClipSampling(mode="uniform", clip_seconds=3.0, source="user")),
    ("video", ClipSampling(mode="uniform", source="user")),
])
def test_parse_sampling(text, expected):
    assert ClipSampling.parse(text) == expected


def test_parse_sampling_errors():
    with pytest.raises(ConfigError, match="cannot read sampling"):
        ClipSampling.parse("fast")
    with pytest.raises(ConfigError, match="frame_stride"):
        ClipSampling.parse("0@30")


# frames, labels -> clip seconds of the public TimeSformer checkpoints (facebookresearch/TimeSformer configs)
@pytest.mark.parametrize("frames, labels, seconds", [
    (8, 400, 8 * 32 / 30),    # TimeSformer_divST_8x32_224 (K400)
    (8, 600, 8 * 32 / 30),    # K600
    (16, 400, 16 * 16 / 30),  # TimeSformer-HR, _16x16_448
    (96, 400, 96 * 4 / 30),   # TimeSformer-L, _96x4_224
    (8, 174, None),           # SSv2: frames over the whole video
])
def test_timesformer_checkpoints_get_their_documented_sampling(frames, labels, seconds):
    sampling = timesformer_sampling(frames, labels)
    assert sampling.seconds(frames) == (pytest.approx(seconds) if seconds else None)
    config = config_from_timesformer({"model_type": "timesformer", "num_frames": frames, "hidden_size": 64,
                                      "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
                                      "id2label": {str(i): f"c{i}" for i in range(labels)}})
    assert config.sampling == sampling
    assert timesformer_sampling(12, 400) is None  # not a documented checkpoint: unknown


def test_convert_keeps_or_overrides_the_sampling(tmp_path):
    transformers = pytest.importorskip("transformers")
    from click.testing import CliRunner

    from falv import FALForVideoClassification
    from falv.cli.main import cli

    # a tiny TimeSformer of 4 frames: no documented sampling, so unknown unless given
    hf = transformers.TimesformerForVideoClassification(transformers.TimesformerConfig(
        image_size=32, patch_size=8, num_frames=4, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
        intermediate_size=64, num_labels=3)).eval()
    hf.save_pretrained(tmp_path / "hf")
    assert FALForVideoClassification.from_pretrained(tmp_path / "hf").config.sampling is None
    result = CliRunner().invoke(cli, ["convert", str(tmp_path / "hf"), str(tmp_path / "out"), "--sampling", "4x8@30"])
    assert result.exit_code == 0, result.output
    assert "clips of 1.07 s" in result.output
    config = FALForVideoClassification.from_pretrained(tmp_path / "out").config
    assert config.sampling == ClipSampling(mode="dense", frame_stride=8, fps=30.0, source="user")
    bad = CliRunner().invoke(cli, ["convert", str(tmp_path / "hf"), str(tmp_path / "x"), "--sampling", "soon"])
    assert bad.exit_code == 2 and "cannot read sampling" in bad.output

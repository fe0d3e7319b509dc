"""falv evaluate with a model that knows its clip duration and temperature: ECE before and after."""

import pytest
import torch

from falv import FALForVideoClassification, preset
from falv.config import ClipSampling
from falv.data.synth import SynthConfig, generate
from falv.evaluation import evaluate
from falv.evaluation.calibration import expected_calibration_error


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthcal")
    generate(root, SynthConfig(mode="appearance", classes=2, videos_per_class=4, splits=(0, 0, 1), width=32,
                               height=32, duration=(1.0, 2.0), distractors=0), workers=1)
    return root


def test_ece_with_and_without_the_temperature(synth):
    torch.manual_seed(0)
    config = preset("tiny", id2label={0: "red-solid-circle", 1: "red-solid-square"}, temperature=0.25,
                    sampling=ClipSampling(clip_seconds=1.2))
    model = FALForVideoClassification(config).eval()
    common = dict(workers=1, precision="fp32")
    result = evaluate(model, str(synth), clips="1,4", **common)
    cal = result["calibration"]
    assert cal["temperature"] == 0.25 and cal["bins"] == 15
    assert result["clip_seconds"] == 1.2
    assert [v["calibration"]["temperature"] for v in result["views"]] == [0.25, 0.25]
    # the raw ECE evaluate reports is the ECE of a run without temperature (exact with one crop)
    raw = evaluate(model, str(synth), clips="4", temperature=1.0, **common)
    assert raw["calibration"]["ece"] == pytest.approx(cal["ece_uncalibrated"], abs=1e-5)
    assert raw["calibration"]["ece_uncalibrated"] == raw["calibration"]["ece"]
    # and the calibrated figure is the ECE of the scores the records hold
    assert 0 <= cal["ece"] <= 1 and cal["ece"] != pytest.approx(cal["ece_uncalibrated"])
    from falv.cli.evaluate import summary_lines

    assert any(line.startswith("expected calibration error (15 bins)") and "temperature 0.25" in line
               for line in summary_lines(result))


def test_reported_ece_is_the_formula_on_the_scores(synth):
    torch.manual_seed(1)
    model = FALForVideoClassification(preset("tiny", id2label={0: "red-solid-circle", 1: "red-solid-square"})).eval()
    import numpy as np

    from falv.labeling.engine import label

    result = evaluate(model, str(synth), workers=1, precision="fp32")
    assert result["calibration"]["temperature"] is None  # an old model: nothing to undo
    paths = sorted((synth / "videos").rglob("*.mp4"))
    records = {r.path: r for r in label([str(p) for p in paths], model, workers=1, precision="fp32", top_k=2)}
    labels = model.config.labels
    scores = np.array([[next(s.score for s in records[str(p)].labels if s.label == c) for c in labels] for p in paths])
    targets = np.array([labels.index(p.parent.name) for p in paths])  # videos/<class>/<name>.mp4
    assert result["calibration"]["ece"] == pytest.approx(expected_calibration_error(scores, targets), abs=1e-6)

"""benchmarks/clips_curve.py end to end on a few generated videos with a tiny random model."""

from __future__ import annotations

import json

import torch

from falv import FALForVideoClassification, preset
from falv.config import ClipSampling
from falv.data.synth import SynthConfig, generate

from . import load_script


def test_clips_curve_runs_both_plans(tmp_path, capsys):
    data = tmp_path / "synth"
    manifest = generate(data, SynthConfig(mode="appearance", classes=2, videos_per_class=2, splits=(0, 0, 1),
                                          width=32, height=32, duration=(1.0, 2.0), distractors=0), workers=1)
    torch.manual_seed(0)
    model = FALForVideoClassification(preset("tiny", id2label=dict(enumerate(manifest.classes)), temperature=2.0,
                                             sampling=ClipSampling(clip_seconds=1.5)))
    model.save_pretrained(tmp_path / "model")
    script = load_script("clips_curve")
    assert script.main(["--data", str(data), "--model", str(tmp_path / "model"), "--clips", "1,2",
                        "--workers", "1", "--json", str(tmp_path / "curve.json")]) == 0
    result = json.loads((tmp_path / "curve.json").read_text())
    assert [(r["plan"].split(" (")[1], r["clips"]) for r in result["rows"]] == [
        ("before)", 1), ("before)", 2), ("now)", 1), ("now)", 2)]
    assert result["clip_seconds"] == 1.5 and result["temperature"] == 2.0
    assert all(r["num_videos"] == 4 and 0 <= r["top1"] <= 1 for r in result["rows"])
    assert "| plan | clips K | top-1 |" in capsys.readouterr().out
    # a model without sampling cannot show the curve
    FALForVideoClassification(preset("tiny", id2label=dict(enumerate(manifest.classes)))).save_pretrained(
        tmp_path / "old")
    assert script.main(["--data", str(data), "--model", str(tmp_path / "old")]) == 2

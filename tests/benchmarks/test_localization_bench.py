"""benchmarks/localization.py (issue 13): the quick mode end to end and its JSON."""

from __future__ import annotations

import json

from . import load_script


def test_quick_localization_end_to_end(tmp_path):
    script = load_script("localization")
    results = script.main(["--quick", "--out", str(tmp_path), "--arms", "untrimmed", "--segmenting", "new",
                           "--heldout", "3", "--trimmed-per-class", "7", "--markdown", str(tmp_path / "t.md")])
    saved = json.loads((tmp_path / "quick-localization.json").read_text())
    assert saved["arms"].keys() == {"untrimmed"} and saved["heldout_seeds"] == [3]
    assert saved["trimmed_per_class"] == 4  # --quick's tiny data wins
    assert saved["train_options"]["model_overrides"] == {"patch_size": 8}  # the recipe's 8-px patches
    best = json.loads((tmp_path / "runs" / "untrimmed" / "best" / "config.json").read_text())
    assert best["patch_size"] == 8
    evaluations = saved["arms"]["untrimmed"]["evaluations"]
    assert sorted(evaluations) == ["new/heldout-3", "new/tuning"]
    for e in evaluations.values():
        assert 0 <= e["mAP@0.5"] <= 1 and 0 <= e["mAP@0.7"] <= e["mAP@0.5"] + 1e-9
        assert e["num_videos"] == 2
    assert results["arms"]["untrimmed"]["train_seconds"] > 0
    assert "| untrimmed | new |" in (tmp_path / "t.md").read_text()


def test_bad_trimmed_count_is_a_usage_error(tmp_path, capsys):
    import pytest

    script = load_script("localization")
    with pytest.raises(SystemExit):
        script.main(["--quick", "--out", str(tmp_path), "--trimmed-per-class", "0"])
    assert "--trimmed-per-class must be at least 1" in capsys.readouterr().err

"""benchmarks/hierarchy.py --quick: every arm trains and is scored at every level."""

import json

import pytest

from tests.benchmarks import load_script


@pytest.mark.timeout(600)
def test_quick_mode_trains_flat_and_hierarchical_arms(tmp_path, capsys):
    hier = load_script("hierarchy")
    result = hier.main(["--quick", "--out", str(tmp_path), "--seeds", "0", "--arms", "flat,hierarchical + coarse"])
    written = json.loads((tmp_path / "hierarchy.json").read_text())
    assert [r["arm"] for r in written["runs"]] == ["flat", "hierarchical + coarse"]
    flat, coarse = written["runs"]
    assert coarse["train_videos"] > flat["train_videos"] == 4 * 10  # 4 leaf-labelled videos per class
    for run in written["runs"]:
        for key in ("leaf_top1", "pair_top1", "top_top1", "hierarchical_precision", "hierarchical_recall"):
            assert 0 <= run[key] <= 1
        assert run["top_top1"] == 1.0  # one top node ("motion"): every video is right there
    # the coarse list labels the rest with their parent only, and the hierarchical model says so
    lists = tmp_path / "data" / "temporal-seed0" / "hierarchy-lists-4"
    labels = [line.rsplit(",", 1)[1] for line in (lists / "coarse.csv").read_text().splitlines()]
    assert sum(label.count("/") == 1 for label in labels) == coarse["train_videos"] - 40
    model = json.loads((tmp_path / "runs" / "hierarchical-coarse-seed0" / "best" / "config.json").read_text())
    assert model["hierarchical"] is True
    assert "| flat |" in capsys.readouterr().out and result["machine"]["cores"] >= 1

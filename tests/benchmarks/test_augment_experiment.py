"""benchmarks/augment_experiment.py --quick: every arm trains, is scored on the test split and tabled."""

import json

from tests.benchmarks import load_script

ae = load_script("augment_experiment")


def test_quick_run_tables_every_arm(tmp_path):
    summary = ae.main(["--quick", "--out", str(tmp_path), "--seeds", "1", "--arms", "none,both"])
    assert set(summary["arms"]) == {"none", "both"}
    assert all(0.0 <= a["mean"] <= 1.0 and len(a["seeds"]) == 1 for a in summary["arms"].values())
    saved = json.loads((tmp_path / "augment-appearance.json").read_text())
    assert saved["arms"]["both"]["color_jitter"] == 0.3 and saved["arms"]["both"]["rotate"] == 10.0
    # a second call reuses the finished runs
    again = ae.main(["--quick", "--out", str(tmp_path), "--seeds", "1", "--arms", "none,both"])
    assert again["runs"] == summary["runs"]

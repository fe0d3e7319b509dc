"""benchmarks/whole_run.py --quick: every process runs from spawn to exit and the JSON has every figure."""

import json

import pytest

from tests.benchmarks import load_script


@pytest.mark.timeout(600)
def test_quick_mode_times_every_process(tmp_path, capsys) -> None:
    from falv.inference import int8_available

    wr = load_script("whole_run")
    out = tmp_path / "r.json"
    wr.main(["--quick", "--videos", str(tmp_path / "videos"), "--json", str(out)])
    r = json.loads(out.read_text())  # the figures as written, not the in-memory dict
    precisions = ["auto", "int8"] if int8_available() else ["auto"]
    assert r["precisions"] == precisions and r["preset"] == "tiny" and len(r["videos"]) == 12
    assert r["machine"]["cores"] >= 1 and r["machine"]["torch"] and r["machine"]["cpu"]

    (run,) = r["runs"]  # --quick: one repeat (no timing is asserted: the machine is shared)
    ref = run["reference"]
    assert ref["seconds"] > 0 and ref["inside"]["videos"] == 12 and 0 < ref["inside"]["seconds"] < ref["seconds"]
    for entry in [ref, *(run["falv"][p] for p in precisions)]:
        assert entry["seconds"] > 0
        assert 0 <= entry["busy_share"] <= 1 and entry["idle_share"] == pytest.approx(1 - entry["busy_share"])
        assert entry["own_cpu_s"] > 0 and 0 < entry["own_share"] <= 1
        assert entry["busy_series"] and all(0 <= share <= 1 for _, share in entry["busy_series"])
    for p in precisions:
        assert run["ratio"][p] == pytest.approx(ref["seconds"] / run["falv"][p]["seconds"])
        assert r["summary"]["falv"][p]["median_ratio"] == pytest.approx(run["ratio"][p])

    s = r["startup"]
    assert all(s[k]["median_s"] > 0 for k in ("import_torch", "import_falv_cli", "falv_label_short"))
    first = r["first_label"]
    assert first["budget_s"] == pytest.approx(1 + s["import_torch"]["median_s"])
    for path in ("label", "serve", "stream"):
        assert len(first[path]["seconds"]) == 1 and first[path]["median_s"] > 0
        assert isinstance(first[path]["within_budget"], bool)
    assert 0 < first["serve"]["health_s"][0] < first["serve"]["seconds"][0]
    text = capsys.readouterr().out
    assert "| goal | precision | target | measured | met |" in text and "first label out" in text

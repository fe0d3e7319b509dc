"""benchmarks/serve_bench.py --quick runs end to end (so the script cannot rot)."""

import json

import pytest

from tests.benchmarks import load_script


@pytest.mark.timeout(900)
def test_serve_bench_quick(tmp_path, capsys):
    bench = load_script("serve_bench")
    out = tmp_path / "results.json"
    assert bench.main(["--quick", "--out", str(tmp_path / "work"), "--json", str(out), "--workers", "1"]) == 0
    results = json.loads(out.read_text())
    assert [run["server"]["clients"] for run in results["runs"]] == [1, 4]
    for run in results["runs"]:
        assert run["server"]["failed"] == 0 and run["server"]["clips"] == run["cli"]["clips"] > 0
    assert results["soak"]["done"] == results["soak"]["jobs"] and results["soak"]["rss_first_mb"] > 0
    assert "clips/s" in capsys.readouterr().out

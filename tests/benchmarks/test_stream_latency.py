"""benchmarks/stream_latency.py --quick: the live feed, `falv stream` and the report run end to end."""

from tests.benchmarks import load_script


def test_quick_mode_measures_every_window(tmp_path, capsys) -> None:
    sl = load_script("stream_latency")
    result = sl.main(["--quick", "--work", str(tmp_path), "--json", str(tmp_path / "r.json")])
    assert result["frames_written"] == 75 and result["end"]["reason"] == "end_of_stream"
    assert result["windows"] == 3  # 3 s fed, 1 s windows (no timing is asserted: the machine is shared)
    assert [r["last_frame"] for r in result["rows"]] == [23, 48, 73]
    assert all(r["latency_s"] > 0 and r["model_s"] > 0 for r in result["rows"])
    assert result["model_s"] > 0 and result["latency_median_s"] is not None
    out = capsys.readouterr().out
    assert "| latency median |" in out and (tmp_path / "r.json").exists()

"""benchmarks/label_bench.py --quick: every pipeline runs and the report has its goal rows."""

from tests.benchmarks import load_script


def test_quick_mode_reports_every_precision(tmp_path, capsys) -> None:
    from falv.inference import int8_available

    lb = load_script("label_bench")
    result = lb.main(["--quick", "--videos", str(tmp_path), "--batch-sizes", "2", "--workers", "1",
                      "--long-clips", "6", "--json", str(tmp_path / "r.json")])
    precisions = {"auto", "int8"} if int8_available() else {"auto"}
    assert set(result["runners"]) == precisions
    assert {r["precision"] for r in result["falv_runs"]} == precisions
    assert result["same_frames"] is True  # falv decodes exactly the reference's frames
    assert result["long"]["ok"] and result["long"]["windows"] == 6
    assert result["long"]["engine_frames_decoded"] <= result["long"]["num_frames"]  # each frame at most once
    for prec in precisions:
        assert result["agreement"]["prototype_head"][prec]["of"] == len(result["videos"])
    out = capsys.readouterr().out
    assert "| goal | precision | target | measured | met |" in out and (tmp_path / "r.json").exists()

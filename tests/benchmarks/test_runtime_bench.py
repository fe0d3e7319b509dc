"""benchmarks/runtime_bench.py: its interleaved timing and its --quick mode."""

import pytest
import torch

from tests.benchmarks import load_script

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

rb = load_script("runtime_bench")


class _Fixed:
    def __init__(self, value):
        self.value = value
        self.calls = 0

    def predict(self, clip):
        self.calls += 1
        return torch.full((1, 3), float(self.value)), torch.zeros(1, 2)


def test_time_paths_interleaves_every_path_on_every_round():
    runners = {"a": _Fixed(1), "b": _Fixed(2), "c": _Fixed(3)}
    timed = rb.time_paths(runners, [torch.zeros(1)] * 4, repeats=4, warmup=1)
    assert all(r.calls == 5 for r in runners.values())
    assert all(len(t["times"]) == len(t["outputs"]) == 4 for t in timed.values())
    assert timed["b"]["outputs"][0][0, 0] == 2


def test_quick_mode_runs_every_path(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("FALV_CACHE_DIR", str(tmp_path / "cache"))
    result = rb.main(["--quick"])
    (speed,) = result["speed"]
    ran = {r["path"] for r in speed["rows"]}
    assert {"torch fp32", "onnxruntime fp32", "onnxruntime int8", "onnxruntime int8-dyn", "openvino fp32",
            "openvino int8"} <= ran
    assert ran | set(speed["skipped"]) == {f"{rt} {p}" for rt, p in rb.PATHS}
    rows = {r["path"]: r for r in speed["rows"]}
    for name in ("torch fp32-plain", "onnxruntime fp32", "openvino fp32"):
        assert rows[name]["max_abs_logit_diff"] < 1e-4 and rows[name]["top1_vs_torch_fp32"] == 1.0
    runs = result["agreement"]["runs"]
    assert "torch fp32-plain" not in runs and "torch fp32-plain" not in result["agreement"]["skipped"]
    assert runs["torch fp32"]["num_videos"] == 6
    assert runs["onnxruntime fp32"]["vs_torch_fp32"]["agree"] == 6
    assert runs["openvino fp32"]["vs_torch_fp32"]["max_score_diff"] < 1e-4
    out = capsys.readouterr().out
    assert "x vs torch fp32" in out and "top-1 = torch fp32" in out

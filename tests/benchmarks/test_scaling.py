"""benchmarks/scaling.py: the throughput model's arithmetic, the simulation and a quick decode/model
measurement (the Ray engine comparison runs in tests/labeling/test_ray.py's cluster, not here)."""

from __future__ import annotations

import json
import math

import pytest

from . import load_script


@pytest.fixture(scope="module")
def scaling():
    return load_script("scaling")


def test_throughput_model_binds_on_the_slower_stage(scaling):
    work = scaling.Workload(videos=1000, minutes=1.0, decode_core_s_per_min=10.0, clip_seconds=1.0)
    node = scaling.NodeType(gpus=1, cores=10, gpu_ms_per_clip=100.0, core_efficiency=1.0, startup_s=0.0)
    assert scaling.clips_per_video(work) == 60
    rates = scaling.node_rates(work, node)
    assert rates["decode"] == pytest.approx(1.0) and rates["model"] == pytest.approx(1 / 6)
    # 10 core-s of decoding per video against 6 GPU-s of model: 10/6 cores per GPU balance them
    assert scaling.balanced_cores_per_gpu(work, node) == pytest.approx(10 / 6)
    row = scaling.simulate(work, node, nodes=2, driver_ms_per_video=1.0)
    assert row["bottleneck"] == "model (GPU)" and row["videos_per_s"] == pytest.approx(1 / 3)
    assert row["wall_h"] == pytest.approx((1000 * 3 + 10) / 3600)
    assert row["cost_usd"] == pytest.approx(row["wall_h"] * 2 * node.dollars_per_hour)
    fast = scaling.NodeType(gpus=1, cores=10, gpu_ms_per_clip=1.0, core_efficiency=1.0, startup_s=0.0)
    assert scaling.simulate(work, fast, nodes=4)["bottleneck"] == "decode (CPU)"
    assert scaling.simulate(work, fast, nodes=10_000, driver_ms_per_video=5.0)["bottleneck"] == "driver"


def test_quick_decode_model_and_simulation(scaling, tmp_path):
    out = tmp_path / "quick.json"
    result = scaling.main(["decode", "--quick", "--dir", str(tmp_path), "--json", str(out)])
    (row,) = [r for r in result["decode"] if r["codec"] == "h264"]
    assert row["resolution"] == "360p" and 24 <= row["frames"] <= 32 and row["cpu_s"] > 0
    assert row["core_s_per_video_min"] == pytest.approx(row["cpu_s"] / (row["duration_s"] / 60))
    sim = scaling.main(["simulate", "--measured", str(out), "--plot", str(tmp_path / "sim.png")])["simulation"]
    assert [r["nodes"] for r in sim["rows"]] == [1, 2, 4, 8, 16, 32, 64]
    walls = [r["wall_h"] for r in sim["rows"]]
    assert all(a > b for a, b in zip(walls, walls[1:]))  # more nodes, less time
    assert (tmp_path / "sim.png").stat().st_size > 10_000
    assert json.loads(out.read_text())["decode"][0]["codec"] in ("h264", "vp9")
    model = scaling.main(["model", "--quick"])["model"]
    assert model[0]["preset"] == "tiny" and math.isfinite(model[0]["ms_per_clip"]) and model[0]["ms_per_clip"] > 0

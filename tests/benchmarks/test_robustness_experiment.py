"""benchmarks/robustness_experiment.py (paper Table 10): the quick mode end to end and its JSON."""

from __future__ import annotations

import json

import pytest

from . import load_script


def test_quick_robustness_end_to_end(tmp_path):
    script = load_script("robustness_experiment")
    data = script.main(["--quick", "--datasets", "temporal", "--out", str(tmp_path), "--eval-workers", "1",
                        "--perturb", "noise=0,shuffle", "--arms", "divided_space_time,r2plus1d", "--markdown", str(tmp_path / "r.md")])
    assert json.loads((tmp_path / "quick-robustness.json").read_text())["results"] == json.loads(
        json.dumps(data["results"]))
    assert (tmp_path / "quick-robustness.png").stat().st_size > 1000
    assert data["perturbations"] == ["noise=0", "shuffle=1"] and data["seeds"] == [0]
    assert [a["key"] for a in data["arms"]] == ["divided_space_time", "r2plus1d"]
    for arm in ("divided_space_time", "r2plus1d"):
        res = data["results"]["temporal"][arm]
        clean = res["clean"]["mean"]
        # strength 0 is the clean evaluation: the same top-1, all of it kept
        assert res["perturbations"]["noise=0"]["top1"]["mean"] == pytest.approx(clean)
        if clean:
            assert res["perturbations"]["noise=0"]["kept"]["mean"] == pytest.approx(1.0)
        assert 0 <= res["perturbations"]["shuffle=1"]["top1"]["mean"] <= 1
        (run,) = res["runs"]
        assert (tmp_path / "runs").exists() and run["run_dir"].startswith(str(tmp_path))
    table = (tmp_path / "r.md").read_text()
    assert "| clean |" in table and "| shuffle=1 |" in table and "--quick" in table


def test_cached_only_marks_untrained_arms_not_run(tmp_path):
    script = load_script("robustness_experiment")
    data = script.main(["--quick", "--datasets", "temporal", "--out", str(tmp_path), "--arms", "space_only",
                        "--cached-only", "--perturb", "blur"])
    assert data["results"]["temporal"]["space_only"]["not_run"] is True
    assert not (tmp_path / "runs").exists()  # nothing trained
    assert "| clean | not run |" in data["markdown"]


def test_time_init_reaches_the_models_and_is_checked(tmp_path, capsys):
    """--time-init is paper_experiments.py's: the long-range runs trained with it are the ones reused."""
    script = load_script("robustness_experiment")
    data = script.main(["--quick", "--datasets", "longrange", "--out", str(tmp_path), "--arms", "space_only",
                        "--cached-only", "--perturb", "blur", "--time-init", "1.0"])
    assert data["model"]["overrides"]["time_embedding_init_std"] == 1.0
    assert data["results"]["longrange"]["space_only"]["not_run"] is True
    with pytest.raises(SystemExit):
        script.main(["--quick", "--out", str(tmp_path), "--time-init", "-1"])
    assert "--time-init must be a number >= 0" in capsys.readouterr().err

"""benchmarks/precision_agreement.py: its comparison and its --quick mode."""

import pytest

from tests.benchmarks import load_script

pa = load_script("precision_agreement")

REF = {"a.mp4": {"x": 0.7, "y": 0.3}, "b.mp4": {"x": 0.45, "y": 0.55}, "c.mp4": {"y": 0.9, "x": 0.1}}


@pytest.mark.parametrize(
    ("other", "agree", "flipped", "max_diff"),
    [
        (REF, 3, [], 0.0),
        ({**REF, "b.mp4": {"x": 0.56, "y": 0.44}}, 2, [pytest.approx(0.1)], pytest.approx(0.11)),
        ({**REF, "a.mp4": {"x": 0.68, "y": 0.32}}, 3, [], pytest.approx(0.02)),
        ({k: {"x": v["y"], "y": v["x"]} for k, v in REF.items()}, 0, [pytest.approx(0.1), pytest.approx(0.4),
                                                                      pytest.approx(0.8)], pytest.approx(0.8)),
    ],
)
def test_compare_counts_top1_flips(other, agree, flipped, max_diff) -> None:
    c = pa.compare(REF, other)
    assert c["videos"] == 3 and c["agree"] == agree and c["agreement"] == pytest.approx(agree / 3)
    assert c["flipped_ref_margins"] == flipped and c["max_score_diff"] == max_diff


def test_compare_refuses_different_videos() -> None:
    with pytest.raises(ValueError, match="different videos"):
        pa.compare(REF, {"a.mp4": REF["a.mp4"]})


def test_quick_mode_runs_every_precision(capsys) -> None:
    from falv.inference import int8_available

    result = pa.main(["--quick"])
    expected = {"fp32", "bf16"} | ({"int8"} if int8_available() else set())
    assert set(result["runs"]) == expected
    for prec in expected - {"fp32"}:
        c = result["runs"][prec]["vs_fp32"]
        assert c["videos"] == result["runs"]["fp32"]["num_videos"] == 6
        assert 0 <= c["agree"] <= 6 and c["max_score_diff"] < 0.05  # tiny model: rounding-sized differences
    assert "top-1 = fp32" in capsys.readouterr().out

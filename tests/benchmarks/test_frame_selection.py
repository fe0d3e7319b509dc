"""benchmarks/frame_selection.py --quick: both selections trained and crossed, decode cost measured."""

import json

import pytest

from tests.benchmarks import load_script


@pytest.mark.timeout(600)
def test_quick_mode_crosses_selections_and_times_decoding(tmp_path, capsys):
    fs = load_script("frame_selection")
    result = fs.main(["--quick", "--out", str(tmp_path), "--rounds", "1"])
    written = json.loads((tmp_path / "frame_selection.json").read_text())
    keys = [f"trained {t}, labelled {u}" for t in fs.SELECTIONS for u in fs.SELECTIONS]
    assert list(written["longrange"]) == list(written["untrimmed"]) == keys
    for key in keys:
        assert 0 <= written["longrange"][key]["top1"] <= 1 and written["longrange"][key]["num_videos"] > 0
        for name in ("tuning", "heldout-3"):
            assert set(written["untrimmed"][key][name]) == {"mAP@0.5", "mAP@0.7"}
    for cost in written["decode_cost"].values():
        assert cost["windows"] > 0 and all(v > 0 for v in cost["per_window_ms"].values())
        assert cost["ratio"] == pytest.approx(cost["per_window_ms"]["key-moments"] / cost["per_window_ms"]["uniform"],
                                              rel=0.01)
    # the models trained with key-moments say so, and labeling follows them by default
    from falv.model.transformer import FALForVideoClassification

    model = FALForVideoClassification.from_pretrained(tmp_path / "runs" / "longrange-key-moments" / "best")
    assert model.config.sampling.frame_selection == "key-moments"
    assert "decode cost" in capsys.readouterr().out and result["machine"]["cores"] >= 1

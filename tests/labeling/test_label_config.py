"""falv label / evaluate --config: inputs and options from a file, the resolved file written beside the labels."""

import json

import yaml
from click.testing import CliRunner

from falv.cli.main import cli
from falv.video.testing import write_test_video


def test_label_reads_inputs_and_options_from_a_file_and_writes_them_back(model_dir, tmp_path):
    videos = [str(write_test_video(tmp_path / f"v{i}.mp4", frames=12, size=(48, 64))) for i in range(2)]
    cfg = tmp_path / "label.yaml"
    cfg.write_text(yaml.safe_dump({
        "model": {"model": str(model_dir), "precision": "fp32", "batch_size": 2},
        "data": {"inputs": videos},
        "labeling": {"top_k": 2, "crops": 3},
        "output": {"out": str(tmp_path / "out"), "format": ["jsonl", "csv"]},
    }))
    result = CliRunner().invoke(cli, ["label", "--config", str(cfg), "--top-k", "1"], standalone_mode=False)
    assert result.exception is None and result.return_value == 0, result.output
    records = [json.loads(line) for line in (tmp_path / "out" / "labels.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(len(r["labels"]) == 1 for r in records)  # the flag beat the file's 2
    assert (tmp_path / "out" / "labels.csv").is_file()
    written = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
    assert written["data"]["inputs"] == videos and written["labeling"]["top_k"] == 1
    assert written["labeling"]["crops"] == "3" and written["output"]["format"] == ["jsonl", "csv"]
    # the written file labels the same inputs again (all already done: resumed)
    again = CliRunner().invoke(cli, ["label", "--config", str(tmp_path / "out" / "config.yaml")],
                               standalone_mode=False)
    assert again.return_value == 0 and "0 labelled, 0 failed, 2 already done" in again.output

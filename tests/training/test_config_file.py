"""falv train/label/evaluate --config FILE: sections, overrides, errors, and runs that repeat."""

from __future__ import annotations

import json

import click
import pytest
import yaml
from click.testing import CliRunner

from falv.cli.configfile import SECTIONS, command_keys
from falv.cli.main import COMMANDS, cli


def _run(args):
    result = CliRunner().invoke(cli, args, catch_exceptions=False, standalone_mode=False)
    return result


def _invoke(args):
    """Like the falv command: usage errors are exit code 2 with one line."""
    try:
        return 0, CliRunner().invoke(cli, args, standalone_mode=False, catch_exceptions=False).output
    except click.ClickException as exc:
        return 2, exc.format_message()


@pytest.mark.parametrize("name", sorted(SECTIONS))
def test_every_option_has_one_section_and_a_unique_key(name):
    import importlib

    module, attr = COMMANDS[name].split(":")
    command = getattr(importlib.import_module(module), attr)
    keys = command_keys(command, name)
    sections, _default = SECTIONS[name]
    placed = [k for ks in sections.values() for k in ks]
    assert len(placed) == len(set(placed))
    assert set(placed) <= set(keys), f"sections name options {name} does not have: {set(placed) - set(keys)}"
    assert "config" not in keys and "resume" not in keys


def test_docs_table_lists_the_sections_the_code_uses():
    """docs/configuration.md's table names every placed option in its section."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    documented: dict[tuple[str, str], set[str]] = {}
    command = None
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("| ") else []
        if len(cells) != 3 or not cells[1].startswith("`"):
            continue
        command = cells[0].strip("`").split()[-1] if cells[0] else command
        options = {o.strip().split(" ")[0] for o in cells[2].split(",")}
        documented[(command, cells[1].strip("`"))] = options
    for name, (sections, _default) in SECTIONS.items():
        for section, keys in sections.items():
            assert set(keys) <= documented[(name, section)], (name, section)


def test_train_from_a_yaml_file_flags_override_and_the_written_file_repeats_the_run(synth_set, tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({
        "data": {"data": str(synth_set)},
        "model": {"frames": 4, "image_size": 32},
        "training": {"epochs": 1, "batch-size": 4, "precision": "fp32", "seed": 5, "lr": None},
        "augmentation": {"flip": True, "scale": [0.6, 1.0], "color_jitter": 0.1},
        "scheduler": {"scheduler": "step", "step_gamma": 0.5},
    }))
    first = tmp_path / "first"
    _run(["train", "--config", str(cfg), "--out", str(first), "--seed", "7"])
    written = yaml.safe_load((first / "config.yaml").read_text())
    assert set(written) == {"model", "data", "training", "augmentation", "scheduler"}
    assert written["training"]["seed"] == 7 and written["training"]["out"] == str(first)  # the flag won
    assert written["augmentation"]["flip"] is True and written["augmentation"]["scale"] == "0.6,1.0"
    assert written["scheduler"]["scheduler"] == "step" and written["training"]["epochs"] == 1
    saved = json.loads((first / "train_config.json").read_text())
    assert (saved["seed"], saved["flip"], saved["scale"], saved["scheduler"], saved["step_gamma"],
            saved["color_jitter"]) == (7, "on", [0.6, 1.0], "step", 0.5, 0.1)
    second = tmp_path / "second"
    _run(["train", "--config", str(first / "config.yaml"), "--out", str(second)])
    again = json.loads((second / "train_config.json").read_text())
    assert {k: v for k, v in again.items() if k != "out"} == {k: v for k, v in saved.items() if k != "out"}


def test_json_files_work_the_same_and_are_written_back_as_json(synth_set, tmp_path):
    cfg = tmp_path / "run.json"
    cfg.write_text(json.dumps({"data": {"data": str(synth_set)}, "model": {"frames": 4, "image_size": 32},
                               "training": {"epochs": 1, "batch_size": 4, "precision": "fp32"}}))
    _run(["train", "--config", str(cfg), "--out", str(tmp_path / "run")])
    written = json.loads((tmp_path / "run" / "config.json").read_text())
    assert written["model"]["frames"] == 4 and not (tmp_path / "run" / "config.yaml").exists()


@pytest.mark.parametrize("content,suffix,message", [
    ({"training": {"epoch": 3}}, ".yaml", "unknown option 'epoch' in section 'training'"),
    ({"training": {"flip": True}}, ".yaml", "'flip' belongs in section 'augmentation', not 'training'"),
    ({"optimiser": {"lr": 1}}, ".yaml", "unknown section or option 'optimiser'"),
    ({"training": 3}, ".yaml", "section 'training' must be a mapping"),
    ("[1, 2]", ".yaml", "must hold a mapping of sections"),
    ("model: {preset: [unclosed", ".yaml", "is not valid YAML"),
    ("{\"model\": ", ".json", "is not valid JSON"),
    ({"model": {"preset": "tiny"}}, ".toml", "ends in .yaml, .yml or .json"),
])
def test_bad_files_are_usage_errors_that_say_what_is_valid(tmp_path, content, suffix, message):
    path = tmp_path / f"run{suffix}"
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    code, text = _invoke(["train", "--config", str(path), "--out", str(tmp_path / "out")])
    assert code == 2 and message in text, text
    if "unknown" in message:
        assert "Valid sections and options: model: preset, attention" in text and "scheduler: warmup_epochs" in text
    assert not (tmp_path / "out").exists()


def test_a_value_the_option_refuses_is_the_option_s_usage_error(tmp_path, synth_set):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"data": {"data": str(synth_set)}, "scheduler": {"scheduler": "linear"}}))
    code, text = _invoke(["train", "--config", str(path), "--out", str(tmp_path / "out")])
    assert code == 2 and "scheduler" in text and "linear" in text

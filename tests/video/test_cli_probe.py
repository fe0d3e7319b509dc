"""`falv probe` wiring: one line per file, JSON Lines with --json, exit code 1 on failures."""

from __future__ import annotations

import json

import pytest

from falv.cli.main import main


def run(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(["probe", *args])
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def test_probe_text(videos, capsys):
    code, out, _ = run(capsys, str(videos["h264.mp4"]), str(videos["rot90.mp4"]))
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == 2
    assert "96x64" in lines[0] and "40 frames" in lines[0]
    assert "rotated 90" in lines[1]


def test_probe_json_and_failure(videos, tmp_path, capsys):
    missing = tmp_path / "missing.mp4"
    code, out, _ = run(capsys, "--json", str(videos["vp9.webm"]), str(missing), str(videos["text.mp4"]))
    assert code == 1
    records = [json.loads(line) for line in out.strip().splitlines()]
    assert records[0]["codec"] == "vp9" and records[0]["num_frames_exact"] is False
    assert records[1]["error"] == "not_found" and records[1]["path"] == str(missing)
    assert records[2]["error"] == "not_a_video"


def test_probe_error_is_one_line(videos, capsys):
    code, out, err = run(capsys, str(videos["audio.m4a"]))
    assert code == 1
    assert out == ""
    assert err.strip().count("\n") == 0
    assert "no_video_stream" in err and str(videos["audio.m4a"]) in err

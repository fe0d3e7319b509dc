"""`falv explain` wiring: files written, labels printed, one-line errors with exit codes."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from PIL import Image

from falv.cli import main as cli_main
from falv.cli.explain import explain
from falv.video.testing import write_test_video

from .conftest import random_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("model")
    random_model("divided_space_time").save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_test_video(tmp_path_factory.mktemp("videos") / "clip one.mp4", frames=20, fps=10, size=(48, 64))


def test_explain_writes_pictures(model_dir, video, tmp_path):
    result = CliRunner().invoke(explain, [str(video), "--model", str(model_dir), "--out", str(tmp_path),
                                          "--format", "png,gif", "--top-k", "2", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 4 and "%" in lines[0]
    png, gif = tmp_path / "clip one.explain.png", tmp_path / "clip one.explain.gif"
    assert f"wrote {png}" in result.output and f"wrote {gif}" in result.output
    with Image.open(png) as image:
        assert image.width > image.height
    with Image.open(gif) as image:
        assert image.n_frames == 4  # the model's frames


def test_explain_clip_start_and_length(model_dir, video, tmp_path):
    result = CliRunner().invoke(explain, [str(video), "-m", str(model_dir), "-o", str(tmp_path),
                                          "--clip-start", "0.5", "--clip-length", "1", "-f", "mp4"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "clip one.explain.mp4").stat().st_size > 0


def test_usage_errors(model_dir, video, tmp_path):
    runner = CliRunner()
    bad_format = runner.invoke(explain, [str(video), "-m", str(model_dir), "-o", str(tmp_path), "-f", "png,bmp"])
    assert bad_format.exit_code == 2 and "bmp" in bad_format.output
    past_end = runner.invoke(explain, [str(video), "-m", str(model_dir), "-o", str(tmp_path), "--clip-start", "9"])
    assert past_end.exit_code == 2 and "past the end" in past_end.output


@pytest.mark.parametrize("kind", ["missing", "not a video"])
def test_bad_video_is_one_line_with_exit_code_3(model_dir, tmp_path, capsys, monkeypatch, kind):
    """Through the real entry point, with the command registered as the lead will register it."""
    monkeypatch.setitem(cli_main.COMMANDS, "explain", "falv.cli.explain:explain")
    path = tmp_path / "bad.mp4"
    if kind == "not a video":
        path.write_text("hello\n" * 100)
    with pytest.raises(SystemExit) as exit_info:
        cli_main.main(["explain", str(path), "--model", str(model_dir), "--out", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 3
    assert err.startswith("Error: ") and err.strip().count("\n") == 0 and str(path) in err
    assert not (tmp_path / "out").exists()

"""The per-video boundary: whatever goes wrong with one video is that video's error record,
and degenerate inputs (headers that lie about time, one frame, sizes that change) get labels.

``tests/fixtures/damaged/`` holds files that once stopped a run:
``mpeg4_header_zero_duration.mov`` is a QuickTime/MPEG-4 part 2 file whose first bytes
were damaged, so FFmpeg reads it as an elementary stream whose header says 0 s and a
start of 0.917 s while 25 frames decode from -0.003 s (it stopped `falv label` with
"window 0 ends (0.0) at or before it starts (0.0)").
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from falv.errors import InternalError, RunError
from falv.labeling.engine import label
from falv.labeling.stages import LabelOptions, ModelSpec, decode_chunk, plan_video, run_task
from falv.video.testing import frame_index, truncate_file, write_test_video

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "damaged"
ZERO_DURATION = FIXTURES / "mpeg4_header_zero_duration.mov"
SPEC = ModelSpec(num_frames=8, short_side=64, crop=(64, 64), mean=(0.5,) * 3, std=(0.5,) * 3, rescale=1 / 255)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    return [write_test_video(root / f"v{i}.mp4", frames=24, fps=12, size=(64, 80)) for i in range(3)]


# -- degenerate inputs are first-class ----------------------------------------------------------------


def test_a_header_that_says_zero_seconds_is_planned_from_its_frames():
    plan = plan_video(str(ZERO_DURATION), SPEC, LabelOptions(clips=2))
    info = plan["info"]
    assert info["duration"] == pytest.approx(1.0033, abs=1e-3)
    assert [round(b - a, 3) for a, b, _ in plan["windows"]] == [0.502, 0.502]
    assert plan["origin"] == pytest.approx(-0.0033, abs=1e-4)  # the first frame, not the header's 0.917 s
    assert any("0.000 s" in w for w in plan["warnings"]) and any("starts at" in w for w in plan["warnings"])
    out = decode_chunk(str(ZERO_DURATION), [ts for *_, ts in plan["windows"]], 64, 30.0, plan["origin"])
    indices = [frame_index(f) for f in out["frames"].reshape(-1, *out["frames"].shape[2:])]
    assert indices == sorted(indices) and indices[0] <= 1 and indices[-1] >= 21  # the whole video, in order


def test_the_reported_file_is_labelled_and_the_run_goes_on(model_dir, clips, tmp_path):
    """The regression: this file stopped a run of 240 files after 37."""
    inputs = [str(clips[0]), str(ZERO_DURATION), str(clips[1])]
    records = {r.path: r for r in label(inputs, str(model_dir), out_dir=tmp_path, window=0.25, stride=0.125)}
    assert len(records) == 3 and all(r.error is None for r in records.values())
    damaged = records[str(ZERO_DURATION)]
    assert damaged.duration == pytest.approx(1.0033, abs=1e-3) and damaged.labels
    assert all(w.end > w.start for w in damaged.windows) and damaged.segments
    assert damaged.extra["damaged"] is True and any("0.000 s" in w for w in damaged.extra["warnings"])


@pytest.mark.parametrize("name, make, frames", [
    ("one frame", lambda p: write_test_video(p / "one.mp4", frames=1, fps=12, size=(64, 80)), 1),
    ("elementary stream, no duration in the header",
     lambda p: write_test_video(p / "raw.m4v", frames=24, fps=12, size=(64, 80), codec="mpeg4", container="m4v"), 24),
    ("header longer than the data", lambda p: truncate_file(
        write_test_video(p / "cut.mkv", frames=120, fps=12, size=(64, 80), texture=True, gop=6), 0.4), None),
])
def test_degenerate_inputs_get_windows_of_positive_length_inside_the_data(tmp_path, name, make, frames):
    path = make(tmp_path)
    plan = plan_video(str(path), SPEC, LabelOptions(clips=3))
    windows = [(a, b) for a, b, _ in plan["windows"]]
    assert all(b > a for a, b in windows), name
    out = decode_chunk(str(path), [ts for *_, ts in plan["windows"]], 64, 30.0, plan["origin"])
    indices = [frame_index(f) for f in out["frames"][-1]]  # the last window shows the last frames
    assert indices == sorted(indices)
    if frames is not None:
        assert max(indices) == frames - 1
    else:  # a cut file: the header's 10 s are not believed, the windows end with the data
        assert plan["info"]["duration"] < 6 and any("10.000 s" in w for w in plan["warnings"])
        assert len(set(indices)) > 1  # not the same last frame repeated over a window past the end


def test_a_stream_whose_frame_size_changes_midway_is_labelled(model_dir, tmp_path):
    first = write_test_video(tmp_path / "a.ts", frames=12, fps=12, size=(64, 80))
    second = write_test_video(tmp_path / "b.ts", frames=12, fps=12, size=(96, 64))
    mixed = tmp_path / "mixed.ts"
    mixed.write_bytes(first.read_bytes() + second.read_bytes())  # MPEG-TS concatenates
    [record] = label([str(mixed)], str(model_dir), clips=4)
    assert record.error is None and len(record.windows) == 4


# -- the boundary in the main process --------------------------------------------------------------------


def test_an_unforeseen_error_in_aggregation_fails_that_video_alone(model_dir, clips, tmp_path, monkeypatch):
    import falv.labeling.engine as engine

    real = engine.windows_to_segments

    def flaky(windows, labels, **kwargs):  # the second video to finish hits a bug
        flaky.calls += 1
        if flaky.calls == 2:
            raise ValueError("window 0 ends (0.0) at or before it starts (0.0)")
        return real(windows, labels, **kwargs)

    flaky.calls = 0
    monkeypatch.setattr(engine, "windows_to_segments", flaky)
    records = list(label([str(c) for c in clips], str(model_dir), out_dir=tmp_path, workers=1))
    failed = [r for r in records if r.error is not None]
    assert len(records) == 3 and len(failed) == 1
    error = failed[0].error
    assert error.type == "internal" and "ValueError: window 0 ends" in error.message
    assert "aggregating" in error.message and failed[0].path in error.message
    assert {r.path for r in records} == {os.path.abspath(c) for c in clips}
    assert len((tmp_path / "labels.jsonl").read_text().splitlines()) == 3


def test_a_bad_model_input_fails_that_video_alone(model_dir, clips, tmp_path, monkeypatch):
    import falv.labeling.engine as engine

    real = engine.clip_tensor

    def picky(frames, spec, crops):  # the first window to reach the model cannot be made a tensor
        picky.calls += 1
        if picky.calls == 1:
            raise RuntimeError("cannot resize")
        return real(frames, spec, crops)

    picky.calls = 0
    monkeypatch.setattr(engine, "clip_tensor", picky)
    records = list(label([str(c) for c in clips], str(model_dir), workers=1, clips=2))
    failed = [r for r in records if r.error is not None]
    assert len(records) == 3 and len(failed) == 1
    assert failed[0].error.type == "internal" and "preparing the model input" in failed[0].error.message


def test_a_model_that_breaks_on_checked_input_stops_the_run(model_dir, clips, tmp_path, monkeypatch):
    import falv.inference

    class Broken:
        def predict(self, pixels):
            raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(falv.inference, "prepare_for_inference", lambda *a, **k: Broken())
    with pytest.raises(RunError, match="the model failed on a batch .*mat1 and mat2"):
        list(label([str(c) for c in clips], str(model_dir), out_dir=tmp_path, workers=1))
    assert not (tmp_path / "labels.jsonl").read_text()


def test_an_output_folder_that_cannot_take_embeddings_stops_the_run(model_dir, clips, tmp_path, monkeypatch):
    import falv.labeling.engine as engine

    def full(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(engine, "write_embeddings", full)
    with pytest.raises(RunError, match="cannot write embeddings .*No space left"):
        list(label([str(clips[0])], str(model_dir), out_dir=tmp_path, embeddings=True, workers=1))


def test_worker_stages_turn_unforeseen_errors_into_internal_errors(monkeypatch):
    import falv.labeling.stages as stages

    def boom(*_args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(stages, "plan_video", boom)  # run_task calls it by name, in this process here
    with pytest.raises(InternalError) as info:
        run_task({"kind": "plan", "path": "/v/a.mp4", "args": ("/v/a.mp4", SPEC, LabelOptions())})
    error = info.value
    assert error.code == "internal" and error.stage == "probing and planning" and error.exc_type == "ZeroDivisionError"
    assert str(error) == "/v/a.mp4: internal error while probing and planning (ZeroDivisionError: division by zero)"
    import pickle

    again = pickle.loads(pickle.dumps(error))
    assert type(again) is InternalError and str(again) == str(error)


# -- the command line ----------------------------------------------------------------------------------


def test_cli_a_writer_that_fails_on_one_record_fails_that_record(model_dir, clips, tmp_path, monkeypatch, capsys):
    import falv.labeling.formats as formats
    from falv.cli.main import main

    real = formats.record_to_webvtt
    victim = os.path.abspath(clips[2])

    def picky(record, **kwargs):
        if record.path == victim:
            raise KeyError("cue")
        return real(record, **kwargs)

    monkeypatch.setattr(formats, "record_to_webvtt", picky)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_:
        main(["label", *map(str, clips), "-m", str(model_dir), "-o", str(out), "--format", "jsonl,webvtt,csv"])
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and "Traceback" not in err
    assert f"failed: {victim}: could not be written as webvtt (KeyError: 'cue')" in err
    assert len(list((out / "webvtt").glob("*.vtt"))) == 2  # the other records were written
    assert len((out / "labels.csv").read_text().splitlines()) > 3


def test_cli_a_bug_is_one_line_with_exit_3(model_dir, clips, tmp_path, monkeypatch, capsys):
    import falv.labeling.export as export
    from falv.cli.main import main

    def bug(*_args, **_kwargs):
        raise AttributeError("'NoneType' object has no attribute 'labels'")

    monkeypatch.setattr(export, "latest_records", bug)
    with pytest.raises(SystemExit) as exit_:
        main(["label", str(clips[0]), "-m", str(model_dir), "-o", str(tmp_path / "out"), "--format", "csv"])
    err = capsys.readouterr().err
    assert exit_.value.code == 3 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("Error: internal error (AttributeError:")
    monkeypatch.setenv("FALV_DEBUG", "1")  # the traceback on request
    with pytest.raises(AttributeError):
        main(["label", str(clips[0]), "-m", str(model_dir), "-o", str(tmp_path / "out2"), "--format", "csv"])


def test_regression_fixtures_label_through_the_cli(model_dir, tmp_path, capsys):
    """Every kept mutant (tests/fixtures/damaged) ends in one record with labels or a typed error."""
    from falv.cli.main import main

    folder = tmp_path / "in"
    shutil.copytree(FIXTURES, folder)
    with pytest.raises(SystemExit) as exit_:
        main(["label", str(folder), "-m", str(model_dir), "-o", str(tmp_path / "out"), "--timeout", "30",
              "--format", "jsonl,csv,label-studio,fiftyone,activitynet,webvtt"])
    assert exit_.value.code in (0, 1) and "Traceback" not in capsys.readouterr().err
    lines = (tmp_path / "out" / "labels.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert sorted(os.path.basename(r["path"]) for r in records) == sorted(p.name for p in FIXTURES.iterdir())
    for record in records:
        assert record["labels"] or (record["error"] and record["error"]["type"] != "internal"), record
    assert np.isfinite([r["duration"] or 0 for r in records]).all()

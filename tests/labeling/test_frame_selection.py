"""--frame-selection key-moments through the labeling stages: candidates planned, key frames kept."""

import numpy as np
import pytest
from click.testing import CliRunner

from falv.cli.main import cli
from falv.errors import ConfigError
from falv.labeling.engine import label
from falv.labeling.stages import LabelOptions, ModelSpec, decode_chunk, decode_tasks, plan_video
from falv.video.testing import frame_index, write_test_video

SPEC = ModelSpec(num_frames=8, short_side=48, crop=(48, 48), mean=(0.5,) * 3, std=(0.5,) * 3, rescale=1 / 255,
                 clip_seconds=None)


@pytest.fixture(scope="module")
def counter_video(tmp_path_factory):
    """40 frames at 10 fps whose frame i shows the number i in three bands (falv.video.testing):
    the last band steps by 16 grey levels a frame and falls from 248 to 8 after frames 15 and
    31, the only large changes of the picture."""
    return str(write_test_video(tmp_path_factory.mktemp("fs") / "counter.mp4", frames=40, fps=10, size=(48, 48)))


def test_key_moments_plan_candidates_and_keep_frames_around_the_changes(counter_video):
    options = LabelOptions(frame_selection="key-moments", clips=1)
    plan = plan_video(counter_video, SPEC, options)
    [(start, end, candidates)] = plan["windows"]
    assert (start, end) == pytest.approx((0.0, 4.0)) and len(candidates) == 40  # one per source frame
    [task] = decode_tasks(counter_video, plan, SPEC, options)
    out = decode_chunk(*task["args"])
    assert out["frames"].shape[:2] == (1, 8)
    shown = [frame_index(f) for f in out["frames"][0]]
    assert shown == sorted(set(shown))
    assert shown == [3, 9, 15, 16, 23, 29, 32, 36]  # both sides of the first change, one at the second
    # (each change holds about a frame's worth of the density: half of it follows the change)
    # uniform: the centres of eight equal parts
    uniform = plan_video(counter_video, SPEC, LabelOptions(clips=1))
    [task] = decode_tasks(counter_video, uniform, SPEC, LabelOptions(clips=1))
    assert [frame_index(f) for f in decode_chunk(*task["args"])["frames"][0]] == [2, 7, 12, 17, 22, 27, 32, 37]


def test_key_moments_label_end_to_end_like_uniform(model_dir, counter_video, tmp_path):
    runs = {s: list(label([counter_video], str(model_dir), clips=2, frame_selection=s, workers=1)) for s in
            ("uniform", "key-moments")}
    for records in runs.values():
        [record] = records
        assert record.error is None and len(record.windows) == 2
    assert [w.start for w in runs["key-moments"][0].windows] == [w.start for w in runs["uniform"][0].windows]


def test_the_option_is_checked_and_on_the_commands(model_dir, counter_video, tmp_path):
    with pytest.raises(ConfigError, match="frame selection"):
        LabelOptions(frame_selection="smart")
    result = CliRunner().invoke(cli, ["label", counter_video, "-m", str(model_dir), "-o", str(tmp_path / "l"),
                                      "--frame-selection", "key-moments", "-q"])
    assert result.exit_code == 0, result.output
    bad = CliRunner().invoke(cli, ["label", counter_video, "-m", str(model_dir), "-o", str(tmp_path / "b"),
                                   "--frame-selection", "smart"])
    assert bad.exit_code == 2 and "uniform" in bad.output
    assert "--frame-selection" in CliRunner().invoke(cli, ["evaluate", "--help"]).output


def test_key_frames_survive_a_perturbation(counter_video):
    from falv.video.perturb import parse_perturbations

    [perturb] = parse_perturbations("blur", 0)
    options = LabelOptions(frame_selection="key-moments", clips=1, perturb=perturb)
    plan = plan_video(counter_video, SPEC, options)
    [task] = decode_tasks(counter_video, plan, SPEC, options)
    frames = decode_chunk(*task["args"])["frames"]
    assert frames.shape[:2] == (1, 8) and frames.dtype == np.uint8


def test_the_model_s_recorded_selection_is_the_default_and_options_override_it(counter_video):
    import dataclasses

    trained = dataclasses.replace(SPEC, frame_selection="key-moments")
    for spec, options, candidates in [(trained, LabelOptions(clips=1), 40),
                                      (trained, LabelOptions(clips=1, frame_selection="uniform"), 8),
                                      (SPEC, LabelOptions(clips=1), 8)]:
        [(_, _, times)] = plan_video(counter_video, spec, options)["windows"]
        assert len(times) == candidates


def test_sampling_records_key_moments_and_reads_back():
    from falv.config import ClipSampling

    s = ClipSampling(mode="uniform", clip_seconds=2.0, frame_selection="key-moments")
    assert ClipSampling.from_any(s.to_dict()) == s and s.to_dict()["frame_selection"] == "key-moments"
    assert ClipSampling(mode="uniform", frame_selection="uniform").frame_selection is None  # the default, unwritten
    assert "frame_selection" not in ClipSampling(mode="uniform", clip_seconds=2.0).to_dict()
    for bad, message in [(dict(frame_selection="smart"), "frame_selection"),
                         (dict(mode="dense", frame_stride=4, fps=30.0, frame_selection="key-moments"), "dense")]:
        with pytest.raises(ConfigError, match=message):
            ClipSampling(**{"mode": "uniform", **bad})


def test_training_clips_select_key_frames_and_the_model_records_it(counter_video, tmp_path):
    from falv.data.dataset import VideoClipDataset
    from falv.training import TrainConfig

    (tmp_path / "list.csv").write_text(f"{counter_video},a\n")
    ds = VideoClipDataset(str(tmp_path / "list.csv"), 8, train=False, frame_selection="key-moments")
    frames = ds.load(0)["pixel_values"].permute(0, 2, 3, 1).numpy()
    assert [frame_index(f) for f in frames] == [3, 9, 15, 16, 23, 29, 32, 36]  # as labeling picks them
    jittered = VideoClipDataset(str(tmp_path / "list.csv"), 8, train=True, frame_selection="key-moments")
    shown = [frame_index(f) for f in jittered.load(0)["pixel_values"].permute(0, 2, 3, 1).numpy()]
    assert shown == sorted(set(shown)) and len(shown) == 8
    assert ds.sampling().frame_selection == "key-moments"
    assert VideoClipDataset(str(tmp_path / "list.csv"), 8).sampling().frame_selection is None
    with pytest.raises(ConfigError, match="dense"):
        VideoClipDataset(str(tmp_path / "list.csv"), 8, clip_sampling="dense", frame_selection="key-moments")
    with pytest.raises(ConfigError, match="frame_selection"):
        TrainConfig(data="x", out="y", frame_selection="smart")


@pytest.mark.parametrize("chunk_windows, selection, expected", [
    (64, "uniform", 64), (64, "key-moments", 12), (4, "key-moments", 1), (1, "key-moments", 1)])
def test_key_moment_tasks_hold_about_as_many_frames_as_uniform_ones(chunk_windows, selection, expected):
    from falv.labeling.stages import chunk_size

    assert chunk_size(SPEC, LabelOptions(chunk_windows=chunk_windows, frame_selection=selection)) == expected


def test_key_moments_over_many_small_decode_tasks(model_dir, counter_video):
    # 8 windows of 0.5 s, one per decode task: every window comes back, in order
    [record] = list(label([counter_video], str(model_dir), window=0.5, chunk_windows=4,
                          frame_selection="key-moments", workers=1))
    assert record.error is None and [w.start for w in record.windows] == pytest.approx([0.5 * k for k in range(8)])

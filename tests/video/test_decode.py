"""read_frames / read_clips return the frame displayed at each time, decoded once."""

from __future__ import annotations

import math

import av
import numpy as np
import pytest

from falv.video import read_clips, read_frames
from falv.video.decode import output_size
from falv.video.testing import frame_index, vfr_times


def indices(frames: np.ndarray) -> list[int]:
    return [frame_index(f) for f in frames]


def reference(path, times: list[float]) -> list[int]:
    """Decode every frame with plain PyAV and pick, for each time, the last frame with pts <= t."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        start = s.start_time or 0
        frames = [
            (float((f.pts - start) * s.time_base), frame_index(f.to_ndarray(format="rgb24"))) for f in c.decode(s)
        ]
    half_tick = float(s.time_base) / 2
    out = []
    for t in times:
        shown = [i for pts, i in frames if pts <= t + max(1e-6, half_tick)]
        out.append(shown[-1] if shown else frames[0][1])
    return out


CFR_FILES = ["h264.mp4", "h264.mkv", "h264.ts", "vp9.webm", "mjpeg.avi", "mpeg4.avi", "gray.mp4", "gray_ffv1.mkv",
             "tiny.mp4", "odd.mp4", "with_audio.mp4", "name with spaces é 视频.mp4", "start2s.mkv", "start2s.mp4"]


@pytest.mark.parametrize("name", CFR_FILES)
def test_every_frame_time_gives_that_frame(videos, name):
    path = videos[name]
    n = 20 if name != "tiny.mp4" and name != "odd.mp4" and "spaces" not in name else 10
    fps = 30 if name != "h264.mp4" else 10
    n = 40 if name == "h264.mp4" else n
    times = [k / fps for k in range(n)]
    frames = read_frames(path, times)
    assert frames.dtype == np.uint8 and frames.ndim == 4 and frames.shape[-1] == 3
    assert indices(frames) == list(range(n))
    # mid-frame times, unsorted and repeated
    mid = [(k + 0.5) / fps for k in (3, 1, 3, 0)]
    assert indices(read_frames(path, mid)) == [3, 1, 3, 0]


def test_native_shapes(videos):
    assert read_frames(videos["tiny.mp4"], [0]).shape == (1, 16, 16, 3)
    assert read_frames(videos["odd.mp4"], [0]).shape == (1, 17, 33, 3)
    uhd = read_frames(videos["uhd.mp4"], [0.0, 1 / 30, 5.0])
    assert uhd.shape == (3, 2160, 3840, 3)
    assert indices(uhd) == [0, 1, 1]


def test_clamping_before_start_and_after_end(videos):
    path = videos["h264.mp4"]  # 40 frames at 10 fps
    assert indices(read_frames(path, [-5.0, 0.0, 3.95, 4.0, 100.0])) == [0, 0, 39, 39, 39]


def test_one_frame_video(videos):
    frames = read_frames(videos["one_frame.mp4"], [0.0, 0.5, 10.0])
    assert indices(frames) == [0, 0, 0]


@pytest.mark.parametrize("name", ["vfr.mp4", "vfr.mkv"])
def test_variable_frame_rate(videos, name):
    path = videos[name]
    times = vfr_times(24, 30)
    # exactly at each frame's time, and just before the next one
    assert indices(read_frames(path, times)) == list(range(24))
    just_before = [t - 0.004 for t in times[1:]]
    assert indices(read_frames(path, just_before)) == list(range(23))
    # in a long gap the earlier frame stays on screen: frames 4 and 5 are 5 periods apart
    assert indices(read_frames(path, [times[4] + 4.5 / 30])) == [4]


@pytest.mark.parametrize("name", ["start2s.mkv", "start2s.mp4"])
def test_nonzero_start_time_is_offset(videos, name):
    result = read_clips(videos[name], [[0.0, 0.1, 0.5]])
    assert result.info.start_time == pytest.approx(2.0)
    assert indices(result.clips[0]) == [0, 3, 15]
    np.testing.assert_allclose(result.frame_times[0], [0.0, 0.1, 0.5], atol=1e-3)


@pytest.mark.parametrize(("size", "shape"), [(None, (64, 96)), (32, (32, 48)), ((20, 30), (20, 30)), (64, (64, 96))])
def test_size(videos, size, shape):
    frames = read_frames(videos["h264.mp4"], [0.0, 1.0], size=size)
    assert frames.shape == (2, *shape, 3)
    assert indices(frames) == [0, 10]


def test_scaling_happens_in_the_decoder(videos, monkeypatch):
    """swscale resizes while converting to RGB (no full-size RGB frame is made)."""
    from av.video.reformatter import VideoReformatter

    path = videos["uhd.mp4"]  # made (and encoded, which reformats too) before the spy goes in
    calls = []
    original = VideoReformatter.reformat

    def spy(self, frame, *args, **kwargs):
        calls.append(((frame.width, frame.height), kwargs))
        return original(self, frame, *args, **kwargs)

    monkeypatch.setattr(VideoReformatter, "reformat", spy)
    read_frames(path, [0.0], size=224)
    assert len(calls) == 1
    (src_w, _), kwargs = calls[0]
    assert src_w > 398 and kwargs == {"width": 398, "height": 224, "format": "rgb24"}


def test_output_size_rule():
    assert output_size(1080, 1920, 224) == (224, 398)
    assert output_size(1920, 1080, 224) == (398, 224)
    assert output_size(100, 100, 50) == (50, 50)
    assert output_size(10, 20, (7, 9)) == (7, 9)
    with pytest.raises(ValueError):
        output_size(10, 20, 0)


@pytest.mark.parametrize(("name", "k"), [("rot90.mp4", -1), ("rot180.mp4", 2), ("rot270.mp4", 1)])
def test_rotation_is_applied(videos, name, k):
    plain = read_frames(videos["h264.mp4"], [0.0, 0.1])  # same pictures, 64x96, no rotation
    result = read_clips(videos[name], [[0.0, 1 / 30]])
    rotation = {"rot90.mp4": 90, "rot180.mp4": 180, "rot270.mp4": 270}[name]
    assert result.info.rotation == rotation
    frames = result.clips[0]
    expected_shape = (96, 64) if rotation in (90, 270) else (64, 96)
    assert frames.shape[1:3] == expected_shape
    assert (result.info.height, result.info.width) == expected_shape
    # clockwise display rotation == np.rot90 with k = -rotation/90
    unrotated = np.rot90(frames, k=-k, axes=(1, 2))
    assert indices(unrotated) == [0, 1]
    assert np.abs(unrotated[0].astype(int) - plain[0].astype(int)).mean() < 2


def test_rotation_with_size_targets_displayed_frame(videos):
    frames = read_frames(videos["rot90.mp4"], [0.0], size=(48, 32))
    assert frames.shape == (1, 48, 32, 3)
    frames = read_frames(videos["rot90.mp4"], [0.0], size=32)
    assert frames.shape == (1, 48, 32, 3)


def test_clips_share_frames_and_each_is_decoded_once(videos):
    path = videos["h264.mp4"]  # 40 frames at 10 fps, one GOP
    clips = [[0.0, 0.5, 1.0], [0.5, 1.0, 2.0], [1.0, 1.0], []]
    result = read_clips(path, clips, size=32)
    assert [indices(c) if len(c) else [] for c in result.clips] == [[0, 5, 10], [5, 10, 20], [10, 10], []]
    assert result.clips[3].shape == (0, 32, 48, 3)
    assert result.frames_converted == 4  # frames 0, 5, 10, 20, each converted once
    assert result.frames_decoded <= 22  # decoded up to frame 20 (+ decoder look-ahead), never twice
    assert not result.damaged and result.warnings == []
    # the arrays are independent copies
    result.clips[0][1][:] = 0
    assert indices(result.clips[1][:1]) == [5]


@pytest.mark.parametrize("name", ["long_gop.mp4", "long_gop.mkv"])
def test_sparse_times_seek_and_never_decode_twice(videos, name):
    path = videos[name]  # 300 frames, 30 fps, keyframe every 25 frames
    times = [0.5, 3.3, 3.31, 7.0, 9.95]
    result = read_clips(path, [times, [9.95, 3.3]])
    assert indices(result.clips[0]) == [15, 99, 99, 210, 298]
    assert indices(result.clips[1]) == [298, 99]
    assert result.seeks >= 2
    assert result.frames_decoded < 150  # seeking skipped most of the 300 frames
    assert result.frames_converted == 4


def test_dense_times_read_sequentially(videos):
    times = [k / 30 + 0.01 for k in range(0, 60, 2)]
    result = read_clips(videos["long_gop.mp4"], [times])
    assert indices(result.clips[0]) == list(range(0, 60, 2))
    assert result.seeks == 0
    assert result.frames_decoded <= 62  # stops right after the last wanted frame


def test_stream_without_index_reads_sequentially(videos):
    result = read_clips(videos["long_gop.ts"], [[0.2, 4.0]])
    assert indices(result.clips[0]) == [6, 120]
    assert result.seeks == 0


@pytest.mark.parametrize("name", ["long_gop.mp4", "long_gop.mkv", "long_gop.ts", "vfr.mp4", "vfr.mkv", "vp9.webm"])
def test_random_times_match_full_decode(videos, name):
    path = videos[name]
    rng = np.random.default_rng(hash(name) % 2**32)
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        duration = float(s.duration * s.time_base) if s.duration else c.duration / 1e6
    for _ in range(4):
        times = sorted(rng.uniform(-0.1, duration + 0.2, size=int(rng.integers(1, 9))).tolist())
        result = read_clips(path, [times])
        assert indices(result.clips[0]) == reference(path, times)
        assert result.frames_decoded <= 300


def test_times_may_be_any_float_sequence(videos):
    frames = read_frames(videos["h264.mp4"], np.array([0.0, 1.0], dtype=np.float32))
    assert indices(frames) == [0, 10]
    with pytest.raises(ValueError):
        read_frames(videos["h264.mp4"], [math.nan])


def test_truncated_with_index_at_start_is_partial_and_damaged(videos):
    result = read_clips(videos["truncated_faststart.mp4"], [[0.0, 0.5, 1.9]])
    got = indices(result.clips[0])
    assert got[:2] == [0, 15]
    assert 15 < got[2] < 59  # the last frame that could be decoded
    assert result.damaged
    assert any("truncated" in w for w in result.warnings)


def test_truncated_matroska_is_partial_and_damaged(videos):
    result = read_clips(videos["truncated.mkv"], [[0.0, 1.9]])
    assert indices(result.clips[0])[0] == 0
    assert result.damaged


def test_corrupt_bytes_inside_stream_are_tolerated(videos):
    times = [k / 30 for k in range(60)]  # every frame, so the reader goes through the damage
    result = read_clips(videos["corrupt_middle.mp4"], [times])
    got = indices(result.clips[0])
    assert got[:20] == list(range(20))  # before the damage: exact
    assert result.clips[0].shape == (60, 64, 96, 3)
    assert result.damaged and result.warnings
    assert len(result.warnings) <= 21


def test_intact_file_is_not_damaged_when_reading_past_the_end(videos):
    for name in ["h264.mp4", "vfr.mp4", "h264.mkv", "vp9.webm"]:
        result = read_clips(videos[name], [[0.0, 50.0]])
        assert not result.damaged, (name, result.warnings)


def test_non_reference_frames_nobody_wants_are_skipped_without_changing_any_frame(tmp_path):
    """x264's non-reference B-frames between wanted times are not decoded; the frames
    returned are pixel-identical to decoding every frame and picking."""
    from falv.video.testing import write_test_video

    path = write_test_video(tmp_path / "bframes.mp4", frames=90, fps=30, size=(96, 128), texture=True, gop=45)
    with av.open(str(path)) as container:
        everything = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    wanted = [[0.0, 0.5, 1.0], [1.5, 2.0, 2.95]]
    result = read_clips(path, wanted, threads=1)
    for clip, times in zip(result.clips, wanted):
        for frame, t in zip(clip, times):
            np.testing.assert_array_equal(frame, everything[min(int(round(t * 30)), 89)])
    assert result.frames_decoded < 60  # far fewer than the 90 a decode-all pass needs

"""probe() reads the metadata of every kind of test video."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest

from falv.video import VideoInfo, probe


@pytest.mark.parametrize(
    ("name", "fields"),
    [
        ("h264.mp4", dict(width=96, height=64, fps=10.0, num_frames=40, num_frames_exact=True, codec="h264",
                          rotation=0, has_audio=False, start_time=0.0)),
        ("vp9.webm", dict(codec="vp9", num_frames=20, num_frames_exact=False)),  # WebM stores no frame count
        ("h264.mkv", dict(num_frames=20, num_frames_exact=False)),
        ("h264.ts", dict(container="mpegts", num_frames=20, num_frames_exact=False)),
        ("mjpeg.avi", dict(codec="mjpeg", container="avi", num_frames=20, num_frames_exact=True)),
        ("one_frame.mp4", dict(num_frames=1, num_frames_exact=True)),
        ("tiny.mp4", dict(width=16, height=16)),
        ("odd.mp4", dict(width=33, height=17, pixel_format="yuv444p")),
        ("uhd.mp4", dict(width=3840, height=2160, num_frames=2)),
        ("with_audio.mp4", dict(has_audio=True)),
        ("start2s.mkv", dict(start_time=2.0)),
        ("start2s.mp4", dict(start_time=2.0)),
        ("rot90.mp4", dict(rotation=90, width=64, height=96, coded_width=96, coded_height=64)),
        ("rot180.mp4", dict(rotation=180, width=96, height=64)),
        ("rot270.mp4", dict(rotation=270, width=64, height=96)),
        ("gray_ffv1.mkv", dict(pixel_format="gray")),
        ("name with spaces é 视频.mp4", dict(num_frames=10)),
    ],
)
def test_probe_fields(videos, name, fields):
    info = probe(videos[name])
    assert info.path == str(videos[name])
    for key, value in fields.items():
        got = getattr(info, key)
        if isinstance(value, float):
            assert got == pytest.approx(value, abs=1e-3), key
        else:
            assert got == value, key


@pytest.mark.parametrize("name", ["h264.mp4", "vp9.webm", "h264.ts", "mjpeg.avi", "vfr.mp4"])
def test_duration_and_rate(videos, name):
    info = probe(videos[name])
    assert info.duration > 0 and info.fps > 0
    assert info.num_frames == pytest.approx(info.duration * info.fps, abs=1.5)


def test_to_dict_is_json_and_round_trips(videos):
    info = probe(videos["h264.mp4"])
    data = json.loads(json.dumps(info.to_dict()))
    assert data["time_base"] == f"{info.time_base.numerator}/{info.time_base.denominator}"
    assert VideoInfo.from_dict(data) == info
    assert isinstance(info.time_base, Fraction)


def test_probe_without_decoding(videos):
    info = probe(videos["h264.mp4"], decode_first_frame=False)
    assert info.num_frames == 40


def test_probe_damaged_but_decodable(videos):
    info = probe(videos["truncated_faststart.mp4"])
    assert info.num_frames == 60  # the header still describes the whole video

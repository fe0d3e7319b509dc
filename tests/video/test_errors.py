"""Every bad input raises the precise VideoError subclass, with a one-line message naming the file."""

from __future__ import annotations

import json
import os
import pickle

import pytest

import falv.video._open as video_open
from falv.errors import FalvError
from falv.video import (
    ERROR_CODES,
    CorruptVideoError,
    DecoderCrashedError,
    DecodeTimeoutError,
    NoDecodableFrameError,
    NotAVideoError,
    NoVideoStreamError,
    UnexpectedDecodeError,
    UnsupportedCodecError,
    VideoError,
    VideoLimits,
    VideoNotFoundError,
    VideoPermissionError,
    VideoTooLargeError,
    error_record,
    probe,
    read_clips,
    read_frames,
)

BAD_FILES = [
    ("empty.mp4", NotAVideoError, "empty"),
    ("random.mp4", NotAVideoError, "not a video"),
    ("text.mp4", NotAVideoError, "not a video"),
    ("image.mp4", NotAVideoError, "still image"),
    ("directory.mp4", NotAVideoError, "directory"),
    ("audio.m4a", NoVideoStreamError, "only audio"),
    ("audio.mka", NoVideoStreamError, "only audio"),
    ("truncated.mp4", CorruptVideoError, "truncated"),
    ("unknown_codec.avi", UnsupportedCodecError, "not supported"),
]


@pytest.mark.parametrize(("name", "error", "words"), BAD_FILES)
@pytest.mark.parametrize("reader", ["probe", "read_frames"])
def test_bad_file_raises_exact_error(videos, name, error, words, reader):
    path = videos[name]
    with pytest.raises(VideoError) as info:
        if reader == "probe":
            probe(path)
        else:
            read_frames(path, [0.0])
    err = info.value
    assert type(err) is error
    assert isinstance(err, FalvError)
    message = str(err)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert words in message


def test_missing_file(tmp_path):
    path = tmp_path / "nope.mp4"
    for call in (lambda: probe(path), lambda: read_frames(path, [0.0])):
        with pytest.raises(VideoNotFoundError, match="nope.mp4: no such file"):
            call()


def test_missing_parent_is_not_found(tmp_path):
    with pytest.raises(VideoNotFoundError):
        probe(tmp_path / "no_dir" / "x.mp4")


def test_permission_denied_simulated(videos, monkeypatch):
    # Tests run as root, for whom chmod 000 changes nothing; make open() refuse like it would.
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(video_open, "open", refuse, raising=False)
    with pytest.raises(VideoPermissionError, match="permission denied"):
        probe(videos["h264.mp4"])


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can read mode-000 files")
def test_permission_denied_real(videos, tmp_path):
    path = videos.copy("h264.mp4", tmp_path / "locked.mp4")
    path.chmod(0)
    try:
        with pytest.raises(VideoPermissionError):
            probe(path)
    finally:
        path.chmod(0o644)


def test_too_large_pixels(videos):
    with pytest.raises(VideoTooLargeError, match="3840x2160"):
        probe(videos["uhd.mp4"], limits=VideoLimits(max_pixels=1920 * 1080))
    with pytest.raises(VideoTooLargeError):
        read_frames(videos["uhd.mp4"], [0.0], limits=VideoLimits(max_pixels=1920 * 1080))


def test_too_long(videos):
    with pytest.raises(VideoTooLargeError, match="duration"):
        read_frames(videos["h264.mp4"], [0.0], limits=VideoLimits(max_duration=1.0))


def test_decode_timeout_in_process(videos):
    with pytest.raises(DecodeTimeoutError):
        read_clips(videos["h264.mp4"], [[0.0, 3.9]], timeout=-1.0)


def test_no_decodable_frame_when_every_packet_is_garbage(videos, tmp_path):
    # keep the MP4 structure (moov at the start) but destroy every byte of the frame data
    src = videos["truncated_faststart.mp4"].read_bytes()
    mdat = src.index(b"mdat") + 4
    data = bytearray(src)
    data[mdat:] = bytes(len(data) - mdat)
    path = tmp_path / "zeros.mp4"
    path.write_bytes(bytes(data))
    with pytest.raises((NoDecodableFrameError, CorruptVideoError)) as info:
        read_frames(path, [0.0, 1.0])
    assert str(path) in str(info.value)


def test_codes_are_unique_and_stable():
    codes = [cls.code for cls in ERROR_CODES.values()]
    assert len(codes) == len(set(codes))
    assert NotAVideoError.code == "not_a_video"
    assert VideoNotFoundError.code == "not_found"
    assert DecoderCrashedError.code == "decoder_crashed"
    assert DecodeTimeoutError.code == "timeout"


@pytest.mark.parametrize("cls", list(ERROR_CODES.values()))
def test_errors_pickle_and_serialise(cls):
    err = cls("dir/clip.mp4", "something\nwent wrong")
    assert str(err) == "dir/clip.mp4: something went wrong"
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is cls and str(back) == str(err) and back.path == err.path
    record = json.loads(json.dumps(err.to_dict()))
    assert record == {"path": "dir/clip.mp4", "error": cls.code, "message": str(err)}


def test_error_record_wraps_other_exceptions():
    record = error_record(KeyError("x"), "a.mp4")
    assert record["error"] == UnexpectedDecodeError.code
    assert record["path"] == "a.mp4"

"""Real small videos, encoded once per test session (per xdist worker) with PyAV."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest

from falv.video.testing import corrupt_file, truncate_file, write_test_audio, write_test_video


def _png(path: Path) -> Path:
    out = av.open(str(path), "w", format="image2")
    s = out.add_stream("png")
    s.width, s.height, s.pix_fmt = 32, 32, "rgb24"
    for p in s.encode(av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")):
        out.mux(p)
    for p in s.encode():
        out.mux(p)
    out.close()
    return path


def _unknown_codec(path: Path) -> Path:
    tmp = write_test_video(path.with_suffix(".tmp.avi"), codec="mjpeg", frames=3)
    path.write_bytes(tmp.read_bytes().replace(b"MJPG", b"QQQZ"))  # a fourcc no decoder knows
    tmp.unlink()
    return path


# name -> function(path) that writes it. Good videos first.
SPECS: dict[str, Callable[[Path], Path]] = {
    "h264.mp4": lambda p: write_test_video(p, frames=40, fps=10),
    "long_gop.mp4": lambda p: write_test_video(p, frames=300, fps=30, size=(32, 48), gop=25),
    "long_gop.mkv": lambda p: write_test_video(p, frames=300, fps=30, size=(32, 48), gop=25),
    "long_gop.ts": lambda p: write_test_video(p, frames=150, fps=30, size=(32, 48), gop=25),
    "vp9.webm": lambda p: write_test_video(p, frames=20, fps=30, codec="libvpx-vp9"),
    "h264.mkv": lambda p: write_test_video(p, frames=20, fps=30),
    "h264.ts": lambda p: write_test_video(p, frames=20, fps=30),
    "mjpeg.avi": lambda p: write_test_video(p, frames=20, fps=30, codec="mjpeg"),
    "mpeg4.avi": lambda p: write_test_video(p, frames=20, fps=30, codec="mpeg4"),
    "one_frame.mp4": lambda p: write_test_video(p, frames=1, fps=30),
    "gray.mp4": lambda p: write_test_video(p, frames=20, fps=30, pix_fmt="gray"),
    "gray_ffv1.mkv": lambda p: write_test_video(p, frames=20, fps=30, codec="ffv1", pix_fmt="gray"),
    "tiny.mp4": lambda p: write_test_video(p, frames=10, fps=30, size=(16, 16)),
    "odd.mp4": lambda p: write_test_video(p, frames=10, fps=30, size=(17, 33)),
    "uhd.mp4": lambda p: write_test_video(p, frames=2, fps=30, size=(2160, 3840)),
    "vfr.mp4": lambda p: write_test_video(p, frames=24, fps=30, vfr=True),
    "vfr.mkv": lambda p: write_test_video(p, frames=24, fps=30, vfr=True),
    "start2s.mkv": lambda p: write_test_video(p, frames=20, fps=30, start_time=2.0),
    "start2s.mp4": lambda p: write_test_video(p, frames=20, fps=30, start_time=2.0),
    "rot90.mp4": lambda p: write_test_video(p, frames=10, fps=30, rotation=90),
    "rot180.mp4": lambda p: write_test_video(p, frames=10, fps=30, rotation=180),
    "rot270.mp4": lambda p: write_test_video(p, frames=10, fps=30, rotation=270),
    "with_audio.mp4": lambda p: write_test_video(p, frames=20, fps=30, audio=True),
    "name with spaces é 视频.mp4": lambda p: write_test_video(p, frames=10, fps=30),
    "truncated_faststart.mp4": lambda p: truncate_file(
        write_test_video(p, frames=60, fps=30, texture=True, gop=10, options={"movflags": "faststart"}), 0.5
    ),
    "truncated.mkv": lambda p: truncate_file(write_test_video(p, frames=60, fps=30, texture=True, gop=10), 0.5),
    "corrupt_middle.mp4": lambda p: corrupt_file(
        write_test_video(p, frames=60, fps=30, texture=True, gop=10), at=0.5, nbytes=3000
    ),
    # bad inputs
    "empty.mp4": lambda p: (p.write_bytes(b""), p)[1],
    "random.mp4": lambda p: (p.write_bytes(np.random.default_rng(0).bytes(5000)), p)[1],
    "text.mp4": lambda p: (p.write_text("this is not a video\n" * 50), p)[1],
    "image.mp4": lambda p: _png(p),
    "audio.m4a": lambda p: write_test_audio(p, codec="aac"),
    "audio.mka": lambda p: write_test_audio(p, codec="mp2"),
    "truncated.mp4": lambda p: truncate_file(write_test_video(p, frames=60, fps=30, texture=True, gop=10), 0.5),
    "directory.mp4": lambda p: (p.mkdir(), p)[1],
    "unknown_codec.avi": _unknown_codec,
}


class VideoFactory:
    """``videos["h264.mp4"]`` encodes that file on first use and returns its path."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._made: dict[str, Path] = {}

    def __getitem__(self, name: str) -> Path:
        if name not in self._made:
            self._made[name] = SPECS[name](self.root / name)
        return self._made[name]

    def copy(self, name: str, dest: Path) -> Path:
        shutil.copy(self[name], dest)
        return dest


@pytest.fixture(scope="session")
def videos(tmp_path_factory: pytest.TempPathFactory) -> VideoFactory:
    return VideoFactory(tmp_path_factory.mktemp("videos"))

"""Small real videos for tests, written with PyAV.

Each frame shows its own index, so a test can tell which frame a decoder
returned: the picture is split into three horizontal bands whose grey levels
are the base-16 digits of the index (level ``8 + 16 * digit``, robust to lossy
coding and to resizing). :func:`frame_index` reads the index back. With
``texture=True`` the right half is per-frame noise, which makes the file about
as large per frame as real footage (useful for truncation tests).

Typical use::

    from falv.video.testing import write_test_video, frame_index
    path = write_test_video(tmp_path / "a.mp4", frames=30, fps=10)
    frames = read_frames(path, [0.0, 1.25])
    assert [frame_index(f) for f in frames] == [0, 12]
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error
import numpy as np

#: Largest index the three-band code can hold.
MAX_FRAME_INDEX = 16**3 - 1

_DEFAULT_PIX_FMT = {"mjpeg": "yuvj420p", "ffv1": "yuv420p", "png": "rgb24", "rawvideo": "yuv420p"}
# codecs whose 4:2:0 mode needs even sizes
_NEEDS_EVEN = {"libx264", "libvpx-vp9", "mpeg4", "mjpeg", "libx265", "h264"}


def frame_pattern(index: int, height: int, width: int, *, texture: bool = False) -> np.ndarray:
    """The ``(height, width, 3)`` uint8 RGB picture that encodes ``index``."""
    if not 0 <= index <= MAX_FRAME_INDEX:
        raise ValueError(f"index must be in [0, {MAX_FRAME_INDEX}], got {index}")
    digits = (index // 256, (index // 16) % 16, index % 16)
    img = np.empty((height, width, 3), dtype=np.uint8)
    bounds = [round(k * height / 3) for k in range(4)]
    for k, d in enumerate(digits):
        img[bounds[k] : bounds[k + 1]] = 8 + 16 * d
    if texture and width >= 4:
        rng = np.random.default_rng(index)
        half = width // 2
        img[:, half:] = rng.integers(0, 256, size=(height, width - half, 1), dtype=np.uint8)
    return img


def frame_index(image: np.ndarray) -> int:
    """Read back the index that :func:`frame_pattern` drew into ``image`` (``(H, W, 3)``)."""
    h, w = image.shape[:2]
    grey = image.astype(np.float32).mean(axis=-1)
    x0 = w // 8
    x1 = max(x0 + 1, (3 * w) // 8)
    value = 0
    for k in range(3):
        lo, hi = k * h / 3, (k + 1) * h / 3
        margin = (hi - lo) / 4
        r0 = int(lo + margin)
        r1 = max(r0 + 1, int(np.ceil(hi - margin)))
        level = float(np.median(grey[r0:r1, x0:x1]))
        value = value * 16 + int(np.clip(round((level - 8) / 16), 0, 15))
    return value


def vfr_times(frames: int, fps: float) -> list[float]:
    """Irregular presentation times (seconds): gaps cycle through 1, 1, 3, 1, 5, 2 frame periods."""
    gaps = (1, 1, 3, 1, 5, 2)
    times, t = [], Fraction(0)
    for i in range(frames):
        times.append(float(t))
        t += Fraction(gaps[i % len(gaps)]) / Fraction(fps).limit_denominator(1001)
    return times


def write_test_video(
    path: str | os.PathLike[str],
    *,
    frames: int = 8,
    fps: float = 30,
    size: tuple[int, int] = (64, 96),
    codec: str = "libx264",
    container: str | None = None,
    pix_fmt: str | None = None,
    rotation: int | None = None,
    vfr: bool = False,
    frame_times: Sequence[float] | None = None,
    start_time: float = 0.0,
    gop: int | None = None,
    texture: bool = False,
    audio: bool = False,
    options: dict[str, str] | None = None,
    codec_options: dict[str, str] | None = None,
) -> Path:
    """Encode a video whose frame ``i`` shows :func:`frame_pattern(i) <frame_pattern>`.

    ``size`` is ``(height, width)`` of the coded picture. ``rotation`` (clockwise
    degrees) is written as a display matrix, so players show the picture turned.
    ``vfr=True`` uses :func:`vfr_times`; ``frame_times`` (seconds) sets any
    timing; ``start_time`` shifts every frame (a non-zero first timestamp).
    ``container`` forces the muxer (``"mpegts"``, ``"matroska"``...), default: from
    the extension. ``options`` go to the muxer (e.g. ``{"movflags": "faststart"}``),
    ``codec_options`` to the encoder. ``audio=True`` adds a silent audio track.
    Returns the path.
    """
    path = Path(path)
    h, w = size
    if pix_fmt is None:
        pix_fmt = _DEFAULT_PIX_FMT.get(codec, "yuv420p")
        if codec in _NEEDS_EVEN and (h % 2 or w % 2) and pix_fmt.endswith("420p"):
            pix_fmt = pix_fmt.replace("420p", "444p")
    explicit = frame_times is not None or vfr or start_time != 0.0
    if frame_times is None:
        frame_times = vfr_times(frames, fps) if vfr else [i / fps for i in range(frames)]
    if len(frame_times) != frames:
        raise ValueError("frame_times must have one entry per frame")
    rate = Fraction(fps).limit_denominator(1001)
    copts = {} if codec_options is None else dict(codec_options)
    if codec == "libx264":
        params = ["scenecut=0"] if gop else []
        if gop:
            params += [f"keyint={gop}", f"min-keyint={gop}"]
        if params:
            copts.setdefault("x264-params", ":".join(params))
        copts.setdefault("preset", "ultrafast" if max(h, w) > 1000 else "medium")
        copts.setdefault("crf", "18")
    out = av.open(str(path), "w", format=container, options=options or {})
    try:
        stream = out.add_stream(codec, rate=rate, options=copts)
        stream.width, stream.height = w, h
        stream.pix_fmt = pix_fmt
        if gop:
            stream.codec_context.gop_size = gop
        if codec in ("mpeg4", "mpeg2video", "mpeg1video"):
            stream.bit_rate = max(1_000_000, 4 * w * h * int(fps))  # the default is too blurry to read the index
        if pix_fmt.startswith("gray"):
            # swscale produces full-range grey; say so, or decoders read it as limited range
            stream.codec_context.color_range = 2  # AVCOL_RANGE_JPEG
        time_base = Fraction(1, 90000) if explicit else 1 / rate
        stream.codec_context.time_base = time_base
        if rotation:
            stream.set_display_rotation(-rotation)  # PyAV takes counter-clockwise degrees
        audio_stream = _add_audio(out) if audio else None
        for i, t in enumerate(frame_times):
            frame = av.VideoFrame.from_ndarray(frame_pattern(i, h, w, texture=texture), format="rgb24")
            frame.pts = round(Fraction(t + start_time) / time_base)
            frame.time_base = time_base
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
        if audio_stream is not None:
            _write_silence(out, audio_stream, seconds=frame_times[-1] + 1 / fps if frames else 0.1)
    finally:
        out.close()
    return path


def stream_test_video(
    target: Any,
    *,
    frames: int,
    fps: float = 25,
    size: tuple[int, int] = (64, 96),
    first_index: int = 0,
    realtime: bool = True,
    codec: str = "libx264",
    format: str = "mpegts",
    options: dict[str, str] | None = None,
    written: list[float] | None = None,
    stop: Any = None,
    wait: Callable[[int], None] | None = None,
) -> int:
    """Write a live MPEG-TS feed of :func:`frame_pattern` frames to ``target``, paced like a camera.

    ``target`` is a path (a named pipe, a growing file), an output URL
    (``udp://127.0.0.1:PORT?pkt_size=1316``) or a writable binary file object (a
    socket's ``makefile("wb")``). Frame ``i`` shows index ``first_index + i`` and has
    pts ``i / fps``; with ``realtime`` frame ``i`` is written at ``i / fps`` seconds
    after the first (so a reader sees it arrive as from a camera). The encoder
    holds no frame back (x264 ``zerolatency``: no B-frames, no lookahead) and the
    muxer writes each packet out at once (``flush_packets``) with its PES length
    (``omit_video_pes_length=0``), so a frame reaches the reader as soon as it is encoded. ``written[i]`` receives the
    wall time (``time.time()``) at which frame ``i`` was handed to the target.
    ``stop`` (a ``threading.Event``) ends the feed early; ``wait(i)`` is called before
    frame ``i`` (tests use it to hold the feed at a frame). Returns the number of frames written.
    """
    import time

    h, w = size
    rate = Fraction(fps).limit_denominator(1001)
    mux_options = {"flush_packets": "1"}
    if format == "mpegts":
        # the PES length lets the demuxer hand a frame over as soon as it is complete, instead
        # of when the next frame starts (measured: 80 -> 40 ms from write to decoded frame at 25 fps)
        mux_options["omit_video_pes_length"] = "0"
    mux_options.update(options or {})
    own = None
    if isinstance(target, (str, Path)) and "://" not in str(target):
        # Opened here, not by FFmpeg: opening a FIFO blocks until a reader comes, and PyAV
        # holds the GIL while FFmpeg opens its output (every thread of the process would wait).
        target = own = open(target, "wb", buffering=0)
    count = 0
    try:
        out = av.open(target, "w", format=format, options=mux_options)
    except BaseException:
        if own is not None:
            own.close()
        raise
    try:
        copts = {"tune": "zerolatency", "preset": "ultrafast", "crf": "18"} if codec == "libx264" else {}
        stream = out.add_stream(codec, rate=rate, options=copts)
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuv420p"
        if codec in ("mpeg2video", "mpeg1video", "mpeg4"):
            stream.bit_rate = max(1_000_000, 4 * w * h * int(fps))
        stream.codec_context.time_base = 1 / rate
        stream.codec_context.gop_size = max(1, int(round(fps)))  # a keyframe a second: a late reader starts soon
        start = time.monotonic()
        for i in range(frames):
            if stop is not None and stop.is_set():
                break
            if wait is not None:
                wait(i)
            if realtime:
                delay = start + i / float(rate) - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            frame = av.VideoFrame.from_ndarray(frame_pattern(first_index + i, h, w), format="rgb24")
            frame.pts = i
            frame.time_base = 1 / rate
            for packet in stream.encode(frame):
                out.mux(packet)
            if written is not None:
                written.append(time.time())
            count += 1
        for packet in stream.encode():
            out.mux(packet)
    finally:
        try:
            out.close()
        except (OSError, av.error.FFmpegError):  # the reader went away
            pass
        if own is not None:
            try:
                own.close()
            except OSError:
                pass
    return count


def write_test_audio(path: str | os.PathLike[str], *, seconds: float = 1.0, codec: str = "aac") -> Path:
    """An audio-only file (silence), e.g. ``.m4a`` with AAC or ``.mka`` with MP2."""
    path = Path(path)
    out = av.open(str(path), "w")
    try:
        _write_silence(out, _add_audio(out, codec), seconds=seconds)
    finally:
        out.close()
    return path


def _add_audio(out: av.container.OutputContainer, codec: str = "aac") -> av.audio.stream.AudioStream:
    if out.format.name in ("avi",):
        codec = "mp2"
    return out.add_stream(codec, rate=16000, layout="mono")


def _write_silence(out: av.container.OutputContainer, stream: av.audio.stream.AudioStream, seconds: float) -> None:
    fmt = stream.codec_context.codec.audio_formats[0].name
    n = 1152 if stream.codec_context.name == "mp2" else 1024
    dtype = {"flt": np.float32, "s16": np.int16, "s32": np.int32, "dbl": np.float64}[fmt.rstrip("p")]
    for k in range(max(1, int(seconds * 16000) // n)):
        data = np.zeros((1, n), dtype=dtype)
        frame = av.AudioFrame.from_ndarray(data, format=fmt, layout="mono")
        frame.sample_rate = 16000
        frame.pts = k * n
        frame.time_base = Fraction(1, 16000)
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)


def truncate_file(path: str | os.PathLike[str], keep: float) -> Path:
    """Cut the file to its first ``keep`` fraction of bytes (a partial download)."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def corrupt_file(path: str | os.PathLike[str], at: float = 0.5, nbytes: int = 2000, seed: int = 0) -> Path:
    """Overwrite ``nbytes`` at fraction ``at`` of the file with seeded random bytes."""
    path = Path(path)
    data = bytearray(path.read_bytes())
    start = int(len(data) * at)
    noise = np.random.default_rng(seed).integers(0, 256, size=nbytes, dtype=np.uint8).tobytes()
    data[start : start + nbytes] = noise[: max(0, len(data) - start)]
    path.write_bytes(bytes(data))
    return path


def misbehave(item: dict) -> object:
    """A worker function for testing :func:`falv.video.pool.decode_in_workers`.

    ``item["action"]``: ``"ok"`` returns ``item["value"]``; ``"segfault"`` kills
    the process with SIGSEGV; ``"exit"`` calls ``os._exit(3)``; ``"sleep"`` sleeps
    ``item["seconds"]`` then returns; ``"raise"`` raises ``RuntimeError``;
    ``"video_error"`` raises :class:`falv.video.CorruptVideoError`; ``"array"``
    returns a uint8 array of ``item["shape"]``.
    """
    import signal
    import time

    action = item.get("action", "ok")
    if action == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)
        time.sleep(10)  # pragma: no cover
    if action == "exit":
        os._exit(3)
    if action == "sleep":
        time.sleep(float(item["seconds"]))
    if action == "raise":
        raise RuntimeError("boom")
    if action == "video_error":
        from falv.video.errors import CorruptVideoError

        raise CorruptVideoError(item.get("path", "x.mp4"), "made up damage")
    if action == "array":
        return np.full(tuple(item["shape"]), 7, dtype=np.uint8)
    return item.get("value")


#: The small videos the fuzzer damages: every container and codec the suite writes.
FUZZ_SOURCES: dict[str, dict] = {
    "h264.mp4": dict(frames=24, fps=12, gop=6),
    "h264_faststart.mp4": dict(frames=24, fps=12, gop=6, options={"movflags": "faststart"}),
    "h264_audio.mp4": dict(frames=24, fps=12, gop=6, audio=True),
    "h264_rot90.mp4": dict(frames=12, fps=12, rotation=90),
    "h264_vfr.mp4": dict(frames=24, fps=24, vfr=True),
    "mpeg4.mov": dict(frames=24, fps=12, codec="mpeg4"),
    "mpeg4_raw.m4v": dict(frames=24, fps=12, codec="mpeg4", container="m4v"),  # an elementary stream
    "h264.mkv": dict(frames=24, fps=12, gop=6),
    "h264_start1s.mkv": dict(frames=12, fps=12, start_time=1.0),
    "ffv1.mkv": dict(frames=12, fps=12, codec="ffv1"),
    "vp9.webm": dict(frames=24, fps=12, codec="libvpx-vp9"),
    "h264.ts": dict(frames=24, fps=12, gop=6),
    "mjpeg.avi": dict(frames=12, fps=12, codec="mjpeg"),
    "mpeg4.avi": dict(frames=24, fps=12, codec="mpeg4"),
    "one_frame.mp4": dict(frames=1, fps=12),
}


def write_fuzz_sources(folder: str | os.PathLike[str], size: tuple[int, int] = (64, 80)) -> dict[str, Path]:
    """Write :data:`FUZZ_SOURCES` into ``folder`` (``size`` = (height, width)); name -> path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return {name: write_test_video(folder / name, size=size, **spec) for name, spec in FUZZ_SOURCES.items()}

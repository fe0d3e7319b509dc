"""Open a file with PyAV and turn every way that can fail into a :class:`VideoError`.

Shared by :func:`falv.video.probe` and :func:`falv.video.read_clips`; nothing
here decodes frames except :func:`first_frame_rotation`.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import av
import av.error

from falv.video.errors import (
    CorruptVideoError,
    NoVideoStreamError,
    NotAVideoError,
    UnexpectedDecodeError,
    UnsupportedCodecError,
    VideoError,
    VideoNotFoundError,
    VideoPermissionError,
)
from falv.video.info import VideoInfo

# Demuxers that read a single still picture; a PNG renamed .mp4 opens as one of these.
_IMAGE_DEMUXER_SUFFIX = "_pipe"
_IMAGE_DEMUXERS = {"image2", "apng", "ico", "tiff"}


def check_path(path: str) -> bytes:
    """Fail early with a precise error for missing, unreadable, empty or directory paths.

    Returns the first 64 bytes of the file (used to recognise truncated containers).
    Note: ``os.access`` is not used because it says yes to root; the real ``open``
    decides.
    """
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise VideoNotFoundError(path) from None
    except PermissionError:
        raise VideoPermissionError(path, "permission denied (cannot access the file's folder)") from None
    except OSError as exc:
        raise VideoNotFoundError(path, f"cannot access the file ({exc.strerror or exc})") from None
    if stat.S_ISDIR(st.st_mode):
        raise NotAVideoError(path, "is a directory, not a video file")
    if stat.S_ISREG(st.st_mode) and st.st_size == 0:
        raise NotAVideoError(path, "empty file (0 bytes), not a video")
    try:
        with open(path, "rb") as fh:
            return fh.read(64)
    except PermissionError:
        raise VideoPermissionError(path) from None
    except OSError as exc:
        raise CorruptVideoError(path, f"cannot read the file ({exc.strerror or exc})") from None


def container_kind(header: bytes) -> str | None:
    """Name of the container whose signature starts ``header`` (``None`` if unknown)."""
    if len(header) >= 8 and header[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot"):
        return "MP4/MOV"
    if header.startswith(b"\x1a\x45\xdf\xa3"):
        return "Matroska/WebM"
    if header.startswith(b"RIFF") and header[8:11] == b"AVI":
        return "AVI"
    if header.startswith(b"FLV"):
        return "FLV"
    if header.startswith(b"\x00\x00\x01\xba"):
        return "MPEG-PS"
    if header.startswith(b"\x30\x26\xb2\x75"):
        return "ASF/WMV"
    if header.startswith(b"OggS"):
        return "Ogg"
    return None


def _open_error(path: str, exc: BaseException, header: bytes) -> VideoError:
    if isinstance(exc, FileNotFoundError):
        return VideoNotFoundError(path)
    if isinstance(exc, PermissionError):
        return VideoPermissionError(path)
    if isinstance(exc, IsADirectoryError):
        return NotAVideoError(path, "is a directory, not a video file")
    if isinstance(exc, (av.error.DecoderNotFoundError, av.error.DemuxerNotFoundError)):
        return UnsupportedCodecError(path, f"this FFmpeg build cannot read it ({_reason(exc)})")
    kind = container_kind(header)
    if kind is not None:
        hint = "its index (moov atom) is missing, " if kind == "MP4/MOV" else ""
        return CorruptVideoError(
            path, f"looks like an {kind} file but cannot be opened: {hint}the file is probably truncated or damaged"
        )
    if isinstance(exc, (av.error.InvalidDataError, av.error.EOFError)):
        return NotAVideoError(path)
    if isinstance(exc, OSError):
        return CorruptVideoError(path, f"cannot be opened ({_reason(exc)})")
    return UnexpectedDecodeError(path, f"cannot be opened ({type(exc).__name__}: {_reason(exc)})")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, av.error.FFmpegError) and exc.strerror:
        return str(exc.strerror)
    return str(exc) or type(exc).__name__


@contextlib.contextmanager
def open_video(path: str | os.PathLike[str]) -> Iterator[tuple[Any, Any]]:
    """Context manager yielding ``(container, video_stream)``; closes the container.

    Raises the precise :class:`VideoError` for files that are missing, unreadable,
    not videos (text, still images, random bytes), truncated containers, or
    containers without a video stream.
    """
    path = os.fspath(path)
    header = check_path(path)
    try:
        container = av.open(path, metadata_errors="replace")
    except Exception as exc:  # PyAV raises many types; map all of them
        raise _open_error(path, exc, header) from None
    try:
        fmt = container.format.name
        if fmt.endswith(_IMAGE_DEMUXER_SUFFIX) or fmt in _IMAGE_DEMUXERS:
            picture = fmt.removesuffix(_IMAGE_DEMUXER_SUFFIX)
            raise NotAVideoError(path, f"is a still image ({picture}), not a video")
        stream = pick_video_stream(container)
        if stream is None:
            if container.streams.audio:
                raise NoVideoStreamError(path, "has no video stream, only audio")
            raise NoVideoStreamError(path, "has no video stream")
        ctx = stream.codec_context
        if ctx is None or ctx.codec is None:
            raise UnsupportedCodecError(path, "the video codec is not supported by this FFmpeg build")
        yield container, stream
    finally:
        container.close()


def pick_video_stream(container: Any) -> Any | None:
    """The first video stream that is not an attached picture (cover art)."""
    attached = int(av.stream.Disposition.attached_pic)
    for s in container.streams.video:
        if not (int(s.disposition) & attached):
            return s
    return None


def clockwise_rotation(ccw_degrees: float | None) -> int:
    """FFmpeg's counter-clockwise display-matrix angle -> clockwise 0/90/180/270."""
    if not ccw_degrees:
        return 0
    return int(round(-float(ccw_degrees) / 90.0)) % 4 * 90


def stream_rotation(stream: Any) -> int | None:
    """Rotation from the legacy ``rotate`` tag (older FFmpeg), else ``None``."""
    tag = stream.metadata.get("rotate")
    if tag is None:
        return None
    try:
        return int(round(float(tag) / 90.0)) % 4 * 90
    except ValueError:
        return None


def build_info(path: str, container: Any, stream: Any, rotation: int) -> VideoInfo:
    """A :class:`VideoInfo` from an open container (no decoding)."""
    tb = stream.time_base or Fraction(1, 1)
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else 0.0
    if stream.start_time is not None:
        start = float(stream.start_time * tb)
    elif container.start_time is not None:
        start = container.start_time / av.time_base
    else:
        start = 0.0
    if stream.duration:
        duration = float(stream.duration * tb)
    elif container.duration:
        duration = container.duration / av.time_base
        if "matroska" in container.format.name:
            # Matroska's segment duration is the end time on the stream's clock, not a span
            duration -= start
        else:
            duration -= max(0.0, start - _container_start(container))
        duration = max(0.0, duration)
    else:
        duration = 0.0
    exact = bool(stream.frames and stream.frames > 0)
    if exact:
        num_frames = int(stream.frames)
    else:
        num_frames = int(round(duration * fps)) if fps > 0 else 0
    if duration == 0.0 and fps > 0 and num_frames:
        duration = num_frames / fps
    ctx = stream.codec_context
    cw, ch = int(ctx.width or 0), int(ctx.height or 0)
    w, h = (ch, cw) if rotation in (90, 270) else (cw, ch)
    bit_rate = container.bit_rate or getattr(stream, "bit_rate", None) or None
    return VideoInfo(
        path=path,
        duration=duration,
        fps=fps,
        num_frames=num_frames,
        num_frames_exact=exact,
        width=w,
        height=h,
        rotation=rotation,
        codec=ctx.name,
        container=container.format.name,
        start_time=start,
        time_base=Fraction(tb),
        bit_rate=int(bit_rate) if bit_rate else None,
        has_audio=bool(container.streams.audio),
        pixel_format=ctx.pix_fmt,
        coded_width=cw,
        coded_height=ch,
    )


def _container_start(container: Any) -> float:
    return container.start_time / av.time_base if container.start_time is not None else 0.0

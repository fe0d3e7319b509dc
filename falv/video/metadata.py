"""``probe(path) -> VideoInfo``: read a video's metadata and check that it decodes."""

from __future__ import annotations

import os

import av.error

from falv.video._open import build_info, clockwise_rotation, open_video, stream_rotation
from falv.video.errors import CorruptVideoError, NoDecodableFrameError, VideoError, VideoTooLargeError
from falv.video.info import DEFAULT_LIMITS, VideoInfo, VideoLimits

#: probe gives up looking for a first frame after this many packets.
MAX_PROBE_PACKETS = 256


def probe(
    path: str | os.PathLike[str],
    *,
    limits: VideoLimits = DEFAULT_LIMITS,
    decode_first_frame: bool = True,
) -> VideoInfo:
    """Metadata of the video at ``path``; raises a :class:`falv.video.VideoError` subclass.

    With ``decode_first_frame`` (the default) the first frame is decoded, which
    proves the stream decodes (:class:`NoDecodableFrameError` /
    :class:`CorruptVideoError` otherwise) and reads the rotation that recent
    FFmpeg attaches to frames from the container's display matrix. Without it,
    only the legacy ``rotate`` tag is consulted. ``limits`` raise
    :class:`VideoTooLargeError` for oversized frames or durations.
    """
    path = os.fspath(path)
    try:
        with open_video(path) as (container, stream):
            rotation = stream_rotation(stream)
            info = build_info(path, container, stream, rotation or 0)
            reason = limits.check(info)
            if reason is not None:
                raise VideoTooLargeError(path, reason)
            if not decode_first_frame:
                return info
            frame_rotation = _first_frame_rotation(path, container, stream)
            if rotation is None and frame_rotation:
                info = build_info(path, container, stream, frame_rotation)
            return info
    except VideoError:
        raise
    except (av.error.FFmpegError, OSError) as exc:
        raise CorruptVideoError(path, f"cannot be read ({exc.strerror or exc})") from None


def _first_frame_rotation(path: str, container: object, stream: object) -> int:
    """Decode until the first frame; its clockwise rotation. Raises if none decodes."""
    stream.thread_type = "SLICE"  # type: ignore[attr-defined]
    error: str | None = None
    try:
        for n, packet in enumerate(container.demux(stream)):  # type: ignore[attr-defined]
            if n > MAX_PROBE_PACKETS:
                break
            try:
                frames = stream.decode(packet)  # type: ignore[attr-defined]
            except av.error.EOFError:
                frames = []
            except (av.error.FFmpegError, OSError) as exc:
                error = error or (exc.strerror or str(exc))
                continue
            if frames:
                return clockwise_rotation(frames[0].rotation)
    except (av.error.FFmpegError, OSError) as exc:
        error = error or (exc.strerror or str(exc))
    if error is not None:
        raise CorruptVideoError(path, f"no frame could be decoded ({error})")
    raise NoDecodableFrameError(path)

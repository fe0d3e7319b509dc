"""``probe(path) -> VideoInfo``: read a video's metadata and check that it decodes."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from fractions import Fraction

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


# -- what the packets say, when the header cannot be trusted ---------------------------------------

#: Seconds before the header's end from which :func:`check_timing` reads to the end of the file.
TAIL_SECONDS = 2.0
#: A header duration within this many seconds (or 2 frames) of the packets' end is believed.
DURATION_TOLERANCE_S = 0.1
#: Frame duration assumed when neither the packets nor the header give one (25 fps).
DEFAULT_FRAME_S = 0.04


@dataclass(frozen=True)
class PacketSpan:
    """Where a stream's video packets lie, in seconds on the container's clock (``pts * time_base``).

    ``first`` is the earliest presentation time, ``end`` the end of the last packet (its
    time plus its duration, or one frame), ``packets`` how many timed packets were read
    (from ``first`` when ``from_start``, else from a seek near the end).
    """

    first: float
    end: float
    packets: int
    from_start: bool
    step: float  # the typical time between packets (seconds), 0 when unknown


def scan_packets(path: str | os.PathLike[str], *, from_time: float | None = None,
                 max_packets: int = 5_000_000) -> PacketSpan | None:
    """Read the video packets (no decoding) from the start, or from the keyframe before
    ``from_time`` (seconds on the container's clock) to the end of the file; ``None`` when
    no timed packet is found. A damaged part ends the scan where it starts."""
    path = os.fspath(path)
    with open_video(path) as (container, stream):
        tb = Fraction(stream.time_base or Fraction(1, 1))
        if from_time is not None:
            try:
                container.seek(int(Fraction(from_time) / tb), stream=stream, backward=True, any_frame=False)
            except (av.error.FFmpegError, OSError, ValueError, OverflowError):
                return None
        first: int | None = None
        last_end: int | None = None
        stamps: list[int] = []
        count = 0
        try:
            for packet in container.demux(stream):
                ts = packet.pts if packet.pts is not None else packet.dts
                if ts is None or packet.size == 0:
                    continue
                count += 1
                if len(stamps) < 512:
                    stamps.append(int(ts))
                first = ts if first is None else min(first, ts)
                end = ts + max(int(packet.duration or 0), 0)
                last_end = end if last_end is None else max(last_end, end)
                if count >= max_packets:
                    break
        except (av.error.FFmpegError, OSError):
            pass  # the readable part ends here
        if first is None or last_end is None:
            return None
        diffs = sorted(b - a for a, b in zip(sorted(stamps), sorted(stamps)[1:]) if b > a)
        step = float(diffs[len(diffs) // 2] * tb) if diffs else 0.0
        end = float(last_end * tb)
        if last_end == max(stamps, default=first) or end <= float(first * tb):  # no packet durations
            end += step or DEFAULT_FRAME_S
        return PacketSpan(first=float(first * tb), end=end, packets=count, from_start=from_time is None, step=step)


def check_timing(path: str | os.PathLike[str], info: VideoInfo) -> tuple[VideoInfo, list[str]]:
    """``info`` with its start, duration, frame rate and frame count taken from the packets
    where the header's disagree with them, and what was corrected (for warnings).

    Cheap for a sound file: one seek to :data:`TAIL_SECONDS` before the header's end and
    the packets from there (no decoding). A header with no usable duration or frame rate,
    or whose end the tail does not confirm, is checked against every packet of the file.
    Damaged files lie in every way: a duration of 0 while frames decode, a duration far
    longer than the data, timestamps that start before or long after the stream's start.
    """
    header_end = info.start_time + info.duration
    sound = math.isfinite(info.duration) and info.duration > 0 and info.fps > 0 and math.isfinite(info.fps)
    span = None
    if sound:
        tail = scan_packets(path, from_time=max(info.start_time, header_end - TAIL_SECONDS))
        frame = 1.0 / info.fps
        tolerance = max(DURATION_TOLERANCE_S, 2 * frame)
        if tail is not None and tail.first <= header_end and abs(tail.end - header_end) <= tolerance:
            return info, []  # the header's end is where the packets end
        span = scan_packets(path)
    else:
        span = scan_packets(path)
    if span is None:
        return info, []  # nothing better to go on; decoding will say what is wrong
    start = span.first
    duration = max(span.end - span.first, 0.0)
    fps = info.fps if sound else (1.0 / span.step if span.step > 0 else info.fps)
    notes = []
    if abs(duration - info.duration) > DURATION_TOLERANCE_S:
        notes.append(f"the header says the video lasts {info.duration:.3f} s but its frames span "
                     f"{duration:.3f} s; windows are planned from the frames")
    if abs(start - info.start_time) > DURATION_TOLERANCE_S:
        notes.append(f"the header says the video starts at {info.start_time:.3f} s but its first frame "
                     f"is at {start:.3f} s")
    if not notes and fps == info.fps:
        return info, []
    num_frames = info.num_frames
    if not info.num_frames_exact or num_frames <= 0:
        num_frames = int(round(duration * fps)) if fps > 0 else span.packets
    return dataclasses.replace(info, start_time=start, duration=duration, fps=fps, num_frames=num_frames), notes

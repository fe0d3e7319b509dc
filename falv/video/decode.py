"""Decode the frames shown at given times, with PyAV.

Strategy (what :func:`read_clips` does):

1. All wanted timestamps of all clips are merged, sorted and deduplicated, so
   one forward pass over the file serves every clip. Timestamps are seconds from
   the first frame (the stream's ``start_time`` is added for you).
2. The frame for time ``t`` is the one *displayed* at ``t``: the last frame with
   ``pts <= t``, with a tolerance of half a tick of the stream's clock (at least
   1 microsecond), so ``t = k / fps`` selects frame ``k`` even when the container
   rounded its timestamps (Matroska stores milliseconds) or ``t`` was computed in
   floating point. ``t`` before the first frame gives the first frame; ``t`` past
   the end, or past the last decodable frame of a damaged file,
   gives the last frame.
3. Between two wanted times the reader either keeps decoding (dense targets) or
   seeks: when the keyframe at or before the next wanted time lies more than
   :data:`SEEK_MIN_GAP_FRAMES` frames ahead of the demuxer's position, it seeks
   there (``container.seek(pts, stream=..., backward=True, any_frame=False)``),
   skipping the frames in between undecoded. Keyframe positions come from the
   container's index (MP4/MOV, Matroska/WebM cues, AVI). Containers without an
   index (MPEG-TS, WebM without cues) are read sequentially: seeking there is a
   byte-level bisection that may land after the wanted frame. If a seek lands
   after the wanted time anyway, it seeks again further back. Seeks only ever go
   forward past what was already decoded, so no frame is decoded twice
   (``ClipsResult.frames_decoded`` counts every frame that leaves the decoder;
   ``frames_converted`` counts distinct frames turned into RGB, each exactly once
   even when several clips share it).
4. Decoding stops as soon as the last wanted time is resolved.
5. Scaling and RGB conversion are done by FFmpeg's swscale in one step
   (``frame.to_ndarray(width=, height=, format="rgb24")``), never a full-size RGB
   frame resized afterwards. Rotation from the display matrix is applied with
   ``np.rot90`` after scaling (the decode size is the pre-rotation size).
6. Decoder threads: ``thread_type = "AUTO"`` (frame and slice threads), thread
   count chosen by FFmpeg; pass ``threads=1`` inside worker pools that already
   keep every core busy.

Damaged files: packets the decoder rejects, frames FFmpeg marks corrupt, and a
demuxer that stops early (truncated file) set ``damaged=True`` and add a
warning; the frames that did decode are returned. A file with no decodable
frame raises :class:`CorruptVideoError` (errors seen) or
:class:`NoDecodableFrameError` (no error, just no frames).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av
import av.error
import numpy as np

from falv.video._open import build_info, clockwise_rotation, open_video, stream_rotation
from falv.video.errors import (
    CorruptVideoError,
    DecodeTimeoutError,
    NoDecodableFrameError,
    VideoError,
    VideoTooLargeError,
)
from falv.video.info import DEFAULT_LIMITS, VideoInfo, VideoLimits

#: Seek only when it skips at least this many frames (a seek flushes the decoder's threads).
SEEK_MIN_GAP_FRAMES = 16
#: Smallest tolerance (seconds) when comparing a wanted time to a frame's pts.
TIME_TOLERANCE_S = 1e-6
#: Packets read ahead to decide whether a frame can be skipped (covers B-frame reordering).
LOOKAHEAD_PACKETS = 8
#: At most this many decoder error messages are kept in ``warnings``.
MAX_WARNINGS = 20

Size = int | tuple[int, int] | None


@dataclass
class ClipsResult:
    """Frames of several clips of one video.

    ``clips[c]`` is ``(T_c, H, W, 3)`` uint8 RGB for ``clips[c]`` of the request
    (same order, same length, duplicates kept); ``frame_times[c]`` holds the
    presentation time (seconds from the first frame) of each returned frame.
    """

    clips: list[np.ndarray]
    frame_times: list[np.ndarray]
    info: VideoInfo
    damaged: bool = False
    warnings: list[str] = field(default_factory=list)
    frames_decoded: int = 0
    frames_converted: int = 0
    seeks: int = 0


def output_size(height: int, width: int, size: Size) -> tuple[int, int]:
    """Displayed ``(H, W)`` for a ``height`` x ``width`` picture and a ``size`` request.

    ``None``: unchanged. ``int s``: the shorter side becomes ``s``, the longer
    ``int(s * long / short)`` (as :func:`falv.data.transforms.resize_shortest_side`).
    ``(h, w)``: exactly that.
    """
    if size is None:
        return height, width
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        s = int(size)
        if s <= 0:
            raise ValueError(f"size must be positive, got {size}")
        if height <= width:
            return s, max(1, int(s * width / height))
        return max(1, int(s * height / width)), s
    h, w = (int(v) for v in size)  # type: ignore[union-attr]
    if h <= 0 or w <= 0:
        raise ValueError(f"size must be positive, got {size}")
    return h, w


def read_frames(
    path: str | os.PathLike[str],
    timestamps: Sequence[float],
    size: Size = None,
    *,
    limits: VideoLimits = DEFAULT_LIMITS,
    timeout: float | None = None,
) -> np.ndarray:
    """Frames displayed at ``timestamps`` (seconds from the first frame) as ``(T, H, W, 3)`` uint8 RGB.

    The single-clip case of :func:`read_clips`; damage is tolerated silently
    (use :func:`read_clips` to see ``damaged`` and ``warnings``).
    """
    return read_clips(path, [timestamps], size, limits=limits, timeout=timeout).clips[0]


def read_clips(
    path: str | os.PathLike[str],
    clips: Sequence[Sequence[float]],
    size: Size = None,
    *,
    limits: VideoLimits = DEFAULT_LIMITS,
    timeout: float | None = None,
    threads: int = 0,
    origin: float | None = None,
) -> ClipsResult:
    """Decode the frames of several clips in one forward pass; see the module docstring.

    ``clips`` is a list of timestamp lists (seconds from the first frame).
    ``size`` is ``None`` (native), an int (shorter side) or ``(height, width)`` of
    the *displayed* (rotated) frame. ``timeout`` bounds the wall time in seconds
    (checked between packets; a decoder stuck inside FFmpeg needs
    :func:`falv.video.pool.decode_in_workers`). ``threads``: decoder threads,
    ``0`` lets FFmpeg choose, ``1`` decodes on the calling thread only.
    ``origin``: the container-clock time (seconds) that timestamps count from, instead of
    the stream's start time (:func:`falv.video.metadata.check_timing` gives it for files
    whose first frame lies elsewhere than their header says).

    Raises a :class:`falv.video.VideoError` subclass for every failure.
    """
    path = os.fspath(path)
    wanted = _validate_clips(clips)
    deadline = time.monotonic() + timeout if timeout is not None else None
    try:
        with open_video(path) as (container, stream):
            return _ClipReader(path, container, stream, wanted, clips, size, limits, deadline, threads,
                               origin).run()
    except VideoError:
        raise
    except (av.error.FFmpegError, OSError) as exc:
        raise CorruptVideoError(path, f"cannot be decoded ({_reason(exc)})") from None
    except MemoryError:
        raise VideoTooLargeError(path, "ran out of memory while decoding") from None


def _validate_clips(clips: Sequence[Sequence[float]]) -> list[float]:
    if isinstance(clips, (str, bytes)) or not isinstance(clips, Sequence):
        raise TypeError("clips must be a sequence of timestamp sequences")
    values: set[float] = set()
    for clip in clips:
        if isinstance(clip, (int, float)):
            raise TypeError("clips must be a sequence of timestamp sequences, e.g. [[0.0, 0.5]]")
        for t in clip:
            t = float(t)
            if math.isnan(t):
                raise ValueError("timestamps must be numbers, got NaN")
            values.add(max(0.0, t))
    return sorted(values)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, av.error.FFmpegError) and exc.strerror:
        return str(exc.strerror)
    return str(exc) or type(exc).__name__


class _Lookahead:
    """A packet iterator that can show the next few packets; a demuxer error is
    raised only once the packets read before it have been handed out."""

    def __init__(self, packets: Any, size: int = LOOKAHEAD_PACKETS) -> None:
        self._packets = packets
        self._size = size
        self._buffer: deque[Any] = deque()
        self._error: BaseException | None = None
        self._ended = False

    def _fill(self) -> None:
        while not self._ended and self._error is None and len(self._buffer) < self._size:
            try:
                self._buffer.append(next(self._packets))
            except StopIteration:
                self._ended = True
            except (av.error.FFmpegError, OSError) as exc:
                self._error = exc

    def __iter__(self) -> _Lookahead:
        return self

    def __next__(self) -> Any:
        self._fill()
        if self._buffer:
            return self._buffer.popleft()
        if self._error is not None:
            error, self._error, self._ended = self._error, None, True
            raise error
        raise StopIteration

    def upcoming(self) -> deque[Any]:
        self._fill()
        return self._buffer


class _ClipReader:
    """One forward pass over one stream; holds all mutable decoding state."""

    def __init__(
        self,
        path: str,
        container: Any,
        stream: Any,
        wanted: list[float],
        clips: Sequence[Sequence[float]],
        size: Size,
        limits: VideoLimits,
        deadline: float | None,
        threads: int,
        origin: float | None = None,
    ) -> None:
        self.path = path
        self.limits = limits
        self.origin = origin
        self.container = container
        self.stream = stream
        self.clips = clips
        self.size = size
        self.deadline = deadline
        if threads != 1:
            stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads
        self.tb = Fraction(stream.time_base or Fraction(1, 1))
        self.rotation = stream_rotation(stream)
        self.info = build_info(path, container, stream, self.rotation or 0)
        reason = limits.check(self.info)
        if reason is not None:
            raise VideoTooLargeError(path, reason)
        self.start_pts = self._start_pts()
        # a frame stored at pts may really start up to half a tick earlier (e.g. Matroska's 1 ms clock)
        self.tol = max(float(TIME_TOLERANCE_S / self.tb), 0.5)
        self.wanted = wanted
        # wanted times in stream ticks, ascending
        self.targets = [float(self.start_pts + Fraction(t) / self.tb) for t in wanted]
        self.n = len(wanted)
        self.i = 0
        self.target_slot = [-1] * self.n
        self.slots: list[np.ndarray] = []
        self.slot_pts: list[float] = []
        self._slot_frame: Any = None
        self.prev: Any = None
        self.prev_pts: float | None = None
        self.frames_decoded = 0
        self.seeks = 0
        self.warnings: list[str] = []
        self.damaged = False
        self._n_errors = 0
        self._warned_order = False
        fps = self.info.fps
        rate = Fraction(fps).limit_denominator(100000) if fps > 0 else Fraction(25)
        if rate <= 0:  # a damaged header's absurd rate (one frame every 89 million seconds, seen)
            rate = Fraction(fps)
        self.frame_ticks = float(1 / (rate * self.tb))
        self.last_key_pts: float | None = None
        self.max_gop_ticks = 0.0
        self.after_seek = False
        self.reseeks = 0
        self.decode_hw: tuple[int, int] | None = None
        self._reformatter: Any = None
        self.index = stream.index_entries
        self.index_first = self.index[0].timestamp if len(self.index) else None
        self.index_delay = max(0.0, float(self.start_pts) - self.index_first) if self.index_first is not None else 0.0
        self.can_seek = True
        self.hold_seeks_until = 0  # after an overshoot, no new seek before this target is resolved
        self.seeked_for = -1  # the wanted time the last seek was for
        self.resume_pts: float | None = None  # last frame decoded before the latest seek
        self.skip_mode = "DEFAULT"

    def _start_pts(self) -> Fraction:
        if self.origin is not None:
            return Fraction(self.origin) / self.tb
        if self.stream.start_time is not None:
            return Fraction(self.stream.start_time)
        if self.container.start_time is not None:
            return Fraction(self.container.start_time, av.time_base) / self.tb
        return Fraction(0)

    # ---- main loop -------------------------------------------------------------------
    def run(self) -> ClipsResult:
        if self.n:
            self._decode()
        if self.n and not self.slots:
            if self.damaged:
                first = self.warnings[0] if self.warnings else "decoder errors"
                raise CorruptVideoError(self.path, f"no frame could be decoded ({first})")
            raise NoDecodableFrameError(self.path)
        return self._result()

    def _decode(self) -> None:
        self._load_index()
        # the demuxer starts at the first packet: the first index entry or the stream start
        pos = self.index_first if self.index_first is not None else float(self.start_pts)
        if self._should_seek(pos):
            self._seek(self.targets[0])
        packets = _Lookahead(self.container.demux(self.stream))
        while self.i < self.n:
            self._check_deadline()
            try:
                packet = next(packets)
            except StopIteration:
                if self._resume_after_failed_seek():
                    packets = _Lookahead(self.container.demux(self.stream))
                    continue
                break
            except (av.error.FFmpegError, OSError) as exc:
                self._damage(f"stopped reading at a damaged or truncated part of the file ({_reason(exc)})")
                self._drain()
                if self._resume_after_failed_seek():
                    packets = _Lookahead(self.container.demux(self.stream))
                    continue
                break
            self._choose_skip(packet, packets.upcoming())
            reseek = self._feed(packet)
            if self.i >= self.n:
                break
            if reseek is None and packet.dts is not None and self._should_seek(packet.dts):
                reseek = self.targets[self.i]
            if reseek is not None:
                self._seek(reseek)
                packets = _Lookahead(self.container.demux(self.stream))
        # end of stream: what is still wanted lies after the last frame
        if self.i < self.n and self.prev is not None:
            self._check_complete()
        while self.i < self.n and self.prev is not None:
            self._assign(self.prev)
        if self.i < self.n and self.slots:  # nothing decodable after a seek: keep the last good frame
            self._damage(f"no frame could be decoded after {self.wanted[self.i - 1] if self.i else 0.0:.3f} s")
            while self.i < self.n:
                self.target_slot[self.i] = len(self.slots) - 1
                self.i += 1

    def _resume_after_failed_seek(self) -> bool:
        """A seek that produced no frame jumped past the readable data (a truncated file):
        go back to the last decoded frame and read on sequentially from there."""
        if self.prev is not None or self.resume_pts is None or not self.can_seek:
            return False
        self._damage("a seek landed past the end of the readable data (truncated file?)")
        target = self.resume_pts
        self.resume_pts = None
        self._seek(target)
        self.can_seek = False
        return True

    def _choose_skip(self, packet: Any, upcoming: deque[Any]) -> None:
        """Let the decoder skip this packet's frame if it is not a reference frame and a
        later frame is still at or before the next wanted time (see step 7 above)."""
        skip = False
        if packet.pts is not None and self.i < self.n:
            limit = self.targets[self.i] + self.tol
            pts = packet.pts
            skip = pts < limit and any(q.pts is not None and pts < q.pts <= limit for q in upcoming)
        mode = "NONREF" if skip else "DEFAULT"
        if mode != self.skip_mode:
            self.stream.codec_context.skip_frame = mode
            self.skip_mode = mode

    def _feed(self, packet: Any) -> float | None:
        """Decode one packet; returns a timestamp to seek back to after an overshoot."""
        try:
            frames = self.stream.decode(packet)
        except av.error.EOFError:
            return None
        except (av.error.FFmpegError, OSError) as exc:
            self._damage(f"decoder error at {self._packet_time(packet)} ({_reason(exc)})")
            return None
        for frame in frames:
            reseek = self._on_frame(frame)
            if reseek is not None or self.i >= self.n:
                return reseek
        return None

    def _drain(self) -> None:
        try:
            frames = self.stream.decode(None)
        except (av.error.FFmpegError, OSError):
            return
        for frame in frames:
            if self.i >= self.n:
                return
            self._on_frame(frame)

    def _check_complete(self) -> None:
        """At end of file: does the last frame end where the header says the video ends?"""
        if self.info.duration <= 0 or self.prev_pts is None:
            return
        length = self.prev.duration if self.prev.duration else self.frame_ticks
        end = self._seconds(self.prev_pts + length)
        if end < self.info.duration - 1.5 * self.frame_ticks * float(self.tb):
            self._damage(
                f"the file ends at {end:.3f} s but its header says {self.info.duration:.3f} s "
                "(truncated?); later times get the last frame"
            )

    # ---- frames -------------------------------------------------------------------------
    def _on_frame(self, frame: Any) -> float | None:
        self.frames_decoded += 1
        pts = frame.pts
        if pts is None:
            pts = frame.dts
        if pts is None:  # no timing at all: assume constant rate after the previous frame
            pts = (self.prev_pts + self.frame_ticks) if self.prev_pts is not None else float(self.start_pts)
        pts = float(pts)
        if frame.is_corrupt:
            self._damage(f"corrupt frame at {self._seconds(pts):.3f} s")
        if self.prev_pts is not None and pts <= self.prev_pts:
            # repeated or backwards timestamps (some AVI/packed-B-frame muxers): keep the first
            if not self._warned_order:
                self.warnings.append(f"frame times repeat or go backwards at {self._seconds(pts):.3f} s; "
                                     "such frames are skipped")
                self._warned_order = True
            return None
        if frame.key_frame:
            if self.last_key_pts is not None and not self.after_seek:
                self.max_gop_ticks = max(self.max_gop_ticks, pts - self.last_key_pts)
            self.last_key_pts = pts
        if self.prev is None and self.after_seek and pts > self.targets[self.i] + self.tol:
            # Landed after the wanted time (the index was approximate): go back further.
            if self.reseeks < 2:
                self.reseeks += 1
                self.hold_seeks_until = self.i + 1
                back = max(1.0, 2.0 * self.max_gop_ticks * float(self.tb)) * 2**self.reseeks
                return self.targets[self.i] - back / float(self.tb)
            self.warnings.append(f"could not seek before {self.wanted[self.i]:.3f} s; using a later frame")
        self.after_seek = False
        self.reseeks = 0
        targets = self.targets
        while self.i < self.n and targets[self.i] < pts - self.tol:
            self._assign(self.prev if self.prev is not None else frame)
        while self.i < self.n and targets[self.i] <= pts + self.tol:
            self._assign(frame)
        self.prev = frame
        self.prev_pts = pts
        return None

    def _assign(self, frame: Any) -> None:
        if frame is not self._slot_frame:
            self.slots.append(self._convert(frame))
            pts = frame.pts if frame.pts is not None else self.prev_pts
            self.slot_pts.append(float(pts) if pts is not None else float(self.start_pts))
            self._slot_frame = frame
        self.target_slot[self.i] = len(self.slots) - 1
        self.i += 1

    def _convert(self, frame: Any) -> np.ndarray:
        if self.rotation is None:
            self.rotation = clockwise_rotation(frame.rotation)
            if self.rotation:
                self.info = build_info(self.path, self.container, self.stream, self.rotation)
        if self.decode_hw is None:
            # The first frame's own size, not the header's: a damaged header may say 0x0 or
            # anything else. Later frames of another size are scaled to this one.
            turned = self.rotation in (90, 270)
            fh, fw = int(frame.height), int(frame.width)
            reason = self.limits.check(dataclasses.replace(self.info, width=fw, height=fh))
            if reason is not None:
                raise VideoTooLargeError(self.path, reason)
            rh, rw = output_size(*((fw, fh) if turned else (fh, fw)), self.size)
            self.decode_hw = (rw, rh) if turned else (rh, rw)
        h, w = self.decode_hw
        if self._reformatter is None:
            # One reformatter per reader: ``frame.to_ndarray(format=...)`` builds a new swscale
            # context for every frame, which cost 1-7 ms a frame at 64x64 (measured).
            from av.video.reformatter import VideoReformatter

            self._reformatter = VideoReformatter()
        arr = self._reformatter.reformat(frame, width=w, height=h, format="rgb24").to_ndarray()
        if self.rotation:
            # clockwise display rotation; np.rot90 with k > 0 turns counter-clockwise
            arr = np.ascontiguousarray(np.rot90(arr, k=-(self.rotation // 90)))
        return arr

    # ---- seeking ------------------------------------------------------------------------
    def _load_index(self) -> None:
        """Matroska reads its keyframe index (cues) on the first seek: seek to the start once."""
        if len(self.index) > 1 or "matroska" not in self.container.format.name:
            return
        if self.targets[-1] - float(self.start_pts) < SEEK_MIN_GAP_FRAMES * self.frame_ticks:
            return
        try:
            self.container.seek(int(self.start_pts), stream=self.stream, backward=True, any_frame=False)
        except (av.error.FFmpegError, OSError):
            return
        self.index = self.stream.index_entries
        self.index_first = self.index[0].timestamp if len(self.index) else None
        if self.index_first is not None:
            self.index_delay = max(0.0, float(self.start_pts) - self.index_first)

    def _should_seek(self, pos: float) -> bool:
        if not self.can_seek or self.i >= self.n or self.i < self.hold_seeks_until:
            return False
        if self.i == self.seeked_for:  # one seek per wanted time, or a bad index could loop
            return False
        target = self.targets[self.i]
        min_gap = SEEK_MIN_GAP_FRAMES * self.frame_ticks
        if len(self.index) <= 1:
            # No keyframe index (MPEG-TS, WebM without cues): seeking there is a byte-level
            # bisection that can land anywhere, so read sequentially.
            return False
        # MP4 indexes decode times; a keyframe is shown `delay` ticks later (B-frame delay)
        k = self.index.search_timestamp(int(math.floor(target - self.index_delay)), backward=True, any_frame=False)
        if k < 0:
            return False
        return self.index[k].timestamp > pos + min_gap

    def _seek(self, target: float) -> None:
        try:
            self.container.seek(int(math.floor(target)), stream=self.stream, backward=True, any_frame=False)
        except (av.error.FFmpegError, OSError) as exc:
            self.can_seek = False
            self.warnings.append(f"seeking failed ({_reason(exc)}); reading sequentially")
            return
        self.seeks += 1
        self.seeked_for = self.i
        if self.prev_pts is not None:
            self.resume_pts = self.prev_pts
        self.prev = None
        self.prev_pts = None
        self._slot_frame = None
        self.after_seek = True

    # ---- bookkeeping --------------------------------------------------------------------
    def _check_deadline(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise DecodeTimeoutError(self.path)

    def _damage(self, message: str) -> None:
        self.damaged = True
        self._n_errors += 1
        if self._n_errors <= MAX_WARNINGS:
            self.warnings.append(message)
        elif self._n_errors == MAX_WARNINGS + 1:
            self.warnings.append("more decoder errors not shown")

    def _seconds(self, pts: float) -> float:
        return float((Fraction(pts) - self.start_pts) * self.tb)

    def _packet_time(self, packet: Any) -> str:
        ts = packet.pts if packet.pts is not None else packet.dts
        return f"{self._seconds(ts):.3f} s" if ts is not None else "an unknown time"

    def _result(self) -> ClipsResult:
        slot_of = {t: self.target_slot[k] for k, t in enumerate(self.wanted)}
        if self.slots:
            frame_shape = self.slots[0].shape
        else:
            h, w = output_size(max(self.info.height, 1), max(self.info.width, 1), self.size)
            frame_shape = (h, w, 3)
        slot_times = np.array([self._seconds(p) for p in self.slot_pts], dtype=np.float64)
        out, times = [], []
        for clip in self.clips:
            idx = [slot_of[max(0.0, float(t))] for t in clip]
            arr = np.empty((len(idx), *frame_shape), dtype=np.uint8)
            for j, s in enumerate(idx):
                arr[j] = self.slots[s]
            out.append(arr)
            times.append(slot_times[idx] if idx else np.empty(0, dtype=np.float64))
        return ClipsResult(
            clips=out,
            frame_times=times,
            info=self.info,
            damaged=self.damaged,
            warnings=self.warnings,
            frames_decoded=self.frames_decoded,
            frames_converted=len(self.slots),
            seeks=self.seeks,
        )


def read_clips_task(request: dict[str, Any]) -> ClipsResult:
    """Picklable entry point for :func:`falv.video.pool.decode_in_workers`.

    ``request`` is plain data: ``{"path": str, "clips": [[t, ...], ...],
    "size": None | int | [h, w], "timeout": float | None, "threads": int}``.
    """
    size = request.get("size")
    if isinstance(size, list):
        size = (int(size[0]), int(size[1]))
    return read_clips(
        request["path"], request["clips"], size, timeout=request.get("timeout"), threads=int(request.get("threads", 0)),
        origin=request.get("origin"),
    )


__all__ = ["ClipsResult", "read_clips", "read_clips_task", "read_frames", "output_size", "Size"]

"""Read a live source frame by frame, as the frames arrive: :class:`LiveReader`.

Sources (``source`` is a string):

- a path: a regular file is *followed* like ``tail -f`` (FFmpeg's ``file`` protocol
  with ``follow=1``) until no new data has arrived for ``timeout`` seconds, so a
  file still being written (a growing MPEG-TS recording) is read as it grows; a
  named pipe (FIFO) or any other non-regular file ends when its writer closes it;
- ``udp://``, ``rtp://``, ``rtsp://``, ``rtmp://``, ``srt://``, ``tcp://``, ``http://``
  and ``https://`` URLs: network sources, reopened with exponential backoff when
  they drop (``reconnect=True``);
- ``/dev/video*``: a camera, read with FFmpeg's ``v4l2`` input.

Frames come out as :class:`LiveFrame`: uint8 RGB ``(H, W, 3)`` scaled by swscale
to the requested ``size`` while being converted (one reformatter for the whole
stream, as :mod:`falv.video.decode` does; a later frame of another size, e.g.
after a reconnect, is scaled to the first frame's output size), with the time in
*stream seconds*: seconds from the first frame of the stream. A reconnect or a
timestamp jump (backwards, or more than :data:`MAX_JUMP_S` forwards) continues the
clock one frame after the last frame instead of following the source's clock, so
stream times only increase.

Damage is tolerated as :func:`falv.video.read_clips` tolerates it: a packet the
decoder rejects, a corrupt frame, is reported as a :class:`LiveNotice` and
reading goes on. Opening is done with low-latency options (``fflags=nobuffer``,
a small ``probesize`` and ``analyzeduration``, no frame threads in the decoder).
"""

from __future__ import annotations

import math
import os
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import av.error
import numpy as np

from falv.errors import FalvError
from falv.video._open import clockwise_rotation, pick_video_stream, stream_rotation
from falv.video.decode import Size, output_size
from falv.video.info import DEFAULT_LIMITS

#: URL schemes read as network sources (reconnected when they drop).
NETWORK_SCHEMES = ("udp", "rtp", "rtsp", "rtsps", "rtmp", "rtmps", "srt", "tcp", "http", "https")
#: A frame time more than this many seconds after the previous one is a clock jump, not a gap.
MAX_JUMP_S = 60.0
#: Frame period assumed when the source states no rate and no two frames were seen yet.
DEFAULT_PERIOD_S = 0.04
#: At most this many decoder warnings per connection (then one "more not shown").
MAX_WARNINGS = 20

#: Options for opening every source: no demuxer buffering, a short probe.
LOW_LATENCY_OPTIONS = {"probesize": "65536", "analyzeduration": "100000"}


class StreamSourceError(FalvError):
    """A live source that cannot be read (not found, refused, not a video, gone for good)."""

    def __init__(self, source: str, reason: str) -> None:
        self.source, self.reason = source, " ".join(str(reason).split())
        super().__init__(f"{source}: {self.reason}")


@dataclass
class LiveFrame:
    """One decoded frame: ``image`` (H, W, 3) uint8 RGB shown from ``time`` stream seconds on;
    ``wall`` is the wall-clock time (``time.time()``) at which it left the decoder."""

    time: float
    image: np.ndarray
    wall: float


@dataclass
class LiveNotice:
    """Something a consumer should hear about while the stream goes on: ``code`` is one of
    ``decode_error``, ``corrupt_frame``, ``time_jump``, ``source_dropped``, ``reconnected``."""

    code: str
    message: str


def source_kind(source: str) -> str:
    """``"network"``, ``"device"``, ``"file"`` (regular: followed), ``"pipe"`` (FIFO and
    other non-regular files), or raises :class:`StreamSourceError` for what cannot be a source."""
    if not isinstance(source, str) or not source.strip():
        raise StreamSourceError(str(source), "the source must be a path or a URL")
    scheme = source.split("://", 1)[0].lower() if "://" in source else ""
    if scheme:
        if scheme in NETWORK_SCHEMES:
            return "network"
        if scheme != "file":
            raise StreamSourceError(source, f"unsupported URL scheme {scheme!r} (supported: "
                                            f"{', '.join(NETWORK_SCHEMES)}, or a path)")
        source = source.split("://", 1)[1]
    if source.startswith("/dev/video"):
        if not os.path.exists(source):
            raise StreamSourceError(source, "no such camera device")
        return "device"
    try:
        st = os.stat(source)
    except FileNotFoundError:
        raise StreamSourceError(source, "no such file, pipe or device") from None
    except OSError as exc:
        raise StreamSourceError(source, f"cannot access it ({exc.strerror or exc})") from None
    if stat.S_ISDIR(st.st_mode):
        raise StreamSourceError(source, "is a directory, not a stream")
    return "file" if stat.S_ISREG(st.st_mode) else "pipe"


class LiveReader:
    """Frames of a live ``source`` as they arrive; iterate over :meth:`frames`.

    ``size``: ``None`` (native), an int (shorter side, as :func:`falv.video.read_clips`)
    or ``(height, width)``. ``timeout``: seconds to wait for the source to open and
    for each packet (a followed file ends after that long without new data).
    ``reconnect`` (network sources): on a drop, a read timeout or a failed open,
    try again after ``backoff`` seconds, doubling up to ``max_backoff``, at most
    ``retries`` times in a row (a frame received resets the count); then
    :class:`StreamSourceError`. ``stop``: a :class:`threading.Event` that ends the
    iteration at the next packet. ``options``: extra FFmpeg options for opening.
    """

    def __init__(self, source: str, *, size: Size = None, timeout: float = 10.0, reconnect: bool = True,
                 retries: int = 8, backoff: float = 0.5, max_backoff: float = 8.0,
                 stop: threading.Event | None = None, options: dict[str, str] | None = None,
                 low_latency: bool = True) -> None:
        self.source = source
        self.kind = source_kind(source)
        if not (timeout > 0 and math.isfinite(timeout)):
            raise StreamSourceError(source, f"timeout must be a positive number of seconds, got {timeout!r}")
        if retries < 0 or not backoff > 0 or max_backoff < backoff:
            raise StreamSourceError(source, "retries must be >= 0 and 0 < backoff <= max_backoff")
        self.size = size
        self.timeout = float(timeout)
        self.reconnect = reconnect and self.kind == "network"
        self.retries, self.backoff, self.max_backoff = int(retries), float(backoff), float(max_backoff)
        self.stop = stop or threading.Event()
        self.extra_options = dict(options or {})
        self.low_latency = low_latency
        #: frames per second the source states (``None`` until opened, or when it states none)
        self.fps: float | None = None
        self.opened = threading.Event()  # set once the source has been opened the first time
        self.connections = 0
        self.frames_decoded = 0
        self._out_hw: tuple[int, int] | None = None
        self._reformatter: Any = None
        self._last_time: float | None = None
        self._period = DEFAULT_PERIOD_S

    # -- opening ---------------------------------------------------------------------------
    def _open_args(self) -> tuple[str, dict[str, Any]]:
        path = self.source.split("://", 1)[1] if self.source.lower().startswith("file://") else self.source
        options = dict(LOW_LATENCY_OPTIONS) if self.low_latency else {}
        kwargs: dict[str, Any] = {"timeout": (self.timeout, self.timeout)}
        if self.kind == "file":
            # tail -f: at the end, wait for more data; give up after `timeout` s without any
            options.update({"follow": "1", "rw_timeout": str(int(self.timeout * 1e6))})
            kwargs["timeout"] = (self.timeout, None)  # rw_timeout ends it; the callback must not
        elif self.kind == "device":
            kwargs["format"] = "v4l2"
        elif self.source.lower().startswith("udp://"):
            options.update({"overrun_nonfatal": "1", "fifo_size": "1000000"})
        options.update(self.extra_options)
        kwargs["options"] = options
        return path, kwargs

    def _open(self) -> tuple[Any, Any]:
        path, kwargs = self._open_args()
        try:
            container = av.open(path, mode="r", **kwargs)
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise StreamSourceError(self.source, f"cannot be opened ({self._why(exc)})") from None
        stream = pick_video_stream(container)
        if stream is None:
            container.close()
            raise StreamSourceError(self.source, "has no video stream")
        ctx = stream.codec_context
        ctx.thread_type = "SLICE"  # frame threads hold frames back (one per thread): latency
        ctx.thread_count = 1
        try:
            ctx.flags |= av.codec.context.Flags.low_delay
        except Exception:  # pragma: no cover - older PyAV
            pass
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        if rate and 0 < float(rate) <= 1000 and self.fps is None:
            self.fps = float(rate)
            self._period = 1.0 / self.fps
        self.connections += 1
        self.opened.set()
        return container, stream

    def frames(self) -> Iterator[LiveFrame | LiveNotice]:
        """Frames (and notices) in arrival order, until the source ends, :attr:`stop` is set,
        or a network source stays away for ``retries`` attempts in a row (then
        :class:`StreamSourceError`; also for a source that cannot be opened at all)."""
        attempt = 0  # failed attempts in a row
        while not self.stop.is_set():
            try:
                container, stream = self._open()
            except StreamSourceError as exc:
                if not self.reconnect or attempt >= self.retries:
                    if attempt:
                        raise StreamSourceError(self.source, f"{exc.reason}; gave up after {attempt + 1} "
                                                             "attempts in a row") from None
                    raise
                delay = min(self.backoff * 2**attempt, self.max_backoff)
                attempt += 1
                yield LiveNotice("source_dropped", f"{self.source}: {exc.reason}; retrying in {delay:g} s "
                                                   f"(attempt {attempt} of {self.retries})")
                if self.stop.wait(delay):
                    return
                continue
            if self.connections > 1:
                yield LiveNotice("reconnected", f"{self.source}: reconnected (connection {self.connections})")
            rebase = self._last_time is not None  # the new connection's clock continues the stream's
            before = self.frames_decoded
            try:
                yield from self._read(container, stream, rebase)
                ended_by = "the source ended"
            except (av.error.FFmpegError, OSError) as exc:
                ended_by = f"reading failed ({self._why(exc)})"
            finally:
                try:
                    container.close()
                except Exception:
                    pass
            if self.frames_decoded > before:
                attempt = 0
            if not self.reconnect or self.stop.is_set():
                return
            delay = min(self.backoff * 2**attempt, self.max_backoff)
            attempt += 1
            if attempt > self.retries:
                raise StreamSourceError(self.source, f"{ended_by}; gave up after {self.retries} reconnects")
            yield LiveNotice("source_dropped", f"{self.source}: {ended_by}; reconnecting in {delay:g} s "
                                               f"(attempt {attempt} of {self.retries})")
            if self.stop.wait(delay):
                return

    def _read(self, container: Any, stream: Any, rebase: bool) -> Iterator[LiveFrame | LiveNotice]:
        tb = Fraction(stream.time_base or Fraction(1, 90000))
        origin: Fraction | None = None  # source clock (ticks) of this connection's first frame
        offset = 0.0  # stream seconds at `origin`
        errors = 0

        def warn(code: str, message: str) -> LiveNotice | None:
            nonlocal errors
            errors += 1
            if errors <= MAX_WARNINGS:
                return LiveNotice(code, message)
            if errors == MAX_WARNINGS + 1:
                return LiveNotice(code, "more decoder warnings on this connection not shown")
            return None

        for packet in container.demux(stream):
            if self.stop.is_set():
                return
            try:
                frames = stream.decode(packet)
            except av.error.EOFError:
                continue
            except (av.error.FFmpegError, OSError) as exc:
                notice = warn("decode_error", f"{self.source}: decoder error ({_reason(exc)}); skipped")
                if notice:
                    yield notice
                continue
            for frame in frames:
                if frame.is_corrupt:
                    notice = warn("corrupt_frame", f"{self.source}: corrupt frame")
                    if notice:
                        yield notice
                pts = frame.pts if frame.pts is not None else frame.dts
                if pts is not None and origin is None:
                    origin = Fraction(pts)
                    offset = self._last_time + self._period if rebase and self._last_time is not None else 0.0
                if pts is None:
                    t = (self._last_time + self._period) if self._last_time is not None else 0.0
                else:
                    t = offset + float((Fraction(pts) - origin) * tb)
                last = self._last_time
                if last is not None and (t <= last or t - last > MAX_JUMP_S):
                    if t <= last and pts is not None and t > last - 0.5 * self._period:
                        continue  # a repeated timestamp: keep the first frame
                    jump = t - last
                    t = last + self._period
                    origin, offset = Fraction(pts) if pts is not None else origin, t
                    yield LiveNotice("time_jump", f"{self.source}: the source's clock jumped by {jump:+.3f} s; "
                                                  f"stream time continues at {t:.3f} s")
                elif last is not None and self.fps is None:
                    self._period = min(max(t - last, 1e-3), 1.0)
                self._last_time = t
                self.frames_decoded += 1
                yield LiveFrame(time=t, image=self._convert(frame, stream), wall=time.time())

    def _why(self, exc: BaseException) -> str:
        if isinstance(exc, av.error.ExitError):  # the timeout callback interrupted FFmpeg
            return f"no data within {self.timeout:g} s"
        return _reason(exc)

    def _convert(self, frame: Any, stream: Any) -> np.ndarray:
        if self._out_hw is None:
            rotation = stream_rotation(stream)
            if rotation is None:
                rotation = clockwise_rotation(frame.rotation)
            self._rotation = rotation
            fh, fw = int(frame.height), int(frame.width)
            if fh * fw > DEFAULT_LIMITS.max_pixels:
                raise StreamSourceError(self.source, f"frames of {fw}x{fh} are larger than "
                                                     f"{DEFAULT_LIMITS.max_pixels} pixels")
            turned = rotation in (90, 270)
            rh, rw = output_size(*((fw, fh) if turned else (fh, fw)), self.size)
            self._out_hw = (rw, rh) if turned else (rh, rw)
            from av.video.reformatter import VideoReformatter

            self._reformatter = VideoReformatter()
        h, w = self._out_hw
        arr = self._reformatter.reformat(frame, width=w, height=h, format="rgb24").to_ndarray()
        if self._rotation:
            arr = np.ascontiguousarray(np.rot90(arr, k=-(self._rotation // 90)))
        return arr


def _reason(exc: BaseException) -> str:
    if isinstance(exc, av.error.FFmpegError) and exc.strerror:
        return str(exc.strerror)
    return str(exc) or type(exc).__name__


__all__ = ["LiveFrame", "LiveNotice", "LiveReader", "StreamSourceError", "source_kind", "NETWORK_SCHEMES"]

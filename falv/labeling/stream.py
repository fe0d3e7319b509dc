"""Label a live source as its frames arrive: :func:`label_stream`.

The stream front-end of the labeling engine. It re-implements no stage:

- the model is prepared by the engine (:class:`falv.labeling.engine.Engine`, i.e.
  :func:`falv.inference.prepare_for_inference`), which also gives the model's
  frames, size and normalisation (:class:`~falv.labeling.stages.ModelSpec`);
- frames are decoded by :class:`falv.video.live.LiveReader` (PyAV, scaled to the
  model's short side inside swscale);
- the frames of a window are the ones :func:`falv.video.sampling.plan_windows`
  would choose (:func:`~falv.video.sampling.window_timestamps`: TSN centres
  snapped to the middle of frames), and the frame for a time is the one shown at
  that time (the last frame with ``time <= t``), as :func:`falv.video.read_clips` does;
- the model input is :func:`falv.labeling.engine.clip_tensor`;
- segments come from :class:`falv.labeling.segments.SegmentCloser`, the
  incremental form of :func:`~falv.labeling.segments.windows_to_segments`.

Windows are ``[k S, k S + W]`` in stream seconds (seconds from the stream's first
frame). Window ``k`` is run as soon as the frame shown at its last timestamp has
arrived, one window per model call (latency first, no batching). When the source
ends, a last window ``[d - W, d]`` covers what the sliding windows left over,
as :func:`plan_windows` does for a file of duration ``d``.
"""

from __future__ import annotations

import bisect
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from fractions import Fraction
from typing import Any

import numpy as np
import torch

from falv.errors import ConfigError, FalvError, RunError
from falv.inference import scores_from_logits
from falv.labeling.engine import Engine, clip_tensor, resolve_model
from falv.labeling.segments import SegmentCloser
from falv.labeling.stages import LabelOptions
from falv.video.live import LiveFrame, LiveNotice, LiveReader, StreamSourceError
from falv.video.sampling import EPS, window_timestamps

#: Windows whose last frame arrived more than this many seconds ago when their turn comes
#: are skipped (the model cannot keep up with the source): latency stays bounded.
DEFAULT_MAX_LAG_S = 10.0
#: How often (seconds) the generator wakes up to check ``stop`` while waiting for frames.
POLL_S = 0.05


def label_stream(
    source: str,
    model: Any,
    *,
    window: float | None = None,
    stride: float | None = None,
    options: LabelOptions | None = None,
    timeout: float = 10.0,
    reconnect: bool = True,
    retries: int = 8,
    backoff: float = 0.5,
    max_backoff: float = 8.0,
    max_lag: float | None = DEFAULT_MAX_LAG_S,
    stop: threading.Event | None = None,
    processor: Any = None,
    on_window: Callable[[dict[str, Any], np.ndarray], None] | None = None,
    reader_options: dict[str, str] | None = None,
    timing: bool = False,
    copy_model: bool = True,
    **option_overrides: Any,
) -> Iterator[dict[str, Any]]:
    """Label the live ``source`` in sliding windows; yields one plain dict (JSON-ready) per event.

    Arguments: ``source`` a path (FIFO, growing file), ``udp://``, ``rtsp://``,
    ``http(s)://``... URL or ``/dev/video*`` (see :mod:`falv.video.live`);
    ``model`` a loaded :class:`falv.FALForVideoClassification` (copied before it
    is prepared, unless ``copy_model=False``) or anything ``from_pretrained`` accepts; ``window``/``stride``
    seconds (``stride <= window``, default ``window``; ``window`` defaults to the model's clip
    duration, :func:`falv.labeling.stages.default_window`); ``options`` a
    :class:`LabelOptions` for ``top_k``, ``crops``, ``smoothing``,
    ``min_duration``, ``background_threshold``, ``precision``, ``device``
    (or pass them as keywords). ``timeout``: seconds to wait for the source to
    open and for data (a followed file ends after that long without new data);
    ``reconnect``/``retries``/``backoff``/``max_backoff``: reopening a network
    source that drops. ``max_lag``: skip a window whose last frame arrived more than
    this many seconds before its turn came (the model cannot keep up; ``None``: never
    skip). ``stop``: set it (from
    any thread: a signal handler, a websocket that closed) to end the stream
    cleanly. ``on_window(event, frames)``: called with each window's event and its
    uint8 ``(T, H, W, 3)`` frames before the model runs (a debug/test hook).
    ``timing``: window events also carry ``"model_s"``, the seconds the model input
    and the model took for that window (``clip_tensor`` + ``predict``).
    ``reader_options``: extra FFmpeg options for opening the source. ``copy_model=False``
    lets inference cast and repack a model passed as a module in place.

    Events, in order of time (each a dict with ``"type"``):

    - ``{"type": "window", "index": k, "start": s, "end": e, "labels": [{"label", "score"}, ...]}``:
      the ``top_k`` classes of the window, best first, as soon as the window is scored;
    - ``{"type": "segment", "label", "start", "end", "score"}``: a segment that has
      closed (its label changed, or the stream ended); never revised;
    - ``{"type": "warning", "code", "message"}``: a window that was skipped
      (``window_skipped``, ``model_behind``), decoding damage (``decode_error``,
      ``corrupt_frame``), ``time_jump``, ``source_dropped``, ``reconnected``;
    - ``{"type": "end", "reason", "windows", "skipped", "duration"}``, last:
      ``reason`` is ``"end_of_stream"``, ``"stopped"`` (``stop`` was set) or
      ``"source_lost"`` (a network source did not come back; ``"message"`` says why).
      Open segments are flushed before it in every case.

    Errors: a bad option raises :class:`ConfigError`, a source that cannot be opened
    (before any frame) :class:`StreamSourceError`, both before the first event; a
    model that fails on well-formed input :class:`RunError`. Closing the generator
    early (``close()``) stops the reader without flushing. The generator runs the
    model on the calling thread; the source is read on a background thread, so
    frames keep arriving while the model runs.
    """
    import dataclasses

    from falv.labeling.stages import default_window

    if options is None:
        options = LabelOptions(**option_overrides)
    else:
        options = dataclasses.replace(options, **option_overrides)
    if window is not None and not window > 0:
        raise ConfigError(f"window must be > 0 seconds, got {window}")
    if max_lag is not None and not max_lag > 0:
        raise ConfigError(f"max_lag must be > 0 seconds or None, got {max_lag!r}")
    if window is not None:
        options = dataclasses.replace(options, window=window, stride=stride)
    model, model_id, processor = resolve_model(model, copy_model=copy_model, processor=processor)
    if window is None:  # the model's clip duration
        config = model.config
        window = default_window(config.num_frames, options.clip_seconds if options.clip_seconds is not None
                                else getattr(config, "clip_seconds", None))
        options = dataclasses.replace(options, window=window, stride=stride)
    engine = Engine(model, options, None, model_id, processor=processor)  # checks precision and device
    stop = stop or threading.Event()
    reader = LiveReader(source, size=engine.spec.short_side, timeout=timeout, reconnect=reconnect,
                        retries=retries, backoff=backoff, max_backoff=max_backoff, stop=stop,
                        options=reader_options)
    return _StreamLabeler(engine, reader, options, stop, max_lag, on_window, timing).run()


class _Feed:
    """The reader on a background thread, handing items over through a queue.

    The reader never waits for the model (a source must be read as it comes). While the
    model runs, frames wait here; with ``max_lag`` a waiting frame is dropped once every
    window that could use it will be skipped by the lag check (a frame at least
    ``window`` + two frame periods later arrived more than ``max_lag`` seconds ago), so
    memory stays bounded even when the model is far slower than the source."""

    _END = object()

    def __init__(self, reader: LiveReader, max_lag: float | None = None, window: float = 0.0) -> None:
        self.reader = reader
        self.max_lag = max_lag
        self.window = window
        self.items: deque[Any] = deque()
        self.dropped = 0
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._run, name="falv-live-reader", daemon=True)
        self.thread.start()

    def _put(self, item: Any) -> None:
        with self.cond:
            self.items.append(item)
            if isinstance(item, LiveFrame) and self.max_lag is not None:
                self._drop_useless(time.time())
            self.cond.notify()

    def _drop_useless(self, now: float) -> None:
        period = 1.0 / self.reader.fps if self.reader.fps else 0.1
        while True:
            frames = [(i, x) for i, x in enumerate(self.items) if isinstance(x, LiveFrame)]
            if len(frames) < 2:
                return
            first_i, first = frames[0]
            later = next((x for _, x in frames if x.time >= first.time + self.window + 2 * period), None)
            if later is None or now - later.wall <= self.max_lag:
                return
            del self.items[first_i]
            self.dropped += 1

    def _run(self) -> None:
        try:
            for item in self.reader.frames():
                self._put(item)
        except BaseException as exc:  # handed to the consumer
            self._put(exc)
        self._put(self._END)

    def get(self, timeout: float | None = None) -> Any:
        """The next item; ``queue.Empty`` when none arrives within ``timeout`` (0: do not wait)."""
        with self.cond:
            if not self.items and timeout:
                self.cond.wait(timeout)
            if not self.items:
                raise queue.Empty
            return self.items.popleft()


class _StreamLabeler:
    def __init__(self, engine: Engine, reader: LiveReader, options: LabelOptions, stop: threading.Event,
                 max_lag: float | None, on_window: Callable[[dict[str, Any], np.ndarray], None] | None,
                 timing: bool = False) -> None:
        self.engine = engine
        self.timing = timing
        self.reader = reader
        self.options = options
        self.stop = stop
        self.max_lag = max_lag
        self.on_window = on_window
        self.window = Fraction(options.window)
        self.stride = Fraction(options.stride if options.stride is not None else options.window)
        # a hierarchical model's --level / --max-depth: its leaves' scores summed into those classes
        self.labels, self.view = engine.label_view(options)
        self.background = engine.background if engine.background in self.labels else None
        self.closer = SegmentCloser(self.labels, smoothing=options.smoothing, min_duration=options.min_duration,
                                    background_threshold=options.background_threshold,
                                    multilabel=engine.multilabel, background=self.background,
                                    refine_edges=options.refine_edges)
        self.frames: deque[LiveFrame] = deque()  # the ring buffer: only frames a window may still need
        self.times: deque[float] = deque()
        self.next_k = 0  # next sliding window to run
        self.last_end: float | None = None  # end of the last window run (or skipped)
        self.windows_run = 0
        self.skipped = 0
        self.tol = 1e-6

    # -- windows -----------------------------------------------------------------------------
    def _bounds(self, k: int) -> tuple[Fraction, Fraction]:
        start = self.stride * k
        return start, start + self.window

    def _timestamps(self, start: Fraction | float, end: Fraction | float) -> list[float]:
        return window_timestamps(start, end, self.reader.fps, self.engine.spec.num_frames)

    def _ready(self, stamps: list[float]) -> bool:
        """Has the frame shown at the window's last timestamp arrived?"""
        if not self.times:
            return False
        newest, last = self.times[-1], stamps[-1]
        if newest > last + self.tol:
            return True
        # a known constant rate: the frame whose period covers `last` is the one shown then
        fps = self.reader.fps
        return fps is not None and newest >= last - 0.75 / fps

    def _frames_at(self, stamps: list[float]) -> np.ndarray:
        """The frame shown at each time: the last one with ``time <= t`` (the first before it)."""
        times = list(self.times)
        out = []
        for t in stamps:
            i = max(bisect.bisect_right(times, t + self.tol) - 1, 0)
            out.append(self.frames[i].image)
        return np.stack(out)

    def _prune(self) -> None:
        """Drop frames no window can need any more: before the next window's first timestamp
        and before ``newest - W`` (the last window at the end of the stream looks back that far)."""
        if not self.times:
            return
        keep_from = min(float(self._bounds(self.next_k)[0]), self.times[-1] - float(self.window))
        while len(self.times) > 1 and self.times[1] <= keep_from + self.tol:
            self.frames.popleft()
            self.times.popleft()

    def _run_window(self, index: int, start: float, end: float, stamps: list[float]) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        self.last_end = end
        if self.max_lag is not None and self.times:
            times = list(self.times)
            last = self.frames[max(bisect.bisect_right(times, stamps[-1] + self.tol) - 1, 0)]
            waited = time.time() - last.wall  # since the window's last frame arrived
            if waited > self.max_lag:
                self.skipped += 1
                return [_warning("model_behind", f"window {index} ({start:.3f}-{end:.3f} s) skipped: its last "
                                                 f"frame arrived {waited:.1f} s ago (more than max_lag "
                                                 f"{self.max_lag:g} s); the model cannot keep up with the source")]
        event: dict[str, Any] = {"type": "window", "index": index, "start": start, "end": end}
        try:
            frames = self._frames_at(stamps)
            if self.on_window is not None:
                self.on_window(dict(event), frames)
            began = time.perf_counter()
            pixels = clip_tensor(frames, self.engine.spec, self.options.crops)
        except FalvError:
            raise
        except Exception as exc:  # this window cannot be made; the stream goes on
            self.skipped += 1
            return [_warning("window_skipped", f"window {index} ({start:.3f}-{end:.3f} s) skipped: its model "
                                               f"input could not be made ({type(exc).__name__}: {exc})")]
        try:
            logits, _ = self.engine.runner.predict(pixels)
            probs = scores_from_logits(logits.float(), self.engine.multilabel,
                                       self.options.temperature if self.options.temperature is not None
                                       else self.engine.temperature)
            scores = probs.mean(0).cpu().numpy().astype(np.float64)  # average over crops
        except FalvError:
            raise
        except Exception as exc:  # the input was checked: the model itself is broken
            raise RunError(f"the model failed on a window of shape {tuple(pixels.shape)} "
                           f"({type(exc).__name__}: {exc})") from exc
        if not np.isfinite(scores).all():
            self.skipped += 1
            return [_warning("window_skipped", f"window {index} ({start:.3f}-{end:.3f} s) skipped: the model "
                                               "gave NaN or infinite scores")]
        if self.view is not None:
            scores = scores @ self.view
        labels = self.labels
        best = [i for i in np.argsort(-scores, kind="stable")
                if labels[i] != self.background][: self.options.top_k]
        event["labels"] = [{"label": labels[i], "score": float(scores[i])} for i in best]
        if self.timing:
            event["model_s"] = round(time.perf_counter() - began, 6)
        self.windows_run += 1
        events.append(event)
        events.extend(_segment(s) for s in self.closer.push(start, end, scores))
        return events

    def _due(self, feed: _Feed) -> Iterator[dict[str, Any]]:
        """Run every sliding window whose frames have all arrived, each yielded as soon as it is
        scored; what else has arrived is taken in before each window (it sees the newest frame)."""
        while True:
            self._drain(feed)
            while self.pending:
                yield self.pending.popleft()
            if self.stop.is_set() or not self.times:
                return
            start, end = self._bounds(self.next_k)
            stamps = self._timestamps(start, end)
            if not self._ready(stamps):
                return
            k = self.next_k
            self.next_k += 1
            yield from self._run_window(k, float(start), float(end), stamps)
            self._prune()

    def _at_end(self) -> Iterator[dict[str, Any]]:
        """The source ended at ``d`` (the last frame's end): the complete windows, then a last
        window ``[d - W, d]`` over what is left (as :func:`plan_windows` does for a file)."""
        if not self.times:
            return
        d = Fraction(self._duration())
        while True:
            start, end = self._bounds(self.next_k)
            if end > d + EPS:
                break
            k = self.next_k
            self.next_k += 1
            yield from self._run_window(k, float(start), float(end), self._timestamps(start, end))
            self._prune()
        if self.last_end is None or self.last_end < float(d - EPS):
            start = max(Fraction(0), d - self.window)
            k = self.next_k
            self.next_k += 1
            yield from self._run_window(k, float(start), float(d), self._timestamps(start, d))

    def _duration(self) -> float:
        """Stream seconds up to the end of the newest frame."""
        if not self.times:
            return 0.0
        return float(self.times[-1]) + (1.0 / self.reader.fps if self.reader.fps else self.reader._period)

    # -- the loop ----------------------------------------------------------------------------
    def _take(self, item: Any) -> None:
        """One item from the reader: a frame into the ring buffer, a notice into the events,
        the end of the source or its error into the state."""
        if item is _Feed._END:
            self.ended = True
        elif isinstance(item, StreamSourceError):
            if not self.started:
                raise item  # nothing to flush: the source never gave a frame
            self.reason, self.message, self.ended = "source_lost", str(item), True
        elif isinstance(item, BaseException):
            raise RunError(f"reading {self.reader.source} failed ({type(item).__name__}: {item})") from item
        elif isinstance(item, LiveNotice):
            self.pending.append(_warning(item.code, item.message))
        else:
            self.started = True
            self.frames.append(item)
            self.times.append(item.time)

    def _drain(self, feed: _Feed) -> None:
        if feed.dropped > self.dropped:
            self.pending.append(_warning("model_behind", f"{feed.dropped - self.dropped} frame(s) dropped "
                                                         "while the model was busy (more than max_lag behind)"))
            self.dropped = feed.dropped
        while not self.ended:
            try:
                item = feed.get(0)
            except queue.Empty:
                return
            self._take(item)

    def run(self) -> Iterator[dict[str, Any]]:
        feed = _Feed(self.reader, self.max_lag, float(self.window))
        self.reason, self.message = "end_of_stream", None
        self.started = self.ended = False
        self.pending: deque[dict[str, Any]] = deque()
        self.dropped = 0
        try:
            try:  # prepare the model while the source opens: the first result comes sooner
                _ = self.engine.runner
            except FalvError:
                raise
            except Exception as exc:
                raise RunError(f"the model could not be prepared ({type(exc).__name__}: {exc})") from exc
            while not self.ended:
                if self.stop.is_set():
                    self.reason = "stopped"
                    break
                try:
                    item = feed.get(POLL_S)
                except queue.Empty:
                    continue
                self._take(item)
                yield from self._due(feed)
                self._prune()
            while self.pending:
                yield self.pending.popleft()
            if self.reason == "end_of_stream" and not self.stop.is_set():
                yield from self._at_end()
            elif self.stop.is_set() and self.reason == "end_of_stream":
                self.reason = "stopped"
        finally:
            self.stop.set()  # the reader ends at its next packet (or read timeout)
        for segment in self.closer.flush():
            yield _segment(segment)
        end: dict[str, Any] = {"type": "end", "reason": self.reason, "windows": self.windows_run,
                               "skipped": self.skipped, "duration": self._duration()}
        if self.message:
            end["message"] = self.message
        yield end


def _segment(segment: Any) -> dict[str, Any]:
    return {"type": "segment", **segment.to_dict()}


def _warning(code: str, message: str) -> dict[str, Any]:
    return {"type": "warning", "code": code, "message": message}


__all__ = ["label_stream", "DEFAULT_MAX_LAG_S"]

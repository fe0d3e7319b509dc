"""A torch ``Dataset`` of video clips for training and evaluation.

``entry (path, labels) -> sample timestamps (seeded) -> read frames -> augment``:
each item is ``{"pixel_values": (T, C, H, W) float32, "labels": ..., "index": int}``.

Determinism: every random choice of item ``i`` (timestamp jitter, crop, flip) is
drawn from generators seeded with ``(seed, epoch, i)``, so an epoch gives the same
tensors whatever the number of DataLoader workers and whichever worker loads it.

Bad files: an item whose video cannot be decoded is logged (once per file and
process) and replaced by the next entry that decodes, in index order
(``on_error="substitute"``, the default; ``"index"`` then names the entry really
loaded). With ``on_error="skip"`` the item is ``None`` and :func:`collate` drops
it (batches may be smaller); ``"raise"`` re-raises. Run
``source.check(probe=True)`` first to list all unreadable files in one warning.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from falv.data.sources import DatasetError, DatasetSource, VideoEntry, load_source
from falv.config import FRAME_SELECTIONS, ClipSampling
from falv.errors import ConfigError, FalvError

logger = logging.getLogger(__name__)

CLIP_SAMPLINGS = ("uniform", "dense")
ON_ERROR = ("substitute", "skip", "raise")

Item = dict[str, Any]


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for item ``index`` of ``epoch``: independent of worker count and order."""
    state = np.random.SeedSequence([seed & 0xFFFFFFFFFFFFFFFF, epoch & 0xFFFFFFFF, index]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def segment_timestamps(
    start: float,
    end: float,
    num_frames: int,
    rng: np.random.Generator | None = None,
) -> list[float]:
    """TSN-style timestamps in ``[start, end)``: split into ``num_frames`` equal segments and
    take each centre, or (with ``rng``) a uniform random point in each segment.

    Temporal Segment Networks (Wang et al., 2016), sec. 3.2; the training
    jitter is the "random snippet per segment".
    """
    length = (end - start) / num_frames
    offsets = np.full(num_frames, 0.5) if rng is None else rng.random(num_frames)
    return [start + (k + float(u)) * length for k, u in enumerate(offsets)]


def dense_timestamps(
    start: float,
    end: float,
    num_frames: int,
    stride: float,
    rng: np.random.Generator | None = None,
) -> list[float]:
    """``num_frames`` timestamps ``stride`` seconds apart: a random window in ``[start, end)``
    with ``rng``, else the centred one (SlowFast-style ``T x tau`` clips). Times past
    ``end`` (segment shorter than the clip) are clamped to just before ``end``.
    """
    span = num_frames * stride
    slack = max(0.0, (end - start) - span)
    first = start + (slack * float(rng.random()) if rng is not None else slack / 2)
    last = max(start, math.nextafter(end, -math.inf))
    return [min(first + (k + 0.5) * stride, last) for k in range(num_frames)]


class VideoClipDataset(Dataset):
    """Clips of ``num_frames`` frames from the videos of a :class:`DatasetSource`.

    Args:
        source: a :class:`DatasetSource` or anything :func:`load_source` reads.
        num_frames: frames per clip (T).
        transform: ``clip (T, H, W, 3) uint8 -> (T, C, H, W) float`` callable, e.g.
            :func:`falv.data.transforms.train_transform`. If it takes a
            ``generator`` argument it gets the item's seeded ``torch.Generator``;
            otherwise it runs under a forked torch RNG seeded the same way.
            ``None`` returns ``(T, C, H, W)`` uint8.
        train: jittered timestamps (and random augmentation) when true; segment
            centres / centred clips otherwise.
        seed: base seed, combined with the epoch (:meth:`set_epoch`) and the index.
        size_hint: shortest side (or ``(H, W)``) asked of the decoder; defaults to
            ``transform.size_hint`` so frames are not decoded at full size.
        clip_sampling: ``"uniform"`` (TSN: one frame per equal segment of the whole
            video or ``[start, end]`` segment) or ``"dense"`` (consecutive frames
            ``frame_stride`` source frames apart).
        frame_stride: frames between samples in ``"dense"`` mode (at the video's fps).
        on_error: ``"substitute"``, ``"skip"`` or ``"raise"``, see the module docstring.
        check: ``None``, ``"exists"`` or ``"probe"``: filter the source with
            :meth:`DatasetSource.check` up front (one warning lists what was dropped).
        cache_bytes: keep every frame of each video decoded (at ``size_hint``) in
            memory, up to this many bytes per process, so later epochs do not decode
            again; videos past the budget are read from disk each time. Frames are
            looked up on the video's nominal frame grid (exact for constant frame rate).
            0 disables the cache.
    """

    def __init__(
        self,
        source: DatasetSource | str,
        num_frames: int,
        transform: Callable[..., torch.Tensor] | None = None,
        *,
        train: bool = False,
        seed: int = 0,
        size_hint: int | tuple[int, int] | None = None,
        clip_sampling: str = "uniform",
        frame_stride: int = 4,
        frame_selection: str = "uniform",
        on_error: str = "substitute",
        check: str | None = None,
        cache_bytes: int = 0,
    ) -> None:
        if num_frames <= 0:
            raise ConfigError(f"num_frames must be positive, got {num_frames}")
        if clip_sampling not in CLIP_SAMPLINGS:
            raise ConfigError(f"clip_sampling must be one of {CLIP_SAMPLINGS}, got {clip_sampling!r}")
        if frame_selection not in FRAME_SELECTIONS:
            raise ConfigError(f"frame_selection must be one of {FRAME_SELECTIONS}, got {frame_selection!r}")
        if frame_selection != "uniform" and clip_sampling != "uniform":
            raise ConfigError("key-moments frame selection places frames within a clip's span: use clip_sampling "
                              "'uniform', not 'dense'")
        if on_error not in ON_ERROR:
            raise ConfigError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        if frame_stride <= 0:
            raise ConfigError(f"frame_stride must be positive, got {frame_stride}")
        if check not in (None, "exists", "probe"):
            raise ConfigError(f"check must be None, 'exists' or 'probe', got {check!r}")
        source = load_source(source)
        if check is not None:
            source, _ = source.check(probe=check == "probe")
        if len(source) == 0:
            raise DatasetError(f"{source.name or source.kind}: no videos to load", code="empty")
        self.source = source
        self.num_frames = int(num_frames)
        self.transform = transform
        self.train = bool(train)
        self.seed = int(seed)
        self.size_hint = size_hint if size_hint is not None else getattr(transform, "size_hint", None)
        self.clip_sampling = clip_sampling
        self.frame_stride = int(frame_stride)
        self.frame_selection = frame_selection
        self.on_error = on_error
        self._class_index = source.class_to_index
        self._takes_generator = _accepts_generator(transform)
        # shared memory, so set_epoch reaches persistent DataLoader workers too
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        # per process: path -> reason of files that failed, and probe results
        self.failures: dict[str, str] = {}
        self._bad: set[int] = set()
        self._info: dict[str, tuple[float, float]] = {}
        self.cache_bytes = int(cache_bytes)
        self._cache: dict[str, np.ndarray] = {}
        self._cached_bytes = 0

    # -- epochs ----------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random draws items use (call before iterating the loader)."""
        self._epoch[0] = int(epoch)

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    # -- Dataset protocol ------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.source)

    @property
    def classes(self) -> list[str]:
        return self.source.classes

    def __getitem__(self, index: int) -> Item | None:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} videos")
        index = int(index) % n
        last: BaseException | None = None
        for k in range(n):  # deterministic substitutes: the next entries in order
            j = (index + k) % n
            if j in self._bad and self.on_error != "raise":  # known bad: do not decode it again
                if self.on_error == "skip":
                    return None
                continue
            try:
                return self.load(j)
            except (FalvError, OSError) as exc:
                last = exc
                self._record_failure(j, exc)
                if self.on_error == "raise":
                    raise
                if self.on_error == "skip":
                    return None
        raise DatasetError(f"{self.source.name or self.source.kind}: no video could be decoded (last error: {last})")

    def load(self, index: int) -> Item:
        """Item ``index`` of the current epoch; decoding errors propagate."""
        entry = self.source.entries[index]
        seed = item_seed(self.seed, self.epoch, index)
        rng = np.random.default_rng(seed) if self.train else None
        timestamps = self.timestamps(entry, rng)
        frames = self._read(entry.path, timestamps)  # (T, H, W, 3) uint8 (key-moments: (M, ...) candidates)
        if self.frame_selection == "key-moments":
            from falv.video.keymoments import key_frames

            frames = frames[key_frames(frames, self.num_frames)]
        return {"pixel_values": self._apply_transform(frames, seed), "labels": self.target(entry), "index": index}

    def clip_span(self, entry: VideoEntry) -> tuple[float, float, float]:
        """``(start, end, fps)``: the part of ``entry`` its clips are sampled from (its
        ``[start, end]`` segment within the video, else the whole video) and its frame rate."""
        duration, fps = self._duration_fps(entry)
        start = max(0.0, entry.start or 0.0)
        end = duration if entry.end is None else min(entry.end, duration)
        if end <= start:
            if entry.start is not None and start >= duration:
                raise DatasetError(
                    f"{entry.path}: segment [{entry.start}, {entry.end}] starts after the end ({duration:g}s)"
                )
            start, end = 0.0, duration
        return start, end, fps

    def sampling(self, max_videos: int = 256, quantile: float = 0.9) -> ClipSampling:
        """How this dataset's clips space their frames in time, for the model's config
        (:class:`falv.config.ClipSampling`): ``dense`` with ``frame_stride`` at the videos'
        median frame rate, or ``uniform`` (TSN over each whole clip) with ``clip_seconds`` the
        ``quantile`` of the clip durations (measured on up to ``max_videos`` entries spread
        over the set; unreadable ones are left out): a video no longer than that is seen
        whole, as in training, and longer ones in windows about as long as most clips."""
        entries = self.source.entries[:: max(1, len(self.source) // max_videos)][:max_videos]
        spans = []
        for entry in entries:
            try:
                spans.append(self.clip_span(entry))
            except (FalvError, OSError):
                continue
        if self.clip_sampling == "dense":
            rates = [fps for _, _, fps in spans if fps > 0]
            return ClipSampling(mode="dense", frame_stride=self.frame_stride,
                                fps=float(np.median(rates)) if rates else 30.0, source="falv train")
        lengths = [end - start for start, end, _ in spans if end > start]
        selection = None if self.frame_selection == "uniform" else self.frame_selection
        if not lengths:
            return ClipSampling(mode="uniform", clip_seconds=None, source="falv train", frame_selection=selection)
        seconds = float(np.quantile(np.asarray(lengths), quantile))
        return ClipSampling(mode="uniform", clip_seconds=round(seconds, 3), source="falv train",
                            frame_selection=selection)

    def timestamps(self, entry: VideoEntry, rng: np.random.Generator | None = None) -> list[float]:
        """Frame times (seconds from the first frame) for one clip of ``entry``."""
        start, end, fps = self.clip_span(entry)
        if self.clip_sampling == "dense":
            stride = self.frame_stride / (fps if fps > 0 else 30.0)
            return dense_timestamps(start, end, self.num_frames, stride, rng)
        if self.frame_selection == "key-moments":  # the candidates key_frames chooses from, as labeling plans them
            from falv.video.keymoments import candidate_timestamps

            times = candidate_timestamps(start, end, self.num_frames, fps or None)
            if rng is not None and len(times) > 1:  # training jitter: every candidate moved by one offset
                shift = (float(rng.random()) - 0.5) * (times[1] - times[0])
                times = [min(max(t + shift, start), math.nextafter(end, -math.inf)) for t in times]
            return times
        return segment_timestamps(start, end, self.num_frames, rng)

    def target(self, entry: VideoEntry) -> int | torch.Tensor:
        """Class index (``-1`` when unlabelled) or, for multi-label sources, a multi-hot float vector."""
        if self.source.multilabel:
            y = torch.zeros(len(self._class_index), dtype=torch.float32)
            for lab in entry.labels:
                y[self._class_index[lab]] = 1.0
            return y
        return self._class_index[entry.labels[0]] if entry.labels else -1

    # -- internals ---------------------------------------------------------------------
    def _duration_fps(self, entry: VideoEntry) -> tuple[float, float]:
        if entry.duration is not None:
            return entry.duration, entry.fps or 0.0
        return self._info.get(entry.path) or self._probe(entry.path)

    def _read(self, path: str, timestamps: Sequence[float]) -> np.ndarray:
        from falv.video import read_frames

        if self.cache_bytes > 0:
            frames = self._cache.get(path)
            if frames is None and self._cached_bytes < self.cache_bytes:
                frames = self._decode_all(path)
            if frames is not None:
                _, fps = self._info.get(path) or self._probe(path)
                index = np.floor(np.asarray(timestamps, dtype=np.float64) * fps + 1e-6).astype(np.int64)
                return frames[np.clip(index, 0, len(frames) - 1)]
        return read_frames(path, timestamps, size=self.size_hint)

    def _probe(self, path: str) -> tuple[float, float]:
        from falv.video import probe

        info = probe(path)
        cached = self._info[path] = (float(info.duration), float(info.fps or 0.0))
        return cached

    def _decode_all(self, path: str) -> np.ndarray | None:
        """Every frame of ``path`` on its nominal grid (frame ``i`` shown at ``(i + 0.5) / fps``)."""
        from falv.video import probe, read_frames

        info = probe(path)
        self._info[path] = (float(info.duration), float(info.fps or 0.0))
        if not info.fps or info.num_frames < 1:
            return None
        frames = read_frames(path, [(i + 0.5) / info.fps for i in range(info.num_frames)], size=self.size_hint)
        if self._cached_bytes + frames.nbytes <= self.cache_bytes:
            self._cache[path] = frames
            self._cached_bytes += frames.nbytes
        return frames

    def _apply_transform(self, frames: np.ndarray, seed: int) -> torch.Tensor:
        if self.transform is None:
            return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
        if self._takes_generator:
            g = torch.Generator().manual_seed(seed)
            return self.transform(frames, generator=g)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(frames)

    def _record_failure(self, index: int, exc: BaseException) -> None:
        self._bad.add(index)
        path = self.source.entries[index].path
        if path in self.failures:
            return
        reason = f"{getattr(exc, 'code', type(exc).__name__)}: {getattr(exc, 'detail', None) or exc}"
        self.failures[path] = reason
        action = {"substitute": "using the next video instead", "skip": "item skipped", "raise": "raising"}
        logger.warning("cannot decode %s (%s); %s", path, reason, action[self.on_error])

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({len(self)} videos, {len(self.classes)} classes, num_frames={self.num_frames}, "
            f"train={self.train}, clip_sampling={self.clip_sampling!r}, seed={self.seed})"
        )


def loader_context(workers: int) -> Any:
    """The ``multiprocessing_context`` for a DataLoader with ``workers`` processes: falv's
    decoding pool's start method (forkserver on Linux), never torch's default plain fork of a
    process that may already run torch/OpenMP, ONNX Runtime or OpenVINO threads (unsafe; Python
    3.14's Linux default is forkserver too). ``None`` (in-process) for ``workers == 0``."""
    if workers <= 0:
        return None
    import multiprocessing

    from falv.video.pool import default_start_method

    return multiprocessing.get_context(default_start_method())


def collate(batch: Sequence[Item | None]) -> dict[str, torch.Tensor] | None:
    """Stack items into a batch; ``None`` items (``on_error="skip"``) are dropped.

    ``pixel_values`` -> ``(B, T, C, H, W)``; ``labels`` -> ``(B,)`` int64 or
    ``(B, num_classes)`` float32 multi-hot; ``index`` -> ``(B,)`` int64. Returns
    ``None`` when every item was dropped.
    """
    items = [b for b in batch if b is not None]
    if not items:
        return None
    labels = [b["labels"] for b in items]
    return {
        "pixel_values": torch.stack([b["pixel_values"] for b in items]),  # (B, T, C, H, W)
        "labels": torch.stack(labels) if isinstance(labels[0], torch.Tensor) else torch.tensor(labels),
        "index": torch.tensor([b["index"] for b in items], dtype=torch.int64),
    }


def _accepts_generator(fn: Callable[..., Any] | None) -> bool:
    if fn is None:
        return False
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "generator" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())

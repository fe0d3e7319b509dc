"""The labeling engine: videos in, one record per video out.

Stages are plain functions over plain, picklable data, so another executor (a
Ray Data pipeline, a job queue) can run them unchanged:

``plan_video``  (worker)  path -> probe + windows, or an error
``decode_chunk`` (worker) path + windows -> uint8 frames at the model's short side
``clip_tensor``  (main)   frames -> normalised crops, exactly the processor's pixels
``aggregate``    (main)   per-window scores -> video labels, windows, segments

:func:`label` wires them: decoding runs in worker processes (a crashing or hanging
decoder becomes an error record for that file), clips from several videos are
batched for the model in the main process, the number of decoded chunks in
flight is bounded (memory stays bounded for 4K and hour-long inputs: windows are
streamed in chunks), and every record is appended to ``labels.jsonl`` as soon as
its video is done, which makes runs resumable.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from falv.data import transforms as T
from falv.labeling.records import LabelRecord, record_error, record_ok, video_id_for
from falv.labeling.segments import windows_to_segments
from falv.errors import ConfigError
from falv.labeling.stages import LabelOptions, ModelSpec, decode_chunk, plan_video, run_task
from falv.labeling.store import LABELS_NAME, RecordStore
from falv.video import VideoError, error_record

log = logging.getLogger(__name__)


# -- stages in the main process -------------------------------------------------------------------


def clip_tensor(frames: np.ndarray, spec: ModelSpec, crops: int) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (crops, T, C, H, W) float32, the processor's pixels."""
    clip = T.to_clip_tensor(frames).to(torch.float32)
    clip = T.resize_shortest_side(clip, spec.short_side)  # no-op: the decoder already scaled
    views = T.three_crop(clip, spec.crop) if crops == 3 else [T.center_crop(clip, spec.crop)]
    return torch.stack([T.normalize(T.rescale(v, spec.rescale), spec.mean, spec.std) for v in views])


def aggregate(
    path: str,
    info: dict[str, Any],
    windows: Sequence[tuple[float, float]],
    scores: np.ndarray,
    labels: Sequence[str],
    options: LabelOptions,
    *,
    multilabel: bool,
    thresholds: Sequence[float] | None,
    model_id: str,
    warnings: Sequence[str] = (),
    embeddings: dict[str, Any] | None = None,
) -> LabelRecord:
    """Per-window class scores (W, K) (crops already averaged) -> the video's record."""
    video_scores = scores.mean(axis=0)
    order = np.argsort(-video_scores, kind="stable")
    if multilabel and options.apply_thresholds:  # the classes over their own thresholds, best first
        cut = np.asarray(thresholds if thresholds is not None else [0.5] * len(labels))
        order = np.array([i for i in order if video_scores[i] >= cut[i]], dtype=int)
    top = [(labels[i], float(video_scores[i])) for i in order[: options.top_k]]
    k = min(options.top_k, len(labels))
    window_rows = []
    for (start, end), row in zip(windows, scores):
        best = np.argsort(-row, kind="stable")[:k]
        window_rows.append((start, end, [(labels[i], float(row[i])) for i in best]))
    segments = windows_to_segments(
        [(start, end, row) for (start, end), row in zip(windows, scores)],
        list(labels),
        smoothing=options.smoothing,
        min_duration=options.min_duration,
        background_threshold=options.background_threshold,
        multilabel=multilabel,
        duration=info.get("duration"),
    )
    extra = {"damaged": True, "warnings": list(warnings)[:5]} if warnings else {}
    return record_ok(
        path, top, info=info, windows=window_rows, segments=segments, embeddings=embeddings,
        model=model_id, multilabel=multilabel, threshold=options.background_threshold, **extra,
    )


def write_embeddings(out_dir: Path, path: str, windows: Sequence[tuple[float, float]],
                     window_embeddings: np.ndarray) -> dict[str, Any]:
    """Write ``embeddings/<video_id>.safetensors`` (window and video embeddings, window times)."""
    from safetensors.numpy import save

    from falv.hub.io import atomic_write_bytes

    video_id = video_id_for(path)
    rel = Path("embeddings") / f"{video_id}.safetensors"
    tensors = {
        "windows": window_embeddings.astype(np.float32),
        "video": window_embeddings.mean(axis=0).astype(np.float32),
        "times": np.asarray(windows, dtype=np.float64).reshape(-1, 2),
    }
    atomic_write_bytes(out_dir / rel, save(tensors, metadata={"path": str(path)}))
    return {"file": rel.as_posix(), "format": "safetensors", "keys": ["windows", "video", "times"],
            "dim": int(window_embeddings.shape[-1])}


# -- the driver -----------------------------------------------------------------------------------


@dataclass
class _Video:
    path: str
    info: dict[str, Any]
    windows: list[tuple[float, float]]
    chunks_left: int
    windows_left: int  # windows not scored yet, counted on the main thread
    scores: list[np.ndarray | None]
    embeds: list[np.ndarray | None]
    warnings: list[str] = field(default_factory=list)
    error: dict[str, Any] | None = None


class Engine:
    """Runs :func:`label`; kept as a class so tests and benchmarks can read its counters."""

    def __init__(self, model: Any, options: LabelOptions, out_dir: Path | None, model_id: str,
                 processor: Any = None) -> None:
        from falv.export.runtime import check_runtime
        from falv.processing import FALImageProcessor

        self.options = options
        self.out_dir = out_dir
        self.model_id = model_id
        config = model.config
        self.labels = config.labels
        self.multilabel = config.is_multilabel
        self.thresholds = config.thresholds
        proc = processor or FALImageProcessor.from_config(config)
        if "shortest_edge" not in proc.size:
            raise ConfigError("falv label needs a processor that resizes the shortest edge (size.shortest_edge)")
        self.spec = ModelSpec(
            num_frames=config.num_frames, short_side=int(proc.size["shortest_edge"]),
            crop=(int(proc.crop_size["height"]), int(proc.crop_size["width"])),
            mean=tuple(proc.image_mean), std=tuple(proc.image_std), rescale=proc.rescale_factor,
        )
        # Options are checked now (a bad precision or device stops the run before any work);
        # the model itself is converted on the model thread when a run starts, while the
        # workers decode the first videos (int8 quantization takes ~0.7 s for ViT-B).
        check_runtime(options.runtime, options.precision, options.device)
        self._model: Any = model
        self._runner: Any = None
        self._runner_lock = threading.Lock()
        self.frames_decoded = 0
        self.clips_run = 0

    @property
    def runner(self) -> Any:
        """The model prepared for inference in ``options.runtime`` (:func:`falv.export.runtime.prepare_runtime`:
        torch's :func:`falv.inference.prepare_for_inference`, or the exported graph in ONNX Runtime or
        OpenVINO), made on first use."""
        with self._runner_lock:
            if self._runner is None:
                from falv.export.runtime import prepare_runtime

                opts = self.options
                self._runner = prepare_runtime(self._model, opts.runtime, precision=opts.precision,
                                               device=opts.device)
                self._model = None
            return self._runner

    # one model call over a batch of windows (each window = `crops` clips)
    def _run_batch(self, batch: list[tuple[_Video, int, np.ndarray]]) -> None:
        # Frames wait as uint8; they become float pixels only here, a batch at a time.
        n = self.options.crops
        pixels = torch.cat([clip_tensor(frames, self.spec, n) for *_, frames in batch])  # (B*crops, T, C, H, W)
        logits, embeds = self.runner.predict(pixels)
        probs = torch.sigmoid(logits) if self.multilabel else torch.softmax(logits, dim=-1)
        self.clips_run += pixels.shape[0]
        for i, (video, w, _) in enumerate(batch):
            video.scores[w] = probs[i * n:(i + 1) * n].mean(0).cpu().numpy()  # average over crops
            video.embeds[w] = embeds[i * n:(i + 1) * n].mean(0).cpu().numpy()

    def _finish(self, video: _Video) -> LabelRecord:
        if video.error is not None:
            return record_error(video.path, video.error["type"], video.error["message"], info=video.info or None,
                                model=self.model_id, multilabel=self.multilabel)
        scores = np.stack(video.scores)
        finite = np.isfinite(scores).all(axis=1)  # per window
        if not finite.all():  # a model that overflowed (or broken weights): this video fails alone
            bad = int((~finite).sum())
            return record_error(video.path, "non_finite_scores",
                                f"the model gave NaN or infinite scores for {bad} of {len(scores)} window(s)",
                                info=video.info or None, model=self.model_id, multilabel=self.multilabel)
        embeddings = None
        if self.options.embeddings and self.out_dir is not None:
            embeddings = write_embeddings(self.out_dir, video.path, video.windows, np.stack(video.embeds))
        return aggregate(video.path, video.info, video.windows, scores, self.labels, self.options,
                         multilabel=self.multilabel, thresholds=self.thresholds, model_id=self.model_id,
                         warnings=video.warnings, embeddings=embeddings)

    def run(self, paths: Sequence[str]) -> Iterator[LabelRecord]:
        """Label ``paths``; yields records in completion order."""
        from falv.video.pool import WAIT, decode_in_workers

        opts = self.options
        videos: dict[str, _Video] = {}
        pending_batch: deque[tuple[_Video, int, np.ndarray]] = deque()
        per_batch = max(1, opts.batch_size // opts.crops)  # windows per model call
        done: deque[LabelRecord] = deque()

        def tasks() -> Iterator[tuple[str, tuple]]:
            # Plans in input order, lazily (feed() keeps a bounded number ahead of decoding).
            for path in paths:
                yield ("plan", (path, self.spec, opts))

        # The model runs on one background thread, at most two batches out, so that this
        # thread keeps collecting results and handing decode tasks to idle workers meanwhile.
        model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="falv-model")
        in_flight: deque[tuple[Future, list[tuple[_Video, int, np.ndarray]]]] = deque()
        # its first job: prepare the model while the workers start decoding
        in_flight.append((model_thread.submit(lambda: self.runner), []))

        def settle(block: bool, keep: int = 0) -> None:
            while len(in_flight) > keep and (block or in_flight[0][0].done()):
                future, take = in_flight.popleft()
                future.result()  # a model error surfaces here
                for video, *_ in take:
                    video.windows_left -= 1
                for video in {id(v): v for v, *_ in take}.values():
                    if video.path in videos and video.chunks_left == 0 and video.windows_left == 0:
                        done.append(self._finish(video))
                        videos.pop(video.path, None)

        def flush(force: bool = False) -> None:
            # Full batches go out as they form; a partial one goes out when the model would
            # otherwise sit idle (--batch-size is a maximum, not something to wait for).
            settle(block=False)
            while pending_batch and (force or len(pending_batch) >= per_batch or not in_flight):
                take = [pending_batch.popleft() for _ in range(min(per_batch, len(pending_batch)))]
                settle(block=True, keep=1)
                in_flight.append((model_thread.submit(self._run_batch, take), take))
            settle(block=force)

        queue: list[tuple[float, tuple[str, tuple]]] = []  # (estimated cost, decode task)
        plan_iter = tasks()
        plans_in_flight = 0
        plans_left = True
        lookahead = 2 * max(opts.workers, 1) + 2  # decode tasks to choose from before planning stops

        def model_hungry() -> bool:
            return not pending_batch and not any(take for _, take in in_flight)

        def feed() -> Iterator[Any]:
            # Plans run ahead until `lookahead` decode tasks wait (probing is cheap), so that
            # the next decode can be chosen: the cheapest while the model has nothing to do
            # (it starts sooner), else the costliest (short tasks fill the end of the run).
            # While plans are still out, their decode tasks may yet come: WAIT, not the end.
            nonlocal plans_in_flight, plans_left
            while True:
                if plans_left and len(queue) + plans_in_flight < lookahead:
                    nxt = next(plan_iter, None)
                    if nxt is not None:
                        plans_in_flight += 1
                        yield nxt
                        continue
                    plans_left = False
                if queue:
                    yield queue.pop(pick_decode([c for c, _ in queue], model_hungry()))[1]
                elif plans_in_flight:
                    yield WAIT
                else:
                    return

        try:
            # Workers pull tasks lazily (one each), so decoding runs ahead of the model by at most
            # one task per worker: memory stays bounded however long the input list is.
            for task, outcome in decode_in_workers(run_task, feed(), workers=max(opts.workers, 1),
                                                   timeout=opts.timeout):
                kind, args = task
                path = args[0]
                if kind == "plan":
                    plans_in_flight -= 1
                    if isinstance(outcome, BaseException):
                        done.append(record_error(path, **_error_fields(outcome, path), model=self.model_id,
                                                 multilabel=self.multilabel))
                    else:
                        windows = outcome["windows"]
                        chunks = [windows[i:i + opts.chunk_windows] for i in range(0, len(windows), opts.chunk_windows)]
                        videos[path] = _Video(path, outcome["info"], [(a, b) for a, b, _ in windows],
                                              len(chunks), len(windows), [None] * len(windows),
                                              [None] * len(windows))
                        for c, chunk in enumerate(chunks):
                            first = c * opts.chunk_windows
                            stamps = [ts for *_, ts in chunk]
                            queue.append((decode_cost(outcome["info"], stamps),
                                          ("decode", (path, stamps, self.spec.short_side, opts.timeout, first))))
                else:
                    video = videos[path]
                    video.chunks_left -= 1
                    if isinstance(outcome, BaseException):
                        video.error = _error_fields(outcome, path)
                    else:
                        self.frames_decoded += outcome["frames_decoded"]
                        video.warnings.extend(outcome["warnings"])
                        if video.error is None:
                            for j, frames in enumerate(outcome["frames"]):
                                pending_batch.append((video, args[4] + j, frames))
                    if video.error is not None and video.chunks_left == 0:
                        done.append(self._finish(video))  # windows of it still queued are dropped
                        videos.pop(path, None)
                    flush()
                settle(block=False)
                while done:
                    yield done.popleft()
            flush(force=True)
            for video in list(videos.values()):  # videos whose last chunk failed after others succeeded
                done.append(self._finish(video))
            while done:
                yield done.popleft()
        finally:  # also when the caller stops reading records early
            model_thread.shutdown(wait=True, cancel_futures=True)


def decode_cost(info: dict[str, Any], timestamps: Sequence[Sequence[float]]) -> float:
    """Rough decoding work of one decode task: pixels per frame x frames from its first to its
    last wanted time (+1 s for the way in from the keyframe before). Only compared between
    tasks; 0 when the probe gave no size."""
    times = [t for ts in timestamps for t in ts]
    if not times:
        return 0.0
    pixels = float(info.get("width") or 0) * float(info.get("height") or 0)
    fps = float(info.get("fps") or 0) or 25.0
    return pixels * fps * (max(times) - min(times) + 1.0)


def pick_decode(costs: Sequence[float], model_hungry: bool) -> int:
    """Index of the decode task to run next among waiting ones with these estimated costs:
    the cheapest when the model has no work (its first clip arrives sooner), otherwise the
    costliest (longest-first keeps long decodes from finishing last). Ties: the earliest."""
    if model_hungry:
        return min(range(len(costs)), key=lambda i: (costs[i], i))
    return min(range(len(costs)), key=lambda i: (-costs[i], i))


def _error_fields(error: BaseException, path: str) -> dict[str, str]:
    if isinstance(error, VideoError):
        data = error_record(error, path)
        return {"type": str(data.get("error") or "video_error"), "message": str(data.get("message") or error)}
    return {"type": type(error).__name__, "message": str(error) or type(error).__name__}


def label(
    inputs: Iterable[str] | str,
    model: Any,
    *,
    out_dir: str | os.PathLike | None = None,
    options: LabelOptions | None = None,
    resume: bool = True,
    copy_model: bool = True,
    **option_overrides: Any,
) -> Iterator[LabelRecord]:
    """Label videos; yields one :class:`LabelRecord` per input, success or error.

    ``inputs``: files, folders, globs or list files (see :mod:`falv.labeling.inputs`).
    ``model``: a loaded :class:`falv.FALForVideoClassification` or anything
    ``from_pretrained`` accepts. With ``out_dir`` the records are appended to
    ``out_dir/labels.jsonl`` as they complete, and inputs already recorded there
    are skipped (``resume=True``), so an interrupted run can simply be restarted.
    A model passed as a module is copied first (``copy_model=False`` to let
    inference cast and repack it in place).
    """
    from falv.labeling.inputs import collect_inputs
    from falv.model.transformer import FALForVideoClassification
    from falv.processing import FALImageProcessor

    if options is None:
        options = LabelOptions(**option_overrides)
    elif not isinstance(options, LabelOptions):
        raise TypeError("options must be a LabelOptions")
    elif option_overrides:
        options = dataclasses.replace(options, **option_overrides)
    processor = None
    if isinstance(model, torch.nn.Module):
        model_id = str(getattr(model, "name_or_path", None) or type(model).__name__)
        if copy_model:
            model = copy.deepcopy(model)  # inference casts and repacks the model in place
    else:
        model_id = str(model)
        processor = FALImageProcessor.from_pretrained(model)  # the checkpoint's own preprocessing
        model = FALForVideoClassification.from_pretrained(model)
    found = collect_inputs(inputs if not isinstance(inputs, str) else [inputs])
    out = Path(out_dir) if out_dir is not None else None
    engine = Engine(model, options, out, model_id, processor=processor)  # checks the options; cheap
    store = RecordStore(out / LABELS_NAME) if out is not None else None
    try:
        for item, reason in found.problems:
            log.warning("skipping %s: %s", item, reason)
        paths = [os.path.abspath(p) for p in found.paths]  # records name inputs unambiguously
        todo = [p for p in paths if not (store is not None and resume and store.done(p))]
        for record in engine.run(todo):
            if store is not None:
                store.append(record.to_dict())
            yield record
    finally:
        if store is not None:
            store.close()


__all__ = ["Engine", "LabelOptions", "ModelSpec", "aggregate", "clip_tensor", "decode_chunk", "label",
           "plan_video", "write_embeddings"]

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

The per-video boundary: every stage that handles one video (probe and plan, decode,
the check of its frames, model input, aggregation and segmenting, embeddings, the
record itself) runs inside it, so anything that goes wrong there becomes that video's
error record (a typed one, or ``internal`` with the exception's class and message)
and the run goes on. Only a :class:`falv.errors.RunError` (the model, the output
folder, the disk) stops the run.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from falv.data import transforms as T
from falv.errors import ConfigError, FalvError, RunError
from falv.labeling.records import (LabelRecord, record_error, record_ok, record_to_json_line,
                                   video_id_for)
from falv.inference import scores_from_logits
from falv.labeling.segments import windows_to_segments
from falv.labeling.stages import (TASK_STAGES, LabelOptions, ModelSpec, check_frames, chunk_size, decode_chunk,
                                  decode_tasks, failure as _failure, plan_video, run_task)
from falv.labeling.store import LABELS_NAME, RecordStore, segment_key

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
    background: str | None = None,
) -> LabelRecord:
    """Per-window class scores (W, K) (crops already averaged) -> the video's record.

    ``background``: the label of the model's learnt background class; it takes part in
    segmenting (a window it wins is a gap) but is left out of the video's labels, the
    windows' labels and the segments."""
    video_scores = scores.mean(axis=0)
    order = np.argsort(-video_scores, kind="stable")
    if background is not None:
        order = order[np.asarray(labels)[order] != background]
    if multilabel and options.apply_thresholds:  # the classes over their own thresholds, best first
        cut = np.asarray(thresholds if thresholds is not None else [0.5] * len(labels))
        order = np.array([i for i in order if video_scores[i] >= cut[i]], dtype=int)
    top = [(labels[i], float(video_scores[i])) for i in order[: options.top_k]]
    k = min(options.top_k, len(labels) - (background is not None))
    window_rows = []
    for (start, end), row in zip(windows, scores):
        best = [i for i in np.argsort(-row, kind="stable") if labels[i] != background][:k]
        window_rows.append((start, end, [(labels[i], float(row[i])) for i in best]))
    segments = windows_to_segments(
        [(start, end, row) for (start, end), row in zip(windows, scores)],
        list(labels),
        smoothing=options.smoothing,
        min_duration=options.min_duration,
        background_threshold=options.background_threshold,
        multilabel=multilabel,
        duration=info.get("duration"),
        background=background,
        refine_edges=options.refine_edges,
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


def score_windows(runner: Any, spec: ModelSpec, multilabel: bool,
                  windows: Sequence[tuple[np.ndarray, int, str, float]]) -> tuple[list[dict[str, Any]], int]:
    """One model call over windows of any videos: ``(frames (T, H, W, 3) uint8, crops, path,
    temperature)`` each -> ``({"scores", "embeds"}`` (scores: :func:`scores_from_logits` at that
    temperature) averaged over the crops, or ``{"error"}`` when that window's model input could not
    be made), clips run)``. The model failing on well-formed input is a :class:`RunError`.
    The local engine's model thread and the Ray engine's model actors both score with this."""
    results: list[dict[str, Any]] = [{} for _ in windows]
    pixels, live = [], []
    for i, (frames, crops, path, _t) in enumerate(windows):
        try:  # Frames wait as uint8; they become float pixels only here, a batch at a time.
            pixels.append(clip_tensor(frames, spec, crops))
            live.append(i)
        except Exception as exc:
            results[i] = {"error": _failure(exc, path, "preparing the model input")}
    if not live:
        return results, 0
    batch_pixels = torch.cat(pixels)  # (B*crops, T, C, H, W)
    try:
        logits, embeds = runner.predict(batch_pixels)
    except FalvError:
        raise
    except Exception as exc:  # the input was checked: the model itself is broken
        raise RunError(f"the model failed on a batch of {batch_pixels.shape[0]} clip(s) of shape "
                       f"{tuple(batch_pixels.shape[1:])} ({type(exc).__name__}: {exc})") from exc
    first = 0
    for i in live:
        n, temperature = windows[i][1], windows[i][3]
        probs = scores_from_logits(logits[first:first + n].float(), multilabel, temperature)
        results[i] = {"scores": probs.mean(0).cpu().numpy(),  # average over crops
                      "embeds": embeds[first:first + n].mean(0).cpu().numpy()}
        first += n
    return results, int(batch_pixels.shape[0])


# -- the driver -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelJob:
    """One video to label: its ``path``, its own ``options`` (None: the engine's), and a
    ``key`` that names the job (default: the path; a server gives each job its own id,
    so the same file can be labelled twice with other options at once)."""

    path: str
    options: LabelOptions | None = None
    key: str = ""
    segment: tuple[float, float] | None = None  # label only [start, end] seconds of the file

    def __post_init__(self) -> None:
        if self.segment is not None:
            object.__setattr__(self, "segment", (float(self.segment[0]), float(self.segment[1])))
        if not self.key:
            object.__setattr__(self, "key", segment_key(self.path, self.segment))


class JobCancelled(FalvError):
    """A job was cancelled while it ran (its record is a ``cancelled`` error)."""

    code = "cancelled"


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
    error: dict[str, str] | None = None
    origin: float | None = None  # the decoder's time origin when the header's start was wrong
    job: LabelJob = None  # type: ignore[assignment]
    options: LabelOptions = None  # type: ignore[assignment]


class Engine:
    """Runs :func:`label`; kept as a class so tests and benchmarks can read its counters."""

    def __init__(self, model: Any, options: LabelOptions, out_dir: Path | None, model_id: str,
                 processor: Any = None, *, check_runtime_here: bool = True) -> None:
        from falv.export.runtime import check_runtime
        from falv.processing import FALImageProcessor

        self.options = options
        self.out_dir = out_dir
        self.model_id = model_id
        config = model.config
        self.labels = config.labels
        self.multilabel = config.is_multilabel
        self.thresholds = list(options.thresholds) if options.thresholds is not None else config.thresholds
        if self.thresholds is not None and len(self.thresholds) != len(self.labels):
            raise ConfigError(f"{len(self.thresholds)} thresholds given for {len(self.labels)} classes")
        # temperature scaling fitted by falv train (FALConfig.temperature), unless the options say otherwise
        self.temperature = float(options.temperature if options.temperature is not None
                                 else getattr(config, "temperature", None) or 1.0)
        self.background = getattr(config, "background_label", None)
        self.taxonomy = getattr(config, "taxonomy", None)  # a hierarchical model's label tree
        self._views: dict[tuple[int | None, int | None], tuple[list[str], np.ndarray | None]] = {}
        self.label_view(options)  # --level / --max-depth: checked before any work
        proc = processor or FALImageProcessor.from_config(config)
        if "shortest_edge" not in proc.size:
            raise ConfigError("falv label needs a processor that resizes the shortest edge (size.shortest_edge)")
        self.spec = ModelSpec(
            # the preprocessor config's frame count where it has one (the model interpolates its time embedding)
            num_frames=int(getattr(proc, "num_frames", None) or config.num_frames), short_side=int(proc.size["shortest_edge"]),
            crop=(int(proc.crop_size["height"]), int(proc.crop_size["width"])),
            mean=tuple(proc.image_mean), std=tuple(proc.image_std), rescale=proc.rescale_factor,
            clip_seconds=getattr(config, "clip_seconds", None),
            frame_selection=getattr(config, "frame_selection", "uniform"),
        )
        # Options are checked now (a bad precision or device stops the run before any work);
        # the model itself is converted on the model thread when a run starts, while the
        # workers decode the first videos (int8 quantization takes ~0.7 s for ViT-B).
        # (not where the model runs elsewhere: the Ray engine's actors check on their own devices)
        self.precision = (check_runtime(options.runtime, options.precision, options.device) if check_runtime_here
                          else options.precision)
        self.device = (_device_name(options.runtime, options.device) if check_runtime_here
                       else str(options.device or "auto"))
        self._model: Any = model
        self._runner: Any = None
        self._runner_lock = threading.Lock()
        self.frames_decoded = 0
        self.clips_run = 0
        self._cancelled: set[str] = set()

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

    # one model call over a batch of windows (each window = `crops` clips); runs on the model thread
    def _run_batch(self, batch: list[tuple[_Video, int, np.ndarray]]) -> list[tuple[_Video, dict[str, str]]]:
        """Score the batch; returns the videos whose model input could not be made (they fail
        alone). The model failing on well-formed input is a :class:`RunError`."""
        live = [item for item in batch if item[0].error is None]  # failed meanwhile: skip its windows
        if not live:
            return []
        results, clips = score_windows(self.runner, self.spec, self.multilabel, [
            (frames, video.options.crops, video.path,
             video.options.temperature if video.options.temperature is not None else self.temperature)
            for video, _, frames in live])
        self.clips_run += clips
        failed = []
        for (video, w, _), result in zip(live, results):
            if "error" in result:
                failed.append((video, result["error"]))
            else:
                video.scores[w], video.embeds[w] = result["scores"], result["embeds"]
        return failed

    def label_view(self, options: LabelOptions) -> tuple[list[str], np.ndarray | None]:
        """The classes a run reports and the (model classes, classes) matrix that sums the model's
        scores into them: a hierarchical model's ``options.level`` / ``options.max_depth``
        (:meth:`falv.taxonomy.Taxonomy.view`), else the model's own classes (``None``: as they are)."""
        key = (options.level, options.max_depth)
        if key not in self._views:
            if key == (None, None):
                self._views[key] = (self.labels, None)
            elif self.taxonomy is None:
                raise ConfigError("--level and --max-depth need a hierarchical model (trained with --taxonomy)")
            else:
                names, matrix = self.taxonomy.view(options.level, options.max_depth)
                self._views[key] = (names, matrix)
        return self._views[key]

    def label_path(self, leaf_scores: np.ndarray, options: LabelOptions) -> list[dict[str, Any]] | None:
        """A hierarchical model's most likely path from the top (``label_path`` in the record),
        down to ``options.level`` or ``options.max_depth`` when given; None for a flat model."""
        if self.taxonomy is None:
            return None
        depth = options.level or options.max_depth
        return [{"label": node, "score": score} for node, score in self.taxonomy.best_path(leaf_scores, depth)]

    @property
    def provenance(self) -> dict[str, str]:
        """What every record says produced it: ``precision``, ``device`` and ``runtime``
        (the record adds ``falv_version``)."""
        return {"precision": self.precision, "device": self.device, "runtime": self.options.runtime}

    def _error_record(self, path: str, failure: dict[str, str], info: dict[str, Any] | None = None,
                      segment: tuple[float, float] | None = None) -> LabelRecord:
        extra = {"segment": _segment_json(segment)} if segment is not None else {}
        try:
            return record_error(path, failure["type"], failure["message"], info=info or None, model=self.model_id,
                                multilabel=self.multilabel, **self.provenance, **extra)
        except Exception:  # the probe's numbers are too damaged to record (e.g. not finite)
            return record_error(path, failure["type"], failure["message"], model=self.model_id,
                                multilabel=self.multilabel, **self.provenance, **extra)

    def _finish(self, video: _Video) -> LabelRecord:
        """The video's record: its error, or its labels (aggregation, segments, embeddings),
        inside the per-video boundary; an output folder that cannot be written is a RunError."""
        if video.error is not None:
            return self._error_record(video.path, video.error, video.info, video.job.segment)
        stage = "aggregating window scores"
        try:
            scores = np.stack(video.scores)
            finite = np.isfinite(scores).all(axis=1)  # per window
            if not finite.all():  # a model that overflowed (or broken weights): this video fails alone
                bad = int((~finite).sum())
                return self._error_record(
                    video.path, {"type": "non_finite_scores",
                                 "message": f"the model gave NaN or infinite scores for {bad} of {len(scores)} window(s)"},
                    video.info, video.job.segment)
            embeddings = None
            if video.options.embeddings and self.out_dir is not None:
                stage = "writing embeddings"
                try:
                    embeddings = write_embeddings(self.out_dir, video.path, video.windows, np.stack(video.embeds))
                except OSError as exc:  # the output folder or the disk, not this video
                    raise RunError(f"cannot write embeddings into {self.out_dir}: {exc}") from exc
            stage = "aggregating and segmenting"
            labels, view = self.label_view(video.options)
            path = self.label_path(scores.mean(axis=0), video.options)
            if view is not None:  # a hierarchical model's level: the leaves' scores summed into their nodes
                scores = scores @ view
            record = aggregate(video.path, video.info, video.windows, scores, labels, video.options,
                               multilabel=self.multilabel, model_id=self.model_id,
                               thresholds=(list(video.options.thresholds) if video.options.thresholds is not None
                                           else self.thresholds),
                               warnings=video.warnings, embeddings=embeddings,
                               background=self.background if self.background in labels else None)
            record = dataclasses.replace(record, **self.provenance)
            if path is not None:
                record = dataclasses.replace(record, extra={**record.extra, "label_path": path})
            if video.job.segment is not None:
                record = dataclasses.replace(record, extra={**record.extra,
                                                            "segment": _segment_json(video.job.segment)})
            stage = "writing the record"
            record_to_json_line(record)  # the JSONL writer's own check: a record that cannot be written fails here
            return record
        except RunError:
            raise
        except Exception as exc:
            return self._error_record(video.path, _failure(exc, video.path, stage), video.info, video.job.segment)

    def _add_video(self, job: LabelJob, plan: dict[str, Any]) -> tuple[_Video, list[tuple[float, dict[str, Any]]]]:
        """A planned video and its decode tasks (with their estimated costs)."""
        opts = self.options
        windows = plan["windows"]
        if not windows:
            raise ValueError("the plan has no window")
        video = _Video(job.path, plan["info"], [(float(a), float(b)) for a, b, _ in windows],
                       -(-len(windows) // chunk_size(self.spec, opts)),
                       len(windows), [None] * len(windows), [None] * len(windows),
                       warnings=list(plan.get("warnings") or ()), origin=plan.get("origin"), job=job,
                       options=job.options or opts)
        tasks = [(decode_cost(plan["info"], task["args"][1]), {**task, "job": job})
                 for task in decode_tasks(job.path, plan, self.spec, opts, video.origin)]
        return video, tasks

    def _check_frames(self, video: _Video, args: tuple, outcome: dict[str, Any]) -> np.ndarray:
        return check_frames(outcome["frames"], len(args[1]), self.spec.num_frames)

    def run(self, paths: Sequence[str]) -> Iterator[LabelRecord]:
        """Label ``paths``; yields records in completion order."""
        for _, record in self.run_jobs(LabelJob(path) for path in paths):
            yield record

    def cancel(self, key: str) -> None:
        """Stop work on the job ``key``: its windows not scored yet are dropped and its
        record is a ``cancelled`` error (thread-safe; a finished job is not affected)."""
        self._cancelled.add(key)

    def run_jobs(self, jobs: Iterable[LabelJob | Any], *, tick: float | None = None,
                 on_progress: Callable[[LabelJob, int, int], None] | None = None,
                 ) -> Iterator[tuple[LabelJob, LabelRecord]]:
        """Label jobs; yields ``(job, record)`` in completion order.

        ``jobs`` may be a live source: it may yield :data:`falv.video.pool.WAIT` when it
        has no job at the moment (a server's queue), and the run ends when it is exhausted.
        With ``tick`` (seconds) the engine also wakes up that often while nothing arrives,
        so that finished videos are recorded without waiting for the next job.
        ``on_progress(job, windows_scored, windows_total)`` is called on this thread.
        Each job carries its own options (clips, windows, thresholds...); the batch size,
        workers, timeout, precision and device are the engine's.
        """
        from falv.video.pool import TICK, WAIT, decode_in_workers

        opts = self.options
        videos: dict[str, _Video] = {}
        pending_batch: deque[tuple[_Video, int, np.ndarray]] = deque()
        done: deque[tuple[LabelJob, LabelRecord]] = deque()
        source = iter(jobs)

        # The model runs on one background thread, at most two batches out, so that this
        # thread keeps collecting results and handing decode tasks to idle workers meanwhile.
        model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="falv-model")
        in_flight: deque[tuple[Future, list[tuple[_Video, int, np.ndarray]]]] = deque()
        # its first job: prepare the model while the workers start decoding
        in_flight.append((model_thread.submit(lambda: (self.runner, [])[1]), []))

        def finish(video: _Video) -> None:
            if video.job.key in self._cancelled and video.error is None:
                video.error = {"type": "cancelled", "message": f"{video.path}: cancelled"}
            done.append((video.job, self._finish(video)))
            videos.pop(video.job.key, None)
            self._cancelled.discard(video.job.key)

        def settle(block: bool, keep: int = 0) -> None:
            while len(in_flight) > keep and (block or in_flight[0][0].done()):
                future, take = in_flight.popleft()
                try:
                    failed = future.result() or []  # a model error surfaces here
                except FalvError:
                    raise
                except Exception as exc:  # preparing the model failed: nothing can be labelled
                    raise RunError(f"the model could not be prepared ({type(exc).__name__}: {exc})") from exc
                for video, failure in failed:
                    if video.error is None:
                        video.error = failure
                for video, *_ in take:
                    video.windows_left -= 1
                for video in {id(v): v for v, *_ in take}.values():
                    if video.job.key not in videos:
                        continue
                    if video.chunks_left == 0 and video.windows_left == 0:
                        finish(video)
                    elif on_progress is not None:
                        on_progress(video.job, len(video.windows) - video.windows_left, len(video.windows))

        def next_batch() -> list[tuple[_Video, int, np.ndarray]]:
            # up to batch_size clips; a window of a three-crop job is three clips
            take, clips = [], 0
            while pending_batch and (not take or clips + pending_batch[0][0].options.crops <= opts.batch_size):
                item = pending_batch.popleft()
                take.append(item)
                clips += item[0].options.crops
            return take

        def batch_full() -> bool:
            return sum(v.options.crops for v, *_ in pending_batch) >= opts.batch_size

        def flush(force: bool = False) -> None:
            # Full batches go out as they form; a partial one goes out when the model would
            # otherwise sit idle (--batch-size is a maximum, not something to wait for).
            settle(block=False)
            while pending_batch and (force or batch_full() or not in_flight):
                take = next_batch()
                settle(block=True, keep=1)
                in_flight.append((model_thread.submit(self._run_batch, take), take))
            settle(block=force)

        queue: list[tuple[float, dict[str, Any]]] = []  # (estimated cost, decode task)
        plans_in_flight = 0
        jobs_left = True
        lookahead = 2 * max(opts.workers, 1) + 2  # decode tasks to choose from before planning stops

        def model_hungry() -> bool:
            return not pending_batch and not any(take for _, take in in_flight)

        def feed() -> Iterator[Any]:
            # Plans run ahead until `lookahead` decode tasks wait (probing is cheap), so that
            # the next decode can be chosen: the cheapest while the model has nothing to do
            # (it starts sooner), else the costliest (short tasks fill the end of the run).
            # While plans are still out, their decode tasks may yet come: WAIT, not the end.
            nonlocal plans_in_flight, jobs_left
            while True:
                live_wait = False
                if jobs_left and len(queue) + plans_in_flight < lookahead:
                    job = next(source, None)
                    if job is WAIT:
                        live_wait = True  # a live source with nothing new right now
                    elif job is not None:
                        job = job if isinstance(job, LabelJob) else LabelJob(os.fspath(job))
                        plans_in_flight += 1
                        yield {"kind": "plan", "path": job.path, "job": job,
                               "args": (job.path, self.spec, job.options or opts, job.segment)}
                        continue
                    else:
                        jobs_left = False
                if queue:
                    yield queue.pop(pick_decode([c for c, _ in queue], model_hungry()))[1]
                elif plans_in_flight or live_wait:
                    yield WAIT
                else:
                    return

        try:
            # Workers pull tasks lazily (one each), so decoding runs ahead of the model by at most
            # one task per worker: memory stays bounded however long the input list is.
            for task, outcome in decode_in_workers(run_task, feed(), workers=max(opts.workers, 1),
                                                   timeout=opts.timeout, tick=tick):
                if task is TICK:
                    flush()
                elif task["kind"] == "plan":
                    plans_in_flight -= 1
                    job, path = task["job"], task["path"]
                    try:  # the per-video boundary around the plan's hand-over
                        if isinstance(outcome, BaseException):
                            raise outcome
                        if job.key in self._cancelled:
                            raise JobCancelled(f"{path}: cancelled")
                        video, decode_tasks = self._add_video(job, outcome)
                    except RunError:
                        raise
                    except Exception as exc:
                        info = outcome.get("info") if isinstance(outcome, dict) else None
                        failure = _failure(exc, path, TASK_STAGES["plan"])
                        done.append((job, self._error_record(path, failure, info, job.segment)))
                        self._cancelled.discard(job.key)
                    else:
                        videos[job.key] = video
                        queue.extend(decode_tasks)
                else:
                    video = videos.get(task["job"].key)
                    if video is not None:
                        video.chunks_left -= 1
                        try:  # the per-video boundary around the decoded frames
                            if isinstance(outcome, BaseException):
                                raise outcome
                            if video.job.key in self._cancelled:
                                raise JobCancelled(f"{video.path}: cancelled")
                            self.frames_decoded += int(outcome["frames_decoded"])
                            video.warnings.extend(str(w) for w in outcome["warnings"])
                            if video.error is None:
                                frames = self._check_frames(video, task["args"], outcome)
                                for j in range(frames.shape[0]):
                                    pending_batch.append((video, task["first"] + j, frames[j]))
                        except RunError:
                            raise
                        except Exception as exc:
                            if video.error is None:
                                video.error = _failure(exc, video.path, TASK_STAGES["decode"])
                        if video.error is not None and video.chunks_left == 0:
                            finish(video)  # windows of it still queued are dropped
                    flush()
                settle(block=False)
                while done:
                    yield done.popleft()
            flush(force=True)
            for video in list(videos.values()):  # videos whose last chunk failed after others succeeded
                finish(video)
            while done:
                yield done.popleft()
        finally:  # also when the caller stops reading records early
            model_thread.shutdown(wait=True, cancel_futures=True)


def _segment_json(segment: tuple[float, float]) -> list[float | None]:
    """A job's segment as records store it: ``[start, end]``, ``end`` null for "to the end"."""
    start, end = segment
    return [start, end if end != float("inf") else None]


def _device_name(runtime: str, device: str | None) -> str:
    """The device a run's scores come from: ``cpu``, or ``cuda:N`` with its index."""
    if runtime != "torch":
        return "cpu"  # the exported runtimes run on the CPU in falv (check_runtime)
    from falv.inference import choose_device

    dev = choose_device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return str(dev)


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


def resolve_model(model: Any, *, copy_model: bool = True, processor: Any = None) -> tuple[Any, str, Any]:
    """``(module, model id, processor or None)`` for what a front-end was given: a loaded
    model (copied first unless ``copy_model=False``: inference casts and repacks it in place;
    its config's preprocessing applies) or anything ``from_pretrained`` accepts (then the
    checkpoint's own preprocessing)."""
    from falv.hub.families import load_model
    from falv.processing import FALImageProcessor

    if isinstance(model, torch.nn.Module):
        model_id = str(getattr(model, "name_or_path", None) or type(model).__name__)
        return (copy.deepcopy(model) if copy_model else model), model_id, processor
    return load_model(model), str(model), processor or FALImageProcessor.from_model_dir(model)


#: The executors of :func:`label`: ``local`` (worker processes + a model thread) or ``ray``.
ENGINES = ("local", "ray")


def label(
    inputs: Iterable[str] | str,
    model: Any,
    *,
    out_dir: str | os.PathLike | None = None,
    options: LabelOptions | None = None,
    resume: bool = True,
    retry_failed: bool = False,
    copy_model: bool = True,
    processor: Any = None,
    engine: str = "local",
    address: str | None = None,
    ray_options: Any = None,
    **option_overrides: Any,
) -> Iterator[LabelRecord]:
    """Label videos; yields one :class:`LabelRecord` per input, success or error.

    ``inputs``: files, folders, globs or list files (see :mod:`falv.labeling.inputs`), or
    :class:`LabelJob` s (e.g. with a ``segment``: only that part of the file is labelled,
    and its record carries ``"segment": [start, end]``).
    ``model``: a loaded :class:`falv.FALForVideoClassification` or anything
    ``from_pretrained`` accepts. With ``out_dir`` the records are appended to
    ``out_dir/labels.jsonl`` as they complete, and inputs already done there are
    skipped (``resume=True``), so an interrupted run can simply be restarted; when
    the run ends the file is rewritten atomically with one record per input, the
    newest (:class:`falv.labeling.store.RecordStore`). Done means labelled, or
    failed in a way that recurs on the same file (not a video, no video stream);
    ``retry_failed=True`` tries every failure again.
    A model passed as a module is copied first (``copy_model=False`` to let
    inference cast and repack it in place). ``processor``: the preprocessing to use (a
    :class:`falv.FALImageProcessor`, e.g. from the model directory's preprocessor_config.json);
    default: the checkpoint's own for a path, the config's for a module.

    ``engine="ray"`` runs the same stages on a Ray cluster (:mod:`falv.labeling.ray_engine`):
    the one at ``address`` (or ``$RAY_ADDRESS``), else a local Ray started for the run;
    ``ray_options`` (:class:`~falv.labeling.ray_engine.RayOptions`) sizes its model actors.
    Records, the store and resume are the same as with ``engine="local"``.
    """
    from falv.labeling.inputs import collect_inputs

    if options is None:
        options = LabelOptions(**option_overrides)
    elif not isinstance(options, LabelOptions):
        raise TypeError("options must be a LabelOptions")
    elif option_overrides:
        options = dataclasses.replace(options, **option_overrides)
    if engine not in ENGINES:
        raise ConfigError(f"unknown engine {engine!r}; valid values: {', '.join(ENGINES)}")
    if engine == "ray":
        from falv.labeling.ray_engine import RayOptions

        ray_options = ray_options or RayOptions()
        if address is not None:
            ray_options = dataclasses.replace(ray_options, address=address)
    elif address is not None or ray_options is not None:
        raise ConfigError("address and ray_options need engine='ray'")
    model, model_id, processor = resolve_model(model, copy_model=copy_model, processor=processor)
    items = [inputs] if isinstance(inputs, (str, os.PathLike, LabelJob)) else list(inputs)
    found = collect_inputs([i for i in items if not isinstance(i, LabelJob)])
    out = Path(out_dir) if out_dir is not None else None
    runner = Engine(model, options, out, model_id, processor=processor,  # checks the options; cheap
                    check_runtime_here=engine == "local")
    store = RecordStore(out / LABELS_NAME, retry_failed=retry_failed) if out is not None else None
    failed = True
    try:
        for item, reason in found.problems:
            log.warning("skipping %s: %s", item, reason)
        # records name inputs unambiguously: absolute paths (and the segment of a segment job)
        jobs = [LabelJob(os.path.abspath(p)) for p in found.paths]
        jobs += [LabelJob(os.path.abspath(j.path), j.options, segment=j.segment) for j in items
                 if isinstance(j, LabelJob)]
        jobs = list({job.key: job for job in jobs}.values())
        todo = [j for j in jobs if not (store is not None and resume and store.done(j.path, j.segment))]
        if engine == "ray":
            from falv.labeling.ray_engine import run_jobs_ray

            finished: Iterable[tuple[Any, LabelRecord]] = run_jobs_ray(runner, todo, ray_options)
        else:
            finished = runner.run_jobs(todo)
        for _, record in finished:
            if store is not None:
                store.append(record.to_dict())
            yield record
        failed = False
    finally:
        if store is not None:
            if failed:  # an error is on its way out: a failed compaction must not replace it
                try:
                    store.close()
                except RunError as exc:
                    log.warning("%s", exc)
            else:
                store.close()


__all__ = ["ENGINES", "Engine", "JobCancelled", "LabelJob", "LabelOptions", "resolve_model", "ModelSpec", "aggregate", "clip_tensor", "decode_chunk", "label",
           "scores_from_logits",
           "plan_video", "write_embeddings"]

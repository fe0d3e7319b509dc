"""The labeling engine's stages on a Ray cluster (``falv label --engine ray``).

The same stages as the local engine, on another executor (Ray Data, streaming):

``plan + decode`` (Ray tasks, ``task_cpus`` each, one task per video): :func:`~falv.labeling.stages.run_task`
    plans the video, then decodes its chunks (:func:`~falv.labeling.stages.decode_tasks`) and checks
    their frames (:func:`~falv.labeling.stages.check_frames`); one row per window.
``model`` (an actor pool, ``map_batches(compute=ActorPoolStrategy(...))``): one actor per GPU, or per
    ``actor_cpus`` cores; clips of several videos are batched (``batch_size``) and scored by
    :func:`~falv.labeling.engine.score_windows`, the local engine's model step.
``aggregate + record`` (the driver): :class:`~falv.labeling.engine.Engine`'s own bookkeeping,
    aggregation and error records; :func:`falv.labeling.engine.label` appends them to
    ``labels.jsonl``, so formats, resume, the summary, the progress bar and exit codes are the
    local engine's.

The model actors are all started before any task, and Ray Data's per-operator resource
reservation is off: it left the decode operator one task at a time beside the actors, decoding
and scoring taking turns (see :func:`run_jobs_ray`).

Faults. Python errors of a stage never leave the task: they are that video's (typed) error
row, so they are never retried. A worker process that dies (a decoder crash, a lost node) is
retried by Ray up to ``task_retries`` times (``max_retries``; actors ``max_restarts`` and
``max_task_retries``), then its block is dropped (``max_errored_blocks=-1``) and the driver labels
the videos it never heard the end of itself, with the local engine (a decoder that crashes there
too: ``decoder_crashed``). Rows are keyed by (video, window),
so output repeated by a retry is counted once. The actor pool must start within
``wait_for_actors_s`` (``DataContext.wait_for_min_actors_s``), and a cluster without the CPUs or
GPUs asked for is refused before anything runs (:class:`falv.errors.RunError`).

A pass that stops moving (no row for ``stall_s`` seconds, or for ``wait_for_actors_s + stall_s``
before the first; seen once in a few runs after a node was removed, Ray Data's iterator waiting
for work that never came) is abandoned by a watchdog: its unfinished videos go to the driver's
local engine like those of a dropped block, so the run ends with one record per input.

Nothing reaches the network: no ``runtime_env`` (falv and its dependencies must be installed on
every node), usage statistics off (``RAY_USAGE_STATS_ENABLED=0``), no dashboard for a local Ray.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import pickle
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from falv.errors import ConfigError, FalvError, RunError

log = logging.getLogger(__name__)

#: Ray retries of a task whose worker died (a node lost, a decoder crash) before the video is
#: left to the driver's local engine.
TASK_RETRIES = 3


@dataclass(frozen=True)
class RayOptions:
    """Where and how the Ray engine runs (the labeling options themselves are :class:`LabelOptions`)."""

    address: str | None = None      # None: $RAY_ADDRESS, else a local Ray started for the run
    actors: int | None = None       # model actors (None: one per GPU, else one per 2 x actor_cpus cores)
    actor_cpus: float = 1.0         # cores per model actor (CPU models; torch threads)
    task_cpus: float = 1.0          # cores per plan/decode task
    task_retries: int = TASK_RETRIES
    wait_for_actors_s: float = 120.0
    # seconds without a row after which the pass is abandoned and its unfinished videos are labelled
    # on the driver (None: max(180, 2 x the decode timeout))
    stall_s: float | None = None

    def __post_init__(self) -> None:
        if self.actors is not None and self.actors < 1:
            raise ConfigError(f"actors must be >= 1, got {self.actors}")
        if not (self.actor_cpus > 0 and self.task_cpus > 0):
            raise ConfigError("actor_cpus and task_cpus must be > 0")
        if self.task_retries < 0 or not self.wait_for_actors_s > 0:
            raise ConfigError("task_retries must be >= 0 and wait_for_actors_s > 0")
        if self.stall_s is not None and not self.stall_s > 0:
            raise ConfigError(f"stall_s must be > 0 seconds, got {self.stall_s}")

    def stall_seconds(self, decode_timeout: float) -> float:
        return float(self.stall_s) if self.stall_s is not None else max(180.0, 2 * float(decode_timeout))


def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise RunError("--engine ray needs Ray: pip install 'falv[ray]'") from None
    return ray


@contextlib.contextmanager
def ray_session(address: str | None) -> Iterator[Any]:
    """Ray for one run: the one this process is already connected to, the cluster at ``address``
    (or ``$RAY_ADDRESS``), or a local Ray started now and stopped afterwards."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray = _import_ray()
    if ray.is_initialized():
        yield ray
        return
    target = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False,
                              "configure_logging": False}
    if target:
        _check_reachable(target)
    try:
        if target:
            ray.init(address=target, **kwargs)
        else:
            ray.init(address="local", include_dashboard=False, **kwargs)
    except Exception as exc:
        where = f"the Ray cluster at {target}" if target else "a local Ray"
        raise RunError(f"cannot start {where} ({type(exc).__name__}: {exc})") from exc
    try:
        yield ray
    finally:
        ray.shutdown()


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """A ``HOST:PORT`` address nothing answers on is one RunError at once: ``ray.init`` would
    retry the connection for minutes. Other forms (``auto``, ``ray://...``) are left to Ray."""
    import socket

    host, sep, port = address.rpartition(":")
    if not sep or not host or "/" in address or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise RunError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); is `ray start "
                       f"--head` running there, and is that its GCS port (6379 by default)?") from None


def _resources(ray: Any, options: Any, ropts: RayOptions) -> dict[str, Any]:
    """The actor pool's size and resources, checked against the cluster (a RunError, not a hang)."""
    total = ray.cluster_resources()
    cpus, gpus = float(total.get("CPU", 0)), int(total.get("GPU", 0))
    device = str(options.device)
    want_gpu = device.startswith("cuda") or (device == "auto" and gpus > 0)
    if device.startswith("cuda") and gpus < 1:
        raise RunError(f"--device {device}: the Ray cluster has no GPU (resources: {_describe(total)})")
    # An actor keeps its cores for the whole run: the cluster must hold one actor and one decode
    # task at once, or the pipeline would wait forever.
    need = ropts.task_cpus + (0 if want_gpu else ropts.actor_cpus)
    if cpus < need:
        raise RunError(f"the Ray cluster has {cpus:g} CPU(s); a decode task needs {ropts.task_cpus:g} and a "
                       f"model actor {0 if want_gpu else ropts.actor_cpus:g}, {need:g} at least "
                       f"(resources: {_describe(total)})")
    if want_gpu:
        size = ropts.actors or gpus
        if size > gpus:
            raise RunError(f"{size} model actor(s) asked for, one GPU each, but the Ray cluster has {gpus} GPU(s)")
        return {"size": size, "num_gpus": 1, "num_cpus": 1 if cpus >= gpus + ropts.task_cpus else 0, "device": "cuda"}
    size = ropts.actors or max(1, int(cpus // (2 * ropts.actor_cpus)))
    if size * ropts.actor_cpus + ropts.task_cpus > cpus:
        raise RunError(f"{size} model actor(s) of {ropts.actor_cpus:g} CPU(s) asked for, but the Ray cluster "
                       f"has {cpus:g} CPU(s) and decoding needs {ropts.task_cpus:g} more")
    return {"size": size, "num_gpus": 0, "num_cpus": ropts.actor_cpus,
            "device": "cpu" if device == "auto" else device}


def _describe(total: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in sorted(total.items()) if k in ("CPU", "GPU", "memory"))


# -- the stages as Ray runs them (top-level: they pickle by reference) ------------------------------


def _row(key: str, kind: str, item: Any) -> dict[str, Any]:
    return {"key": key, "kind": kind, "item": pickle.dumps(item, protocol=5)}


#: Tests: a folder where each plan + decode task writes its video and its start and end times.
DECODE_LOG_ENV = "FALV_TESTING_DECODE_LOG"


def plan_and_decode(row: dict[str, Any], spec: Any, options: Any) -> Iterator[dict[str, Any]]:
    """One video: its plan row, then per chunk its outcome row and one row per decoded window.
    Any Python error is that video's error row (never retried); only a dying worker is."""
    folder = os.environ.get(DECODE_LOG_ENV)
    if not folder:
        yield from _plan_and_decode(row, spec, options)
        return
    import json
    import time
    import uuid

    start = time.time()
    yield from _plan_and_decode(row, spec, options)
    with open(os.path.join(folder, f"{uuid.uuid4().hex}.json"), "w") as f:
        json.dump({"key": str(row["key"]), "start": start, "end": time.time()}, f)


def _plan_and_decode(row: dict[str, Any], spec: Any, options: Any) -> Iterator[dict[str, Any]]:
    from falv.labeling.stages import TASK_STAGES, check_frames, decode_tasks, failure, run_task

    key, path = str(row["key"]), str(row["path"])
    job_options = pickle.loads(row["options"]) or options
    temperature = job_options.temperature if job_options.temperature is not None else options.temperature
    try:
        plan = run_task({"kind": "plan", "args": (path, spec, job_options)})
        tasks = decode_tasks(path, plan, spec, options, plan.get("origin")) if plan.get("windows") else []
    except Exception as exc:
        yield _row(key, "plan", {"error": failure(exc, path, TASK_STAGES["plan"])})
        return
    yield _row(key, "plan", {"plan": plan})
    for c, task in enumerate(tasks):
        try:
            outcome = run_task(task)
            frames = check_frames(outcome["frames"], len(task["args"][1]), spec.num_frames)
        except Exception as exc:
            yield _row(key, "chunk", {"chunk": c, "error": failure(exc, path, TASK_STAGES["decode"])})
            continue
        yield _row(key, "chunk", {"chunk": c, "warnings": list(outcome["warnings"]),
                                  "frames_decoded": int(outcome["frames_decoded"])})
        for j in range(frames.shape[0]):
            yield _row(key, "window", {"w": task["first"] + j, "frames": frames[j], "crops": job_options.crops,
                                       "path": path, "temperature": temperature})


class ModelActor:
    """The model in a Ray actor: scores the window rows of a batch (other rows pass through).

    The constructor returns at once and the model is prepared on a thread of the actor (torch's
    import, the weights from the object store, casting and packing: seconds), so that Ray Data,
    which waits for the pool's first actor before it starts any task, starts decoding meanwhile;
    the first batch waits for the model. A model that cannot be prepared stops the run (one
    :class:`~falv.errors.RunError`, as with the local engine)."""

    def __init__(self, model_ref: Any, spec: Any, options: Any, multilabel: bool, device: str) -> None:
        import threading

        self.spec, self.multilabel = spec, multilabel
        self.runner: Any = None
        self._error: str | None = None
        self._threads: int | None = None  # torch threads (CPU): torch's setting is per thread
        self._loading = threading.Thread(target=self._load, args=(model_ref, options, device),
                                         name="falv-model-load", daemon=True)
        self._loading.start()

    def _load(self, model_ref: Any, options: Any, device: str) -> None:
        try:
            import ray
            import torch

            from falv.export.runtime import prepare_runtime

            if device == "cpu":
                self._threads = max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1) or 1))
                torch.set_num_threads(self._threads)  # this thread's; the scoring thread sets its own
            model = ray.get(model_ref[0])
            self.runner = prepare_runtime(model, options.runtime, precision=options.precision, device=device)
        except Exception as exc:  # noqa: BLE001 - reported as the run's error by the first batch
            self._threads = None  # nothing will score here
            self._error = (str(exc) if isinstance(exc, FalvError) else
                           f"the model could not be prepared on a Ray worker ({type(exc).__name__}: {exc})")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._loading.join()
        if self._threads:  # once, on the thread that scores
            import torch

            torch.set_num_threads(self._threads)
            self._threads = None
        keys, kinds, items = list(batch["key"]), list(batch["kind"]), [pickle.loads(b) for b in batch["item"]]
        if self._error is not None:
            return _batch([_row(keys[0], "fatal", {"error": self._error})])
        windows = [i for i, k in enumerate(kinds) if k == "window"]
        if windows:
            try:
                results, _ = score_windows_for(self, [items[i] for i in windows])
            except FalvError as exc:  # the model itself failed: the driver stops the run
                return _batch([_row(keys[windows[0]], "fatal", {"error": str(exc)})])
            for i, result in zip(windows, results):
                kinds[i] = "scores"
                items[i] = {"w": items[i]["w"], **result}
        return _batch([_row(k, kind, item) for k, kind, item in zip(keys, kinds, items)])


def score_windows_for(actor: ModelActor, items: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    from falv.labeling.engine import score_windows

    return score_windows(actor.runner, actor.spec, actor.multilabel,
                         [(it["frames"], it["crops"], it["path"], it["temperature"]) for it in items])


def _batch(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    out = {"key": np.empty(len(rows), dtype=object), "kind": np.empty(len(rows), dtype=object),
           "item": np.empty(len(rows), dtype=object)}
    for i, r in enumerate(rows):
        out["key"][i], out["kind"][i], out["item"][i] = r["key"], r["kind"], r["item"]
    return out


# -- the driver ------------------------------------------------------------------------------------


def run_jobs_ray(engine: Any, jobs: Iterable[Any], ropts: RayOptions) -> Iterator[tuple[Any, Any]]:
    """Label jobs on Ray with ``engine``'s model and options; yields ``(job, record)`` in
    completion order, exactly one per job, like :meth:`Engine.run_jobs`.

    Videos whose rows were lost (their task or the actor scoring them died more than
    ``task_retries`` times, or their output lived on a node that went away) are labelled
    afterwards on this machine by the local engine (``engine.run_jobs``: the same stages, so the
    same records; a decoder that crashes there too is that video's ``decoder_crashed``). Not a
    second Ray pass: after a node loss Ray restarts the old pool's actors on the nodes that are
    left even once nothing references them (seen with Ray 2.60), and on a small cluster they
    held the cores a new pass's decode tasks needed, which stalled it."""
    from falv.labeling.engine import LabelJob

    opts = engine.options
    jobs = [j if isinstance(j, LabelJob) else LabelJob(os.fspath(j)) for j in jobs]
    if len({j.key for j in jobs}) != len(jobs):
        raise ValueError("job keys must be unique")
    if not jobs:
        return
    with ray_session(ropts.address) as ray:
        from ray.data import DataContext

        pool = _resources(ray, opts, ropts)
        ctx = DataContext.get_current()
        ctx.max_errored_blocks = -1            # a block whose task died task_retries+1 times: its videos go again
        ctx.wait_for_min_actors_s = ropts.wait_for_actors_s
        ctx.actor_task_retry_on_errors = False  # Python errors are rows, never retried
        ctx.enable_progress_bars = False       # falv's own progress bar
        ctx.print_on_execution_start = False
        # No per-operator reservation (half the CPUs, split evenly): beside model actors holding
        # their cores it left decoding one task at a time (docs/labeling.md). The actors start
        # before any task; decode tasks are bounded by the CPUs and downstream backpressure.
        ctx.op_resource_reservation_enabled = False
        ctx.execution_options.preserve_order = False
        # an actor that dies while it loads the model (a lost node) is replaced, not fatal
        ctx.max_consecutive_actor_init_deaths = ropts.task_retries
        # a pipeline that stops moving fails instead of hanging (a decode task is bounded by --timeout)
        ctx.execution_no_progress_timeout_s = max(600.0, 4 * opts.timeout + ropts.wait_for_actors_s)
        logging.getLogger("ray.data").setLevel(logging.ERROR)  # its notices are not falv's output
        # The model goes to the actors by reference (inside a list, so that Ray does not resolve it
        # into a constructor argument held in the object store: restarted actors fetch it again).
        model_ref = [ray.put(engine._model)]
        left: list[Any] = []
        yield from _one_pass(ray, engine, jobs, ropts, pool, model_ref, left)
    if left:
        log.warning("Ray lost the work of %d video(s) (a worker or a node died with it); labelling them on "
                    "this machine", len(left))
        yield from engine.run_jobs(left)


def _one_pass(ray: Any, engine: Any, jobs: list[Any], ropts: RayOptions, pool: dict[str, Any],
              model_ref: list[Any], left: list[Any]) -> Iterator[tuple[Any, Any]]:
    """One Ray Data run over ``jobs``: yields the finished ones; appends to ``left`` those whose
    rows never all arrived."""
    from falv.labeling.stages import failure

    opts = engine.options
    by_key = {j.key: j for j in jobs}
    items = [{"key": j.key, "path": j.path, "options": pickle.dumps(j.options)} for j in jobs]
    ds = ray.data.from_items(items, override_num_blocks=len(items))  # one task per video
    # Ray 2.60's named parameters have no retry settings: max_retries, max_restarts and
    # max_task_retries go as ray_remote_args (deprecated for 2.64), whose default for tasks is
    # -1, a crashing decoder retried forever.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
        # the engine's temperature (the options', else the model config's) travels with the options
        ds = _pipeline(ray, ds, engine, dataclasses.replace(opts, temperature=engine.temperature), ropts, pool,
                       model_ref)

    videos: dict[str, Any] = {}
    seen: dict[str, dict[str, set]] = {}
    waiting: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    done: set[str] = set()

    def finish(key: str, video: Any) -> tuple[Any, Any]:
        done.add(key)
        videos.pop(key, None)
        return video.job, engine._finish(video)

    def take(key: str, kind: str, item: dict[str, Any]) -> tuple[Any, Any] | None:
        job = by_key[key]
        if kind == "plan":
            if key in videos:  # a retry's repeat
                return None
            if "error" in item:
                done.add(key)
                return job, engine._error_record(job.path, item["error"])
            try:
                video, _ = engine._add_video(job, item["plan"])
            except Exception as exc:
                done.add(key)
                return job, engine._error_record(job.path, failure(exc, job.path, "probing and planning"),
                                                 item["plan"].get("info"))
            videos[key] = video
            seen[key] = {"chunk": set(), "w": set()}
            out = None
            for later in waiting.pop(key, []):
                out = out or (take(key, *later) if key not in done else None)
            return out
        video = videos[key]
        marks = seen[key]
        if kind == "chunk":
            if item["chunk"] in marks["chunk"]:
                return None
            marks["chunk"].add(item["chunk"])
            video.chunks_left -= 1
            if "error" in item:
                video.error = video.error or item["error"]
            else:
                engine.frames_decoded += item["frames_decoded"]
                video.warnings.extend(str(w) for w in item["warnings"])
        elif kind == "scores":
            if item["w"] in marks["w"]:
                return None
            marks["w"].add(item["w"])
            video.windows_left -= 1
            if "error" in item:
                video.error = video.error or item["error"]
            else:
                video.scores[item["w"]], video.embeds[item["w"]] = item["scores"], item["embeds"]
                engine.clips_run += video.options.crops
        if video.chunks_left == 0 and (video.error is not None or video.windows_left == 0):
            return finish(key, video)
        return None

    stall = ropts.stall_seconds(opts.timeout)
    try:
        for batch in _watched(ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1),
                              first=ropts.wait_for_actors_s + stall, then=stall):
            for key, kind, blob in zip(batch["key"], batch["kind"], batch["item"]):
                key = str(key)
                item = pickle.loads(blob)
                if kind == "fatal":
                    raise RunError(item["error"])
                if key in done:
                    continue  # a retry's repeat, or windows of a video that already failed
                if kind != "plan" and key not in videos:
                    waiting.setdefault(key, []).append((kind, item))
                    continue
                out = take(key, kind, item)
                if out is not None:
                    yield out
    except _Stalled as stalled:
        log.warning("the Ray pipeline made no progress for %.0f s; the %d video(s) it had not finished are "
                    "labelled on this machine", stalled.seconds, sum(1 for j in jobs if j.key not in done))
    except RunError:
        raise
    except Exception as exc:
        raise RunError(f"the Ray pipeline failed ({type(exc).__name__}: {_first_line(exc)})") from exc
    left.extend(j for j in jobs if j.key not in done)


class _Stalled(Exception):
    def __init__(self, seconds: float) -> None:
        super().__init__(f"no progress for {seconds:.0f} s")
        self.seconds = seconds


def _watched(batches: Iterator[Any], first: float, then: float) -> Iterator[Any]:
    """``batches`` read on a thread and yielded here; :class:`_Stalled` when none arrives for
    ``first`` seconds (the first one: the model actors start meanwhile), then ``then`` seconds.
    The reader thread is a daemon: a stalled Ray iterator cannot be interrupted, and it ends with
    the Ray session (``ray.shutdown`` or the driver's exit)."""
    import queue
    import threading

    box: queue.Queue = queue.Queue(maxsize=4)
    stop = threading.Event()

    def put(item: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                box.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for batch in batches:
                if not put(("batch", batch)):
                    return
            put(("end", None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            put(("error", exc))

    threading.Thread(target=read, name="falv-ray-reader", daemon=True).start()
    limit = first
    try:
        while True:
            try:
                kind, value = box.get(timeout=limit)
            except queue.Empty:
                raise _Stalled(limit) from None
            if kind == "end":
                return
            if kind == "error":
                raise value
            limit = then
            yield value
    finally:
        stop.set()


def _pipeline(ray: Any, ds: Any, engine: Any, opts: Any, ropts: RayOptions, pool: dict[str, Any],
              model_ref: list[Any]) -> Any:
    """plan + decode tasks -> model actor pool (the Ray Data plan)."""
    from ray.data import ActorPoolStrategy

    ds = ds.flat_map(plan_and_decode, fn_kwargs={"spec": engine.spec, "options": opts},
                     num_cpus=ropts.task_cpus, max_retries=ropts.task_retries, retry_exceptions=False)
    return ds.map_batches(
        ModelActor, fn_constructor_kwargs={"model_ref": model_ref, "spec": engine.spec, "options": opts,
                                           "multilabel": engine.multilabel, "device": pool["device"]},
        batch_size=max(1, opts.batch_size // max(1, opts.crops)), batch_format="numpy",
        # every actor started (and waited for) before any task; a pool that lost a node goes on smaller
        compute=ActorPoolStrategy(min_size=1, max_size=pool["size"], initial_size=pool["size"]),
        num_cpus=pool["num_cpus"], num_gpus=pool["num_gpus"],
        max_restarts=ropts.task_retries, max_task_retries=ropts.task_retries)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


__all__ = ["DECODE_LOG_ENV", "RayOptions", "TASK_RETRIES", "run_jobs_ray", "ray_session"]

"""The labeling service behind ``falv serve``: one model, one engine, a persistent queue.

:class:`LabelService` owns the :class:`~falv.labeling.engine.Engine` and runs it on one
background thread over a live job source (the queued jobs of the :class:`JobStore`), so
that every request shares the engine's batches and decoding workers. Records go back to
the store as the engine finishes them. Nothing here knows HTTP: the app in
:mod:`falv.serve.app` is routing, validation and auth around this class.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from falv.errors import ConfigError, FalvError
from falv.serve.jobs import FINAL, Job, JobStore, now_iso

log = logging.getLogger(__name__)

#: The label options a job may set (the rest are the server's: batch, workers, precision...).
JOB_OPTIONS = ("clips", "crops", "window", "stride", "top_k", "threshold", "smoothing", "min_duration", "level",
               "max_depth")
_INT_OPTIONS = ("clips", "crops", "top_k", "smoothing", "level", "max_depth")


class QueueFull(FalvError):
    """The queue holds ``max_queue`` unfinished jobs; try again later (HTTP 429)."""


class PathNotAllowed(FalvError):
    """A path outside every ``--allow-root`` folder (HTTP 403)."""


@dataclass
class ServeSettings:
    """How ``falv serve`` runs (the command's options)."""

    model: str
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = field(default_factory=lambda: default_data_dir())
    allow_roots: tuple[Path, ...] = ()
    token: str | None = None
    max_upload_mb: float = 2048.0
    max_queue: int = 10_000
    precision: str = "auto"
    runtime: str = "torch"
    device: str = "auto"
    batch_size: int = 4
    workers: int = 2
    timeout: float = 120.0
    basic_auth: str | None = None  # "user:password" for Label Studio's ML-backend calls
    model_version: str | None = None
    train_epochs: int | None = None  # fine-tunes from /webhook (None: falv train's default)
    train_on_annotations: bool = False  # new annotations start a fine-tune too, not only START_TRAINING
    allow_streams: tuple[str, ...] = ()  # prefixes of stream sources /v1/stream may open (URLs, devices)
    max_streams: int = 4

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).expanduser().resolve()
        self.allow_roots = tuple(Path(r).expanduser().resolve() for r in self.allow_roots)
        if self.max_upload_mb <= 0 or self.max_queue < 1:
            raise ConfigError("--max-upload-mb must be > 0 and the queue must hold at least one job")
        if not is_loopback(self.host) and not self.token:
            raise ConfigError(f"refusing to listen on {self.host} without --token: anyone who can reach it "
                              "could read files under --allow-root and run the model (bind 127.0.0.1, or give "
                              "--token)")
        for root in self.allow_roots:
            if not root.is_dir():
                raise ConfigError(f"--allow-root {root}: not a folder")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


def default_data_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "falv" / "serve"


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def confine(path: str, roots: tuple[Path, ...]) -> Path:
    """``path`` resolved (symlinks and ``..``) if it lies under one of ``roots``, else PathNotAllowed."""
    if not roots:
        raise PathNotAllowed("this server reads no local paths (start it with --allow-root DIR); upload the file")
    if not isinstance(path, str) or not path or "\x00" in path:
        raise PathNotAllowed("not a usable path")
    resolved = Path(os.path.realpath(os.path.expanduser(path)))
    for root in roots:
        if resolved == root or root in resolved.parents:
            return resolved
    raise PathNotAllowed(f"{path} is outside the allowed folders ({', '.join(map(str, roots))})")


def stream_source(source: str, settings: ServeSettings) -> str:
    """A live source /v1/stream may open: one that starts with an ``--allow-stream`` prefix
    (``udp://127.0.0.1:5000``, ``rtsp://camera/``, ``/dev/video0``), or a path (a FIFO, a
    growing file) under an ``--allow-root``; anything else is PathNotAllowed."""
    if not isinstance(source, str) or not source:
        raise PathNotAllowed("give source= (a URL, a device or a path)")
    if any(source.startswith(prefix) for prefix in settings.allow_streams):
        return source
    if "://" in source or source.startswith("/dev/"):
        raise PathNotAllowed(f"{source}: not an allowed stream (start the server with --allow-stream PREFIX)")
    return str(confine(source, settings.allow_roots))


def job_options(raw: dict[str, Any]) -> dict[str, Any]:
    """The label options of one job, checked (ConfigError for unknown keys or bad values)."""
    from falv.labeling.stages import LabelOptions

    unknown = sorted(set(raw) - set(JOB_OPTIONS))
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)}; valid options: {', '.join(JOB_OPTIONS)}")
    options = {}
    for key, value in raw.items():
        if value is None or value == "":
            continue
        if isinstance(value, str):  # multipart form fields are text
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{key} must be a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number, got {value!r}")
        if key in _INT_OPTIONS:
            if value != int(value):
                raise ConfigError(f"{key} must be an integer, got {value!r}")
            value = int(value)
        options[key] = value if key in _INT_OPTIONS else float(value)
    LabelOptions(**_label_fields(options))  # the engine's own checks (e.g. stride <= window)
    return options


def _label_fields(options: dict[str, Any]) -> dict[str, Any]:
    fields = dict(options)
    if "threshold" in fields:
        fields["background_threshold"] = fields.pop("threshold")
    return fields


class LabelService:
    """The model, the engine thread and the job store of one server."""

    def __init__(self, settings: ServeSettings) -> None:
        from falv.labeling.stages import LabelOptions
        from falv.hub.families import load_model

        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.uploads = settings.data_dir / "uploads"
        self.uploads.mkdir(exist_ok=True)
        self.store = JobStore(settings.data_dir / "jobs.sqlite3")
        model = load_model(settings.model)
        model.name_or_path = settings.model  # records name the model as `falv label --model` does
        self.model_class = type(model).__name__  # /health says which family serves
        self.labels: list[str] = list(model.config.action_labels)  # what labeling emits (no background)
        self.multilabel = bool(model.config.is_multilabel)
        self.model_version = settings.model_version or f"falv:{Path(settings.model).name or settings.model}"
        self.base_options = LabelOptions(batch_size=settings.batch_size, workers=settings.workers,
                                         timeout=settings.timeout, precision=settings.precision,
                                         runtime=settings.runtime, device=settings.device)
        from falv.labeling.engine import Engine

        self.engine = Engine(model, self.base_options, None, settings.model)  # checks precision/device now
        self.state = "starting"
        self.error: str | None = None
        self._stop = threading.Event()
        self._swap = threading.Event()  # set: the engine drains, then the next model takes over
        self._swap_done = threading.Event()
        self._next: tuple[Any, str] | None = None
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self.training: dict[str, Any] = {"status": "idle"}
        self._train_lock = threading.Lock()
        self.current_model = settings.model

    # -- life cycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        recovered = self.store.recover()
        if recovered:
            log.info("%d job(s) that were running when the server stopped are queued again", recovered)
        self._thread = threading.Thread(target=self._run, name="falv-engine", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.store.close()

    def _source(self) -> Any:
        from falv.labeling.engine import LabelJob
        from falv.video.pool import WAIT

        while not self._stop.is_set() and not self._swap.is_set():
            job = self.store.claim_next()
            if job is None:
                yield WAIT
                continue
            options = dataclasses.replace(self.base_options, **_label_fields(job.options))
            self._notify()
            yield LabelJob(job.path, options=options, key=job.id)

    def _run(self) -> None:
        self.state = "UP"
        try:
            while True:
                for job, record in self.engine.run_jobs(self._source(), tick=0.05, on_progress=self._progress):
                    self.store.finish(job.key, record.to_dict())
                    self._notify()
                if not self._swap.is_set() or self._stop.is_set():
                    break
                self._take_next_model()
        except Exception as exc:  # the model or the disk: the server cannot label any more
            self.state = "ERROR"
            self.error = f"{type(exc).__name__}: {exc}"
            log.error("the labeling engine stopped: %s", self.error)
        finally:
            if self.state != "ERROR":
                self.state = "STOPPED"
            self._notify()

    # -- a new model (fine-tuned on corrections) ------------------------------------------------------

    def use_model(self, model_dir: str, version: str) -> None:
        """Label with ``model_dir`` from now on: jobs in flight finish on the current model, queued
        ones run on the new one, which becomes ``model_version`` (thread-safe). Returns once the
        engine thread has switched."""
        from falv.labeling.engine import Engine
        from falv.hub.families import load_model

        model = load_model(model_dir)
        model.name_or_path = str(model_dir)
        if list(model.config.action_labels) != self.labels:
            raise ConfigError(f"the new model's labels {model.config.action_labels} differ from the served ones "
                              f"{self.labels}")
        self._next = (Engine(model, self.base_options, None, str(model_dir)), version)
        self.model_class = type(model).__name__
        self.current_model = str(model_dir)
        self._swap_done.clear()
        self._swap.set()
        self._notify()
        if self._thread is None or not self._thread.is_alive():  # not started (tests): swap now
            self._take_next_model()
        while self._swap.is_set() and self._thread is not None and self._thread.is_alive():
            self._swap_done.wait(0.1)  # until the engine thread has drained and taken the new model

    def _take_next_model(self) -> None:
        if self._next is not None:
            self.engine, self.model_version = self._next
            self._next = None
        self._swap.clear()
        self._swap_done.set()

    def start_training(self, trainer: Any) -> dict[str, Any]:
        """Run ``trainer(service) -> (model_dir, version)`` on a thread unless one runs; the model it
        returns takes over. ``self.training`` says how it went."""
        if not self._train_lock.acquire(blocking=False):
            return {"status": "already training", **self.training}

        def work() -> None:
            try:
                self.training = {"status": "training", "started": now_iso()}
                model_dir, version = trainer(self)
                self.use_model(model_dir, version)
                self.training = {"status": "done", "model_version": version, "model": str(model_dir),
                                 "finished": now_iso()}
            except Exception as exc:
                self.training = {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "finished": now_iso()}
                log.error("training failed: %s", self.training["error"])
            finally:
                self._train_lock.release()
                self._notify()

        threading.Thread(target=work, name="falv-train", daemon=True).start()
        return {"status": "training started"}

    def _progress(self, job: Any, done: int, total: int) -> None:
        self.store.set_progress(job.key, done / max(total, 1))
        self._notify()

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    # -- jobs ----------------------------------------------------------------------------------------

    def submit(self, path: Path, name: str, options: dict[str, Any], *, upload: bool = False,
               job_id: str | None = None) -> Job:
        if "level" in options or "max_depth" in options:  # a level this model has (ConfigError: HTTP 422)
            from falv.labeling.stages import LabelOptions

            self.engine.label_view(LabelOptions(**_label_fields(options)))
        if self.store.count("queued", "running") >= self.settings.max_queue:
            raise QueueFull(f"the queue is full ({self.settings.max_queue} unfinished jobs); try again later")
        job = self.store.add(name, str(path), options, upload=upload, job_id=job_id)
        self._notify()
        return job

    def cancel(self, job_id: str) -> Job | None:
        job = self.store.cancel(job_id)
        if job is not None:
            self.engine.cancel(job_id)
            self._notify()
        return job

    def wait(self, job_id: str, timeout: float) -> Job | None:
        """The job once it is final, or as it is after ``timeout`` seconds."""
        import time

        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                job = self.store.get(job_id)
                left = deadline - time.monotonic()
                if job is None or job.status in FINAL or left <= 0 or self.state == "ERROR":
                    return job
                self._changed.wait(min(left, 0.5))

    def wait_change(self, timeout: float) -> None:
        with self._changed:
            self._changed.wait(timeout)

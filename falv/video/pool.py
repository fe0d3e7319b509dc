"""Decode in worker processes so that one bad file cannot take the run down.

FFmpeg decoders can crash (segfault) or hang on corrupt input. Each item is
therefore handled by a worker process; the parent watches every worker and

- yields ``(item, result)`` as soon as a worker finishes (completion order);
- yields ``(item, DecoderCrashedError)`` when the worker dies (signal,
  ``os._exit``, killed by the OOM killer) and starts a replacement;
- yields ``(item, DecodeTimeoutError)`` when an item runs longer than
  ``timeout`` seconds, kills that worker and starts a replacement;
- yields ``(item, err)`` when ``fn`` raises: a :class:`VideoError` or
  :class:`falv.errors.InternalError` as is, any other exception wrapped in an
  :class:`~falv.errors.InternalError` (error type ``internal``).

Each worker holds one item at a time and the parent pulls the next item from
``items`` only when a worker is free, so at most ``workers`` items are in flight
and ``items`` may be a lazy generator over millions of files (backpressure: if
the consumer stops iterating, nothing more is submitted). Workers start with
the ``forkserver`` method on Linux (``spawn`` elsewhere), never a plain
``fork`` of a parent whose torch/OpenMP threads could deadlock the child.
``fn`` must be a picklable top-level function and items and results plain
picklable data (paths, lists of floats, numpy arrays).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.connection import Connection, wait
from typing import Any, TypeVar

from falv.errors import FalvError, InternalError
from falv.video.errors import DecoderCrashedError, DecodeTimeoutError, UnexpectedDecodeError, VideoError

T = TypeVar("T")
R = TypeVar("R")

class WorkerStartError(FalvError):
    """The worker processes die before taking any item: a setup problem, not a bad file."""


#: What to check when worker processes die at start (they re-import the caller's main module).
MAIN_GUARD_HINT = ("If falv is called from a script, put the call under `if __name__ == \"__main__\":` "
                   "(worker processes re-import the main module)")

#: Seconds a worker gets to exit after SIGTERM before SIGKILL.
KILL_GRACE_S = 1.0

#: An item source may yield ``WAIT`` when it has no item *yet* but will have more
#: once it has seen results (e.g. decode tasks created from plan results) or later
#: (a live queue): the pool then hands out nothing, collects results, and asks again.
WAIT: Any = type("Wait", (), {"__repr__": lambda self: "WAIT"})()

#: With ``tick=``, yielded as ``(TICK, None)`` when nothing finished for that long.
TICK: Any = type("Tick", (), {"__repr__": lambda self: "TICK"})()


def default_start_method() -> str:
    """``forkserver`` where available (Linux), else ``spawn``."""
    return "forkserver" if "forkserver" in mp.get_all_start_methods() and sys.platform != "darwin" else "spawn"


def item_path(item: Any) -> str:
    """The file an item names, for error messages: a path, ``item["path"]``, ``item[0]``, or ``repr``."""
    if isinstance(item, (str, os.PathLike)):
        return os.fspath(item)
    if isinstance(item, dict) and "path" in item:
        return os.fspath(item["path"])
    if isinstance(item, (tuple, list)) and item and isinstance(item[0], (str, os.PathLike)):
        return os.fspath(item[0])
    return repr(item)


def _worker_main(conn: Connection, fn: Callable[[Any], Any]) -> None:
    """Loop of one worker process: receive ``(task_id, item)``, send ``(task_id, ok, value)``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        task_id, item = message
        conn.send(("start", task_id, None))  # the parent's clock for this item starts now
        try:
            value: Any = fn(item)
        except (VideoError, InternalError) as exc:
            value = exc
        except BaseException as exc:  # report, never die on a Python error
            value = InternalError.wrap(exc, item_path(item), "running a worker task")
        try:
            conn.send(("done", task_id, value))
        except Exception as exc:  # result not picklable
            conn.send(("done", task_id, UnexpectedDecodeError(item_path(item), f"cannot send the result back: {exc}")))


class _Worker:
    def __init__(self, ctx: Any, fn: Callable[[Any], Any]) -> None:
        self.conn, child = ctx.Pipe(duplex=True)
        self.process = ctx.Process(target=_worker_main, args=(child, fn), daemon=True)
        self.process.start()
        child.close()
        self.task: tuple[int, Any] | None = None
        self.started = 0.0
        self.ready = False  # set once the process has taken its first task

    def submit(self, task_id: int, item: Any) -> None:
        self.task = (task_id, item)
        self.started = time.monotonic()
        self.conn.send((task_id, item))

    def stop(self, kill: bool = False) -> None:
        if self.process.is_alive():
            if kill:
                self.process.kill()
            else:
                try:
                    self.conn.send(None)
                except (OSError, ValueError):
                    pass
                self.process.join(KILL_GRACE_S)
                if self.process.is_alive():
                    self.process.terminate()
                    self.process.join(KILL_GRACE_S)
                    if self.process.is_alive():
                        self.process.kill()
        self.process.join(KILL_GRACE_S)
        self.conn.close()


def _exit_description(exitcode: int | None) -> str:
    if exitcode is None:
        return "the decoder process stopped responding"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"the decoder process crashed ({name}) on this file"
    return f"the decoder process exited unexpectedly (exit code {exitcode}) on this file"


def decode_in_workers(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    workers: int = 2,
    timeout: float | None = 60.0,
    start_method: str | None = None,
    tick: float | None = None,
) -> Iterator[tuple[T, R | VideoError]]:
    """Run ``fn(item)`` for every item in worker processes; yield ``(item, result_or_error)``.

    See the module docstring for the guarantees. ``timeout`` is the wall-clock
    bound per item in seconds (``None``: no bound). Results come in completion
    order, each with its input item. Closing the iterator early (``break``)
    stops the workers. ``tick`` (seconds): yield ``(TICK, None)`` whenever that long
    passes without a result, and let ``items`` yield ``WAIT`` with nothing in flight
    (a live source that is idle; without ``tick`` that is an error).
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    ctx = mp.get_context(start_method or default_start_method())
    module = getattr(fn, "__module__", None)
    if module and ctx.get_start_method() == "forkserver":
        # The fork server imports fn's module once (numpy, PyAV, ...) and every worker forks
        # with it loaded: ~0.3 s less before the first result. No effect once the server runs.
        ctx.set_forkserver_preload([module])
    pending = iter(items)
    exhausted = False
    pool: list[_Worker] = []
    next_id = 0
    try:
        while True:
            # hand out work to idle workers (start them lazily, as many as needed)
            while not exhausted:
                idle = next((w for w in pool if w.task is None), None)
                if idle is None and len(pool) < workers:
                    idle = _Worker(ctx, fn)
                    pool.append(idle)
                if idle is None:
                    break
                try:
                    item = next(pending)
                except StopIteration:
                    exhausted = True
                    break
                if item is WAIT:
                    break
                idle.submit(next_id, item)
                next_id += 1
            busy = [w for w in pool if w.task is not None]
            if not busy:
                if exhausted:
                    return
                if tick is None:
                    raise RuntimeError("the item source yielded WAIT while no item was in flight")
                time.sleep(tick)  # an idle live source: look again soon
                yield TICK, None
                continue
            wait_for: float | None = None
            if timeout is not None:
                now = time.monotonic()
                wait_for = max(0.0, min(w.started + timeout for w in busy) - now)
            if tick is not None:
                wait_for = tick if wait_for is None else min(wait_for, tick)
            handles: dict[Any, _Worker] = {}
            for w in busy:
                handles[w.conn] = w
                handles[w.process.sentinel] = w
            ready = wait(list(handles), timeout=wait_for)
            if not ready and tick is not None:
                yield TICK, None
            done: set[int] = set()
            for handle in ready:
                w = handles[handle]
                if id(w) in done or w.task is None:
                    continue
                done.add(id(w))
                task_id, item = w.task
                outcome = _collect(w)
                if outcome is _NOT_YET:
                    continue
                if outcome is None:  # the worker died: report and replace it
                    w.stop(kill=True)
                    pool.remove(w)
                    if not w.ready:  # it never got as far as its first item: no file is to blame
                        raise WorkerStartError(
                            "decoding worker processes could not start (they exited before taking any "
                            f"work). {MAIN_GUARD_HINT}."
                        )
                    yield item, DecoderCrashedError(item_path(item), _exit_description(w.process.exitcode))
                    continue
                w.task = None
                yield item, outcome
            if timeout is not None:
                now = time.monotonic()
                for w in [w for w in pool if w.task is not None and now - w.started > timeout]:
                    _, item = w.task  # type: ignore[misc]
                    # The result may be waiting unread (the consumer was busy): take it if so.
                    outcome = _collect(w)
                    if outcome is not _NOT_YET and outcome is not None:
                        w.task = None
                        yield item, outcome
                        continue
                    if outcome is _NOT_YET and time.monotonic() - w.started <= timeout:
                        continue  # its clock was only just started
                    w.stop(kill=True)
                    pool.remove(w)
                    yield item, DecodeTimeoutError(
                        item_path(item), f"decoding took longer than the {timeout:g} s time limit; skipped"
                    )
    finally:
        for w in pool:
            w.stop(kill=w.task is not None)


_NOT_YET = object()


def _collect(worker: _Worker) -> Any:
    """Read what the worker sent: its result, :data:`_NOT_YET` (only the start
    notice so far), or ``None`` if it died before answering."""
    try:
        while worker.conn.poll():
            kind, task_id, value = worker.conn.recv()
            if worker.task is None or task_id != worker.task[0]:
                continue
            if kind == "start":
                worker.started = time.monotonic()
                worker.ready = True
                continue
            return value
    except (EOFError, OSError):
        return None
    except Exception as exc:  # the result could not be unpickled
        path = item_path(worker.task[1]) if worker.task is not None else None
        return UnexpectedDecodeError(path, f"cannot read the worker's result: {exc}")
    if worker.process.is_alive():
        return _NOT_YET
    return None


__all__ = ["TICK", "WAIT", "WorkerStartError", "decode_in_workers", "default_start_method", "item_path"]

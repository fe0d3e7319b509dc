"""Errors a user can act on. The CLI prints their message in one line, no traceback."""

from __future__ import annotations

import os


class FalvError(Exception):
    """Base class of every error falv raises on purpose."""


class ConfigError(FalvError, ValueError):
    """A configuration value is invalid (unknown scheme, bad size, ...)."""


class CheckpointError(FalvError):
    """A checkpoint cannot be read or does not match the model it is loaded into."""


class RunError(FalvError):
    """An error that concerns the whole run, not one input: the model, the output folder,
    the disk. It stops ``falv label`` / ``falv evaluate`` with one line and exit code 3."""


class InternalError(FalvError):
    """An exception nobody foresaw while handling one input (a bug, or an input stranger
    than any test): recorded as that input's error of type ``internal`` with the
    exception's class and message; the run goes on.

    Picklable, so worker processes can hand it back.
    """

    code = "internal"

    def __init__(self, path: str | None, stage: str, exc_type: str, detail: str) -> None:
        self.path, self.stage, self.exc_type = path, stage, exc_type
        self.detail = " ".join(str(detail).split())
        where = f"{path}: " if path else ""
        super().__init__(f"{where}internal error while {stage} ({exc_type}: {self.detail or exc_type})")

    @classmethod
    def wrap(cls, error: BaseException, path: str | None, stage: str) -> InternalError:
        """``error`` as an internal error of ``path`` raised in ``stage`` (itself if it already is one)."""
        if isinstance(error, InternalError):
            return error
        return cls(path, stage, type(error).__name__, str(error))

    def __reduce__(self) -> tuple:
        return (type(self), (self.path, self.stage, self.exc_type, self.detail))


def error_fields(error: BaseException, path: str | os.PathLike[str] | None = None,
                 stage: str = "labeling") -> tuple[str, str]:
    """``(type, message)`` of the error record for ``error``: its ``code`` when it has one
    (video errors, :class:`InternalError`), else ``"internal"`` with the exception's class and
    message (raised while ``stage``)."""
    code = getattr(error, "code", None)
    if isinstance(code, str) and code:
        return code, str(error) or type(error).__name__
    wrapped = InternalError.wrap(error, None if path is None else os.fspath(path), stage)
    return wrapped.code, str(wrapped)

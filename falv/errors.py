"""Errors a user can act on. The CLI prints their message in one line, no traceback."""

from __future__ import annotations


class FalvError(Exception):
    """Base class of every error falv raises on purpose."""


class ConfigError(FalvError, ValueError):
    """A configuration value is invalid (unknown scheme, bad size, ...)."""


class CheckpointError(FalvError):
    """A checkpoint cannot be read or does not match the model it is loaded into."""

"""Optional integrations with other libraries, activated only when they are installed."""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import warnings
from collections.abc import Callable

_HOOKS: dict[str, list[Callable[[], None]]] = {}


class _PostImportFinder(importlib.abc.MetaPathFinder):
    """Runs registered callbacks right after a module has been imported.

    ``import falv`` must stay cheap, yet falv's classes must be known to
    transformers' Auto classes as soon as transformers is used: the callback runs
    when (and only if) the user imports transformers.
    """

    def find_spec(self, fullname, path=None, target=None):  # noqa: D401
        if fullname not in _HOOKS:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _HookedLoader(spec.loader, fullname)
                return spec
        return None


class _HookedLoader(importlib.abc.Loader):
    def __init__(self, loader, fullname: str) -> None:
        self._loader = loader
        self._fullname = fullname

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        for callback in _HOOKS.pop(self._fullname, []):
            _run(callback)

    def __getattr__(self, name):
        return getattr(self._loader, name)


def when_imported(module: str, callback: Callable[[], None]) -> None:
    """Call ``callback`` now if ``module`` is imported, else right after it is."""
    if module in sys.modules:
        _run(callback)
        return
    if importlib.util.find_spec(module) is None:
        return  # not installed
    _HOOKS.setdefault(module, []).append(callback)
    if not any(isinstance(f, _PostImportFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _PostImportFinder())


def _run(callback: Callable[[], None]) -> None:
    """An integration that fails must never break the user's own import."""
    try:
        callback()
    except Exception as exc:  # e.g. an unsupported version of the other library
        warnings.warn(f"falv: integration {getattr(callback, '__name__', callback)} disabled: {exc}", stacklevel=2)


def _register_transformers() -> None:
    from falv.integrations.transformers import register

    register()


def install() -> None:
    when_imported("transformers", _register_transformers)

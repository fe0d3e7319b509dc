"""The real labeling tools the tests in tests/tools run against, each in its own
virtual environment under ``.venv-tools/<name>`` at the repository root, pinned by
``tests/tools/requirements-<name>.txt`` and reused between runs (a stamp holds the
requirements it was built from; a changed pin rebuilds it).

``python -m tests.tools.install labelstudio fiftyone`` (``make tools``) builds them
ahead; otherwise the test fixtures build them on first use. Concurrent builders
(pytest-xdist workers) wait on a file lock. Nothing is installed into falv's own
environment: Label Studio and FiftyOne pin libraries (Django, pymongo, numpy...)
that falv does not need.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
TOOLS = Path(os.environ.get("FALV_TOOLS_DIR", REPO / ".venv-tools"))
TOOL_NAMES = ("labelstudio", "fiftyone")


class ToolUnavailable(RuntimeError):
    """The tool could not be installed here (no package registry, no matching wheel...)."""


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def venv_dir(name: str) -> Path:
    return TOOLS / name


def ensure(name: str, *, log=print) -> Path:
    """The tool's environment (built when missing or out of date); raises ToolUnavailable."""
    if name not in TOOL_NAMES:
        raise ValueError(f"unknown tool {name!r}; one of {', '.join(TOOL_NAMES)}")
    requirements = HERE / f"requirements-{name}.txt"
    want = requirements.read_text()
    venv = venv_dir(name)
    stamp = venv / ".falv-tools-installed"
    with _locked(TOOLS / f".{name}.lock"):
        if stamp.is_file() and stamp.read_text() == want and (venv / "bin" / "python").exists():
            return venv
        if venv.exists():
            shutil.rmtree(venv)
        started = time.monotonic()
        log(f"installing {name} into {venv} (once; pins: {requirements.name}) ...")
        base = getattr(sys, "_base_executable", None) or sys.executable
        steps = [[base, "-m", "venv", str(venv)],
                 [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                  "-r", str(requirements)]]
        for cmd in steps:
            run = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
            if run.returncode != 0:
                shutil.rmtree(venv, ignore_errors=True)
                lines = [l for l in (run.stderr + run.stdout).splitlines()
                         if l.strip() and not l.startswith("WARNING: Location")]
                raise ToolUnavailable(f"cannot install {name} ({' '.join(cmd[-3:])}): "
                                      f"{lines[-1] if lines else 'exit ' + str(run.returncode)}")
        stamp.write_text(want)
        log(f"installed {name} in {time.monotonic() - started:.0f} s")
    return venv


def main(argv: list[str]) -> int:
    names = argv or list(TOOL_NAMES)
    for name in names:
        try:
            ensure(name)
        except ToolUnavailable as exc:
            print(exc, file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

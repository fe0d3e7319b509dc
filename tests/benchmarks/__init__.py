"""Tests of the scripts under benchmarks/ (their --quick modes, so they cannot rot)."""

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load_script(name: str):
    """Import ``benchmarks/<name>.py`` once per process (it is a script, not a package module)."""
    module_name = f"falv_bench_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, ROOT / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # dataclasses need the module registered
        spec.loader.exec_module(module)
    return sys.modules[module_name]

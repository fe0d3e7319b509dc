"""Suite-wide options."""

from __future__ import annotations

from hypothesis import settings

# No per-example deadline: Hypothesis's default (200 ms) is a timed assertion, and on a busy
# 2-core CI machine a slow example fails a correct property ("Timed assertions do not belong
# in tests"). Examples stay bounded by pytest-timeout.
settings.register_profile("falv", deadline=None)
settings.load_profile("falv")


def pytest_addoption(parser):
    parser.addoption("--fuzz-mutants", type=int, default=240,
                     help="damaged videos that tests/labeling/test_fuzz.py labels (the campaign: thousands)")


# -- a valid alternate signal stack after every test ------------------------------------------------
# OpenVINO's CPU inference leaves the calling thread's alternate signal stack (sigaltstack)
# pointing at memory it unmaps later (falv.export.runtime.keep_signal_stack now guards its calls;
# this stays as the suite's safety net for any other library that does the same).
# The next signal whose handler runs on that stack (Python installs its handlers with SA_ONSTACK)
# cannot be delivered and the kernel kills the process with SIGSEGV (si_code SI_KERNEL): xdist
# workers died that way a few tests later, in an unrelated test (found with strace and gdb). After
# each test, a dangling stack is replaced by one this module owns.
import ctypes as _ctypes
import sys as _sys

import pytest as _pytest

from falv.export.runtime import _SignalStack  # noqa: F401 - also used by tests/test_signal_stack.py


_OWN_STACK = _ctypes.create_string_buffer(1 << 16)


def _mapped(address: int) -> bool:
    with open("/proc/self/maps") as maps:
        for line in maps:
            start, end = (int(x, 16) for x in line.split(None, 1)[0].split("-"))
            if start <= address < end:
                return True
    return False


def repair_signal_stack() -> bool:
    """Replace a dangling alternate signal stack of this thread; True if one was replaced."""
    libc = _ctypes.CDLL(None, use_errno=True)
    current = _SignalStack()
    if libc.sigaltstack(None, _ctypes.byref(current)) != 0 or not current.ss_sp or current.ss_flags & 2:
        return False  # none set (SS_DISABLE) or unreadable: nothing dangles
    if _mapped(current.ss_sp) and _mapped(current.ss_sp + current.ss_size - 1):
        return False
    own = _SignalStack(_ctypes.addressof(_OWN_STACK), 0, _ctypes.sizeof(_OWN_STACK))
    return libc.sigaltstack(_ctypes.byref(own), None) == 0


@_pytest.fixture(autouse=True)
def _valid_signal_stack():
    yield
    if _sys.platform.startswith("linux"):
        repair_signal_stack()

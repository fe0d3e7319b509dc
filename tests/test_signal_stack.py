"""tests/conftest.py repairs a dangling alternate signal stack (what killed xdist workers)."""

import ctypes
import os
import signal
import sys

import pytest

from tests.conftest import _SignalStack, repair_signal_stack

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sigaltstack and /proc/self/maps")


def test_a_dangling_signal_stack_is_replaced_and_signals_are_delivered_again():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    saved = _SignalStack()
    assert libc.sigaltstack(None, ctypes.byref(saved)) == 0
    size = 1 << 16
    memory = libc.mmap(None, size, 3, 0x22, -1, 0)  # PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS
    assert memory not in (None, ctypes.c_void_p(-1).value)
    seen = []
    previous = signal.signal(signal.SIGUSR1, lambda *_: seen.append(1))
    try:
        assert libc.sigaltstack(ctypes.byref(_SignalStack(memory, 0, size)), None) == 0
        assert repair_signal_stack() is False  # a mapped stack is left alone
        assert libc.munmap(memory, size) == 0  # what the runtime library did: the stack dangles now
        assert repair_signal_stack() is True
        os.kill(os.getpid(), signal.SIGUSR1)  # without the repair the kernel kills this process here
        assert seen == [1]
    finally:
        signal.signal(signal.SIGUSR1, previous)
        libc.sigaltstack(ctypes.byref(saved), None)

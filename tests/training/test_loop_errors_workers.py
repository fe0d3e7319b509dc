"""falv train's data loading workers: a dead worker is one clear error."""

import pytest

from falv.errors import RunError
from falv.training.loop import _next_batch


def _dies():
    raise RuntimeError("DataLoader worker (pid(s) 123, 124) exited unexpectedly")
    yield  # pragma: no cover


@pytest.mark.parametrize(("workers", "error"), [(2, RunError), (0, RuntimeError)])
def test_dead_loader_workers_name_the_main_guard(workers, error):
    with pytest.raises(error) as info:
        _next_batch(_dies(), workers)
    if error is RunError:
        assert "__main__" in str(info.value) and "--workers 0" in str(info.value)


def test_other_errors_pass_through():
    def broken():
        raise RuntimeError("something else")
        yield  # pragma: no cover

    with pytest.raises(RuntimeError, match="something else"):
        _next_batch(broken(), 2)
    assert _next_batch(iter([7]), 2) == 7

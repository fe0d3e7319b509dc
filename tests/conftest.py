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

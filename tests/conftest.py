"""Suite-wide options."""

from __future__ import annotations


def pytest_addoption(parser):
    parser.addoption("--fuzz-mutants", type=int, default=240,
                     help="damaged videos that tests/labeling/test_fuzz.py labels (the campaign: thousands)")

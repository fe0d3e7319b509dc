"""A tiny falv model with random weights, written once per test session (per xdist worker)."""

from __future__ import annotations

import pytest
import torch

from falv import FALForVideoClassification, preset

TINY_LABELS = {0: "red", 1: "green", 2: "grey"}


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    FALForVideoClassification(preset("tiny", id2label=TINY_LABELS)).save_pretrained(path)
    return path

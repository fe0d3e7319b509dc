"""Fixtures shared by the evaluation tests."""

import pytest
import torch

from falv import FALForVideoClassification, preset


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, synth):
    """A tiny random model over the classes of the module's own ``synth`` fixture."""
    path = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    FALForVideoClassification(preset("tiny", id2label=dict(enumerate(synth[1])))).save_pretrained(path)
    return path

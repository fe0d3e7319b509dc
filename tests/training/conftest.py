from __future__ import annotations

import pytest

from falv.data.synth import SynthConfig, generate

# A very small FAL: training steps take milliseconds, so tests can run whole epochs.
SMALL = dict(num_frames=4, image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
             num_attention_heads=2, intermediate_size=64)


@pytest.fixture(scope="session")
def synth_set(tmp_path_factory):
    """Two appearance classes that differ in colour, texture and shape, 12 videos each, with
    train/val/test lists (8/2/2 per class)."""
    out = tmp_path_factory.mktemp("synth2")
    generate(out, SynthConfig(mode="appearance", classes=("red-solid-circle", "green-striped-cross"),
                              videos_per_class=12, seed=3, width=32, height=32, splits=(0.66, 0.17, 0.17),
                              duration=(1.0, 1.5), distractors=0, noise=0.0), overwrite=True)
    return out


@pytest.fixture(scope="session")
def multilabel_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthml")
    generate(out, SynthConfig(mode="appearance", classes=3, videos_per_class=0, multilabel=12, seed=4,
                              width=32, height=32, duration=(1.0, 1.5)), overwrite=True)
    return out

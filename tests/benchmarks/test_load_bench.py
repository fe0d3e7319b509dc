"""benchmarks/load_bench.py: the three checkpoint layouts it writes load to the same model."""

import pytest
import torch

from tests.benchmarks import load_script

pytest.importorskip("transformers")
lb = load_script("load_bench")


def test_every_layout_loads_the_same_weights_and_is_timed(tmp_path):
    paths = lb.write_checkpoints(tmp_path, "tiny")
    models = {name: fn() for name, fn in lb.loaders(paths).items()}
    reference = models.pop("transformers")
    x = torch.randn(1, *(reference.config.num_frames, 3, reference.config.image_size, reference.config.image_size))
    with torch.no_grad():
        expected = reference(x).logits
        for name, model in models.items():
            assert (model(x).logits - expected).abs().max() <= 1e-4, name
    times = lb.measure(paths, rounds=1)
    assert set(times) == {"transformers", "falv dir", "falv <- transformers dir", "falv <- .pyth"}
    assert all(len(t) == 1 and t[0] > 0 for t in times.values())

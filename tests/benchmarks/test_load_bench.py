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


def test_cold_loads_run_in_fresh_processes_and_import_no_dynamo(tmp_path):
    """The first load of each layout in a fresh interpreter (what a command pays): falv's
    loaders build no throw-away weights, so none of them imports torch._dynamo."""
    paths = lb.write_checkpoints(tmp_path, "tiny")
    cold = lb.measure_cold(paths, rounds=1)
    assert set(cold) == {"transformers", "falv dir", "falv <- transformers dir", "falv <- .pyth"}
    for name, runs in cold.items():
        assert len(runs) == 1 and runs[0]["seconds"] > 0
        if name != "transformers":
            assert runs[0]["dynamo"] is False, name

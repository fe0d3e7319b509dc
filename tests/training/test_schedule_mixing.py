"""Pure pieces of the training recipe: schedule, parameter groups, soft targets, mixing, split."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from falv import FALForVideoClassification, preset
from falv.data.sources import DatasetSource, VideoEntry
from falv.training.config import TrainConfig, default_epochs, default_lr
from falv.training.mixing import cutmix_box, mix_batch, soft_loss, soft_targets
from falv.training.schedule import lr_at, no_weight_decay, param_groups
from falv.training.split import stratified_split


@pytest.mark.parametrize(
    "step, total, warmup, expected",
    [
        (0, 100, 10, 0.1),      # warm-up starts at base / warmup, not 0 (the first step learns)
        (9, 100, 10, 1.0),      # last warm-up step reaches the base rate
        (10, 100, 10, 1.0),     # cosine starts at the top
        (55, 100, 10, 0.5),     # half-way through the decay
        (100, 100, 10, 0.0),    # the end
        (500, 100, 10, 0.0),    # past the end: stays at min
        (0, 10, 0, 1.0),        # no warm-up
    ],
)
def test_lr_table(step, total, warmup, expected):
    assert lr_at(step, total, warmup, 1.0) == pytest.approx(expected, abs=1e-9)


@given(total=st.integers(2, 500), warm_frac=st.floats(0, 0.5), min_lr=st.floats(0, 0.5))
def test_lr_bounded_and_decreasing_after_warmup(total, warm_frac, min_lr):
    warmup = int(warm_frac * total)
    rates = [lr_at(s, total, warmup, 1.0, min_lr) for s in range(total + 1)]
    assert all(0 <= r <= 1.0 + 1e-12 for r in rates)
    assert all(r > 0 for r in rates[:total])
    assert all(r >= min_lr - 1e-12 for r in rates[warmup:])
    assert all(a <= b + 1e-12 for a, b in zip(rates[:warmup], rates[1:warmup + 1]))
    assert all(a >= b - 1e-12 for a, b in zip(rates[warmup:], rates[warmup + 1:]))
    assert rates[-1] == pytest.approx(min_lr)


def test_no_decay_on_norms_biases_embeddings():
    model = FALForVideoClassification(preset("tiny", num_hidden_layers=1))
    groups = param_groups(model.named_parameters(), 0.05)
    decayed = {id(p) for p in groups[0]["params"]}
    names = {n for n, p in model.named_parameters() if id(p) in decayed}
    assert groups[0]["weight_decay"] == 0.05 and groups[1]["weight_decay"] == 0.0
    assert not any("norm" in n or n.endswith(".bias") or "pos_embed" in n or "time_embed" in n or "cls" in n
                   for n in names)
    assert "fal.embeddings.patch_embed.proj.weight" in names  # a linear layer: decayed
    assert any("qkv.weight" in n for n in names) and any("fc1.weight" in n for n in names)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert no_weight_decay("x.time_embed", torch.zeros(1, 8, 4))


def test_frozen_parameters_left_out():
    model = torch.nn.Linear(3, 2)
    model.weight.requires_grad_(False)
    groups = param_groups(model.named_parameters(), 0.1)
    assert [len(g["params"]) for g in groups] == [1] and groups[0]["weight_decay"] == 0.0


@given(k=st.integers(2, 20), s=st.floats(0, 0.9))
def test_soft_targets_match_torch_label_smoothing(k, s):
    logits = torch.randn(5, k, generator=torch.Generator().manual_seed(k))
    labels = torch.arange(5) % k
    t = soft_targets(labels, k, s)
    assert torch.allclose(t.sum(-1), torch.ones(5))
    expected = torch.nn.functional.cross_entropy(logits, labels, label_smoothing=s)
    assert soft_loss(logits, t, multilabel=False).item() == pytest.approx(expected.item(), rel=1e-5)


def test_multilabel_targets_and_bce():
    y = torch.tensor([[1.0, 0.0, 1.0]])
    assert torch.equal(soft_targets(y, 3, 0.1), y)
    logits = torch.tensor([[2.0, -1.0, 0.5]])
    assert soft_loss(logits, y, True).item() == pytest.approx(
        torch.nn.functional.binary_cross_entropy_with_logits(logits, y).item())


@pytest.mark.parametrize("mode", ["mixup", "cutmix"])
def test_mixing_keeps_target_mass_and_is_seeded(mode):
    x = torch.rand(4, 3, 3, 16, 16)
    t = soft_targets(torch.tensor([0, 1, 2, 1]), 3, 0.1)
    kw = {"mixup_alpha": 0.8} if mode == "mixup" else {"cutmix_alpha": 1.0}
    a = mix_batch(x, t, np.random.default_rng(1), **kw)
    b = mix_batch(x, t, np.random.default_rng(1), **kw)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert torch.allclose(a[1].sum(-1), torch.ones(4))
    assert not torch.equal(a[0], x)


def test_cutmix_target_weight_is_the_pasted_area():
    x = torch.zeros(2, 2, 1, 10, 10)
    x[1] = 1.0
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    mixed, target = mix_batch(x, t, np.random.default_rng(5), cutmix_alpha=1.0)
    pasted = mixed[0, 0, 0].mean().item()  # share of sample 0's frame now from sample 1
    assert target[0, 1].item() == pytest.approx(pasted)
    assert torch.equal(mixed[0, 0], mixed[0, 1])  # the same box on every frame


@given(lam=st.floats(0.0, 1.0), seed=st.integers(0, 1000))
def test_cutmix_box_inside_frame(lam, seed):
    top, bottom, left, right = cutmix_box(12, 20, lam, np.random.default_rng(seed))
    assert 0 <= top <= bottom <= 12 and 0 <= left <= right <= 20


def test_no_mixing_when_disabled():
    x, t = torch.rand(2, 1, 1, 4, 4), torch.eye(2)
    assert mix_batch(x, t, np.random.default_rng(0)) == (x, t)


def _source(counts):
    entries = [VideoEntry(f"{c}_{i}.mp4", [c]) for c, n in counts.items() for i in range(n)]
    return DatasetSource(entries, list(counts))


@pytest.mark.parametrize("counts", [{"a": 10, "b": 10}, {"a": 3, "b": 20, "c": 2}, {"a": 2, "b": 1}])
def test_stratified_split(counts):
    src = _source(counts)
    train, val = stratified_split(src, 0.2, seed=7)
    assert sorted(train + val) == list(range(len(src)))
    assert stratified_split(src, 0.2, seed=7) == (train, val)
    for c, n in counts.items():
        in_val = sum(src.entries[i].labels[0] == c for i in val)
        assert n - in_val >= 1                    # every class keeps a training video
        assert in_val == (0 if n < 2 else min(n - 1, max(1, round(0.2 * n))))


def test_split_needs_two_videos_of_some_class():
    from falv.data.sources import DatasetError

    with pytest.raises(DatasetError, match="--val"):
        stratified_split(_source({"a": 1, "b": 1}), 0.2, 0)


@pytest.mark.parametrize("n, epochs", [(10, 100), (100, 100), (168, 72), (420, 30), (600, 30), (100_000, 30)])
def test_default_epochs_scale_with_data(n, epochs):
    assert default_epochs(n) == epochs


def test_default_lr_linear_scaling():
    assert default_lr(16, 1, False) == pytest.approx(1e-3)
    assert default_lr(8, 4, False) == pytest.approx(2e-3)
    assert default_lr(16, 1, True) == pytest.approx(1e-4)


def test_config_round_trip_and_validation():
    from falv.errors import ConfigError

    c = TrainConfig(data="d", out="o", mixup=0.8, scale=(0.3, 1.0))
    assert TrainConfig.from_dict(c.to_dict()) == c
    for bad in ({"precision": "fp8"}, {"batch_size": 0}, {"ema": 1.0}, {"scale": (0.5, 0.2)}):
        with pytest.raises(ConfigError):
            TrainConfig(**bad)
    with pytest.raises(ConfigError, match="unknown"):
        TrainConfig.from_dict({"lr_max": 1})
    assert math.isfinite(TrainConfig().weight_decay)

"""Temperature scaling, expected calibration error and multi-label thresholds (pure functions)."""

import math

import numpy as np
import pytest
import torch

from falv.errors import ConfigError
from falv.evaluation.calibration import (
    expected_calibration_error,
    fit_temperature,
    nll,
    sigmoid_np,
    softmax_np,
    tune_thresholds,
    undo_temperature,
)


def reference_ece(conf, hit, bins):
    """Guo et al. (2017), Eq. 3, written as their code does: bins (lo, hi] over [0, 1]."""
    conf, hit = np.asarray(conf, float), np.asarray(hit, float)
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            total += inside.mean() * abs(hit[inside].mean() - conf[inside].mean())
    return total


# (probabilities, targets, bins, expected ECE worked out by hand)
ECE_TABLE = [
    # all right at confidence 1: perfectly calibrated
    ([[1.0, 0.0], [0.0, 1.0]], [0, 1], 15, 0.0),
    # two videos at 0.9, one right: |0.5 - 0.9| = 0.4
    ([[0.9, 0.1], [0.9, 0.1]], [0, 1], 15, 0.4),
    # bins of 10: 0.6 (right) and 0.8 (wrong) in different bins: (|1 - .6| + |0 - .8|) / 2 = 0.6
    ([[0.6, 0.4], [0.2, 0.8]], [0, 0], 10, 0.6),
    # one bin: accuracy 2/3 against mean confidence (0.7 + 0.6 + 0.5) / 3 = 0.6
    ([[0.7, 0.3], [0.4, 0.6], [0.5, 0.5]], [0, 1, 1], 1, abs(2 / 3 - 0.6)),
    # 0.5 ties take the first class (argmax), which is wrong here; conf 0.5 lies in (0.4667, 0.5333]
    ([[0.5, 0.5]], [1], 15, 0.5),
]


@pytest.mark.parametrize("probs, targets, bins, expected", ECE_TABLE)
def test_ece_table(probs, targets, bins, expected):
    assert expected_calibration_error(probs, targets, bins=bins) == pytest.approx(expected, abs=1e-12)


def test_ece_matches_the_reference_formula_on_random_scores():
    rng = np.random.default_rng(3)
    for _ in range(20):
        n, k, bins = int(rng.integers(1, 200)), int(rng.integers(2, 8)), int(rng.integers(1, 30))
        p = softmax_np(rng.normal(size=(n, k)) * rng.uniform(0.1, 6))
        y = rng.integers(0, k, size=n)
        expected = reference_ece(p.max(1), p.argmax(1) == y, bins)
        assert expected_calibration_error(p, y, bins=bins) == pytest.approx(expected, abs=1e-12)
    # multi-label: every (video, class) score is one binary prediction
    p = sigmoid_np(rng.normal(size=(50, 4)) * 3)
    y = (rng.random((50, 4)) < p).astype(int)
    assert expected_calibration_error(p, y, multilabel=True) == pytest.approx(reference_ece(p.ravel(), y.ravel(), 15))


def test_ece_checks_its_input():
    assert math.isnan(expected_calibration_error(np.zeros((0, 3)), []))
    with pytest.raises(ConfigError):
        expected_calibration_error([[0.5, 0.5]], [0, 1])
    with pytest.raises(ConfigError):
        expected_calibration_error([[0.5, 0.5]], [0], bins=0)


def test_temperature_recovers_the_one_that_made_the_labels():
    # labels drawn from softmax(z / 2.5): the NLL-optimal temperature is near 2.5
    rng = np.random.default_rng(0)
    z = rng.normal(size=(4000, 5)) * 5
    y = np.array([rng.choice(5, p=p) for p in softmax_np(z / 2.5)])
    t = fit_temperature(z, y)
    assert t == pytest.approx(2.5, rel=0.08)
    assert nll(z, y, temperature=t) < nll(z, y)
    # it is the minimum: a little either side is worse
    assert nll(z, y, temperature=t) <= min(nll(z, y, temperature=t * 1.05), nll(z, y, temperature=t / 1.05))
    # and calibration improves
    assert expected_calibration_error(softmax_np(z / t), y) < expected_calibration_error(softmax_np(z), y) / 2


def test_multilabel_temperature_and_unlabelled_rows():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(3000, 3)) * 4
    y = (rng.random(z.shape) < sigmoid_np(z / 0.5)).astype(np.float32)  # under-confident logits: T < 1
    assert fit_temperature(z, y, multilabel=True) == pytest.approx(0.5, rel=0.1)
    assert fit_temperature(np.zeros((2, 3)), [-1, -1]) == 1.0  # nothing labelled: no change
    with pytest.raises(ConfigError):
        fit_temperature([[np.nan, 0.0]], [0])


def test_undo_temperature_is_exact_for_one_clip():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(10, 6)) * 3
    for t in (0.5, 1.7, 4.0):
        single = torch.softmax(torch.tensor(z / t, dtype=torch.float32), -1).numpy()  # float32, as the engine writes
        np.testing.assert_allclose(undo_temperature(single, t), softmax_np(z), atol=2e-6)
        multi = torch.sigmoid(torch.tensor(z / t, dtype=torch.float32)).numpy()
        # float32 sigmoids near 1 keep ~7 digits of 1 - p: a few 1e-5 after undoing
        np.testing.assert_allclose(undo_temperature(multi, t, multilabel=True), sigmoid_np(z), atol=1e-4)
    np.testing.assert_array_equal(undo_temperature(softmax_np(z), 1.0), softmax_np(z))


THRESHOLD_TABLE = [
    # class 0 separates at any cut in (0.3, 0.6): the midpoint 0.45; class 1 has no positive: default
    ([[0.1, 0.2], [0.3, 0.1], [0.6, 0.4], [0.9, 0.3]], [[0, 0], [0, 0], [1, 0], [1, 0]], [0.45, 0.5]),
    ([[0.2], [0.4], [0.8]], [[1], [1], [1]], [0.5]),  # every video positive: default
    # cuts 0.1 / 0.225 / 0.525 / 0.9 give F1 0.8 / 0.5 / 0.667 / 0: keep all three
    ([[0.2], [0.25], [0.8]], [[1], [0], [1]], [0.1]),
]


@pytest.mark.parametrize("scores, targets, expected", THRESHOLD_TABLE)
def test_tune_thresholds_table(scores, targets, expected):
    assert tune_thresholds(scores, targets) == pytest.approx(expected)


def test_tuned_thresholds_beat_one_half_on_f1():
    rng = np.random.default_rng(5)
    y = (rng.random((400, 3)) < 0.3).astype(int)
    s = np.clip(0.15 + 0.3 * y + rng.normal(scale=0.1, size=y.shape), 0, 1)  # scores never reach 0.5 often

    def f1(cut):
        pred = s >= np.asarray(cut)
        tp = (pred & (y == 1)).sum(0)
        return (2 * tp / (pred.sum(0) + y.sum(0))).mean()

    cuts = tune_thresholds(s, y)
    assert f1(cuts) > f1([0.5] * 3) + 0.2

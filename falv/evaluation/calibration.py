"""Calibrated scores: temperature scaling, expected calibration error, multi-label thresholds.

- :func:`fit_temperature`: one temperature ``T`` for the logits of a validation split,
  minimising the negative log-likelihood of ``softmax(z / T)`` (single-label) or
  ``sigmoid(z / T)`` (multi-label) with L-BFGS over ``log T`` (Guo et al., "On
  Calibration of Modern Neural Networks", ICML 2017, Sec. 4.2). ``T`` changes no
  argmax: top-1 stays, the scores say how often they are right.
- :func:`expected_calibration_error`: ECE over equal-width confidence bins (Guo et al.,
  Eq. 3; 15 bins by default, as in their code).
- :func:`tune_thresholds`: per-class decision thresholds of a multi-label model, each the
  F1-best cut of its class on the validation scores.
- :func:`undo_temperature`: raw scores back from scores made with a temperature.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from falv.errors import ConfigError

#: Bins of :func:`expected_calibration_error` (Guo et al. 2017 use 15).
ECE_BINS = 15
#: Temperatures are kept in this range: beyond it the fit is degenerate (e.g. a perfectly
#: separated validation split drives T to 0).
TEMPERATURE_RANGE = (0.05, 20.0)


def _as_arrays(scores: Any, targets: Any) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(targets)
    if s.ndim != 2:
        raise ConfigError(f"scores must be (N, classes), got shape {s.shape}")
    if len(s) != len(t):
        raise ConfigError(f"{len(s)} score rows for {len(t)} targets")
    return s, t


def expected_calibration_error(probs: Any, targets: Any, *, multilabel: bool = False,
                               bins: int = ECE_BINS) -> float:
    """Expected calibration error, ``sum_m |B_m| / n * |acc(B_m) - conf(B_m)|``.

    Single-label (``targets`` class indices ``(N,)``): the confidence of a video is its top
    score, correct when the top class is its target (Guo et al. 2017, Eq. 3). Multi-label
    (``targets`` multi-hot ``(N, K)``): every (video, class) score is a binary prediction,
    its "accuracy" the fraction of positives among the scores of its bin.
    Bins split ``[0, 1]`` into ``bins`` equal intervals ``(lo, hi]`` (the first also holds 0),
    as in Guo et al.'s code. An empty input gives NaN.
    """
    if bins < 1:
        raise ConfigError(f"bins must be >= 1, got {bins}")
    p, t = _as_arrays(probs, targets)
    if multilabel:
        conf = p.reshape(-1)
        hit = np.asarray(t, dtype=np.float64).reshape(-1)
        if conf.shape != hit.shape:
            raise ConfigError(f"multi-label targets must be (N, {p.shape[1]}) multi-hot, got {t.shape}")
    else:
        conf = p.max(axis=1)
        hit = (p.argmax(axis=1) == t.astype(np.int64)).astype(np.float64)
    if conf.size == 0:
        return float("nan")
    # bin m holds conf in (m/bins, (m+1)/bins]; conf = 0 goes to the first bin
    index = np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)
    total = 0.0
    for m in range(bins):
        inside = index == m
        count = int(inside.sum())
        if count:
            total += count * abs(float(hit[inside].mean()) - float(conf[inside].mean()))
    return total / conf.size


def _nll(z: Any, t: Any, multilabel: bool) -> Any:
    import torch

    if multilabel:
        return torch.nn.functional.binary_cross_entropy_with_logits(z, t, reduction="mean")
    return torch.nn.functional.cross_entropy(z, t, reduction="mean")


def fit_temperature(logits: Any, targets: Any, *, multilabel: bool = False, max_iter: int = 100) -> float:
    """The temperature ``T`` that minimises the validation NLL of ``logits / T``.

    L-BFGS (strong-Wolfe line search) over ``log T`` from ``T = 1``, so ``T`` stays positive;
    the result is clamped to :data:`TEMPERATURE_RANGE`. Rows whose target is ``-1``
    (unlabelled) are left out; with nothing left ``T = 1``.
    """
    import torch

    z, t = _as_arrays(logits, targets)
    if not np.isfinite(z).all():
        raise ConfigError("logits must be finite to fit a temperature")
    if multilabel:
        keep = np.ones(len(z), dtype=bool)
        y = torch.as_tensor(np.asarray(t, dtype=np.float32))
    else:
        keep = np.asarray(t, dtype=np.int64) >= 0
        y = torch.as_tensor(np.asarray(t, dtype=np.int64)[keep])
    if not keep.any():
        return 1.0
    x = torch.as_tensor(z[keep], dtype=torch.float64)
    y = y.to(torch.float64) if multilabel else y
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> Any:
        optimizer.zero_grad()
        loss = _nll(x / log_t.exp(), y, multilabel)
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    value = float(log_t.detach().exp())
    if not math.isfinite(value):
        return 1.0
    lo, hi = TEMPERATURE_RANGE
    return float(min(max(value, lo), hi))


def nll(logits: Any, targets: Any, *, multilabel: bool = False, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``logits / temperature`` (what :func:`fit_temperature` minimises)."""
    import torch

    z, t = _as_arrays(logits, targets)
    x = torch.as_tensor(z, dtype=torch.float64) / temperature
    y = torch.as_tensor(np.asarray(t, dtype=np.float64 if multilabel else np.int64))
    return float(_nll(x, y, multilabel))


def softmax_np(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def sigmoid_np(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # stable for any z


def undo_temperature(scores: Any, temperature: float, *, multilabel: bool = False) -> np.ndarray:
    """The scores a model gives without temperature, from scores made with ``temperature``.

    Exact for the scores of one clip (``softmax(z / T)`` -> ``softmax(z)``: ``log p = z / T -
    c``, so ``softmax(T log p) = softmax(z)``; sigmoid likewise through the logit); for an
    average of several clips' scores it undoes the temperature of the average. Scores are
    clipped away from 0 and 1 first (float32 scores can underflow).
    """
    p = np.clip(np.asarray(scores, dtype=np.float64), 1e-300, 1.0)
    if temperature == 1.0:
        return np.asarray(scores, dtype=np.float64)
    if multilabel:
        q = np.clip(p, 1e-300, 1 - 1e-16)
        return sigmoid_np(temperature * (np.log(q) - np.log1p(-q)))
    return softmax_np(temperature * np.log(p))


def tune_thresholds(scores: Any, targets: Any, *, default: float = 0.5) -> list[float]:
    """Per-class thresholds of a multi-label model: for each class the cut on its validation
    scores with the best F1 (ties: the cut nearest ``default``), placed half-way between two
    neighbouring scores. A class without positives (or without negatives) in ``targets``
    keeps ``default``."""
    s, t = _as_arrays(scores, targets)
    y = np.asarray(t, dtype=np.float64)
    if y.shape != s.shape:
        raise ConfigError(f"multi-label targets must have the scores' shape {s.shape}, got {y.shape}")
    out = []
    for k in range(s.shape[1]):
        pos = y[:, k] > 0.5
        if pos.all() or not pos.any():
            out.append(float(default))
            continue
        values = np.unique(s[:, k])
        cuts = np.concatenate([[values[0] / 2], (values[:-1] + values[1:]) / 2, [(values[-1] + 1) / 2]])
        best, best_cut = -1.0, default
        for cut in cuts:
            pred = s[:, k] >= cut
            tp = float((pred & pos).sum())
            f1 = 2 * tp / (pred.sum() + pos.sum())
            if f1 > best + 1e-12 or (abs(f1 - best) <= 1e-12 and abs(cut - default) < abs(best_cut - default)):
                best, best_cut = f1, float(cut)
        out.append(float(min(max(best_cut, 0.0), 1.0)))
    return out


def calibration_summary(scores: Any, targets: Any, temperature: float | None, *, multilabel: bool,
                        raw_scores: Any | None = None, bins: int = ECE_BINS) -> dict[str, Any]:
    """``{"temperature", "ece", "ece_uncalibrated", "bins"}`` for evaluation reports: the ECE
    of the scores as given (with the model's temperature) and of ``raw_scores`` (without)."""
    ece = expected_calibration_error(scores, targets, multilabel=multilabel, bins=bins)
    raw = ece if raw_scores is None else expected_calibration_error(raw_scores, targets, multilabel=multilabel,
                                                                    bins=bins)
    return {"temperature": temperature, "ece": _finite_or_none(ece), "ece_uncalibrated": _finite_or_none(raw),
            "bins": bins}


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


__all__: Sequence[str] = ["ECE_BINS", "expected_calibration_error", "fit_temperature", "nll", "tune_thresholds",
                          "undo_temperature", "calibration_summary"]

"""Classification metrics: pure numpy functions over a score table and its targets.

``scores`` is an ``(N, K)`` array (one row per video, one column per class: the
softmax or sigmoid scores the labeling engine gives). ``targets`` is either an
``(N,)`` array of class indices (single-label) or an ``(N, K)`` 0/1 array
(multi-label). ``predictions`` are class indices ``(N,)`` (single-label) or a
0/1 ``(N, K)`` array of the classes a model says yes to (multi-label).

Every function follows scikit-learn's definition of the metric of the same name
(``tests/evaluation/test_metrics.py`` checks them against it), with these
choices made explicit:

* **Ties** in a score row are broken towards the lower class index, as
  ``np.argmax`` and the labeling engine's label order do. (scikit-learn's
  ``top_k_accuracy_score`` breaks them towards the higher index; the two agree on
  every table without ties.)
* **Undefined ratios are 0** (``zero_division=0``): precision of a class never
  predicted, recall of a class with no support.
* **Averages run over the classes that occur in the targets or the predictions**
  (scikit-learn's default for single-label data, ``labels=None``). A class with
  neither support nor a prediction says nothing about the model and is left out,
  also for multi-label data, where scikit-learn would count it as 0; pass
  ``labels`` to choose the classes yourself.
* **Average precision** is scikit-learn's ``average_precision_score``: the area
  under the un-interpolated precision-recall step curve,
  ``sum_n (R_n - R_{n-1}) P_n`` over the distinct scores, highest first; the mean
  (mAP) runs over the classes with at least one positive.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "check_table",
    "rank_order",
    "top_k_accuracy",
    "predict_single",
    "predict_multi",
    "present_labels",
    "confusion_matrix",
    "multilabel_confusion_matrix",
    "precision_recall_f1_support",
    "averaged_scores",
    "mean_class_accuracy",
    "average_precision",
    "per_class_average_precision",
    "mean_average_precision",
    "classification_report",
    "classification_metrics",
]


# -- inputs ---------------------------------------------------------------------------------------


def check_table(scores: Any, targets: Any) -> tuple[np.ndarray, np.ndarray, bool]:
    """``scores`` as float64 ``(N, K)``, ``targets`` as int ``(N,)`` or 0/1 ``(N, K)``, and whether multi-label."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"scores must be an (N, K) array, got shape {scores.shape}")
    n, k = scores.shape
    targets = np.asarray(targets)
    if targets.ndim == 2:
        if targets.shape != (n, k):
            raise ValueError(f"multi-label targets must have the scores' shape {scores.shape}, got {targets.shape}")
        if not np.isin(targets, (0, 1)).all():
            raise ValueError("multi-label targets must be 0/1")
        return scores, targets.astype(np.int64), True
    if targets.shape != (n,):
        raise ValueError(f"targets must be (N,) class indices or (N, K) 0/1, got shape {targets.shape}")
    targets = targets.astype(np.int64)
    if n and (targets.min() < 0 or targets.max() >= k):
        raise ValueError(f"target class indices must lie in [0, {k})")
    return scores, targets, False


def rank_order(scores: np.ndarray) -> np.ndarray:
    """Class indices of each row best first; equal scores keep the lower index first."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), axis=1, kind="stable")


def predict_single(scores: Any) -> np.ndarray:
    """The top class of each row (``np.argmax``: ties go to the lower index)."""
    return np.asarray(scores).argmax(axis=1).astype(np.int64)


def predict_multi(scores: Any, thresholds: Sequence[float] | float | None = None) -> np.ndarray:
    """0/1 ``(N, K)``: the classes whose score reaches their threshold (default 0.5)."""
    scores = np.asarray(scores, dtype=np.float64)
    cut = np.broadcast_to(np.asarray(0.5 if thresholds is None else thresholds, dtype=np.float64), scores.shape[1:])
    return (scores >= cut).astype(np.int64)


def _one_hot(indices: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros((len(indices), k), dtype=np.int64)
    out[np.arange(len(indices)), indices] = 1
    return out


def present_labels(targets: Any, predictions: Any, num_classes: int | None = None) -> np.ndarray:
    """The classes that occur in the targets or the predictions, sorted (the default averaging set)."""
    targets, predictions = np.asarray(targets), np.asarray(predictions)
    if targets.ndim == 2:
        return np.nonzero(targets.any(axis=0) | predictions.any(axis=0))[0]
    return np.union1d(targets, predictions).astype(np.int64)


# -- ranking --------------------------------------------------------------------------------------


def top_k_accuracy(scores: Any, targets: Any, k: int = 1) -> float:
    """Fraction of rows whose target is among the ``k`` best-scored classes (``k`` clipped to K).

    Multi-label: a row counts when any of its positive classes is among the ``k`` best.
    """
    scores, targets, multilabel = check_table(scores, targets)
    n, num_classes = scores.shape
    if n == 0:
        return 0.0
    k = max(1, min(int(k), num_classes))
    top = rank_order(scores)[:, :k]  # (N, k)
    if multilabel:
        hits = np.take_along_axis(targets, top, axis=1).any(axis=1)
    else:
        hits = (top == targets[:, None]).any(axis=1)
    return float(hits.mean())


# -- counts ---------------------------------------------------------------------------------------


def confusion_matrix(targets: Any, predictions: Any, labels: Sequence[int] | None = None) -> np.ndarray:
    """``C[i, j]`` = rows with target ``labels[i]`` predicted ``labels[j]`` (sklearn's layout).

    ``labels`` defaults to the classes present in either array; rows whose target
    or prediction is not in ``labels`` are not counted.
    """
    targets = np.asarray(targets, dtype=np.int64).reshape(-1)
    predictions = np.asarray(predictions, dtype=np.int64).reshape(-1)
    if targets.shape != predictions.shape:
        raise ValueError("targets and predictions must have the same length")
    labels = present_labels(targets, predictions) if labels is None else np.asarray(labels, dtype=np.int64)
    size = len(labels)
    position = {int(c): i for i, c in enumerate(labels)}
    matrix = np.zeros((size, size), dtype=np.int64)
    for t, p in zip(targets.tolist(), predictions.tolist()):
        if t in position and p in position:
            matrix[position[t], position[p]] += 1
    return matrix


def multilabel_confusion_matrix(targets: Any, predictions: Any) -> np.ndarray:
    """``(K, 2, 2)`` one-vs-rest counts ``[[tn, fp], [fn, tp]]`` per class (sklearn's layout)."""
    y = np.asarray(targets, dtype=bool)
    p = np.asarray(predictions, dtype=bool)
    tp = (y & p).sum(axis=0)
    fp = (~y & p).sum(axis=0)
    fn = (y & ~p).sum(axis=0)
    tn = (~y & ~p).sum(axis=0)
    return np.stack([np.stack([tn, fp], axis=-1), np.stack([fn, tp], axis=-1)], axis=1).astype(np.int64)


def _counts(targets: np.ndarray, predictions: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, ...]:
    """True positives, predicted counts and supports of ``labels``."""
    if targets.ndim == 2:
        y, p = targets[:, labels].astype(bool), predictions[:, labels].astype(bool)
        return (y & p).sum(axis=0), p.sum(axis=0), y.sum(axis=0)
    tp = np.array([np.sum((targets == c) & (predictions == c)) for c in labels], dtype=np.int64)
    predicted = np.array([np.sum(predictions == c) for c in labels], dtype=np.int64)
    support = np.array([np.sum(targets == c) for c in labels], dtype=np.int64)
    return tp, predicted, support


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def precision_recall_f1_support(
    targets: Any, predictions: Any, labels: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision, recall, F1 and support for ``labels`` (default: the present classes).

    Single-label (index arrays) or multi-label (0/1 arrays); undefined ratios are 0,
    and F1 is 0 when precision and recall are both 0 (sklearn, ``zero_division=0``).
    """
    targets, predictions = np.asarray(targets, dtype=np.int64), np.asarray(predictions, dtype=np.int64)
    if targets.shape != predictions.shape:
        raise ValueError(f"targets {targets.shape} and predictions {predictions.shape} differ in shape")
    labels = present_labels(targets, predictions) if labels is None else np.asarray(labels, dtype=np.int64)
    tp, predicted, support = _counts(targets, predictions, labels)
    precision = _ratio(tp, predicted)
    recall = _ratio(tp, support)
    f1 = _ratio(2 * tp, predicted + support)  # = 2PR / (P + R), 0 when both are 0
    return precision, recall, f1, support


def averaged_scores(
    targets: Any, predictions: Any, labels: Sequence[int] | None = None
) -> dict[str, float]:
    """``precision/recall/f1`` ``_macro`` (plain mean over ``labels``) and ``_weighted`` (by support)."""
    precision, recall, f1, support = precision_recall_f1_support(targets, predictions, labels)
    out: dict[str, float] = {}
    total = support.sum()
    for name, values in (("precision", precision), ("recall", recall), ("f1", f1)):
        out[f"{name}_macro"] = float(values.mean()) if values.size else 0.0
        out[f"{name}_weighted"] = float((values * support).sum() / total) if total > 0 else 0.0
    return out


def mean_class_accuracy(targets: Any, predictions: Any) -> float:
    """Mean over the classes with support of the fraction of their rows recognised.

    Single-label: sklearn's ``balanced_accuracy_score``. Multi-label: the mean
    per-class recall over the classes with at least one positive.
    """
    targets = np.asarray(targets, dtype=np.int64)
    predictions = np.asarray(predictions, dtype=np.int64)
    if targets.ndim == 2:
        labels = np.nonzero(targets.any(axis=0))[0]
    else:
        labels = np.unique(targets)
    if labels.size == 0:
        return 0.0
    _, recall, _, _ = precision_recall_f1_support(targets, predictions, labels)
    return float(recall.mean())


# -- average precision ----------------------------------------------------------------------------


def average_precision(scores: Any, positives: Any) -> float:
    """sklearn's ``average_precision_score`` of one class: ``sum_n (R_n - R_{n-1}) P_n``.

    The operating points are the distinct scores, highest first (rows with equal
    scores enter together). A class without positives has no defined AP: ``nan``.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    positives = np.asarray(positives).astype(bool).reshape(-1)
    npos = int(positives.sum())
    if npos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    scores, positives = scores[order], positives[order]
    last = np.r_[np.nonzero(np.diff(scores))[0], scores.size - 1]  # the last row of each distinct score
    tp = np.cumsum(positives)[last]
    seen = last + 1
    precision = tp / seen
    recall = tp / npos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def per_class_average_precision(scores: Any, targets: Any) -> np.ndarray:
    """AP of every column (``nan`` for classes without positives); targets as in :func:`check_table`."""
    scores, targets, multilabel = check_table(scores, targets)
    if not multilabel:
        targets = _one_hot(targets, scores.shape[1])
    return np.array([average_precision(scores[:, c], targets[:, c]) for c in range(scores.shape[1])])


def mean_average_precision(scores: Any, targets: Any) -> float:
    """Mean AP over the classes with at least one positive (0 when there is none)."""
    ap = per_class_average_precision(scores, targets)
    ap = ap[~np.isnan(ap)]
    return float(ap.mean()) if ap.size else 0.0


# -- everything at once ---------------------------------------------------------------------------


def classification_report(
    targets: Any, predictions: Any, labels: Sequence[int], names: Sequence[str]
) -> list[dict[str, Any]]:
    """One row per class of ``labels``: name, precision, recall, f1, support, predicted count."""
    labels = np.asarray(labels, dtype=np.int64)
    precision, recall, f1, support = precision_recall_f1_support(targets, predictions, labels)
    _, predicted, _ = _counts(np.asarray(targets, dtype=np.int64), np.asarray(predictions, dtype=np.int64), labels)
    return [
        {"class": names[int(c)], "precision": float(precision[i]), "recall": float(recall[i]),
         "f1": float(f1[i]), "support": int(support[i]), "predicted": int(predicted[i])}
        for i, c in enumerate(labels)
    ]


def classification_metrics(
    scores: Any,
    targets: Any,
    *,
    predictions: Any = None,
    thresholds: Sequence[float] | float | None = None,
    top_k: Sequence[int] = (1, 5),
) -> dict[str, Any]:
    """The headline numbers of a score table (see the module docstring for each definition).

    ``predictions`` default to the top class (single-label targets) or the classes
    over ``thresholds`` (multi-label targets). Returns ``top1``, ``top5`` (one key
    per ``top_k``), ``precision/recall/f1`` ``_macro`` and ``_weighted``,
    ``mean_class_accuracy``, ``num_videos``, and for multi-label targets ``map``
    and ``per_class_ap`` (a list aligned with the columns; ``None`` where undefined).
    """
    scores, targets, multilabel = check_table(scores, targets)
    if predictions is None:
        predictions = predict_multi(scores, thresholds) if multilabel else predict_single(scores)
    predictions = np.asarray(predictions, dtype=np.int64)
    out: dict[str, Any] = {f"top{k}": top_k_accuracy(scores, targets, k) for k in top_k}
    out.update(averaged_scores(targets, predictions))
    out["mean_class_accuracy"] = mean_class_accuracy(targets, predictions)
    out["num_videos"] = int(scores.shape[0])
    if multilabel:
        ap = per_class_average_precision(scores, targets)
        out["map"] = mean_average_precision(scores, targets)
        out["per_class_ap"] = [None if np.isnan(x) else float(x) for x in ap]
    return out


# -- hierarchical labels ---------------------------------------------------------------------------


def hierarchical_metrics(leaf_scores: Any, nodes: Sequence[str], taxonomy: Any) -> dict[str, Any]:
    """Metrics of a hierarchical model (:class:`falv.taxonomy.Taxonomy`) from its videos' leaf
    scores ``(N, leaves)`` and each video's labelled node (a leaf's or an inner node's path):

    - ``levels``: per depth ``d`` (1 = the top), ``top1`` and ``f1_macro`` of the best node ``d``
      deep (scores summed over its leaves) against the labelled node's ancestor ``d`` deep, over the
      ``num_videos`` labelled at least that deep;
    - ``hierarchical_precision`` / ``_recall`` / ``_f1`` (Kiritchenko et al., 2005): with ``P`` the
      nodes on the predicted path (the best child at every level, down to a leaf) and ``T`` the
      labelled node and its ancestors, ``sum |P & T| / sum |P|``, ``sum |P & T| / sum |T|`` and
      their harmonic mean. A wrong leaf under the right parent still earns the parent's share.
    """
    scores = np.asarray(leaf_scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[0] != len(nodes):
        raise ValueError(f"leaf_scores {scores.shape} do not match {len(nodes)} labelled nodes")
    levels = []
    for depth in range(1, taxonomy.max_depth + 1):
        rows = [i for i, node in enumerate(nodes) if taxonomy.depth(node) >= depth]
        if not rows:
            continue
        names, matrix = taxonomy.view(level=depth)
        column = {name: i for i, name in enumerate(names)}
        truth = np.array([column[taxonomy.ancestors(nodes[i])[depth - 1]] for i in rows], dtype=np.int64)
        predicted = predict_single(scores[rows] @ matrix)
        levels.append({"level": depth, "num_classes": len(names), "num_videos": len(rows),
                       "top1": float((predicted == truth).mean()),
                       "f1_macro": averaged_scores(truth, predicted)["f1_macro"]})
    overlap = predicted_size = true_size = 0
    for row, node in zip(scores, nodes):
        guess = {n for n, _ in taxonomy.best_path(row)}
        truth_set = set(taxonomy.ancestors(node))
        overlap += len(guess & truth_set)
        predicted_size += len(guess)
        true_size += len(truth_set)
    hp = overlap / predicted_size if predicted_size else 0.0
    hr = overlap / true_size if true_size else 0.0
    return {"levels": levels, "hierarchical_precision": hp, "hierarchical_recall": hr,
            "hierarchical_f1": 2 * hp * hr / (hp + hr) if hp + hr > 0 else 0.0}

"""Evaluation: classification and localisation metrics, and ``evaluate(model, data)``.

:func:`evaluate` labels a dataset with the labeling engine (:mod:`falv.labeling.engine`)
and scores the records; the metrics themselves are pure numpy functions in
:mod:`falv.evaluation.metrics` and :mod:`falv.evaluation.localization`.
See ``docs/evaluation.md``.
"""

from __future__ import annotations

from falv.evaluation.localization import localization_map, load_ground_truth
from falv.evaluation.metrics import classification_metrics
from falv.evaluation.runner import ClassMismatchError, EvaluationError, evaluate

__all__ = [
    "ClassMismatchError",
    "EvaluationError",
    "classification_metrics",
    "evaluate",
    "load_ground_truth",
    "localization_map",
]

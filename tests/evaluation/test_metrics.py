"""Classification metrics against scikit-learn: fixed tables, edge cases and random tables."""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from falv.evaluation import metrics as M

sk = pytest.importorskip("sklearn.metrics")


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # UndefinedMetricWarning, "y_pred contains classes not in y_true"
        return fn(*args, **kwargs)


def sklearn_single(scores, y):
    """Every single-label number the way scikit-learn computes it (ties towards the lower index)."""
    k = scores.shape[1]
    pred = scores.argmax(axis=1)
    # sklearn's top_k_accuracy_score breaks ties towards the higher index; a tiny index-decreasing
    # offset makes it rank equal scores like falv (lower index first) without changing any order.
    shifted = scores - 1e-9 * np.arange(k)
    out = {"top1": sk.accuracy_score(y, pred)}
    for kk in (1, 2, 5):
        if k > 2:
            out[f"top{kk}"] = _quiet(sk.top_k_accuracy_score, y, shifted, k=min(kk, k), labels=np.arange(k))
    for avg in ("macro", "weighted"):
        p, r, f, _ = _quiet(sk.precision_recall_fscore_support, y, pred, average=avg, zero_division=0)
        out.update({f"precision_{avg}": p, f"recall_{avg}": r, f"f1_{avg}": f})
    out["mean_class_accuracy"] = _quiet(sk.balanced_accuracy_score, y, pred)
    return out


def check_single(scores, y):
    scores, y = np.asarray(scores, dtype=float), np.asarray(y)
    ours = M.classification_metrics(scores, y, top_k=(1, 2, 5))
    ref = sklearn_single(scores, y)
    for key, value in ref.items():
        assert ours[key] == pytest.approx(value, abs=1e-12), key
    pred = M.predict_single(scores)
    labels = M.present_labels(y, pred)
    np.testing.assert_array_equal(M.confusion_matrix(y, pred, labels), _quiet(sk.confusion_matrix, y, pred, labels=labels))
    np.testing.assert_array_equal(M.confusion_matrix(y, pred), _quiet(sk.confusion_matrix, y, pred))
    all_labels = np.arange(scores.shape[1])  # explicit labels: classes with neither support nor prediction too
    p, r, f, s = M.precision_recall_f1_support(y, pred, all_labels)
    rp, rr, rf, rs = _quiet(sk.precision_recall_fscore_support, y, pred, labels=all_labels, average=None,
                            zero_division=0)
    np.testing.assert_allclose(np.stack([p, r, f, s]), np.stack([rp, rr, rf, rs]), atol=1e-12)
    assert M.confusion_matrix(y, pred, all_labels).sum() == len(y)
    ap = M.per_class_average_precision(scores, y)
    for c in range(scores.shape[1]):
        if (y == c).any():
            assert ap[c] == pytest.approx(sk.average_precision_score(y == c, scores[:, c]), abs=1e-12)
        else:
            assert np.isnan(ap[c])


def check_multi(scores, Y, thresholds=0.5):
    scores, Y = np.asarray(scores, dtype=float), np.asarray(Y)
    ours = M.classification_metrics(scores, Y, thresholds=thresholds)
    pred = (scores >= thresholds).astype(int)
    labels = M.present_labels(Y, pred)
    for avg in ("macro", "weighted"):
        if labels.size:
            p, r, f, _ = _quiet(sk.precision_recall_fscore_support, Y, pred, labels=labels, average=avg,
                                zero_division=0)
        else:
            p = r = f = 0.0
        assert ours[f"precision_{avg}"] == pytest.approx(p, abs=1e-12)
        assert ours[f"recall_{avg}"] == pytest.approx(r, abs=1e-12)
        assert ours[f"f1_{avg}"] == pytest.approx(f, abs=1e-12)
    np.testing.assert_array_equal(M.multilabel_confusion_matrix(Y, pred), sk.multilabel_confusion_matrix(Y, pred))
    with_pos = np.nonzero(Y.any(axis=0))[0]
    ref_ap = [sk.average_precision_score(Y[:, c], scores[:, c]) for c in with_pos]
    assert ours["map"] == pytest.approx(np.mean(ref_ap) if ref_ap else 0.0, abs=1e-12)
    for c in range(Y.shape[1]):
        expected = sk.average_precision_score(Y[:, c], scores[:, c]) if c in with_pos else None
        assert ours["per_class_ap"][c] == (pytest.approx(expected, abs=1e-12) if expected is not None else None)
    recall = _quiet(sk.recall_score, Y, pred, average=None, zero_division=0)
    assert ours["mean_class_accuracy"] == pytest.approx(recall[with_pos].mean() if with_pos.size else 0.0)
    # top-k: a row counts when one of its positives is among the k best (ties: lower index first)
    order = np.argsort(-scores, axis=1, kind="stable")
    for k in (1, 5):
        hits = [Y[i, order[i, :k]].any() for i in range(len(Y))]
        assert ours[f"top{k}"] == pytest.approx(np.mean(hits))


# -- fixed tables ---------------------------------------------------------------------------------


def test_sklearn_documentation_example():
    y = np.array([0, 1, 2, 0, 1, 2])
    pred = np.array([0, 2, 1, 0, 0, 1])
    scores = np.eye(3)[pred]
    out = M.classification_metrics(scores, y)
    assert out["precision_macro"] == pytest.approx(0.2222, abs=1e-4)
    assert out["recall_macro"] == pytest.approx(0.3333, abs=1e-4)
    assert out["f1_macro"] == pytest.approx(0.2667, abs=1e-4)
    assert out["top1"] == pytest.approx(2 / 6)
    check_single(scores, y)


def test_perfect_predictions():
    y = np.array([0, 1, 2, 3, 1])
    out = M.classification_metrics(np.eye(4)[y] * 0.9 + 0.025, y)
    for key in ("top1", "top5", "precision_macro", "recall_macro", "f1_macro", "precision_weighted",
                "recall_weighted", "f1_weighted", "mean_class_accuracy"):
        assert out[key] == 1.0, key


def test_class_without_support_and_class_never_predicted():
    # class 2 is predicted but has no support; class 1 has support but is never predicted;
    # class 3 has neither and is left out of the averages (sklearn's default label set).
    y = np.array([0, 0, 1, 1])
    scores = np.array([[0.9, 0.05, 0.05, 0.0], [0.1, 0.1, 0.8, 0.0], [0.6, 0.3, 0.1, 0.0], [0.2, 0.3, 0.5, 0.0]])
    out = M.classification_metrics(scores, y)
    # per class (0, 1, 2): precision (1/2, 0, 0), recall (1/2, 0, 0)
    assert out["precision_macro"] == pytest.approx(1 / 6)
    assert out["recall_macro"] == pytest.approx(1 / 6)
    assert out["mean_class_accuracy"] == pytest.approx(0.25)  # classes with support only: (1/2 + 0) / 2
    check_single(scores, y)


def test_ties_go_to_the_lower_class_index():
    scores = np.full((4, 5), 0.2)
    y = np.array([0, 1, 2, 4])
    out = M.classification_metrics(scores, y, top_k=(1, 2, 3))
    assert out["top1"] == 0.25 and out["top2"] == 0.5 and out["top3"] == 0.75
    assert list(M.predict_single(scores)) == [0, 0, 0, 0]
    check_single(scores, y)


def test_top_k_is_clipped_to_the_number_of_classes():
    scores = np.array([[0.1, 0.9], [0.8, 0.2]])
    assert M.top_k_accuracy(scores, [0, 0], k=5) == 1.0
    assert M.top_k_accuracy(scores, [0, 0], k=1) == 0.5
    assert M.top_k_accuracy(np.zeros((0, 3)), np.zeros(0, int), k=1) == 0.0


def test_average_precision_with_tied_scores():
    scores = np.array([0.9, 0.5, 0.5, 0.5, 0.1])
    positives = np.array([1, 0, 1, 0, 1])
    # thresholds 0.9: P=1 R=1/3; 0.5: P=2/4 R=2/3; 0.1: P=3/5 R=1
    assert M.average_precision(scores, positives) == pytest.approx(1 / 3 + 1 / 3 * 0.5 + 1 / 3 * 0.6)
    assert M.average_precision(scores, positives) == pytest.approx(sk.average_precision_score(positives, scores))
    assert np.isnan(M.average_precision(scores, np.zeros(5)))


def test_multilabel_tables():
    Y = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
    scores = np.array([[0.9, 0.2, 0.4], [0.3, 0.6, 0.1], [0.7, 0.4, 0.8], [0.1, 0.7, 0.2]])
    out = M.classification_metrics(scores, Y)
    assert out["top1"] == pytest.approx(2 / 4)  # row 3 tops class 2 (not a positive); row 4 has none
    check_multi(scores, Y)
    check_multi(scores, Y, thresholds=np.array([0.5, 0.65, 0.3]))
    # no predictions at all: precision/recall/F1 are 0, AP still ranks
    check_multi(np.zeros((4, 3)), Y)
    # a class with no positives and no predictions is left out of the averages
    check_multi(np.c_[scores, np.zeros(4)], np.c_[Y, np.zeros(4, int)])


def test_bad_tables_are_rejected():
    with pytest.raises(ValueError, match="indices"):
        M.classification_metrics(np.zeros((2, 3)), [0, 3])
    with pytest.raises(ValueError, match="shape"):
        M.classification_metrics(np.zeros((2, 3)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="0/1"):
        M.classification_metrics(np.zeros((2, 2)), np.full((2, 2), 2))


# -- random tables --------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(8))
def test_random_single_label_tables_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(1, 60)), int(rng.integers(2, 9))
    scores = rng.random((n, k))
    if seed % 2:  # quantised: many ties
        scores = np.round(scores * 3) / 3
    y = rng.integers(0, k, size=n)
    check_single(scores, y)


@pytest.mark.parametrize("seed", range(6))
def test_random_multilabel_tables_match_sklearn(seed):
    rng = np.random.default_rng(100 + seed)
    n, k = int(rng.integers(1, 40)), int(rng.integers(2, 7))
    scores = np.round(rng.random((n, k)) * 4) / 4
    Y = (rng.random((n, k)) < 0.35).astype(int)
    check_multi(scores, Y)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_property_single_label_matches_sklearn(data):
    n = data.draw(st.integers(1, 25))
    k = data.draw(st.integers(2, 6))
    levels = st.integers(0, 4)  # few levels: ties are common
    scores = np.array(data.draw(st.lists(st.lists(levels, min_size=k, max_size=k), min_size=n, max_size=n))) / 4
    y = np.array(data.draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n)))
    check_single(scores, y)


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_property_multilabel_matches_sklearn(data):
    n = data.draw(st.integers(1, 20))
    k = data.draw(st.integers(2, 5))
    scores = np.array(data.draw(st.lists(st.lists(st.integers(0, 4), min_size=k, max_size=k),
                                         min_size=n, max_size=n))) / 4
    Y = np.array(data.draw(st.lists(st.lists(st.integers(0, 1), min_size=k, max_size=k), min_size=n, max_size=n)))
    check_multi(scores, Y)

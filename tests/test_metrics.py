import math

import numpy as np
import pytest

from sklearn_imgretrieval.metrics import (
    average_precision_at_k,
    knn_accuracy,
    mean_average_precision,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
)

Y_QUERY = np.array([1, 2])
RANKED = np.array([[1, 0, 1, 1], [0, 0, 2, 1]])


def _ap_by_definition(relevant):
    """AP from its definition, one query at a time."""
    hits, total = 0, 0.0
    for rank, is_relevant in enumerate(relevant, start=1):
        if is_relevant:
            hits += 1
            total += hits / rank
    return total / hits if hits else 0.0


def test_precision_and_recall():
    assert precision_at_k(Y_QUERY, RANKED, k=4) == pytest.approx((3 / 4 + 1 / 4) / 2)
    assert precision_at_k(Y_QUERY, RANKED, k=1) == pytest.approx(0.5)
    assert recall_at_k(Y_QUERY, RANKED, n_relevant=[6, 2], k=4) == pytest.approx((3 / 6 + 1 / 2) / 2)
    # A query without relevant items is left out of the mean.
    assert recall_at_k(Y_QUERY, RANKED, n_relevant=[6, 0], k=4) == pytest.approx(0.5)


def test_average_precision_matches_definition():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=50)
    ranked = rng.integers(0, 3, size=(50, 12))
    expected = [_ap_by_definition(ranked[i, :10] == y[i]) for i in range(50)]
    np.testing.assert_allclose(average_precision_at_k(y, ranked, k=10), expected)
    assert mean_average_precision(y, ranked, k=10) == pytest.approx(np.mean(expected))


def test_ndcg():
    # relevant at ranks 1, 3, 4 of 4; ideal with 4 relevant puts them all first
    dcg = 1 + 1 / math.log2(4) + 1 / math.log2(5)
    ideal = sum(1 / math.log2(i + 1) for i in range(1, 5))
    assert ndcg_at_k([1], [[1, 0, 1, 1]]) == pytest.approx(dcg / ideal)
    ideal3 = sum(1 / math.log2(i + 1) for i in range(1, 4))
    assert ndcg_at_k([1], [[1, 0, 1, 1]], n_relevant=3) == pytest.approx(dcg / ideal3)
    assert ndcg_at_k([1], [[1, 1, 0, 0]], n_relevant=2) == pytest.approx(1.0)


def test_knn_accuracy_majority_and_ties():
    assert knn_accuracy([1, 2], [[1, 1, 0], [0, 0, 2]]) == 0.5
    # tie between 0 and 3 goes to the smaller label
    assert knn_accuracy([0, 3], [[3, 0], [0, 3]]) == 0.5


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: precision_at_k([1, 2], [[1, 2]]), "must have shape"),
        (lambda: precision_at_k([1], [[1, 2]], k=3), "k=3 must be between 1 and the 2"),
        (lambda: precision_at_k([[1]], [[1]]), "must be 1-D"),
        (lambda: recall_at_k([1], [[1]], n_relevant=[0]), "No query has a relevant item"),
    ],
)
def test_metric_input_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()

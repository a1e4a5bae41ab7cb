import math

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.model_selection import GridSearchCV
from sklearn.preprocessing import FunctionTransformer

from sklearn_imgretrieval import ImagePreprocessor, NearestImageRetriever, make_retrieval_pipeline
from sklearn_imgretrieval.datasets import load_digits_images
from sklearn_imgretrieval.metrics import (
    average_precision_at_k,
    evaluate_retrieval,
    knn_accuracy,
    make_retrieval_scorer,
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


@pytest.fixture(scope="module")
def digits():
    images, labels = load_digits_images()
    return images.reshape(len(images), -1), labels


def test_evaluate_retrieval_matches_manual_computation(digits):
    X, y = digits
    Xg, yg, Xq, yq = X[:1200], y[:1200], X[1200:], y[1200:]
    scores = evaluate_retrieval(PCA(16, random_state=0), Xg, yg, Xq, yq, k=10, map_k=50, knn_k=5)
    pca = PCA(16, random_state=0).fit(Xg)
    retriever = NearestImageRetriever(n_neighbors=50, metric="cosine").fit(pca.transform(Xg))
    labels = yg[retriever.kneighbors(pca.transform(Xq), return_distance=False)]
    assert scores["precision@10"] == pytest.approx(precision_at_k(yq, labels, 10))
    assert scores["map@50"] == pytest.approx(mean_average_precision(yq, labels, 50))
    assert scores["knn_accuracy@5"] == pytest.approx(knn_accuracy(yq, labels, 5))
    n_relevant = np.array([(yg == label).sum() for label in yq])
    assert scores["recall@10"] == pytest.approx(recall_at_k(yq, labels, n_relevant, 10))
    assert scores["ndcg@10"] == pytest.approx(ndcg_at_k(yq, labels, 10, n_relevant))
    assert scores["precision@10"] > 0.85


def test_evaluate_retrieval_with_a_retrieval_pipeline_leaves_it_unfitted(digits):
    X, y = digits
    pipe = make_retrieval_pipeline(ImagePreprocessor(), NearestImageRetriever(metric="euclidean"))
    scores = evaluate_retrieval(pipe, X[:1000], y[:1000], X[1000:1200], y[1000:1200])
    assert scores["precision@10"] > 0.85
    assert not hasattr(pipe[-1], "index_")


def test_scorer_ranks_the_fold_leave_one_out(digits):
    X, y = digits
    X, y = X[:300], y[:300]
    pca = PCA(8, random_state=0).fit(X)
    score = make_retrieval_scorer("precision", k=5)(pca, X, y)
    ind = NearestImageRetriever(n_neighbors=5, metric="cosine").fit(pca.transform(X)).kneighbors(
        return_distance=False
    )
    assert score == pytest.approx(precision_at_k(y, y[ind]))
    # a pipeline ending in a retriever uses that retriever's metric
    pipe = make_retrieval_pipeline(PCA(8, random_state=0), NearestImageRetriever(metric="manhattan")).fit(X, y)
    ind = NearestImageRetriever(n_neighbors=5, metric="manhattan").fit(pipe[:-1].transform(X)).kneighbors(
        return_distance=False
    )
    assert make_retrieval_scorer("map", k=5)(pipe, X, y) == pytest.approx(mean_average_precision(y, y[ind]))


def test_scorer_in_grid_search_prefers_the_better_embedding(digits):
    X, y = digits
    noise = FunctionTransformer(lambda Z: np.random.default_rng(0).random(Z.shape))
    search = GridSearchCV(
        make_retrieval_pipeline(FunctionTransformer(), NearestImageRetriever()),
        {"functiontransformer": [noise, FunctionTransformer()]},
        scoring={"p": make_retrieval_scorer(k=10), "ndcg": make_retrieval_scorer("ndcg", k=10)},
        refit="p",
        cv=3,
    ).fit(X[:600], y[:600])
    assert search.best_index_ == 1
    assert search.cv_results_["mean_test_ndcg"][1] > search.cv_results_["mean_test_ndcg"][0]


def test_scorer_errors():
    with pytest.raises(ValueError, match="metric must be one of"):
        make_retrieval_scorer("f1")
    with pytest.raises(ValueError, match="k must be a positive integer"):
        make_retrieval_scorer(k=0)
    with pytest.raises(ValueError, match="needs more than k"):
        make_retrieval_scorer(k=10)(NearestImageRetriever(), np.eye(5), np.arange(5))

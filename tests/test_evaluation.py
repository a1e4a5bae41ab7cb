"""evaluate_retrieval and make_retrieval_scorer: estimators fitted and their rankings scored."""

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.model_selection import GridSearchCV
from sklearn.preprocessing import FunctionTransformer

from sklearn_imgretrieval import ImagePreprocessor, NearestImageRetriever, make_retrieval_pipeline
from sklearn_imgretrieval.datasets import load_digits_images
from sklearn_imgretrieval.evaluation import evaluate_retrieval, make_retrieval_scorer
from sklearn_imgretrieval.metrics import knn_accuracy, mean_average_precision, ndcg_at_k, precision_at_k, recall_at_k


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
    assert not hasattr(pipe[-1], "backend_")


def test_scorer_ranks_the_fold_leave_one_out(digits):
    X, y = digits
    X, y = X[:300], y[:300]
    pca = PCA(8, random_state=0).fit(X)
    score = make_retrieval_scorer("precision", k=5)(pca, X, y)
    ind = NearestImageRetriever(n_neighbors=5, metric="cosine").fit(pca.transform(X)).kneighbors(return_distance=False)
    assert score == pytest.approx(precision_at_k(y, y[ind]))
    # a pipeline ending in a retriever uses that retriever's metric
    pipe = make_retrieval_pipeline(PCA(8, random_state=0), NearestImageRetriever(metric="manhattan")).fit(X, y)
    ind = (
        NearestImageRetriever(n_neighbors=5, metric="manhattan")
        .fit(pipe[:-1].transform(X))
        .kneighbors(return_distance=False)
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

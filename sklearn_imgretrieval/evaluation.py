"""Evaluating retrieval: fit estimators on labelled images and score their rankings.

:func:`evaluate_retrieval` runs the gallery/query protocol of the
benchmarks; :func:`make_retrieval_scorer` gives ``GridSearchCV`` a scorer
that ranks each validation fold leave-one-out. The metrics themselves are
the pure functions of :mod:`sklearn_imgretrieval.metrics`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import clone

from .metrics import (
    count_relevant,
    knn_accuracy,
    mean_average_precision,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
)
from .neighbors import NearestImageRetriever
from .pipeline import make_retrieval_pipeline

if TYPE_CHECKING:
    from ._typing import Images

__all__ = ["evaluate_retrieval", "make_retrieval_scorer"]


def _fitted_retriever_input(estimator, X):
    """Embeddings of ``X`` and an unfitted retriever like the estimator's own.

    A pipeline ending in a retriever is cut before it; a retriever takes
    ``X`` as it is; any other fitted transformer embeds ``X`` and is paired
    with a cosine retriever.
    """
    steps = getattr(estimator, "steps", None)
    if steps and isinstance(steps[-1][1], NearestImageRetriever):
        return estimator[:-1].transform(X), clone(steps[-1][1])
    if isinstance(estimator, NearestImageRetriever):
        return X, clone(estimator)
    return estimator.transform(X), NearestImageRetriever(metric="cosine")


def _scores(y_query, neighbor_labels, n_relevant, k, map_k, knn_k):
    return {
        f"precision@{k}": precision_at_k(y_query, neighbor_labels, k),
        f"recall@{k}": recall_at_k(y_query, neighbor_labels, n_relevant, k),
        f"map@{map_k}": mean_average_precision(y_query, neighbor_labels, map_k),
        f"ndcg@{k}": ndcg_at_k(y_query, neighbor_labels, k, n_relevant),
        f"knn_accuracy@{knn_k}": knn_accuracy(y_query, neighbor_labels, knn_k),
    }


def evaluate_retrieval(
    estimator: Any,
    X_gallery: Images,
    y_gallery: ArrayLike,
    X_query: Images,
    y_query: ArrayLike,
    *,
    k: int = 10,
    map_k: int = 100,
    knn_k: int = 5,
) -> dict[str, float]:
    """Fit on a labelled gallery, query it, and return every retrieval metric.

    The protocol of the benchmarks: the gallery is the training split, the
    queries are the test split, and a neighbour is relevant when it shares
    the query's label.

    Parameters
    ----------
    estimator : estimator
        A :class:`~sklearn_imgretrieval.NearestImageRetriever`, a pipeline
        ending in one, or any transformer (its output is then searched with
        a cosine retriever). A clone is fitted on the gallery; ``estimator``
        itself is left unchanged.
    X_gallery, y_gallery : array-like
        Gallery images (or embeddings) and labels.
    X_query, y_query : array-like
        Query images (or embeddings) and labels.
    k : int, default=10
        Cut-off of precision, recall and NDCG.
    map_k : int, default=100
        Cut-off of mean average precision.
    knn_k : int, default=5
        Neighbours voting in the k-NN accuracy.

    Returns
    -------
    scores : dict
        ``precision@k``, ``recall@k``, ``map@map_k``, ``ndcg@k`` and
        ``knn_accuracy@knn_k``.

    Examples
    --------
    >>> from sklearn.decomposition import PCA
    >>> from sklearn_imgretrieval.datasets import load_digits_images
    >>> from sklearn_imgretrieval.evaluation import evaluate_retrieval
    >>> images, labels = load_digits_images()
    >>> X = images.reshape(len(images), -1)
    >>> scores = evaluate_retrieval(PCA(16), X[:1500], labels[:1500], X[1500:], labels[1500:])
    >>> sorted(scores)
    ['knn_accuracy@5', 'map@100', 'ndcg@10', 'precision@10', 'recall@10']
    >>> scores["precision@10"] > 0.85
    True
    """
    fitted = clone(estimator)
    if not hasattr(fitted, "kneighbors"):
        fitted = make_retrieval_pipeline(fitted, NearestImageRetriever(metric="cosine"))
    y_gallery = np.asarray(y_gallery)
    y_query = np.asarray(y_query)
    fitted.fit(X_gallery, y_gallery)
    n_ranked = min(max(k, map_k, knn_k), len(y_gallery))
    indices = fitted.kneighbors(X_query, n_neighbors=n_ranked, return_distance=False)
    return _scores(
        y_query,
        y_gallery[indices],
        count_relevant(y_query, y_gallery),
        min(k, n_ranked),
        min(map_k, n_ranked),
        min(knn_k, n_ranked),
    )


_METRICS = {
    "precision": lambda y, labels, n_rel, k: precision_at_k(y, labels, k),
    "recall": lambda y, labels, n_rel, k: recall_at_k(y, labels, n_rel, k),
    "map": lambda y, labels, n_rel, k: mean_average_precision(y, labels, k),
    "ndcg": lambda y, labels, n_rel, k: ndcg_at_k(y, labels, k, n_rel),
    "knn_accuracy": lambda y, labels, n_rel, k: knn_accuracy(y, labels, k),
}


class _RetrievalScorer:
    """Scorer ``(estimator, X, y) -> float`` ranking a fold leave-one-out."""

    def __init__(self, metric, k):
        self.metric = metric
        self.k = k

    def __call__(self, estimator, X, y):
        y = np.asarray(y)
        if len(y) <= self.k:
            raise ValueError(
                f"The fold has {len(y)} samples; ranking it leave-one-out at k={self.k} "
                "needs more than k. Use fewer folds or a smaller k."
            )
        embeddings, retriever = _fitted_retriever_input(estimator, X)
        retriever.fit(embeddings, y)
        indices = retriever.kneighbors(n_neighbors=self.k, return_distance=False)
        n_relevant = count_relevant(y, y) - 1  # the query itself is left out
        return _METRICS[self.metric](y, y[indices], n_relevant, self.k)

    def __repr__(self):
        return f"make_retrieval_scorer(metric={self.metric!r}, k={self.k})"


def make_retrieval_scorer(
    metric: Literal["precision", "recall", "map", "ndcg", "knn_accuracy"] = "precision", k: int = 10
) -> Callable[[Any, Any, ArrayLike], float]:
    """A scorer for ``GridSearchCV`` that ranks each validation fold leave-one-out.

    The fitted estimator embeds the validation fold (a pipeline ending in a
    :class:`~sklearn_imgretrieval.NearestImageRetriever` is cut before it and
    its metric is used; any other transformer's output is compared by
    cosine), then each fold item queries the rest of the fold, and the
    neighbours' labels are scored against its own.

    Parameters
    ----------
    metric : {"precision", "recall", "map", "ndcg", "knn_accuracy"}, default="precision"
        Retrieval metric at ``k``.
    k : int, default=10
        Cut-off.

    Returns
    -------
    scorer : callable
        ``scorer(estimator, X, y)`` returning a float, higher is better.

    Examples
    --------
    >>> from sklearn.decomposition import PCA
    >>> from sklearn.model_selection import GridSearchCV
    >>> from sklearn_imgretrieval.datasets import load_digits_images
    >>> from sklearn_imgretrieval.evaluation import make_retrieval_scorer
    >>> images, labels = load_digits_images()
    >>> X = images.reshape(len(images), -1)
    >>> search = GridSearchCV(PCA(), {"n_components": [2, 16]}, scoring=make_retrieval_scorer(k=5), cv=3)
    >>> search.fit(X, labels).best_params_
    {'n_components': 16}
    """
    if metric not in _METRICS:
        raise ValueError(f"metric must be one of {sorted(_METRICS)}, got {metric!r}.")
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}.")
    return _RetrievalScorer(metric, int(k))

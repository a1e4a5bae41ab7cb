"""Retrieval metrics over ranked neighbour labels, and scikit-learn scorers.

Every metric takes the labels of the queries, shape ``(n_queries,)``, and the
labels of each query's ranked neighbours, shape ``(n_queries, n_ranked)``,
nearest first (``gallery_labels[indices]`` for the indices that
``kneighbors`` returns). A neighbour is relevant when its label equals the
query's. Each returns the mean over queries, a float where higher is better.
"""

import numpy as np
import scipy.sparse as sp
from sklearn.base import clone

__all__ = [
    "average_precision_at_k",
    "evaluate_retrieval",
    "knn_accuracy",
    "make_retrieval_scorer",
    "mean_average_precision",
    "ndcg_at_k",
    "precision_at_k",
    "recall_at_k",
]


def _relevance(y_query, neighbor_labels, k):
    """Boolean ``(n_queries, k)`` matrix: is the i-th neighbour relevant."""
    y_query = np.asarray(y_query)
    neighbor_labels = np.asarray(neighbor_labels)
    if y_query.ndim != 1:
        raise ValueError(f"y_query must be 1-D, got shape {y_query.shape}.")
    if neighbor_labels.ndim != 2 or neighbor_labels.shape[0] != y_query.shape[0]:
        raise ValueError(
            "neighbor_labels must have shape (n_queries, n_ranked) with "
            f"n_queries={y_query.shape[0]}; got shape {neighbor_labels.shape}."
        )
    if y_query.shape[0] == 0:
        raise ValueError("No queries given: y_query is empty.")
    n_ranked = neighbor_labels.shape[1]
    k = n_ranked if k is None else k
    if not 1 <= k <= n_ranked:
        raise ValueError(
            f"k={k} must be between 1 and the {n_ranked} neighbours ranked per query."
        )
    return neighbor_labels[:, :k] == y_query[:, None]


def _check_n_relevant(n_relevant, n_queries):
    n_relevant = np.broadcast_to(np.asarray(n_relevant), (n_queries,))
    if (n_relevant < 0).any():
        raise ValueError("n_relevant must be non-negative.")
    return n_relevant


def precision_at_k(y_query, neighbor_labels, k=None):
    """Fraction of the first ``k`` neighbours that share the query's label.

    Parameters
    ----------
    y_query : array-like of shape (n_queries,)
        Query labels.
    neighbor_labels : array-like of shape (n_queries, n_ranked)
        Labels of each query's neighbours, nearest first.
    k : int, default=None
        Cut-off; all ranked neighbours when ``None``.

    Returns
    -------
    precision : float
        Mean precision@k over queries.

    Examples
    --------
    >>> from sklearn_imgretrieval.metrics import precision_at_k
    >>> precision_at_k([0, 1], [[0, 0, 1], [0, 1, 1]], k=2)
    0.75
    """
    return float(_relevance(y_query, neighbor_labels, k).mean())


def recall_at_k(y_query, neighbor_labels, n_relevant, k=None):
    """Fraction of each query's relevant gallery items found in the first ``k``.

    Parameters
    ----------
    y_query : array-like of shape (n_queries,)
        Query labels.
    neighbor_labels : array-like of shape (n_queries, n_ranked)
        Labels of each query's neighbours, nearest first.
    n_relevant : int or array-like of shape (n_queries,)
        Number of gallery items relevant to each query (for example the
        gallery's count of the query's label). Queries with none are left out
        of the mean.
    k : int, default=None
        Cut-off; all ranked neighbours when ``None``.

    Returns
    -------
    recall : float
        Mean recall@k over queries with at least one relevant item.

    Examples
    --------
    >>> from sklearn_imgretrieval.metrics import recall_at_k
    >>> recall_at_k([0, 1], [[0, 0, 1], [0, 1, 1]], n_relevant=[4, 2], k=2)
    0.5
    """
    relevance = _relevance(y_query, neighbor_labels, k)
    n_relevant = _check_n_relevant(n_relevant, relevance.shape[0])
    has_any = n_relevant > 0
    if not has_any.any():
        raise ValueError("No query has a relevant item (n_relevant is all zero).")
    found = relevance.sum(axis=1)[has_any]
    return float(np.mean(found / n_relevant[has_any]))


def average_precision_at_k(y_query, neighbor_labels, k=None):
    """Average precision over the first ``k`` neighbours, one value per query.

    ``AP@k = (1 / R_k) * sum_{i <= k} precision@i * rel_i`` where ``rel_i``
    is 1 when the i-th neighbour is relevant and the normaliser ``R_k`` is the
    number of relevant items retrieved in the top k (AP is 0 when there are
    none). It measures how early the relevant items come among those
    retrieved, whatever the size of the class in the gallery.

    Parameters
    ----------
    y_query : array-like of shape (n_queries,)
        Query labels.
    neighbor_labels : array-like of shape (n_queries, n_ranked)
        Labels of each query's neighbours, nearest first.
    k : int, default=None
        Cut-off; all ranked neighbours when ``None``.

    Returns
    -------
    average_precision : ndarray of shape (n_queries,)
        AP@k of each query.

    Examples
    --------
    >>> from sklearn_imgretrieval.metrics import average_precision_at_k
    >>> average_precision_at_k([0, 1], [[0, 1, 0], [0, 1, 1]])
    array([0.83333333, 0.58333333])
    """
    relevance = _relevance(y_query, neighbor_labels, k).astype(np.float64)
    ranks = np.arange(1, relevance.shape[1] + 1)
    precision_at_i = np.cumsum(relevance, axis=1) / ranks
    n_found = relevance.sum(axis=1)
    total = (precision_at_i * relevance).sum(axis=1)
    return np.divide(total, n_found, out=np.zeros_like(total), where=n_found > 0)


def mean_average_precision(y_query, neighbor_labels, k=None):
    """Mean over queries of :func:`average_precision_at_k` (mAP@k).

    Parameters
    ----------
    y_query : array-like of shape (n_queries,)
        Query labels.
    neighbor_labels : array-like of shape (n_queries, n_ranked)
        Labels of each query's neighbours, nearest first.
    k : int, default=None
        Cut-off; all ranked neighbours when ``None``.

    Returns
    -------
    map : float
        mAP@k.

    Examples
    --------
    >>> from sklearn_imgretrieval.metrics import mean_average_precision
    >>> round(mean_average_precision([0, 1], [[0, 1, 0], [0, 1, 1]]), 4)
    0.7083
    """
    return float(average_precision_at_k(y_query, neighbor_labels, k).mean())


def ndcg_at_k(y_query, neighbor_labels, k=None, n_relevant=None):
    """Normalised discounted cumulative gain with binary relevance.

    ``DCG@k = sum_{i <= k} rel_i / log2(i + 1)``, divided by the DCG of an
    ideal ranking that puts ``min(k, n_relevant)`` relevant items first.

    Parameters
    ----------
    y_query : array-like of shape (n_queries,)
        Query labels.
    neighbor_labels : array-like of shape (n_queries, n_ranked)
        Labels of each query's neighbours, nearest first.
    k : int, default=None
        Cut-off; all ranked neighbours when ``None``.
    n_relevant : int or array-like of shape (n_queries,), default=None
        Relevant items in the gallery per query; ``None`` assumes at least
        ``k`` (the ideal ranking is all relevant). Queries with none are left
        out of the mean.

    Returns
    -------
    ndcg : float
        Mean NDCG@k.

    Examples
    --------
    >>> from sklearn_imgretrieval.metrics import ndcg_at_k
    >>> round(ndcg_at_k([0], [[1, 0]]), 4)
    0.3869
    """
    relevance = _relevance(y_query, neighbor_labels, k)
    n_queries, k = relevance.shape
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = relevance @ discounts
    n_ideal = np.full(n_queries, k) if n_relevant is None else np.minimum(
        _check_n_relevant(n_relevant, n_queries), k
    )
    ideal = np.concatenate([[0.0], np.cumsum(discounts)])[n_ideal]
    keep = n_ideal > 0
    if not keep.any():
        raise ValueError("No query has a relevant item (n_relevant is all zero).")
    return float(np.mean(dcg[keep] / ideal[keep]))


def knn_accuracy(y_query, neighbor_labels, k=None):
    """Accuracy of the majority label of the first ``k`` neighbours.

    Ties go to the label that comes first in sorted order.

    Parameters
    ----------
    y_query : array-like of shape (n_queries,)
        Query labels.
    neighbor_labels : array-like of shape (n_queries, n_ranked)
        Labels of each query's neighbours, nearest first.
    k : int, default=None
        Neighbours that vote; all ranked neighbours when ``None``.

    Returns
    -------
    accuracy : float
        Fraction of queries whose majority label is their own.

    Examples
    --------
    >>> from sklearn_imgretrieval.metrics import knn_accuracy
    >>> knn_accuracy([0, 1], [[0, 0, 1], [0, 0, 1]])
    0.5
    """
    _relevance(y_query, neighbor_labels, k)  # validates shapes and k
    predicted = _majority_vote(np.asarray(neighbor_labels)[:, :k])
    return float(np.mean(predicted == np.asarray(y_query)))


def _majority_vote(neighbor_labels):
    """The most frequent label of each row; ties go to the smallest label."""
    classes, codes = np.unique(neighbor_labels, return_inverse=True)
    n_rows, k = neighbor_labels.shape
    votes = sp.csr_matrix(
        (np.ones(codes.size), codes.ravel(), np.arange(0, codes.size + 1, k)),
        shape=(n_rows, len(classes)),
    )
    return classes[np.asarray(votes.argmax(axis=1)).ravel()]


def _count_relevant(y_query, y_gallery):
    """How many gallery items share each query's label."""
    labels, counts = np.unique(y_gallery, return_counts=True)
    position = np.searchsorted(labels, y_query)
    position = np.clip(position, 0, len(labels) - 1)
    return np.where(labels[position] == y_query, counts[position], 0)


def _fitted_retriever_input(estimator, X):
    """Embeddings of ``X`` and an unfitted retriever like the estimator's own.

    A pipeline ending in a retriever is cut before it; a retriever takes
    ``X`` as it is; any other fitted transformer embeds ``X`` and is paired
    with a cosine retriever.
    """
    from .neighbors import NearestImageRetriever

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


def evaluate_retrieval(estimator, X_gallery, y_gallery, X_query, y_query, *, k=10, map_k=100, knn_k=5):
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
    >>> from sklearn_imgretrieval.metrics import evaluate_retrieval
    >>> images, labels = load_digits_images()
    >>> X = images.reshape(len(images), -1)
    >>> scores = evaluate_retrieval(PCA(16), X[:1500], labels[:1500], X[1500:], labels[1500:])
    >>> sorted(scores)
    ['knn_accuracy@5', 'map@100', 'ndcg@10', 'precision@10', 'recall@10']
    >>> scores["precision@10"] > 0.85
    True
    """
    from .pipeline import make_retrieval_pipeline

    fitted = clone(estimator)
    if not hasattr(fitted, "kneighbors"):
        from .neighbors import NearestImageRetriever

        fitted = make_retrieval_pipeline(fitted, NearestImageRetriever(metric="cosine"))
    y_gallery = np.asarray(y_gallery)
    y_query = np.asarray(y_query)
    fitted.fit(X_gallery, y_gallery)
    n_ranked = min(max(k, map_k, knn_k), len(y_gallery))
    indices = fitted.kneighbors(X_query, n_neighbors=n_ranked, return_distance=False)
    return _scores(
        y_query, y_gallery[indices], _count_relevant(y_query, y_gallery),
        min(k, n_ranked), min(map_k, n_ranked), min(knn_k, n_ranked),
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
        n_relevant = _count_relevant(y, y) - 1  # the query itself is left out
        return _METRICS[self.metric](y, y[indices], n_relevant, self.k)

    def __repr__(self):
        return f"make_retrieval_scorer(metric={self.metric!r}, k={self.k})"


def make_retrieval_scorer(metric="precision", k=10):
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
    >>> from sklearn_imgretrieval.metrics import make_retrieval_scorer
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

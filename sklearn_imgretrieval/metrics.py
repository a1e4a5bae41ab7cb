"""Retrieval metrics over ranked neighbour labels: arrays in, numbers out.

Every metric takes the labels of the queries, shape ``(n_queries,)``, and the
labels of each query's ranked neighbours, shape ``(n_queries, n_ranked)``,
nearest first (``gallery_labels[indices]`` for the indices that
``kneighbors`` returns). A neighbour is relevant when its label equals the
query's. Each returns the mean over queries, a float where higher is better.

Nothing here fits or imports an estimator; :mod:`sklearn_imgretrieval.evaluation`
does that with these functions.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike

__all__ = [
    "average_precision_at_k",
    "knn_accuracy",
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
        raise ValueError(f"k={k} must be between 1 and the {n_ranked} neighbours ranked per query.")
    return neighbor_labels[:, :k] == y_query[:, None]


def _check_n_relevant(n_relevant, n_queries):
    n_relevant = np.broadcast_to(np.asarray(n_relevant), (n_queries,))
    if (n_relevant < 0).any():
        raise ValueError("n_relevant must be non-negative.")
    return n_relevant


def precision_at_k(y_query: ArrayLike, neighbor_labels: ArrayLike, k: int | None = None) -> float:
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


def recall_at_k(y_query: ArrayLike, neighbor_labels: ArrayLike, n_relevant: ArrayLike, k: int | None = None) -> float:
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
    counts = _check_n_relevant(n_relevant, relevance.shape[0])
    has_any = counts > 0
    if not has_any.any():
        raise ValueError("No query has a relevant item (n_relevant is all zero).")
    found = relevance.sum(axis=1)[has_any]
    return float(np.mean(found / counts[has_any]))


def average_precision_at_k(y_query: ArrayLike, neighbor_labels: ArrayLike, k: int | None = None) -> np.ndarray:
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


def mean_average_precision(y_query: ArrayLike, neighbor_labels: ArrayLike, k: int | None = None) -> float:
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


def ndcg_at_k(
    y_query: ArrayLike, neighbor_labels: ArrayLike, k: int | None = None, n_relevant: ArrayLike | None = None
) -> float:
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
    n_ideal = np.full(n_queries, k) if n_relevant is None else np.minimum(_check_n_relevant(n_relevant, n_queries), k)
    ideal = np.concatenate([[0.0], np.cumsum(discounts)])[n_ideal]
    keep = n_ideal > 0
    if not keep.any():
        raise ValueError("No query has a relevant item (n_relevant is all zero).")
    return float(np.mean(dcg[keep] / ideal[keep]))


def knn_accuracy(y_query: ArrayLike, neighbor_labels: ArrayLike, k: int | None = None) -> float:
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
    predicted = majority_vote(np.asarray(neighbor_labels)[:, :k])
    return float(np.mean(predicted == np.asarray(y_query)))


def majority_vote(neighbor_labels):
    """The most frequent label of each row; ties go to the smallest label."""
    classes, codes = np.unique(neighbor_labels, return_inverse=True)
    n_rows, k = neighbor_labels.shape
    votes = sp.csr_matrix(
        (np.ones(codes.size), codes.ravel(), np.arange(0, codes.size + 1, k)),
        shape=(n_rows, len(classes)),
    )
    return classes[np.asarray(votes.argmax(axis=1)).ravel()]


def count_relevant(y_query, y_gallery):
    """How many gallery items share each query's label."""
    labels, counts = np.unique(y_gallery, return_counts=True)
    position = np.searchsorted(labels, y_query)
    position = np.clip(position, 0, len(labels) - 1)
    return np.where(labels[position] == y_query, counts[position], 0)

import pickle
import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.cluster import DBSCAN
from sklearn.exceptions import NotFittedError
from sklearn.neighbors import KNeighborsTransformer, NearestNeighbors

from sklearn_imgretrieval import NearestImageRetriever


@pytest.fixture
def gallery():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 5)).astype(np.float32)
    y = rng.integers(0, 3, size=60)
    return X, y


# scikit-learn's trees do not support cosine, so it is paired with the others only.
@pytest.mark.parametrize(
    "metric, algorithm",
    [(m, a) for m in ("euclidean", "manhattan") for a in ("auto", "brute", "kd_tree", "ball_tree")]
    + [("cosine", "auto"), ("cosine", "brute")],
)
def test_kneighbors_matches_sklearn(gallery, metric, algorithm):
    X, _ = gallery
    queries = X[:7] + 0.01
    retriever = NearestImageRetriever(n_neighbors=4, metric=metric, algorithm=algorithm).fit(X)
    reference = NearestNeighbors(n_neighbors=4, metric=metric, algorithm="brute").fit(X)
    dist, ind = retriever.kneighbors(queries)
    ref_dist, ref_ind = reference.kneighbors(queries)
    np.testing.assert_array_equal(ind, ref_ind)
    np.testing.assert_allclose(dist, ref_dist, rtol=1e-5, atol=1e-6)


def test_kneighbors_without_X_leaves_each_item_out(gallery):
    X, _ = gallery
    ind = NearestImageRetriever(n_neighbors=3).fit(X).kneighbors(return_distance=False)
    assert ind.shape == (60, 3)
    assert not (ind == np.arange(60)[:, None]).any()
    ref = NearestNeighbors(n_neighbors=3).fit(X).kneighbors(return_distance=False)
    np.testing.assert_array_equal(ind, ref)


def test_transform_matches_kneighbors_transformer(gallery):
    X, _ = gallery
    for mode in ("distance", "connectivity"):
        ours = NearestImageRetriever(n_neighbors=4, mode=mode).fit(X).transform(X[:10])
        ref = KNeighborsTransformer(n_neighbors=4, mode=mode).fit(X).transform(X[:10])
        assert sp.issparse(ours) and ours.format == "csr"
        assert ours.shape == (10, 60)
        expected_per_row = 5 if mode == "distance" else 4
        assert (np.diff(ours.indptr) == expected_per_row).all()
        np.testing.assert_allclose(ours.toarray(), ref.toarray(), rtol=1e-5, atol=1e-6)


def test_fit_transform_graph_feeds_dbscan_precomputed():
    rng = np.random.default_rng(1)
    blobs = np.vstack([rng.normal(0, 0.1, (20, 2)), rng.normal(5, 0.1, (20, 2))])
    graph = NearestImageRetriever(n_neighbors=15).fit_transform(blobs)
    labels = DBSCAN(eps=1.0, min_samples=3, metric="precomputed").fit_predict(graph)
    assert len(set(labels[:20])) == 1 and len(set(labels[20:])) == 1
    assert labels[0] != labels[-1]


def test_kneighbors_graph_connectivity(gallery):
    X, _ = gallery
    retriever = NearestImageRetriever(n_neighbors=2).fit(X)
    graph = retriever.kneighbors_graph(X[:3], n_neighbors=3)
    _, ind = retriever.kneighbors(X[:3], n_neighbors=3)
    dense = graph.toarray()
    assert dense.sum() == 9
    for row, neighbours in enumerate(ind):
        assert set(np.flatnonzero(dense[row])) == set(neighbours)
    with pytest.raises(ValueError, match="mode must be"):
        retriever.kneighbors_graph(X[:3], mode="weights")


def test_predict_is_majority_label():
    X = np.array([[0.0], [0.1], [0.2], [5.0], [5.1]])
    retriever = NearestImageRetriever(n_neighbors=3).fit(X, ["a", "a", "b", "b", "b"])
    np.testing.assert_array_equal(retriever.predict([[0.05], [5.05]]), ["a", "b"])


def test_score_is_precision_at_k(gallery):
    X, y = gallery
    retriever = NearestImageRetriever(n_neighbors=4).fit(X, y)
    queries, y_queries = X[:10] + 0.01, y[:10]
    ind = retriever.kneighbors(queries, return_distance=False)
    expected = np.mean(y[ind] == y_queries[:, None])
    assert retriever.score(queries, y_queries) == pytest.approx(expected)


def test_leave_one_out_reads_and_rescores_the_gallery_a_chunk_at_a_time(monkeypatch):
    # This library's own chunking: the gallery rows re-queried by kneighbors(X=None) and the
    # float64 re-scoring of FAISS's exact answers. All at once, the candidates' rows alone
    # would take 20,000 x 6 x 32 float64 values (30.7 MB).
    from sklearn_imgretrieval.neighbors import _retriever

    X = np.random.default_rng(0).random((20_000, 32), dtype=np.float32)
    retriever = NearestImageRetriever(n_neighbors=5, algorithm="flat", metric="cosine").fit(X)
    expected = retriever.kneighbors(return_distance=False)
    monkeypatch.setattr(_retriever, "_LEAVE_ONE_OUT_CHUNK", 1000)
    tracemalloc.start()
    try:
        found = retriever.kneighbors(return_distance=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(found, expected)
    assert peak < 20_000 * 6 * 32 * 8 / 4


def test_pickle_round_trip(gallery):
    X, y = gallery
    retriever = NearestImageRetriever(n_neighbors=3, metric="cosine").fit(X, y)
    loaded = pickle.loads(pickle.dumps(retriever))
    np.testing.assert_array_equal(loaded.kneighbors(X[:5])[1], retriever.kneighbors(X[:5])[1])
    np.testing.assert_array_equal(loaded.predict(X[:5]), retriever.predict(X[:5]))


# ------------------------------------------------------------------- errors
def test_n_neighbors_larger_than_gallery():
    X = np.eye(4)
    retriever = NearestImageRetriever(n_neighbors=5).fit(X)
    with pytest.raises(ValueError, match=r"n_neighbors=5 is larger than the gallery of 4 items"):
        retriever.kneighbors(X)
    with pytest.raises(ValueError, match="less the query itself. Ask for at most 3"):
        retriever.kneighbors(n_neighbors=4)


def test_query_before_fit():
    with pytest.raises(NotFittedError):
        NearestImageRetriever().kneighbors(np.eye(3))


@pytest.mark.parametrize("method", ["predict", "score"])
def test_predict_and_score_need_gallery_labels(gallery, method):
    X, y = gallery
    retriever = NearestImageRetriever().fit(X)
    args = (X[:3],) if method == "predict" else (X[:3], y[:3])
    with pytest.raises(ValueError, match=rf"{method} needs the gallery's labels.*fit\(X, y\)"):
        getattr(retriever, method)(*args)


def test_unknown_metric():
    with pytest.raises(ValueError, match="'metric' parameter .* must be a str among"):
        NearestImageRetriever(metric="not-a-metric").fit(np.eye(3))


def test_wrong_number_of_features_at_query(gallery):
    X, _ = gallery
    retriever = NearestImageRetriever().fit(X)
    with pytest.raises(ValueError, match="features"):
        retriever.kneighbors(np.ones((2, 3)))


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "params, message",
    [
        ({"algorithm": "annoy"}, "algorithm"),
        ({"n_probe": 0}, "n_probe"),
        ({"refine": "pq"}, "refine"),
        ({"algorithm": "kd_tree", "metric": "cosine"}, r"cannot search with metric='cosine'.*'brute'.*'flat'"),
        ({"algorithm": "brute", "metric": "hamming"}, r"cannot search with metric='hamming'.*'flat', 'ivf', 'hnsw'"),
        ({"algorithm": "ivfpq", "metric": "manhattan"}, r"cannot search with metric='manhattan'.*'brute'"),
        ({"algorithm": "ivf", "n_cells": 100}, r"n_cells=100 k-means cells cannot be trained on 60 rows"),
        ({"algorithm": "ivfpq", "pq_m": 3}, r"pq_m=3 must divide the number of features, 5"),
    ],
)
def test_bad_settings_are_refused_before_anything_is_built(gallery, params, message):
    X, _ = gallery
    retriever = NearestImageRetriever(**params)
    with pytest.raises(ValueError, match=message):
        retriever.fit(X)
    assert not hasattr(retriever, "backend_")


def test_bad_rows_are_refused_and_a_failed_partial_fit_changes_nothing(gallery):
    X, y = gallery
    retriever = NearestImageRetriever(n_neighbors=3, algorithm="ivf", random_state=0).fit(X[:40], y[:40])
    before = retriever.kneighbors(X[40:], return_distance=False)
    with pytest.raises(ValueError, match="5 features"):
        retriever.partial_fit(np.ones((3, 4)), [0, 1, 2])
    nan_rows = X[40:43].copy()
    nan_rows[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        retriever.partial_fit(nan_rows, y[40:43])
    with pytest.raises(ValueError, match="fitted with labels"):
        retriever.partial_fit(X[40:43])
    with pytest.raises(ValueError, match="text but the gallery's are number"):
        retriever.partial_fit(X[40:43], ["a", "b", "c"])
    assert retriever.n_samples_fit_ == 40 and len(retriever.gallery_labels_) == 40
    np.testing.assert_array_equal(retriever.kneighbors(X[40:], return_distance=False), before)
    with pytest.raises(ValueError, match="infinity|NaN"):
        retriever.kneighbors(np.full((1, 5), np.inf))
    with pytest.raises(ValueError, match="uint8 rows"):
        NearestImageRetriever(metric="hamming").fit(X)


@pytest.mark.parametrize("algorithm", ["brute", "flat"])
def test_a_bool_is_not_a_number_of_neighbours_nor_a_radius(gallery, algorithm):
    X, _ = gallery
    retriever = NearestImageRetriever(algorithm=algorithm).fit(X)
    for ask in (
        lambda: retriever.kneighbors(X[:2], n_neighbors=True),  # was answered as n_neighbors=1
        lambda: retriever.kneighbors(n_neighbors=True),
        lambda: retriever.kneighbors_graph(X[:2], n_neighbors=True),
    ):
        with pytest.raises(ValueError, match="n_neighbors must be a positive integer, got True"):
            ask()
    with pytest.raises(ValueError, match="radius must be a finite non-negative number, got True"):
        retriever.radius_neighbors(X[:2], radius=True)
    with pytest.raises(ValueError, match="n_neighbors must be a positive integer, got True"):
        NearestImageRetriever(algorithm=algorithm, n_neighbors=True).fit(X).kneighbors(X[:2])


def test_labels_must_be_complete_and_of_one_type(gallery):
    X, y = gallery
    with pytest.raises(ValueError, match="contain None"):
        NearestImageRetriever().fit(X[:3], np.array([1, None, 2], dtype=object))
    with pytest.raises(ValueError, match="contains? NaN"):
        NearestImageRetriever().fit(X[:3], [1.0, np.nan, 2.0])
    retriever = NearestImageRetriever(n_neighbors=3).fit(X, [str(label) for label in y])
    with pytest.raises(ValueError, match="query labels are number but the gallery's are text"):
        retriever.score(X[:5], y[:5])
    assert retriever.score(X[:5], [str(label) for label in y[:5]]) > 0


def test_a_callable_metric_returning_nan_is_an_error(gallery):
    X, _ = gallery
    retriever = NearestImageRetriever(n_neighbors=2, metric=lambda a, b: np.nan).fit(X[:10])
    with pytest.raises(ValueError, match="returned NaN or infinite distances"):
        retriever.kneighbors(X[:2])


def test_transform_names_the_extra_neighbour(gallery):
    X, _ = gallery
    retriever = NearestImageRetriever(n_neighbors=10).fit(X[:10])
    with pytest.raises(ValueError, match=r"n_neighbors \+ 1 = 11 neighbours per row"):
        retriever.transform(X[:2])
    assert NearestImageRetriever(n_neighbors=10, mode="connectivity").fit(X[:10]).transform(X[:2]).nnz == 20


def test_feature_names_out_name_the_gallery_columns(gallery):
    X, _ = gallery
    retriever = NearestImageRetriever().fit(X[:4])
    assert retriever.get_feature_names_out().tolist() == [f"nearestimageretriever{i}" for i in range(4)]

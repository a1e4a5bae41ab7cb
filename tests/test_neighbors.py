import pickle
import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp
import sklearn
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


def test_queries_are_chunked_not_one_distance_matrix():
    # With the full 4000 x 4000 float64 distance matrix (128 MB) the peak
    # would be above it; chunked search stays below a quarter of it.
    rng = np.random.default_rng(0)
    X = rng.random((4000, 16))
    retriever = NearestImageRetriever(n_neighbors=5, algorithm="brute", metric="cosine").fit(X)
    with sklearn.config_context(working_memory=8):
        tracemalloc.start()
        retriever.kneighbors(X)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 4000 * 4000 * 8 / 4


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

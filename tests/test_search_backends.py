"""The neighbours contract, run on every search backend (scikit-learn's and FAISS's).

Exact backends must agree with scikit-learn's ``NearestNeighbors``; the
approximate ones must find most true neighbours, and every backend keeps
the same contract: leave-one-out queries, graph shapes, radius search,
pickling, ``partial_fit`` and determinism.
"""

import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import NearestNeighbors

from sklearn_imgretrieval import NearestImageRetriever, make_retrieval_pipeline
from sklearn_imgretrieval.neighbors._faiss import FaissFlatBackend, auto_n_cells, auto_pq_bits, auto_pq_m

EXACT = ("auto", "brute", "kd_tree", "ball_tree", "flat")
APPROXIMATE = ("ivf", "hnsw", "ivfpq")
FLOAT_METRICS = ("euclidean", "cosine")


def _serves(algorithm, metric):
    return not (metric == "cosine" and algorithm in ("kd_tree", "ball_tree"))


@pytest.fixture(scope="module")
def clustered():
    """1,200 rows in 24 clusters of 16 dimensions, and 60 queries near them."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(24, 16)) * 4
    labels = rng.integers(0, 24, size=1200)
    X = (centres[labels] + rng.normal(size=(1200, 16))).astype(np.float32)
    queries = (centres[rng.integers(0, 24, size=60)] + rng.normal(size=(60, 16))).astype(np.float32)
    return X, labels, queries


def _recall(found, truth):
    return np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)])


def _reference(X, metric):
    return NearestNeighbors(metric=metric, algorithm="brute").fit(X)


@pytest.mark.parametrize("metric", FLOAT_METRICS)
@pytest.mark.parametrize("algorithm", EXACT)
def test_exact_backends_match_scikit_learn(clustered, algorithm, metric):
    if not _serves(algorithm, metric):
        pytest.skip(f"scikit-learn's {algorithm} has no {metric} metric (tested as an error below)")
    X, _, queries = clustered
    retriever = NearestImageRetriever(n_neighbors=10, metric=metric, algorithm=algorithm).fit(X)
    distances, indices = retriever.kneighbors(queries)
    ref_distances, ref_indices = _reference(X, metric).kneighbors(queries, n_neighbors=10)
    np.testing.assert_array_equal(indices, ref_indices)
    np.testing.assert_allclose(distances, ref_distances, rtol=1e-5, atol=1e-6)
    assert distances.dtype == np.float64 and indices.dtype == np.int64
    # Leave-one-out equals scikit-learn's
    loo_d, loo_i = retriever.kneighbors(n_neighbors=5)
    ref_loo_d, ref_loo_i = _reference(X, metric).kneighbors(n_neighbors=5)
    np.testing.assert_array_equal(loo_i, ref_loo_i)
    np.testing.assert_allclose(loo_d, ref_loo_d, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("metric", FLOAT_METRICS)
@pytest.mark.parametrize("algorithm", APPROXIMATE)
def test_approximate_backends_find_most_true_neighbours(clustered, algorithm, metric):
    X, _, queries = clustered
    truth = _reference(X, metric).kneighbors(queries, n_neighbors=10, return_distance=False)
    retriever = NearestImageRetriever(n_neighbors=10, metric=metric, algorithm=algorithm, random_state=0).fit(X)
    distances, indices = retriever.kneighbors(queries)
    assert _recall(indices, truth) >= 0.9
    assert (np.diff(distances, axis=1) >= -1e-6).all()  # nearest first
    # distances are the metric's own, whatever FAISS computes inside
    neighbours = X[indices]
    if metric == "euclidean":
        true = np.linalg.norm(neighbours - queries[:, None, :], axis=2)
    else:
        unit = neighbours / np.linalg.norm(neighbours, axis=2, keepdims=True)
        true = 1 - np.einsum("qkd,qd->qk", unit, queries / np.linalg.norm(queries, axis=1, keepdims=True))
    tolerance = 0.05 if algorithm == "ivfpq" else 1e-4  # IVF-PQ re-ranks from half-precision rows
    np.testing.assert_allclose(distances, true, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("algorithm", EXACT + APPROXIMATE)
def test_leave_one_out_and_graph_shapes(clustered, algorithm):
    X, _, _ = clustered
    retriever = NearestImageRetriever(n_neighbors=4, algorithm=algorithm, random_state=0).fit(X[:300])
    indices = retriever.kneighbors(return_distance=False)
    assert indices.shape == (300, 4)
    assert not (indices == np.arange(300)[:, None]).any()
    graph = retriever.transform(X[:7])
    assert sp.issparse(graph) and graph.format == "csr" and graph.shape == (7, 300)
    assert (np.diff(graph.indptr) == 5).all()  # n_neighbors + 1 in mode="distance"
    connectivity = retriever.kneighbors_graph(X[:7], n_neighbors=3)
    assert connectivity.sum() == 21 and set(np.unique(connectivity.data)) == {1.0}


@pytest.mark.parametrize("algorithm", EXACT + APPROXIMATE)
def test_pickle_gives_identical_answers(clustered, algorithm):
    X, y, queries = clustered
    retriever = NearestImageRetriever(n_neighbors=5, algorithm=algorithm, random_state=0).fit(X, y)
    loaded = pickle.loads(pickle.dumps(retriever))
    for a, b in zip(retriever.kneighbors(queries), loaded.kneighbors(queries)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(retriever.predict(queries), loaded.predict(queries))
    loaded.partial_fit(queries, y[:60])  # a loaded index still grows
    assert loaded.n_samples_fit_ == len(X) + 60


def test_faiss_index_loads_in_a_fresh_process(clustered, tmp_path):
    X, _, queries = clustered
    retriever = NearestImageRetriever(n_neighbors=5, algorithm="ivfpq", random_state=0).fit(X)
    (tmp_path / "retriever.pkl").write_bytes(pickle.dumps(retriever))
    np.save(tmp_path / "queries.npy", queries)
    script = textwrap.dedent(
        f"""
        import pickle, numpy as np
        retriever = pickle.loads(open({str(tmp_path / "retriever.pkl")!r}, "rb").read())
        np.save({str(tmp_path / "indices.npy")!r}, retriever.kneighbors(np.load({str(tmp_path / "queries.npy")!r}))[1])
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    np.testing.assert_array_equal(np.load(tmp_path / "indices.npy"), retriever.kneighbors(queries)[1])


def _rebuilt_by_faiss(index, rows):
    """A copy of a trained FAISS index (rows FAISS owns), emptied and given ``rows`` by FAISS's own add."""
    import faiss

    copy = faiss.deserialize_index(faiss.serialize_index(index))
    copy.reset()
    copy.add(rows)
    return copy


def _assert_same_ivfpq_answers(ours, theirs, queries):
    import faiss

    parameters = faiss.IndexRefineSearchParameters(k_factor=4, base_index_params=faiss.SearchParametersIVF(nprobe=4))
    for a, b in zip(ours.search(queries, 5, params=parameters), theirs.search(queries, 5, params=parameters)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("refine", ("flat", "fp16", "sq8"))
def test_ivfpq_rows_grown_by_the_library_are_those_faiss_would_store(clustered, refine):
    # The library grows the re-ranking rows itself (FAISS copies them all on every growth):
    # they must be the bytes FAISS's own add writes, and search the same.
    import faiss

    X, _, queries = clustered
    grown = NearestImageRetriever(algorithm="ivfpq", refine=refine, random_state=0)
    for chunk in np.array_split(X, 3):
        grown.partial_fit(chunk)
    ours = grown.backend_._faiss_index
    theirs = _rebuilt_by_faiss(ours, X)  # same training

    def stored(index):
        codes = faiss.downcast_index(index.refine_index).codes
        return faiss.rev_swig_ptr(codes.data(), codes.size()).copy()

    np.testing.assert_array_equal(stored(ours), stored(theirs))
    _assert_same_ivfpq_answers(ours, theirs, queries)


@pytest.mark.parametrize("refine", ("flat", "fp16", "sq8"))
def test_ivfpq_removal_moves_the_kept_rows_down_in_place(clustered, refine, monkeypatch):
    X, _, queries = clustered
    monkeypatch.setattr("sklearn_imgretrieval.neighbors._faiss._CHUNK", 100)  # many chunks, overlapping moves
    monkeypatch.setattr("sklearn_imgretrieval.neighbors._faiss_refine._CHUNK", 100)
    retriever = NearestImageRetriever(algorithm="ivfpq", refine=refine, random_state=0).fit(X)
    rows = retriever.gallery_rows()
    gone = np.concatenate([np.arange(0, 500, 3), np.arange(900, 1000)])
    kept = np.setdiff1d(np.arange(len(X)), gone)
    theirs = _rebuilt_by_faiss(retriever.backend_._faiss_index, rows[kept])  # removal by rebuild, from the same rows
    retriever.remove(gone)
    ours = retriever.backend_._faiss_index
    assert ours.ntotal == ours.base_index.ntotal == ours.refine_index.ntotal == len(kept)
    np.testing.assert_array_equal(retriever.backend_.reconstruct(0, len(kept)), rows[kept])
    _assert_same_ivfpq_answers(ours, theirs, queries)


@pytest.mark.parametrize("fails_after", (0, 2))
def test_an_interrupted_ivfpq_removal_keeps_a_consistent_prefix(clustered, monkeypatch, fails_after):
    import faiss

    X, y, queries = clustered
    monkeypatch.setattr("sklearn_imgretrieval.neighbors._faiss._CHUNK", 100)
    retriever = NearestImageRetriever(algorithm="ivfpq", random_state=0).fit(X, y)
    rows = retriever.gallery_rows()
    gone = np.arange(0, len(X), 2)
    kept = np.setdiff1d(np.arange(len(X)), gone)
    add, calls = faiss.IndexIVFPQ.add, []

    def interrupted_add(self, x):  # Ctrl-C after some chunks have been added again
        if len(calls) == fails_after:
            raise KeyboardInterrupt
        calls.append(len(x))
        return add(self, x)

    monkeypatch.setattr(faiss.IndexIVFPQ, "add", interrupted_add)
    with pytest.raises(KeyboardInterrupt):
        retriever.remove(gone)
    monkeypatch.undo()
    index, n = retriever.backend_._faiss_index, 100 * fails_after
    assert retriever.n_samples_fit_ == len(retriever.gallery_labels_) == index.ntotal == n
    assert index.base_index.ntotal == index.refine_index.ntotal == n
    np.testing.assert_array_equal(retriever.gallery_labels_, y[kept][:n])
    np.testing.assert_array_equal(retriever.backend_.reconstruct(0, n), rows[kept][:n])
    if n:
        assert retriever.kneighbors(n_neighbors=3, return_distance=False).max() < n  # leave-one-out reads every row


def test_an_ivfpq_removal_interrupted_while_moving_rows_leaves_an_empty_consistent_index(clustered, monkeypatch):
    from sklearn_imgretrieval.neighbors._faiss_refine import ViewedRows

    X, y, _ = clustered
    retriever = NearestImageRetriever(algorithm="ivfpq", random_state=0).fit(X, y)

    def interrupted_keep(self, rows):
        half = rows[: len(rows) // 2]
        self._codes[: len(half)] = self._codes[half]
        raise KeyboardInterrupt

    monkeypatch.setattr(ViewedRows, "keep", interrupted_keep)
    with pytest.raises(KeyboardInterrupt):
        retriever.remove(np.arange(0, len(X), 2))
    index = retriever.backend_._faiss_index
    assert retriever.n_samples_fit_ == len(retriever.gallery_labels_) == index.ntotal == 0
    assert index.base_index.ntotal == index.refine_index.ntotal == 0


@pytest.mark.parametrize("refine", (None, "fp16"))
def test_ivfpq_gives_back_its_rows_from_the_refine_rows_or_the_codes(clustered, refine):
    X, _, _ = clustered
    retriever = NearestImageRetriever(n_neighbors=4, algorithm="ivfpq", refine=refine, random_state=0)
    for chunk in np.array_split(X, 2):
        retriever.partial_fit(chunk)
    rows = retriever.gallery_rows()
    if refine == "fp16":  # half precision: 11 significant bits (FAISS may round a tie the other way)
        np.testing.assert_allclose(rows, X, rtol=2**-10)
    else:  # decoded from 16 dimensions in a few bits: near each row, far from the others
        assert np.linalg.norm(rows - X, axis=1).mean() < 0.5 * np.linalg.norm(rows - X[::-1], axis=1).mean()
    assert not (retriever.kneighbors(return_distance=False) == np.arange(len(X))[:, None]).any()


def test_a_loaded_ivfpq_index_grows_like_the_one_it_was_saved_from(clustered):
    X, y, queries = clustered
    kept = NearestImageRetriever(n_neighbors=5, algorithm="ivfpq", random_state=0).fit(X[:800], y[:800])
    loaded = pickle.loads(pickle.dumps(kept))  # FAISS owns the loaded rows until the library takes them over
    kept.partial_fit(X[800:], y[800:])
    loaded.partial_fit(X[800:], y[800:])
    for a, b in zip(kept.kneighbors(queries), loaded.kneighbors(queries)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(kept.backend_.reconstruct(0, len(X)), loaded.backend_.reconstruct(0, len(X)))
    codes = loaded.backend_._refine_rows.index.codes
    assert not codes.is_owned and codes.owned_data.size() == 0  # one copy of the rows: the library's
    loaded.remove(np.arange(100))
    assert loaded.n_samples_fit_ == len(X) - 100
    np.testing.assert_array_equal(loaded.backend_.reconstruct(0, 5), kept.backend_.reconstruct(100, 105))


def test_removing_from_a_loaded_ivfpq_index_then_adding_again(clustered):
    X, _, queries = clustered
    loaded = pickle.loads(pickle.dumps(NearestImageRetriever(algorithm="ivfpq", random_state=0).fit(X)))
    loaded.remove(np.arange(len(X)))  # before any add: FAISS still owns the rows
    assert loaded.n_samples_fit_ == 0
    loaded.partial_fit(X[:50])
    np.testing.assert_allclose(loaded.backend_.reconstruct(0, 50), X[:50], rtol=2**-10)
    assert loaded.kneighbors(queries[:3], n_neighbors=2)[1].max() < 50


def test_a_failed_ivfpq_add_leaves_the_index_as_it_was(clustered, monkeypatch):
    import faiss

    X, _, queries = clustered
    retriever = NearestImageRetriever(n_neighbors=5, algorithm="ivfpq", random_state=0).fit(X[:600])
    before = retriever.kneighbors(queries)

    def out_of_memory(*args, **kwargs):
        raise MemoryError("no memory left for the codes")

    monkeypatch.setattr(faiss.IndexIVFPQ, "add", out_of_memory)  # after the refine rows have grown
    with pytest.raises(MemoryError):
        retriever.partial_fit(X[600:])
    monkeypatch.undo()
    index = retriever.backend_._faiss_index
    assert retriever.n_samples_fit_ == index.ntotal == index.refine_index.ntotal == index.base_index.ntotal == 600
    for a, b in zip(before, retriever.kneighbors(queries)):
        np.testing.assert_array_equal(a, b)
    retriever.partial_fit(X[600:])
    assert retriever.n_samples_fit_ == len(X)


@pytest.mark.parametrize("algorithm", ("auto", "brute", "flat"))
def test_partial_fit_equals_one_fit_for_exact_backends(clustered, algorithm):
    X, y, queries = clustered
    whole = NearestImageRetriever(n_neighbors=6, algorithm=algorithm).fit(X, y)
    grown = NearestImageRetriever(n_neighbors=6, algorithm=algorithm)
    for chunk in np.array_split(np.arange(len(X)), 4):
        grown.partial_fit(X[chunk], y[chunk])
    assert grown.n_samples_fit_ == len(X)
    np.testing.assert_array_equal(grown.gallery_labels_, y)
    for a, b in zip(whole.kneighbors(queries), grown.kneighbors(queries)):
        np.testing.assert_allclose(a, b)
    np.testing.assert_array_equal(whole.kneighbors(return_distance=False), grown.kneighbors(return_distance=False))


def test_partial_fit_keeps_ivf_recall(clustered):
    X, _, queries = clustered
    truth = _reference(X, "euclidean").kneighbors(queries, n_neighbors=10, return_distance=False)
    whole = NearestImageRetriever(n_neighbors=10, algorithm="ivf", n_probe=4, random_state=0).fit(X)
    grown = NearestImageRetriever(n_neighbors=10, algorithm="ivf", n_probe=4, random_state=0)
    for chunk in np.array_split(X, 3):
        grown.partial_fit(chunk)
    recall_whole = _recall(whole.kneighbors(queries, return_distance=False), truth)
    recall_grown = _recall(grown.kneighbors(queries, return_distance=False), truth)
    assert recall_grown >= recall_whole - 0.01
    assert grown.backend_.n_cells == auto_n_cells(400)  # cells trained on the first chunk, kept


@pytest.mark.parametrize("algorithm", APPROXIMATE)
def test_same_random_state_same_index(clustered, algorithm):
    X, _, queries = clustered
    a = NearestImageRetriever(algorithm=algorithm, n_probe=2, ef_search=8, random_state=3).fit(X)
    b = NearestImageRetriever(algorithm=algorithm, n_probe=2, ef_search=8, random_state=3).fit(X)
    for left, right in zip(a.kneighbors(queries), b.kneighbors(queries)):
        np.testing.assert_array_equal(left, right)


@pytest.mark.parametrize("metric", ("euclidean", "sqeuclidean", "cosine"))
@pytest.mark.parametrize("algorithm", ("brute", "flat", "ivf", "hnsw"))
def test_radius_neighbors_match_scikit_learn(clustered, algorithm, metric):
    X, _, queries = clustered
    radius = {"euclidean": 4.0, "sqeuclidean": 16.0, "cosine": 0.15}[metric]
    # every cell probed: IVF is exact then, and must agree exactly
    retriever = NearestImageRetriever(
        metric=metric, algorithm=algorithm, n_probe=auto_n_cells(len(X)), ef_search=len(X), random_state=0
    ).fit(X)
    distances, indices = retriever.radius_neighbors(queries, radius=radius)
    ref_d, ref_i = _reference(X, metric).radius_neighbors(queries, radius=radius, sort_results=True)
    assert sum(len(row) for row in ref_i) > 60  # the radius catches several per query
    for d, i, rd, ri in zip(distances, indices, ref_d, ref_i):
        assert set(i) == set(ri)
        assert (np.diff(d) >= 0).all()
        np.testing.assert_allclose(np.sort(d), np.sort(rd), rtol=1e-4, atol=1e-5)
    graph = retriever.radius_neighbors_graph(queries, radius=radius, mode="distance")
    assert graph.shape == (60, len(X)) and graph.nnz == sum(len(row) for row in ref_i)


def test_radius_includes_its_boundary_and_leaves_the_query_out():
    X = np.array([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]], dtype=np.float32)
    retriever = NearestImageRetriever(algorithm="flat").fit(X)
    assert retriever.radius_neighbors([[0.0, 0.0]], radius=5.0, return_distance=False)[0].tolist() == [0, 1]
    loo = retriever.radius_neighbors(radius=5.0, return_distance=False)
    assert [row.tolist() for row in loo] == [[1], [0, 2], [1]]


def test_radius_search_where_faiss_has_none_says_what_can():
    X = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
    retriever = NearestImageRetriever(algorithm="ivfpq", random_state=0).fit(X)
    with pytest.raises(ValueError, match=r"no radius search.*refine=None.*'flat'"):
        retriever.radius_neighbors(X[:2], radius=1.0)
    unrefined = NearestImageRetriever(algorithm="ivfpq", refine=None, random_state=0).fit(X)
    assert len(unrefined.radius_neighbors(X[:2], radius=1.0)[0]) == 2


@pytest.mark.parametrize("algorithm", ("auto", "flat", "ivf", "hnsw"))
def test_hamming_on_packed_codes(algorithm):
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2, size=(400, 64), dtype=np.uint8)
    codes = np.packbits(bits, axis=1)
    queries = bits[:5].copy()
    queries[:, :3] ^= 1  # three bits flipped
    retriever = NearestImageRetriever(n_neighbors=3, metric="hamming", algorithm=algorithm, random_state=0).fit(codes)
    distances, indices = retriever.kneighbors(np.packbits(queries, axis=1))
    assert indices[:, 0].tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(distances[:, 0], 3.0)
    true = (bits[indices] != queries[:, None, :]).sum(axis=2)
    np.testing.assert_array_equal(distances, true)
    if algorithm != "hnsw":  # FAISS's binary HNSW has no range search
        within = retriever.radius_neighbors(np.packbits(queries, axis=1), radius=3, return_distance=False)
        assert all(i in row for i, row in enumerate(within))  # at distance 3: the boundary is included


def test_metric_conversions(clustered):
    X, _, queries = clustered
    for metric, expected in (
        ("sqeuclidean", ((X[None] - queries[:, None]) ** 2).sum(axis=2)),
        ("inner_product", -(queries @ X.T)),
    ):
        distances, indices = NearestImageRetriever(n_neighbors=3, metric=metric).fit(X).kneighbors(queries)
        np.testing.assert_array_equal(indices, np.argsort(expected, axis=1, kind="stable")[:, :3])
        np.testing.assert_allclose(distances, np.take_along_axis(expected, indices, axis=1), rtol=1e-5)
    kept = X.copy()
    NearestImageRetriever(metric="cosine").fit(X).kneighbors(queries)
    np.testing.assert_array_equal(X, kept)  # normalised copies, never the user's array


def test_search_knobs_change_without_refitting(clustered):
    X, _, queries = clustered
    truth = _reference(X, "euclidean").kneighbors(queries, n_neighbors=10, return_distance=False)
    retriever = NearestImageRetriever(n_neighbors=10, algorithm="ivf", n_probe=1, random_state=0).fit(X)
    low = _recall(retriever.kneighbors(queries, return_distance=False), truth)
    retriever.set_params(n_probe=auto_n_cells(len(X)))
    assert _recall(retriever.kneighbors(queries, return_distance=False), truth) == 1.0 > low


def test_grid_search_tunes_n_probe():
    # overlapping classes, so that missing true neighbours costs precision
    rng = np.random.default_rng(1)
    y = rng.integers(0, 5, size=1500)
    X = (rng.normal(size=(5, 16))[y] * 0.6 + rng.normal(size=(1500, 16))).astype(np.float32)
    pipe = make_retrieval_pipeline(NearestImageRetriever(n_neighbors=5, algorithm="ivf", random_state=0))
    search = GridSearchCV(pipe, {"nearestimageretriever__n_probe": [1, 4, 16]}, cv=3).fit(X, y)
    scores = search.cv_results_["mean_test_score"]
    assert len(set(scores)) == 3  # the knob changes the answers
    best = search.best_params_["nearestimageretriever__n_probe"]
    assert scores[[1, 4, 16].index(best)] == scores.max() and search.best_estimator_[-1].n_probe == best


@pytest.mark.parametrize("n_jobs", (1, -1))
def test_n_jobs_sets_faiss_threads_for_the_search_and_puts_them_back(clustered, monkeypatch, n_jobs):
    import os

    import faiss

    X, _, queries = clustered
    faiss.omp_set_num_threads(3)  # neither 1 nor this machine's cores: a search that ignored n_jobs shows it
    seen, search = [], faiss.IndexHNSWFlat.search

    def recording_search(self, *args, **kwargs):
        seen.append(faiss.omp_get_max_threads())
        return search(self, *args, **kwargs)

    monkeypatch.setattr(faiss.IndexHNSWFlat, "search", recording_search)
    try:
        retriever = NearestImageRetriever(algorithm="hnsw", n_jobs=n_jobs).fit(X)
        retriever.kneighbors(queries)
        assert seen and set(seen) == {1 if n_jobs == 1 else os.cpu_count()}
        assert faiss.omp_get_max_threads() == 3
    finally:
        faiss.omp_set_num_threads(os.cpu_count())


def test_auto_parameters():
    assert auto_n_cells(100_000) == 1265  # about 4 * sqrt(n)
    assert auto_n_cells(1000) == 25  # at least 39 rows per cell
    assert auto_n_cells(20) == 1
    assert auto_pq_m(128) == 32 and auto_pq_m(1280) == 320 and auto_pq_m(10) == 2
    assert auto_pq_bits(10_000) == 8 and auto_pq_bits(5000) == 7 and auto_pq_bits(3) == 1


@pytest.mark.parametrize("algorithm", EXACT + APPROXIMATE)
def test_remove_forgets_rows_and_renumbers_the_rest(clustered, algorithm):
    X, y, queries = clustered
    removed = np.arange(0, len(X), 7)
    kept = np.setdiff1d(np.arange(len(X)), removed)
    retriever = NearestImageRetriever(n_neighbors=5, algorithm=algorithm, n_probe=64, random_state=0).fit(X, y)
    retriever.remove(removed)
    assert retriever.n_samples_fit_ == len(kept)
    np.testing.assert_array_equal(retriever.gallery_labels_, y[kept])
    found = retriever.kneighbors(queries, return_distance=False)
    truth = _reference(X[kept], "euclidean").kneighbors(queries, n_neighbors=5, return_distance=False)
    if algorithm in EXACT:
        assert _recall(found, truth) == 1.0
    else:  # as good as an index built on the kept rows alone
        fresh = NearestImageRetriever(n_neighbors=5, algorithm=algorithm, n_probe=64, random_state=0).fit(X[kept])
        assert _recall(found, truth) >= _recall(fresh.kneighbors(queries, return_distance=False), truth) - 0.03
    retriever.partial_fit(X[removed], y[removed])  # still grows afterwards
    assert retriever.n_samples_fit_ == len(X)


def test_remove_checks_its_indices(clustered):
    X, _, _ = clustered
    retriever = NearestImageRetriever().fit(X[:10])
    with pytest.raises(ValueError, match=r"in \[0, 10\)"):
        retriever.remove([3, 10])
    assert retriever.n_samples_fit_ == 10


def test_a_stored_index_of_another_kind_or_size_is_refused(clustered):
    X, _, _ = clustered
    flat = NearestImageRetriever(algorithm="flat").fit(X)
    posing = pickle.loads(pickle.dumps(NearestImageRetriever(algorithm="hnsw").fit(X).backend_))
    posing.__class__ = FaissFlatBackend  # an HNSW graph posing as a flat index
    with pytest.raises(ValueError, match="IndexHNSWFlat, not the IndexFlat"):
        pickle.loads(pickle.dumps(posing))
    narrower = NearestImageRetriever(algorithm="flat").fit(X[:, :8])
    state = dict(flat.__getstate__())
    state["backend_"] = narrower.backend_
    with pytest.raises(ValueError, match="8 dimensions but the retriever was fitted on 16 features"):
        NearestImageRetriever().__setstate__(state)


@pytest.mark.parametrize("algorithm", ("auto", "brute", "hnsw"))
def test_kneighbors_of_gallery_items_equals_leave_one_out(clustered, algorithm):
    X, _, _ = clustered
    retriever = NearestImageRetriever(n_neighbors=4, algorithm=algorithm, random_state=0).fit(X)
    items = [5, 0, 999]
    for a, b in zip(retriever.kneighbors_of_gallery(items), retriever.kneighbors()):
        np.testing.assert_array_equal(a, b[items])
    with pytest.raises(ValueError, match=r"in \[0, 1200\)"):
        retriever.kneighbors_of_gallery([1200])


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_filtered_flat_search_in_chunks_of_the_subset_is_exact(metric, monkeypatch):
    from sklearn_imgretrieval.neighbors import _faiss

    monkeypatch.setattr(_faiss, "_SUBSET_ROWS_PER_SEARCH", 7)  # many chunks, merged
    rng = np.random.default_rng(0)
    gallery, queries = rng.normal(size=(300, 6)), rng.normal(size=(20, 6))
    subset = np.sort(rng.choice(300, 45, replace=False))
    retriever = NearestImageRetriever(algorithm="flat", metric=metric).fit(gallery)
    distances, found = retriever.kneighbors(queries, n_neighbors=5, subset=subset)
    truth_d, truth = NearestNeighbors(n_neighbors=5, metric=metric).fit(gallery[subset]).kneighbors(queries)
    np.testing.assert_array_equal(found, subset[truth])
    np.testing.assert_allclose(distances, truth_d, atol=1e-6)


@pytest.mark.parametrize("algorithm", ["ivf", "hnsw", "ivfpq"])
def test_a_small_scattered_subset_is_gathered_and_searched_exactly(algorithm):
    # 60 scattered rows of 3,000 (2%): gathered from the index in one call, then searched exactly
    rng = np.random.default_rng(0)
    gallery, queries = rng.normal(size=(3000, 8)).astype(np.float32), rng.normal(size=(20, 8)).astype(np.float32)
    subset = np.sort(rng.choice(3000, 60, replace=False))
    retriever = NearestImageRetriever(algorithm=algorithm, refine="flat", random_state=0).fit(gallery)
    distances, found = retriever.kneighbors(queries, n_neighbors=5, subset=subset)
    truth_d, truth = NearestNeighbors(n_neighbors=5).fit(gallery[subset]).kneighbors(queries)
    np.testing.assert_array_equal(found, subset[truth])
    np.testing.assert_allclose(distances, truth_d, rtol=1e-5)


@pytest.mark.parametrize("metric", ["euclidean", "cosine", "hamming"])
def test_hnsw_asked_for_every_row_answers_exactly_from_its_storage(metric):
    # more neighbours than the graph's walk reaches: the short answers come from an exact search
    rng = np.random.default_rng(0)
    if metric == "hamming":
        bits = rng.integers(0, 2, size=(300, 64), dtype=np.uint8)
        gallery = np.packbits(bits, axis=1)
        truth_d = NearestNeighbors(n_neighbors=300, metric="hamming").fit(bits).kneighbors(bits[:5])[0] * 64
    else:
        gallery = rng.normal(size=(300, 8)).astype(np.float32)
        truth_d = NearestNeighbors(n_neighbors=300, metric=metric).fit(gallery).kneighbors(gallery[:5])[0]
    retriever = NearestImageRetriever(algorithm="hnsw", metric=metric, random_state=0).fit(gallery)
    distances, found = retriever.kneighbors(gallery[:5], n_neighbors=300)
    assert [sorted(row) for row in found.tolist()] == [list(range(300))] * 5
    np.testing.assert_allclose(distances, np.sort(truth_d, axis=1), atol=1e-4)

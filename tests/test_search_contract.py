"""The backend contract of ``neighbors/_backend.py``, run on every registered backend.

A backend added to ``neighbors/_registry.py`` is tested here without a line
of test code: what it declares (dtype, training rows, radius support,
memory), subsets, per-search settings and reading rows back.
"""

import dataclasses
import pickle
import warnings

import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from sklearn_imgretrieval import NearestImageRetriever
from sklearn_imgretrieval.neighbors._backend import SearchSettings
from sklearn_imgretrieval.neighbors._registry import BACKENDS, resolve_algorithm

ALGORITHMS = tuple(BACKENDS)


@pytest.fixture(scope="module")
def rows():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(12, 8)) * 3
    X = (centres[rng.integers(0, 12, size=800)] + rng.normal(size=(800, 8))).astype(np.float32)
    queries = (centres[rng.integers(0, 12, size=20)] + rng.normal(size=(20, 8))).astype(np.float32)
    return X, queries


def _fitted(algorithm, X, **params):
    return NearestImageRetriever(n_neighbors=5, algorithm=algorithm, random_state=0, **params).fit(X)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("share", (0.5, 0.02))
def test_a_subset_is_searched_inside_the_search(rows, algorithm, share):
    # k answers whenever the subset holds k rows, all from the subset: even a 2% subset
    X, queries = rows
    rng = np.random.default_rng(1)
    subset = np.sort(rng.choice(len(X), size=int(share * len(X)), replace=False))
    retriever = _fitted(algorithm, X)
    distances, indices = retriever.kneighbors(queries, n_neighbors=10, subset=subset)
    assert indices.shape == (20, 10) and np.isin(indices, subset).all()
    truth = subset[NearestNeighbors(n_neighbors=10).fit(X[subset]).kneighbors(queries, return_distance=False)]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(indices, truth)])
    # at most 2% of the rows: the matching rows are gathered and searched exactly, whatever the backend
    assert recall == 1.0 if BACKENDS[algorithm].exact or share <= 0.02 else recall >= 0.9
    mask = np.zeros(len(X), dtype=bool)
    mask[subset] = True
    for a, b in zip((distances, indices), retriever.kneighbors(queries, n_neighbors=10, subset=mask)):
        np.testing.assert_array_equal(a, b)  # a mask means the same rows


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_leave_one_out_within_a_subset(rows, algorithm):
    X, _ = rows
    subset = np.arange(0, len(X), 4)
    indices = _fitted(algorithm, X).kneighbors(n_neighbors=3, subset=subset, return_distance=False)
    assert indices.shape == (len(X), 3) and np.isin(indices, subset).all()
    assert not (indices == np.arange(len(X))[:, None]).any()


@pytest.mark.parametrize("algorithm", [a for a in ALGORITHMS if a != "ivfpq"])
def test_a_radius_search_within_a_subset(rows, algorithm):
    X, queries = rows
    subset = np.arange(1, len(X), 3)
    retriever = _fitted(algorithm, X, n_probe=64, ef_search=800)
    inside = retriever.radius_neighbors(queries, radius=3.0, subset=subset, return_distance=False)
    everything = retriever.radius_neighbors(queries, radius=3.0, return_distance=False)
    assert sum(map(len, inside)) > 0
    for found, all_found in zip(inside, everything):
        assert set(found) == set(all_found) & set(subset)


def test_a_subset_is_checked(rows):
    X, queries = rows
    retriever = _fitted("auto", X)
    with pytest.raises(ValueError, match="mask over the gallery's 800 rows"):
        retriever.kneighbors(queries, subset=np.ones(10, dtype=bool))
    with pytest.raises(ValueError, match=r"in \[0, 800\)"):
        retriever.kneighbors(queries, subset=[3, 800])
    with pytest.raises(ValueError, match="larger than the subset of 2 gallery items"):
        retriever.kneighbors(queries, n_neighbors=3, subset=[0, 1])
    with pytest.raises(ValueError, match="row numbers"):
        retriever.kneighbors(queries, subset=[0.5, 1.5])


@pytest.mark.parametrize("algorithm", ("auto", "flat", "ivf", "hnsw"))
def test_hamming_subsets_and_radius_leave_the_index_as_it_was(algorithm):
    # FAISS's binary IVF takes no per-search parameters for radius search: a view carries them
    rng = np.random.default_rng(0)
    codes = np.packbits(rng.integers(0, 2, size=(600, 64), dtype=np.uint8), axis=1)
    retriever = NearestImageRetriever(metric="hamming", algorithm=algorithm, n_probe=3, random_state=0).fit(codes)
    before = pickle.dumps(retriever)
    subset = np.arange(0, 600, 5)
    indices = retriever.kneighbors(codes[:10], n_neighbors=4, subset=subset, return_distance=False)
    assert np.isin(indices, subset).all() and indices[0, 0] == 0 and indices[5, 0] == 5  # themselves, in it
    if algorithm != "hnsw":
        found = retriever.radius_neighbors(codes[:10], radius=28, subset=subset, return_distance=False)
        assert all(np.isin(row, subset).all() for row in found)
        retriever.set_params(n_probe=50)
        retriever.radius_neighbors(codes[:10], radius=28)
    assert pickle.dumps(retriever.set_params(n_probe=3)) == before


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_searches_do_not_change_the_backend(rows, algorithm):
    # per-search settings travel with each search (threads, n_probe, ef_search)
    X, queries = rows
    retriever = _fitted(algorithm, X, n_jobs=1)
    before = pickle.dumps(retriever.backend_)
    retriever.set_params(n_jobs=2, n_probe=2, ef_search=8, k_factor=2).kneighbors(queries)
    retriever.kneighbors(queries, subset=np.arange(100))
    if not BACKENDS[algorithm].range_search_unsupported("euclidean", retriever.backend_.params):
        retriever.radius_neighbors(queries, radius=2.0)
    assert pickle.dumps(retriever.backend_) == before


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_what_a_backend_declares(rows, algorithm):
    X, queries = rows
    backend = BACKENDS[resolve_algorithm(algorithm, "euclidean")]
    assert dataclasses.is_dataclass(backend.Params) and dataclasses.fields(SearchSettings)
    retriever = _fitted(algorithm, X)
    assert type(retriever.backend_) is backend and isinstance(retriever.backend_.params, backend.Params)
    # rows back, in any order, as stored
    some = np.array([7, 3, 700, 3])
    tolerance = 2**-9 if algorithm == "ivfpq" else 0  # half-precision re-ranking rows
    np.testing.assert_allclose(retriever.gallery_rows(some), X[some], rtol=tolerance, atol=tolerance)
    assert retriever.gallery_rows().shape == X.shape
    # memory: at least the rows or codes it keeps, and not absurdly more
    assert X.nbytes / 16 <= retriever.nbytes_ <= 10 * X.nbytes
    # what it takes: float64 queries are searched in the dtype it declares
    wanted = np.atleast_1d(backend.input_dtype("euclidean"))
    assert retriever.gallery_rows().dtype in wanted
    assert retriever.kneighbors(queries.astype(np.float64))[0].dtype == np.float64


def test_memory_follows_what_each_index_keeps(rows):
    X, _ = rows
    flat = _fitted("flat", X)
    assert flat.nbytes_ == X.nbytes  # float32 rows, nothing else
    ivfpq_bytes = _fitted("ivfpq", X, refine=None).nbytes_
    assert ivfpq_bytes < flat.nbytes_ + 2**16  # a few bytes of code per row, plus codebooks


def test_streaming_plan_for_a_gallery():
    ivf = NearestImageRetriever(algorithm="ivf")
    assert ivf.params_for_gallery(100_000) == {"n_cells": 1265}
    assert ivf.rows_to_train(100_000) == 1265 * 39
    assert NearestImageRetriever(algorithm="ivf", n_cells=50).params_for_gallery(100_000) == {}
    assert NearestImageRetriever(algorithm="ivfpq").params_for_gallery(1000) == {"n_cells": 25, "pq_bits": 4}
    assert NearestImageRetriever(algorithm="ivfpq", n_cells=10).rows_to_train(1_000_000) == 256 * 39
    assert NearestImageRetriever(algorithm="hnsw").rows_to_train(10**6) == 1
    assert NearestImageRetriever().rows_to_train(10**6) == 1


def test_auto_resolves_by_metric():
    assert resolve_algorithm("auto", "cosine") == "flat"
    assert resolve_algorithm("auto", "manhattan") == "auto"
    with pytest.raises(ValueError, match="cannot search with metric='manhattan'.*'brute'"):
        resolve_algorithm("hnsw", "manhattan")


def test_index_is_a_deprecated_name_of_backend(rows):
    X, _ = rows
    retriever = _fitted("flat", X)
    with pytest.warns(FutureWarning, match="renamed backend_"):
        assert retriever.index_ is retriever.backend_


def test_a_file_of_an_earlier_version_names_the_backend_index(rows):
    X, queries = rows
    retriever = _fitted("ivf", X)
    backend_state = retriever.backend_.__getstate__()
    backend_state["params"] = {"n_cells": "auto", "hnsw_m": 32, "seed": 7, "deterministic": True}  # an untyped dict
    backend = type(retriever.backend_).__new__(type(retriever.backend_))
    backend.__setstate__(backend_state)
    assert backend.params.random_state == 7
    state = dict(retriever.__getstate__())  # a copy: the live retriever keeps its backend
    del state["backend_"]
    state["index_"] = backend
    old = NearestImageRetriever.__new__(NearestImageRetriever)
    old.__setstate__(state)
    for a, b in zip(old.kneighbors(queries), retriever.kneighbors(queries)):
        np.testing.assert_array_equal(a, b)


def test_without_faiss_views_ivfpq_rows_are_held_by_faiss(rows, monkeypatch):
    # the guard: a FAISS without what a view needs gets a warning and the same answers
    from sklearn_imgretrieval.neighbors import _faiss_refine

    X, queries = rows
    viewed = NearestImageRetriever(algorithm="ivfpq", random_state=0)
    for chunk in np.array_split(X, 3):
        viewed.partial_fit(chunk)
    monkeypatch.setattr(_faiss_refine, "_working_view", lambda faiss: (None, "pretend FAISS lacks views"))
    _faiss_refine._view_here.cache_clear()
    try:
        owned = NearestImageRetriever(algorithm="ivfpq", random_state=0)
        with pytest.warns(RuntimeWarning, match="held by FAISS.*pretend FAISS lacks views.*twice their memory"):
            for chunk in np.array_split(X, 3):
                owned.partial_fit(chunk)
        assert isinstance(owned.backend_._refine_rows, _faiss_refine.FaissOwnedRows)
        for a, b in zip(viewed.kneighbors(queries), owned.kneighbors(queries)):
            np.testing.assert_array_equal(a, b)
        viewed.remove(np.arange(0, 800, 3))
        owned.remove(np.arange(0, 800, 3))
        for a, b in zip(viewed.kneighbors(queries), owned.kneighbors(queries)):
            np.testing.assert_array_equal(a, b)
    finally:
        _faiss_refine._view_here.cache_clear()


def test_views_are_checked_on_this_faiss():
    import faiss

    from sklearn_imgretrieval.neighbors import _faiss_refine

    point, reason = _faiss_refine._working_view(faiss)
    assert reason is None and point in (_faiss_refine._view_by_api, _faiss_refine._view_by_fields)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning on a FAISS that has views
        NearestImageRetriever(algorithm="ivfpq", random_state=0).fit(np.random.default_rng(0).random((300, 8)))

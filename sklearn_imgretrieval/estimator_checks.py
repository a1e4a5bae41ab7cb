"""Checks of what this library promises beyond scikit-learn's own estimator checks.

scikit-learn's ``parametrize_with_checks`` tests the estimator API; these
check the retrieval contract every estimator here keeps, so that a step
written elsewhere can be checked the same way before it joins a retrieval
pipeline (as imbalanced-learn does for its samplers):

- transformers that say they preserve float32 (``preserves_dtype``) do;
- a fitted estimator gives identical output after a pickle round trip;
- a ``random_state`` makes a fit reproducible;
- ``get_feature_names_out`` names every output column;
- neighbour searchers leave each gallery item out of its own list when
  queried with ``X=None``, give ``n_neighbors + 1`` entries per row from
  ``transform`` in distance mode, and grow with ``partial_fit`` as one fit
  on the whole gallery would.

Each check takes a name and an unfitted estimator and raises
``AssertionError`` on failure; :func:`yield_checks` gives the checks that
apply to an estimator.

Examples
--------
>>> from sklearn_imgretrieval import NearestImageRetriever
>>> from sklearn_imgretrieval.estimator_checks import yield_checks
>>> retriever = NearestImageRetriever(n_neighbors=3)
>>> for check in yield_checks(retriever):
...     check(type(retriever).__name__, retriever)
"""

import pickle

import numpy as np
import scipy.sparse as sp
from sklearn.base import clone

__all__ = [
    "check_feature_names_out",
    "check_kneighbors_leaves_the_query_out",
    "check_partial_fit_matches_fit",
    "check_pickle_gives_identical_output",
    "check_random_state_makes_fit_reproducible",
    "check_transform_graph_shape",
    "check_transformer_preserves_float32",
    "yield_checks",
]


def _images(n_images=30, seed=0):
    """Small square grayscale images in [0, 1], as float32 rows (8 x 8)."""
    return np.random.default_rng(seed).random((n_images, 64), dtype=np.float32)


def _labels(n_images=30):
    return np.arange(n_images) % 3


_FITTED = {}  # repr of an unfitted estimator -> it fitted on the check data


def _fitted(estimator):
    """``clone(estimator)`` fitted on the check data, fitted once per settings.

    Every fit here is deterministic or only read, so the checks share one:
    Keras embedders cost seconds per fit.
    """
    key = (type(estimator), repr(estimator.get_params(deep=True)))
    if key not in _FITTED:
        _FITTED[key] = clone(estimator).fit(_images(), _labels())
    return _FITTED[key]


def _output(estimator, X):
    """What a fitted estimator gives for ``X``: its transform or its neighbours."""
    if hasattr(estimator, "kneighbors"):
        return estimator.kneighbors(X)
    out = estimator.transform(X)
    return out.toarray() if sp.issparse(out) else out


def _assert_same(a, b, message):
    for left, right in zip(a, b) if isinstance(a, tuple) else [(a, b)]:
        np.testing.assert_array_equal(left, right, err_msg=message)


def check_transformer_preserves_float32(name, estimator):
    """float32 rows in, float32 rows out, when the tags say so."""
    X = _images()
    out = _fitted(estimator).transform(X)
    assert out.dtype == np.float32, f"{name} returned {out.dtype} for float32 input"


def check_pickle_gives_identical_output(name, estimator):
    """A pickled and reloaded fitted estimator answers exactly as the original."""
    X = _images()
    fitted = _fitted(estimator)
    loaded = pickle.loads(pickle.dumps(fitted))
    _assert_same(_output(fitted, X[:7]), _output(loaded, X[:7]), f"{name} changed after pickling")


def check_random_state_makes_fit_reproducible(name, estimator):
    """Two fits with the same ``random_state`` give the same output."""
    X = _images()
    first = _fitted(clone(estimator).set_params(random_state=0))
    second = clone(estimator).set_params(random_state=0).fit(X, _labels())
    _assert_same(_output(first, X[:7]), _output(second, X[:7]), f"{name} is not reproducible with random_state=0")


def check_feature_names_out(name, estimator):
    """One output name per output column, all distinct."""
    X = _images()
    fitted = _fitted(estimator)
    names = fitted.get_feature_names_out()
    assert len(names) == fitted.transform(X[:2]).shape[1], f"{name} names {len(names)} columns"
    assert len(set(names)) == len(names), f"{name} repeats output names"


def check_kneighbors_leaves_the_query_out(name, estimator):
    """``kneighbors(X=None)`` never returns an item as its own neighbour."""
    X = _images()
    indices = clone(estimator).set_params(n_neighbors=3).fit(X).kneighbors(return_distance=False)
    assert indices.shape == (len(X), 3), f"{name} gave shape {indices.shape}"
    assert not (indices == np.arange(len(X))[:, None]).any(), f"{name} returned an item as its own neighbour"


def check_transform_graph_shape(name, estimator):
    """``transform`` in distance mode: CSR, ``n_neighbors + 1`` entries per row."""
    X = _images()
    graph = clone(estimator).set_params(n_neighbors=3, mode="distance").fit(X).transform(X[:5])
    assert sp.isspmatrix_csr(graph) or (sp.issparse(graph) and graph.format == "csr"), f"{name}: not CSR"
    assert graph.shape == (5, len(X)), f"{name}: graph of shape {graph.shape}"
    assert (np.diff(graph.indptr) == 4).all(), f"{name}: rows should have n_neighbors + 1 = 4 entries"


def check_partial_fit_matches_fit(name, estimator):
    """Chunks given to ``partial_fit`` make the gallery one fit makes (exact search)."""
    X, y = _images(), _labels()
    whole = clone(estimator).fit(X, y)
    grown = clone(estimator)
    for chunk in np.array_split(np.arange(len(X)), 3):
        grown.partial_fit(X[chunk], y[chunk])
    searcher, grown_searcher = getattr(whole, "_final_estimator", whole), getattr(grown, "_final_estimator", grown)
    assert grown_searcher.n_samples_fit_ == searcher.n_samples_fit_, f"{name} lost rows in partial_fit"
    expected, found = whole.kneighbors(X[:7], return_distance=False), grown.kneighbors(X[:7], return_distance=False)
    exact = getattr(searcher, "fit_algorithm_", "brute") not in ("ivf", "hnsw", "ivfpq")
    if exact:
        np.testing.assert_array_equal(found, expected, err_msg=f"{name}: partial_fit differs from fit")


def yield_checks(estimator):
    """The checks of this module that apply to ``estimator``."""
    tags = estimator.__sklearn_tags__()
    params = estimator.get_params()
    if hasattr(estimator, "transform") and tags.transformer_tags is not None:
        if "float32" in (tags.transformer_tags.preserves_dtype or []):
            yield check_transformer_preserves_float32
    yield check_pickle_gives_identical_output
    if "random_state" in params:
        yield check_random_state_makes_fit_reproducible
    if hasattr(estimator, "get_feature_names_out") and hasattr(estimator, "transform"):
        yield check_feature_names_out
    if hasattr(estimator, "kneighbors") and "n_neighbors" in params:
        yield check_kneighbors_leaves_the_query_out
        if "mode" in params:
            yield check_transform_graph_shape
    if hasattr(estimator, "kneighbors") and hasattr(estimator, "partial_fit"):
        yield check_partial_fit_matches_fit

"""Which backend serves each ``algorithm``, and what ``"auto"`` chooses.

Adding a backend: a module with a :class:`~._backend.SearchBackend`
subclass, and its class in ``_BACKEND_TYPES`` below.
"""

from ._faiss import (
    BINARY_METRICS,
    FLOAT_METRICS,
    FaissFlatBackend,
    FaissHNSWBackend,
    FaissIVFBackend,
    FaissIVFPQBackend,
)
from ._sklearn import SKLEARN_METRICS, ScikitLearnBackend

_BACKEND_TYPES = (ScikitLearnBackend, FaissFlatBackend, FaissIVFBackend, FaissHNSWBackend, FaissIVFPQBackend)

#: ``algorithm`` value -> backend class.
BACKENDS = {algorithm: backend for backend in _BACKEND_TYPES for algorithm in backend.algorithms}
#: Every metric some backend serves, by name.
METRICS = SKLEARN_METRICS | FLOAT_METRICS | BINARY_METRICS | {"precomputed"}

__all__ = ["BACKENDS", "METRICS", "resolve_algorithm"]


def resolve_algorithm(algorithm, metric):
    """The algorithm that builds the index: ``algorithm``, with ``"auto"`` resolved.

    ``"auto"`` is FAISS's exact ``"flat"`` index for the metrics it serves
    (several times faster than scikit-learn's brute force) and
    scikit-learn's own choice otherwise.

    Parameters
    ----------
    algorithm : str
        A value of ``NearestImageRetriever(algorithm=...)``.
    metric : str or callable
        A value of ``NearestImageRetriever(metric=...)``.

    Returns
    -------
    algorithm : str
        The algorithm to build.

    Raises
    ------
    ValueError
        When no backend of that algorithm searches with ``metric``; the
        message lists the algorithms that do.

    Examples
    --------
    >>> from sklearn_imgretrieval.neighbors import resolve_algorithm
    >>> resolve_algorithm("auto", "cosine"), resolve_algorithm("auto", "manhattan")
    ('flat', 'auto')
    """
    if algorithm not in BACKENDS:
        raise ValueError(f"algorithm={algorithm!r} is not one of {', '.join(map(repr, BACKENDS))}.")
    if algorithm == "auto" and FaissFlatBackend.serves("flat", metric):
        return "flat"
    if not BACKENDS[algorithm].serves(algorithm, metric):
        able = [name for name, backend in BACKENDS.items() if backend.serves(name, metric)]
        raise ValueError(
            f"algorithm={algorithm!r} cannot search with metric={metric!r}. "
            f"Algorithms that can: {', '.join(repr(name) for name in able)}."
        )
    return algorithm

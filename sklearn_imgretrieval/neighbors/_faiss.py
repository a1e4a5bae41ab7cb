"""FAISS's indexes behind the backend contract: exact flat, IVF, HNSW and
IVF-PQ for float rows, and FAISS's binary indexes for Hamming distances
between packed bit codes.

This is the only module that searches with FAISS (``_faiss_refine`` holds
IVF-PQ's re-ranking rows for it), and it imports faiss when an index is
built or loaded, never at import time. Every backend here keeps FAISS's own
index and pickles as ``faiss.serialize_index`` bytes.

Metrics map onto FAISS's two float metrics: ``euclidean`` and
``sqeuclidean`` onto L2 (FAISS computes squared distances; the square root
is taken on the way out), ``cosine`` onto inner product over rows
L2-normalised once (a copy: the user's array is never changed) and returned
as ``1 - similarity``, ``inner_product`` returned as ``-<x, y>`` so that, as
for every metric, the smallest distance comes first.

Per-search settings and subsets travel as FAISS ``SearchParameters`` (a
subset as an ``IDSelectorBitmap``), so a search never changes the index.
FAISS's binary IVF and HNSW take no parameters before 1.14: binary IVF is
searched through a view of its cells that carries the search's ``n_probe``
(on every version), and binary HNSW on those versions sets ``ef_search``
for the search under a lock and puts it back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import threading
from typing import Literal

import numpy as np

from .._parallel import local_threads
from ._backend import SearchBackend, ragged, sorted_ragged
from ._faiss_refine import refine_rows

FLOAT_METRICS = frozenset({"euclidean", "sqeuclidean", "cosine", "inner_product"})
BINARY_METRICS = frozenset({"hamming"})
#: Rows FAISS's k-means wants per centroid (``ClusteringParameters.min_points_per_centroid``).
MIN_ROWS_PER_CENTROID = 39
_CHUNK = 65536  # rows gathered at a time when re-scoring or rebuilding
_RUNS_COPIED_WHOLE = 16  # rows in at most this many contiguous runs are copied run by run


def import_faiss():
    try:
        import faiss
    except ImportError as exc:  # a core dependency, so only a broken install gets here
        raise ImportError(
            "Approximate and fast exact search need FAISS: pip install faiss-cpu "
            "(or faiss-gpu from conda-forge for NVIDIA GPUs)."
        ) from exc
    return faiss


@contextlib.contextmanager
def faiss_threads(faiss, n_jobs):
    """Run FAISS with ``n_jobs`` OpenMP threads for the duration.

    ``None`` leaves FAISS's default (every core). ``omp_set_num_threads``
    sets the calling thread's own value, so Python threads that search side
    by side with different ``n_jobs`` do not interfere.
    """
    if n_jobs is None:
        yield
        return
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(local_threads(n_jobs))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def auto_n_cells(n_rows):
    """IVF cells for a gallery of ``n_rows``: about 4 * sqrt(n), each with at least
    the 39 training rows FAISS's k-means asks for (1,265 cells for 100k rows)."""
    return max(1, min(round(4 * math.sqrt(n_rows)), n_rows // MIN_ROWS_PER_CENTROID))


def auto_pq_m(n_dims):
    """Sub-quantizers of IVF-PQ: about one per 4 dimensions, dividing ``n_dims``."""
    return max(m for m in range(1, max(1, n_dims // 4) + 1) if n_dims % m == 0)


def auto_pq_bits(n_rows):
    """Bits per sub-quantizer code: 8 (256 centroids) once the gallery has the
    39 * 256 rows that k-means needs for them, fewer below."""
    return int(min(8, max(1, math.floor(math.log2(max(n_rows, 2) / MIN_ROWS_PER_CENTROID)))))


def _seed(random_state):
    """FAISS's k-means seed: ``random_state``, or fresh entropy (never NumPy's global generator)."""
    if random_state is None:
        return int(np.random.default_rng().integers(2**31 - 1))
    return int(random_state)


def _selector(faiss, subset, n_rows):
    """A FAISS selector of the rows ``subset`` (None: every row); one bit per row.

    The selector keeps the bitmap it reads; the caller keeps the selector
    until the search returns.
    """
    if subset is None:
        return None
    member = np.zeros(n_rows, dtype=bool)
    member[subset] = True
    bits = np.packbits(member, bitorder="little")
    selector = faiss.IDSelectorBitmap(n_rows, faiss.swig_ptr(bits))
    selector.referenced_objects = [bits]  # FAISS's own way of keeping a buffer alive
    return selector


# -------------------------------------------------------------- parameters
@dataclasses.dataclass(frozen=True)
class FlatParams:
    """:class:`FaissFlatBackend` has no build settings."""


@dataclasses.dataclass(frozen=True)
class IVFParams:
    """Build settings of :class:`FaissIVFBackend` (see ``NearestImageRetriever``'s parameters).

    ``random_state`` is an int seed of FAISS's k-means, or None.
    """

    n_cells: int | Literal["auto"] = "auto"
    random_state: int | None = None


@dataclasses.dataclass(frozen=True)
class HNSWParams:
    """Build settings of :class:`FaissHNSWBackend`; an int ``random_state`` builds on one thread."""

    hnsw_m: int = 32
    ef_construction: int = 40
    random_state: int | None = None


@dataclasses.dataclass(frozen=True)
class IVFPQParams:
    """Build settings of :class:`FaissIVFPQBackend`."""

    n_cells: int | Literal["auto"] = "auto"
    pq_m: int | Literal["auto"] = "auto"
    pq_bits: int | Literal["auto"] = "auto"
    refine: Literal["flat", "fp16", "sq8"] | None = "fp16"
    random_state: int | None = None


def _params_from_state(params_type, stored):
    """The ``Params`` of a stored state, also from files of earlier versions (a dict with a seed)."""
    if isinstance(stored, dict) and "seed" in stored:  # before version 0.1: "seed" and "deterministic"
        stored = {**stored, "random_state": stored["seed"] if stored.get("deterministic", True) else None}
    names = {field.name for field in dataclasses.fields(params_type)}
    return params_type(**{name: value for name, value in dict(stored).items() if name in names})


# ------------------------------------------------------------------ shared
class FaissBackend(SearchBackend):
    """What every FAISS backend shares: the metric's conversions, threads,
    subsets, filling of incomplete answers, reconstruction, removal and pickling.

    Subclasses create the empty FAISS index (``_new_index``) and give the
    per-search parameters (``_search_parameters``), with ``exhaustive=True``
    those that make a search visit every row.
    """

    metrics = FLOAT_METRICS | BINARY_METRICS
    #: Whether FAISS's binary index of this kind takes a subset selector.
    binary_selects = True

    def __init__(self, metric, params, n_jobs):
        super().__init__(metric, params, n_jobs)
        self._faiss_index = None

    # ---------------------------------------------------- what it is
    @classmethod
    def serves(cls, algorithm, metric):
        return not callable(metric) and metric in cls.metrics

    @classmethod
    def input_dtype(cls, metric):
        return None if metric in BINARY_METRICS else np.float32  # packed codes; what FAISS computes in

    # ------------------------------------------------------------ metric
    @property
    def _binary(self):
        return self.metric in BINARY_METRICS

    def _prepare(self, X):
        """Rows as FAISS takes them: C-contiguous float32 (normalised for cosine) or uint8."""
        if self._binary:
            return np.ascontiguousarray(X, dtype=np.uint8)
        X = np.ascontiguousarray(X, dtype=np.float32)
        if self.metric == "cosine":
            norms = np.linalg.norm(X, axis=1, keepdims=True)
            X = X / np.where(norms > 0, norms, 1).astype(np.float32)
        return X

    def _faiss_metric(self, faiss):
        if self.metric in ("cosine", "inner_product"):
            return faiss.METRIC_INNER_PRODUCT
        return faiss.METRIC_L2

    def _to_distances(self, raw):
        """FAISS's scores to the metric's distances, as float64."""
        raw = raw.astype(np.float64)
        if self.metric == "euclidean":
            return np.sqrt(np.maximum(raw, 0, out=raw), out=raw)
        if self.metric == "cosine":
            return np.clip(1.0 - raw, 0.0, 2.0, out=raw)  # rounding must not give -0.0000
        if self.metric == "inner_product":
            return -raw
        return raw  # sqeuclidean, hamming

    def _to_threshold(self, radius):
        """The metric's radius as FAISS's range-search threshold.

        FAISS keeps scores strictly below an L2 or Hamming threshold and
        strictly above an inner-product one; scikit-learn's radius includes
        its boundary, so the threshold is moved by one step outwards.
        """
        if self._binary:
            return int(math.floor(radius)) + 1
        if self.metric == "euclidean":
            return float(np.nextafter(np.float32(radius) ** 2, np.float32(np.inf)))
        if self.metric == "sqeuclidean":
            return float(np.nextafter(np.float32(radius), np.float32(np.inf)))
        similarity = 1.0 - radius if self.metric == "cosine" else -radius
        return float(np.nextafter(np.float32(similarity), np.float32(-np.inf)))

    # ------------------------------------------------------------- build
    @property
    def n_samples(self):
        return int(self._faiss_index.ntotal)

    @property
    def n_dims(self):
        return int(self._faiss_index.d)

    @property
    def _row_bytes(self):
        """Bytes of one stored row: ``d`` float32 values or ``d`` bits."""
        return self.n_dims // 8 if self._binary else 4 * self.n_dims

    def _new_index(self, faiss, n_dims, n_rows):
        raise NotImplementedError

    def _faiss_types(self, faiss):
        """The FAISS index classes this backend builds (binary, float)."""
        raise NotImplementedError

    def build(self, X):
        faiss = import_faiss()
        rows = self._prepare(X)
        n_dims = rows.shape[1] * 8 if self._binary else rows.shape[1]
        index = self._new_index(faiss, n_dims, len(rows))
        with faiss_threads(faiss, self._build_threads()):
            if not index.is_trained:
                index.train(rows)
            self._use(index)
            self._append(rows)
        self._after_add()

    def add(self, X):
        faiss = import_faiss()
        with faiss_threads(faiss, self._build_threads()):
            self._append(self._prepare(X))
        self._after_add()

    def _build_threads(self):
        return self.n_jobs

    def _use(self, index):
        """Make ``index`` the one searched and grown, once it is built or loaded."""
        self._faiss_index = index

    def _append(self, rows):
        """Add prepared rows to the index; the one place rows enter FAISS."""
        self._faiss_index.add(rows)

    def _after_add(self):
        """Hook: keep what reconstruction needs up to date."""

    # ------------------------------------------------------------ search
    def _search_parameters(self, faiss, settings, selector, *, exhaustive=False, share=1.0):
        """FAISS's parameters of one search: its settings and the subset's selector.

        ``share`` is the part of the rows the subset holds: approximate
        backends widen their search by its inverse, so that a filtered search
        sees as many matching candidates as an unfiltered one sees rows.
        """
        return faiss.SearchParameters(sel=selector) if selector is not None else None

    def _searches_subset_exactly(self, subset):
        """Whether a search within ``subset`` goes over its rows exactly (cheaper than a filtered search).

        So do binary indexes that take no selector, and approximate ones for a
        filter matching few rows: the probed cells or the graph's walk would
        hold few of them (recall@10 0.70 at 1% of 1M rows, bench_filters.py),
        while the matching rows alone are quick to search exactly.
        """
        if self._binary and not self.binary_selects:
            return True
        return not self.exact and len(subset) <= _EXACT_SUBSET_SHARE * self.n_samples

    def _raw_search(self, faiss, rows, k, parameters, n_jobs):
        with faiss_threads(faiss, n_jobs):
            return self._faiss_index.search(rows, k, params=parameters)

    def search(self, X, k, settings, subset=None):
        faiss = import_faiss()
        rows = self._prepare(X)
        if subset is not None and self._searches_subset_exactly(subset):
            raw, indices = self._search_subset_exhaustively(faiss, rows, k, settings, subset)
            return self._to_distances(raw), indices
        selector = _selector(faiss, subset, self.n_samples)
        share = 1.0 if subset is None else max(len(subset), 1) / max(self.n_samples, 1)
        parameters = self._search_parameters(faiss, settings, selector, share=share)
        raw, indices = self._raw_search(faiss, rows, k, parameters, settings.n_jobs)
        missing = (indices < 0).any(axis=1)
        if missing.any():
            # Too few rows in the probed cells, or on the graph's paths through the
            # subset: search those queries exhaustively.
            raw[missing], indices[missing] = self._search_missing(faiss, rows[missing], k, settings, subset, selector)
        return self._to_distances(raw), indices.astype(np.int64, copy=False)

    def _search_missing(self, faiss, rows, k, settings, subset, selector):
        """Raw scores and rows of queries whose search came back short, from an exhaustive search."""
        parameters = self._search_parameters(faiss, settings, selector, exhaustive=True)
        return self._raw_search(faiss, rows, k, parameters, settings.n_jobs)

    def _search_subset_exhaustively(self, faiss, rows, k, settings, subset):
        """Raw scores and rows of the ``k`` nearest rows of ``subset``, from a flat index of its stored rows."""
        flat = self._subset_flat_index(faiss, subset)
        with faiss_threads(faiss, settings.n_jobs):
            raw, found = flat.search(rows, k)
        return raw, np.where(found >= 0, subset[np.maximum(found, 0)], -1).astype(np.int64)

    def _rows_of(self, subset):
        """The stored rows ``subset`` (sorted).

        Scattered rows are gathered in one call: FAISS's IVF ``reconstruct_n``
        scans every cell, which made a search within 1% of 1M rows take 10 s
        a contiguous run at a time (bench_filters.py). Binary indexes have no
        batch reconstruction, and long runs are copied faster whole.
        """
        spans = _spans(subset)
        if not self._binary and len(spans) > _RUNS_COPIED_WHOLE:
            return self._faiss_index.reconstruct_batch(np.ascontiguousarray(subset, dtype=np.int64))
        return np.concatenate([self.reconstruct(*span) for span in spans] or [self.reconstruct(0, 0)])

    def range_search(self, X, radius, settings, subset=None):
        faiss = import_faiss()
        rows = self._prepare(X)
        threshold = self._to_threshold(radius)
        if subset is not None and self._binary and not self.binary_selects:
            with faiss_threads(faiss, settings.n_jobs):
                limits, raw, indices = self._subset_flat_index(faiss, subset).range_search(rows, threshold)
            indices = subset[indices]
        else:
            selector = _selector(faiss, subset, self.n_samples)  # kept until the search returns
            searched, parameters = self._range_searched_index(faiss, settings, selector)
            with faiss_threads(faiss, settings.n_jobs):
                limits, raw, indices = searched.range_search(rows, threshold, params=parameters)
        distances = self._to_distances(raw)
        spans = list(zip(limits[:-1], limits[1:]))
        out_d = ragged((distances[a:b] for a, b in spans), len(rows), np.float64)
        out_i = ragged((indices[a:b] for a, b in spans), len(rows), np.int64)
        return sorted_ragged(out_d, out_i)

    def _range_searched_index(self, faiss, settings, selector):
        """The index a range search runs on and its parameters (FAISS's binary IVF takes none)."""
        return self._faiss_index, self._search_parameters(faiss, settings, selector)

    def _subset_flat_index(self, faiss, subset):
        """A flat index of the stored rows of ``subset`` (its row ``i`` is ``subset[i]``)."""
        flat = (
            faiss.IndexBinaryFlat(self.n_dims)
            if self._binary
            else faiss.IndexFlat(self.n_dims, self._faiss_metric(faiss))
        )
        flat.add(self._rows_of(subset))
        return flat

    # ----------------------------------------------------- reconstruction
    def reconstruct(self, start, stop):
        return self._faiss_index.reconstruct_n(start, stop - start)

    def remove(self, indices):
        """Forget rows by rebuilding the structure from the rows kept.

        The trained parts (IVF cells, PQ codebooks) are kept; only the rows
        are added again, so nothing is re-embedded or retrained. Flat
        indexes override this with FAISS's own removal.
        """
        faiss = import_faiss()
        kept = self._rows_of(self._kept_rows(indices))
        self._faiss_index.reset()
        with faiss_threads(faiss, self._build_threads()):
            self._append(kept)
        self._after_add()

    def _kept_rows(self, indices):
        """The rows ``remove(indices)`` keeps, in order."""
        kept = np.ones(self.n_samples, dtype=bool)
        kept[indices] = False
        return np.flatnonzero(kept)

    # ----------------------------------------------------------- pickling
    def __getstate__(self):
        faiss = import_faiss()
        serialize = faiss.serialize_index_binary if self._binary else faiss.serialize_index
        return {
            "metric": self.metric,
            "params": dataclasses.asdict(self.params),
            "n_jobs": self.n_jobs,
            "index": serialize(self._faiss_index),
        }

    def __setstate__(self, state):
        faiss = import_faiss()
        self.__init__(state["metric"], _params_from_state(self.Params, state["params"]), state["n_jobs"])
        deserialize = faiss.deserialize_index_binary if self._binary else faiss.deserialize_index
        try:
            index = deserialize(np.asarray(state["index"], dtype=np.uint8))
        except RuntimeError as exc:
            raise ValueError(f"The stored FAISS index is damaged ({str(exc).splitlines()[-1]}).") from exc
        # A file could hold another kind of index than the one this backend drives.
        binary_type, float_type = self._faiss_types(faiss)
        expected = binary_type if self._binary else float_type
        if not isinstance(index, expected):
            raise ValueError(
                f"The stored FAISS index is a {type(index).__name__}, not the {expected.__name__} of a "
                f"{type(self).__name__}: the file was altered."
            )
        self._use(index)
        self._after_add()


def _spans(indices):
    """Contiguous ``(start, stop)`` runs of sorted ``indices``, at most ``_CHUNK`` long."""
    if len(indices) == 0:
        return []
    breaks = np.flatnonzero(np.diff(indices) != 1) + 1
    spans = []
    for run in np.split(indices, breaks):
        for start in range(0, len(run), _CHUNK):
            part = run[start : start + _CHUNK]
            spans.append((int(part[0]), int(part[-1]) + 1))
    return spans


#: A filtered IVF or HNSW search widens n_probe / ef_search by ``share ** -_WIDENING``. 1 lets it
#: see as many matching rows as an unfiltered search sees rows: on a hard second data set 0.5 lost
#: 0.09 of recall@10 at 10% where 1 lost none (bench_filters.py, part 3), though 0.5 is 3x faster.
_WIDENING = 1.0


def _widened(setting, share):
    """``n_probe`` or ``ef_search`` of a search within ``share`` of the rows."""
    return math.ceil(setting / share**_WIDENING)


# ------------------------------------------------------------------- flat
#: Filters matching at most this share of the rows are searched over the matching rows, exactly.
_EXACT_SUBSET_SHARE = 0.02
_SUBSET_ROWS_PER_SEARCH = 262_144  # rows of a filtered flat search copied at a time: 128 MiB at 128 dimensions


class FaissFlatBackend(FaissBackend):
    """Exact search: every query against every row.

    FAISS computes float L2 scores as ``|x|^2 + |y|^2 - 2<x, y>`` in float32
    with BLAS, which loses precision for near neighbours, so the ``k``
    answers (or a range search's candidates) are re-scored in float64 from
    the stored rows and re-sorted: distances then match scikit-learn's.
    """

    algorithms = ("flat",)
    Params = FlatParams

    @property
    def nbytes(self):
        return self.n_samples * self._row_bytes

    def _new_index(self, faiss, n_dims, n_rows):
        if self._binary:
            return faiss.IndexBinaryFlat(n_dims)
        return faiss.IndexFlat(n_dims, self._faiss_metric(faiss))

    def _faiss_types(self, faiss):
        return faiss.IndexBinaryFlat, faiss.IndexFlat

    def _stored_rows(self, faiss):
        """The stored float32 rows as a NumPy view (no copy)."""
        pointer = self._faiss_index.get_xb()
        return faiss.rev_swig_ptr(pointer, self.n_samples * self.n_dims).reshape(-1, self.n_dims)

    def _exact_scores(self, faiss, rows, indices):
        """float64 FAISS-unit scores of each query against its candidate rows."""
        stored = self._stored_rows(faiss)
        scores = np.empty(indices.shape, dtype=np.float64)
        step = max(1, _CHUNK // max(indices.shape[1], 1))
        for start in range(0, len(rows), step):
            queries = rows[start : start + step].astype(np.float64)
            candidates = stored[indices[start : start + step]].astype(np.float64)
            if self.metric in ("cosine", "inner_product"):
                scores[start : start + step] = np.einsum("qkd,qd->qk", candidates, queries)
            else:
                scores[start : start + step] = ((candidates - queries[:, None, :]) ** 2).sum(axis=2)
        return scores

    def search(self, X, k, settings, subset=None):
        if self._binary:
            return super().search(X, k, settings, subset)  # integer distances are exact already
        faiss = import_faiss()
        rows = self._prepare(X)
        if subset is None:
            parameters = self._search_parameters(faiss, settings, None)
            _, indices = self._raw_search(faiss, rows, k, parameters, settings.n_jobs)
        else:
            indices = self._nearest_in_subset(faiss, rows, k, settings, np.asarray(subset, dtype=np.int64))
        scores = self._exact_scores(faiss, rows, indices)
        similarity = self.metric in ("cosine", "inner_product")
        order = np.argsort(-scores if similarity else scores, axis=1, kind="stable")
        indices = np.take_along_axis(indices, order, axis=1)
        scores = np.take_along_axis(scores, order, axis=1)
        return self._to_distances(scores), indices

    def _nearest_in_subset(self, faiss, rows, k, settings, subset):
        """The rows of the ``k`` nearest stored rows of ``subset``, from flat indexes of its rows.

        FAISS's flat search with a selector scores rows one at a time, without
        BLAS: with a filter of half the rows it took 13 times the unfiltered
        search (benchmarks/bench_filters.py). Copying the subset's rows into
        a flat index, a bounded chunk at a time, keeps BLAS.
        """
        stored = self._stored_rows(faiss)
        similarity = self.metric in ("cosine", "inner_product")
        best_raw = best = None
        for start in range(0, len(subset), _SUBSET_ROWS_PER_SEARCH):
            part = subset[start : start + _SUBSET_ROWS_PER_SEARCH]
            flat = faiss.IndexFlat(self.n_dims, self._faiss_metric(faiss))
            flat.add(stored[part])
            with faiss_threads(faiss, settings.n_jobs):
                raw, found = flat.search(rows, min(k, len(part)))
            found = part[found]
            if best is not None:
                raw, found = np.hstack([best_raw, raw]), np.hstack([best, found])
            order = np.argsort(-raw if similarity else raw, axis=1, kind="stable")[:, :k]
            best_raw, best = np.take_along_axis(raw, order, axis=1), np.take_along_axis(found, order, axis=1)
        return best

    def range_search(self, X, radius, settings, subset=None):
        if self._binary:
            return super().range_search(X, radius, settings, subset)
        faiss = import_faiss()
        rows = self._prepare(X)
        # Candidates from a slightly wider radius, then the exact test.
        slack = 1e-4 * (1 + abs(radius))
        selector = _selector(faiss, subset, self.n_samples)  # kept until the search returns
        parameters = self._search_parameters(faiss, settings, selector)
        with faiss_threads(faiss, settings.n_jobs):
            limits, _, candidates = self._faiss_index.range_search(
                rows, self._to_threshold(radius + slack), params=parameters
            )
        parts_d, parts_i = [], []
        for row, (a, b) in enumerate(zip(limits[:-1], limits[1:])):
            found = candidates[a:b]
            scores = self._exact_scores(faiss, rows[row : row + 1], found[None, :])[0]
            distances = self._to_distances(scores)
            keep = distances <= radius
            parts_d.append(distances[keep])
            parts_i.append(found[keep])
        return sorted_ragged(ragged(parts_d, len(rows), np.float64), ragged(parts_i, len(rows), np.int64))

    def remove(self, indices):
        faiss = import_faiss()
        # Flat indexes renumber the rows after a removal, as the contract asks.
        self._faiss_index.remove_ids(faiss.IDSelectorBatch(np.asarray(indices, dtype=np.int64)))


# -------------------------------------------------------------------- IVF
class FaissIVFBackend(FaissBackend):
    """Inverted file: k-means cells, each query scans the ``n_probe`` nearest cells.

    Retrieval through the clustering: the gallery is partitioned once by
    k-means (seeded), and a query compares itself with the rows of the few
    cells whose centroids are nearest.
    """

    algorithms = ("ivf",)
    Params = IVFParams
    exact = False
    binary_selects = False  # searched through a view of its cells (_binary_view), which takes no selector

    @classmethod
    def resolve_params(cls, params, n_samples):
        if params.n_cells == "auto":
            return dataclasses.replace(params, n_cells=auto_n_cells(n_samples))
        return params

    @classmethod
    def rows_to_train(cls, params, n_samples):
        n_cells = cls.resolve_params(params, n_samples).n_cells
        return min(n_samples, n_cells * MIN_ROWS_PER_CENTROID)

    @classmethod
    def check_params(cls, params, n_rows, n_features):
        if params.n_cells != "auto" and params.n_cells > n_rows:
            raise ValueError(
                f"n_cells={params.n_cells} k-means cells cannot be trained on {n_rows} rows: "
                f"use n_cells <= {n_rows} (FAISS wants {MIN_ROWS_PER_CENTROID} rows per cell), or n_cells='auto'."
            )

    @property
    def n_cells(self):
        return int(self._ivf().nlist)

    def _ivf(self):
        """The IVF index itself (IVF-PQ wraps it for re-ranking)."""
        return self._faiss_index

    @property
    def nbytes(self):
        ivf = self._ivf()
        n = self.n_samples
        codes = n * (ivf.code_size + 8)  # each row's code and its id in its cell's list
        position_map = 8 * n if ivf.direct_map.type != ivf.direct_map.NoMap else 0
        centroids = self.n_cells * self._row_bytes
        return codes + position_map + centroids

    def _cells(self, n_rows):
        return self.resolve_params(self.params, n_rows).n_cells

    def _new_index(self, faiss, n_dims, n_rows):
        n_cells = self._cells(n_rows)
        if self._binary:
            index = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(n_dims), n_dims, n_cells)
        else:
            metric = self._faiss_metric(faiss)
            index = faiss.IndexIVFFlat(faiss.IndexFlat(n_dims, metric), n_dims, n_cells, metric)
        self._configure_clustering(index.cp)
        return index

    def _configure_clustering(self, cp):
        cp.seed = _seed(self.params.random_state)
        if self.params.n_cells == "auto":
            # The cell count was chosen for the data: a gallery under 39 rows gets
            # one cell, on purpose, and FAISS need not warn about it.
            cp.min_points_per_centroid = 1

    def _faiss_types(self, faiss):
        return faiss.IndexBinaryIVF, faiss.IndexIVFFlat

    def _after_add(self):
        # Rows are reconstructed by position (leave-one-out queries, removal).
        self._faiss_index.make_direct_map()

    def _range_searched_index(self, faiss, settings, selector):
        if not self._binary:
            return super()._range_searched_index(faiss, settings, selector)
        return self._binary_view(faiss, min(settings.n_probe, self.n_cells)), None

    def _raw_search(self, faiss, rows, k, parameters, n_jobs):
        if not self._binary:
            return super()._raw_search(faiss, rows, k, parameters, n_jobs)
        with faiss_threads(faiss, n_jobs):
            return self._binary_view(faiss, parameters.nprobe).search(rows, k)

    def _binary_view(self, faiss, n_probe):
        """The binary IVF index as a view that shares its cells and rows and searches ``n_probe`` cells.

        FAISS's binary IVF reads n_probe from the index only (range search on
        every version, search before 1.14), and a search must not change it.
        """
        ivf = self._faiss_index
        view = faiss.IndexBinaryIVF(ivf.quantizer, ivf.d, ivf.nlist)
        view.replace_invlists(ivf.invlists, False)
        view.ntotal, view.is_trained = ivf.ntotal, True
        view.nprobe = n_probe
        view.referenced_objects = [ivf]  # the view reads the index's cells and quantizer
        return view

    def _search_parameters(self, faiss, settings, selector, *, exhaustive=False, share=1.0):
        n_probe = self.n_cells if exhaustive else min(_widened(settings.n_probe, share), self.n_cells)
        if selector is None:
            return faiss.SearchParametersIVF(nprobe=n_probe)
        return faiss.SearchParametersIVF(nprobe=n_probe, sel=selector)


# ------------------------------------------------------------------- HNSW
class FaissHNSWBackend(FaissBackend):
    """Hierarchical navigable small-world graph; ``ef_search`` trades speed for recall.

    FAISS inserts rows in parallel, which makes the graph depend on thread
    timing; with an int ``random_state`` the graph is built on one thread so
    that it is reproducible. A subset is searched along the graph's paths
    through it; queries it leaves short are answered from the subset's rows.
    """

    algorithms = ("hnsw",)
    Params = HNSWParams
    exact = False

    @classmethod
    def range_search_unsupported(cls, metric, params):
        return "FAISS's binary HNSW index has none" if metric in BINARY_METRICS else None

    @property
    def nbytes(self):
        hnsw = self._faiss_index.hnsw
        links = 4 * hnsw.neighbors.size() + 8 * hnsw.offsets.size() + 4 * hnsw.levels.size()
        return self.n_samples * self._row_bytes + links

    def _new_index(self, faiss, n_dims, n_rows):
        if self._binary:
            index = faiss.IndexBinaryHNSW(n_dims, self.params.hnsw_m)
        else:
            index = faiss.IndexHNSWFlat(n_dims, self.params.hnsw_m, self._faiss_metric(faiss))
        index.hnsw.efConstruction = self.params.ef_construction
        return index

    def _faiss_types(self, faiss):
        return faiss.IndexBinaryHNSW, faiss.IndexHNSWFlat

    def _build_threads(self):
        return 1 if self.params.random_state is not None else self.n_jobs

    @property
    def binary_selects(self):
        return binary_hnsw_takes_parameters(import_faiss())

    def _raw_search(self, faiss, rows, k, parameters, n_jobs):
        if not self._binary or binary_hnsw_takes_parameters(faiss):
            return super()._raw_search(faiss, rows, k, parameters, n_jobs)
        # FAISS before 1.14: the graph's own ef_search, set for this search only.
        hnsw = self._faiss_index.hnsw
        with _BINARY_HNSW_SETTING, faiss_threads(faiss, n_jobs):
            before, hnsw.efSearch = hnsw.efSearch, parameters.efSearch
            try:
                return self._faiss_index.search(rows, k)
            finally:
                hnsw.efSearch = before

    def _search_parameters(self, faiss, settings, selector, *, exhaustive=False, share=1.0):
        # exhaustive is never asked for: short answers come from the flat storage (_search_missing)
        ef_search = min(_widened(settings.ef_search, share), max(self.n_samples, settings.ef_search))
        if selector is None:
            return faiss.SearchParametersHNSW(efSearch=ef_search)
        return faiss.SearchParametersHNSW(efSearch=ef_search, sel=selector)

    def _search_missing(self, faiss, rows, k, settings, subset, selector):
        if subset is not None:
            # The graph's paths may not reach every row of a small subset at any ef_search.
            return self._search_subset_exhaustively(faiss, rows, k, settings, subset)
        # Every row, exactly, from the flat storage the graph links: a walk of the graph with
        # ef_search = every row took minutes per 1,000 queries at 200,000 rows (bench_filters.py).
        storage = self._faiss_index.storage
        flat = faiss.downcast_IndexBinary(storage) if self._binary else faiss.downcast_index(storage)
        with faiss_threads(faiss, settings.n_jobs):
            return flat.search(rows, k)


_BINARY_HNSW_SETTING = threading.Lock()  # one search at a time sets a binary graph's ef_search


@functools.cache
def binary_hnsw_takes_parameters(faiss):
    """Whether FAISS's binary HNSW takes search parameters (1.14 and later), tried on a one-row graph."""
    index = faiss.IndexBinaryHNSW(8, 2)
    row = np.zeros((1, 1), dtype=np.uint8)
    index.add(row)
    try:
        index.search(row, 1, params=faiss.SearchParametersHNSW(efSearch=1))
    except RuntimeError:
        return False
    return True


# ----------------------------------------------------------------- IVF-PQ
class FaissIVFPQBackend(FaissIVFBackend):
    """IVF with product-quantized codes, re-ranked from stored rows.

    Each row is kept as ``pq_m`` codes of ``pq_bits`` bits (32 bytes for
    128 float dimensions instead of 512); a query's ``k_factor * k`` best
    candidates by code distance are re-scored from the rows kept by
    ``refine``: "flat" (exact, 4 bytes per value), "fp16" (2), "sq8" (1), or
    not at all (``None``, distances from the codes). Those rows are held by
    ``_faiss_refine``, so rows are added here, never by FAISS's IndexRefine.
    """

    algorithms = ("ivfpq",)
    Params = IVFPQParams
    metrics = FLOAT_METRICS

    def __init__(self, metric, params, n_jobs):
        super().__init__(metric, params, n_jobs)
        self._refine_rows = None  # the holder of the re-ranking rows, made when rows are first added

    @classmethod
    def range_search_unsupported(cls, metric, params):
        if params.refine is None:
            return None
        return "FAISS's re-ranking index (refine) has none; refine=None searches a radius on the codes alone"

    @classmethod
    def resolve_params(cls, params, n_samples):
        params = super().resolve_params(params, n_samples)
        if params.pq_bits == "auto":
            params = dataclasses.replace(params, pq_bits=auto_pq_bits(n_samples))
        return params

    @classmethod
    def rows_to_train(cls, params, n_samples):
        resolved = cls.resolve_params(params, n_samples)
        return min(n_samples, MIN_ROWS_PER_CENTROID * max(resolved.n_cells, 2**resolved.pq_bits))

    @classmethod
    def check_params(cls, params, n_rows, n_features):
        super().check_params(params, n_rows, n_features)
        if params.pq_m != "auto" and n_features % params.pq_m:
            raise ValueError(
                f"pq_m={params.pq_m} must divide the number of features, {n_features}; "
                "each sub-quantizer codes an equal slice of the row. Use pq_m='auto'."
            )
        pq_bits = auto_pq_bits(n_rows) if params.pq_bits == "auto" else params.pq_bits
        if n_rows < 2**pq_bits:
            raise ValueError(
                f"algorithm='ivfpq' trains {2**pq_bits} centroids per sub-quantizer (pq_bits={pq_bits}), "
                f"which needs at least {2**pq_bits} rows; got {n_rows} sample{'s' if n_rows > 1 else ''}. "
                "Use a larger gallery, a smaller pq_bits, or algorithm='flat' or 'ivf'."
            )

    @property
    def nbytes(self):
        faiss = import_faiss()
        pq = self._ivf().pq
        codebooks = pq.M * pq.ksub * pq.dsub * 4
        rows = 0
        if self.params.refine is not None:
            rows = self.n_samples * faiss.downcast_index(self._faiss_index.refine_index).code_size
        return super().nbytes + codebooks + rows

    def _new_index(self, faiss, n_dims, n_rows):
        metric = self._faiss_metric(faiss)
        pq_m = auto_pq_m(n_dims) if self.params.pq_m == "auto" else self.params.pq_m
        pq_bits = auto_pq_bits(n_rows) if self.params.pq_bits == "auto" else self.params.pq_bits
        base = faiss.IndexIVFPQ(faiss.IndexFlat(n_dims, metric), n_dims, self._cells(n_rows), pq_m, pq_bits, metric)
        self._configure_clustering(base.cp)
        base.pq.cp.seed = _seed(self.params.random_state)
        if self.params.pq_bits == "auto":
            base.pq.cp.min_points_per_centroid = 1
        refine = self.params.refine
        if refine is None:
            return base
        if refine == "flat":
            rows = faiss.IndexFlat(n_dims, metric)
        else:
            kind = {"fp16": faiss.ScalarQuantizer.QT_fp16, "sq8": faiss.ScalarQuantizer.QT_8bit}[refine]
            rows = faiss.IndexScalarQuantizer(n_dims, kind, metric)
        return faiss.IndexRefine(base, rows)  # its Python object keeps both parts alive

    def _faiss_types(self, faiss):
        return type(None), faiss.IndexIVFPQ if self.params.refine is None else faiss.IndexRefine

    def _ivf(self):
        if self.params.refine is None:
            return self._faiss_index
        return import_faiss().downcast_index(self._faiss_index.base_index)

    def _use(self, index):
        super()._use(index)
        self._refine_rows = None  # FAISS holds a new index's rows until some are added

    def _stored(self):
        """The holder of the re-ranking rows, taken over from FAISS the first time rows change."""
        if self._refine_rows is None:
            faiss = import_faiss()
            self._refine_rows = refine_rows(faiss, faiss.downcast_index(self._faiss_index.refine_index))
        return self._refine_rows

    def _append(self, rows):
        if self.params.refine is None:
            return super()._append(rows)
        stored, base = self._stored(), self._ivf()
        start = len(stored)
        stored.append(rows)  # first: at 10M rows, the step most likely to run out of memory
        try:
            base.add(rows)
        except BaseException:
            stored.truncate(start)
            raise
        self._faiss_index.ntotal = base.ntotal

    def remove(self, indices):
        """Forget rows: the refine rows kept move down in place, and the
        codes are computed again from them a chunk at a time, so removing
        from 10M rows never holds the rows twice.

        Moved rows cannot move back: interrupted (Ctrl-C, memory), the index
        keeps the first kept rows whose codes were computed again, possibly
        none, and every part of it agrees on that number.
        """
        if self.params.refine is None:
            return super().remove(indices)
        faiss = import_faiss()
        stored, base = self._stored(), self._ivf()
        codes_reset = False
        try:
            stored.keep(self._kept_rows(indices))
            base.reset()
            codes_reset = True
            with faiss_threads(faiss, self.n_jobs):
                for start in range(0, len(stored), _CHUNK):
                    base.add(stored.index.reconstruct_n(start, min(_CHUNK, len(stored) - start)))
        except BaseException:
            if not codes_reset:  # the codes still describe rows that have moved
                base.reset()
            stored.truncate(base.ntotal)
            raise
        finally:
            self._faiss_index.ntotal = base.ntotal  # no position map to rebuild: see _after_add

    def _after_add(self):
        # IndexRefine reconstructs from its refine rows; only bare codes need the
        # position map (10M rows: 80 MB, rebuilt on every add).
        if self.params.refine is None:
            self._ivf().make_direct_map()

    def _search_parameters(self, faiss, settings, selector, *, exhaustive=False, share=1.0):
        ivf = super()._search_parameters(faiss, settings, selector, exhaustive=exhaustive, share=share)
        if self.params.refine is None:
            return ivf
        parameters = faiss.IndexRefineSearchParameters(k_factor=settings.k_factor, base_index_params=ivf)
        parameters.referenced_objects = [ivf]  # keep the inner parameters alive
        return parameters

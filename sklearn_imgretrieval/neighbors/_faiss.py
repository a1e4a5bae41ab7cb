"""FAISS indexes behind the index protocol: exact flat, IVF, HNSW and IVF-PQ
for float rows, and FAISS's binary indexes for Hamming distances between
packed bit codes.

This is the only module that talks to FAISS, and it imports faiss when an
index is built or loaded, never at import time. Every backend here keeps
FAISS's own index and pickles as ``faiss.serialize_index`` bytes.

Metrics map onto FAISS's two float metrics: ``euclidean`` and
``sqeuclidean`` onto L2 (FAISS computes squared distances; the square root
is taken on the way out), ``cosine`` onto inner product over rows
L2-normalised once (a copy: the user's array is never changed) and returned
as ``1 - similarity``, ``inner_product`` returned as ``-<x, y>`` so that, as
for every metric, the smallest distance comes first.
"""

import contextlib
import math

import numpy as np

from .._parallel import local_threads
from ._index import SearchIndex, ragged, sorted_ragged

FLOAT_METRICS = frozenset({"euclidean", "sqeuclidean", "cosine", "inner_product"})
BINARY_METRICS = frozenset({"hamming"})
_CHUNK = 65536  # rows gathered at a time when re-scoring or rebuilding


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
    return max(1, min(round(4 * math.sqrt(n_rows)), n_rows // 39))


def auto_pq_m(n_dims):
    """Sub-quantizers of IVF-PQ: about one per 4 dimensions, dividing ``n_dims``."""
    return max(m for m in range(1, max(1, n_dims // 4) + 1) if n_dims % m == 0)


def auto_pq_bits(n_rows):
    """Bits per sub-quantizer code: 8 (256 centroids) once the gallery has the
    39 * 256 rows that k-means needs for them, fewer below."""
    return int(min(8, max(1, math.floor(math.log2(max(n_rows, 2) / 39)))))


class FaissIndex(SearchIndex):
    """What every FAISS backend shares: the metric's conversions, threads,
    filling of incomplete answers, reconstruction, removal and pickling.

    Subclasses create the empty FAISS index (``_new_index``), give the
    per-search parameters (``_search_parameters``) and those that make a
    search exhaustive (``_exhaustive_parameters``).
    """

    metrics = FLOAT_METRICS | BINARY_METRICS

    def __init__(self, metric, params, n_jobs):
        super().__init__(metric, params, n_jobs)
        self._index = None

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
        return int(self._index.ntotal)

    @property
    def n_dims(self):
        return int(self._index.d)

    def _new_index(self, faiss, n_dims, n_rows):
        raise NotImplementedError

    def _search_parameters(self, faiss, options):
        return None

    def _exhaustive_parameters(self, faiss, options):
        return None

    def _seed(self):
        return self.params["seed"]

    def build(self, X):
        faiss = import_faiss()
        rows = self._prepare(X)
        n_dims = rows.shape[1] * 8 if self._binary else rows.shape[1]
        index = self._new_index(faiss, n_dims, len(rows))
        with faiss_threads(faiss, self.n_jobs):
            if not index.is_trained:
                index.train(rows)
            self._use(index)
            self._append(rows)
        self._after_add()

    def add(self, X):
        faiss = import_faiss()
        with faiss_threads(faiss, self.n_jobs):
            self._append(self._prepare(X))
        self._after_add()

    def _use(self, index):
        """Make ``index`` the one searched and grown, once it is built or loaded."""
        self._index = index

    def _append(self, rows):
        """Add prepared rows to the index; the one place rows enter FAISS."""
        self._index.add(rows)

    def _after_add(self):
        """Hook: keep what reconstruction needs up to date."""

    # ------------------------------------------------------------ search
    def _raw_search(self, faiss, rows, k, parameters, n_jobs):
        with faiss_threads(faiss, n_jobs):
            return self._index.search(rows, k, params=parameters)

    def search(self, X, k, options):
        faiss = import_faiss()
        rows = self._prepare(X)
        n_jobs = options["n_jobs"]
        raw, indices = self._raw_search(faiss, rows, k, self._search_parameters(faiss, options), n_jobs)
        missing = (indices < 0).any(axis=1)
        if missing.any():
            # Too few rows in the probed cells: search those queries exhaustively.
            raw[missing], indices[missing] = self._raw_search(
                faiss, rows[missing], k, self._exhaustive_parameters(faiss, options), n_jobs
            )
        return self._to_distances(raw), indices.astype(np.int64, copy=False)

    def range_search(self, X, radius, options):
        faiss = import_faiss()
        rows = self._prepare(X)
        with faiss_threads(faiss, options["n_jobs"]):
            limits, raw, indices = self._raw_range_search(faiss, rows, self._to_threshold(radius), options)
        distances = self._to_distances(raw)
        spans = list(zip(limits[:-1], limits[1:]))
        out_d = ragged((distances[a:b] for a, b in spans), len(rows), np.float64)
        out_i = ragged((indices[a:b] for a, b in spans), len(rows), np.int64)
        return sorted_ragged(out_d, out_i)

    def _raw_range_search(self, faiss, rows, threshold, options):
        return self._index.range_search(rows, threshold, params=self._search_parameters(faiss, options))

    # ----------------------------------------------------- reconstruction
    def reconstruct(self, start, stop):
        return self._index.reconstruct_n(start, stop - start)

    def remove(self, indices):
        """Forget rows by rebuilding the structure from the rows kept.

        The trained parts (IVF cells, PQ codebooks) are kept; only the rows
        are added again, so nothing is re-embedded or retrained. Flat
        indexes override this with FAISS's own removal.
        """
        faiss = import_faiss()
        keep = self._kept_rows(indices)
        kept = np.concatenate([self.reconstruct(*span) for span in _spans(keep)] or [self.reconstruct(0, 0)])
        self._index.reset()
        with faiss_threads(faiss, self.n_jobs):
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
        return {"metric": self.metric, "params": self.params, "n_jobs": self.n_jobs, "index": serialize(self._index)}

    def _faiss_types(self, faiss):
        """The FAISS index classes this backend builds (binary, float)."""
        raise NotImplementedError

    def __setstate__(self, state):
        faiss = import_faiss()
        self.__init__(state["metric"], state["params"], state["n_jobs"])
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


class FlatIndex(FaissIndex):
    """Exact search: every query against every row.

    FAISS computes float L2 scores as ``|x|^2 + |y|^2 - 2<x, y>`` in float32
    with BLAS, which loses precision for near neighbours, so the ``k``
    answers (or a range search's candidates) are re-scored in float64 from
    the stored rows and re-sorted: distances then match scikit-learn's.
    """

    def _new_index(self, faiss, n_dims, n_rows):
        if self._binary:
            return faiss.IndexBinaryFlat(n_dims)
        return faiss.IndexFlat(n_dims, self._faiss_metric(faiss))

    def _faiss_types(self, faiss):
        return faiss.IndexBinaryFlat, faiss.IndexFlat

    def _stored_rows(self, faiss):
        """The stored float32 rows as a NumPy view (no copy)."""
        return faiss.rev_swig_ptr(self._index.get_xb(), self.n_samples * self.n_dims).reshape(-1, self.n_dims)

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

    def search(self, X, k, options):
        if self._binary:
            return super().search(X, k, options)  # integer distances are exact already
        faiss = import_faiss()
        rows = self._prepare(X)
        _, indices = self._raw_search(faiss, rows, k, None, options["n_jobs"])
        scores = self._exact_scores(faiss, rows, indices)
        if self.metric in ("cosine", "inner_product"):
            scores = -scores  # sort similarities descending
        order = np.argsort(scores, axis=1, kind="stable")
        indices = np.take_along_axis(indices, order, axis=1)
        scores = np.take_along_axis(scores, order, axis=1)
        if self.metric in ("cosine", "inner_product"):
            scores = -scores
        return self._to_distances(scores), indices

    def range_search(self, X, radius, options):
        if self._binary:
            return super().range_search(X, radius, options)
        faiss = import_faiss()
        rows = self._prepare(X)
        # Candidates from a slightly wider radius, then the exact test.
        slack = 1e-4 * (1 + abs(radius))
        with faiss_threads(faiss, options["n_jobs"]):
            limits, _, candidates = self._raw_range_search(faiss, rows, self._to_threshold(radius + slack), options)
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
        # Flat indexes renumber the rows after a removal, as the protocol asks.
        self._index.remove_ids(faiss.IDSelectorBatch(np.asarray(indices, dtype=np.int64)))


class IVFIndex(FaissIndex):
    """Inverted file: k-means cells, each query scans the ``n_probe`` nearest cells.

    Retrieval through the clustering: the gallery is partitioned once by
    k-means (seeded), and a query compares itself with the rows of the few
    cells whose centroids are nearest.
    """

    def _cells(self, n_rows):
        n_cells = self.params["n_cells"]
        return auto_n_cells(n_rows) if n_cells == "auto" else n_cells

    def _n_probe(self, options):
        return min(options["n_probe"], self.n_cells)

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
        cp.seed = self._seed()
        if self.params["n_cells"] == "auto":
            # The cell count was chosen for the data: a gallery under 39 rows gets
            # one cell, on purpose, and FAISS need not warn about it.
            cp.min_points_per_centroid = 1

    def _faiss_types(self, faiss):
        return faiss.IndexBinaryIVF, faiss.IndexIVFFlat

    def _after_add(self):
        # Rows are reconstructed by position (leave-one-out queries, removal).
        self._index.make_direct_map()

    def _search_parameters(self, faiss, options):
        return faiss.SearchParametersIVF(nprobe=self._n_probe(options))

    def _exhaustive_parameters(self, faiss, options):
        return faiss.SearchParametersIVF(nprobe=self.n_cells)

    def _raw_search(self, faiss, rows, k, parameters, n_jobs):
        if not self._binary:
            return super()._raw_search(faiss, rows, k, parameters, n_jobs)
        # FAISS's binary IVF takes no per-search parameters: set n_probe on the index.
        self._index.nprobe = parameters.nprobe
        with faiss_threads(faiss, n_jobs):
            return self._index.search(rows, k)

    def _raw_range_search(self, faiss, rows, threshold, options):
        if not self._binary:
            return super()._raw_range_search(faiss, rows, threshold, options)
        self._index.nprobe = self._n_probe(options)
        return self._index.range_search(rows, threshold)

    @property
    def n_cells(self):
        return int(self._index.nlist)


class HNSWIndex(FaissIndex):
    """Hierarchical navigable small-world graph; ``ef_search`` trades speed for recall.

    FAISS inserts rows in parallel, which makes the graph depend on thread
    timing; with an int ``random_state`` the graph is built on one thread so
    that it is reproducible.
    """

    @property
    def supports_range_search(self):
        return not self._binary  # FAISS's binary HNSW has no range search

    def _new_index(self, faiss, n_dims, n_rows):
        if self._binary:
            index = faiss.IndexBinaryHNSW(n_dims, self.params["hnsw_m"])
        else:
            index = faiss.IndexHNSWFlat(n_dims, self.params["hnsw_m"], self._faiss_metric(faiss))
        index.hnsw.efConstruction = self.params["ef_construction"]
        return index

    def _faiss_types(self, faiss):
        return faiss.IndexBinaryHNSW, faiss.IndexHNSWFlat

    def _build_threads(self):
        return 1 if self.params["deterministic"] else self.n_jobs

    def build(self, X):
        n_jobs, self.n_jobs = self.n_jobs, self._build_threads()
        try:
            super().build(X)
        finally:
            self.n_jobs = n_jobs

    def add(self, X):
        n_jobs, self.n_jobs = self.n_jobs, self._build_threads()
        try:
            super().add(X)
        finally:
            self.n_jobs = n_jobs

    def _search_parameters(self, faiss, options):
        return faiss.SearchParametersHNSW(efSearch=options["ef_search"])

    def _exhaustive_parameters(self, faiss, options):
        return faiss.SearchParametersHNSW(efSearch=max(self.n_samples, options["ef_search"]))

    def _raw_search(self, faiss, rows, k, parameters, n_jobs):
        if not self._binary:
            return super()._raw_search(faiss, rows, k, parameters, n_jobs)
        # FAISS's binary HNSW takes no per-search parameters: set ef_search on the graph.
        self._index.hnsw.efSearch = parameters.efSearch
        with faiss_threads(faiss, n_jobs):
            return self._index.search(rows, k)


class RefineRows:
    """The rows an ``IndexRefine`` re-ranks from, in a NumPy buffer FAISS reads in place.

    FAISS keeps a flat index's rows in one ``std::vector``, and growing it
    copies every row already held: adding the ninth million rows of a 10M
    gallery briefly holds the first eight twice (2 GB of fp16 rows). A
    NumPy buffer grows with ``realloc``, which on Linux (glibc) remaps the
    pages of a buffer this large instead of copying them, so the rows are
    held once; elsewhere it may copy, as FAISS would. After every change
    FAISS's codes vector is pointed at the buffer as a view
    (``MaybeOwnedVector``, FAISS 1.11 and later).

    FAISS must never add to or reset ``index`` itself: resizing a view
    fails an assertion that ends the process. Nor may the index be copied
    with ``faiss.clone_index``, whose copy would view this buffer too; copy
    it through ``faiss.serialize_index``. Every change goes through this
    class.

    Parameters
    ----------
    faiss : module
    index : faiss.IndexFlatCodes
        The refine index (``IndexFlat`` or ``IndexScalarQuantizer``),
        trained. Rows it already holds (an index just loaded) are copied
        into the buffer, and FAISS's copy is freed.
    """

    def __init__(self, faiss, index):
        self._faiss = faiss
        self.index = index
        codes = index.codes
        held = faiss.rev_swig_ptr(codes.data(), codes.size()) if codes.size() else np.empty(0, np.uint8)
        self._codes = held.reshape(-1, index.code_size).copy()  # a copy owns its memory: it can grow
        codes.owned_data.swap(faiss.UInt8Vector())  # swapping, unlike clear(), frees the memory
        self._point_faiss_at_buffer()

    def __len__(self):
        return len(self._codes)

    def append(self, rows):
        start = len(self._codes)
        try:
            self._resize(start + len(rows))
            self.index.sa_encode(rows, self._codes[start:])
        except BaseException:
            self.truncate(start)  # the rows before stay as they were
            raise
        self._point_faiss_at_buffer()

    def keep(self, rows):
        """Keep only ``rows`` (strictly increasing), moved down in place, a chunk at a time."""
        for start in range(0, len(rows), _CHUNK):
            part = rows[start : start + _CHUNK]
            # A row only ever moves down, onto rows already moved or dropped.
            self._codes[start : start + len(part)] = self._codes[part]
        self.truncate(len(rows))

    def truncate(self, n_rows):
        """Keep the first ``n_rows`` rows."""
        self._resize(n_rows)
        self._point_faiss_at_buffer()

    def _resize(self, n_rows):
        # Nothing else refers to the buffer: FAISS is pointed at its new place
        # before it reads again.
        self._codes.resize((n_rows, self.index.code_size), refcheck=False)

    def _point_faiss_at_buffer(self):
        codes, pointer = self.index.codes, self._faiss.swig_ptr(self._codes)
        codes.is_owned = False
        codes.view_data = codes.c_ptr = pointer
        codes.view_size = codes.c_size = self._codes.size
        self.index.ntotal = len(self._codes)


class IVFPQIndex(IVFIndex):
    """IVF with product-quantized codes, re-ranked from stored rows.

    Each row is kept as ``pq_m`` codes of ``pq_bits`` bits (32 bytes for
    128 float dimensions instead of 512); a query's ``k_factor * k`` best
    candidates by code distance are re-scored from the rows kept by
    ``refine``: "flat" (exact, 4 bytes per value), "fp16" (2), "sq8" (1), or
    not at all (``None``, distances from the codes). Those rows sit in a
    :class:`RefineRows` buffer, so rows are added here, never by FAISS.
    """

    metrics = FLOAT_METRICS

    def __init__(self, metric, params, n_jobs):
        super().__init__(metric, params, n_jobs)
        self._rows = None  # the RefineRows of self._index, made when rows are first added

    @property
    def supports_range_search(self):
        return self.params["refine"] is None  # FAISS's re-ranking index has none

    def _new_index(self, faiss, n_dims, n_rows):
        metric = self._faiss_metric(faiss)
        pq_m = auto_pq_m(n_dims) if self.params["pq_m"] == "auto" else self.params["pq_m"]
        pq_bits = auto_pq_bits(n_rows) if self.params["pq_bits"] == "auto" else self.params["pq_bits"]
        if n_rows < 2**pq_bits:
            raise ValueError(
                f"algorithm='ivfpq' trains {2**pq_bits} centroids per sub-quantizer (pq_bits={pq_bits}), "
                f"which needs at least {2**pq_bits} rows; got {n_rows} sample{'s' if n_rows > 1 else ''}. "
                "Use a larger gallery, a smaller pq_bits, or algorithm='flat' or 'ivf'."
            )
        base = faiss.IndexIVFPQ(faiss.IndexFlat(n_dims, metric), n_dims, self._cells(n_rows), pq_m, pq_bits, metric)
        self._configure_clustering(base.cp)
        base.pq.cp.seed = self._seed()
        if self.params["pq_bits"] == "auto":
            base.pq.cp.min_points_per_centroid = 1
        refine = self.params["refine"]
        if refine is None:
            return base
        if refine == "flat":
            rows = faiss.IndexFlat(n_dims, metric)
        else:
            kind = {"fp16": faiss.ScalarQuantizer.QT_fp16, "sq8": faiss.ScalarQuantizer.QT_8bit}[refine]
            rows = faiss.IndexScalarQuantizer(n_dims, kind, metric)
        return faiss.IndexRefine(base, rows)  # its Python object keeps both parts alive

    def _faiss_types(self, faiss):
        return type(None), faiss.IndexIVFPQ if self.params["refine"] is None else faiss.IndexRefine

    def _base(self):
        if self.params["refine"] is None:
            return self._index
        return import_faiss().downcast_index(self._index.base_index)

    def _use(self, index):
        super()._use(index)
        self._rows = None  # FAISS owns a new index's rows until some are added

    def _refine_rows(self):
        """The re-ranking rows, taken over from FAISS the first time rows are added."""
        if self._rows is None:
            faiss = import_faiss()
            self._rows = RefineRows(faiss, faiss.downcast_index(self._index.refine_index))
        return self._rows

    def _append(self, rows):
        if self.params["refine"] is None:
            return super()._append(rows)
        stored, base = self._refine_rows(), self._base()
        start = len(stored)
        stored.append(rows)  # first: at 10M rows, the step most likely to run out of memory
        try:
            base.add(rows)
        except BaseException:
            stored.truncate(start)
            raise
        self._index.ntotal = base.ntotal

    def remove(self, indices):
        """Forget rows: the refine rows kept move down in place, and the
        codes are computed again from them a chunk at a time, so removing
        from 10M rows never holds the rows twice.

        Moved rows cannot move back: interrupted (Ctrl-C, memory), the index
        keeps the first kept rows whose codes were computed again, possibly
        none, and every part of it agrees on that number.
        """
        if self.params["refine"] is None:
            return super().remove(indices)
        faiss = import_faiss()
        stored, base = self._refine_rows(), self._base()
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
            self._index.ntotal = base.ntotal  # no position map to rebuild: see _after_add

    def _after_add(self):
        # IndexRefine reconstructs from its refine rows; only bare codes need the
        # position map (10M rows: 80 MB, rebuilt on every add).
        if self.params["refine"] is None:
            self._base().make_direct_map()

    def _refine_parameters(self, faiss, ivf, options):
        if self.params["refine"] is None:
            return ivf
        parameters = faiss.IndexRefineSearchParameters(k_factor=options["k_factor"], base_index_params=ivf)
        parameters.referenced_objects = [ivf]  # keep the inner parameters alive
        return parameters

    def _search_parameters(self, faiss, options):
        return self._refine_parameters(faiss, faiss.SearchParametersIVF(nprobe=self._n_probe(options)), options)

    def _exhaustive_parameters(self, faiss, options):
        return self._refine_parameters(faiss, faiss.SearchParametersIVF(nprobe=self.n_cells), options)

    @property
    def n_cells(self):
        return int(self._base().nlist)


#: ``algorithm`` value -> FAISS backend.
FAISS_INDEXES = {"flat": FlatIndex, "ivf": IVFIndex, "hnsw": HNSWIndex, "ivfpq": IVFPQIndex}

"""IVF-PQ's re-ranking rows, held where adding rows does not copy them all.

FAISS keeps a flat index's rows in one ``std::vector``, and growing it
copies every row already held: adding the ninth million rows of a 10M
gallery briefly holds the first eight twice (2 GB of half-precision rows).
:class:`ViewedRows` keeps them in a NumPy buffer grown with ``realloc``,
which on Linux (glibc) remaps the pages of a buffer this large instead of
copying them, and points FAISS's codes vector at it as a view
(``MaybeOwnedVector``, FAISS 1.11 and later). 10M rows then fit in 3.8 GB.

A view is FAISS's internals, not its API: the fields are SWIG struct members
and FAISS aborts the process if it resizes a view itself. So this module is
guarded: :func:`refine_rows` first checks, once per process, on a tiny
index, that this FAISS exposes what a view needs and that a viewed index
adds, searches, reconstructs, shrinks and serializes correctly; if anything
is missing it warns with what that costs and falls back to
:class:`FaissOwnedRows`, rows FAISS owns, changed only through FAISS's own
calls. Either way the index's rows change only through these classes, and
copies of the index go through ``faiss.serialize_index``, which copies the
rows out; ``faiss.clone_index`` is never called on a viewed index (its copy
would view the same buffer).
"""

from __future__ import annotations

import functools
import warnings

import numpy as np

_CHUNK = 65536  # rows moved at a time when rows are removed

__all__ = ["FaissOwnedRows", "ViewedRows", "refine_rows"]


class FaissOwnedRows:
    """The rows of a refine index, held and grown by FAISS (the fallback).

    Parameters
    ----------
    index : faiss.IndexFlatCodes
        The refine index (``IndexFlat`` or ``IndexScalarQuantizer``), trained.
    """

    def __init__(self, faiss, index):
        self._faiss = faiss
        self.index = index

    def __len__(self):
        return int(self.index.ntotal)

    def append(self, rows):
        self.index.add(rows)

    def keep(self, rows):
        """Keep only ``rows`` (strictly increasing); FAISS compacts them in place."""
        gone = np.ones(len(self), dtype=bool)
        gone[rows] = False
        self.index.remove_ids(self._faiss.IDSelectorBatch(np.flatnonzero(gone)))

    def truncate(self, n_rows):
        """Keep the first ``n_rows`` rows."""
        if n_rows < len(self):
            self.index.remove_ids(self._faiss.IDSelectorRange(n_rows, len(self)))


class ViewedRows:
    """The rows of a refine index in a NumPy buffer FAISS reads in place.

    Parameters
    ----------
    index : faiss.IndexFlatCodes
        The refine index, trained. Rows it already holds (an index just
        loaded) are copied into the buffer, and FAISS's copy is freed.
    point : callable
        ``point(faiss, index, buffer)`` makes the index's codes a view of
        ``buffer``: :func:`_view_by_api` or :func:`_view_by_fields`.
    """

    def __init__(self, faiss, index, point):
        self._faiss = faiss
        self._point = point
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
        self._point(self._faiss, self.index, self._codes)
        self.index.ntotal = len(self._codes)


def _view_by_api(faiss, index, buffer):
    """FAISS's public ``MaybeOwnedVector.create_view`` (1.15; its Python bindings may not take the owner)."""
    owner = faiss.MaybeOwnedVectorOwner()
    index.codes = faiss.MaybeOwnedVectorUInt8.create_view(faiss.swig_ptr(buffer), buffer.size, owner)


def _view_by_fields(faiss, index, buffer):
    """The view's fields written one by one, as ``create_view`` sets them."""
    codes, pointer = index.codes, faiss.swig_ptr(buffer)
    codes.is_owned = False
    codes.view_data = codes.c_ptr = pointer
    codes.view_size = codes.c_size = buffer.size


#: The fields of FAISS's MaybeOwnedVector that a view writes.
_VIEW_FIELDS = ("is_owned", "owned_data", "view_data", "view_size", "c_ptr", "c_size")


def _working_view(faiss):
    """``(point, None)`` with the way to view FAISS's rows that works here, or ``(None, why not)``.

    Each way is tried on a four-row index: it must add, grow, search,
    reconstruct, serialize and shrink exactly as the same index held by FAISS.
    """
    vector = getattr(faiss, "MaybeOwnedVectorUInt8", None)
    if vector is None:
        return None, f"faiss {faiss.__version__} has no MaybeOwnedVector (FAISS 1.11 added it)"
    failures = []
    for point in (_view_by_api, _view_by_fields):
        try:
            problem = _try_view(faiss, point)
        except Exception as exc:  # any failure of the internals means: do not use this way
            problem = f"{type(exc).__name__}: {exc}"
        if problem is None:
            return point, None
        failures.append(f"{point.__name__}: {problem}")
    return None, f"viewing rows failed on faiss {faiss.__version__} ({'; '.join(failures)})"


def _try_view(faiss, point):
    """Why ``point`` does not view rows correctly, or None."""
    missing = [name for name in _VIEW_FIELDS if not hasattr(faiss.MaybeOwnedVectorUInt8, name)]
    if point is _view_by_fields and missing:
        return f"MaybeOwnedVector has no {', '.join(missing)}"
    rows = np.random.default_rng(0).random((4, 8), dtype=np.float32)
    viewed = faiss.IndexScalarQuantizer(8, faiss.ScalarQuantizer.QT_fp16)
    owned = faiss.IndexScalarQuantizer(8, faiss.ScalarQuantizer.QT_fp16)
    stored = ViewedRows(faiss, viewed, point)
    stored.append(rows[:2])
    stored.append(rows[2:])  # grows: the buffer may move
    owned.add(rows)
    expected = owned.reconstruct_n(0, 4)
    copy = faiss.deserialize_index(faiss.serialize_index(viewed))
    checks = [
        np.array_equal(viewed.reconstruct_n(0, 4), expected),
        all(np.array_equal(a, b) for a, b in zip(viewed.search(rows, 2), owned.search(rows, 2))),
        np.array_equal(copy.reconstruct_n(0, 4), expected),
    ]
    stored.keep(np.array([1, 3]))
    checks.append(viewed.ntotal == 2 and np.array_equal(viewed.reconstruct_n(0, 2), expected[[1, 3]]))
    return None if all(checks) else "a viewed index answered differently from the same index held by FAISS"


@functools.lru_cache(maxsize=1)
def _view_here(faiss):
    """The way to view rows on this FAISS, checked once per process (None: FAISS holds them)."""
    point, reason = _working_view(faiss)
    if point is None:
        warnings.warn(
            f"IVF-PQ's re-ranking rows are held by FAISS, not by this library: {reason}. FAISS copies all "
            "of them each time they grow, so adding rows to a large index briefly needs twice their memory "
            "(at 10M rows of 128 values in half precision, 2.5 GB more). Upgrade faiss-cpu to avoid it.",
            RuntimeWarning,
            stacklevel=4,
        )
    return point


def refine_rows(faiss, index):
    """The holder of a refine index's rows: :class:`ViewedRows` where this FAISS allows it."""
    point = _view_here(faiss)
    return FaissOwnedRows(faiss, index) if point is None else ViewedRows(faiss, index, point)

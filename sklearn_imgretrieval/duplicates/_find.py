"""find_duplicates: near-duplicate images as groups of a radius graph.

Every image is embedded (CNN features) or hashed (perceptual hashes), the
pairs closer than a threshold are found with
:class:`~sklearn_imgretrieval.NearestImageRetriever`'s radius search, chunk
of queries by chunk, and the groups are the connected components of the
graph of those pairs (``scipy.sparse.csgraph``). Memory follows the number
of pairs found, never the square of the number of images.

The defaults come from ``benchmarks/bench_dedup.py`` (see the "Finding
duplicates" page of the documentation for the figures).
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from sklearn.utils.validation import check_is_fitted

from .. import _image_io
from .._batch_size import check_batch_size
from ..hashing import HASH_METHODS, ImageHasher, check_hash_size
from ._result import Duplicates

if TYPE_CHECKING:
    from sklearn.base import TransformerMixin

    from .._typing import Images

#: The CNN recipe: EfficientNet-Lite0 on the central 87.5% of the largest
#: centred square (borders are where crops and rotations differ most),
#: generalised-mean pooling, cosine distance.
CNN_INPUT_SIZE = 160
CNN_CROP_FRACTION = 0.875
#: Default ``max_distance`` of each method: cosine distance for "cnn", the
#: fraction of the hash's bits for hashes (10 of 64 bits for pHash).
DEFAULT_MAX_DISTANCE = {"cnn": 0.15, "phash": 10 / 64, "dhash": 6 / 64, "ahash": 2 / 64, "whash": 2 / 64}
_QUERY_CHUNK = 8192  # queries per radius search: the search's memory follows the chunk
_EMBED_CHUNK = 256  # images decoded at a time for the CNN


@dataclass(frozen=True)
class DuplicateSettings:
    """What ``find_duplicates`` will compute, resolved and checked before any work.

    Attributes
    ----------
    method : str or estimator
        ``"cnn"``, a hash method, ``"precomputed"`` or a fitted transformer.
    metric : str
        Distance between embeddings or codes (``"hamming"``: bits).
    max_distance : float or None
        Pairs at this distance or closer are duplicates; ``None``: no limit
        (with ``top_k``).
    top_k : int or None
        Each image's nearest duplicates kept, at most.
    hash_size : int
        Side of the hashes' bit grid.
    """

    method: object
    metric: str
    max_distance: object
    top_k: object
    hash_size: int


def _is_transformer(method):
    return hasattr(method, "transform")


def check_duplicate_settings(
    method="cnn",
    max_distance="auto",
    *,
    top_k=None,
    hash_size=8,
    metric="auto",
    robust=False,
    codes_dtype=None,
    batch_size=32,
):
    """Check ``find_duplicates``'s options and resolve its defaults, before any image is read.

    The command line calls this first, so that a bad option is reported
    before a folder is listed or any file is moved.

    Parameters
    ----------
    method, max_distance, top_k, hash_size, metric, robust, batch_size
        As for :func:`find_duplicates`.
    codes_dtype : numpy dtype, default=None
        With ``method="precomputed"``, the dtype of the embeddings or codes:
        uint8 rows are packed binary codes (Hamming distance).

    Returns
    -------
    settings : DuplicateSettings
        The options with ``"auto"`` resolved.
    """
    if isinstance(method, str):
        if method not in ("cnn", "precomputed", *HASH_METHODS):
            raise ValueError(
                f"method={method!r} is not a method: use 'cnn', one of {', '.join(map(repr, HASH_METHODS))}, "
                "'precomputed' (X holds embeddings or codes) or a fitted transformer such as a pipeline."
            )
    elif not _is_transformer(method):
        raise TypeError(
            f"method must be a name or a fitted transformer (an object with transform), got {type(method).__name__}."
        )
    if not isinstance(hash_size, numbers.Integral) or isinstance(hash_size, bool) or hash_size < 4:
        raise ValueError(f"hash_size must be a power of two, at least 4; got {hash_size!r}.")
    check_hash_size(hash_size)
    if method == "cnn":
        check_batch_size(batch_size, 3 * CNN_INPUT_SIZE**2)  # the network's RGB input
    if top_k is not None and (not isinstance(top_k, numbers.Integral) or isinstance(top_k, bool) or top_k < 1):
        raise ValueError(f"top_k must be None or a positive integer, got {top_k!r}.")
    if robust and not (method == "cnn" or method in HASH_METHODS):
        raise ValueError(
            "robust=True embeds or hashes the mirrored images too, which needs the images: use method='cnn' "
            "or a hash method, not precomputed embeddings or a transformer."
        )

    if method in HASH_METHODS:
        resolved_metric = "hamming"
    elif method == "cnn":
        resolved_metric = "cosine"
    elif metric != "auto":
        resolved_metric = metric
    elif method == "precomputed" and codes_dtype is not None and np.dtype(codes_dtype) == np.uint8:
        resolved_metric = "hamming"
    elif _is_transformer(method) and hasattr(method, "kneighbors") and hasattr(method, "steps"):
        resolved_metric = method.steps[-1][1].metric  # a retrieval pipeline: its retriever's metric
    elif isinstance(method.steps[-1][1] if hasattr(method, "steps") else method, ImageHasher):
        resolved_metric = "hamming"
    else:
        resolved_metric = "cosine"
    if metric != "auto" and metric != resolved_metric:
        raise ValueError(
            f"metric={metric!r} cannot be used with method={method!r}, which compares with "
            f"{resolved_metric!r}. Leave metric='auto'."
        )

    n_bits = hash_size * hash_size
    if isinstance(max_distance, str) and max_distance == "auto":
        if method == "cnn":
            max_distance = DEFAULT_MAX_DISTANCE["cnn"]
        elif method in HASH_METHODS:
            max_distance = round(DEFAULT_MAX_DISTANCE[method] * n_bits)
        else:
            raise ValueError(
                "max_distance='auto' is calibrated for method='cnn' and the hash methods only; "
                f"for {'precomputed embeddings' if method == 'precomputed' else 'a transformer'} give "
                f"max_distance= in units of the {resolved_metric!r} distance."
            )
    elif max_distance is None:
        if top_k is None:
            raise ValueError(
                "max_distance=None (no limit) needs top_k: without it every pair of images would be a duplicate."
            )
    elif not isinstance(max_distance, numbers.Real) or isinstance(max_distance, bool) or np.isnan(max_distance):
        raise ValueError(f"max_distance must be a number, 'auto' or None; got {max_distance!r}.")
    else:
        if method in HASH_METHODS:
            upper, unit = n_bits, f"number of differing bits of {n_bits}-bit hashes (hash_size={hash_size})"
        elif resolved_metric == "cosine":
            upper, unit = 2.0, "cosine distance"
        else:
            upper, unit = np.inf, f"{resolved_metric} distance"
        if not 0 <= max_distance <= upper:
            default = {"cnn": DEFAULT_MAX_DISTANCE["cnn"]}.get(method)
            if method in HASH_METHODS:
                default = round(DEFAULT_MAX_DISTANCE[method] * n_bits)
            raise ValueError(
                f"max_distance={max_distance!r} is out of range: the {unit} lies in [0, {upper:g}]."
                + (f" The default for method={method!r} is {default}." if default is not None else "")
            )
        max_distance = float(max_distance)
    return DuplicateSettings(method, resolved_metric, max_distance, top_k, int(hash_size))


# --------------------------------------------------------------- embedding
def _cnn_embed(items, *, robust, batch_size, n_jobs):
    """EfficientNet-Lite0 embeddings of the central crop of each image (and of its mirror image)."""
    from ..embedders import PretrainedCNNEmbedder  # Keras is imported here only
    from ..preprocessing import ImagePreprocessor

    side = round(CNN_INPUT_SIZE / CNN_CROP_FRACTION)
    offset = (side - CNN_INPUT_SIZE) // 2
    preprocessor = ImagePreprocessor(
        size=(side, side), crop="center", color_mode="rgb", flatten=False, n_jobs=n_jobs
    ).fit(items[:1])
    embedder = PretrainedCNNEmbedder(input_size=CNN_INPUT_SIZE, pooling="gem", batch_size=batch_size)
    embeddings, mirrored = [], []
    for start in range(0, len(items), _EMBED_CHUNK):
        images = preprocessor.transform(items[start : start + _EMBED_CHUNK])
        images = images[:, offset : offset + CNN_INPUT_SIZE, offset : offset + CNN_INPUT_SIZE]
        if not hasattr(embedder, "embedder_"):
            embedder.fit(images[:1])
        embeddings.append(embedder.transform(images))
        if robust:
            mirrored.append(embedder.transform(np.ascontiguousarray(images[:, :, ::-1])))
    return np.concatenate(embeddings), (np.concatenate(mirrored) if robust else None)


def _transform_in_chunks(transformer, X):
    """A fitted transformer's output on ``X``, a chunk of images at a time."""
    check_is_fitted(transformer)
    X = X if isinstance(X, np.ndarray) else list(X)
    chunks = range(0, len(X), _EMBED_CHUNK)
    return np.concatenate([np.asarray(transformer.transform(X[start : start + _EMBED_CHUNK])) for start in chunks])


def _embed(X, settings, *, robust, batch_size, n_jobs):
    """(rows, mirrored rows or None) that the search compares."""
    method = settings.method
    if isinstance(method, str) and method in HASH_METHODS:
        hasher = ImageHasher(method=method, hash_size=settings.hash_size, n_jobs=n_jobs)
        if robust:
            return hasher._hash(X, mirrored=True)
        return hasher.transform(X), None
    if isinstance(X, (str, os.PathLike)):
        raise TypeError(f"Expected a sequence of images, got a single {type(X).__name__}. Wrap it in a list.")
    if method == "cnn":
        items = X if isinstance(X, np.ndarray) else list(X)
        if len(items) == 0:
            raise ValueError("No images given: X is empty. Pass at least one image.")
        return _cnn_embed(items, robust=robust, batch_size=batch_size, n_jobs=n_jobs)
    if method == "precomputed":
        rows = np.asarray(X)
        if rows.ndim != 2 or len(rows) == 0:
            raise ValueError(
                f"method='precomputed' takes a 2-D array of embeddings or packed codes, one row per image; "
                f"got shape {rows.shape}."
            )
        return rows, None
    if hasattr(method, "kneighbors") and hasattr(method, "steps"):
        method = method[:-1]  # a retrieval pipeline: embed with every step but the retriever
    return _transform_in_chunks(method, X), None


# ------------------------------------------------------------------ search
def _neighbour_edges(retriever, queries, settings, *, leave_out_self, subset=None):
    """(query rows, gallery rows, distances) of every query's duplicates, chunk by chunk (among ``subset``)."""
    rows, cols, dists = [], [], []
    for start in range(0, len(queries), _QUERY_CHUNK):
        chunk = queries[start : start + _QUERY_CHUNK]
        own = np.arange(start, start + len(chunk))
        if settings.top_k is None:
            distances, indices = retriever.radius_neighbors(chunk, radius=settings.max_distance, subset=subset)
            lengths = np.fromiter((len(row) for row in indices), dtype=np.int64, count=len(indices))
            query = np.repeat(own, lengths)
            found = np.concatenate(list(indices)) if len(indices) else np.empty(0, np.int64)
            distance = np.concatenate(list(distances)) if len(distances) else np.empty(0)
        else:
            # One more than asked when the query is itself in the gallery.
            k = min(settings.top_k + leave_out_self, retriever.n_samples_fit_ if subset is None else len(subset))
            distances, indices = retriever.kneighbors(chunk, n_neighbors=k, subset=subset)
            query, found, distance = np.repeat(own, k), indices.ravel(), distances.ravel()
            if settings.max_distance is not None:
                keep = distance <= settings.max_distance
                query, found, distance = query[keep], found[keep], distance[keep]
        if leave_out_self:
            keep = found != query
            query, found, distance = query[keep], found[keep], distance[keep]
        rows.append(query)
        cols.append(found.astype(np.int64, copy=False))
        dists.append(distance.astype(np.float64, copy=False))
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(dists)


def _keep_nearest(rows, cols, dists, top_k):
    """Each (row, col) once at its smallest distance; with ``top_k``, each row's ``top_k`` nearest."""
    order = np.lexsort((cols, dists, rows))  # by row, then distance (then col for ties)
    rows, cols, dists = rows[order], cols[order], dists[order]
    pair_order = np.lexsort((dists, cols, rows))
    first = np.ones(len(rows), dtype=bool)
    first[1:] = (np.diff(rows[pair_order]) != 0) | (np.diff(cols[pair_order]) != 0)
    unique = np.zeros(len(rows), dtype=bool)
    unique[pair_order[first]] = True
    rows, cols, dists = rows[unique], cols[unique], dists[unique]
    if top_k is not None and len(rows):
        starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
        rank = np.arange(len(rows)) - np.repeat(starts, np.diff(np.r_[starts, len(rows)]))
        keep = rank < top_k
        rows, cols, dists = rows[keep], cols[keep], dists[keep]
    return rows, cols, dists


def _search_pairs(codes, mirror_codes, reference_codes, settings, *, algorithm, n_jobs):
    """Pairs (i, j), i < j, of item indices with their distances, nearest first."""
    from ..neighbors import NearestImageRetriever

    self_search = reference_codes is None
    gallery = codes if self_search else reference_codes
    retriever = NearestImageRetriever(metric=settings.metric, algorithm=algorithm, n_jobs=n_jobs).fit(gallery)
    searches = [codes] if mirror_codes is None else [codes, mirror_codes]
    edges = [_neighbour_edges(retriever, queries, settings, leave_out_self=self_search) for queries in searches]
    rows, cols, dists = (np.concatenate(parts) for parts in zip(*edges))
    rows, cols, dists = _keep_nearest(rows, cols, dists, settings.top_k)
    if self_search:
        first, second = np.minimum(rows, cols), np.maximum(rows, cols)
    else:
        first, second = rows, cols + len(codes)  # reference items come after the queries
    # A pair found from both ends (or from the mirror image) is kept once, at its smallest distance.
    first, second, dists = _keep_nearest(first, second, dists, None)
    order = np.lexsort((second, first, dists))
    return np.column_stack([first[order], second[order]]), dists[order]


def find_duplicates_in(retriever, max_distance, *, top_k=None, subset=None):
    """Groups of near-duplicates among the gallery of a fitted retriever, found with its own search.

    Each gallery row is a query, a chunk at a time, against the whole
    gallery: for a :class:`~sklearn_imgretrieval.ShardedRetriever` that is
    every shard against every shard, on the cluster, so duplicates held by
    different shards pair up. Nothing is decoded or embedded.

    Parameters
    ----------
    retriever : NearestImageRetriever or ShardedRetriever
        Fitted; its metric and algorithm are used as they are.
    max_distance : float
        Pairs at this distance or closer are duplicates, in its metric.
    top_k : int, default=None
        Keep at most each image's ``top_k`` nearest duplicates.
    subset : array-like of int, default=None
        Only these gallery rows take part (sorted row numbers), filtered
        inside each search.

    Returns
    -------
    duplicates : Duplicates
        Items are gallery row numbers (with ``subset``, positions in it).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_imgretrieval import NearestImageRetriever
    >>> from sklearn_imgretrieval.duplicates import find_duplicates_in
    >>> retriever = NearestImageRetriever(algorithm="flat").fit([[0.0], [0.05], [3.0]])
    >>> find_duplicates_in(retriever, 0.1).groups
    [array([0, 1])]
    """
    if not isinstance(max_distance, numbers.Real) or isinstance(max_distance, bool) or not 0 <= max_distance < np.inf:
        raise ValueError(f"max_distance must be a finite number of at least 0, got {max_distance!r}.")
    settings = DuplicateSettings("precomputed", retriever.metric, float(max_distance), top_k, 8)
    members = np.arange(retriever.n_samples_fit_) if subset is None else np.unique(np.asarray(subset, np.int64))
    n_items = len(members)
    rows, cols, dists = [], [], []
    for start in range(0, n_items, _QUERY_CHUNK):
        items = np.arange(start, min(start + _QUERY_CHUNK, n_items))
        query, found, distance = _neighbour_edges(
            retriever, retriever.gallery_rows(members[items]), settings, leave_out_self=False,
            subset=None if subset is None else members,
        )  # fmt: skip
        query, found = items[query], np.searchsorted(members, found)
        keep = found != query
        rows.append(query[keep]), cols.append(found[keep]), dists.append(distance[keep])
    rows, cols, dists = (np.concatenate(part) if part else np.empty(0) for part in (rows, cols, dists))
    rows, cols, dists = _keep_nearest(rows.astype(np.int64), cols.astype(np.int64), dists, top_k)
    first, second, dists = _keep_nearest(np.minimum(rows, cols), np.maximum(rows, cols), dists, None)
    order = np.lexsort((second, first, dists))
    pairs = np.column_stack([first[order], second[order]])
    return Duplicates(
        np.arange(n_items, dtype=object), n_items, pairs, dists[order], _components(pairs, n_items),
        method="precomputed", metric=retriever.metric, max_distance=float(max_distance), top_k=top_k,
    )  # fmt: skip


def _components(pairs, n_items):
    """Groups of two items or more, each sorted, ordered by their first item."""
    if len(pairs) == 0:
        return []
    graph = sp.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n_items, n_items))
    _, labels = connected_components(graph, directed=False)
    members = np.argsort(labels, kind="stable")
    sizes = np.bincount(labels)
    groups = [group for group in np.split(members, np.cumsum(sizes)[:-1]) if len(group) > 1]
    return sorted(groups, key=lambda group: group[0])


def _item_names(X, n):
    """Paths as strings when X holds paths, else positions."""
    if (isinstance(X, Sequence) and not isinstance(X, (str, bytes))) or getattr(X, "ndim", None) == 1:
        items = list(X)
        if items and all(_image_io.is_path(item) for item in items):
            return np.array([os.fspath(item) for item in items], dtype=object)
    return np.arange(n, dtype=object)


def find_duplicates(
    X: Images,
    reference: Images | None = None,
    *,
    method: Literal["cnn", "phash", "dhash", "ahash", "whash", "precomputed"] | TransformerMixin = "cnn",
    max_distance: float | Literal["auto"] | None = "auto",
    top_k: int | None = None,
    robust: bool = False,
    hash_size: int = 8,
    metric: str = "auto",
    algorithm: str = "auto",
    batch_size: int = 32,
    n_jobs: int | None = None,
) -> Duplicates:
    """Find groups of near-duplicate images.

    Images closer than ``max_distance`` are paired, and the groups are the
    connected components of those pairs: a chain of close pairs makes one
    group. Neighbours are found by
    :class:`~sklearn_imgretrieval.NearestImageRetriever`'s radius search,
    so memory grows with the number of pairs, never with the square of
    the number of images.

    Parameters
    ----------
    X : sequence of paths, PIL images, arrays; or array of embeddings
        The images (anything :class:`~sklearn_imgretrieval.ImagePreprocessor`
        takes), or with ``method="precomputed"`` one row per image of
        embeddings or packed codes.
    reference : same as X, default=None
        A reference set: find which images of ``X`` have duplicates in it
        (for instance new photos against an archive). Pairs then join an
        image of ``X`` with a reference image; images within ``X`` are not
        compared with each other.
    method : {"cnn", "phash", "dhash", "ahash", "whash", "precomputed"} or transformer, default="cnn"
        ``"cnn"``: EfficientNet-Lite0 features (ImageNet weights, offline)
        of the central 87.5% of each image's centred square at 160x160,
        generalised-mean pooled, compared by cosine distance; finds
        crops, rotations, re-encodings and brightness changes. A hash
        method: :class:`~sklearn_imgretrieval.ImageHasher` codes compared
        by differing bits; much faster, finds re-encodings and resizes but
        few crops or rotations. ``"precomputed"``: ``X`` (and
        ``reference``) hold embeddings or uint8 packed codes. A fitted
        transformer (a pipeline of preprocessor and embedder; for a
        :class:`~sklearn_imgretrieval.RetrievalPipeline` every step but
        the retriever) embeds the images.
    max_distance : float, "auto" or None, default="auto"
        Pairs at this distance or closer are duplicates. ``"auto"``: 0.15
        cosine distance for ``"cnn"``; for hashes 10 of 64 bits for pHash,
        6 for dHash, 2 for aHash and wHash, scaled to the hash's bits.
        Measured on ``benchmarks/bench_dedup.py``'s set (photos with
        crops, half-size, JPEG quality 25, 5 degree rotation, mirror and
        brightness copies among Fashion-MNIST distractors); required for
        precomputed embeddings and transformers. ``None``: no limit, with
        ``top_k``.
    top_k : int, default=None
        Keep at most each image's ``top_k`` nearest duplicates (within
        ``max_distance``, unless it is ``None``). Pairs are symmetric, so an
        image may still be in more pairs through other images' lists.
    robust : bool, default=False
        Also compare each image's mirror image, so that horizontally
        flipped copies are found (hashes find none of them; CNN features
        most). Doubles the CNN's work; costs little for hashes.
    hash_size : int, default=8
        Side of the hashes' bit grid, a power of two (8: 64 bits).
    metric : str, default="auto"
        Distance for precomputed embeddings and transformers: ``"auto"`` is
        Hamming for uint8 codes and for an ImageHasher (or a pipeline
        ending in one), a retrieval pipeline's own metric, and cosine
        otherwise.
    algorithm : str, default="auto"
        :class:`~sklearn_imgretrieval.NearestImageRetriever`'s search
        algorithm: ``"auto"`` is exact; ``"ivf"`` is approximate and
        faster on millions of images.
    batch_size : int, default=32
        Images per batch through the CNN; a batch may take at most 1 GiB
        (3,495 images at 160x160).
    n_jobs : int, default=None
        Threads decoding images and searching; ``-1`` means all cores.

    Returns
    -------
    duplicates : Duplicates
        Groups, pairs and distances; ``to_dict()`` gives imagededup's
        ``{path: [duplicates]}`` format and ``to_frame()`` a DataFrame.

    See Also
    --------
    ImageHasher : The perceptual hashes.
    NearestImageRetriever : The radius search behind the pairs.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_imgretrieval import find_duplicates
    >>> rng = np.random.default_rng(0)
    >>> photos = rng.integers(0, 256, size=(3, 64, 64), dtype=np.uint8)
    >>> brighter = np.clip(photos[0].astype(int) + 20, 0, 255).astype(np.uint8)
    >>> found = find_duplicates([*photos, brighter], method="phash")
    >>> found.groups
    [array([0, 3])]
    >>> found.to_dict(scores=True)
    {0: [(3, 0.0)], 1: [], 2: [], 3: [(0, 0.0)]}
    """
    if isinstance(X, (str, os.PathLike)):
        raise TypeError(f"Expected a sequence of images, got a single {type(X).__name__}. Wrap it in a list.")
    codes_dtype = np.asarray(X).dtype if method == "precomputed" else None
    settings = check_duplicate_settings(
        method,
        max_distance,
        top_k=top_k,
        hash_size=hash_size,
        metric=metric,
        robust=robust,
        codes_dtype=codes_dtype,
        batch_size=batch_size,
    )
    codes, mirror_codes = _embed(X, settings, robust=robust, batch_size=batch_size, n_jobs=n_jobs)
    reference_codes: Any = None
    if reference is not None:
        reference_codes, _ = _embed(reference, settings, robust=False, batch_size=batch_size, n_jobs=n_jobs)
        if reference_codes.shape[1] != codes.shape[1] or reference_codes.dtype != codes.dtype:
            raise ValueError(
                f"The reference set gives rows of {reference_codes.shape[1]} {reference_codes.dtype} values but X "
                f"gives {codes.shape[1]} {codes.dtype}; embed both the same way."
            )
    n_items = len(codes) + (0 if reference_codes is None else len(reference_codes))
    if reference_codes is None and len(codes) < 2:
        pairs, distances = np.empty((0, 2), dtype=np.int64), np.empty(0)
    else:
        pairs, distances = _search_pairs(
            codes, mirror_codes, reference_codes, settings, algorithm=algorithm, n_jobs=n_jobs
        )
    items = _item_names(X, len(codes))
    if reference is not None:
        items = np.concatenate([items, _item_names(reference, len(reference_codes))])
    return Duplicates(
        items,
        len(codes),
        pairs,
        distances,
        _components(pairs, n_items),
        method=settings.method,
        metric=settings.metric,
        max_distance=settings.max_distance,
        top_k=settings.top_k,
    )

"""ShardedRetriever: one gallery in shards, each a NearestImageRetriever, searched in parallel and merged exactly.

The gallery's rows are split into shards. Each shard is a fitted
:class:`NearestImageRetriever` held by a :class:`Shard`: in this process,
or on a Dask worker as an actor (``client.submit(Shard, ..., actor=True)``),
whose methods run where the shard's memory is, without going through the
scheduler (about 1 ms a call here, against several for a task) and without
the shard ever being copied. Every batch of queries goes to every shard at
once; each answers with its own nearest rows, which are mapped to global row
numbers and merged: the ``k`` nearest of the union are the ``k`` nearest of
the gallery, so the merge is exact whenever the shards' distances compare.
They do: structures that train (IVF cells, PQ codebooks) are trained once,
on a sample of the whole gallery, and every shard starts from that trained,
empty structure.

Rows are numbered as in one retriever: in the order they were added,
renumbered after a removal. ``partial_fit`` sends new rows to the shard
with the fewest rows (or opens a shard when every shard holds
``shard_size``). :func:`~sklearn_imgretrieval.save` writes each shard to a
file of its own, beside the main file; :func:`~sklearn_imgretrieval.load`
with ``client=`` puts them back onto the cluster's workers, which read them
from the same path. A shard whose worker dies is loaded again from its file
on another worker; without a file, a search says which shard is lost, or
answers from the others only when ``allow_partial=True``.
"""

from __future__ import annotations

import copy
import numbers
import secrets
import warnings
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin, clone
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from .._dask import is_dask_array
from .._sklearn_compat import HasMethods, Interval, _fit_context, validate_data
from ..persistence import PART_NAME, load, loading_from, save, saving_to
from ._answers import NeighborsAnswers, check_labels, label_kind
from ._registry import BACKENDS, resolve_algorithm
from ._retriever import NearestImageRetriever

__all__ = ["Shard", "ShardedRetriever"]

_QUERY_CHUNK = 8192  # gallery rows re-queried at a time by the leave-one-out searches
_CHANGES = frozenset({"add", "remove"})  # calls after which a shard's file no longer holds the shard


class Shard:
    """One shard: a NearestImageRetriever and the calls the sharded retriever makes on it.

    Built in this process or on a Dask worker (as an actor). Every method
    returns plain data, so that it travels back as it is.

    Parameters
    ----------
    retriever : NearestImageRetriever
        Fitted (maybe trained and empty), or unfitted: then ``add`` fits it.
    n_jobs : int or None, default=None
        Threads of the shard's searches; on a worker, that worker's threads.
    """

    def __init__(self, retriever, n_jobs=None):
        self.retriever = retriever
        if n_jobs is not None:
            self.retriever.set_params(n_jobs=n_jobs)

    @classmethod
    def from_file(cls, path, n_jobs=None):
        """The shard saved at ``path``, read with the safe loader (an fsspec URL is copied locally first)."""
        path = str(path)
        if "://" in path:
            import tempfile

            import fsspec

            with tempfile.TemporaryDirectory() as folder, fsspec.open(path, "rb") as source:
                local = f"{folder}/shard.skops"
                with open(local, "wb") as target:
                    target.write(source.read())
                return cls(load(local), n_jobs)
        return cls(load(path), n_jobs)

    def add(self, X, y=None):
        if hasattr(self.retriever, "backend_"):
            self.retriever.partial_fit(X, y)
        else:
            self.retriever.fit(X, y)
        return self.retriever.n_samples_fit_

    def kneighbors(self, X, k, subset=None):
        return self.retriever.kneighbors(X, k, subset=subset)

    def radius_neighbors(self, X, radius, subset=None):
        return self.retriever.radius_neighbors(X, radius, subset=subset)

    def remove(self, rows):
        self.retriever.remove(rows)
        return self.retriever.n_samples_fit_

    def gallery_rows(self, rows):
        return self.retriever.gallery_rows(rows)

    def nbytes(self):
        return self.retriever.nbytes_

    def n_samples(self):
        return self.retriever.n_samples_fit_ if hasattr(self.retriever, "backend_") else 0

    def save(self, path):
        save(self.retriever, path)
        return str(path)

    def state(self):
        """The retriever, for a copy of the whole sharded retriever in one process."""
        return self.retriever


class _Done:
    """A value already computed, answering as a Dask future does."""

    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value


class _Failed:
    """A call that failed before it was sent (its worker is already known lost)."""

    def __init__(self, error):
        self.error = error

    def result(self):
        raise self.error


def _send(handle, method, args):
    try:
        return handle.call(method, *args)
    except Exception as exc:  # a lost worker's actor refuses calls at once
        return _Failed(exc)


class _Here:
    """A shard in this process."""

    worker = None

    def __init__(self, shard, file=None):
        self.shard, self.file = shard, file
        self.changed_since_saved = False

    def call(self, method, *args):
        return _Done(getattr(self.shard, method)(*args))


class _OnWorker:
    """A shard held by a Dask actor on one worker.

    Dask binds an actor handle to the current client; the library's clients
    are not made the default one (``set_as_default=False``), so each call
    names its client.
    """

    def __init__(self, client, actor, worker, file=None):
        self.client, self.actor, self.worker, self.file = client, actor, worker, file
        self.changed_since_saved = False

    def call(self, method, *args):
        with self.client.as_current():
            return getattr(self.actor, method)(*args)


def _actor(client, build, *args, worker):
    """A new actor ``build(*args)`` on ``worker``, its handle bound to ``client``."""
    with client.as_current():
        return client.submit(build, *args, actor=True, workers=[worker], pure=False).result()


def _workers(client):
    """The cluster's workers and their threads, in a stable order."""
    workers = client.scheduler_info()["workers"]
    if not workers:
        raise RuntimeError("The Dask cluster has no workers: start some (dask worker ADDRESS), then try again.")
    return sorted((address, info.get("nthreads", 1)) for address, info in workers.items())


def _merge(parts, k):
    """The ``k`` nearest of each query from the shards' answers (distances, global rows), nearest first.

    Ties are ordered by row number, as one exact index orders them.
    """
    distances = np.concatenate([d for d, _ in parts], axis=1)
    indices = np.concatenate([i for _, i in parts], axis=1)
    order = np.lexsort((indices, distances), axis=-1)[:, :k]
    return np.take_along_axis(distances, order, axis=1), np.take_along_axis(indices, order, axis=1)


class ShardedRetriever(NeighborsAnswers, ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """A :class:`NearestImageRetriever` split into shards, in this process or on a Dask cluster.

    The gallery is split into ``n_shards`` parts, each indexed by a copy of
    ``retriever`` (same algorithm and parameters). Queries go to every shard
    in parallel, and the answers are merged exactly: ``kneighbors``,
    ``radius_neighbors``, graphs, ``predict`` and ``score`` answer as one
    retriever over the whole gallery would, with the same row numbers.
    Structures that train (IVF, IVF-PQ) are trained once, on a sample of the
    whole gallery, so that every shard's distances compare.

    With a Dask ``client`` each shard lives in one worker's memory; without,
    the shards are searched one after another in this process (tests, and
    galleries that fit one machine).

    Parameters
    ----------
    retriever : NearestImageRetriever, default=None
        The retriever each shard copies (unfitted); ``None`` is
        ``NearestImageRetriever()``. Its ``n_neighbors``, ``radius``,
        ``metric`` and ``mode`` are the sharded retriever's.
    n_shards : int, default=2
        Shards the rows of ``fit`` are split into.
    shard_size : int, default=None
        Most rows a shard takes from ``partial_fit``; when every shard holds
        that many, a new shard opens. ``None``: no limit.
    client : dask.distributed.Client, default=None
        Hold the shards on this cluster's workers (one actor per shard,
        spread over the workers). Not stored by ``save``.
    allow_partial : bool, default=False
        When a shard is lost (its worker died and it has no file to load
        again from), answer from the other shards, with a warning, instead
        of raising.
    random_state : int, RandomState instance or None, default=None
        Picks the sample the shared structure is trained on.

    Attributes
    ----------
    shards_ : list
        Where each shard is (in this process, or an actor on a worker).
    shard_rows_ : list of ndarray of int
        The gallery row numbers each shard holds, in its own order.
    trained_ : NearestImageRetriever or None
        The trained, empty retriever shards start from (None when the
        algorithm trains nothing).
    fit_algorithm_ : str
        The algorithm of the shards; ``"auto"`` resolved.
    gallery_labels_ : ndarray or None
        Labels given to ``fit`` and ``partial_fit``.
    n_samples_fit_ : int
        Number of gallery items.
    n_features_in_ : int
        Number of features of the gallery embeddings.

    See Also
    --------
    NearestImageRetriever : One index in one process.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_imgretrieval import NearestImageRetriever, ShardedRetriever
    >>> X = np.random.default_rng(0).random((100, 8), dtype=np.float32)
    >>> sharded = ShardedRetriever(NearestImageRetriever(n_neighbors=3), n_shards=4).fit(X)
    >>> one = NearestImageRetriever(n_neighbors=3).fit(X)
    >>> bool((sharded.kneighbors(X[:5])[1] == one.kneighbors(X[:5])[1]).all())
    True
    >>> [len(rows) for rows in sharded.shard_rows_]
    [25, 25, 25, 25]
    """

    _parameter_constraints = {
        "retriever": [HasMethods(["fit", "kneighbors", "gallery_rows"]), None],
        "n_shards": [Interval(numbers.Integral, 1, None, closed="left")],
        "shard_size": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "client": "no_validation",
        "allow_partial": ["boolean"],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        retriever: NearestImageRetriever | None = None,
        *,
        n_shards: int = 2,
        shard_size: int | None = None,
        client: Any = None,
        allow_partial: bool = False,
        random_state: Any = None,
    ) -> None:
        self.retriever = retriever
        self.n_shards = n_shards
        self.shard_size = shard_size
        self.client = client
        self.allow_partial = allow_partial
        self.random_state = random_state

    def __sklearn_clone__(self):
        # A Dask client is a connection, not a parameter to copy: the clone shares it.
        params = self.get_params(deep=False)
        params["retriever"] = None if self.retriever is None else clone(self.retriever)
        return type(self)(**params)

    # ------------------------------------------------------ what it answers with
    def _template(self):
        return NearestImageRetriever() if self.retriever is None else self.retriever

    @property
    def n_neighbors(self):
        return self._template().n_neighbors

    @property
    def radius(self):
        return self._template().radius

    @property
    def mode(self):
        return self._template().mode

    @property
    def metric(self):
        return self._template().metric

    def params_for_gallery(self, n_samples: int) -> dict[str, Any]:
        """The shards' parameters that ``"auto"`` stands for in a gallery of ``n_samples`` rows.

        As :meth:`NearestImageRetriever.params_for_gallery`, named for
        :meth:`set_params` (``retriever__n_cells``).

        Parameters
        ----------
        n_samples : int
            Rows the whole gallery will hold.

        Returns
        -------
        params : dict
            Parameters to give :meth:`set_params`.
        """
        return {f"retriever__{name}": value for name, value in self._template().params_for_gallery(n_samples).items()}

    def rows_to_train(self, n_samples: int) -> int:
        """Rows the first :meth:`partial_fit` must hold to train for a gallery of ``n_samples`` rows.

        Parameters
        ----------
        n_samples : int
            Rows the whole gallery will hold.

        Returns
        -------
        n_rows : int
            As :meth:`NearestImageRetriever.rows_to_train`, and at least one per shard.
        """
        return min(n_samples, max(self._template().rows_to_train(n_samples), self.n_shards))

    # ------------------------------------------------------------------ input
    def _validate_rows(self, X, y=None, *, reset):
        template = self._template()
        algorithm = resolve_algorithm(template.algorithm, template.metric) if reset else self.fit_algorithm_
        dtype = BACKENDS[algorithm].input_dtype(template.metric)
        if y is None:
            X = validate_data(self, X, reset=reset, dtype=dtype)
        else:
            X, y = validate_data(self, X, y, reset=reset, dtype=dtype)
            y = check_labels(y, "Labels y")
        if dtype is None and X.dtype != np.uint8:
            raise ValueError(
                f"metric={template.metric!r} compares packed binary codes, uint8 rows; got dtype {X.dtype}. "
                "Pack the bits with np.packbits(bits, axis=1)."
            )
        return X, y

    def _check_query(self, X):
        X, _ = self._validate_rows(X, reset=False)
        return X

    # ---------------------------------------------------------------- shards
    def _new_shard(self, number):
        """A new, empty shard (the trained structure, or an unfitted copy of the retriever)."""
        retriever = copy.deepcopy(self.trained_) if self.trained_ is not None else clone(self.retriever_)
        if self.client is None:
            return _Here(Shard(retriever))
        workers = _workers(self.client)
        address, threads = workers[number % len(workers)]
        return _OnWorker(self.client, _actor(self.client, Shard, retriever, threads, worker=address), address)

    def _reload(self, number):
        """Shard ``number`` loaded again from its file, on a worker that is alive."""
        handle = self.shards_[number]
        workers = [(a, t) for a, t in _workers(self.client) if a != handle.worker] or _workers(self.client)
        address, threads = workers[number % len(workers)]
        actor = _actor(self.client, Shard.from_file, handle.file, threads, worker=address)
        self.shards_[number] = _OnWorker(self.client, actor, address, handle.file)

    def _gather(self, calls):
        """``{shard: result}`` of ``(shard, method, args)`` calls, made on every shard before any is awaited.

        A shard whose worker is lost is loaded again from its file and asked
        again; without a file it is an error naming the shard, or, with
        ``allow_partial``, left out with a warning.
        """
        futures = [(number, method, args, _send(self.shards_[number], method, args)) for number, method, args in calls]
        results = {}
        for number, method, args, future in futures:
            try:
                results[number] = future.result()
            except Exception as exc:  # a lost worker surfaces as one of several Dask errors
                if self.client is None:
                    raise
                results.update(self._after_loss(number, method, args, exc))
        for number, method, _ in calls:
            if method in _CHANGES and number in results:
                # Reloading a file older than the shard would silently lose this change.
                handle = self.shards_[number]
                handle.changed_since_saved, handle.file = handle.file is not None or handle.changed_since_saved, None
        return results

    def _after_loss(self, number, method, args, error):
        if self.shards_[number].file is not None:
            self._reload(number)
            return {number: self.shards_[number].call(method, *args).result()}
        why = "it changed since it was last saved" if self.shards_[number].changed_since_saved else "it was never saved"
        message = (
            f"Shard {number} of {len(self.shards_)} ({len(self.shard_rows_[number])} rows) did not answer "
            f"({type(error).__name__}: {error}); {why}, so it cannot be loaded again. "
        )
        if not self.allow_partial:
            raise RuntimeError(
                message + "Save the retriever (or its index) so that a lost shard can be reloaded, "
                "or pass allow_partial=True to answer from the other shards."
            ) from error
        warnings.warn(message + "Answering from the other shards (allow_partial=True).", RuntimeWarning, stacklevel=4)
        return {}

    # ------------------------------------------------------------------- fit
    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X: ArrayLike, y: ArrayLike | None = None) -> ShardedRetriever:
        """Split the gallery ``X`` into shards and index each; keep its labels ``y`` when given.

        Parameters
        ----------
        X : array-like or dask array of shape (n_gallery, n_features)
            Gallery embeddings. A dask array is split by its row blocks,
            each indexed on the worker that computes it, never gathered here.
        y : array-like of shape (n_gallery,), default=None
            Gallery labels, needed by ``predict`` and ``score``.

        Returns
        -------
        self : ShardedRetriever
            The fitted retriever.
        """
        return self._fit(X, y)

    def _fit(self, X, y):
        if is_dask_array(X):
            return self._fit_dask(X, y)
        X, y = self._validate_rows(X, y, reset=True)
        n_rows = len(X)
        if n_rows < self.n_shards:
            raise ValueError(
                f"n_samples={n_rows} rows cannot fill n_shards={self.n_shards} shards; use n_shards <= {n_rows}."
            )
        self._train(X, y, n_rows)
        parts = np.array_split(np.arange(n_rows), self.n_shards)
        self.shards_ = [self._new_shard(number) for number in range(self.n_shards)]
        self.shard_rows_ = [np.asarray(part, dtype=np.int64) for part in parts]
        self._gather([(s, "add", (X[part], None if y is None else y[part])) for s, part in enumerate(parts)])
        self.gallery_labels_ = y
        self.n_samples_fit_ = n_rows
        return self

    def _train(self, X, y, n_gallery):
        """Train the structure every shard starts from on a sample of ``X`` (rows of a gallery of
        ``n_gallery``), or nothing when the algorithm trains nothing."""
        template = clone(self._template())
        self.fit_algorithm_ = resolve_algorithm(template.algorithm, template.metric)
        template.set_params(**template.params_for_gallery(n_gallery))
        n_train = min(len(X), template.rows_to_train(n_gallery))
        if n_train <= 1:
            self.trained_ = None
            self.retriever_ = template
            return
        sample = np.sort(check_random_state(self.random_state).choice(len(X), n_train, replace=False))
        trained = template.fit(X[sample], None if y is None else y[sample])
        self.trained_ = trained.remove(np.arange(n_train))
        self.retriever_ = template

    def _fit_dask(self, X, y):
        """Fit from a dask array: a sample trains the shared structure; blocks go to shards on the workers."""
        if self.client is None:
            raise ValueError("A dask array is indexed on a Dask cluster: give ShardedRetriever(client=...).")
        if X.ndim != 2:
            raise ValueError(f"Expected a 2-D dask array of embeddings, got {X.ndim} dimensions.")
        n_rows, n_features = X.shape
        template = self._template()
        sample_size = min(n_rows, max(template.rows_to_train(n_rows), self.n_shards, 1))
        sample = np.sort(check_random_state(self.random_state).choice(n_rows, sample_size, replace=False))
        sample_rows = X[sample].compute()  # a sample only, to train the shared structure
        sample_labels = None if y is None else np.asarray(y)[sample]
        self._validate_rows(sample_rows, sample_labels, reset=True)
        self._train(sample_rows, sample_labels, n_rows)
        blocks = X.to_delayed().ravel()
        starts = np.concatenate([[0], np.cumsum(X.chunks[0])])
        self.shards_ = [self._new_shard(number) for number in range(self.n_shards)]
        self.shard_rows_ = [np.empty(0, np.int64) for _ in range(self.n_shards)]
        labels = None if y is None else np.asarray(y)
        # Blocks go to the shards in rounds of one block per shard: each shard adds its blocks in
        # the order its row numbers list them, and a worker holds one block at a time.
        for first in range(0, len(blocks), self.n_shards):
            tasks = []
            for position in range(first, min(first + self.n_shards, len(blocks))):
                number, handle = position % self.n_shards, self.shards_[position % self.n_shards]
                rows = np.arange(starts[position], starts[position + 1])
                self.shard_rows_[number] = np.concatenate([self.shard_rows_[number], rows])
                computed = self.client.compute(blocks[position], workers=[handle.worker])
                block_labels = None if labels is None else labels[rows]
                # the block goes from the worker that computes it to the shard's actor
                tasks.append(
                    self.client.submit(
                        _add_block, handle.actor, computed, block_labels, workers=[handle.worker], pure=False
                    )
                )
            self.client.gather(tasks)
        self.gallery_labels_ = labels
        self.n_samples_fit_ = n_rows
        self.n_features_in_ = n_features
        return self

    def partial_fit(self, X: ArrayLike, y: ArrayLike | None = None) -> ShardedRetriever:
        """Add images to the gallery: to the shard with the fewest rows, or to new shards when all are full.

        The first call fits (splitting ``X`` into ``n_shards``). Later calls
        keep the trained structure; row numbers continue from ``n_samples_fit_``.

        Parameters
        ----------
        X : array-like of shape (n_new, n_features)
            Embeddings to add.
        y : array-like of shape (n_new,), default=None
            Their labels: required if the gallery has labels, refused if not.

        Returns
        -------
        self : ShardedRetriever
            The retriever, with the rows added.
        """
        if not hasattr(self, "shards_"):
            self._validate_params()
            return self._fit(X, y)
        X, y = self._validate_rows(X, y, reset=False)
        if (y is None) != (self.gallery_labels_ is None):
            raise ValueError(
                f"The gallery was fitted {'with' if self.gallery_labels_ is not None else 'without'} labels; "
                "give the new rows labels the same way."
            )
        if y is not None and label_kind(y) != label_kind(self.gallery_labels_):
            raise ValueError("The new labels are not of the gallery labels' type; use one type for every label.")
        calls, start = [], 0
        sizes = [len(rows) for rows in self.shard_rows_]
        while start < len(X):
            number = int(np.argmin(sizes))
            room = len(X) - start if self.shard_size is None else self.shard_size - sizes[number]
            if room <= 0:  # every shard is full: open one
                self.shards_.append(self._new_shard(len(self.shards_)))
                self.shard_rows_.append(np.empty(0, np.int64))
                sizes.append(0)
                continue
            part = np.arange(start, start + min(room, len(X) - start))
            calls.append((number, "add", (X[part], None if y is None else y[part])))
            self.shard_rows_[number] = np.concatenate([self.shard_rows_[number], self.n_samples_fit_ + part])
            sizes[number] += len(part)
            start += len(part)
        for call in calls:  # one shard may take several parts: in order
            self._gather([call])
        if y is not None:
            self.gallery_labels_ = np.concatenate([self.gallery_labels_, y])
        self.n_samples_fit_ += len(X)
        return self

    def remove(self, indices: ArrayLike) -> ShardedRetriever:
        """Forget gallery items by their row numbers; later rows move down, as in one retriever.

        Parameters
        ----------
        indices : array-like of int
            Gallery row numbers, each in ``[0, n_samples_fit_)``.

        Returns
        -------
        self : ShardedRetriever
            The retriever without those items.
        """
        check_is_fitted(self)
        indices = np.unique(np.asarray(indices, dtype=np.int64).ravel())
        if len(indices) and (indices[0] < 0 or indices[-1] >= self.n_samples_fit_):
            raise ValueError(
                f"Gallery indices must be in [0, {self.n_samples_fit_}); got {indices[0]} to {indices[-1]}."
            )
        if not len(indices):
            return self
        gone = np.zeros(self.n_samples_fit_, dtype=bool)
        gone[indices] = True
        calls = [(s, "remove", (np.flatnonzero(gone[rows]),)) for s, rows in enumerate(self.shard_rows_)]
        self._gather([call for call in calls if len(call[2][0])])
        shift = np.cumsum(gone)  # rows removed up to each row
        self.shard_rows_ = [rows[~gone[rows]] - shift[rows[~gone[rows]]] for rows in self.shard_rows_]
        if self.gallery_labels_ is not None:
            self.gallery_labels_ = self.gallery_labels_[~gone]
        self.n_samples_fit_ -= len(indices)
        return self

    # ---------------------------------------------------------------- search
    def _check_n_neighbors(self, n_neighbors, leave_one_out, *, asked=None, subset=None):
        return NearestImageRetriever._check_n_neighbors(self, n_neighbors, leave_one_out, asked=asked, subset=subset)

    def _local_subsets(self, subset):
        """Each shard's own rows of a global ``subset`` (None: every row)."""
        if subset is None:
            return [None] * len(self.shards_)
        member = np.zeros(self.n_samples_fit_, dtype=bool)
        member[subset] = True
        return [np.flatnonzero(member[rows]) for rows in self.shard_rows_]

    def _search(self, rows, k, subset):
        local = self._local_subsets(subset)
        calls = []
        for number, shard_rows in enumerate(self.shard_rows_):
            available = len(shard_rows) if local[number] is None else len(local[number])
            if available:
                calls.append((number, "kneighbors", (rows, min(k, available), local[number])))
        answers = self._gather(calls)
        if not answers:
            raise RuntimeError(f"None of the {len(self.shards_)} shards answered; nothing to merge.")
        parts = [(d, self.shard_rows_[s][i]) for s, (d, i) in answers.items()]
        if sum(part[1].shape[1] for part in parts) < k:  # shards were lost (allow_partial)
            k = sum(part[1].shape[1] for part in parts)
        return _merge(parts, k)

    def gallery_rows(self, indices: ArrayLike | None = None) -> np.ndarray:
        """The gallery's rows as the shards store them, gathered here.

        Parameters
        ----------
        indices : array-like of int, default=None
            Gallery row numbers; ``None`` reads them all.

        Returns
        -------
        rows : ndarray of shape (n_rows, n_features)
            In the order of ``indices``.
        """
        check_is_fitted(self)
        items = np.arange(self.n_samples_fit_) if indices is None else np.asarray(indices, dtype=np.int64).ravel()
        if len(items) and (items.min() < 0 or items.max() >= self.n_samples_fit_):
            raise ValueError(f"Gallery indices must be in [0, {self.n_samples_fit_}); got {items.tolist()[:10]}.")
        shard_of = np.empty(self.n_samples_fit_, dtype=np.int64)
        local_of = np.empty(self.n_samples_fit_, dtype=np.int64)
        for number, rows in enumerate(self.shard_rows_):
            shard_of[rows], local_of[rows] = number, np.arange(len(rows))
        calls = [(s, "gallery_rows", (local_of[items[shard_of[items] == s]],)) for s in np.unique(shard_of[items])]
        answers = self._gather([(int(s), method, args) for s, method, args in calls])
        first = next(iter(answers.values())) if answers else np.empty((0, self.n_features_in_), np.float32)
        out = np.empty((len(items), first.shape[1]), dtype=first.dtype)
        for number, rows in answers.items():
            out[shard_of[items] == number] = rows
        return out

    @property
    def nbytes_(self) -> int:
        """Bytes every shard's index holds, summed (see :attr:`NearestImageRetriever.nbytes_`)."""
        check_is_fitted(self)
        return int(sum(self._gather([(s, "nbytes", ()) for s in range(len(self.shards_))]).values()))

    def kneighbors(
        self,
        X: ArrayLike | None = None,
        n_neighbors: int | None = None,
        return_distance: bool = True,
        *,
        subset: ArrayLike | None = None,
    ) -> tuple[np.ndarray, np.ndarray] | np.ndarray:
        """Find the nearest gallery items of each query, across every shard.

        Parameters
        ----------
        X : array-like of shape (n_queries, n_features), default=None
            Query embeddings. ``None`` queries the gallery itself, leaving
            each item out of its own list.
        n_neighbors : int, default=None
            Neighbours per query; the retriever's ``n_neighbors`` by default.
        return_distance : bool, default=True
            Whether to return the distances as well.
        subset : array-like of bool or int, default=None
            Search only these gallery rows (a mask or row numbers); each
            shard filters inside its own search.

        Returns
        -------
        distances : ndarray of shape (n_queries, n_neighbors)
            Only when ``return_distance=True``.
        indices : ndarray of shape (n_queries, n_neighbors)
            Gallery row numbers of the neighbours, nearest first.
        """
        check_is_fitted(self)
        subset = self._check_subset(subset)
        k = self._check_n_neighbors(n_neighbors, leave_one_out=X is None, subset=subset)
        if X is not None:
            distances, indices = self._search(self._check_query(X), k, subset)
        else:
            distances, indices = self._leave_one_out(k, subset)
        return (distances, indices) if return_distance else indices

    def kneighbors_of_gallery(
        self, indices: ArrayLike, n_neighbors: int | None = None, return_distance: bool = True, *, subset=None
    ) -> tuple[np.ndarray, np.ndarray] | np.ndarray:
        """The nearest other gallery items of the gallery items ``indices``.

        Parameters
        ----------
        indices : array-like of int
            Gallery row numbers of the items to query with.
        n_neighbors : int, default=None
            Neighbours per item.
        return_distance : bool, default=True
            Whether to return the distances as well.
        subset : array-like of bool or int, default=None
            Answer only with these gallery rows.

        Returns
        -------
        distances : ndarray of shape (len(indices), n_neighbors)
            Only when ``return_distance=True``.
        indices : ndarray of shape (len(indices), n_neighbors)
            Gallery row numbers of the neighbours, nearest first.
        """
        check_is_fitted(self)
        subset = self._check_subset(subset)
        k = self._check_n_neighbors(n_neighbors, leave_one_out=True, subset=subset)
        items = np.asarray(indices, dtype=np.int64).ravel()
        distances, found = NearestImageRetriever._drop_self(
            *self._search(self.gallery_rows(items), k + 1, subset), items
        )
        return (distances, found) if return_distance else found

    def _leave_one_out(self, k, subset):
        distances = np.empty((self.n_samples_fit_, k), dtype=np.float64)
        indices = np.empty((self.n_samples_fit_, k), dtype=np.int64)
        for start in range(0, self.n_samples_fit_, _QUERY_CHUNK):
            items = np.arange(start, min(start + _QUERY_CHUNK, self.n_samples_fit_))
            found = self._search(self.gallery_rows(items), k + 1, subset)
            distances[items], indices[items] = NearestImageRetriever._drop_self(*found, items)
        return distances, indices

    def radius_neighbors(
        self,
        X: ArrayLike | None = None,
        radius: float | None = None,
        return_distance: bool = True,
        sort_results: bool = True,
        *,
        subset: ArrayLike | None = None,
    ) -> tuple[np.ndarray, np.ndarray] | np.ndarray:
        """Every gallery item within ``radius`` of each query, across every shard.

        Parameters
        ----------
        X : array-like of shape (n_queries, n_features), default=None
            Query embeddings; ``None`` queries the gallery itself, leaving
            each item out of its own list.
        radius : float, default=None
            Largest distance included; the retriever's ``radius`` by default.
        return_distance : bool, default=True
            Whether to return the distances as well.
        sort_results : bool, default=True
            Neighbours are always nearest first; accepted for compatibility.
        subset : array-like of bool or int, default=None
            Search only these gallery rows.

        Returns
        -------
        distances : ndarray of shape (n_queries,) of arrays
            Only when ``return_distance=True``.
        indices : ndarray of shape (n_queries,) of arrays
            Each query's gallery row numbers, nearest first.
        """
        check_is_fitted(self)
        radius = self.radius if radius is None else radius
        if not isinstance(radius, numbers.Real) or isinstance(radius, bool) or not 0 <= radius < np.inf:
            raise ValueError(f"radius must be a finite non-negative number, got {radius!r}.")
        subset = self._check_subset(subset)
        if X is not None:
            distances, indices = self._radius(self._check_query(X), radius, subset)
        else:
            parts_d, parts_i = [], []
            for start in range(0, self.n_samples_fit_, _QUERY_CHUNK):
                items = np.arange(start, min(start + _QUERY_CHUNK, self.n_samples_fit_))
                d, i = self._radius(self.gallery_rows(items), radius, subset)
                for own, row_d, row_i in zip(items, d, i):
                    keep = row_i != own
                    parts_d.append(row_d[keep])
                    parts_i.append(row_i[keep])
            distances, indices = np.empty(len(parts_d), dtype=object), np.empty(len(parts_i), dtype=object)
            distances[:], indices[:] = parts_d, parts_i
        return (distances, indices) if return_distance else indices

    def _radius(self, rows, radius, subset):
        local = self._local_subsets(subset)
        calls = [
            (number, "radius_neighbors", (rows, radius, local[number]))
            for number in range(len(self.shards_))
            if local[number] is None or len(local[number])
        ]
        answers = self._gather(calls)
        distances, indices = np.empty(len(rows), dtype=object), np.empty(len(rows), dtype=object)
        for query in range(len(rows)):
            d = np.concatenate([answer[0][query] for answer in answers.values()] or [np.empty(0)])
            i = np.concatenate(
                [self.shard_rows_[s][answer[1][query]] for s, answer in answers.items()] or [np.empty(0, np.int64)]
            )
            order = np.lexsort((i, d))
            distances[query], indices[query] = d[order], i[order]
        return distances, indices

    # ------------------------------------------------------------- files
    def __getstate__(self):
        state = dict(self.__dict__)
        state["client"] = None  # a connection: load(..., client=) gives a new one
        shards = state.pop("shards_", None)
        if shards is None:
            return state
        saving = saving_to()
        if saving is None:  # a copy or a pickle: the shards travel inline
            state["shard_retrievers_"] = list(self._gather([(s, "state", ()) for s in range(len(shards))]).values())
            return state
        if id(self) not in saving.by_object:  # skops may ask for the state twice: write the shards once
            folder = saving.folder
            folder.mkdir(parents=True, exist_ok=True)
            token = secrets.token_hex(4)
            names = [f"shard-{number:03d}-{token}.skops" for number in range(len(shards))]
            # Each shard writes its own file: on a cluster, from its worker (a folder they all see).
            self._gather([(number, "save", (str(folder / name),)) for number, name in enumerate(names)])
            for handle, name in zip(shards, names):
                handle.file, handle.changed_since_saved = str(folder / name), False
            saving.names.extend(names)
            saving.by_object[id(self)] = names
        state["shard_files_"] = saving.by_object[id(self)]
        return state

    def __setstate__(self, state):
        state = dict(state)
        names = state.pop("shard_files_", None)
        retrievers = state.pop("shard_retrievers_", None)
        self.__dict__.update(state)
        if names is None and retrievers is None:
            return
        if retrievers is not None:
            self.shards_ = [_Here(Shard(retriever)) for retriever in retrievers]
            return
        loading = loading_from()
        if loading is None:
            raise ValueError(
                "This sharded retriever's shards are in files of their own: read it with "
                "sklearn_imgretrieval.load(path, client=...), which knows where they are."
            )
        folder, client = loading
        if not isinstance(names, list) or not all(isinstance(n, str) and PART_NAME.fullmatch(n) for n in names):
            raise ValueError("The file names its shards with names this library does not write: it was altered.")
        if len(names) != len(self.shard_rows_):
            raise ValueError(
                f"The file lists {len(names)} shard files for {len(self.shard_rows_)} shards: it was altered."
            )
        self.client = client
        files = [str(folder / name) for name in names]
        if client is None:
            self.shards_ = [_Here(Shard.from_file(file), file) for file in files]
        else:
            workers = _workers(client)
            self.shards_ = []
            for number, file in enumerate(files):
                address, threads = workers[number % len(workers)]
                actor = _actor(client, Shard.from_file, file, threads, worker=address)
                self.shards_.append(_OnWorker(client, actor, address, file))
        self._check_loaded()

    def _check_loaded(self):
        counts = self._gather([(s, "n_samples", ()) for s in range(len(self.shards_))])
        for number, rows in enumerate(self.shard_rows_):
            if counts.get(number, len(rows)) != len(rows):
                raise ValueError(
                    f"Shard {number}'s file holds {counts[number]} rows, not the {len(rows)} the index lists: "
                    "the files do not belong together."
                )

    @property
    def _n_features_out(self):
        return self.n_samples_fit_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.pairwise = self.metric == "precomputed"
        tags.transformer_tags.preserves_dtype = []
        return tags


def _add_block(actor, block, labels):
    """Give a computed block of rows to a shard actor (a task on the shard's own worker)."""
    return actor.add(np.asarray(block), labels).result()

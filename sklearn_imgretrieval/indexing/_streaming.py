"""Streaming files into an index: decode and embed a chunk at a time (here or on Dask), add in file order.

What is recorded of each file (its header's facts and content digest) is
read in the same task as its pixels, where the file is, before decoding.
"""

from __future__ import annotations

import os
import time

import numpy as np

from ..persistence import save
from ..pipeline import _is_fitted
from ._columns import Table
from ._records import record_files

_CHECKPOINT_SECONDS = 60  # how often an interrupted run's progress is saved


def embed_files(steps, paths):
    """Record, decode and embed ``paths`` with the fitted ``steps``; skip the unreadable ones.

    Returns the embeddings of the readable files, their positions in
    ``paths``, ``(path, reason)`` of the others, and the :class:`Table` of
    what was recorded of each file (all of ``paths``; missing values for a
    file whose header could not be read). The whole chunk goes through at
    once; only when a file fails are the files decoded one by one to find it.
    """
    records = record_files(paths)
    embeddings, kept, failures = _embedded(steps, paths)
    return embeddings, kept, failures, records


def _embedded(steps, paths):
    try:
        return steps.transform(paths), np.arange(len(paths)), []
    except ValueError as whole:
        first = steps[0]
        readable, failures = [], []
        for i, path in enumerate(paths):
            try:
                first.transform([path])
            except (ValueError, OSError) as exc:
                failures.append((os.fspath(path), _reason_for(path, exc)))
            else:
                readable.append(i)
        if not failures:
            raise whole  # not a file's fault
        if not readable:
            return None, np.arange(0), failures
        return steps.transform([paths[i] for i in readable]), np.asarray(readable), failures


def _reason_for(path, error):
    """The line of a decoding error that names ``path`` (``"  path: reason"``), else the whole message."""
    prefix = f"{os.fspath(path)}: "
    for line in str(error).splitlines():
        if line.strip().startswith(prefix):
            return line.strip()[len(prefix) :]
    return str(error)


class Appender:
    """Adds streamed embeddings to an index, in order, saving checkpoints."""

    def __init__(self, index, checkpoint, progress):
        self.index = index
        self.checkpoint = checkpoint
        self.progress = progress
        self._saved_at = time.monotonic()

    def add(self, paths, labels, *, ids=None, carried=None, chunk_size, client):
        """Embed ``paths`` chunk by chunk and add them; returns the skipped files.

        ``ids`` gives the id each path keeps (-1, or None for all: a new id);
        ``carried`` a Table of columns of the user's to give the rows, aligned with ``paths``.
        """
        self._ids = np.full(len(paths), -1, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
        self._carried = carried
        retriever = self.index.pipeline[-1]
        steps = self.index.pipeline[:-1]
        # Rows to gather before the first fit: what the retriever's training needs (1 for exact search).
        first_rows = 1 if _is_fitted(retriever) else retriever.rows_to_train(len(paths))
        buffered, skipped = [], []
        done = 0
        if self.progress is not None:
            self.progress("embedding", 0, len(paths))
        try:
            for start, (embeddings, kept, failures, records) in _chunks_embedded(steps, paths, chunk_size, client):
                chunk = range(start, min(start + chunk_size, len(paths)))
                if failures and len(failures) == len(chunk) and not os.path.isdir(os.path.dirname(paths[start])):
                    raise FileNotFoundError(
                        f"The folder of {paths[start]} is gone: none of its {len(chunk)} files could be read."
                    )
                skipped.extend(failures)
                if len(kept):
                    rows = [chunk[i] for i in kept]
                    buffered.append((embeddings, rows, records.take(kept)))
                    if sum(len(r) for _, r, _ in buffered) >= first_rows or _is_fitted(retriever):
                        self._flush(buffered, paths, labels)
                        buffered = []
                done = chunk[-1] + 1
                if self.progress is not None:
                    self.progress("embedding", done, len(paths))
                self._maybe_checkpoint()
            if buffered:
                self._flush(buffered, paths, labels)
        except KeyboardInterrupt:
            self._maybe_checkpoint(now=True)
            raise
        return skipped

    def _flush(self, buffered, paths, labels):
        embeddings = np.concatenate([part for part, _, _ in buffered])
        rows = [row for _, part, _ in buffered for row in part]
        records = Table()
        for _, _, part in buffered:
            records = records.append(part)
        index = self.index
        y = None if labels is None else labels[rows]
        table = index._new_rows([paths[row] for row in rows], records)
        if self._carried is not None:
            for name, column in self._carried.take(rows).columns.items():
                table[name] = column
        index.pipeline[-1].partial_fit(embeddings, y)
        index._add_rows(table, self._ids[rows], y)

    def _maybe_checkpoint(self, now=False):
        if self.checkpoint is None or not len(self.index):
            return
        if now or time.monotonic() - self._saved_at >= _CHECKPOINT_SECONDS:
            save(self.index, self.checkpoint)
            self._saved_at = time.monotonic()


def _chunks_embedded(steps, paths, chunk_size, client):
    """``(start, embed_files(...))`` for each chunk, in file order, here or on Dask."""
    if client is not None:
        from .._dask import embed_on_cluster

        yield from embed_on_cluster(client, embed_files, steps, paths, chunk_size)
        return
    for start in range(0, len(paths), chunk_size):
        yield start, embed_files(steps, paths[start : start + chunk_size])

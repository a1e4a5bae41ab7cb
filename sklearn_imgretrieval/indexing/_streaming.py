"""Streaming files into an index: decode and embed a chunk at a time (here or on Dask), add in file order."""

from __future__ import annotations

import os
import time

import numpy as np

from ..persistence import save
from ..pipeline import _is_fitted

_CHECKPOINT_SECONDS = 60  # how often an interrupted run's progress is saved


def embed_files(steps, paths):
    """Decode and embed ``paths`` with the fitted ``steps``; skip the unreadable ones.

    Returns the embeddings of the readable files, their positions in
    ``paths`` and ``(path, reason)`` of the others. The whole chunk goes
    through at once; only when a file fails are the files decoded one by one
    to find it.
    """
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

    def add(self, paths, labels, stats, *, chunk_size, client):
        """Embed ``paths`` chunk by chunk and add them; returns the skipped files."""
        retriever = self.index.pipeline[-1]
        steps = self.index.pipeline[:-1]
        # Rows to gather before the first fit: what the retriever's training needs (1 for exact search).
        first_rows = 1 if _is_fitted(retriever) else retriever.rows_to_train(len(paths))
        buffered, skipped = [], []
        done = 0
        if self.progress is not None:
            self.progress("embedding", 0, len(paths))
        try:
            for start, (embeddings, kept, failures) in _chunks_embedded(steps, paths, chunk_size, client):
                chunk = range(start, min(start + chunk_size, len(paths)))
                if failures and len(failures) == len(chunk) and not os.path.isdir(os.path.dirname(paths[start])):
                    raise FileNotFoundError(
                        f"The folder of {paths[start]} is gone: none of its {len(chunk)} files could be read."
                    )
                skipped.extend(failures)
                if len(kept):
                    rows = [chunk[i] for i in kept]
                    buffered.append((embeddings, rows))
                    if sum(len(r) for _, r in buffered) >= first_rows or _is_fitted(retriever):
                        self._flush(buffered, paths, labels, stats)
                        buffered = []
                done = chunk[-1] + 1
                if self.progress is not None:
                    self.progress("embedding", done, len(paths))
                self._maybe_checkpoint()
            if buffered:
                self._flush(buffered, paths, labels, stats)
        except KeyboardInterrupt:
            self._maybe_checkpoint(now=True)
            raise
        return skipped

    def _flush(self, buffered, paths, labels, stats):
        embeddings = np.concatenate([part for part, _ in buffered])
        rows = [row for _, part in buffered for row in part]
        index = self.index
        y = None if labels is None else labels[rows]
        index.pipeline[-1].partial_fit(embeddings, y)
        index.paths.extend(paths[row] for row in rows)
        index.file_stats.extend(stats[row] for row in rows)
        if y is not None:
            index.labels = np.concatenate([index.labels, y]) if index.labels is not None else np.asarray(y)

    def _maybe_checkpoint(self, now=False):
        if self.checkpoint is None or not self.index.paths:
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

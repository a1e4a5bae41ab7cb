"""Where the file being saved or loaded is, for objects whose parts live in files of their own.

A sharded retriever writes each shard to a file of its own next to the
file that :func:`~sklearn_imgretrieval.save` writes (in ``<file>.shards/``),
and reads them back from there, onto a Dask cluster's workers when
:func:`~sklearn_imgretrieval.load` is given a client. ``save`` and ``load``
set these context variables for the time they run; an object pickled or
copied outside them holds its parts inline.
"""

from __future__ import annotations

import contextlib
import contextvars
import re
from pathlib import Path

#: The folder where parts of the file being saved go, and the names written there.
_SAVING = contextvars.ContextVar("sklearn_imgretrieval_saving", default=None)
#: The folder where parts of the file being loaded are, and the Dask client to load them onto.
_LOADING = contextvars.ContextVar("sklearn_imgretrieval_loading", default=None)
#: The names part files may have: written by this library, inside the parts folder.
PART_NAME = re.compile(r"shard-[0-9]{3,6}-[0-9a-f]{8}\.skops")


def parts_folder(path):
    """The folder that holds the parts of the file ``path``."""
    path = Path(path)
    return path.with_name(path.name + ".shards")


class SavedParts:
    """The parts one ``save`` has written: their names, and per object the names it wrote.

    An object's state may be asked for more than once while one file is
    written; its parts are written once (``by_object``).
    """

    def __init__(self, folder):
        self.folder = folder
        self.names = []
        self.by_object = {}


@contextlib.contextmanager
def saving(path):
    """Parts written while the block runs go to ``parts_folder(path)``; yields their :class:`SavedParts`."""
    parts = SavedParts(parts_folder(path))
    token = _SAVING.set(parts)
    try:
        yield parts
    finally:
        _SAVING.reset(token)


@contextlib.contextmanager
def loading(path, client):
    token = _LOADING.set((parts_folder(path), client))
    try:
        yield
    finally:
        _LOADING.reset(token)


def saving_to():
    """The :class:`SavedParts` of the ``save`` running, else None."""
    return _SAVING.get()


def loading_from():
    """``(folder, client)`` while ``load`` runs, else None."""
    return _LOADING.get()


def remove_stale_parts(path, kept):
    """Delete the part files of ``path`` that its new version no longer names (earlier saves' parts)."""
    folder = parts_folder(path)
    if not folder.is_dir():
        return
    for part in folder.iterdir():
        if PART_NAME.fullmatch(part.name) and part.name not in kept:
            with contextlib.suppress(OSError):
                part.unlink()


def delete_saved(path):
    """Delete a file written by ``save`` and the part files beside it (a checkpoint done with)."""
    Path(path).unlink(missing_ok=True)
    remove_stale_parts(path, ())
    with contextlib.suppress(OSError):
        parts_folder(path).rmdir()

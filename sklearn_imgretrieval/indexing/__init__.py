"""Image indexes: a fitted retrieval pipeline with the files it indexed, built by streaming.

:func:`build_index` streams files through a pipeline chunk by chunk (decode,
embed, add to the search index), so memory follows the chunk, not the
folder; with a Dask client the chunks are embedded on the cluster's workers.
:meth:`ImageIndex.update` embeds only new or changed files and drops deleted
ones. A checkpoint file makes an interrupted run resumable. ``imgretrieval
index`` calls these functions and writes the :class:`ImageIndex` with
:func:`sklearn_imgretrieval.save`; :func:`load_index` reads it back without
building any object the file could use to run code.

The rooms: ``_image_index`` (the index and its files), ``_records`` (what is
recorded of each file), ``_streaming`` (chunks decoded, embedded and added),
``_build`` (a new index, checkpoints, the Dask client).
"""

from ._build import build_index, dask_client
from ._image_index import ImageIndex, IndexChanges, load_index, select_files

__all__ = ["ImageIndex", "IndexChanges", "build_index", "dask_client", "load_index", "select_files"]

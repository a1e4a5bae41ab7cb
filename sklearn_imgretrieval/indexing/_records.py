"""What an index records about each file: its size and time, and the list of paths."""

from __future__ import annotations

import os


def file_stats(paths):
    """``[size, modification time in ns]`` of each file, ``None`` for a file that is gone."""
    stats = []
    for path in paths:
        try:
            info = os.stat(path)
        except OSError:
            stats.append(None)
        else:
            stats.append([int(info.st_size), int(info.st_mtime_ns)])
    return stats


def _check_path_list(paths):
    if isinstance(paths, (str, bytes, os.PathLike)) or not hasattr(paths, "__len__"):
        raise TypeError(f"paths must be a list of file paths, one per indexed image; got {type(paths).__name__}.")
    if not all(isinstance(p, (str, os.PathLike)) for p in paths):
        raise TypeError("paths must hold str or path-like file names.")
    return [os.path.abspath(p) for p in paths]


def _stat(stat):
    """A stored ``[size, mtime_ns]`` as a pair of ints (or None)."""
    if stat is None:
        return None
    size, mtime = stat
    return [int(size), int(mtime)]

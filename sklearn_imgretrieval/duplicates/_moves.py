"""Moving the redundant images of each group out of the way, with a log that undoes it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from .._files import atomic_write, check_outputs

if TYPE_CHECKING:
    from .._typing import StrPath
    from ._result import Duplicates

MOVE_LOG_FORMAT = "sklearn-imgretrieval-moves"


def _inside(path, folder):
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


def check_move_target(target, *scanned):
    """Refuse a ``target`` folder inside (or equal to) a scanned folder.

    Moved files would otherwise be found again by the next scan.

    Parameters
    ----------
    target : str or path-like
        Folder the duplicates would move to.
    *scanned : str or path-like
        The folders the images came from.
    """
    for folder in scanned:
        if folder is not None and _inside(target, folder):
            raise ValueError(
                f"Cannot move duplicates to {target}: it is inside the scanned folder {folder}, so the "
                "moved files would be scanned again. Choose a folder outside it."
            )
    if Path(target).exists() and not Path(target).is_dir():
        raise NotADirectoryError(f"Cannot move duplicates to {target}: it is a file, not a folder.")


def _move_without_overwrite(source, destination):
    """Move one file; fail rather than replace an existing ``destination``.

    A hard link plus unlink is atomic against a file appearing at the
    destination meanwhile (``os.rename`` would replace it); across file
    systems the bytes are copied to a new file opened exclusively.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, destination)
    except FileExistsError:
        raise
    except OSError:  # another file system, or no hard links there: copy
        with open(source, "rb") as src, open(destination, "xb") as dst:
            try:
                while block := src.read(1 << 20):
                    dst.write(block)
                dst.flush()
                os.fsync(dst.fileno())
            except BaseException:
                os.unlink(destination)  # ours, created just above: never leave half a copy
                raise
        stat = os.stat(source)
        os.utime(destination, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    os.unlink(source)


def move_duplicates(
    duplicates: Duplicates,
    target: StrPath,
    *,
    root: StrPath,
    log: StrPath,
    keep: Literal["largest", "first"] = "largest",
) -> list[tuple[str, str]]:
    """Move the redundant images of each group out of the way; never deletes.

    Each moved file keeps its path relative to ``root`` under ``target``.
    The log, written before anything moves, lists every planned move so
    that :func:`undo_moves` can put the files back.

    Parameters
    ----------
    duplicates : Duplicates
        What :func:`find_duplicates` found, on paths under ``root``.
    target : str or path-like
        Folder to move the files to; not inside ``root``.
    root : str or path-like
        The scanned folder the paths are under.
    log : str or path-like
        JSON file recording the moves.
    keep : {"largest", "first"}, default="largest"
        Which image of a group stays; see :meth:`Duplicates.redundant`.

    Returns
    -------
    moves : list of (str, str)
        ``(from, to)`` of every file moved.
    """
    check_move_target(target, root)
    from .._image_io import IMAGE_EXTENSIONS, is_path

    images = [item for item in duplicates.items if is_path(item)]
    check_outputs([("The move log", log)], reads=images, scans=[root], scanned_suffixes=IMAGE_EXTENSIONS)
    target, root = Path(target).resolve(), Path(root).resolve()
    moves = []
    for index in duplicates.redundant(keep=keep):
        source = Path(duplicates.items[index]).resolve()
        if root not in source.parents:
            raise ValueError(f"{source} is not under the scanned folder {root}; nothing was moved.")
        moves.append((source, target / source.relative_to(root)))
    taken = [str(destination) for _, destination in moves if os.path.lexists(destination)]
    if taken:
        raise FileExistsError(
            f"{len(taken)} file(s) already exist where duplicates would move, for example {taken[0]}; nothing "
            "was moved. Move to an empty folder."
        )
    record = {
        "format": MOVE_LOG_FORMAT,
        "version": 1,
        "root": str(root),
        "target": str(target),
        "moves": [{"from": str(source), "to": str(destination)} for source, destination in moves],
    }
    with atomic_write(log, "w") as file:
        json.dump(record, file, indent=1)
    for done, (source, destination) in enumerate(moves):
        try:
            _move_without_overwrite(source, destination)
        except OSError as exc:
            raise OSError(
                f"Moving {source} to {destination} failed ({exc}) after {done} of {len(moves)} files were moved; "
                f"undo_moves({os.fspath(log)!r}) puts them back."
            ) from exc
    return [(str(source), str(destination)) for source, destination in moves]


def undo_moves(log: StrPath) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Put back the files a :func:`move_duplicates` log lists.

    A file goes back only when it is at its new place and nothing is at its
    old one, so undoing twice, or after a partial move, is safe.

    Parameters
    ----------
    log : str or path-like
        The JSON log written by :func:`move_duplicates`.

    Returns
    -------
    restored : list of (str, str)
        ``(from, to)`` of every file moved back.
    skipped : list of (str, str)
        ``(path, reason)`` of the moves not undone.
    """
    try:
        record = json.loads(Path(log).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{log} is not a move log written by move_duplicates ({exc}).") from exc
    if not isinstance(record, dict) or record.get("format") != MOVE_LOG_FORMAT:
        raise ValueError(f"{log} is not a move log written by move_duplicates.")
    restored, skipped = [], []
    for move in record["moves"]:
        original, moved = Path(move["from"]), Path(move["to"])
        if os.path.lexists(original):
            skipped.append((str(original), "a file is already there"))
        elif not moved.exists():
            skipped.append((str(moved), "not found where it was moved"))
        else:
            _move_without_overwrite(moved, original)
            restored.append((str(moved), str(original)))
    return restored, skipped

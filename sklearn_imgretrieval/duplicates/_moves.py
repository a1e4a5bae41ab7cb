"""Moving the redundant images of each group out of the way, with a log that undoes it."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from .._files import atomic_write, check_outputs

if TYPE_CHECKING:
    from .._typing import StrPath
    from ._result import Duplicates

MOVE_LOG_FORMAT = "sklearn-imgretrieval-moves"
#: 2: each move records the file's size and checksum, which undo checks.
MOVE_LOG_VERSION = 2


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


def _checksum(path):
    """BLAKE2b-128 of a file's bytes, as hex."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def move_duplicates(
    duplicates: Duplicates,
    target: StrPath,
    *,
    root: StrPath,
    log: StrPath,
    keep: str = "original",
) -> list[tuple[str, str]]:
    """Move the redundant images of each group out of the way; never deletes.

    Each moved file keeps its path relative to ``root`` under ``target``.
    The log, written before anything moves, lists every planned move with
    the file's size and checksum, so that :func:`undo_moves` can put back
    exactly these files.

    Parameters
    ----------
    duplicates : Duplicates
        What :func:`find_duplicates` found, on paths under ``root``.
    target : str or path-like
        Folder to move the files to; not inside ``root``.
    root : str or path-like
        The scanned folder the paths are under.
    log : str or path-like
        JSON file recording the moves; never one of the images.
    keep : str, default="original"
        Which image of a group stays; see :meth:`Duplicates.kept`.

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
        "version": MOVE_LOG_VERSION,
        "root": str(root),
        "target": str(target),
        "moves": [
            {"from": str(source), "to": str(destination), "size": source.stat().st_size, "blake2b": _checksum(source)}
            for source, destination in moves
        ],
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


def _read_log(log):
    """The checked record of a move log; a clear error for anything else."""
    try:
        record = json.loads(Path(log).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{log} is not a move log written by move_duplicates ({exc}).") from exc
    if not isinstance(record, dict) or record.get("format") != MOVE_LOG_FORMAT:
        raise ValueError(f"{log} is not a move log written by move_duplicates.")
    if record.get("version") != MOVE_LOG_VERSION:
        raise ValueError(
            f"{log} is a move log of version {record.get('version')!r}; this version undoes logs of version "
            f"{MOVE_LOG_VERSION}, which record each file's size and checksum (earlier logs do not, so their "
            "files cannot be checked before they move: move them back by hand)."
        )
    for key in ("root", "target"):
        if not isinstance(record.get(key), str) or not os.path.isabs(record[key]):
            raise ValueError(f"{log} is damaged: its {key!r} is not an absolute folder path.")
    moves = record.get("moves")
    if not isinstance(moves, list):
        raise ValueError(f"{log} is damaged: it has no list of moves.")
    for number, move in enumerate(moves):
        valid = (
            isinstance(move, dict)
            and all(isinstance(move.get(key), str) and os.path.isabs(move[key]) for key in ("from", "to"))
            and isinstance(move.get("size"), int)
            and not isinstance(move["size"], bool)
            and move["size"] >= 0
            and isinstance(move.get("blake2b"), str)
            and len(move["blake2b"]) == 32
        )
        if not valid:
            raise ValueError(
                f"{log} is damaged: move {number} is not {{'from': path, 'to': path, 'size': int, 'blake2b': hex}} "
                f"({json.dumps(move)[:120]}); nothing was moved."
            )
    return record


def _why_not_back(move, root, target):
    """Why a logged move is not undone (None when it may be)."""
    original, moved = Path(move["from"]), Path(move["to"])
    if not _inside(moved, target) or os.path.realpath(moved) != os.path.normpath(moved):
        return "not inside the log's target folder"
    if not _inside(original, root):
        return "its old place is not inside the log's scanned folder"
    if os.path.lexists(original):
        return "a file is already at its old place"
    if not moved.is_file() or moved.is_symlink():
        return "not found where it was moved"
    if moved.stat().st_size != move["size"] or _checksum(moved) != move["blake2b"]:
        return "changed since it was moved (size or checksum)"
    return None


def undo_moves(log: StrPath) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Put back the files a :func:`move_duplicates` log lists, and only those.

    A log is data, not orders: a file goes back only when it sits where the
    log's own move put it, inside the log's target folder, with the size and
    checksum recorded when it moved, and its old place, inside the recorded
    scanned folder, is free. Everything else is left alone and listed, so
    undoing twice, or after a partial move, is safe.

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

    Raises
    ------
    ValueError
        The log is not one :func:`move_duplicates` writes, or an entry is
        malformed; nothing is moved.
    """
    record = _read_log(log)
    root, target = Path(record["root"]), Path(record["target"])
    checked = [(move, _why_not_back(move, root, target)) for move in record["moves"]]
    restored, skipped = [], []
    for move, reason in checked:
        if reason is not None:
            skipped.append((move["to"], reason))
            continue
        _move_without_overwrite(Path(move["to"]), Path(move["from"]))
        restored.append((move["to"], move["from"]))
    return restored, skipped

"""Which image of a group of duplicates stays, and why.

The default rule, ``"original"``, keeps the image that the files say was
there first, because edited copies are usually made later and lose what a
camera wrote: re-saving as PNG, mirroring, halving or re-compressing a photo
in an editor or with Pillow drops its EXIF camera make and model. It
compares, in this order, stopping at the first that tells the members apart:

1. camera metadata: EXIF make or model present;
2. pixels: a downsized copy has fewer;
3. time: the earliest EXIF date taken, else the earliest modification time,
   to the second (files copied in one go differ by less);
4. format: a camera's format (JPEG, HEIC, TIFF, DNG) before one images are
   re-saved in (PNG, WebP, BMP, GIF), as a PNG of a JPEG's pixels is a
   re-encode of it;
5. compression: the highest JPEG quality (read from its quantization
   table), as re-compressing only lowers it;
6. the largest file, then the first listed.

The other rules: ``"largest"`` (most pixels, then the largest file),
``"oldest"`` and ``"newest"`` (EXIF date taken, else modification time),
``"shortest-path"`` and ``"first"``. Each kept image comes with the reason
it won, which ``imgretrieval dedupe`` prints.
"""

from __future__ import annotations

import os

import numpy as np

from .. import _image_io

#: The rules :meth:`Duplicates.kept` takes.
KEEP_RULES = ("original", "largest", "oldest", "newest", "shortest-path", "first")
#: Formats cameras write; the others are what images are re-saved in.
_CAMERA_FORMATS = frozenset({"JPEG", "MPO", "HEIF", "HEIC", "TIFF", "DNG"})


def check_keep(keep):
    if keep not in KEEP_RULES:
        raise ValueError(f"keep must be one of {', '.join(map(repr, KEEP_RULES))}; got {keep!r}.")
    return keep


def _facts(path):
    """What the rules compare, read from the file's header and the file system."""
    facts = _image_io.read_facts(path)
    info = os.stat(path)
    facts["size"] = int(info.st_size)
    facts["mtime_ns"] = int(info.st_mtime_ns)
    return facts


def _time(facts):
    """The time a file says its image was made: EXIF date taken (as text, sortable), else its
    modification time to the second."""
    return (0, facts["taken"]) if facts["taken"] else (1, f"{facts['mtime_ns'] // 10**9:024d}")


#: rule -> the criteria it compares, best first: (reason shown, key where larger wins).
_CRITERIA = {
    "original": (
        ("camera metadata", lambda f, i, p: f["camera"] is not None),
        ("most pixels", lambda f, i, p: f["height"] * f["width"]),
        ("oldest", lambda f, i, p: _Reversed(_time(f))),
        ("a camera's format", lambda f, i, p: f["format"] in _CAMERA_FORMATS),
        ("least compressed", lambda f, i, p: 101 if f["quality"] is None else f["quality"]),
        ("largest file", lambda f, i, p: f["size"]),
        ("first listed", lambda f, i, p: -i),
    ),
    "largest": (
        ("most pixels", lambda f, i, p: f["height"] * f["width"]),
        ("largest file", lambda f, i, p: f["size"]),
        ("first listed", lambda f, i, p: -i),
    ),
    "oldest": (("oldest", lambda f, i, p: _Reversed(_time(f))), ("first listed", lambda f, i, p: -i)),
    "newest": (("newest", lambda f, i, p: _time(f)), ("first listed", lambda f, i, p: -i)),
    "shortest-path": (("shortest path", lambda f, i, p: -len(p)), ("first listed", lambda f, i, p: -i)),
}


class _Reversed:
    """Orders the wrapped values in reverse, so that the earliest time wins a ``max``."""

    def __init__(self, value):
        self.value = value

    def __lt__(self, other):
        return self.value > other.value

    def __eq__(self, other):
        return self.value == other.value


def _winner(members, keys):
    """The member with the largest keys, and the first criterion that set it apart from the runner-up."""
    ranked = sorted(members, key=lambda member: keys[member], reverse=True)
    best, runner_up = ranked[0], ranked[1]
    for position, (a, b) in enumerate(zip(keys[best], keys[runner_up])):
        if not a == b:
            return best, position
    return best, len(keys[best]) - 1


def choose_kept(groups, items, keep):
    """The image each group keeps, and why.

    Parameters
    ----------
    groups : list of ndarray of int
        Item indices of each group (two or more each).
    items : ndarray of object
        Paths (every rule but ``"first"`` reads the files).
    keep : str
        One of :data:`KEEP_RULES`.

    Returns
    -------
    kept : list of (int, str)
        ``(item index, reason)`` per group.
    """
    check_keep(keep)
    if keep == "first":
        return [(int(group[0]), "first listed") for group in groups]
    if not all(_image_io.is_path(item) for item in items):
        raise ValueError(f"keep={keep!r} reads the image files, but the items are not paths; use keep='first'.")
    members = [int(i) for i in np.concatenate(groups)] if groups else []
    facts, failures = _image_io.map_threads(_facts, [items[i] for i in members], -1)
    _image_io.raise_for_failures([items[i] for i in members], failures, "read")
    facts = dict(zip(members, facts))
    criteria = _CRITERIA[keep]
    kept = []
    for group in groups:
        keys = {
            int(i): tuple(key(facts[int(i)], int(i), os.fspath(items[int(i)])) for _, key in criteria) for i in group
        }
        best, position = _winner([int(i) for i in group], keys)
        reason, fact = criteria[position][0], facts[best]
        detail = {
            "camera metadata": fact["camera"],
            "most pixels": f"{fact['width']}x{fact['height']}",
            "oldest": fact["taken"] and f"taken {fact['taken']}",
            "newest": fact["taken"] and f"taken {fact['taken']}",
            "a camera's format": fact["format"],
            "least compressed": fact["quality"] and f"JPEG quality {fact['quality']}",
        }.get(reason)
        kept.append((best, f"{reason} ({detail})" if detail else reason))
    return kept

"""Near-duplicate images: finding them, the result, and moving copies aside with an undo log.

The rooms: ``_find`` (embed or hash, radius search, connected components),
``_result`` (:class:`Duplicates` and which image of a group is kept),
``_moves`` (moving files without overwriting, the log, undo).
"""

from ._find import (
    DEFAULT_MAX_DISTANCE,
    DuplicateSettings,
    check_duplicate_settings,
    find_duplicates,
    find_duplicates_in,
)
from ._moves import check_move_target, move_duplicates, undo_moves
from ._result import Duplicates

__all__ = [
    "DEFAULT_MAX_DISTANCE",
    "DuplicateSettings",
    "Duplicates",
    "check_duplicate_settings",
    "check_move_target",
    "find_duplicates",
    "find_duplicates_in",
    "move_duplicates",
    "undo_moves",
]

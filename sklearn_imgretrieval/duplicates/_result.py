"""Duplicates: the groups and pairs that find_duplicates found, and which image of a group to keep."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ._keep import check_keep, choose_kept

if TYPE_CHECKING:
    import pandas as pd


@dataclass(eq=False)
class Duplicates:
    """Near-duplicate images found by :func:`find_duplicates`.

    Items are numbered in the order given: the queries ``X`` first, then,
    when a reference set was given, the reference images.

    Attributes
    ----------
    items : ndarray of object, shape (n_items,)
        Each item's path (when paths were given) or position in its set.
    n_queries : int
        Number of items of ``X``; items from ``n_queries`` on belong to the
        reference set.
    groups : list of ndarray of int
        Item indices of each group of duplicates (the connected components
        of the pairs), sorted, groups ordered by their first item. Items in
        no pair are in no group.
    pairs : ndarray of int, shape (n_pairs, 2)
        Item indices ``(i, j)``, ``i < j``, of every pair within
        ``max_distance``, nearest first. With a reference set, ``i`` is a
        query and ``j`` a reference image.
    distances : ndarray of float, shape (n_pairs,)
        Distance of each pair: cosine distance for ``"cnn"``, differing
        bits for the hashes.
    method : str or estimator
        The method that compared the images.
    metric : str
        The distance used.
    max_distance : float or None
        Largest distance of a pair.
    top_k : int or None
        Duplicates kept per image, at most.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_imgretrieval import find_duplicates
    >>> codes = np.array([[0b0000_0000], [0b0000_0001], [0b1111_0000], [0b1111_1111]], dtype=np.uint8)
    >>> found = find_duplicates(codes, method="precomputed", max_distance=1)
    >>> found
    Duplicates(1 group of 2 items, 1 pair; method='precomputed', metric='hamming', max_distance=1.0)
    >>> found.groups
    [array([0, 1])]
    >>> found.to_dict()
    {0: [1], 1: [0], 2: [], 3: []}
    """

    items: np.ndarray
    n_queries: int
    pairs: np.ndarray
    distances: np.ndarray
    groups: list
    method: object
    metric: str
    max_distance: object
    top_k: object

    @property
    def has_reference(self) -> bool:
        """Whether the queries were compared with a reference set."""
        return len(self.items) > self.n_queries

    def __repr__(self):
        n_grouped = sum(len(group) for group in self.groups)
        method = self.method if isinstance(self.method, str) else type(self.method).__name__
        plural = "" if len(self.groups) == 1 else "s"
        return (
            f"Duplicates({len(self.groups)} group{plural} of {n_grouped} items, {len(self.pairs)} "
            f"pair{'' if len(self.pairs) == 1 else 's'}; method={method!r}, metric={self.metric!r}, "
            f"max_distance={self.max_distance!r}" + (f", top_k={self.top_k}" if self.top_k else "") + ")"
        )

    def group_labels(self) -> np.ndarray:
        """Group of each item, ``-1`` for items in no group.

        Returns
        -------
        labels : ndarray of int, shape (n_items,)
            Index into ``groups`` of each item's group.
        """
        labels = np.full(len(self.items), -1, dtype=np.int64)
        for number, group in enumerate(self.groups):
            labels[group] = number
        return labels

    def pair_rows(self) -> list[dict[str, Any]]:
        """The pairs as records: ``group``, ``first``, ``second``, ``distance``.

        Returns
        -------
        rows : list of dict
            One record per pair, nearest first; ``first`` and ``second``
            are item names (paths, or positions).
        """
        labels = self.group_labels()
        return [
            {"group": int(labels[i]), "first": self.items[i], "second": self.items[j], "distance": float(d)}
            for (i, j), d in zip(self.pairs, self.distances)
        ]

    def to_frame(self) -> pd.DataFrame:
        """The pairs as a pandas DataFrame, one row per pair, nearest first.

        Returns
        -------
        frame : pandas.DataFrame
            Columns ``group``, ``first``, ``second``, ``distance``.
        """
        try:
            import pandas as pd
        except ImportError as exc:
            raise ImportError("to_frame needs pandas: pip install pandas. to_dict() needs nothing.") from exc
        return pd.DataFrame(self.pair_rows(), columns=["group", "first", "second", "distance"])

    def to_dict(self, scores: bool = False) -> dict[Any, list[Any]]:
        """Each query's duplicates, in imagededup's format.

        Parameters
        ----------
        scores : bool, default=False
            List ``(name, distance)`` tuples instead of names.

        Returns
        -------
        duplicates : dict
            Query name -> the names of the items paired with it, nearest
            first; an empty list for a query with no duplicate. With a
            reference set, only reference items are listed.
        """
        found: dict[Any, list[Any]] = {self.items[i]: [] for i in range(self.n_queries)}
        for (i, j), d in zip(self.pairs, self.distances):
            for a, b in ((i, j), (j, i)):
                if a < self.n_queries:
                    found[self.items[a]].append((self.items[b], float(d)) if scores else self.items[b])
        return found

    def kept(self, keep: str = "original") -> list[tuple[int, str]]:
        """The image each group keeps, and why.

        Parameters
        ----------
        keep : {"original", "largest", "oldest", "newest", "shortest-path", "first"}, default="original"
            The rule. ``"original"`` keeps the image the files say was there
            first: EXIF camera metadata, then most pixels, then the earliest
            date taken (else modification time), then a camera's format over
            one images are re-saved in, then the largest file. See the
            "Finding duplicates" page for each rule.

        Returns
        -------
        kept : list of (int, str)
            Per group, the kept item's index and the reason it won, such as
            ``"camera metadata (Canon EOS R5)"``. With a reference set, the
            reference images stay: the group's first reference image, "in
            the reference set".
        """
        if self.has_reference:
            return [(int(group[group >= self.n_queries][0]), "in the reference set") for group in self.groups]
        return choose_kept(self.groups, self.items, keep)

    def redundant(self, keep: str = "original") -> np.ndarray:
        """Items whose removal leaves one image of each group.

        Parameters
        ----------
        keep : str, default="original"
            Which image of a group stays; see :meth:`kept`. With a reference
            set the reference images stay and every query image in a group is
            redundant.

        Returns
        -------
        indices : ndarray of int
            Item indices, sorted.
        """
        check_keep(keep)
        grouped = np.concatenate(self.groups) if self.groups else np.empty(0, np.int64)
        if self.has_reference:
            return np.sort(grouped[grouped < self.n_queries])
        if not self.groups:
            return np.empty(0, dtype=np.int64)
        kept = [index for index, _ in self.kept(keep)]
        return np.sort(np.setdiff1d(grouped, kept))

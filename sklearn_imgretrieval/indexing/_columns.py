"""The columns an index keeps per image, as NumPy arrays.

A column is one of three things, each with a value per image, in row order:

- a NumPy array: numbers (a missing number is NaN: integers with a gap
  become floats, as in pandas), booleans, or dates (``datetime64``, missing
  as NaT);
- a :class:`StringColumn`: distinct strings such as paths, kept as one UTF-8
  byte array and the offsets of each string in it;
- a :class:`CategoryColumn`: strings with few distinct values (folders,
  camera models, labels, a user's text columns), kept as an int32 code per
  row into a :class:`StringColumn` of the values (-1 when missing).

None of them holds one Python object per image, so the state of a
10-million-image index is a few arrays, whatever its size. :class:`Table`
keeps the columns of one index aligned through appends and removals.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_GATHER_ROWS = 65536  # rows of strings gathered at a time: memory follows the chunk
_ENCODING = ("utf-8", "surrogateescape")  # a file name's undecodable bytes survive (os.fsdecode's)


class StringColumn(Sequence):
    """Strings as one UTF-8 byte array and ``n + 1`` offsets into it.

    Indexing with an int gives a ``str``; with an array of positions or a
    boolean mask, another :class:`StringColumn`.

    Parameters
    ----------
    data : ndarray of uint8
        The strings' UTF-8 bytes, one after the other.
    offsets : ndarray of int64, shape (n + 1,)
        String ``i`` is ``data[offsets[i]:offsets[i + 1]]``.
    """

    __slots__ = ("data", "offsets")

    def __init__(self, data, offsets):
        data = np.ascontiguousarray(data, dtype=np.uint8).ravel()
        offsets = np.ascontiguousarray(offsets, dtype=np.int64).ravel()
        if len(offsets) < 1 or offsets[0] != 0 or offsets[-1] != len(data) or (np.diff(offsets) < 0).any():
            raise ValueError("A string column's offsets must rise from 0 to the length of its bytes.")
        self.data, self.offsets = data, offsets

    @classmethod
    def from_strings(cls, strings):
        encoded = [str(text).encode(*_ENCODING) for text in strings]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(raw) for raw in encoded], out=offsets[1:])
        return cls(np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets)

    def __len__(self):
        return len(self.offsets) - 1

    def __getitem__(self, item):
        if isinstance(item, (int, np.integer)):
            position = int(item) + (len(self) if item < 0 else 0)
            if not 0 <= position < len(self):
                raise IndexError(f"position {item} is out of range for {len(self)} strings")
            start, stop = self.offsets[position], self.offsets[position + 1]
            return self.data[start:stop].tobytes().decode(*_ENCODING)
        if isinstance(item, slice):
            return self.take(np.arange(len(self))[item])
        return self.take(item)

    def __iter__(self):
        raw, offsets = self.data.tobytes(), self.offsets.tolist()
        for start, stop in zip(offsets[:-1], offsets[1:]):
            yield raw[start:stop].decode(*_ENCODING)

    def __repr__(self):
        shown = ", ".join(repr(text) for text in self[:3]) if len(self) else ""
        return f"StringColumn([{shown}{', ...' if len(self) > 3 else ''}], {len(self)} strings)"

    def __eq__(self, other):
        """Equal to a list, tuple or string column of the same strings in the same order, as a list is."""
        if isinstance(other, StringColumn):
            return np.array_equal(self.offsets, other.offsets) and np.array_equal(self.data, other.data)
        if isinstance(other, (list, tuple)):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # mutable-looking and compared by value, as a list

    def tolist(self):
        return list(self)

    def values(self):
        """The strings as a NumPy array of ``str`` objects."""
        out = np.empty(len(self), dtype=object)
        out[:] = self.tolist()
        return out

    def take(self, rows):
        """The strings at ``rows`` (positions or a boolean mask), gathered a chunk of rows at a time."""
        rows = _positions(rows, len(self))
        lengths = self.offsets[rows + 1] - self.offsets[rows]
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        data = np.empty(int(offsets[-1]), dtype=np.uint8)
        starts = offsets[:-1]
        for start in range(0, len(rows), _GATHER_ROWS):
            part = slice(start, start + _GATHER_ROWS)
            counts = lengths[part]
            # Each output byte's source: its string's start, plus its place within the string.
            first = starts[part][0]
            within = np.arange(int(counts.sum())) - np.repeat(starts[part] - first, counts)
            data[first : first + len(within)] = self.data[np.repeat(self.offsets[rows[part]], counts) + within]
        return StringColumn(data, offsets)

    @staticmethod
    def concat(parts):
        parts = list(parts)
        shifts = np.cumsum([0] + [len(part.data) for part in parts[:-1]])
        offsets = np.concatenate([[0]] + [part.offsets[1:] + shift for part, shift in zip(parts, shifts)])
        return StringColumn(np.concatenate([part.data for part in parts] or [np.empty(0, np.uint8)]), offsets)

    @property
    def nbytes(self):
        return self.data.nbytes + self.offsets.nbytes

    def state(self):
        return {"data": self.data, "offsets": self.offsets}


class CategoryColumn:
    """Strings with few distinct values: an int32 code per row into ``categories`` (-1: missing).

    Parameters
    ----------
    codes : ndarray of int32
        Position in ``categories`` of each row's value, -1 for a missing value.
    categories : StringColumn
        The distinct values.
    """

    __slots__ = ("categories", "codes")

    def __init__(self, codes, categories):
        codes = np.ascontiguousarray(codes, dtype=np.int32).ravel()
        if not isinstance(categories, StringColumn):
            categories = StringColumn.from_strings(categories)
        if len(codes) and (codes.min() < -1 or codes.max() >= len(categories)):
            raise ValueError(f"A category column's codes must be -1 or index its {len(categories)} values.")
        self.codes, self.categories = codes, categories

    @classmethod
    def from_values(cls, values):
        """From a sequence of ``str`` (``None`` for missing)."""
        lookup = {}
        codes = np.fromiter(
            (-1 if value is None else lookup.setdefault(value, len(lookup)) for value in values),
            dtype=np.int32,
            count=len(values),
        )
        return cls(codes, StringColumn.from_strings(lookup))

    def __len__(self):
        return len(self.codes)

    def __getitem__(self, position):
        code = self.codes[position]
        return None if code < 0 else self.categories[code]

    def __repr__(self):
        return f"CategoryColumn({len(self)} rows, {len(self.categories)} values)"

    def values(self):
        """The values as a NumPy array of ``str`` objects, None where missing."""
        names = np.append(self.categories.values(), None)  # code -1 reads the last: None
        return names[self.codes]

    def used_categories(self):
        """The values that some row holds, sorted."""
        return sorted(self.categories[int(code)] for code in np.unique(self.codes[self.codes >= 0]))

    def take(self, rows):
        return CategoryColumn(self.codes[_positions(rows, len(self))], self.categories)

    @staticmethod
    def concat(parts):
        parts = list(parts)
        lookup, codes = {}, []
        for part in parts:
            mapping = np.array([lookup.setdefault(name, len(lookup)) for name in part.categories] + [-1], np.int32)
            codes.append(mapping[part.codes])
        return CategoryColumn(np.concatenate(codes or [np.empty(0, np.int32)]), StringColumn.from_strings(lookup))

    @property
    def nbytes(self):
        return self.codes.nbytes + self.categories.nbytes

    def state(self):
        return {"codes": self.codes, "categories": self.categories.state()}


def _positions(rows, n):
    rows = np.asarray(rows)
    if rows.dtype == bool:
        if rows.shape != (n,):
            raise ValueError(f"A boolean mask over {n} rows must have shape ({n},); got {rows.shape}.")
        return np.flatnonzero(rows)
    return rows.astype(np.int64, copy=False).ravel()


# --------------------------------------------------------------- one column
def kind_of(column):
    """What a column holds: "string", "category", "date", "number" or "bool"."""
    if isinstance(column, StringColumn):
        return "string"
    if isinstance(column, CategoryColumn):
        return "category"
    kind = column.dtype.kind
    return {"M": "date", "b": "bool"}.get(kind, "number")


def take(column, rows):
    return (
        column.take(rows)
        if isinstance(column, (StringColumn, CategoryColumn))
        else column[_positions(rows, len(column))]
    )


def missing_values(column, n):
    """``n`` missing values of ``column``'s kind (numbers and booleans become floats: NaN)."""
    if isinstance(column, StringColumn):
        return CategoryColumn(np.full(n, -1, np.int32), StringColumn.from_strings([]))
    if isinstance(column, CategoryColumn):
        return CategoryColumn(np.full(n, -1, np.int32), column.categories)
    if column.dtype.kind == "M":
        return np.full((n, *column.shape[1:]), np.datetime64("NaT"), dtype=column.dtype)
    if column.dtype.kind == "u" and column.ndim == 2:  # a digest: zeros stand for "not recorded"
        return np.zeros((n, *column.shape[1:]), dtype=column.dtype)
    return np.full(n, np.nan)


def concat(parts):
    """One column of the parts' rows, in order; strings and categories mix as categories."""
    parts = list(parts)
    if all(isinstance(part, StringColumn) for part in parts):
        return StringColumn.concat(parts)
    if any(isinstance(part, (StringColumn, CategoryColumn)) for part in parts):
        as_categories = [
            CategoryColumn.from_values(part.tolist()) if isinstance(part, StringColumn) else part for part in parts
        ]
        if not all(isinstance(part, CategoryColumn) for part in as_categories):
            raise TypeError("Cannot join a text column with numbers or dates.")
        return CategoryColumn.concat(as_categories)
    dates = [part.dtype.kind == "M" for part in parts]
    if any(dates) and not all(dates):
        raise TypeError("Cannot join a date column with numbers.")
    return np.concatenate(parts)


def put(column, rows, values):
    """``column`` with the rows ``rows`` set to ``values`` (a column of ``len(rows)``), as a new column."""
    rows = _positions(rows, len(column))
    if isinstance(column, (StringColumn, CategoryColumn)) or isinstance(values, (StringColumn, CategoryColumn)):
        merged = concat([column, values])
        if isinstance(merged, StringColumn):
            merged = CategoryColumn.from_values(merged.tolist())
        codes = merged.codes[: len(column)].copy()
        codes[rows] = merged.codes[len(column) :]
        if isinstance(column, StringColumn):  # distinct strings stay strings
            return StringColumn.from_strings(merged.categories.values()[codes].tolist())
        return CategoryColumn(codes, merged.categories)
    out = column.astype(np.result_type(column, values))
    out[rows] = values
    return out


def column_state(column):
    if isinstance(column, StringColumn):
        return {"kind": "string", **column.state()}
    if isinstance(column, CategoryColumn):
        return {"kind": "category", **column.state()}
    return {"kind": "array", "values": column}


def column_from_state(state):
    if not isinstance(state, dict) or state.get("kind") not in ("string", "category", "array"):
        raise ValueError("A stored column is not one of string, category or array.")
    if state["kind"] == "string":
        return StringColumn(state["data"], state["offsets"])
    if state["kind"] == "category":
        return CategoryColumn(state["codes"], StringColumn(**state["categories"]))
    values = np.asarray(state["values"])
    if values.dtype.hasobject or values.dtype.kind not in "biufM":
        raise ValueError(f"A stored column holds {values.dtype} values; columns hold numbers, booleans or dates.")
    return values


def python_value(column, position):
    """Row ``position`` of ``column`` as a plain Python value (None when missing)."""
    if isinstance(column, (StringColumn, CategoryColumn)):
        return column[position]
    value = column[position]
    if column.dtype.kind == "M":
        if np.isnat(value):
            return None
        return value.astype("datetime64[us]").item()  # datetime.datetime (or date for day units)
    if column.dtype.kind == "f" and np.isnan(value):
        return None
    return value.item()


def numpy_values(column):
    """The column as a NumPy array (strings as objects, None where missing)."""
    if isinstance(column, (StringColumn, CategoryColumn)):
        return column.values()
    return column


# ------------------------------------------------------------------- table
class Table:
    """Named columns of equal length, in a fixed order.

    Parameters
    ----------
    columns : dict of str to column
        The columns, each one value per row.
    """

    def __init__(self, columns=None):
        self.columns = dict(columns or {})
        lengths = {name: len(column) for name, column in self.columns.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"The columns have different lengths: {lengths}.")

    def __len__(self):
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def __contains__(self, name):
        return name in self.columns

    def __getitem__(self, name):
        return self.columns[name]

    def __setitem__(self, name, column):
        if self.columns and len(column) != len(self):
            raise ValueError(f"Column {name!r} has {len(column)} values for {len(self)} rows.")
        self.columns[name] = column

    def names(self):
        return list(self.columns)

    def take(self, rows):
        return Table({name: take(column, rows) for name, column in self.columns.items()})

    def append(self, other):
        """This table with ``other``'s rows after its own; a column either lacks is missing there."""
        if not self.columns:
            return Table(other.columns)
        if not len(other):
            return self
        names = self.names() + [name for name in other.names() if name not in self.columns]
        joined = {}
        for name in names:
            mine = self.columns.get(name)
            theirs = other.columns.get(name)
            mine = missing_values(theirs, len(self)) if mine is None else mine
            theirs = missing_values(mine, len(other)) if theirs is None else theirs
            joined[name] = concat([mine, theirs])
        return Table(joined)

    @property
    def nbytes(self):
        return sum(column.nbytes for column in self.columns.values())

    def state(self):
        return {name: column_state(column) for name, column in self.columns.items()}

    @classmethod
    def from_state(cls, state):
        if not isinstance(state, dict):
            raise ValueError("The stored metadata is not a table of columns.")
        return cls({str(name): column_from_state(column) for name, column in state.items()})

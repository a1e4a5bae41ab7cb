"""A user's own columns, joined to an index by path: from a CSV file, a pandas DataFrame or a dict.

Types are kept: a CSV column whose every value is a whole number becomes
integers (floats when some are blank), decimals floats, ISO dates
(``2023-06-01``, ``2023-06-01 14:30:00``) dates, ``true``/``false``
booleans, anything else text. A DataFrame's columns keep their dtypes.
"""

from __future__ import annotations

import csv
import datetime
import os
import re

import numpy as np

from ._columns import CategoryColumn, Table

KEY = "path"
_INTEGER = re.compile(r"[+-]?\d{1,18}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?)?")
_MAX_LISTED = 5


def read_metadata(metadata, root, reserved):
    """``(absolute paths, Table of the user's columns)`` of ``metadata``, one row per path.

    Parameters
    ----------
    metadata : str, path-like, pandas.DataFrame or dict
        A CSV file with a header row, a DataFrame, or a dict of columns; each
        has a ``path`` column (a DataFrame may have it as its index).
    root : str or None
        Relative paths are taken under this folder (the indexed one), else
        under the current folder.
    reserved : collection of str
        Column names the index records itself, which a user's column may not take.
    """
    if isinstance(metadata, (str, os.PathLike)):
        source, columns = f"{os.fspath(metadata)}", _read_csv(metadata)
    elif isinstance(metadata, dict):
        source, columns = (
            "the metadata",
            {str(name): _from_sequence(str(name), values) for name, values in metadata.items()},
        )
    elif hasattr(metadata, "columns") and hasattr(metadata, "dtypes"):
        source, columns = "the DataFrame", _from_frame(metadata)
    else:
        raise TypeError(
            f"metadata must be a CSV file, a pandas DataFrame or a dict of columns; got {type(metadata).__name__}."
        )
    if KEY not in columns:
        raise ValueError(f"{source} has no {KEY!r} column: give each row the path of its image.")
    keys = columns.pop(KEY)
    keys = keys.values() if isinstance(keys, CategoryColumn) else np.asarray(keys)
    if any(not isinstance(key, str) or not key for key in keys):
        raise ValueError(f"The {KEY!r} column of {source} must hold a file path in every row.")
    for name in columns:
        if not name or name in reserved:
            what = "an empty name" if not name else f"{name!r}, a column the index records itself"
            raise ValueError(f"{source} has a column named {what}; rename it.")
    base = root if root is not None else os.getcwd()
    paths = [os.path.abspath(os.path.join(base, os.path.expanduser(key))) for key in keys]
    seen = set()
    for path in paths:
        if path in seen:
            raise ValueError(f"{source} names {path} more than once; give one row per image.")
        seen.add(path)
    return paths, Table(columns), source


# -------------------------------------------------------------------- CSV
def _read_csv(path):
    try:
        with open(path, newline="", encoding="utf-8-sig") as file:
            rows = list(csv.reader(file))
    except FileNotFoundError:
        raise FileNotFoundError(f"No metadata file at {path}.") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8 text ({exc.reason}); save the CSV as UTF-8.") from None
    except csv.Error as exc:
        raise ValueError(f"{path} is not a readable CSV file ({exc}).") from None
    if not rows:
        raise ValueError(f"{path} is empty; it needs a header row naming its columns, one of them {KEY!r}.")
    header, body = [name.strip() for name in rows[0]], rows[1:]
    if len(set(header)) != len(header):
        raise ValueError(f"{path} names a column twice in its header: {header}.")
    for line, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise ValueError(f"{path}, line {line}: {len(row)} values for {len(header)} columns.")
    return {name: _typed([row[i] for row in body]) for i, name in enumerate(header)}


def _typed(texts):
    """A CSV column's values as numbers, booleans, dates or text, whichever they all are."""
    present = [text.strip() for text in texts if text.strip()]
    has_gaps = len(present) < len(texts)
    if present and all(_INTEGER.fullmatch(text) for text in present):
        if not has_gaps:
            return np.array([int(text) for text in texts], dtype=np.int64)
        return np.array([float(text) if text.strip() else np.nan for text in texts], dtype=np.float64)
    if present and all(_is_float(text) for text in present):
        return np.array([float(text) if text.strip() else np.nan for text in texts], dtype=np.float64)
    if present and not has_gaps and all(text.lower() in ("true", "false") for text in present):
        return np.array([text.strip().lower() == "true" for text in texts], dtype=bool)
    if present and all(_DATE.fullmatch(text) for text in present):
        return np.array(
            [np.datetime64(text.strip().replace(" ", "T"), "s") if text.strip() else "NaT" for text in texts],
            dtype="datetime64[s]",
        )
    return CategoryColumn.from_values([text if text.strip() else None for text in texts])


def _is_float(text):
    try:
        float(text)
    except ValueError:
        return False
    return text.strip().lower() not in ("nan", "inf", "-inf", "+inf", "infinity", "-infinity")


# ----------------------------------------------------------- pandas, dict
def _from_frame(frame):
    if KEY not in frame.columns and frame.index.name == KEY:
        frame = frame.reset_index()
    return {str(name): _from_series(str(name), frame[name]) for name in frame.columns}


def _from_series(name, series):
    import pandas as pd

    dtype = series.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        series = series.dt.tz_convert("UTC").dt.tz_localize(None)
        dtype = series.dtype
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return series.to_numpy(dtype="datetime64[ns]")
    if pd.api.types.is_bool_dtype(dtype) and not series.isna().any():
        return series.to_numpy(dtype=bool)
    if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_complex_dtype(dtype):
        if pd.api.types.is_integer_dtype(dtype) and not series.isna().any():
            return series.to_numpy(dtype=np.int64)
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    values = series.astype(object).where(series.notna(), None).tolist()
    return _from_sequence(name, values)


def _from_sequence(name, values):
    """A column from plain values: numbers, booleans, dates (datetime objects) or text (None: missing)."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "biufM":
        if values.ndim != 1:
            raise ValueError(f"Column {name!r} must be one value per image; got shape {values.shape}.")
        return values.astype(np.float64) if values.dtype.kind == "u" and values.dtype.itemsize == 8 else values
    values = list(values)
    present = [value for value in values if value is not None]
    if present and all(isinstance(value, str) for value in present):
        return CategoryColumn.from_values(values)
    if present and all(isinstance(value, datetime.date) for value in present):
        return np.array([np.datetime64("NaT") if v is None else np.datetime64(v, "s") for v in values], "datetime64[s]")
    if present and all(isinstance(value, (bool, np.bool_)) for value in present) and len(present) == len(values):
        return np.array(values, dtype=bool)
    if all(isinstance(value, (int, float, np.integer, np.floating)) for value in present):
        if len(present) == len(values) and all(isinstance(value, (int, np.integer)) for value in present):
            return np.array(values, dtype=np.int64)
        return np.array([np.nan if value is None else value for value in values], dtype=np.float64)
    kinds = sorted({type(value).__name__ for value in present})
    raise ValueError(
        f"Column {name!r} mixes {', '.join(kinds)} values; a column holds one kind: text, numbers, True/False or dates."
    )


def unmatched_warning(source, unmatched):
    listed = ", ".join(unmatched[:_MAX_LISTED]) + (
        f" and {len(unmatched) - _MAX_LISTED} more" if len(unmatched) > _MAX_LISTED else ""
    )
    return f"{len(unmatched)} row(s) of {source} name files that are not in the index, and were left out: {listed}."

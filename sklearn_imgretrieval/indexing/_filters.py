"""Filter expressions over an index's columns: parsed, checked, evaluated with NumPy.

The text is read in pandas' query syntax (``folder == 'trip' and taken >=
'2023-01-01'``) by Python's own parser, ``ast.parse``, into a syntax tree
that is never compiled or run: only a few node kinds are accepted
(comparisons of a column with a value, ``and``, ``or``, ``not``,
parentheses, lists of values for ``in``), every other kind is refused by
name, and the accepted tree is evaluated here, one NumPy comparison per
column. Nothing in the text can call a function, read an attribute, reach a
name outside the index's columns or make a large value: sizes and nesting
are bounded before anything is evaluated.
"""

from __future__ import annotations

import ast
import operator

import numpy as np

from ._columns import CategoryColumn, StringColumn

#: Limits of an expression: characters, syntax nodes, nesting, values in a list, characters of a string.
MAX_CHARS = 10_000
MAX_NODES = 2_000
MAX_DEPTH = 24
MAX_LIST_ITEMS = 1000
MAX_STRING_CHARS = 1000
_INT64 = 2**63

GRAMMAR = (
    "A filter compares columns with values, joined by and, or, not and parentheses: "
    "folder == 'shoot-2023' and taken >= '2023-01-01', label in ['cat', 'dog'], "
    "not (width < 1000 or camera == None). Comparisons: == != < <= > >= in, not in; values: "
    "quoted text, numbers, True/False, None (a missing value), dates as quoted text "
    "('2023-06-01' or '2023-06-01 14:30'); a column name with spaces goes in backticks."
)

_COMPARISONS = {
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.In: "in",
    ast.NotIn: "not in",
}
_FLIPPED = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
_NUMPY = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_REFUSED = {
    ast.Call: "function calls",
    ast.Attribute: "attribute access (x.y)",
    ast.Subscript: "subscripts (x[...])",
    ast.Lambda: "lambdas",
    ast.BinOp: "arithmetic",
    ast.JoinedStr: "f-strings",
    ast.NamedExpr: "assignments",
    ast.IfExp: "if-else expressions",
    ast.Dict: "dictionaries",
    ast.Set: "sets (use a list)",
    ast.ListComp: "comprehensions",
    ast.GeneratorExp: "comprehensions",
    ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions",
    ast.Starred: "starred expressions",
    ast.Await: "await",
}


def _refuse(what, text=None):
    detail = f" in {text!r:.120}" if text is not None else ""
    return ValueError(f"Not a filter{detail}: {what}. {GRAMMAR}")


class Filter:
    """A checked filter expression, ready to evaluate on an index's columns.

    Attributes
    ----------
    text : str
        The expression as given.
    columns : list of str
        The columns it reads.
    """

    def __init__(self, text, tree):
        self.text, self.tree = text, tree
        self.columns = sorted(_columns_of(tree))

    def __repr__(self):
        return f"Filter({self.text!r})"

    def evaluate(self, column_of, n_rows):
        """The boolean mask of the rows that match; ``column_of(name)`` gives a column."""
        return _evaluate(self.tree, column_of, n_rows)


def parse_filter(text, kinds):
    """Parse and check ``text`` against the columns' kinds; a :class:`Filter` or a ValueError.

    Parameters
    ----------
    text : str
        The expression.
    kinds : dict of str to str
        Each column's name and kind ("string", "category", "number", "date", "bool").
    """
    if not isinstance(text, str):
        raise TypeError(f"A filter expression is text; got {type(text).__name__}.")
    if len(text) > MAX_CHARS:
        raise _refuse(f"it has {len(text)} characters, more than {MAX_CHARS}")
    if not text.strip():
        raise _refuse("it is empty")
    source, quoted_names = _replace_backticks(text)
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:
        reason = exc.msg if isinstance(exc, SyntaxError) else str(exc) or type(exc).__name__
        raise _refuse(f"it is not valid syntax ({reason})", text) from None
    n_nodes = sum(1 for _ in ast.walk(tree))
    if n_nodes > MAX_NODES:
        raise _refuse(f"it has {n_nodes} parts, more than {MAX_NODES}", text)
    parser = _Parser(text, kinds, quoted_names)
    return Filter(text, parser.expression(tree.body, 0))


def _replace_backticks(text):
    """``text`` with each `quoted name` (outside string literals) as a placeholder, and the names."""
    out, names, i, quote = [], {}, 0, None
    while i < len(text):
        char = text[i]
        if quote is not None:
            out.append(char)
            if char == "\\":
                out.append(text[i + 1 : i + 2])
                i += 2
                continue
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
            out.append(char)
        elif char == "`":
            end = text.find("`", i + 1)
            if end < 0:
                raise _refuse("a backtick is not closed", text)
            placeholder = f"_quoted_name_{len(names)}"
            names[placeholder] = text[i + 1 : end]
            out.append(f" {placeholder} ")
            i = end + 1
            continue
        else:
            out.append(char)
        i += 1
    return "".join(out), names


class _Parser:
    def __init__(self, text, kinds, quoted_names):
        self.text, self.kinds, self.quoted_names = text, kinds, quoted_names

    def refuse(self, what):
        return _refuse(what, self.text)

    def expression(self, node, depth):
        if depth > MAX_DEPTH:
            raise self.refuse(f"it nests deeper than {MAX_DEPTH} levels")
        if isinstance(node, ast.BoolOp):
            kind = "and" if isinstance(node.op, ast.And) else "or"
            return (kind, [self.expression(value, depth + 1) for value in node.values])
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return ("not", self.expression(node.operand, depth + 1))
        if isinstance(node, ast.Compare):
            return self.comparison(node)
        if isinstance(node, ast.Name):  # a bare column: a boolean column's True rows
            name = self.column(node)
            if self.kinds[name] != "bool":
                raise self.refuse(f"{name} is not a True/False column; compare it with a value")
            return ("compare", name, "==", True)
        raise self.refuse(f"{self.describe(node)} are not allowed")

    def describe(self, node):
        if isinstance(getattr(node, "op", None), (ast.BitAnd, ast.BitOr, ast.Invert)):
            return "&, | and ~ (write and, or, not)"
        for kind, what in _REFUSED.items():
            if isinstance(node, kind):
                return what
        if isinstance(node, ast.Constant):
            return f"lone values ({node.value!r:.40})"
        return f"{type(node).__name__} expressions"

    def column(self, node):
        name = self.quoted_names.get(node.id, node.id)
        if name not in self.kinds:
            if name.startswith("_") and node.id not in self.quoted_names:
                raise self.refuse(f"names starting with _ ({name}) are not columns")
            raise self.refuse(f"there is no column {name!r}; the columns are {', '.join(self.kinds)}")
        return name

    def comparison(self, node):
        operands = [node.left, *node.comparators]
        parts = []
        for left, op, right in zip(operands[:-1], node.ops, operands[1:]):
            symbol = _COMPARISONS.get(type(op))
            if symbol is None:
                raise self.refuse("'is' and 'is not' are not comparisons here: write == None or != None")
            if isinstance(left, ast.Name):
                column, value_node = self.column(left), right
            elif isinstance(right, ast.Name) and symbol in _FLIPPED:
                column, value_node, symbol = self.column(right), left, _FLIPPED[symbol]
            else:
                for side in (left, right):
                    if not isinstance(side, (ast.Constant, ast.UnaryOp, ast.List, ast.Tuple, ast.Name)):
                        raise self.refuse(f"{self.describe(side)} are not allowed")
                raise self.refuse("each comparison needs a column on one side and a value on the other")
            parts.append(("compare", column, symbol, self.value_for(column, symbol, value_node)))
        return parts[0] if len(parts) == 1 else ("and", parts)

    def literal(self, node):
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            value = self.literal(node.operand)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise self.refuse("a sign goes before a number only")
            return -value if isinstance(node.op, ast.USub) else value
        if not isinstance(node, ast.Constant):
            raise self.refuse(f"{self.describe(node)} are not allowed as values")
        value = node.value
        if value is not None and not isinstance(value, (str, int, float, bool)):
            raise self.refuse(f"{type(value).__name__} values are not allowed")
        if isinstance(value, str) and len(value) > MAX_STRING_CHARS:
            raise self.refuse(f"a text value is longer than {MAX_STRING_CHARS} characters")
        if isinstance(value, int) and not isinstance(value, bool) and not -_INT64 <= value < _INT64:
            raise self.refuse("a whole number does not fit in 64 bits")
        if isinstance(value, float) and not np.isfinite(value):
            raise self.refuse("numbers must be finite")
        return value

    def value_for(self, column, symbol, node):
        kind = self.kinds[column]
        if symbol in ("in", "not in"):
            if not isinstance(node, (ast.List, ast.Tuple)):
                raise self.refuse(f"{symbol} takes a list of values, such as {column} {symbol} ['a', 'b']")
            if len(node.elts) > MAX_LIST_ITEMS:
                raise self.refuse(f"a list has {len(node.elts)} values, more than {MAX_LIST_ITEMS}")
            return [self.converted(column, kind, self.literal(item)) for item in node.elts]
        value = self.literal(node)
        if value is None:
            if symbol not in ("==", "!="):
                raise self.refuse(f"None (a missing value) takes == or != only, not {symbol}")
            return None
        if kind == "bool" and symbol not in ("==", "!="):
            raise self.refuse(f"{column} is True or False: compare it with == or !=")
        return self.converted(column, kind, value)

    def converted(self, column, kind, value):
        if value is None:
            raise self.refuse("None cannot be in a list; use == None")
        if kind in ("string", "category"):
            if not isinstance(value, str):
                raise self.refuse(f"{column} holds text: compare it with quoted text, such as {column} == 'x'")
            return value
        if kind == "bool":
            if not isinstance(value, bool):
                raise self.refuse(f"{column} is True or False: compare it with True or False")
            return value
        if kind == "date":
            if not isinstance(value, str):
                raise self.refuse(f"{column} holds dates: compare it with a quoted date, such as '2023-06-01'")
            return self.date(column, value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.refuse(f"{column} holds numbers: compare it with a number, such as {column} > 100")
        return value

    def date(self, column, text):
        cleaned = text.strip().replace(" ", "T", 1)
        try:
            return np.datetime64(cleaned)
        except ValueError:
            pass
        raise self.refuse(f"{text!r} is not a date for {column}: write '2023-06-01' or '2023-06-01 14:30:00'")


def _columns_of(tree):
    kind = tree[0]
    if kind == "compare":
        return {tree[1]}
    if kind == "not":
        return _columns_of(tree[1])
    return set().union(*(_columns_of(child) for child in tree[1]))


def _evaluate(tree, column_of, n_rows):
    kind = tree[0]
    if kind == "and":
        mask = np.ones(n_rows, dtype=bool)
        for child in tree[1]:
            mask &= _evaluate(child, column_of, n_rows)
        return mask
    if kind == "or":
        mask = np.zeros(n_rows, dtype=bool)
        for child in tree[1]:
            mask |= _evaluate(child, column_of, n_rows)
        return mask
    if kind == "not":
        return ~_evaluate(tree[1], column_of, n_rows)
    _, name, symbol, value = tree
    return _compare(column_of(name), symbol, value)


def _missing(column):
    if isinstance(column, CategoryColumn):
        return column.codes < 0
    if isinstance(column, StringColumn):
        return np.zeros(len(column), dtype=bool)
    if column.dtype.kind == "M":
        return np.isnat(column)
    if column.dtype.kind == "f":
        return np.isnan(column)
    return np.zeros(len(column), dtype=bool)


def _compare(column, symbol, value):
    if value is None:
        missing = _missing(column)
        return missing if symbol == "==" else ~missing
    if isinstance(column, CategoryColumn):
        # Compare each distinct value once, then read the answer through the codes (-1: missing).
        names = column.categories.values()
        per_name = _compare(names, symbol, value) if len(names) else np.zeros(0, dtype=bool)
        return np.append(per_name, symbol in ("!=", "not in"))[column.codes]
    if isinstance(column, StringColumn):
        column = column.values()
    if symbol in ("in", "not in"):
        found = np.isin(column, np.asarray(value, dtype=object if column.dtype == object else None))
        return found if symbol == "in" else ~found
    if column.dtype == object:  # str objects: NumPy compares them one by one
        return np.fromiter((_NUMPY[symbol](item, value) for item in column), dtype=bool, count=len(column))
    return np.asarray(_NUMPY[symbol](column, value), dtype=bool)

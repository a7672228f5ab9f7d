"""Column types as text: `int64`, `string`, `timestamp[us, UTC]`, `decimal128(18, 2)`, `list[int64]`.

A small grammar over pyarrow's own type constructors, shared by the command
line (`--schema`) and project declarations: a name from `_SIMPLE`, or a
parametrized one from `_PARAMETRIZED` with its arguments in brackets or parentheses.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pyarrow as pa

_SIMPLE: dict[str, Callable[[], pa.DataType]] = {
    "bool": pa.bool_, "boolean": pa.bool_,
    "int8": pa.int8, "int16": pa.int16, "int32": pa.int32, "int64": pa.int64,
    "tinyint": pa.int8, "smallint": pa.int16, "int": pa.int32, "integer": pa.int32,
    "bigint": pa.int64, "long": pa.int64,
    "float32": pa.float32, "float": pa.float32, "float64": pa.float64, "double": pa.float64,
    "string": pa.string, "str": pa.string, "utf8": pa.string, "binary": pa.binary,
    "date": pa.date32, "date32": pa.date32,
}


def _timestamp(args: list[str]) -> pa.DataType:
    if not 1 <= len(args) <= 2:
        raise ValueError("takes a unit and an optional time zone: timestamp[us] or timestamp[us,UTC]")
    return pa.timestamp(args[0], tz=args[1] if len(args) == 2 else None)


def _decimal(args: list[str]) -> pa.DataType:
    if len(args) != 2:
        raise ValueError("takes a precision and a scale: decimal[10,2]")
    return pa.decimal128(int(args[0]), int(args[1]))


def _list(args: list[str]) -> pa.DataType:
    if len(args) != 1:
        raise ValueError("takes one item type: list[int64]")
    return pa.list_(parse_type(args[0]))


_PARAMETRIZED: dict[str, Callable[[list[str]], pa.DataType]] = {
    "timestamp": _timestamp, "decimal": _decimal, "decimal128": _decimal, "list": _list,
}
_TYPE = re.compile(r"^\s*(\w+)\s*(?:[\[(](.*)[\])])?\s*$", re.S)


def split_top_level(text: str) -> list[str]:
    """Split at top-level commas (not those inside brackets)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def parse_type(text: str) -> pa.DataType:
    """One type, e.g. `int64` or `timestamp[us,UTC]`.

    Raises:
        ValueError: unknown type name or bad arguments, saying which.
    """
    m = _TYPE.match(text)
    name = m.group(1).lower() if m else ""
    if m and m.group(2) is None and name in _SIMPLE:
        return _SIMPLE[name]()
    if m and m.group(2) is not None and name in _PARAMETRIZED:
        try:
            return _PARAMETRIZED[name]([a.strip() for a in split_top_level(m.group(2))])
        except (ValueError, TypeError, pa.ArrowException) as e:
            raise ValueError(f"bad type {text.strip()!r}: {name} {e}") from e
    known = ", ".join([*_SIMPLE, *(f"{n}[...]" for n in _PARAMETRIZED)])
    raise ValueError(f"unknown type {text.strip()!r}; known types: {known}")


__all__ = ["parse_type", "split_top_level"]

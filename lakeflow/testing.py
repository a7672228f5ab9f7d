"""Helpers for testing pipelines built on lakeflow: table comparison and data strategies.

`hypothesis` is only needed for the strategies; import them lazily so the
comparison helpers work without it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from lakeflow.write import to_arrow_table


def _canonical_rows(table: pa.Table, columns: Sequence[str]) -> Counter[str]:
    return Counter(repr(tuple(row[c] for c in columns)) for row in table.to_pylist())


def assert_table_equal(actual: Any, expected: Any, *, check_order: bool = False,
                       check_types: bool = True) -> None:
    """Assert two tables hold the same rows, as multisets unless `check_order`.

    Accepts anything `Table.append` accepts (pyarrow, polars, pandas, ...). Column
    order is ignored; column names must match. With `check_types`, Arrow types
    must be equal after mapping string/large_string/string_view to one type.

    Raises:
        AssertionError: describing the first difference.
    """
    left, right = to_arrow_table(actual), to_arrow_table(expected)
    if sorted(left.column_names) != sorted(right.column_names):
        raise AssertionError(f"columns differ: {sorted(left.column_names)} != {sorted(right.column_names)}")
    columns = sorted(left.column_names)
    if check_types:
        for c in columns:
            lt, rt = _norm_type(left.schema.field(c).type), _norm_type(right.schema.field(c).type)
            if lt != rt:
                raise AssertionError(f"column {c!r}: type {left.schema.field(c).type} != {right.schema.field(c).type}")
    if left.num_rows != right.num_rows:
        raise AssertionError(f"row counts differ: {left.num_rows} != {right.num_rows}")
    if check_order:
        lrows, rrows = left.select(columns).to_pylist(), right.select(columns).to_pylist()
        for i, (a, b) in enumerate(zip(lrows, rrows, strict=False)):
            if a != b:
                raise AssertionError(f"row {i} differs: {a} != {b}")
        return
    lc, rc = _canonical_rows(left, columns), _canonical_rows(right, columns)
    if lc != rc:
        only_left = list((lc - rc).elements())[:3]
        only_right = list((rc - lc).elements())[:3]
        raise AssertionError(f"rows differ; only in actual: {only_left}; only in expected: {only_right}")


def _norm_type(t: pa.DataType) -> pa.DataType:
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return pa.binary()
    if pa.types.is_large_list(t):
        return pa.list_(_norm_type(t.value_type))
    return t


def arrow_tables(schema: pa.Schema, max_rows: int = 20) -> Any:
    """A hypothesis strategy of `pyarrow.Table`s with `schema` (primitive columns)."""
    import datetime as dt

    from hypothesis import strategies as st

    def values(field: pa.Field) -> Any:
        t = field.type
        if pa.types.is_integer(t):
            bits = t.bit_width - 1
            base: Any = st.integers(-(2**bits), 2**bits - 1)
        elif pa.types.is_floating(t):
            base = st.floats(allow_nan=False, allow_infinity=False, width=t.bit_width)
        elif pa.types.is_string(t):
            base = st.text(max_size=12)
        elif pa.types.is_boolean(t):
            base = st.booleans()
        elif pa.types.is_date(t):
            base = st.dates(dt.date(1970, 1, 1), dt.date(2100, 1, 1))
        elif pa.types.is_timestamp(t):
            naive = st.datetimes(dt.datetime(1970, 1, 1), dt.datetime(2100, 1, 1))
            base = naive.map(lambda d: d.replace(tzinfo=dt.timezone.utc)) if t.tz else naive
        else:
            raise ValueError(f"no strategy for {t}")
        return st.none() | base if field.nullable else base

    row = st.fixed_dictionaries({f.name: values(f) for f in schema})
    return st.lists(row, max_size=max_rows).map(lambda rows: pa.Table.from_pylist(rows, schema=schema))


__all__ = ["arrow_tables", "assert_table_equal"]

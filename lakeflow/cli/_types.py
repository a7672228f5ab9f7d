"""`--schema "id:int64,amount:double,ts:timestamp[us,UTC]"`: column types as text.

`name:type`, separated by commas, a type as `lakeflow.types.parse_type` reads
it (`timestamp[us,UTC]`, `decimal[10,2]`, `list[int64]`); ` not null` after a
type makes the column non-nullable.
"""

from __future__ import annotations

import re

import pyarrow as pa
import typer

from lakeflow.types import parse_type, split_top_level

_NOT_NULL = re.compile(r"\s+not\s+null\s*$", re.I)


def parse_schema(text: str) -> pa.Schema:
    """`name:type[ not null],...` as a pyarrow schema.

    Raises:
        typer.BadParameter: a column is malformed or its type unknown, naming it.
    """
    fields = []
    for part in split_top_level(text):
        name, sep, type_text = part.partition(":")
        if not sep or not name.strip():
            raise typer.BadParameter(f"{part.strip()!r} is not NAME:TYPE")
        nullable = not _NOT_NULL.search(type_text)
        try:
            fields.append(pa.field(name.strip(), parse_type(_NOT_NULL.sub("", type_text)), nullable=nullable))
        except ValueError as e:
            raise typer.BadParameter(f"column {name.strip()!r}: {e}") from e
    return pa.schema(fields)

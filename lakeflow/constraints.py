"""The rules a Delta table declares for the rows written to it, enforced on every write.

A writer of Delta writer version N honours every feature of versions <= N:
append-only tables and column invariants (2), CHECK constraints (3), generated
columns (4), identity columns (6); or, on version 7, the features listed. lakeflow
enforces each rule the table declares, whatever the protocol lists (stricter than
required, never looser):

- invariants (`delta.invariants` in field metadata) and CHECK constraints
  (`delta.constraints.<name>`): every row must evaluate to true; false or NULL
  refuses the whole write, as Spark and deltalake do;
- generated columns (`delta.generationExpression`): computed when the writer
  does not provide the column, else the value must equal the expression
  (NULL-safe);
- `delta.appendOnly=true`: no remove with dataChange (delete, updating merge);
  compaction (dataChange=false) stays allowed;
- identity columns and column defaults are not implemented: refused.

Expressions are Spark SQL; they are evaluated by polars' SQL engine over the
rows (Arrow, zero-copy). An expression polars cannot evaluate, or one calling a
function whose polars semantics differ from Spark's, is refused before anything
is written.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, overload

import polars as pl
import pyarrow as pa

from lakeflow.actions import Metadata
from lakeflow.errors import AppendOnlyError, ConstraintViolationError, UnsupportedFeatureError
from lakeflow.log import TableState

CONSTRAINT_PREFIX = "delta.constraints."
_ROWS = "__lakeflow_rows"
_VALUE = "__lakeflow_value"
# polars SQL functions that parse but differ from Spark's: concat skips NULLs (Spark
# returns NULL), round rounds half to even (Spark rounds half up).
_DIVERGENT = re.compile(r"\b(concat|round)\s*\(", re.IGNORECASE)
_SAMPLE_CHARS = 300


@dataclass(frozen=True)
class Rule:
    """One boolean rule every written row must satisfy."""

    kind: str  # "invariant" or "CHECK constraint"
    name: str
    expression: str


@dataclass(frozen=True)
class TableRules:
    """What a table's metadata declares about the rows written to it."""

    rules: tuple[Rule, ...]
    generated: Mapping[str, str]  # column -> generation expression
    append_only: bool

    @property
    def checks_rows(self) -> bool:
        """Whether written rows need evaluating at all."""
        return bool(self.rules or self.generated)


def _walk(fields: list[dict[str, Any]], prefix: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """(dotted path, field) of every field, struct members included."""
    for f in fields:
        path = prefix + f["name"]
        yield path, f
        kind = f.get("type")
        if isinstance(kind, dict) and kind.get("type") == "struct":
            yield from _walk(kind.get("fields", []), path + ".")


def _invariant(path: str, raw: Any) -> Rule:
    try:
        expression = json.loads(raw)["expression"]["expression"]
        if not isinstance(expression, str):
            raise TypeError(expression)
    except (TypeError, ValueError, KeyError) as e:
        raise UnsupportedFeatureError(
            f"column {path!r} has an invariant lakeflow cannot read ({raw!r}); the protocol "
            "stores it as {\"expression\": {\"expression\": \"<SQL>\"}}") from e
    return Rule("invariant", path, expression)


def table_rules(metadata: Metadata) -> TableRules:
    """The rules `metadata` declares.

    Raises:
        UnsupportedFeatureError: the table has identity columns or column defaults,
            or an invariant that cannot be read.
    """
    rules: list[Rule] = []
    generated: dict[str, str] = {}
    fields = json.loads(metadata.schema_string).get("fields", [])
    for path, f in _walk(fields):
        meta = f.get("metadata") or {}
        if any(k.startswith("delta.identity.") for k in meta):
            raise UnsupportedFeatureError(
                f"column {path!r} is an identity column (Delta writer feature identityColumns), "
                "which lakeflow cannot write yet; write this table with Spark")
        if "CURRENT_DEFAULT" in meta:
            raise UnsupportedFeatureError(
                f"column {path!r} has a default value (Delta writer feature allowColumnDefaults), "
                "which lakeflow cannot write yet; write this table with Spark")
        if "delta.invariants" in meta:
            rules.append(_invariant(path, meta["delta.invariants"]))
        if "delta.generationExpression" in meta and "." not in path:
            generated[path] = str(meta["delta.generationExpression"])
    config = metadata.configuration
    rules += [Rule("CHECK constraint", k[len(CONSTRAINT_PREFIX):], v)
              for k, v in sorted(config.items()) if k.startswith(CONSTRAINT_PREFIX)]
    append_only = config.get("delta.appendOnly", "").strip().lower() == "true"
    return TableRules(tuple(rules), generated, append_only)


def _evaluate(frame: pl.DataFrame, expression: str, what: str) -> pl.Series:
    """`expression` over every row of `frame`, by polars SQL.

    Raises:
        UnsupportedFeatureError: polars cannot evaluate it to one value per row, or
            it calls a function polars evaluates differently from Spark.
    """
    divergent = _DIVERGENT.search(expression)
    if divergent:
        raise UnsupportedFeatureError(
            f"the {what} `{expression}` calls {divergent.group(1)}(), which polars SQL evaluates "
            "differently from Spark SQL; lakeflow refuses to write this table rather than "
            "risk a wrong result, write it with Spark")
    try:
        pl.sql_expr(expression)  # exactly one expression, not a query fragment
        out = pl.SQLContext(frames={_ROWS: frame}).execute(
            f"SELECT {expression} AS {_VALUE} FROM {_ROWS}", eager=True)
    except (pl.exceptions.PolarsError, ValueError, TypeError) as e:
        raise UnsupportedFeatureError(
            f"cannot evaluate the {what} `{expression}` with polars SQL ({e}); lakeflow "
            "refuses to write rows it cannot check, write this table with Spark") from e
    if out.columns != [_VALUE] or out.height != frame.height:
        raise UnsupportedFeatureError(
            f"the {what} `{expression}` does not give one value per row in polars SQL; "
            "lakeflow refuses to write rows it cannot check")
    return out.to_series()


def _sample(rows: pa.Table, bad: pl.Series) -> str:
    index = int(bad.arg_true()[0])
    text = repr(rows.slice(index, 1).to_pylist()[0])
    return text if len(text) <= _SAMPLE_CHARS else text[:_SAMPLE_CHARS] + "...}"


def _generate(rows: pa.Table, frame: pl.DataFrame, generated: Mapping[str, str],
              provided: Collection[str] | None) -> pa.Table:
    """Fill the generated columns the writer left out; check the ones it gave."""
    for column, expression in generated.items():
        what = f"generation expression of column {column!r}"
        field = rows.schema.field(column)
        try:
            value = pa.chunked_array([_evaluate(frame, expression, what).to_arrow()]).cast(
                field.type, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise ConstraintViolationError(
                f"the {what} `{expression}` gives values that cannot be stored as {field.type}: {e}"
            ) from e
        if provided is not None and column not in provided:
            rows = rows.set_column(rows.schema.get_field_index(column), field, value)
            continue
        same = pl.Series(rows.column(column)).eq_missing(pl.Series(value))
        if not same.all():
            expected = value[int((~same).arg_true()[0])].as_py()
            raise ConstraintViolationError(
                f"column {column!r} is generated as `{expression}`, but {int((~same).sum())} "
                f"row(s) hold another value, e.g. {_sample(rows, ~same)} (expected {expected!r}); "
                "leave the column out to have lakeflow compute it; nothing was written")
    return rows


def _check(rows: pa.Table, frame: pl.DataFrame, rules: Collection[Rule]) -> None:
    for rule in rules:
        what = f"{rule.kind} {rule.name!r}"
        result = _evaluate(frame, rule.expression, what)
        if result.dtype != pl.Boolean:
            raise UnsupportedFeatureError(
                f"the {what} `{rule.expression}` is not a boolean expression in polars SQL "
                f"(it gives {result.dtype}); lakeflow refuses to write rows it cannot check")
        bad = ~result.fill_null(False)  # NULL fails, as in Spark and deltalake
        if bad.any():
            raise ConstraintViolationError(
                f"{int(bad.sum())} of {rows.num_rows} row(s) break the {what} "
                f"`{rule.expression}` (false or NULL), e.g. {_sample(rows, bad)}; nothing was written")


@overload
def enforce(state: TableState, rows: pa.Table, *, provided: Collection[str] | None = None,
            removes: bool = False) -> pa.Table: ...


@overload
def enforce(state: TableState, rows: None = None, *, provided: Collection[str] | None = None,
            removes: bool = False) -> None: ...


def enforce(state: TableState, rows: pa.Table | None = None, *,
            provided: Collection[str] | None = None, removes: bool = False) -> pa.Table | None:
    """Apply the table's rules to a write, before anything of it is written.

    Args:
        state: the table state the write is prepared against.
        rows: the rows the write adds, in the table schema (None: it adds none).
        provided: the columns the writer gave values for; generated columns not
            among them are computed (None: all were given, so all are checked).
        removes: whether the write removes rows (a remove with dataChange=true).

    Returns:
        `rows` with the generated columns filled in.

    Raises:
        ConstraintViolationError: a row breaks an invariant, a CHECK constraint or
            a generation expression.
        AppendOnlyError: the write removes rows of an append-only table.
        UnsupportedFeatureError: a rule lakeflow cannot evaluate or implement.
    """
    rules = table_rules(state.metadata)
    if removes and rules.append_only:
        raise AppendOnlyError(
            "the table is append-only (delta.appendOnly=true): deletes, updates and "
            "overwrites are refused, only appends are allowed; nothing was written")
    if rows is None or not rules.checks_rows:
        return rows
    frame = pl.from_arrow(rows)
    assert isinstance(frame, pl.DataFrame)
    if rules.generated:
        rows = _generate(rows, frame, rules.generated, provided)
        frame = pl.from_arrow(rows)
        assert isinstance(frame, pl.DataFrame)
    _check(rows, frame, rules.rules)
    return rows


__all__ = ["Rule", "TableRules", "enforce", "table_rules"]

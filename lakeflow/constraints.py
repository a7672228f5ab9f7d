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
- identity columns (`delta.identity.*`): values are generated for new rows that
  do not give the column (start + k * step, past the high-water mark); giving
  values is refused unless `allowExplicitInsert`; each commit that adds rows
  records the new high-water mark in its metaData (taken from the files' stats);
- column defaults are not implemented: refused.

Expressions are Spark SQL; they are evaluated by polars' SQL engine over the
rows (Arrow, zero-copy). An expression polars cannot evaluate, or one calling a
function whose polars semantics differ from Spark's, is refused before anything
is written.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, overload

import polars as pl
import pyarrow as pa

from lakeflow.actions import Action, Add, Metadata, Remove
from lakeflow.column_mapping import PHYSICAL_NAME, mapping_mode
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
class Identity:
    """An identity column: values start + k * step, beyond the high-water mark."""

    column: str
    start: int
    step: int
    high_water_mark: int | None
    allow_explicit_insert: bool
    stats_key: str | None = None  # the column's name in file statistics, if not `column` (column mapping)

    def values(self, n: int) -> pa.Array:
        """The next `n` values (the protocol's rules), refusing an int64 overflow.

        Raises:
            ConstraintViolationError: the values would overflow a long.
        """
        first = self.start
        if self.high_water_mark is not None:
            # The first start + k * step (k >= 0) strictly beyond the mark.
            k = max(0, (self.high_water_mark - self.start) // self.step + 1)
            first = self.start + k * self.step
        last = first + (n - 1) * self.step
        if n and not -(2**63) <= last < 2**63:
            raise ConstraintViolationError(
                f"identity column {self.column!r} would overflow a long generating {n} values "
                f"from {first}; nothing was written")
        return pa.array(range(first, first + n * self.step, self.step), pa.int64())

    def mark(self, adds: Sequence[Add]) -> int | None:
        """The high-water mark after committing `adds` (their stats hold the values).

        Raises:
            UnsupportedFeatureError: a file adds values but has no stats for the column.
        """
        mark, key = self.high_water_mark, self.stats_key or self.column
        for add in adds:
            stats = add.parsed_stats() or {}
            rows, nulls = stats.get("numRecords"), (stats.get("nullCount") or {}).get(key)
            bound = (stats.get("maxValues" if self.step > 0 else "minValues") or {}).get(key)
            if bound is None:
                if rows is not None and nulls is not None and nulls >= rows:
                    continue  # no values in this file
                raise UnsupportedFeatureError(
                    f"the file {add.path} has no statistics for the identity column "
                    f"{self.column!r}, so its high-water mark cannot be updated")
            if mark is None or (bound - mark) * self.step > 0:
                mark = int(bound)
        return mark


@dataclass(frozen=True)
class TableRules:
    """What a table's metadata declares about the rows written to it."""

    rules: tuple[Rule, ...]
    generated: Mapping[str, str]  # column -> generation expression
    identities: tuple[Identity, ...]
    append_only: bool

    @property
    def checks_rows(self) -> bool:
        """Whether written rows need evaluating at all."""
        return bool(self.rules or self.generated or self.identities)


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


def _identity(path: str, f: dict[str, Any], metadata: Metadata) -> Identity:
    meta = f.get("metadata") or {}
    try:
        mark = meta.get("delta.identity.highWaterMark")
        identity = Identity(path, int(meta.get("delta.identity.start", 1)),
                            int(meta.get("delta.identity.step", 1)),
                            None if mark is None else int(mark),
                            str(meta.get("delta.identity.allowExplicitInsert", "false")).lower() == "true",
                            meta.get(PHYSICAL_NAME) if mapping_mode(metadata) != "none" else None)
    except (TypeError, ValueError) as e:
        raise UnsupportedFeatureError(f"identity column {path!r} has unreadable properties {meta}") from e
    if identity.step == 0 or "." in path or f.get("type") != "long" or path in metadata.partition_columns:
        raise UnsupportedFeatureError(
            f"identity column {path!r} (feature identityColumns) is not a top-level, non-partition "
            "long column with a non-zero step; lakeflow cannot write it, write this table with Spark")
    return identity


def table_rules(metadata: Metadata) -> TableRules:
    """The rules `metadata` declares.

    Raises:
        UnsupportedFeatureError: the table has column defaults, or an invariant or
            identity column lakeflow cannot read.
    """
    rules: list[Rule] = []
    generated: dict[str, str] = {}
    identities: list[Identity] = []
    fields = json.loads(metadata.schema_string).get("fields", [])
    for path, f in _walk(fields):
        meta = f.get("metadata") or {}
        if any(k.startswith("delta.identity.") for k in meta):
            identities.append(_identity(path, f, metadata))
        if "CURRENT_DEFAULT" in meta:
            raise UnsupportedFeatureError(
                f"column {path!r} has a default value (Delta writer feature allowColumnDefaults), "
                "which lakeflow cannot write yet; write this table with Spark")
        if "delta.invariants" in meta:
            rules.append(_invariant(path, meta["delta.invariants"]))
        if "delta.generationExpression" in meta:
            if "." in path:  # Spark only generates top-level columns
                raise UnsupportedFeatureError(
                    f"the nested field {path!r} has a generation expression, which lakeflow "
                    "cannot write; write this table with Spark")
            generated[path] = str(meta["delta.generationExpression"])
    config = metadata.configuration
    rules += [Rule("CHECK constraint", k[len(CONSTRAINT_PREFIX):], v)
              for k, v in sorted(config.items()) if k.startswith(CONSTRAINT_PREFIX)]
    append_only = config.get("delta.appendOnly", "").strip().lower() == "true"
    return TableRules(tuple(rules), generated, tuple(identities), append_only)


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


def _fill_identities(rows: pa.Table, identities: Collection[Identity],
                     provided: Collection[str] | None) -> pa.Table:
    """Generate the identity values of new rows; refuse explicit ones unless allowed."""
    for identity in identities:
        if provided is None or identity.column in provided:
            if rows.num_rows and not identity.allow_explicit_insert:
                raise ConstraintViolationError(
                    f"column {identity.column!r} is an identity column whose values lakeflow "
                    "generates (delta.identity.allowExplicitInsert=false); leave it out of the "
                    "rows; nothing was written")
            continue
        i = rows.schema.get_field_index(identity.column)
        rows = rows.set_column(i, rows.schema.field(i), identity.values(rows.num_rows))
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
            removes: bool = False, new_rows: bool = True) -> pa.Table: ...


@overload
def enforce(state: TableState, rows: None = None, *, provided: Collection[str] | None = None,
            removes: bool = False, new_rows: bool = True) -> None: ...


def enforce(state: TableState, rows: pa.Table | None = None, *,
            provided: Collection[str] | None = None, removes: bool = False,
            new_rows: bool = True) -> pa.Table | None:
    """Apply the table's rules to a write, before anything of it is written.

    Args:
        state: the table state the write is prepared against.
        rows: the rows the write adds, in the table schema (None: it adds none).
        provided: the columns the writer gave values for; generated and identity
            columns not among them are computed (None: all were given, all are checked).
        removes: whether the write removes rows (a remove with dataChange=true).
        new_rows: False for updated versions of existing rows, which keep their
            identity values.

    Returns:
        `rows` with the generated and identity columns filled in.

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
    if new_rows and rules.identities:
        rows = _fill_identities(rows, rules.identities, provided)
    frame = pl.from_arrow(rows)
    assert isinstance(frame, pl.DataFrame)
    if rules.generated:
        rows = _generate(rows, frame, rules.generated, provided)
        frame = pl.from_arrow(rows)
        assert isinstance(frame, pl.DataFrame)
    _check(rows, frame, rules.rules)
    return rows



def _with_marks(metadata: Metadata, marks: Mapping[str, int]) -> Metadata:
    schema = json.loads(metadata.schema_string)
    for f in schema["fields"]:
        if f["name"] in marks:
            f["metadata"] = {**(f.get("metadata") or {}), "delta.identity.highWaterMark": marks[f["name"]]}
    return dataclasses.replace(metadata, schema_string=json.dumps(schema, separators=(",", ":")))


def keep_identity_marks(current: Metadata, restored: Metadata) -> Metadata:
    """`restored` with no identity high-water mark behind `current`'s: a restore must not reissue values."""
    now = {i.column: i for i in table_rules(current).identities}
    marks = {}
    for i in table_rules(restored).identities:
        c = now.get(i.column)
        if c is not None and c.high_water_mark is not None and (
                i.high_water_mark is None or (c.high_water_mark - i.high_water_mark) * i.step > 0):
            marks[i.column] = c.high_water_mark
    return _with_marks(restored, marks) if marks else restored


def settle(state: TableState, actions: Sequence[Action]) -> list[Action]:
    """The actions of a commit about to land on top of `state`, with the rules applied.

    Refuses removes of an append-only table (the backstop for transactions made
    by hand), and records the identity high-water marks the added rows move in the
    commit's metaData, as the protocol requires.

    Raises:
        AppendOnlyError: the transaction removes rows of an append-only table.
        UnsupportedFeatureError: an added file has no stats for an identity column.
    """
    out: list[Action] = list(actions)
    enforce(state, removes=any(isinstance(a, Remove) and a.data_change for a in out))
    metadata = next((a for a in reversed(out) if isinstance(a, Metadata)), state.metadata)
    adds = [a for a in out if isinstance(a, Add) and a.data_change]
    identities = table_rules(metadata).identities if adds else ()
    marks = {i.column: mark for i in identities
             if (mark := i.mark(adds)) is not None and mark != i.high_water_mark}
    if not marks:
        return out
    return [a for a in out if not isinstance(a, Metadata)] + [_with_marks(metadata, marks)]


__all__ = ["Identity", "Rule", "TableRules", "enforce", "keep_identity_marks", "settle", "table_rules"]

"""SQL boolean predicates, translated into `pyarrow.compute` expressions.

`predicate("day >= DATE '2024-05-01' AND account IN ('alice', 'bob')", schema)`
parses the text with sqlglot (ANSI dialect: names in double quotes, strings in
single quotes) and builds the expression a scan, a delete or a filter takes.

Supported: comparisons (`= <> != < <= > >=`), `AND`, `OR`, `NOT`, `IN (...)`,
`IS [NOT] NULL`, `BETWEEN`, and literals: numbers, 'strings', TRUE, FALSE, NULL,
`DATE '...'` and `TIMESTAMP '...'`. A string compared with a date or timestamp
column is read as an ISO-8601 date or instant; a timestamp without a zone
compared with a column that has one is taken as UTC. SQL's three-valued logic is
kept: a comparison with NULL is NULL, so `x NOT IN (1, NULL)` matches no row.
Anything else (functions, arithmetic, LIKE, subqueries, several statements) is
refused with `InvalidArgumentError` naming the construct, never guessed at.
"""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import sqlglot
from sqlglot import exp

from lakeflow.errors import InvalidArgumentError

_SUPPORTED = ("comparisons (= <> != < <= > >=), AND, OR, NOT, IN (...), IS [NOT] NULL, BETWEEN, "
              "and literals (numbers, 'strings', TRUE, FALSE, NULL, DATE '...', TIMESTAMP '...')")

_COMPARISONS: dict[type[exp.Expression], Callable[[Any, Any], pc.Expression]] = {
    exp.EQ: operator.eq, exp.NEQ: operator.ne, exp.GT: operator.gt,
    exp.GTE: operator.ge, exp.LT: operator.lt, exp.LTE: operator.le,
}


@dataclass(frozen=True)
class _Column:
    """A column (or a boolean sub-expression) with its Arrow type."""

    expr: pc.Expression
    type: pa.DataType
    name: str


@dataclass(frozen=True)
class _Literal:
    """A literal as written: `kind` is "string", "number", "bool", "null", "date" or "timestamp"."""

    value: Any
    kind: str
    text: str


_Operand = _Column | _Literal
_BOOLEAN_NODES: tuple[type[exp.Expression], ...] = (exp.And, exp.Or, exp.Not, exp.Between, exp.In, exp.Is,
                                                     *_COMPARISONS)


def predicate(sql: str, schema: pa.Schema) -> pc.Expression:
    """The `pyarrow.compute` boolean expression of a SQL predicate over `schema`.

    Args:
        sql: a SQL boolean expression, e.g. `"amount > 100 AND day = '2024-05-01'"`.
        schema: the columns it may name (matched exactly, else case-insensitively).

    Raises:
        InvalidArgumentError: the text does not parse (naming the line and column),
            names an unknown column, compares a column with a literal of another
            kind, is not boolean, or uses a construct outside the supported set.
    """
    if not isinstance(sql, str) or not sql.strip():
        raise InvalidArgumentError(f"a SQL predicate must be a non-empty string, got {sql!r}")
    try:
        tree = sqlglot.parse_one(sql)
    except sqlglot.errors.ParseError as e:
        where = e.errors[0] if e.errors else {}
        raise InvalidArgumentError(
            f"cannot parse the SQL predicate {sql!r}: {where.get('description', e)} at line "
            f"{where.get('line', '?')}, column {where.get('col', '?')} (near {where.get('highlight', '')!r})"
        ) from e
    except sqlglot.errors.SqlglotError as e:
        raise InvalidArgumentError(f"cannot parse the SQL predicate {sql!r}: {e}") from e
    return _Translator(sql, schema).boolean(tree)  # type: ignore[arg-type]  # sqlglot's Expr is an Expression


@dataclass(frozen=True)
class _Translator:
    sql: str
    schema: pa.Schema

    def refuse(self, node: exp.Expression, why: str = "is not supported") -> InvalidArgumentError:
        return InvalidArgumentError(
            f"in the SQL predicate {self.sql!r}: `{node.sql()}` ({type(node).__name__}) {why}; "
            f"supported: {_SUPPORTED}")

    def boolean(self, node: exp.Expression) -> pc.Expression:
        """`node` as a boolean expression."""
        if isinstance(node, exp.Paren):
            return self.boolean(node.this)
        if isinstance(node, exp.And):
            return self.boolean(node.this) & self.boolean(node.expression)
        if isinstance(node, exp.Or):
            return self.boolean(node.this) | self.boolean(node.expression)
        if isinstance(node, exp.Not):
            return ~self.boolean(node.this)
        op = _COMPARISONS.get(type(node))
        if op is not None:
            return self.compare(op, self.operand(node.this), self.operand(node.expression))
        if isinstance(node, exp.Between):
            value = self.operand(node.this)
            return (self.compare(operator.ge, value, self.operand(node.args["low"]))
                    & self.compare(operator.le, value, self.operand(node.args["high"])))
        if isinstance(node, exp.In):
            return self.in_list(node)
        if isinstance(node, exp.Is):
            if not isinstance(node.expression, exp.Null):
                raise self.refuse(node, "is not supported (only IS NULL and IS NOT NULL)")
            value = self.operand(node.this)
            return (value.expr.is_null() if isinstance(value, _Column)
                    else pc.scalar(value.value is None))
        if not isinstance(node, (exp.Column, exp.Literal, exp.Boolean, exp.Null, exp.Cast, exp.Neg)):
            raise self.refuse(node)
        operand = self.operand(node)
        if isinstance(operand, _Column) and pa.types.is_boolean(operand.type):
            return operand.expr
        if isinstance(operand, _Literal) and operand.kind in ("bool", "null"):
            return pc.scalar(pa.scalar(operand.value, pa.bool_()))
        raise self.refuse(node, "is not a boolean expression")

    def in_list(self, node: exp.In) -> pc.Expression:
        """`x IN (a, b)` as `x = a OR x = b`: SQL's NULL semantics, also under NOT."""
        if node.args.get("query") is not None or not node.expressions:
            raise self.refuse(node, "is not supported (only IN with a list of values)")
        value = self.operand(node.this)
        terms = [self.compare(operator.eq, value, self.operand(v)) for v in node.expressions]
        return functools.reduce(operator.or_, terms)

    def operand(self, node: exp.Expression) -> _Operand:
        """A column, a literal, or a boolean sub-expression as a boolean column."""
        if isinstance(node, exp.Paren):
            return self.operand(node.this)
        if isinstance(node, exp.Column):
            return self.column(node)
        literal = self.literal(node)
        if literal is not None:
            return literal
        if isinstance(node, _BOOLEAN_NODES):
            return _Column(self.boolean(node), pa.bool_(), node.sql())
        raise self.refuse(node)

    def column(self, node: exp.Column) -> _Column:
        if node.table:
            raise self.refuse(node, "is a qualified name, which is not supported (name the column alone)")
        name = node.name
        matches = [name] if name in self.schema.names else [
            n for n in self.schema.names if n.lower() == name.lower()]
        if len(matches) != 1:
            what = "is ambiguous between" if matches else "is not a column of the table; it has"
            raise InvalidArgumentError(
                f"in the SQL predicate {self.sql!r}: {name!r} {what} {matches or self.schema.names}")
        field = self.schema.field(matches[0])
        return _Column(pc.field(field.name), field.type, field.name)

    def literal(self, node: exp.Expression) -> _Literal | None:
        """`node` as a literal, or None when it is not one."""
        if isinstance(node, exp.Literal):
            return _Literal(node.this, "string" if node.is_string else "number", node.sql())
        if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal) and not node.this.is_string:
            return _Literal(f"-{node.this.this}", "number", node.sql())
        if isinstance(node, exp.Boolean):
            return _Literal(bool(node.this), "bool", node.sql())
        if isinstance(node, exp.Null):
            return _Literal(None, "null", "NULL")
        if isinstance(node, exp.Cast) and isinstance(node.this, exp.Literal) and node.this.is_string:
            to = node.to.this
            if to == exp.DataType.Type.DATE:
                return _Literal(self.parse_time(node.this.this, date=True), "date", node.sql())
            if to in (exp.DataType.Type.TIMESTAMP, exp.DataType.Type.TIMESTAMPTZ):
                return _Literal(self.parse_time(node.this.this, date=False), "timestamp", node.sql())
        if isinstance(node, exp.Cast):
            raise self.refuse(node, "is not supported (only DATE '...' and TIMESTAMP '...' literals)")
        return None

    def parse_time(self, text: str, *, date: bool) -> dt.date | dt.datetime:
        """An ISO-8601 date (`date`), else a date or instant."""
        try:
            if date:
                return dt.date.fromisoformat(text)
            value = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError as e:
            kind = "an ISO-8601 date such as 2024-05-01" if date else \
                "an ISO-8601 date or instant such as 2024-05-01T12:00:00Z"
            raise InvalidArgumentError(f"in the SQL predicate {self.sql!r}: {text!r} is not {kind}") from e
        return value

    def compare(self, op: Callable[[Any, Any], pc.Expression], left: _Operand, right: _Operand) -> pc.Expression:
        """`left op right`, a literal typed by the column it is compared with."""
        if isinstance(left, _Column) and isinstance(right, _Column):
            return op(left.expr, right.expr)
        if isinstance(left, _Column):
            assert isinstance(right, _Literal)
            return op(left.expr, self.scalar(right, left))
        if isinstance(right, _Column):
            return op(self.scalar(left, right), right.expr)
        return op(pc.scalar(self.plain(left)), pc.scalar(self.plain(right)))

    def plain(self, lit: _Literal) -> pa.Scalar:
        """A literal compared with another literal: its own type."""
        if lit.kind == "number":
            try:
                return pa.scalar(_number(lit.value))
            except OverflowError as e:
                raise InvalidArgumentError(
                    f"in the SQL predicate {self.sql!r}: the number {lit.text} does not fit 64 bits") from e
        if lit.kind == "timestamp" and lit.value.tzinfo is None:
            return pa.scalar(lit.value, pa.timestamp("us"))
        return pa.scalar(lit.value)

    def scalar(self, lit: _Literal, column: _Column) -> pa.Scalar:
        """`lit` as a value of `column`'s kind, or a refusal naming both."""
        t = column.type
        if lit.kind == "null":
            return pa.scalar(None, t)
        if pa.types.is_boolean(t) and lit.kind == "bool":
            return pa.scalar(lit.value)
        if (pa.types.is_string(t) or pa.types.is_large_string(t)) and lit.kind == "string":
            return pa.scalar(lit.value, t)
        if (pa.types.is_integer(t) or pa.types.is_floating(t)) and lit.kind == "number":
            return self.plain(lit)
        if pa.types.is_decimal(t) and lit.kind == "number":
            return pa.scalar(decimal.Decimal(lit.value))
        if (pa.types.is_date(t) or pa.types.is_timestamp(t)) and lit.kind in ("string", "date", "timestamp"):
            return self.instant(lit, column)
        raise InvalidArgumentError(
            f"in the SQL predicate {self.sql!r}: column {column.name!r} ({t}) is compared with "
            f"{lit.text}, a {lit.kind}; compare it with a literal of its own kind")

    def instant(self, lit: _Literal, column: _Column) -> pa.Scalar:
        """A date or timestamp literal for a date or timestamp column."""
        value = lit.value
        if lit.kind == "string":
            try:
                value = dt.date.fromisoformat(value)
            except ValueError:
                value = self.parse_time(lit.value, date=False)
        zone = column.type.tz if pa.types.is_timestamp(column.type) else None
        if isinstance(value, dt.datetime):
            if value.tzinfo is not None and zone is None:
                raise InvalidArgumentError(
                    f"in the SQL predicate {self.sql!r}: {lit.text} is an instant with a time zone, "
                    f"but column {column.name!r} ({column.type}) has none; write the local time without one")
            if value.tzinfo is None and zone is not None:
                value = value.replace(tzinfo=dt.timezone.utc)
            return pa.scalar(value, pa.timestamp("us", tz="UTC" if value.tzinfo else None))
        if zone is not None:  # a date against an instant column: midnight UTC
            return pa.scalar(dt.datetime.combine(value, dt.time(), dt.timezone.utc), pa.timestamp("us", tz="UTC"))
        return pa.scalar(value, pa.date32())


def _number(text: str) -> int | float:
    """An integer literal as an int, any other number as a float."""
    try:
        return int(text)
    except ValueError:
        return float(text)


__all__ = ["predicate"]

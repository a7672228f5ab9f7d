"""lakeflow.sql.predicate: SQL predicates as pyarrow expressions, checked against a SQL engine.

The oracle is deltalake's SQL scan (DataFusion) running the same WHERE clause on
the same Delta table.
"""

from __future__ import annotations

import datetime as dt
import decimal

import pyarrow as pa
import pytest
from deltalake import DeltaTable, QueryBuilder

import lakeflow as lf
from lakeflow.sql import predicate
from lakeflow.testing import assert_table_equal

UTC = dt.timezone.utc
SCHEMA = pa.schema([
    ("id", pa.int64()), ("amount", pa.float64()), ("price", pa.decimal128(9, 2)),
    ("name", pa.string()), ("ok", pa.bool_()), ("day", pa.date32()),
    ("ts", pa.timestamp("us", tz="UTC")), ("local", pa.timestamp("us")),
])


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> str:
    uri = str(tmp_path_factory.mktemp("sql") / "t")
    day = dt.date(2024, 5, 1)
    rows = pa.table({
        "id": [1, 2, 3, 4, 5, None],
        "amount": [10.5, -2.0, None, 100.0, 0.0, 7.0],
        "price": pa.array([decimal.Decimal(x) if x else None for x in ["1.50", "2.00", None, "9.99", "0.01", "3"]],
                          pa.decimal128(9, 2)),
        "name": ["alice", "bob", None, "carol", "O'Brien", "alice"],
        "ok": [True, False, None, True, False, True],
        "day": [day, day + dt.timedelta(1), None, day + dt.timedelta(2), day, day],
        "ts": pa.array([dt.datetime(2024, 5, 1, h, tzinfo=UTC) for h in (0, 6, 12)] + [None] +
                       [dt.datetime(2024, 5, 2, 23, 55, tzinfo=UTC), dt.datetime(2024, 4, 30, tzinfo=UTC)],
                       pa.timestamp("us", tz="UTC")),
        "local": pa.array([dt.datetime(2024, 5, 1, h) for h in (0, 6, 12, 18, 20, 22)], pa.timestamp("us")),
    }, schema=SCHEMA)
    lf.Table.create(uri, SCHEMA).append(rows)
    return uri


PREDICATES = [
    "id > 2", "id >= 2 AND amount < 50", "id = 1 OR name = 'bob'", "NOT id = 1", "id <> 3", "id != 3",
    "id IN (1, 3, 5)", "id NOT IN (1, 3)", "id IN (1, NULL)",
    "name IS NULL", "name IS NOT NULL", "NOT (name IS NULL OR id > 3)",
    "amount BETWEEN -2 AND 10.5", "amount NOT BETWEEN 0 AND 10", "amount > -1.5", "amount = 1e2",
    "price > 1.5", "price = 2", "price BETWEEN 0.01 AND 2.00",
    "name = 'O''Brien'", "name > 'b'", "name IN ('alice', 'carol')",
    "ok", "NOT ok", "ok = TRUE", "ok = FALSE OR ok IS NULL",
    "day = DATE '2024-05-01'", "day > '2024-05-01'", "day BETWEEN '2024-05-01' AND '2024-05-02'",
    "ts >= TIMESTAMP '2024-05-01 06:00:00'", "ts < '2024-05-01T12:00:00Z'", "ts >= DATE '2024-05-02'",
    "ts < TIMESTAMP '2024-05-01T08:00:00+02:00'", "local > TIMESTAMP '2024-05-01 12:00:00'",
    "id = NULL", "NOT (id = NULL)", '"amount" > 5', "(id > 1) = (amount > 1)",
    "1 = 1", "TRUE", "FALSE", "id > 1 AND (name = 'alice' OR day = '2024-05-03')",
]


@pytest.mark.parametrize("sql", PREDICATES)
def test_predicate_matches_a_sql_engine(table, sql):
    expected = QueryBuilder().register("t", DeltaTable(table)).execute(f"SELECT * FROM t WHERE {sql}").read_all()
    actual = lf.Table(table).to_arrow(filter=predicate(sql, SCHEMA))
    assert_table_equal(actual, expected, check_types=False)


def test_not_in_with_null_follows_sql(table):
    """`x NOT IN (1, NULL)` is NULL for every x (SQL; PostgreSQL and SQLite agree), so no row.

    DataFusion 1.6 returns the rows with x not 1, so it is not the oracle here.
    """
    t = lf.Table(table)
    assert t.to_arrow(filter=predicate("id NOT IN (1, NULL)", SCHEMA)).num_rows == 0
    assert t.to_arrow(filter=predicate("NOT (id IN (1, NULL))", SCHEMA)).num_rows == 0


@pytest.mark.parametrize(("sql", "named"), [
    ("nope = 1", "'nope' is not a column"),
    ("t.id = 1", "qualified name"),
    ("name = 1", "column 'name' (string) is compared with 1"),
    ("id = 'one'", "column 'id' (int64) is compared with 'one'"),
    ("day = '2024-13-01'", "'2024-13-01' is not an ISO-8601"),
    ("local > '2024-05-01T00:00:00Z'", "has none"),
    ("id = 99999999999999999999", "does not fit 64 bits"),
    ("id", "`id` (Column) is not a boolean expression"),
    ("name LIKE 'a%'", "(Like) is not supported"),
    ("id + 1 > 2", "`id + 1` (Add) is not supported"),
    ("lower(name) = 'a'", "(Lower) is not supported"),
    ("CAST(id AS DATE) = DATE '2024-05-01'", "(Cast) is not supported"),
    ("id IN (SELECT 1)", "only IN with a list"),
    ("ok IS TRUE", "only IS NULL"),
    ("SELECT * FROM t", "(Select) is not supported"),
    ("id = 1; DROP TABLE t", "(Block) is not supported"),
    ("id >", "at line 1, column 4"),
    ("id = 'unterminated", "cannot parse"),
    ("", "non-empty"),
])
def test_bad_predicates_are_refused_naming_the_part(sql, named):
    with pytest.raises(lf.InvalidArgumentError) as e:
        predicate(sql, SCHEMA)
    assert named in str(e.value)


def test_names_match_exactly_then_case_insensitively():
    assert str(predicate("A = 1", pa.schema([("a", pa.int64()), ("A", pa.int64())]))) == "(A == 1)"
    assert str(predicate("ID = 1", SCHEMA)) == str(predicate("id = 1", SCHEMA)) == "(id == 1)"
    with pytest.raises(lf.InvalidArgumentError, match="ambiguous"):
        predicate("aa = 1", pa.schema([("Aa", pa.int64()), ("aA", pa.int64())]))

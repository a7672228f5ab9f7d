"""Views: an aggregate of a source table, kept current by folding in its diffs.

A view is stored as its own lakeflow table: one row per group with the visible
aggregates plus the running sums it needs to fold (`_count`, `_sum_*`, `_nn_*`).
`refresh()` reads only `source.diff(reflected, latest)`: sums and counts move by
the weighted rows (+1 added, -1 removed); min/max move by the added rows, and
only groups that lost rows are recomputed from the source. The source version a
view reflects is recorded with a Delta `txn` action in the same commit, so a
refresh is exactly-once and a view can be read as of any source version.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from lakeflow.config import VIEW_APP_PREFIX
from lakeflow.errors import (
    DataFileNotFoundError,
    InvalidArgumentError,
    SchemaMismatchError,
    VersionNotFoundError,
)
from lakeflow.keys import frame_of, key_candidates
from lakeflow.late import window_micros
from lakeflow.ops.replace import Replacement, replace_keys
from lakeflow.ops.rewrite import replacement_changes
from lakeflow.snapshot import Snapshot
from lakeflow.table import Table
from lakeflow.transaction import retrying
from lakeflow.write import write_data_files

FUNCTIONS = ("sum", "count", "mean", "min", "max")
WINDOW_COLUMN = "window_start"
COUNT = "_count"
_CONFIG_KEY = "lakeflow.view"
_ALL = "_all"  # a constant group key, so a view without group columns is one group
_DEFAULT_RETRIES = 5
_KEPT_BYTES = 256 << 20  # view rows a handle keeps between refreshes; a larger view is read each time


@dataclass(frozen=True)
class Aggregate:
    """One output column: `function` over `column` (None for count(*))."""

    name: str
    function: str
    column: str | None


def _parse_aggregates(aggregates: Mapping[str, Any], schema: pa.Schema) -> tuple[Aggregate, ...]:
    if not aggregates:
        raise InvalidArgumentError("a view needs at least one aggregate, e.g. {'total': ('amount', 'sum')}")
    out = []
    for name, spec in aggregates.items():
        if spec == "count" or spec == ("*", "count"):
            out.append(Aggregate(name, "count", None))
            continue
        if not (isinstance(spec, (tuple, list)) and len(spec) == 2):
            raise InvalidArgumentError(
                f"aggregate {name!r} must be (column, function) with function in {FUNCTIONS}, or 'count'")
        column, function = spec
        if function not in FUNCTIONS:
            raise InvalidArgumentError(f"aggregate {name!r}: unknown function {function!r}; use one of {FUNCTIONS}")
        if column not in schema.names:
            raise SchemaMismatchError(f"aggregate {name!r} reads unknown column {column!r}")
        t = schema.field(column).type
        numeric = pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)
        if function in ("sum", "mean") and not numeric:
            raise SchemaMismatchError(f"aggregate {name!r}: {function} needs a numeric column, {column!r} is {t}")
        out.append(Aggregate(name, function, column))
    names = [a.name for a in out]
    if len(set(names)) != len(names) or any(n.startswith("_") for n in names):
        raise InvalidArgumentError("aggregate names must be unique and not start with '_'")
    return tuple(out)


class View:
    """A handle on a view table and its source.

    Args:
        uri: where the view table lives.
        source: the source table handle (default: opened from the URI the view recorded).
        storage_options: credentials for the view table (and the source, when opened here).
    """

    def __init__(self, uri: str, source: Table | None = None,
                 storage_options: Mapping[str, Any] | None = None) -> None:
        self.table = Table(uri, storage_options)
        raw = self.table.properties.get(_CONFIG_KEY)
        if raw is None:
            raise InvalidArgumentError(f"{uri} is a table, not a lakeflow view (no {_CONFIG_KEY} property)")
        config = json.loads(raw)
        self.source = source if source is not None else Table(config["source"], storage_options)
        if self.source.state.metadata.id != config["source_id"]:
            raise InvalidArgumentError(
                f"{self.source.uri} is not the table this view was built from (table id differs)")
        self.group_by: tuple[str, ...] = tuple(config["group_by"])
        self.window: str | None = config["window"]
        self.aggregates = _parse_aggregates(
            {a["name"]: (a["column"] or "*", a["function"]) for a in config["aggregates"]},
            self.source.schema)
        self._app_id = f"{VIEW_APP_PREFIX}{config['source_id']}"
        # Rows of the view table's files by (path, deletion vector id), which name immutable
        # contents: a refresh through this handle reads back none of what it read or wrote.
        self._kept: dict[tuple[str, str | None], pa.Table] = {}

    @classmethod
    def create(cls, uri: str, source: Table, group_by: Sequence[str], aggregates: Mapping[str, Any],
               window: str | dt.timedelta | None = None,
               storage_options: Mapping[str, Any] | None = None) -> View:
        """Create an empty view of `source` (call `refresh()` to fill it).

        Args:
            uri: where to store the view table.
            source: the table to aggregate.
            group_by: grouping columns of the source.
            aggregates: output name -> (column, function) with function one of
                sum, count, mean, min, max; or "count" for the row count.
            window: group additionally by the epoch-aligned event-time window
                ("1d", "1h", ...) of the source's `event_time` column, as `window_start`.
            storage_options: credentials for the view table.

        Raises:
            SchemaMismatchError: unknown columns, or a window without event time.
            InvalidArgumentError: bad aggregate specs.
        """
        schema = source.schema
        group_by = tuple(group_by)
        unknown = [c for c in group_by if c not in schema.names]
        if unknown:
            raise SchemaMismatchError(f"group_by names unknown column(s) {unknown}; the source has {schema.names}")
        aggs = _parse_aggregates(aggregates, schema)
        window_text = None
        if window is not None:
            if source.event_time is None:
                raise SchemaMismatchError("window= needs a source table with an event_time column")
            window_micros(window)
            window_text = window if isinstance(window, str) else f"{int(window.total_seconds())}s"
        keys = [schema.field(c) for c in group_by]
        if window_text is not None:
            keys.append(pa.field(WINDOW_COLUMN, pa.timestamp("us", tz="UTC")))
        fields = [*keys, pa.field(COUNT, pa.int64())]
        for a in aggs:
            fields.append(pa.field(a.name, _output_type(a, schema)))
            if a.function in ("sum", "mean"):
                fields += [pa.field(f"_sum_{a.name}", _sum_type(schema.field(a.column).type)),
                           pa.field(f"_nn_{a.name}", pa.int64())]
        config = {"source": source.uri, "source_id": source.state.metadata.id, "group_by": list(group_by),
                  "window": window_text,
                  "aggregates": [{"name": a.name, "function": a.function, "column": a.column} for a in aggs]}
        Table.create(uri, pa.schema(fields), storage_options=storage_options,
                     properties={_CONFIG_KEY: json.dumps(config), "delta.enableChangeDataFeed": "false"})
        return cls(uri, source, storage_options)

    # ---- state ---------------------------------------------------------------------------

    @property
    def keys(self) -> list[str]:
        """The group columns of the view (with `window_start` when windowed)."""
        return [*self.group_by, *([WINDOW_COLUMN] if self.window else [])]

    def _reflected(self, version: int | None = None) -> tuple[int, int]:
        """(view version, source version it reflects; -1 before the first refresh)."""
        snap = self.table.snapshot(version=version)
        txn = snap.state.txns.get(self._app_id)
        return snap.version, txn.version if txn else -1

    def _state(self, view_version: int) -> pl.DataFrame:
        frame: pl.DataFrame = pl.from_arrow(self.table.snapshot(version=view_version).to_arrow())  # type: ignore[assignment]
        return frame.with_columns(pl.lit(0, pl.Int8).alias(_ALL))

    def _frame(self, rows: pa.Table) -> pl.DataFrame:
        """Source rows as polars, with the window column and a constant key for global views."""
        frame: pl.DataFrame = pl.from_arrow(rows)  # type: ignore[assignment]
        frame = frame.with_columns(pl.lit(0, pl.Int8).alias(_ALL))
        if self.window is None:
            return frame
        w = window_micros(self.window)
        event_col = str(self.source.event_time)
        event = pl.col(event_col)
        if frame.schema[event_col] == pl.Date:
            event = event.cast(pl.Datetime("us"))  # a date stands for its midnight UTC
        start = pl.from_epoch(event.dt.epoch("us") // w * w, time_unit="us").dt.replace_time_zone("UTC")
        return frame.with_columns(start.alias(WINDOW_COLUMN))

    def _advance(self, state: pl.DataFrame, from_version: int, to_version: int) -> tuple[pl.DataFrame, str]:
        """The state as of source `to_version`, and how it was computed: "incremental" or "recompute".

        Folds the source diff in; when the source's log or data files across the
        range were cleaned up (log cleanup, vacuum), recomputes from the snapshot.
        """
        try:
            return self._fold(state, from_version, to_version), "incremental"
        except (VersionNotFoundError, DataFileNotFoundError):
            # The handle's own state needs no log: a cleanup racing this refresh may
            # already have removed the commits that rebuilding `to_version` would read.
            snap = self.source.snapshot(version=to_version)
            rows = self._frame(snap.to_arrow())
            return self._apply(state.clear(), rows, rows.clear()).select(state.columns), "recompute"

    def _fold(self, state: pl.DataFrame, from_version: int, to_version: int) -> pl.DataFrame:
        """The state after folding source changes in (from_version, to_version]."""
        if from_version == to_version:
            return state
        diff = self.source.diff(from_version, to_version, key=())
        folded = self._apply(state, self._frame(diff.added), self._frame(diff.removed))
        return self._recompute_extremes(folded, to_version).select(state.columns)

    def _apply(self, state: pl.DataFrame, added: pl.DataFrame, removed: pl.DataFrame) -> pl.DataFrame:
        """`state` with rows added and removed; groups that lost rows are flagged `_lost`."""
        keys = [*self.keys, _ALL]
        weighted = pl.concat([added.with_columns(pl.lit(1, pl.Int64).alias("_w")),
                              removed.with_columns(pl.lit(-1, pl.Int64).alias("_w"))], how="vertical_relaxed")
        if weighted.height == 0:
            return state.with_columns(pl.lit(False).alias("_lost"))
        delta = weighted.group_by(keys).agg(self._delta_exprs())
        joined = state.join(delta, on=keys, how="full", coalesce=True, nulls_equal=True)
        updates: list[pl.Expr] = [(pl.col(COUNT).fill_null(0) + pl.col("_d_count").fill_null(0)).alias(COUNT)]
        for a in self.aggregates:
            if a.function in ("sum", "mean"):
                s = (pl.col(f"_sum_{a.name}").fill_null(0) + pl.col(f"_d_sum_{a.name}").fill_null(0))
                nn = pl.col(f"_nn_{a.name}").fill_null(0) + pl.col(f"_d_nn_{a.name}").fill_null(0)
                updates += [s.alias(f"_sum_{a.name}"), nn.alias(f"_nn_{a.name}")]
            elif a.function in ("min", "max"):
                pair = [pl.col(a.name), pl.col(f"_d_{a.name}")]
                updates.append((pl.min_horizontal(pair) if a.function == "min" else pl.max_horizontal(pair))
                               .alias(a.name))
            else:
                updates.append((pl.col(a.name).fill_null(0) + pl.col(f"_d_{a.name}").fill_null(0)).alias(a.name))
        folded = joined.with_columns(updates)
        for a in self.aggregates:
            if a.function in ("sum", "mean"):
                nn, s = pl.col(f"_nn_{a.name}"), pl.col(f"_sum_{a.name}")
                value = s if a.function == "sum" else s.cast(pl.Float64) / nn
                folded = folded.with_columns(pl.when(nn > 0).then(value).otherwise(None).alias(a.name))
        return folded.filter(pl.col(COUNT) > 0)

    def _delta_exprs(self) -> list[pl.Expr]:
        """Per group of weighted rows (`_w`): how the count and each aggregate move."""
        w = pl.col("_w")
        exprs: list[pl.Expr] = [w.sum().alias("_d_count"), (w < 0).any().alias("_lost")]
        for a in self.aggregates:
            if a.function in ("sum", "mean"):
                x = pl.col(a.column)  # type: ignore[arg-type]
                exprs += [(x * w).sum().alias(f"_d_sum_{a.name}"),
                          (x.is_not_null().cast(pl.Int64) * w).sum().alias(f"_d_nn_{a.name}")]
            elif a.function in ("min", "max"):
                x = pl.col(a.column).filter(w > 0)  # type: ignore[arg-type]
                exprs.append((x.min() if a.function == "min" else x.max()).alias(f"_d_{a.name}"))
            else:
                col = pl.col(a.column) if a.column else pl.lit(1)
                exprs.append((col.is_not_null().cast(pl.Int64) * w).sum().alias(f"_d_{a.name}"))
        return exprs

    def _recompute_extremes(self, folded: pl.DataFrame, source_version: int) -> pl.DataFrame:
        """Min/max of groups that lost rows, read back from the source (only those groups)."""
        extremes = [a for a in self.aggregates if a.function in ("min", "max")]
        lost = folded.filter(pl.col("_lost").fill_null(False))
        if not extremes or lost.height == 0:
            return folded
        keys = [*self.keys, _ALL]
        snap = self.source.snapshot(version=source_version)
        narrow = None
        for k in self.group_by:  # prune the source scan by each group column's values
            values = pa.array(lost[k].drop_nulls().unique().to_list(), type=snap.schema.field(k).type)
            term = pc.field(k).isin(values) | pc.field(k).is_null()
            narrow = term if narrow is None else narrow & term
        rows = self._frame(snap.to_arrow(filter=narrow))
        fresh = rows.group_by(keys).agg(
            [(pl.col(str(a.column)).min() if a.function == "min" else pl.col(str(a.column)).max())
             .alias(f"_re_{a.name}") for a in extremes])
        out = folded.join(fresh, on=keys, how="left", nulls_equal=True)
        return out.with_columns([
            pl.when(pl.col("_lost").fill_null(False)).then(pl.col(f"_re_{a.name}")).otherwise(pl.col(a.name))
            .alias(a.name) for a in extremes])

    # ---- public API ------------------------------------------------------------------------

    @property
    def source_version(self) -> int:
        """The source version the view reflects (-1: never refreshed)."""
        self.table.refresh()
        return self._reflected()[1]

    def refresh(self, retries: int = _DEFAULT_RETRIES) -> int:
        """Fold the source's changes since the last refresh into the view; return the view version.

        Exactly-once: the reflected source version is committed with the state
        (a Delta `txn`), so a refresh that races another one retries on top of it
        and never folds the same changes twice.

        Raises:
            CommitConflictError: concurrent refreshes kept winning `retries` times.
        """
        return retrying(self.table.snapshot(), retries, self._refresh_once)

    def _check_source(self, version: int) -> None:
        """Refuse a source version that lacks a column the view reads (renamed or dropped since its create).

        Raises:
            SchemaMismatchError: naming the columns.
        """
        names = self.source.snapshot(version=version).schema.names
        missing = [c for c in dict.fromkeys([*self.group_by, *(a.column for a in self.aggregates if a.column)])
                   if c not in names]
        if missing:
            raise SchemaMismatchError(
                f"the view's source {self.source.uri} has no column(s) {missing} at version {version} (renamed or "
                "dropped since the view was created); the view cannot follow them: create a new view over "
                "the source's current names, or rename the columns back")

    def _refresh_once(self, snap: Snapshot) -> int:
        """One refresh attempt on top of the view table at `snap`."""
        latest = self.source.refresh()  # the handle's state: the version the refresh folds to
        self._check_source(latest)
        txn = snap.state.txns.get(self._app_id)
        reflected = txn.version if txn else -1
        if latest == reflected:
            return snap.version
        if self.keys:
            try:
                return self._replace_groups(snap, reflected, latest)
            except (VersionNotFoundError, DataFileNotFoundError):
                pass  # the source's history across the range is gone: recompute below
        new_state, mode = self._advance(self._state(snap.version), reflected, latest)
        return self._commit_whole(snap, new_state, latest, "VIEW REFRESH",
                                  {"sourceFrom": reflected, "sourceTo": latest, "mode": mode})

    def _commit_whole(self, snap: Snapshot, state: pl.DataFrame, source_version: int, operation: str,
                      parameters: dict[str, Any]) -> int:
        """Commit `state` as the whole view table, reflecting `source_version`; return the version."""
        tx = self.table.transaction(operation, parameters, snapshot=snap)
        tx.remove(*snap.files).read(txns=[self._app_id]).set_txn(self._app_id, source_version)
        rows = state.drop(_ALL).to_arrow().cast(snap.schema) if state.height else snap.schema.empty_table()
        if state.height:
            tx.add(*write_data_files(snap.storage, rows, (), mapping=snap.column_mapping))
        tx.add(*replacement_changes(snap, snap.files, rows))
        return tx.info({"groups": state.height}).commit().version

    def _replace_groups(self, snap: Snapshot, reflected: int, latest: int) -> int:
        """Fold the source diff into the groups it touches and rewrite only those (O(change))."""
        diff = self.source.diff(reflected, latest, key=())
        added, removed = self._frame(diff.added), self._frame(diff.removed)
        keys = [*self.keys, _ALL]
        touched = pl.concat([added.select(keys), removed.select(keys)], how="vertical_relaxed").unique()
        state, read = self._groups(snap, touched.drop(_ALL))
        folded = self._recompute_extremes(self._apply(state, added, removed), latest).select(state.columns)
        rows = folded.drop(_ALL).to_arrow().cast(snap.schema)
        done = replace_keys(snap, rows, self.keys, touched.drop(_ALL).to_arrow(), app_id=self._app_id,
                            txn_version=latest, operation="VIEW REFRESH",
                            parameters={"sourceFrom": reflected, "sourceTo": latest, "mode": "incremental"},
                            read=read)
        self._keep(snap, read, done)
        return done.result.version if done.result is not None else snap.version

    def _groups(self, snap: Snapshot, groups: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, pa.Table]]:
        """The stored rows of `groups`, and the rows of the files that may hold them, by path.

        Only those files are read, and of them only the ones this handle does not keep.
        """
        wanted = groups.to_arrow().cast(pa.schema([snap.schema.field(k) for k in self.keys]))
        files = key_candidates(snap, wanted)[0]
        read = {f.path: self._kept[f.identity] for f in files if f.identity in self._kept}
        unread = [f for f in files if f.path not in read]
        read.update(zip((f.path for f in unread), snap.read_files(unread), strict=True))
        tables = [read[f.path] for f in files]
        stored = frame_of(pa.concat_tables(tables) if tables else snap.schema.empty_table())
        stored = stored.join(frame_of(wanted), on=self.keys, how="semi", nulls_equal=True)
        return stored.with_columns(pl.lit(0, pl.Int8).alias(_ALL)), read

    def _keep(self, before: Snapshot, read: Mapping[str, pa.Table], done: Replacement) -> None:
        """Keep the rows of the files of the view table after a refresh: those read, and those written."""
        after = done.result.snapshot if done.result is not None else before
        known = {**self._kept, **{f.identity: read[f.path] for f in before.files if f.path in read}}
        kept: dict[tuple[str, str | None], pa.Table] = {}
        for f in after.files:
            rows = known.get(f.identity)
            rows = done.rows_of.get(f.add.path) if rows is None else rows
            if rows is not None:
                kept[f.identity] = rows
        self._kept = kept if sum(t.nbytes for t in kept.values()) <= _KEPT_BYTES else {}

    def recompute(self, source_version: int) -> pa.Table:
        """The view at a source version computed from scratch (what `snapshot` must equal).

        Raises:
            VersionNotFoundError: the source version does not exist.
        """
        return self._visible(self._from_scratch(source_version))

    def _from_scratch(self, source_version: int) -> pl.DataFrame:
        """The stored state (internal columns too) at a source version, from its rows alone."""
        rows = self._frame(self.source.snapshot(version=source_version).to_arrow())
        empty = frame_of(self.table.schema.empty_table()).with_columns(pl.lit(0, pl.Int8).alias(_ALL))
        return self._apply(empty, rows, rows.clear()).select(empty.columns)

    def rebuild(self, source_version: int | None = None) -> int:
        """Replace the view's state with its recomputation at a source version (default latest).

        One commit recording the source version, as a refresh does (Kappa: the log
        replayed, no second system). Returns the view table's version.
        """
        source_version = self.source.refresh() if source_version is None else source_version
        self._check_source(source_version)
        state = self._from_scratch(source_version)
        return self._commit_whole(self.table.snapshot(), state, source_version, "VIEW REBUILD",
                                  {"sourceTo": source_version})

    def snapshot(self, source_version: int | None = None) -> pa.Table:
        """The view as of a source version (default: as of the last refresh).

        Versions the view never stored are computed from the nearest stored state
        at or before them plus the source diff up to them (nothing is written).

        Raises:
            VersionNotFoundError: the source version does not exist.
        """
        self.table.refresh()
        if source_version is None:
            state = self._state(self.table.version)
        else:
            self.source.snapshot(version=source_version)  # validates the version
            base_version, base_reflected = self._stored_at_or_before(source_version)
            state, _ = self._advance(self._state(base_version), base_reflected, source_version)
        return self._visible(state)

    def _visible(self, state: pl.DataFrame) -> pa.Table:
        """A state frame as the view shows it: keys and aggregates, sorted by key."""
        visible = [*self.keys, *(a.name for a in self.aggregates)]
        state = state.drop(_ALL)
        frame = state.select(visible).sort(self.keys, nulls_last=True) if self.keys else state.select(visible)
        return frame.to_arrow().cast(pa.schema([self.table.schema.field(c) for c in visible]))

    def _stored_at_or_before(self, source_version: int) -> tuple[int, int]:
        for commit in self.table.history():
            v, reflected = self._reflected(commit.version)
            if reflected <= source_version:
                return v, reflected
        return 0, -1

    def diff(self, from_source_version: int, to_source_version: int | None = None) -> pa.Table:
        """How the aggregates moved between two source versions.

        Returns one row per changed group with `_change_type` (insert, delete,
        update_preimage, update_postimage), like `Diff.to_arrow()`.
        """
        keys = [*self.keys, _ALL]
        before, after = (
            pl.DataFrame(self.snapshot(v)).with_columns(pl.lit(0, pl.Int8).alias(_ALL))
            for v in (from_source_version, to_source_version))
        changed_old = before.join(after, on=before.columns, how="anti", nulls_equal=True)
        changed_new = after.join(before, on=after.columns, how="anti", nulls_equal=True)
        parts = [
            (changed_old.join(after, on=keys, how="anti", nulls_equal=True), "delete"),
            (changed_new.join(before, on=keys, how="anti", nulls_equal=True), "insert"),
            (changed_old.join(after, on=keys, how="semi", nulls_equal=True), "update_preimage"),
            (changed_new.join(before, on=keys, how="semi", nulls_equal=True), "update_postimage"),
        ]
        return pl.concat([rows.drop(_ALL).with_columns(pl.lit(kind).alias("_change_type"))
                          for rows, kind in parts]).to_arrow()


def _sum_type(t: pa.DataType) -> pa.DataType:
    if pa.types.is_integer(t):
        return pa.int64()
    if pa.types.is_decimal(t):
        return pa.decimal128(38, t.scale)
    return pa.float64()


def _output_type(a: Aggregate, schema: pa.Schema) -> pa.DataType:
    if a.function == "count":
        return pa.int64()
    t = schema.field(a.column).type
    if a.function == "sum":
        return _sum_type(t)
    if a.function == "mean":
        return pa.float64()
    return t

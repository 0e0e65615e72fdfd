"""Writing measurements (line protocol, one Arrow table per measurement) into tables.

A measurement's table is created on its first write as a time-series table: `time
TIMESTAMPTZ NOT NULL`, one TEXT column per tag, one column per field (DOUBLE PRECISION,
BIGINT, BOOLEAN or TEXT), `WITH (time_column = 'time', tags = <the tags>, partition = 'day')`.
Tags and fields seen later are added as columns (Iceberg schema evolution; existing rows read
NULL). Then every measurement's rows go into the write-ahead log as one record: a batch is
acknowledged, and recovered after a crash, all or none. A field whose type does not fit its
column fails the batch before anything is written (columns added for it stay).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING

import pyarrow as pa

from omnilake import errors as E
from omnilake.catalog.table_options import TimeSeriesOptions
from omnilake.catalog.types import SqlType
from omnilake.engine.tables import table_exists

if TYPE_CHECKING:
    from omnilake.engine.engine import Session

TIME = "time"
COLUMN_TYPES = {"float": "double precision", "integer": "bigint", "unsigned": "bigint",
                "boolean": "boolean", "string": "text"}
# Column types a field of each kind may be written into.
FITS = {
    "float": {"double precision", "real", "numeric"},
    "integer": {"bigint", "integer", "smallint", "double precision", "real", "numeric"},
    "unsigned": {"bigint", "integer", "smallint", "double precision", "real", "numeric"},
    "boolean": {"boolean"},
    "string": {"text", "varchar", "json"},
}
ATTEMPTS = 10


class _SharedLock:
    """Writes share it, schema changes hold it alone. ALTER TABLE commits through the cached
    table object that concurrent writers hold too, which updates it in place: a write that
    built its rows before and checked the table after would log rows of the old layout and
    pass the check (see the closing note of issue 8)."""

    def __init__(self):
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False

    @contextmanager
    def shared(self):
        with self._cond:
            self._cond.wait_for(lambda: not self._writer)
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def exclusive(self):
        with self._cond:
            self._cond.wait_for(lambda: not self._writer)
            self._writer = True
            self._cond.wait_for(lambda: self._readers == 0)
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


_schema_lock = _SharedLock()


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def write_measurements(session: "Session", namespace: str, tables: dict[str, pa.Table],
                       kinds: dict[str, dict[str, str]], lines: dict[str, dict[str, int]]
                       | None = None) -> int:
    """Create or evolve the tables, then write all rows as one WAL record; rows written.

    `tables`: measurement -> rows (a `time` column, tag columns as strings, field columns);
    `kinds`: measurement -> field -> float|integer|unsigned|boolean|string; `lines`: where each
    field first appeared, for error messages."""
    # an existing table implies its schema: the catalog is asked only on a first write
    if not all(table_exists(session.engine, namespace, name) for name in tables) and \
            (namespace,) not in session.engine.warehouse.catalog.list_namespaces():
        session.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(namespace)}")
    for attempt in range(ATTEMPTS):
        try:
            # The usual batch: its tables exist with every column it needs. Checked and
            # logged under the shared lock, so no schema change of ours comes in between,
            # and batches do not wait for each other.
            with _schema_lock.shared():
                prepared = _prepare_unchanged(session, namespace, tables, kinds, lines)
                due = None if prepared is None else _log(session, prepared)
            if prepared is None:  # tables to create or columns to add: alone
                prepared = _prepare(session, namespace, tables, kinds, lines)
                # Rows are checked against the table and logged with no schema change of ours
                # in between (a commit updates the shared cached table object in place).
                with _schema_lock.shared():
                    # Another batch may have added columns between our _prepare and here,
                    # through the cached table object we hold (updated in place, its SQL types
                    # not): then the rows are checked again against the table as it is now.
                    if any(ref.table.metadata_location != seen for ref, _, seen in prepared):
                        raise E.SerializationFailure("the table changed while the batch was prepared")
                    due = _log(session, prepared)
        except E.SerializationFailure:
            # another writer added columns between our check and our write: check again
            if attempt == ATTEMPTS - 1:
                raise
            continue
        # Acknowledged. A flush it made due runs on the flusher thread, outside the schema
        # lock: this batch's reply and the next batches go on meanwhile.
        session.engine.writer.flush_later(due)
        return sum(rows.num_rows for _, rows, _ in prepared)
    raise AssertionError("unreachable")


def _log(session: "Session", prepared: list) -> list[str]:
    """Check the rows against their tables and write them as one WAL record; the tables due
    for a flush."""
    from omnilake.engine.dml import insert_rows
    from omnilake.engine.transaction import Transaction
    tx = Transaction()
    saved, session.transaction = session.transaction, tx
    try:
        for ref, rows, _ in prepared:
            insert_rows(session, ref, rows, list(rows.column_names))
    finally:
        session.transaction = saved
    return session.engine.writer.write_all(tx.parts(), flush=False)


def _prepare_unchanged(session: "Session", namespace: str, tables: dict[str, pa.Table],
                       kinds: dict[str, dict[str, str]], lines) -> list | None:
    """(table, rows, its metadata location) ready to insert, when every table exists with
    the columns and tags the rows need (checked, nothing changed); None otherwise."""
    from omnilake.engine.tables import load
    prepared = []
    for name, rows in tables.items():
        fields = kinds.get(name, {})
        if not table_exists(session.engine, namespace, name):
            return None
        ref = load(session.engine, namespace, name)
        tags = [c for c in rows.column_names if c != TIME and c not in fields]
        missing, new_tags, rows = _plan(ref, rows, tags, fields, (lines or {}).get(name, {}))
        if missing or new_tags:
            return None
        prepared.append((ref, rows, ref.table.metadata_location))
    return prepared


def _prepare(session: "Session", namespace: str, tables: dict[str, pa.Table],
             kinds: dict[str, dict[str, str]], lines) -> list:
    """Create or evolve each measurement's table; (table, rows, its metadata location)
    ready to insert."""
    from omnilake.engine import ddl
    from omnilake.engine.tables import load
    prepared = []
    with _schema_lock.exclusive():
        for name, rows in tables.items():
            fields = kinds.get(name, {})
            tags = [c for c in rows.column_names if c != TIME and c not in fields]
            if not table_exists(session.engine, namespace, name):
                columns = [(TIME, SqlType("timestamptz"), True)]
                columns += [(t, SqlType("text"), False) for t in tags]
                columns += [(f, SqlType(COLUMN_TYPES[k]), False) for f, k in fields.items()]
                ddl.create_table(session, namespace, name, columns, [], if_not_exists=True,
                                 timeseries=TimeSeriesOptions(TIME, tuple(tags), "day"))
            ref = load(session.engine, namespace, name)
            rows = _evolve(session, ref, rows, tags, fields, (lines or {}).get(name, {}))
            ref = load(session.engine, namespace, name)
            prepared.append((ref, rows, ref.table.metadata_location))
    return prepared


def _plan(ref, rows: pa.Table, tags: list[str], fields: dict[str, str],
          lines: dict[str, int]) -> tuple[list, list[str], pa.Table]:
    """Check field kinds against the table: (columns to add, tags new to the time series,
    rows with `time` renamed to the table's time column)."""
    from omnilake.engine.retention import options_of
    columns = {c.name: c.sql_type.name for c in ref.columns()}
    options = options_of(ref.table)
    time_column = options.time_column if options is not None else TIME
    if time_column not in columns:
        raise E.UndefinedColumn(f'table "{ref.name}" has no column "{TIME}" for the timestamps',
                                hint="line protocol writes into time-series tables")
    missing = [(t, "text") for t in tags if t not in columns]
    missing += [(f, COLUMN_TYPES[k]) for f, k in fields.items() if f not in columns]
    for name, kind in fields.items():
        if name in columns and columns[name] not in FITS[kind]:
            where = f"line {lines[name]}: " if name in lines else ""
            raise E.DatatypeMismatch(f'{where}field type conflict: "{name}" is {kind} but column '
                                     f'"{name}" of "{ref.name}" is {columns[name]}')
    for tag in tags:
        if tag in columns and columns[tag] not in FITS["string"]:
            raise E.DatatypeMismatch(f'tag "{tag}" is text but column "{tag}" of "{ref.name}" '
                                     f"is {columns[tag]}")
    new_tags = [t for t in tags if options is not None and t not in options.tags]
    if time_column != TIME:
        rows = rows.rename_columns([time_column if c == TIME else c for c in rows.column_names])
    return missing, new_tags, rows


def _evolve(session: "Session", ref, rows: pa.Table, tags: list[str], fields: dict[str, str],
            lines: dict[str, int]) -> pa.Table:
    """Add missing columns; check field kinds; rename `time` to the table's time column."""
    from omnilake.engine.retention import options_of
    options = options_of(ref.table)  # as before the ALTER
    missing, new_tags, rows = _plan(ref, rows, tags, fields, lines)
    if missing:
        actions = ", ".join(f"ADD COLUMN IF NOT EXISTS {quote(n)} {t}" for n, t in missing)
        session.execute(f"ALTER TABLE {quote(ref.namespace)}.{quote(ref.name)} {actions}")
    if new_tags:
        _add_tags(session, ref.namespace, ref.name, options, new_tags)
    return rows


def _add_tags(session: "Session", namespace: str, name: str, options: TimeSeriesOptions,
              new_tags: list[str]) -> None:
    """New tags join the table's tags and its sort order (tags, then time)."""
    from dataclasses import replace

    from pyiceberg.transforms import IdentityTransform

    from omnilake.catalog.table_options import TIMESERIES_PROPERTY
    table = session.engine.warehouse.catalog.load_table((namespace, name))
    options = replace(options, tags=options.tags + tuple(new_tags))
    ids = {f.name: f.field_id for f in table.schema().fields}
    with table.transaction() as tx:
        with tx.update_sort_order() as order:
            for column in (*options.tags, options.time_column):
                order.asc(column, IdentityTransform())
        tx.set_properties({TIMESERIES_PROPERTY: options.to_property(ids)})

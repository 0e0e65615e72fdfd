"""Retention of time-series tables: partitions older than the window are dropped as a
metadata operation (one Iceberg commit that removes their data files; nothing is rewritten).

A partition (an hour, day, month or year of the time column) expires once its *end* is older
than `now - retention`, so no row younger than the window is ever dropped; a partition that
straddles the cutoff waits until it has passed entirely. Runs on demand (`VACUUM`,
`omnilake maintenance`, `SELECT drop_chunks('t' [, older_than])`) and in the background
(`BackgroundWorker`, every `timeseries_interval` seconds), which also refreshes continuous
aggregates.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table

from omnilake import errors as E
from omnilake.catalog.table_options import Interval, TimeSeriesOptions, from_properties

if TYPE_CHECKING:
    from omnilake.engine.engine import Engine

log = logging.getLogger(__name__)
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
OPERATION = "retention"


@dataclass
class RetentionResult:
    partitions_dropped: int
    files_dropped: int
    rows_dropped: int


def options_of(table: Table) -> TimeSeriesOptions | None:
    names = {f.field_id: f.name for f in table.schema().fields}
    return from_properties(table.properties, names)


def partition_end(partition: str, ordinal: int) -> dt.datetime:
    """The first instant after partition `ordinal` (Iceberg's hour/day/month/year value)."""
    if partition == "hour":
        return EPOCH + dt.timedelta(hours=ordinal + 1)
    if partition == "day":
        return EPOCH + dt.timedelta(days=ordinal + 1)
    months = ordinal + 1 if partition == "month" else (ordinal + 1) * 12
    return EPOCH.replace(year=1970 + months // 12, month=months % 12 + 1)


def cutoff_of(window: Interval, now: dt.datetime) -> dt.datetime:
    """`now - window`; a month earlier than March 31 is the last day of February."""
    cutoff = now - dt.timedelta(microseconds=window.micros)
    if window.months:
        index = cutoff.year * 12 + cutoff.month - 1 - window.months
        year, month = index // 12, index % 12 + 1
        last_day = ((dt.date(year + month // 12, month % 12 + 1, 1)) - dt.timedelta(days=1)).day
        cutoff = cutoff.replace(year=year, month=month, day=min(cutoff.day, last_day))
    return cutoff


def expired_files(table: Table, options: TimeSeriesOptions, cutoff: dt.datetime):
    """Data files (scan tasks) of partitions that end at or before `cutoff`."""
    snapshot = table.current_snapshot()
    if snapshot is None:
        return []
    spec_id = table.spec().spec_id
    expired = []
    for task in table.scan(snapshot_id=snapshot.snapshot_id).plan_files():
        data_file = task.file
        if data_file.spec_id != spec_id or data_file.partition is None:
            continue
        ordinal = data_file.partition[0]
        if ordinal is not None and partition_end(options.partition, ordinal) <= cutoff:
            expired.append(task)
    return expired


def drop_expired(engine: "Engine", namespace: str, name: str, older_than: Interval | None = None,
                 now: dt.datetime | None = None, flush: bool = True) -> RetentionResult:
    """Drop the partitions of a time-series table that are entirely older than its retention
    window (or `older_than`). Pending rows are flushed first (unless `flush` is False: the
    background worker leaves flushing to the flusher), so they are dropped too."""
    table = engine.warehouse.catalog.load_table((namespace, name))
    options = options_of(table)
    if options is None:
        raise E.InvalidParameterValue(f'"{name}" is not a time-series table',
                                      hint="CREATE TABLE ... WITH (time_column = 'ts', ...)")
    window = older_than or options.retention_interval
    if window is None:
        return RetentionResult(0, 0, 0)
    cutoff = cutoff_of(window, now or dt.datetime.now(dt.timezone.utc))
    if flush:
        engine.writer.flush(namespace, name)
    for attempt in range(8):
        table = engine.warehouse.catalog.load_table((namespace, name))
        expired = expired_files(table, options, cutoff)
        if not expired:
            return RetentionResult(0, 0, 0)
        try:
            with table.transaction() as tx:
                with tx.update_snapshot(snapshot_properties={"omnilake.operation": OPERATION}) \
                        .overwrite() as overwrite:
                    for task in expired:
                        overwrite.delete_data_file(task.file)
            return RetentionResult(len({t.file.partition[0] for t in expired}), len(expired),
                                   sum(t.file.record_count for t in expired))
        except CommitFailedException:
            time.sleep(random.uniform(0.005, 0.01 * 2 ** attempt))
    raise E.SerializationFailure(f"dropping expired partitions of {namespace}.{name} kept losing "
                                 "to concurrent commits", hint="run it again")


def all_tables(engine: "Engine"):
    """(namespace, name, table) of every table in the warehouse."""
    catalog = engine.warehouse.catalog
    for ns in catalog.list_namespaces():
        for ident in catalog.list_tables(ns):
            try:
                table = catalog.load_table(ident)
            except Exception:  # dropped meanwhile
                continue
            yield ".".join(ident[:-1]), ident[-1], table


def drop_chunks(session, args: list) -> int:
    """`SELECT drop_chunks('table' [, older_than])`: partitions dropped (TimescaleDB's name)."""
    from omnilake.engine.tables import split_name
    from sqlglot import exp
    if not args or not isinstance(args[0], exp.Literal) or not args[0].is_string:
        raise E.InvalidParameterValue("drop_chunks('table' [, older_than interval]) needs a table name")
    target = exp.to_table(args[0].this)
    namespace, name = split_name(target, session.schema)
    if not session.engine.warehouse.catalog.table_exists((namespace, name)):
        raise E.UndefinedTable(f'relation "{args[0].this}" does not exist')
    older_than = None
    if len(args) > 1:
        from omnilake.engine.timeseries import constant_interval
        older_than = constant_interval(args[1], "drop_chunks")
    return drop_expired(session.engine, namespace, name, older_than).partitions_dropped


class BackgroundWorker:
    """Applies retention, and refreshes continuous aggregates, every `interval` seconds."""

    def __init__(self, engine: "Engine", interval: float):
        self.engine = engine
        self.interval = interval
        self._stop = threading.Event()
        self._thread = None
        if interval > 0:
            self._thread = threading.Thread(target=self._loop, daemon=True,
                                            name="omnilake-timeseries")
            self._thread.start()

    def run_once(self) -> None:
        from omnilake.engine.continuous_aggregates import refresh_due
        for namespace, name, table in list(all_tables(self.engine)):
            if self._stop.is_set():
                return
            try:
                options = options_of(table)
                if options is not None and options.retention:
                    done = drop_expired(self.engine, namespace, name, flush=False)
                    if done.files_dropped:
                        log.info("retention dropped %d partition(s) of %s.%s",
                                 done.partitions_dropped, namespace, name)
                refresh_due(self.engine, namespace, name, table)
            except Exception as exc:  # retried next round
                log.warning("background time-series work on %s.%s failed: %s", namespace, name, exc)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.run_once()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

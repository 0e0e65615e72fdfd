"""The durable write path: WAL record, memtable, then Iceberg commits in batches (flushes).

A write is acknowledged once its WAL record is durable and its rows are in the memtable,
where the next query in the process sees them. A flush appends a table's pending rows to
Iceberg in one commit that also records, in the table property `omnilake.wal.<wal id>`, the
highest LSN it contains. Recovery (at open) replays the records of logs whose process is gone
with an LSN above that property, in one commit per table, then deletes the log: nothing
acknowledged is lost, and nothing is applied twice, because the rows and the LSN that marks
them commit together or not at all.

A flush writes its data files (storage/datafiles.py) without holding the table's memtable
lock, so writers and readers go on meanwhile; the rows stay pending (and visible) until the
commit. It takes the lock only to commit: it checks that the rows it wrote are still the
oldest pending rows, commits the files with the LSN, and removes exactly those rows from the
memtable. A crash before the commit leaves unreferenced files and the rows in the log.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections import defaultdict
from contextlib import ExitStack, contextmanager, nullcontext
from typing import TYPE_CHECKING

import pyarrow as pa
from pyiceberg.exceptions import CommitFailedException, NoSuchTableError, ValidationException
from pyiceberg.expressions import AlwaysTrue

from omnilake import errors as E
from omnilake.storage import memory_only
from omnilake.storage.datafiles import delete_files, sort_keys, sort_rows, write_data_files
from omnilake.storage.memtable import Memtable, Pending
from omnilake.storage.objectstore import translate as storage_error
from omnilake.storage.wal import WriteAheadLog, orphaned_logs, read_log, remove_log

if TYPE_CHECKING:
    from omnilake.engine.engine import Engine
    from omnilake.engine.tables import TableRef

log = logging.getLogger(__name__)
LSN_PROPERTY = "omnilake.wal."
COMMIT_ATTEMPTS = 8
FLUSHER_TICK_S = 0.5
# flush_later: a table pending this many times its flush thresholds is flushed by its writer
BACKLOG = 3
FLUSH_CHAIN_SIZE = 10_000


def table_key(namespace: str, name: str) -> str:
    return f"{namespace}.{name}"


def conform(tables: list[pa.Table], table) -> pa.Table:
    """Pending rows in the table's current column layout, matched by name: columns added
    since read as NULL, dropped ones are left out. (Writes are refused once a table changed,
    so this only matters for rows recovered from a log.)"""
    target = table.schema().as_arrow()
    names = [f.name for f in target]
    if all(rows.column_names == names for rows in tables):
        return pa.concat_tables(tables)
    parts = []
    for rows in tables:
        columns = [rows.column(f.name) if f.name in rows.column_names
                   else pa.nulls(rows.num_rows, f.type) for f in target]
        schema = pa.schema([pa.field(f.name, c.type, nullable=f.nullable)
                            for f, c in zip(target, columns)])
        parts.append(pa.Table.from_arrays(columns, schema=schema))
    return pa.concat_tables(parts, promote_options="permissive")


def _meta(ref: "TableRef", **extra) -> dict:
    return {"namespace": ref.namespace, "table": ref.name,
            "uuid": str(ref.table.metadata.table_uuid), **extra}


def _snapshot_id(table) -> int | None:
    snapshot = table.current_snapshot()
    return snapshot.snapshot_id if snapshot else None


def _overwrite(tx, table, rows: pa.Table) -> None:
    """All of the table's rows become `rows` (an empty table has nothing to delete)."""
    if table.current_snapshot() is None:
        tx.append(rows)
    else:
        tx.overwrite(rows, overwrite_filter=AlwaysTrue())


def sorted_rows(table, rows: pa.Table) -> pa.Table:
    """Rows in the table's Iceberg sort order (a time series: tags, then time), so each
    flush writes sorted files."""
    return sort_rows(rows, sort_keys(table, rows))


class _Superseded(Exception):
    """The rows a flush wrote are no longer the table's oldest pending rows (a transaction
    replaced them, or the table was dropped): its files must not be committed."""


class Writer:
    def __init__(self, engine: "Engine"):
        settings = engine.settings
        self.engine = engine
        self.flush_rows = settings.flush_rows
        self.flush_bytes = settings.flush_bytes
        self.flush_interval = settings.flush_interval
        self.memtable = Memtable()
        self._flushed: dict[str, int] = {}
        # metadata file a flush made -> (the one before, ids of the pending tables it committed)
        self._flushed_from: dict[str, tuple[str, frozenset[int]]] = {}
        self._flush_chain_lock = threading.Lock()
        self._flush_locks: dict[str, threading.Lock] = defaultdict(threading.Lock)
        self._flush_locks_guard = threading.Lock()
        self._closed = False
        root = engine.warehouse.wal_root
        self.recovered = self._recover(root)
        self.wal = WriteAheadLog.create(root, settings.durability)
        self._stop = threading.Event()
        self._wake = threading.Event()  # set: the flusher looks at once (stop, or flushes due)
        self._due: set[str] = set()
        self._due_lock = threading.Lock()
        self._flusher = threading.Thread(target=self._flush_loop, daemon=True, name="omnilake-flusher")
        self._flusher.start()

    # -- writing -------------------------------------------------------------------------
    def write(self, ref: "TableRef", rows: pa.Table) -> None:
        """Log and buffer checked rows (storage form); returns once they are acknowledged."""
        self.write_all([(ref, rows)])

    def write_all(self, writes: list[tuple["TableRef", pa.Table]],
                  replacements: list[tuple["TableRef", list[pa.Table], pa.Table]] = (),
                  flush: bool = True) -> list[str]:
        """Several tables' rows as one record: acknowledged, and recovered, all or none.
        `replacements` (a transaction's UPDATE/DELETE): (table as read, its pending rows then,
        its new rows), applied to Iceberg at once as overwrites (see `_replace`). Tables whose
        pending rows reached the flush thresholds are flushed before returning, or, with
        `flush=False`, returned for the caller to pass to `flush_due` (once it holds no
        lock that other writers wait for)."""
        if self._closed:
            raise E.OperationalError("the engine is closed")
        parts = [(_meta(ref), rows, table_key(ref.namespace, ref.name))
                 for ref, rows in writes if rows.num_rows]
        keys = sorted({key for _, _, key in parts} |
                      {table_key(ref.namespace, ref.name) for ref, _, _ in replacements})
        if not keys:
            return []
        # Logged and buffered under the tables' locks (taken in name order), so a flush never
        # marks an LSN flushed while an older record of its table is still on its way into the
        # memtable. The fsync waits outside the locks, where concurrent writers share it;
        # replacements wait inside: nothing may touch their tables until they are applied.
        with ExitStack() as locks:
            for key in keys:
                locks.enter_context(self.memtable.lock(key))
            for ref, _ in writes:
                self._check_current(ref)
            # Each replaced table as it is now (unchanged but for our own flushes).
            targets = [self._unchanged(ref, pending) for ref, pending, _ in replacements]
            parts += [(_meta(ref, base=_snapshot_id(table)), rows,
                       table_key(ref.namespace, ref.name))
                      for table, (ref, _, rows) in zip(targets, replacements)]
            lsn = self.wal.append(parts, wait=False)
            if replacements:
                self.wal.wait_durable(lsn)
                self._replace(replacements, targets, lsn)
            pendings = [(key, self.memtable.add(key, rows, lsn, meta["uuid"]))
                        for meta, rows, key in parts if "base" not in meta]
        self.wal.wait_durable(lsn)
        for ref, *_ in [*writes, *replacements]:  # tables with vector indexes: index new files
            self.engine.vectors.note_write(ref)
        if replacements:
            self.wal.release(self._flushed)
        due = [key for key, pending in pendings
               if pending.rows >= self.flush_rows or pending.bytes >= self.flush_bytes]
        if not flush:
            return due
        self.flush_due(due)
        return []

    def flush_due(self, keys: list[str]) -> None:
        """Flush tables after an acknowledged write, unless a flush of them runs already
        (it is nearly done; the next write or the flusher takes the rest)."""
        for key in keys:
            try:
                self.flush(*key.split(".", 1), wait=False)
            except Exception as exc:
                # The write is acknowledged already: a failed flush must not look like a
                # failed write (a retry would apply it twice). The flusher retries.
                log.warning("flush of %s after a write failed, retried later: %s", key, exc)

    def _unchanged(self, ref: "TableRef", pending: list[pa.Table]):
        """The Iceberg table to replace the rows of, provided they are still the ones the
        transaction read (called under its lock): no rows written since, and no commit since
        by anyone but this engine's flushes, which only move pinned pending rows into the
        snapshot (the overwrite then applies to the snapshot they made)."""
        key = table_key(ref.namespace, ref.name)
        pinned = {id(t) for t in pending}  # alive: the transaction holds them
        written = any(id(t) not in pinned for t in self.memtable.rows(key))
        location = self.engine.warehouse.metadata_location(ref.namespace, ref.name)
        step = location
        while step != ref.table.metadata_location and step in self._flushed_from:
            before, flushed = self._flushed_from[step]
            if not flushed <= pinned:  # that flush also committed rows written since
                break
            step = before
        if written or step != ref.table.metadata_location:
            raise E.SerializationFailure(
                f"could not serialize access to {ref.qualified} due to a concurrent update",
                detail="another session changed the table after this transaction first read it",
                hint="nothing was written; run the transaction again")
        if location == ref.table.metadata_location:
            return ref.table
        return self._find(ref.namespace, ref.name, str(ref.table.metadata.table_uuid))

    def _replace(self, replacements, targets, lsn: int) -> None:
        """Apply a logged record's replacements: one overwrite commit per table on the snapshot
        `_unchanged` checked, marked with the record's LSN, then the table's pending rows (all
        part of the new rows) leave the memtable. Called under the tables' locks."""
        for done, (table, (ref, _, rows)) in enumerate(zip(targets, replacements)):
            try:
                with table.transaction() as tx:
                    _overwrite(tx, table, sorted_rows(table, conform([rows], table)))
                    tx.set_properties({LSN_PROPERTY + self.wal.id: str(lsn)})
            except Exception as exc:
                # Another process committed to the table in the moment since the check. The
                # record must never be replayed: log its abort before reporting the failure.
                self.wal.append([({"abort": lsn}, pa.table({}), None)])
                applied = [r.qualified for r, _, _ in replacements[:done]]
                if isinstance(exc, (CommitFailedException, ValidationException)):
                    raise E.SerializationFailure(
                        f"could not serialize access to {ref.qualified} due to a concurrent update",
                        detail=f"already committed: {', '.join(applied)}" if applied else None,
                        hint="run the transaction again") from exc
                if isinstance(exc, OSError):
                    raise storage_error(exc, f"could not commit to {ref.qualified}") from exc
                raise
            key = table_key(ref.namespace, ref.name)
            pending = self.memtable.take(key)
            self._flushed[key] = max(lsn, pending.max_lsn if pending else 0)

    def _check_current(self, ref: "TableRef") -> None:
        """Refuse rows checked against a table that has changed since (ALTER, DROP, RENAME
        by another session): they could no longer be flushed as they are."""
        from omnilake.engine.tables import load
        location = self.engine.warehouse.metadata_location(ref.namespace, ref.name)
        if location == ref.table.metadata_location:
            return  # unchanged since the statement loaded it: one catalog query
        try:
            current = load(self.engine, ref.namespace, ref.name)
        except E.UndefinedTable:
            current = None
        if current is None or current.table.metadata.table_uuid != ref.table.metadata.table_uuid:
            raise E.SerializationFailure(f"table {ref.qualified} was dropped or renamed meanwhile",
                                         hint="nothing was written")
        if current.table.metadata.current_schema_id != ref.table.metadata.current_schema_id:
            raise E.SerializationFailure(f"table {ref.qualified} was altered meanwhile",
                                         hint="nothing was written; run the statement again")

    @contextmanager
    def reading(self, namespace: str, name: str):
        """Hold off flushes of a table while a reader pins its snapshot and pending rows."""
        lock = self.memtable.lock(table_key(namespace, name))
        if not lock.acquire(blocking=not memory_only.active()):
            raise memory_only.WouldWait("a table's memtable lock, held by a writer or a flush")
        try:
            yield lambda: self.memtable.rows(table_key(namespace, name))
        finally:
            lock.release()

    # -- flushing ------------------------------------------------------------------------
    def flush(self, namespace: str, name: str, wait: bool = True) -> int:
        """Commit a table's pending rows to Iceberg; the number of rows committed. With
        `wait=False`, nothing (0) when a flush of the table is running already."""
        key = table_key(namespace, name)
        with self._flush_locks_guard:
            flushing = self._flush_locks[key]
        # One flush of a table at a time: two would write the same pending rows.
        if not flushing.acquire(blocking=wait):
            return 0
        try:
            with self.memtable.lock(key):
                pending = self.memtable.stats(key)
                if pending is None:
                    return 0
                # What this flush commits: the rows pending now. They stay in the memtable,
                # visible to readers, while their files are written; writes go on meanwhile.
                batch = Pending(tables=list(pending.tables), max_lsn=pending.max_lsn,
                                rows=pending.rows, bytes=pending.bytes, since=time.monotonic(),
                                table_uuid=pending.table_uuid)
            committed = self._commit(namespace, name, batch, self.wal.id,
                                     committing=lambda: self._committing(key, pending, batch))
        finally:
            flushing.release()
        if not committed:
            return 0
        self.wal.release(self._flushed)
        return batch.rows

    @contextmanager
    def _committing(self, key: str, pending: Pending, batch: Pending):
        """Around a flush's Iceberg commit, under the table's lock (readers then see the rows
        either in the snapshot or in the memtable, never both): first check that `batch` is
        still the oldest pending rows, then, once committed, remove them from the memtable."""
        with self.memtable.lock(key):
            current = self.memtable.stats(key)
            count = len(batch.tables)
            # Since the flush began, writes only appended tables to `pending`, or merged
            # small writes into its last table (storage/memtable.py). Anything else (a
            # transaction's replacement or DROP TABLE took the rows) supersedes the flush.
            if current is not pending or len(current.tables) < count or any(
                    a is not b for a, b in zip(current.tables[:count - 1], batch.tables)):
                raise _Superseded()
            last = current.tables[count - 1]
            if last is not batch.tables[-1] and last.num_rows <= batch.tables[-1].num_rows:
                raise _Superseded()
            yield
            self.memtable.take(key)
            rest = current.tables[count:]
            if last is not batch.tables[-1]:  # merged since: its newer rows stay pending
                rest.insert(0, last.slice(batch.tables[-1].num_rows))
            if rest:
                self.memtable.restore(key, Pending(
                    tables=rest, max_lsn=current.max_lsn, rows=current.rows - batch.rows,
                    bytes=max(0, current.bytes - batch.bytes), since=batch.since,
                    table_uuid=current.table_uuid))
            self._flushed[key] = batch.max_lsn

    def flush_all(self) -> None:
        for key in self.memtable.keys():
            namespace, name = key.split(".", 1)
            self.flush(namespace, name)

    def discard(self, namespace: str, name: str) -> None:
        """Forget a dropped table's pending rows; recovery skips them by table uuid."""
        key = table_key(namespace, name)
        with self.memtable.lock(key):
            pending = self.memtable.take(key)
            if pending is not None:
                self._flushed[key] = pending.max_lsn

    def _commit(self, namespace: str, name: str, pending: Pending, wal_id: str,
                table_uuid: str | None = None, overwrite: bool = False,
                committing=None) -> bool:
        """Append (or, a replayed replacement, overwrite with) `pending`'s rows in one commit
        that records `pending.max_lsn`. `committing()`: a flush's context around the commit
        itself (see `_committing`). False when the flush was superseded: nothing committed."""
        uuid = table_uuid or pending.table_uuid
        written = None  # (table, its schema and spec ids, data files) not committed yet
        try:
            for attempt in range(COMMIT_ATTEMPTS):
                try:
                    table = self._find(namespace, name, uuid)
                except OSError as exc:  # the object store holding its metadata is unreachable
                    raise storage_error(exc, f"could not flush {namespace}.{name}") from exc
                if table is None:
                    log.warning("table %s.%s was dropped; %d pending row(s) dropped with it",
                                namespace, name, pending.rows)
                    if committing is not None:
                        with committing():
                            pass
                    return True
                before = table.metadata_location
                try:
                    if overwrite:  # a replayed replacement: the table's rows from then on
                        with table.transaction() as tx:
                            _overwrite(tx, table, sorted_rows(table, conform(pending.tables, table)))
                            tx.set_properties({LSN_PROPERTY + wal_id: str(pending.max_lsn)})
                    else:
                        layout = (table.metadata.current_schema_id, table.metadata.default_spec_id)
                        if written is not None and written[1] != layout:  # altered meanwhile
                            delete_files(written[0], written[2])
                            written = None
                        if written is None:  # the expensive part: sort, split, write Parquet
                            rows = conform(pending.tables, table)
                            written = (table, layout,
                                       write_data_files(table, rows, sort_keys(table, rows)))
                        tx = table.transaction()
                        with tx.update_snapshot().fast_append() as append:
                            for data_file in written[2]:
                                append.append_data_file(data_file)
                        tx.set_properties({LSN_PROPERTY + wal_id: str(pending.max_lsn)})
                        # The files and the LSN marking their rows commit together, or not.
                        with committing() if committing is not None else nullcontext():
                            tx.commit_transaction()
                            written = None  # the table's files now
                            self._note_flush(before, table.metadata_location, pending.tables)
                        return True
                    self._note_flush(before, table.metadata_location, pending.tables)
                    return True
                except CommitFailedException as exc:
                    if attempt == COMMIT_ATTEMPTS - 1:
                        raise E.SerializationFailure(
                            f"could not flush {namespace}.{name}: concurrent commits kept winning",
                            hint="the rows stay in the write-ahead log and memtable and are "
                                 "flushed again later") from exc
                    time.sleep(random.uniform(0.005, 0.01 * 2 ** attempt))
                except (E.Error, _Superseded):
                    raise
                except OSError as exc:  # files unwritable: disk full, object store unreachable
                    raise storage_error(exc, f"could not flush {namespace}.{name}") from exc
                except Exception as exc:  # the catalog database busy or gone
                    raise E.OperationalError(f"could not flush {namespace}.{name}: {exc}",
                                             hint="the rows stay in the write-ahead log") from exc
        except _Superseded:
            return False
        finally:
            if written is not None:  # never committed: unreferenced, remove them
                delete_files(written[0], written[2])
        raise AssertionError("unreachable")

    def _note_flush(self, before: str, after: str, tables: list[pa.Table]) -> None:
        """Remember which metadata file each flush replaced, and which pending tables it
        committed: a transaction's replacement still applies across flushes of this engine
        that committed only rows it read (see `_unchanged`)."""
        with self._flush_chain_lock:
            self._flushed_from[after] = (before, frozenset(id(t) for t in tables))
            while len(self._flushed_from) > FLUSH_CHAIN_SIZE:
                self._flushed_from.pop(next(iter(self._flushed_from)))

    def _find(self, namespace: str, name: str, uuid: str | None):
        """The table the rows were written to: by name, or, renamed by another process since,
        by its uuid anywhere in the warehouse; None once it was dropped."""
        catalog = self.engine.warehouse.catalog
        try:
            table = catalog.load_table((namespace, name))
            if uuid is None or str(table.metadata.table_uuid) == uuid:
                return table
        except NoSuchTableError:
            pass
        if uuid is None:
            return None
        for ns in catalog.list_namespaces():
            for ident in catalog.list_tables(ns):
                table = catalog.load_table(ident)
                if str(table.metadata.table_uuid) == uuid:
                    return table
        return None

    def flush_later(self, keys: list[str]) -> None:
        """Flush tables on the flusher thread, so the writer returns at once and writes on
        while the files are written (their sorting, encoding and compression run outside the
        GIL, on another core). A table pending BACKLOG times its thresholds is flushed here
        and now, waiting for a flush already running: writers slow down to what flushes keep
        up with, and memory stays bounded."""
        if not keys:
            return
        behind = []
        for key in keys:
            stats = self.memtable.stats(key)
            if stats is not None and (stats.rows >= BACKLOG * self.flush_rows
                                      or stats.bytes >= BACKLOG * self.flush_bytes):
                behind.append(key)
        with self._due_lock:
            self._due.update(key for key in keys if key not in behind)
        self._wake.set()
        for key in behind:
            try:
                self.flush(*key.split(".", 1), wait=True)
            except Exception as exc:  # acknowledged already (see flush_due); retried later
                log.warning("flush of %s after a write failed, retried later: %s", key, exc)

    def _flush_loop(self) -> None:
        while True:
            self._wake.wait(FLUSHER_TICK_S)
            if self._stop.is_set():
                return
            self._wake.clear()
            with self._due_lock:
                due, self._due = self._due, set()
            now = time.monotonic()
            for key in self.memtable.keys():
                stats = self.memtable.stats(key)
                if stats is not None and (key in due or now - stats.since >= self.flush_interval):
                    namespace, name = key.split(".", 1)
                    try:
                        self.flush(namespace, name, wait=False)
                        self._compact_if_due(namespace, name)
                    except Exception as exc:  # kept in memory and the log; retried next tick
                        log.warning("background flush of %s failed: %s", key, exc)

    def _compact_if_due(self, namespace: str, name: str) -> None:
        """Small flushes make small files: compact once a table has `compact_files` of them."""
        limit = self.engine.settings.compact_files
        if limit <= 0:
            return
        table = self.engine.warehouse.catalog.load_table((namespace, name))
        snapshot = table.current_snapshot()
        files = int((snapshot.summary or {}).get("total-data-files", 0)) if snapshot else 0
        if files >= limit:
            from omnilake.engine.maintenance import compact
            result = compact(table, self.engine.settings.target_file_size, min_files=limit // 2)
            log.info("compacted %s.%s: %d files into %d", namespace, name,
                     result.files_rewritten, result.files_written)

    # -- recovery ------------------------------------------------------------------------
    def _recover(self, root) -> int:
        """Replay logs left by processes that are gone; the number of rows recovered."""
        total = 0
        for folder, lock_fd in orphaned_logs(root):
            records = list(read_log(folder))
            aborted = {meta["abort"] for record in records for meta, _ in record.parts
                       if "abort" in meta}
            by_table: dict[tuple[str, str, str], list] = defaultdict(list)
            try:
                for record in records:
                    if record.lsn in aborted or any("abort" in meta for meta, _ in record.parts):
                        continue
                    if not self._replayable(record, folder.name):
                        continue
                    for meta, rows in record.parts:
                        by_table[(meta["namespace"], meta["table"], meta["uuid"])].append(
                            (record.lsn, rows, "base" in meta))
                for (namespace, name, table_uuid), parts in by_table.items():
                    total += self._replay(namespace, name, table_uuid, parts, folder.name)
            except BaseException:
                os.close(lock_fd)  # let a later open (or another process) try again
                raise
            remove_log(folder, lock_fd)
        if total:
            log.info("recovered %d acknowledged row(s) from the write-ahead log", total)
        return total

    def _replayable(self, record, wal_id: str) -> bool:
        """A record with replacements whose COMMIT did not finish: replay it only if each
        replacement was applied already or still applies to the snapshot it was made from.
        Otherwise the COMMIT never returned, and none of the record may come back."""
        for meta, _ in record.parts:
            if "base" not in meta:
                continue
            table = self._find(meta["namespace"], meta["table"], meta["uuid"])
            if table is None or int(table.properties.get(LSN_PROPERTY + wal_id, "0")) >= record.lsn:
                continue
            snapshot = table.current_snapshot()
            if (snapshot.snapshot_id if snapshot else None) != meta["base"]:
                log.warning("skipped a transaction from the write-ahead log (LSN %d): table "
                            "%s.%s changed before its COMMIT finished", record.lsn,
                            meta["namespace"], meta["table"])
                return False
        return True

    def _replay(self, namespace, name, table_uuid, parts, wal_id: str) -> int:
        """Commit a table's logged rows above its recorded LSN; from the last replacement on
        when there is one (it holds every row of the table before it)."""
        table = self._find(namespace, name, table_uuid)
        if table is None:
            return 0  # the table was dropped after these writes
        flushed = int(table.properties.get(LSN_PROPERTY + wal_id, "0"))
        todo = [(lsn, rows, replaces) for lsn, rows, replaces in parts if lsn > flushed]
        if not todo:
            return 0
        last = max((i for i, (_, _, replaces) in enumerate(todo) if replaces), default=None)
        if last is not None:
            todo = todo[last:]
        pending = Pending(tables=[rows for _, rows, _ in todo], max_lsn=max(lsn for lsn, _, _ in todo),
                          rows=sum(rows.num_rows for _, rows, _ in todo), table_uuid=table_uuid)
        self._commit(namespace, name, pending, wal_id, overwrite=last is not None)
        return pending.rows

    def close(self) -> None:
        if self._closed:
            return
        self._stop.set()
        self._wake.set()
        self._flusher.join(timeout=5)
        self.flush_all()
        self._closed = True
        self.wal.close(remove=lambda: not self.memtable.keys())

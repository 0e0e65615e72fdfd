"""The durable write path: WAL record, memtable, then Iceberg commits in batches (flushes).

A write is acknowledged once its WAL record is durable and its rows are in the memtable,
where the next query in the process sees them. A flush appends a table's pending rows to
Iceberg in one commit that also records, in the table property `omnilake.wal.<wal id>`, the
highest LSN it contains. Recovery (at open) replays the records of logs whose process is gone
with an LSN above that property, in one commit per table, then deletes the log: nothing
acknowledged is lost, and nothing is applied twice, because the rows and the LSN that marks
them commit together or not at all.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import defaultdict
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING

import pyarrow as pa
from pyiceberg.exceptions import CommitFailedException, NoSuchTableError

from omnilake import errors as E
from omnilake.storage.memtable import Memtable, Pending
from omnilake.storage.wal import WriteAheadLog, orphaned_logs, read_log, remove_log

if TYPE_CHECKING:
    from omnilake.engine.engine import Engine
    from omnilake.engine.tables import TableRef

log = logging.getLogger(__name__)
LSN_PROPERTY = "omnilake.wal."
COMMIT_ATTEMPTS = 8
FLUSHER_TICK_S = 0.5


def table_key(namespace: str, name: str) -> str:
    return f"{namespace}.{name}"


class Writer:
    def __init__(self, engine: "Engine"):
        settings = engine.settings
        self.engine = engine
        self.flush_rows = settings.flush_rows
        self.flush_bytes = settings.flush_bytes
        self.flush_interval = settings.flush_interval
        self.memtable = Memtable()
        self._flushed: dict[str, int] = {}
        self._closed = False
        root = engine.warehouse.local_root / "_wal"
        self.recovered = self._recover(root)
        self.wal = WriteAheadLog.create(root, settings.durability)
        self._stop = threading.Event()
        self._flusher = threading.Thread(target=self._flush_loop, daemon=True, name="omnilake-flusher")
        self._flusher.start()

    # -- writing -------------------------------------------------------------------------
    def write(self, ref: "TableRef", rows: pa.Table) -> None:
        """Log and buffer checked rows (storage form); returns once they are acknowledged."""
        self.write_all([(ref, rows)])

    def write_all(self, writes: list[tuple["TableRef", pa.Table]]) -> None:
        """Several tables' rows as one record: acknowledged, and recovered, all or none."""
        if self._closed:
            raise E.OperationalError("the engine is closed")
        parts = [({"namespace": ref.namespace, "table": ref.name,
                   "uuid": str(ref.table.metadata.table_uuid)}, rows,
                  table_key(ref.namespace, ref.name)) for ref, rows in writes if rows.num_rows]
        if not parts:
            return
        keys = sorted({key for _, _, key in parts})
        # Logged and buffered under the tables' locks (taken in name order), so a flush never
        # marks an LSN flushed while an older record of its table is still on its way into the
        # memtable. The fsync waits outside the locks, where concurrent writers share it.
        with ExitStack() as locks:
            for key in keys:
                locks.enter_context(self.memtable.lock(key))
            lsn = self.wal.append(parts, wait=False)
            pendings = [(key, self.memtable.add(key, rows, lsn)) for _, rows, key in parts]
        self.wal.wait_durable(lsn)
        for key, pending in pendings:
            if pending.rows >= self.flush_rows or pending.bytes >= self.flush_bytes:
                self.flush(*key.split(".", 1))

    @contextmanager
    def reading(self, namespace: str, name: str):
        """Hold off flushes of a table while a reader pins its snapshot and pending rows."""
        with self.memtable.lock(table_key(namespace, name)):
            yield lambda: self.memtable.rows(table_key(namespace, name))

    # -- flushing ------------------------------------------------------------------------
    def flush(self, namespace: str, name: str) -> int:
        """Commit a table's pending rows to Iceberg; the number of rows committed."""
        key = table_key(namespace, name)
        with self.memtable.lock(key):
            pending = self.memtable.take(key)
            if pending is None:
                return 0
            try:
                self._commit(namespace, name, pending, self.wal.id)
            except BaseException:
                self.memtable.restore(key, pending)
                raise
            self._flushed[key] = pending.max_lsn
        self.wal.release(self._flushed)
        return pending.rows

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

    def _commit(self, namespace: str, name: str, pending: Pending, wal_id: str) -> None:
        rows = pa.concat_tables(pending.tables, promote_options="none")
        catalog = self.engine.warehouse.catalog
        for attempt in range(COMMIT_ATTEMPTS):
            try:
                table = catalog.load_table((namespace, name))
            except NoSuchTableError:
                log.warning("table %s.%s is gone; %d pending row(s) dropped", namespace, name,
                            pending.rows)
                return
            try:
                with table.transaction() as tx:
                    tx.append(rows)
                    tx.set_properties({LSN_PROPERTY + wal_id: str(pending.max_lsn)})
                return
            except CommitFailedException as exc:
                if attempt == COMMIT_ATTEMPTS - 1:
                    raise E.SerializationFailure(
                        f"could not flush {namespace}.{name}: concurrent commits kept winning",
                        hint="the rows stay in the write-ahead log and memtable; retry") from exc
                time.sleep(random.uniform(0.005, 0.01 * 2 ** attempt))

    def _flush_loop(self) -> None:
        while not self._stop.wait(FLUSHER_TICK_S):
            now = time.monotonic()
            for key in self.memtable.keys():
                stats = self.memtable.stats(key)
                if stats is not None and now - stats.since >= self.flush_interval:
                    namespace, name = key.split(".", 1)
                    try:
                        self.flush(namespace, name)
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
            by_table: dict[tuple[str, str, str], list] = defaultdict(list)
            for record in read_log(folder):
                for meta, rows in record.parts:
                    by_table[(meta["namespace"], meta["table"], meta["uuid"])].append((record.lsn, rows))
            for (namespace, name, table_uuid), records in by_table.items():
                total += self._replay(namespace, name, table_uuid, records, folder.name)
            remove_log(folder, lock_fd)
        if total:
            log.info("recovered %d acknowledged row(s) from the write-ahead log", total)
        return total

    def _replay(self, namespace, name, table_uuid, records, wal_id: str) -> int:
        try:
            table = self.engine.warehouse.catalog.load_table((namespace, name))
        except NoSuchTableError:
            return 0
        if str(table.metadata.table_uuid) != table_uuid:
            return 0  # the table was dropped (and maybe re-created) after these writes
        flushed = int(table.properties.get(LSN_PROPERTY + wal_id, "0"))
        todo = [(lsn, rows) for lsn, rows in records if lsn > flushed]
        if not todo:
            return 0
        pending = Pending(tables=[rows for _, rows in todo], max_lsn=max(lsn for lsn, _ in todo),
                          rows=sum(rows.num_rows for _, rows in todo))
        self._commit(namespace, name, pending, wal_id)
        return pending.rows

    def close(self) -> None:
        if self._closed:
            return
        self._stop.set()
        self._flusher.join(timeout=5)
        self.flush_all()
        self._closed = True
        self.wal.close(remove=not self.memtable.keys())

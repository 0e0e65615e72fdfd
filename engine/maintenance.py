"""Table maintenance: compaction (`OPTIMIZE`), snapshot expiry and orphan-file removal
(`VACUUM`), also run by `omnilake maintenance`.

Compaction rewrites a table's small data files into files of about `target_file_size` in one
Iceberg commit that removes the old files and adds the new ones (rows, deletes applied, stay
the same). VACUUM expires snapshots older than the retention window (the current snapshot and
branch or tag heads are kept), then deletes files under the table's folder that no remaining
snapshot or metadata file refers to and that are older than the window, so a writer's files
that are not committed yet are never taken.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io.pyarrow import ArrowScan, _dataframe_to_data_files
from pyiceberg.table import Table

from omnilake import errors as E
from omnilake.catalog.indexes import read_indexes
from omnilake.storage import objectstore
from omnilake.storage.files import is_local, local_path

if TYPE_CHECKING:
    from omnilake.engine.engine import Session

log = logging.getLogger(__name__)


@dataclass
class CompactionResult:
    files_before: int
    files_rewritten: int
    files_written: int
    rows: int


@dataclass
class VacuumResult:
    snapshots_expired: int
    files_removed: int
    bytes_removed: int


def compact(table: Table, target_bytes: int, min_files: int = 2) -> CompactionResult:
    """Rewrite the files smaller than `target_bytes` into target-size files, in one commit."""
    snapshot = table.current_snapshot()
    if snapshot is None:
        return CompactionResult(0, 0, 0, 0)
    tasks = list(table.scan(snapshot_id=snapshot.snapshot_id).plan_files())
    small = [t for t in tasks if t.file.file_size_in_bytes < target_bytes or t.delete_files]
    if len(small) < min_files and not any(t.delete_files for t in small):
        return CompactionResult(len(tasks), 0, 0, 0)
    rows = ArrowScan(table.metadata, table.io, table.schema(), AlwaysTrue()).to_table(small)
    from omnilake.engine.writes import sorted_rows
    rows = sorted_rows(table, rows)  # a time series: compacted files sorted by tags, time
    written = []
    if rows.num_rows:
        written = list(_dataframe_to_data_files(table.metadata, rows, table.io))
    try:
        with table.transaction() as tx:
            with tx.update_snapshot(snapshot_properties={"omnilake.operation": "optimize"}) \
                    .overwrite() as overwrite:
                for task in small:
                    overwrite.delete_data_file(task.file)
                for data_file in written:
                    overwrite.append_data_file(data_file)
    except CommitFailedException as exc:
        raise E.SerializationFailure(f"OPTIMIZE of {table.name()} lost to a concurrent commit",
                                     hint="run it again") from exc
    return CompactionResult(len(tasks), len(small), len(written), rows.num_rows)


def vacuum(table: Table, retention: dt.timedelta, now: float | None = None) -> VacuumResult:
    now = time.time() if now is None else now
    cutoff = dt.datetime.fromtimestamp(now, dt.timezone.utc) - retention
    before = len(table.snapshots())
    try:
        table.maintenance.expire_snapshots().older_than(cutoff).commit()
    except CommitFailedException as exc:
        raise E.SerializationFailure(f"VACUUM of {table.name()} lost to a concurrent commit",
                                     hint="run it again") from exc
    table = table.refresh()
    expired = before - len(table.snapshots())
    referenced = _referenced_files(table)
    removed = removed_bytes = 0
    for uri, size, mtime in _files_under(table):
        if _key(uri) in referenced:
            continue
        if mtime > cutoff.timestamp():
            continue  # may belong to a commit in progress
        table.io.delete(uri)
        removed_bytes += size
        removed += 1
    return VacuumResult(expired, removed, removed_bytes)


def _files_under(table: Table) -> list[tuple[str, int, float]]:
    """(uri, size, mtime) of every file in the table's folder, local or on object storage."""
    location = table.location()
    if is_local(location):
        root = Path(local_path(location))
        return [(str(p), p.stat().st_size, p.stat().st_mtime)
                for p in root.rglob("*") if p.is_file()]
    options = objectstore.S3Options.from_properties(table.io.properties)
    return objectstore.list_files(options.filesystem(), location)


def _key(uri: str) -> str:
    """Local files compare by real path, objects by URI."""
    return os.path.realpath(local_path(uri)) if is_local(uri) else uri


def _referenced_files(table: Table) -> set[str]:
    metadata = table.metadata
    files = {table.metadata_location}
    files.update(entry.metadata_file for entry in metadata.metadata_log)
    for snapshot in metadata.snapshots:
        files.add(snapshot.manifest_list)
        for manifest in snapshot.manifests(table.io):
            files.add(manifest.manifest_path)
            for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=False):
                files.add(entry.data_file.file_path)
    for statistics in metadata.statistics:
        files.add(statistics.statistics_path)
    # Vector-index segments live beside the data (see catalog/indexes.py); those of files no
    # longer in any snapshot are dropped from the registry, and then removed here.
    for index in read_indexes(table.properties).values():
        files.update(location for location in index.segments.values() if location)
    return {_key(f) for f in files}


def optimize_statement(session: "Session", namespace: str, name: str) -> CompactionResult:
    session.engine.writer.flush(namespace, name)
    table = session.engine.warehouse.catalog.load_table((namespace, name))
    return compact(table, session.engine.settings.target_file_size)


def vacuum_statement(session: "Session", namespace: str, name: str) -> VacuumResult:
    from omnilake.engine.retention import drop_expired, options_of
    table = session.engine.warehouse.catalog.load_table((namespace, name))
    options = options_of(table)
    if options is not None and options.retention:  # a time series: expired partitions go first
        drop_expired(session.engine, namespace, name)
        table = session.engine.warehouse.catalog.load_table((namespace, name))
    retention = dt.timedelta(hours=session.engine.settings.retention_hours)
    return vacuum(table, retention)


@dataclass
class BlobVacuumResult:
    blobs_removed: int
    bytes_removed: int
    blobs_kept: int


def vacuum_blobs(engine, retention: dt.timedelta, now: float | None = None) -> BlobVacuumResult:
    """Delete blob objects that no snapshot of any table refers to and that, with their
    `.seen` marker, are older than the retention window (storage/blobs.py). Runs after the
    tables' own VACUUM, so blobs only expired snapshots used go too. This process's rows not
    yet flushed are flushed first; other processes' are protected by the window."""
    now = time.time() if now is None else now
    cutoff = now - retention.total_seconds()
    engine.writer.flush_all()
    referenced = _referenced_blobs(engine)
    removed = removed_bytes = kept = 0
    for key, (size, mtime, paths) in engine.blobs.objects().items():
        if key in referenced or mtime > cutoff:
            kept += 1
            continue
        engine.blobs.remove(paths)
        removed += 1
        removed_bytes += size
    return BlobVacuumResult(removed, removed_bytes, kept)


def _referenced_blobs(engine) -> set[str]:
    """sha256 of every blob value in the data files of every table's remaining snapshots."""
    import pyarrow.parquet as pq
    from omnilake.catalog.types import column_sql_types
    from omnilake.storage.files import parquet_schema, top_level_field_ids
    catalog = engine.warehouse.catalog
    found: set[str] = set()
    for namespace in catalog.list_namespaces():
        for identifier in catalog.list_tables(namespace):
            table = catalog.load_table(identifier)
            types = column_sql_types(table.schema(), table.properties)
            blob_ids = {fid for fid, t in types.items() if t.name == "blob"}
            if not blob_ids:
                continue
            files = set()
            for snapshot in table.metadata.snapshots:  # live files of each snapshot
                for manifest in snapshot.manifests(table.io):
                    for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
                        files.add(entry.data_file.file_path)
            for uri in files:
                by_id = top_level_field_ids(parquet_schema(uri, table.io))
                names = [f"{by_id[fid].name}.sha256" for fid in blob_ids if fid in by_id]
                if not names:
                    continue
                source = local_path(uri) if is_local(uri) else table.io.new_input(uri).open()
                data = pq.read_table(source, columns=names)
                for column in data.columns:
                    values = column.combine_chunks()
                    if isinstance(values.type, pa.StructType):
                        values = values.field("sha256")
                    found.update(v for v in values.to_pylist() if v)
    return found


def vacuum_blobs_statement(session: "Session") -> dict:
    """VACUUM's row for the blob store."""
    retention = dt.timedelta(hours=session.engine.settings.retention_hours)
    done = vacuum_blobs(session.engine, retention)
    return {"table": "(blobs)", "snapshots_expired": 0, "files_removed": done.blobs_removed,
            "bytes_removed": done.bytes_removed}

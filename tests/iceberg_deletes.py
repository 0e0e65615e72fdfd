"""Write a merge-on-read position-delete file into a table, as Spark or Trino would.

pyiceberg 0.12 reads position deletes but only writes copy-on-write deletes, so this helper
writes the delete file (Parquet with `file_path`, `pos`) and commits it in a delete manifest
through pyiceberg's snapshot producer.
"""

from __future__ import annotations

import uuid

import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.manifest import (DataFile, DataFileContent, FileFormat, ManifestContent,
                                ManifestEntry, ManifestEntryStatus, ManifestWriterV2)
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Operation
from pyiceberg.table.update.snapshot import _FastAppendFiles
from pyiceberg.typedef import Record

POSITION_DELETE_SCHEMA = pa.schema([
    pa.field("file_path", pa.string(), nullable=False, metadata={b"PARQUET:field_id": b"2147483546"}),
    pa.field("pos", pa.int64(), nullable=False, metadata={b"PARQUET:field_id": b"2147483545"}),
])


class _DeleteManifestWriter(ManifestWriterV2):
    def content(self) -> ManifestContent:
        return ManifestContent.DELETES

    @property
    def _meta(self) -> dict[str, str]:
        return {**super()._meta, "content": "deletes"}


class _AddDeleteFiles(_FastAppendFiles):
    delete_files: list[DataFile] = []

    def _manifests(self):
        manifests = super()._manifests()
        metadata = self._transaction.table_metadata
        writer = _DeleteManifestWriter(metadata.spec(), metadata.schema(), self.new_manifest_output(),
                                       self._snapshot_id, "deflate")
        with writer:
            for data_file in self.delete_files:
                writer.add(ManifestEntry.from_args(status=ManifestEntryStatus.ADDED,
                                                   snapshot_id=self._snapshot_id, data_file=data_file))
        return manifests + [writer.to_manifest_file()]


def delete_positions(table: Table, data_file_path: str, positions: list[int]) -> None:
    """Mark rows `positions` of one data file deleted, in a new snapshot."""
    path = f"{table.location()}/data/delete-{uuid.uuid4()}.parquet"
    local = path.removeprefix("file://")
    pq.write_table(pa.table({"file_path": [data_file_path] * len(positions), "pos": positions},
                            schema=POSITION_DELETE_SCHEMA), local)
    import os
    delete_file = DataFile.from_args(
        content=DataFileContent.POSITION_DELETES, file_path=path, file_format=FileFormat.PARQUET,
        partition=Record(), record_count=len(positions), file_size_in_bytes=os.path.getsize(local))
    delete_file.spec_id = table.metadata.default_spec_id
    with table.transaction() as tx:
        producer = _AddDeleteFiles(operation=Operation.DELETE, transaction=tx, io=table.io)
        producer.delete_files = [delete_file]
        producer.commit()

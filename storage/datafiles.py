"""Arrow rows -> sorted, partitioned Iceberg data files (Parquet), for flushes.

A flush used to hand its rows to pyiceberg's `Transaction.append`, which splits them by
partition with one filter (a full copy) per partition, after the rows were sorted with
`Table.sort_by` on the tag strings. Here the rows are ordered once: each sort key becomes an
integer rank (strings through a dictionary: hash the values, sort only the distinct ones), the
partition values lead the keys, one `numpy.lexsort` orders them all, one `take` copies the
rows, and each partition is then a zero-copy slice. The files themselves are written by
pyiceberg's own `write_file`, so they are what `append` would write: same Parquet writer
properties (compression, row-group limit, page sizes), field ids in the Parquet schema,
column statistics in the `DataFile`s, file names from the table's location provider.

Writing files is separate from committing them (the caller's part, engine/writes.py): the
files can be written while new rows keep arriving, and committed in a short step afterwards.
Files written and never committed are unreferenced: no reader sees them (`delete_files`
removes them, best effort).

pyiceberg APIs used here that are not documented as public (pyiceberg is pinned below 0.13):
`pyiceberg.io.pyarrow.write_file`, `pyarrow_to_schema`, `bin_pack_arrow_table`,
`_dataframe_to_data_files` (the fallback), `pyiceberg.table.WriteTask`,
`pyiceberg.partitioning.PartitionKey`/`PartitionFieldValue` and `Transform.pyarrow_transform`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

log = logging.getLogger(__name__)

SortKeys = list[tuple[str, str]]  # (column, "ascending" | "descending"), as Table.sort_by takes


def sort_keys(table, rows: pa.Table) -> SortKeys | None:
    """The table's Iceberg sort order as `Table.sort_by` keys (a time series: tags, then
    time); None when unsorted or when the order is not plain columns of `rows`."""
    order = table.sort_order()
    if not order.fields:
        return None
    schema = table.schema()
    keys = []
    for f in order.fields:
        name = schema.find_column_name(f.source_id)
        if name is None or str(f.transform) != "identity" or name not in rows.column_names:
            return None
        keys.append((name, "descending" if str(f.direction).lower().startswith("desc")
                     else "ascending"))
    return keys


def _rank(column: pa.ChunkedArray | pa.Array, descending: bool = False) -> np.ndarray:
    """Integers that order as `sort_by` orders the column (stable sort, nulls and NaN last in
    either direction): equal values get equal numbers."""
    kind = column.type
    if pa.types.is_dictionary(kind):
        column = column.cast(kind.value_type)
        kind = kind.value_type
    order = "descending" if descending else "ascending"
    if column.null_count == 0 and kind != pa.uint64() and not pa.types.is_interval(kind) \
            and (pa.types.is_integer(kind) or pa.types.is_temporal(kind)):
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        values = pc.cast(column, pa.int64()) if not pa.types.is_temporal(kind) \
            else column.view(pa.int64()) if kind.bit_width == 64 else pc.cast(
                column.view(pa.int32()), pa.int64())
        values = values.to_numpy()
        return ~values if descending else values  # ~ reverses the order without overflow
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind) \
            or pa.types.is_large_binary(kind) or pa.types.is_string_view(kind) \
            or pa.types.is_binary_view(kind) or pa.types.is_fixed_size_binary(kind):
        # Hash the values; sort only the distinct ones (a few thousand tags, not every row).
        encoded = pc.dictionary_encode(column)
        if isinstance(encoded, pa.ChunkedArray):  # the chunks share one dictionary
            if encoded.num_chunks == 0:
                return np.zeros(0, np.int64)
            dictionary = encoded.chunk(0).dictionary
            indices = pa.chunked_array([c.indices for c in encoded.chunks]).combine_chunks()
        else:
            dictionary, indices = encoded.dictionary, encoded.indices
        ranks = pc.rank(dictionary, sort_keys=order, tiebreaker="dense").to_numpy()
        ranks = np.append(ranks.astype(np.int64), len(dictionary) + 1)  # null: last
        return ranks[indices.fill_null(len(dictionary)).to_numpy()]
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return pc.rank(column, sort_keys=order,  # nulls last by default
                   tiebreaker="dense").to_numpy().astype(np.int64)


def sort_indices(rows: pa.Table, keys: SortKeys, leading: Iterable[np.ndarray] = ()) -> np.ndarray:
    """Indices that sort `rows` as `rows.sort_by(keys)` does (stable), after the `leading`
    integer keys (partition numbers) if any."""
    columns = [*leading, *(_rank(rows.column(name), order == "descending") for name, order in keys)]
    if not columns:
        return np.arange(rows.num_rows)
    return np.lexsort(columns[::-1])  # lexsort's primary key is its last


def sort_rows(rows: pa.Table, keys: SortKeys | None) -> pa.Table:
    """`rows.sort_by(keys)`, the same order, cheaper for string keys."""
    if not keys or rows.num_rows < 2:
        return rows
    return rows.take(sort_indices(rows, keys))


def _partition_values(table, rows: pa.Table) -> list[tuple] | None:
    """(partition field, transformed values) per field of the table's partition spec; None
    when a field's source is not a top-level column of `rows` or its transform has no
    Arrow form (then pyiceberg's own writer is used)."""
    spec, schema = table.spec(), table.schema()
    result = []
    for field in spec.fields:
        name = schema.find_column_name(field.source_id)
        if name is None or name not in rows.column_names:
            return None
        source = schema.find_field(field.source_id).field_type
        try:
            transform = field.transform.pyarrow_transform(source)
        except (NotImplementedError, AttributeError, ModuleNotFoundError):
            return None
        values = transform(rows.column(name))
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        result.append((field, values))
    return result


def write_data_files(table, rows: pa.Table, keys: SortKeys | None = None) -> list:
    """Write `rows` (in the table's Arrow schema) as data files of `table`, one or more per
    partition, each sorted by `keys`; the pyiceberg `DataFile`s, not yet committed."""
    from pyiceberg.io.pyarrow import (_dataframe_to_data_files, bin_pack_arrow_table,
                                      pyarrow_to_schema, write_file)
    from pyiceberg.partitioning import PartitionFieldValue, PartitionKey
    from pyiceberg.table import TableProperties, WriteTask
    from pyiceberg.utils.properties import property_as_int

    if rows.num_rows == 0:
        return []
    metadata = table.metadata
    spec, schema = metadata.spec(), metadata.schema()
    partitions = [] if spec.is_unpartitioned() else _partition_values(table, rows)
    if partitions is None:  # not expressible here: pyiceberg splits and writes, we sort
        return list(_dataframe_to_data_files(metadata, sort_rows(rows, keys), table.io))
    # Partition numbers lead the sort, so that each partition is one run of rows; a field
    # with a single value (a flush within one day) is left out of the sort.
    leading = []
    for _field, values in partitions:
        if values.null_count == 0:
            bounds = pc.min_max(values).as_py()
            if bounds["min"] == bounds["max"]:
                continue
        leading.append(_rank(values))
    if leading or keys:
        order = sort_indices(rows, keys or [], leading)
        ordered = rows.take(order)
    else:
        order, ordered = np.arange(rows.num_rows), rows
    if leading:
        changes = np.zeros(rows.num_rows - 1, bool)
        for key in leading:
            ranked = key[order]
            changes |= ranked[1:] != ranked[:-1]
        starts = [0, *(np.flatnonzero(changes) + 1).tolist()]
    else:
        starts = [0]
    runs = list(zip(starts, [*starts[1:], rows.num_rows]))

    task_schema = pyarrow_to_schema(rows.schema, name_mapping=schema.name_mapping,
                                    format_version=metadata.format_version)
    target = property_as_int(metadata.properties, TableProperties.WRITE_TARGET_FILE_SIZE_BYTES,
                             TableProperties.WRITE_TARGET_FILE_SIZE_BYTES_DEFAULT)
    write_uuid, tasks = uuid.uuid4(), []
    for start, end in runs:
        key = None
        if partitions:
            first = int(order[start])
            key = PartitionKey(field_values=[PartitionFieldValue(field, values[first].as_py())
                                             for field, values in partitions],
                               partition_spec=spec, schema=schema)
        for batches in bin_pack_arrow_table(ordered.slice(start, end - start), target):
            tasks.append(WriteTask(write_uuid=write_uuid, task_id=len(tasks), schema=task_schema,
                                   record_batches=batches, partition_key=key))
    return list(write_file(table.io, metadata, iter(tasks)))


def delete_files(table, data_files: list) -> None:
    """Remove written but uncommitted data files (best effort: they are unreferenced, so
    a leftover wastes space and nothing else)."""
    for data_file in data_files:
        try:
            table.io.delete(data_file.file_path)
        except Exception as exc:  # noqa: BLE001 - cleanup must not hide the real failure
            log.warning("could not remove uncommitted data file %s: %s", data_file.file_path, exc)

"""BLOB values inside the engine: writing them (checked casts into a BLOB column) and turning
them back into bytes for clients (the wire server's bytea, the DB-API).

A BLOB column is the struct `catalog.types.BLOB_ARROW`; the bytes of values above
`storage.blobs.INLINE_LIMIT` live in the warehouse's `BlobStore`. Casts run deep inside the
write path, which knows tables, not engines, so the statement's store is a context variable
that `Session.run` sets (`using`).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc

from omnilake import errors as E
from omnilake.catalog.types import BLOB_ARROW, SQL_TYPE_KEY, is_blob_type
from omnilake.storage.blobs import BlobRef, BlobStore

_STORE: contextvars.ContextVar[BlobStore | None] = contextvars.ContextVar("omnilake_blob_store",
                                                                         default=None)
WIRE_BYTES_PER_PIECE = 64 * 1024 * 1024  # blob bytes resolved at once for a client


@contextlib.contextmanager
def using(store: BlobStore):
    """Make `store` the one BLOB casts of this thread's statement write to."""
    token = _STORE.set(store)
    try:
        yield store
    finally:
        _STORE.reset(token)


def current_store() -> BlobStore:
    store = _STORE.get()
    if store is None:
        raise E.InternalError("no blob store for this statement")
    return store


def to_blob_column(data: pa.ChunkedArray, what: str) -> pa.ChunkedArray:
    """Values for a BLOB column: blobs pass through; bytes (and text, as bytea reads it) are
    stored: inline when small, else as content-addressed objects."""
    if is_blob_type(data.type):
        return pc.cast(data, BLOB_ARROW)
    if pa.types.is_struct(data.type):
        raise E.DatatypeMismatch(f"{what} is of type blob but the value is of type {data.type}")
    if _is_text(data.type):
        from omnilake.engine.coerce import cast_column
        from omnilake.catalog.types import SqlType
        data = cast_column(data, SqlType("bytea"), what)
    if not (pa.types.is_binary(data.type) or pa.types.is_large_binary(data.type)
            or pa.types.is_binary_view(data.type) or pa.types.is_fixed_size_binary(data.type)):
        raise E.DatatypeMismatch(f"{what} is of type blob but the value is of type {data.type}",
                                 hint="insert bytes, text, or load_file('path')")
    store = None
    values = []
    for chunk in data.chunks:
        for value in chunk:  # one value at a time: a large one is uploaded in pieces
            raw = value.as_py()
            if raw is None:
                values.append(None)
                continue
            store = store or current_store()
            values.append(store.put_bytes(raw).as_dict())
    return pa.chunked_array([pa.array(values, BLOB_ARROW)], BLOB_ARROW)


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def refs(column: pa.Array | pa.ChunkedArray) -> list[BlobRef | None]:
    return [None if v is None else BlobRef.from_dict(v) for v in column.to_pylist()]


# -- out to clients --------------------------------------------------------------------------
def has_blobs(schema: pa.Schema) -> bool:
    return any(is_blob_type(f.type) for f in schema)


def bytes_schema(schema: pa.Schema) -> pa.Schema:
    """`schema` with each blob column as bytea."""
    return pa.schema([pa.field(f.name, pa.large_binary(), f.nullable,
                               metadata={**(f.metadata or {}), SQL_TYPE_KEY.encode(): b"bytea"})
                      if is_blob_type(f.type) else f for f in schema])


def as_bytes(batch: pa.RecordBatch | pa.Table, store: BlobStore):
    """The batch (or table) with each blob column read into plain bytes."""
    schema = bytes_schema(batch.schema)
    arrays = []
    for f, column in zip(batch.schema, batch.columns):
        if is_blob_type(f.type):
            column = pa.array([None if r is None else store.read(r) for r in refs(column)],
                              pa.large_binary())
        arrays.append(column)
    if isinstance(batch, pa.Table):
        return pa.Table.from_arrays(arrays, schema=schema)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def batches_as_bytes(batches: Iterator[pa.RecordBatch], store: BlobStore) -> Iterator[pa.RecordBatch]:
    """Batches with blobs read as bytes, split so that one piece resolves at most about
    `WIRE_BYTES_PER_PIECE` bytes of blobs (at least one row)."""
    for batch in batches:
        sizes = [0] * batch.num_rows
        for f, column in zip(batch.schema, batch.columns):
            if is_blob_type(f.type):
                for i, size in enumerate(pc.struct_field(column, "size").fill_null(0).to_pylist()):
                    sizes[i] += size
        start = total = 0
        for i, size in enumerate(sizes):
            if i > start and total + size > WIRE_BYTES_PER_PIECE:
                yield as_bytes(batch.slice(start, i - start), store)
                start, total = i, 0
            total += size
        if start < batch.num_rows or batch.num_rows == 0:
            yield as_bytes(batch.slice(start), store)


def for_client(result, store: BlobStore):
    """A statement's `Result` with its blob columns as bytes (the wire server's bytea)."""
    if result.batches is not None and has_blobs(result.schema):
        result.batches = batches_as_bytes(result.batches, store)
        result.schema = bytes_schema(result.schema)
    elif result.table is not None and has_blobs(result.table.schema):
        result.table = as_bytes(result.table, store)
    return result

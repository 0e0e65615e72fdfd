"""SQL functions over BLOB values, as DataFusion scalar UDFs over whole Arrow batches.

`blob_size(b)`, `blob_mime(b)` (sniffed from the content when it was written),
`blob_sha256(b)` read the value's struct and never touch the store; `blob_uri(b)` names the
stored object (NULL for a value kept inline); `blob_read(b [, offset [, length]])` returns
bytes, reading only that range of a stored object; `load_file(path_or_url)` stores a local
file, an `s3://` object of the warehouse's store, or an http(s) URL, streamed, and returns the
blob. A NULL argument gives NULL.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request

import pyarrow as pa
import pyarrow.compute as pc
from datafusion import SessionContext, udf
from sqlglot import exp

from omnilake import errors as E
from omnilake.catalog.types import BLOB_ARROW
from omnilake.engine.blobs import refs
from omnilake.engine.walk import nodes
from omnilake.storage import objectstore
from omnilake.storage.blobs import BlobStore
from omnilake.storage.files import is_local, local_path

READ_FROM = "__ol_blob_read_from"  # blob_read(b) and blob_read(b, offset)


def _array(a):
    if isinstance(a, pa.ChunkedArray):
        return a.combine_chunks()
    return a


def _field(name: str):
    def run(b):
        return pc.struct_field(_array(b), name)
    return run


def register(ctx: SessionContext, store: BlobStore) -> None:
    def uri(b):
        return pa.array([None if r is None or r.inline else store.uri(r.sha256) for r in refs(b)],
                        pa.large_string())

    def read_range(b, offsets, lengths=None):
        offsets = _array(offsets).to_pylist()
        given = lengths is not None
        lengths = _array(lengths).to_pylist() if given else [None] * len(offsets)
        out = []
        for ref, offset, length in zip(refs(b), offsets, lengths):
            if ref is None or offset is None or (given and length is None):
                out.append(None)
                continue
            if offset < 0 or offset > ref.size:
                raise E.InvalidParameterValue(
                    f"blob_read offset {offset} is out of range for a blob of {ref.size} bytes")
            if length is not None and length < 0:
                raise E.SubstringError("negative length not allowed in blob_read")
            out.append(store.read(ref, offset, length))
        return pa.array(out, pa.large_binary())

    def load(paths):
        return pa.array([None if p is None else load_file(store, p).as_dict()
                         for p in _array(paths).to_pylist()], BLOB_ARROW)

    for name, fn, args, result, volatility in [
        ("blob_size", _field("size"), [BLOB_ARROW], pa.int64(), "immutable"),
        ("blob_mime", _field("mime"), [BLOB_ARROW], pa.large_string(), "immutable"),
        ("blob_sha256", _field("sha256"), [BLOB_ARROW], pa.large_string(), "immutable"),
        ("blob_uri", uri, [BLOB_ARROW], pa.large_string(), "stable"),
        ("blob_read", read_range, [BLOB_ARROW, pa.int64(), pa.int64()], pa.large_binary(), "stable"),
        (READ_FROM, read_range, [BLOB_ARROW, pa.int64()], pa.large_binary(), "stable"),
        # volatile: it writes to the store, so it must run when the statement runs
        ("load_file", load, [pa.large_string()], BLOB_ARROW, "volatile"),
    ]:
        ctx.register_udf(udf(fn, args, result, volatility, name=name))


def allowed_sources(setting: str | None) -> tuple[str, ...] | None:
    """`load_file_from` as a list of allowed folders and URL prefixes; None allows anything."""
    if setting is None or setting.strip() == "*":
        return None
    return tuple(os.path.realpath(local_path(entry)) if "://" not in entry or
                 entry.lower().startswith("file://") else entry
                 for entry in (e.strip() for e in setting.split(",")) if entry)


def _check_allowed(store: BlobStore, source: str) -> None:
    allowed = store.load_from
    if allowed is None:
        return
    if "://" in source and not source.lower().startswith("file://"):
        permitted = any(source.startswith(prefix) for prefix in allowed if "://" in prefix)
    else:
        path = os.path.realpath(local_path(source))  # symbolic links cannot lead out
        permitted = any(path == root or path.startswith(root.rstrip("/") + "/")
                        for root in allowed if "://" not in root)
    if not permitted:
        # The guidance is in the message: an error raised inside a UDF keeps only that.
        raise E.InsufficientPrivilege(
            f"permission denied to load_file({source!r}): only what the setting load_file_from "
            "allows may be read (folders or URL prefixes, or '*'; e.g. omnilake serve "
            "--load-file-from /data/incoming)")


def load_file(store: BlobStore, source: str):
    """Store the file, object or URL `source` (streamed) and return its BlobRef."""
    _check_allowed(store, source)
    lowered = source.lower()
    if lowered.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(source, timeout=30) as response:  # noqa: S310 - by design
                return store.put_stream(response)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise E.UndefinedFile(f"could not load {source}: not found (HTTP 404)") from exc
            raise E.OperationalError(f"could not load {source}: HTTP {exc.code}",
                                     sqlstate="58030") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise E.OperationalError(f"could not load {source}: {exc}", sqlstate="08001") from exc
    if objectstore.is_object_store(source):
        if is_local(store.root):
            raise E.InvalidParameterValue(
                f"load_file({source!r}): a local warehouse has no object store to read it from")
        bucket, key = objectstore.split(source)
        try:
            with store.fs.open_input_stream(f"{bucket}/{key}") as stream:
                return store.put_stream(stream)
        except FileNotFoundError as exc:
            raise E.UndefinedFile(f"could not load {source}: no such object") from exc
        except OSError as exc:
            if "NoSuchKey" in str(exc) or "does not exist" in str(exc):
                raise E.UndefinedFile(f"could not load {source}: no such object") from exc
            raise objectstore.translate(exc, f"could not load {source}") from exc
    if "://" in source and not lowered.startswith("file://"):
        raise E.InvalidParameterValue(
            f"load_file({source!r}): use a local path, file://, s3:// or http(s):// URL")
    return store.put_file(local_path(source))


def rewrite_read(tree: exp.Expression) -> exp.Expression:
    """`blob_read(b)` and `blob_read(b, offset)` -> the two-argument function."""
    for call in [n for n in nodes(tree) if isinstance(n, exp.Anonymous)]:
        if call.name.lower() != "blob_read":
            continue
        args = call.expressions
        if len(args) == 1:
            call.replace(exp.Anonymous(this=READ_FROM, expressions=[args[0].copy(),
                                                                   exp.Literal.number(0)]))
        elif len(args) == 2:
            call.replace(exp.Anonymous(this=READ_FROM, expressions=[a.copy() for a in args]))
        elif len(args) != 3:
            raise E.UndefinedFunction("blob_read takes a blob, an optional offset and an "
                                      "optional length: blob_read(b [, offset [, length]])")
    return tree

"""The blob store: content-addressed objects under a warehouse, local folder or S3.

A blob value is a `BlobRef`: its size, sha256 (hex), sniffed MIME type and, for values of at
most `INLINE_LIMIT` bytes, the bytes themselves. Larger values live once per content at
`<warehouse>/blobs/<sha256[:2]>/<sha256>`, however often they are inserted. Everything here
streams in `CHUNK` pieces, so a value is never held whole in memory:

- from a local file the hash is computed first (one read), then the object is uploaded only
  if it is missing, straight to its final name;
- from any other stream it is hashed while it is written to `blobs/tmp/<uuid>`, then moved
  (local rename, or S3 server-side copy) to its content address;
- reads are pyarrow random-access files: ranged GETs on S3, so `seek` + `read` fetch only the
  bytes asked for.

An object appears whole or not at all (local: rename; S3: an upload is visible once complete).
When a write finds its content already stored, it writes an empty `<sha256>.seen` marker
beside it: maintenance keeps an unreferenced object until both it and its marker are older
than the retention window, so a new reference not yet committed by another process is safe.
Nothing here knows SQL.
"""

from __future__ import annotations

import hashlib
import io
import os
import uuid
from dataclasses import dataclass
from typing import BinaryIO, Iterator

import pyarrow.fs as pafs

from omnilake import errors as E
from omnilake.storage import objectstore
from omnilake.storage.files import is_local, local_path

INLINE_LIMIT = 64 * 1024  # values up to this size are kept in the row itself
CHUNK = 8 * 1024 * 1024   # bytes read or written per step
FLUSH_EVERY = 4           # chunks written between waits for S3 uploads in flight
SNIFF_BYTES = 8192        # head of a value the MIME type is sniffed from
FOLDER = "blobs"
SEEN = ".seen"


@dataclass(frozen=True)
class BlobRef:
    size: int
    sha256: str
    mime: str
    data: bytes | None = None  # the bytes of an inline value; None for a stored object

    @property
    def inline(self) -> bool:
        return self.data is not None

    def as_dict(self) -> dict:
        return {"data": self.data, "size": self.size, "sha256": self.sha256, "mime": self.mime}

    @classmethod
    def from_dict(cls, value: dict) -> "BlobRef":
        return cls(value["size"], value["sha256"], value["mime"], value.get("data"))


def sniff_mime(head: bytes) -> str:
    """MIME type from a value's first bytes: magic numbers (the `filetype` package), then
    UTF-8 text, else application/octet-stream."""
    import filetype
    kind = filetype.guess(head) if head else None
    if kind is not None:
        return kind.mime
    if not head:
        return "application/octet-stream"
    try:
        head.decode("utf-8")
        return "text/plain"
    except UnicodeDecodeError as exc:
        if exc.start >= len(head) - 3:  # a character cut at the end of the sniffed head
            return "text/plain"
        return "application/octet-stream"


class BlobStore:
    """Blob objects of one warehouse, through a pyarrow filesystem."""

    def __init__(self, warehouse: str, s3: "objectstore.S3Options | None" = None):
        self.root = warehouse.rstrip("/") + "/" + FOLDER
        self.load_from: tuple[str, ...] | None = None  # what load_file() may read; None: all
        if is_local(warehouse):
            self.fs: pafs.FileSystem = pafs.LocalFileSystem()
            self._base = local_path(self.root)
            self._scheme = "file://"
        else:
            self.fs = (s3 or objectstore.S3Options.resolve()).filesystem()
            bucket, key = objectstore.split(self.root)
            self._base = f"{bucket}/{key}"
            self._scheme = self.root.split("://", 1)[0] + "://"

    # -- names ---------------------------------------------------------------------------
    def _path(self, sha256: str) -> str:
        return f"{self._base}/{sha256[:2]}/{sha256}"

    def uri(self, sha256: str) -> str:
        """Where the object of `sha256` lives (a local path or an s3:// URI)."""
        return self._scheme + self._path(sha256)

    def exists(self, sha256: str) -> bool:
        return self._call(lambda: self.fs.get_file_info(self._path(sha256)).type
                          == pafs.FileType.File, "cannot look up blob")

    # -- writing -------------------------------------------------------------------------
    def put_bytes(self, data: bytes) -> BlobRef:
        data = bytes(data)
        if len(data) <= INLINE_LIMIT:
            return BlobRef(len(data), hashlib.sha256(data).hexdigest(), sniff_mime(data[:SNIFF_BYTES]),
                           data)
        return self.put_stream(io.BytesIO(data))

    def put_file(self, path: str) -> BlobRef:
        """A local file: hashed first, uploaded only when its content is not stored yet."""
        try:
            size = os.path.getsize(path)
            with open(path, "rb") as f:
                head = f.read(SNIFF_BYTES)
                if size <= INLINE_LIMIT:
                    data = head + f.read()
                    return BlobRef(len(data), hashlib.sha256(data).hexdigest(),
                                   sniff_mime(head), data)
                digest = hashlib.sha256(head)
                for chunk in iter(lambda: f.read(CHUNK), b""):
                    digest.update(chunk)
        except FileNotFoundError as exc:
            raise E.UndefinedFile(f'could not open file "{path}": no such file') from exc
        except IsADirectoryError as exc:
            raise E.UndefinedFile(f'could not open file "{path}": it is a directory') from exc
        except PermissionError as exc:
            raise E.InsufficientPrivilege(f'could not open file "{path}": permission denied') from exc
        ref = BlobRef(size, digest.hexdigest(), sniff_mime(head))
        if self.exists(ref.sha256):
            self._mark_seen(ref.sha256)
            return ref
        self._make_parent(ref.sha256)
        local = isinstance(self.fs, pafs.LocalFileSystem)
        # An S3 upload becomes visible only once complete: straight to the content address.
        # A local file is written under a temporary name and renamed.
        target = self._tmp_path() if local else self._path(ref.sha256)
        with open(path, "rb") as f:
            self._call(lambda: self._upload(f, target), "cannot write blob")
        if local:
            self._settle(target, ref.sha256)
        return ref

    def put_stream(self, stream: BinaryIO) -> BlobRef:
        """Any readable stream: hashed while it is written to a temporary object, then moved to
        its content address (or dropped when that content is stored already)."""
        first = _read_up_to(stream, INLINE_LIMIT + 1)  # small values stay inline
        head = first[:SNIFF_BYTES]
        if len(first) <= INLINE_LIMIT:
            return BlobRef(len(first), hashlib.sha256(first).hexdigest(), sniff_mime(head), first)
        digest = hashlib.sha256()
        size = 0
        tmp = self._tmp_path()

        def chunks() -> Iterator[bytes]:
            nonlocal size
            for chunk in _iter_stream(stream, first):
                digest.update(chunk)
                size += len(chunk)
                yield chunk
        self._make_parent(None)
        self._call(lambda: self._write_chunks(chunks(), tmp), "cannot write blob")
        ref = BlobRef(size, digest.hexdigest(), sniff_mime(head))
        if self.exists(ref.sha256):
            self._delete(tmp)
            self._mark_seen(ref.sha256)
            return ref
        self._make_parent(ref.sha256)
        self._settle(tmp, ref.sha256)
        return ref

    def _upload(self, f: BinaryIO, path: str) -> None:
        self._write_chunks(iter(lambda: f.read(CHUNK), b""), path)

    def _write_chunks(self, chunks: Iterator[bytes], path: str) -> None:
        with self.fs.open_output_stream(path) as out:
            for i, chunk in enumerate(chunks, start=1):
                out.write(chunk)
                if i % FLUSH_EVERY == 0:
                    # S3 parts upload in the background, in parallel; pyarrow queues them
                    # without bound, so a stream faster than the network would sit in memory
                    # whole. flush() waits for the queued parts.
                    out.flush()

    def _settle(self, tmp: str, sha256: str) -> None:
        """Temporary object -> content address (a rename locally, a server-side copy on S3)."""
        final = self._path(sha256)
        if isinstance(self.fs, pafs.LocalFileSystem):
            os.replace(tmp, final)
            return
        self._call(lambda: self.fs.copy_file(tmp, final), "cannot store blob")
        self._delete(tmp)

    def _tmp_path(self) -> str:
        return f"{self._base}/tmp/{uuid.uuid4().hex}"

    def _make_parent(self, sha256: str | None) -> None:
        if isinstance(self.fs, pafs.LocalFileSystem):  # S3 has no folders
            os.makedirs(f"{self._base}/tmp", exist_ok=True)
            if sha256 is not None:
                os.makedirs(f"{self._base}/{sha256[:2]}", exist_ok=True)

    def _mark_seen(self, sha256: str) -> None:
        self._make_parent(sha256)
        self._call(lambda: self._write_chunks(iter(()), self._path(sha256) + SEEN),
                   "cannot write blob marker")

    def _delete(self, path: str) -> None:
        try:
            self.fs.delete_file(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise objectstore.translate(exc, "cannot delete blob") from exc

    # -- reading -------------------------------------------------------------------------
    def open(self, ref: BlobRef) -> BinaryIO:
        """A seekable, lazy file object over the value (ranged reads on S3)."""
        if ref.inline:
            return io.BytesIO(ref.data)
        return self._call(lambda: self.fs.open_input_file(self._path(ref.sha256)),
                          f"cannot open blob {ref.sha256}", missing=ref.sha256)

    def read(self, ref: BlobRef, offset: int = 0, length: int | None = None) -> bytes:
        """`length` bytes (all to the end when None) from `offset`."""
        if ref.inline:
            end = None if length is None else offset + length
            return ref.data[offset:end]
        if offset >= ref.size:
            return b""
        if offset == 0 and (length is None or length >= ref.size):  # one streamed GET
            with self._call(lambda: self.fs.open_input_stream(self._path(ref.sha256)),
                            f"cannot open blob {ref.sha256}", missing=ref.sha256) as f:
                return self._call(f.read, f"cannot read blob {ref.sha256}")
        length = ref.size - offset if length is None else min(length, ref.size - offset)
        with self.open(ref) as f:
            return self._call(lambda: f.read_at(length, offset), f"cannot read blob {ref.sha256}")

    # -- maintenance ---------------------------------------------------------------------
    def objects(self) -> dict[str, tuple[int, float, list[str]]]:
        """sha256 -> (bytes, newest modification time of it or its marker, paths), plus
        leftover temporary objects under the key `tmp/<name>`."""
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(self._base, allow_not_found=True,
                                                            recursive=True))
        except OSError as exc:
            raise objectstore.translate(exc, "cannot list blobs") from exc
        found: dict[str, tuple[int, float, list[str]]] = {}
        for info in infos:
            if info.type != pafs.FileType.File:
                continue
            name = info.base_name
            folder = info.path.rsplit("/", 2)[-2]
            key = f"tmp/{name}" if folder == "tmp" else name.removesuffix(SEEN)
            size, mtime, paths = found.get(key, (0, 0.0, []))
            stamp = info.mtime.timestamp() if info.mtime else 0.0
            found[key] = (size + (info.size or 0), max(mtime, stamp), paths + [info.path])
        return found

    def remove(self, paths: list[str]) -> None:
        for path in paths:
            self._delete(path)

    def _call(self, fn, what: str, missing: str | None = None):
        try:
            return fn()
        except FileNotFoundError as exc:
            if missing is not None:
                raise E.UndefinedFile(f"blob object {missing} is missing from the store",
                                      hint="it was removed by maintenance or never written") from exc
            raise objectstore.translate(exc, what) from exc
        except OSError as exc:
            if missing is not None and ("NoSuchKey" in str(exc) or "does not exist" in str(exc)):
                raise E.UndefinedFile(f"blob object {missing} is missing from the store") from exc
            raise objectstore.translate(exc, what) from exc


def _read_up_to(stream: BinaryIO, n: int) -> bytes:
    """`n` bytes, or fewer only at the end (a network stream may return short reads)."""
    parts, got = [], 0
    while got < n:
        part = stream.read(n - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def _iter_stream(stream: BinaryIO, first: bytes) -> Iterator[bytes]:
    if first:
        yield first
    while True:
        chunk = stream.read(CHUNK)
        if not chunk:
            return
        yield chunk

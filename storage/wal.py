"""Write-ahead log: every acknowledged write is a durable record before it is applied.

Layout: `<warehouse>/_wal/<wal id>/` holds numbered segment files and a `lock` file that the
owning process keeps locked (fcntl) while it lives. A record is

    magic "OLW1" | payload length u32 | CRC32 u32 | LSN u64 | payload

with the CRC over the LSN and the payload. The payload holds one or more parts (a transaction
writing several tables is one record, so it is recovered whole or not at all): a JSON header
listing each part's metadata (which table, which table uuid), then each part's rows as a
length-prefixed Arrow IPC stream. LSNs grow by one per record.

Invariants:
- A record is acknowledged only after it is written whole (and, with durability `fsync`, after
  an fsync that covers it). A failed write truncates the segment back to where the record
  began, so no torn record ever precedes a good one.
- On replay, a record whose CRC or length does not check out ends the segment: it is a torn
  tail from a crash, everything before it is recovered, and the tail is cut off with a warning.
- Concurrent writers share fsyncs (group commit): a writer whose record is already covered by
  another writer's fsync returns without its own.
"""

from __future__ import annotations

import errno
import fcntl
import io
import json
import logging
import os
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from omnilake.errors import InvalidParameterValue, OperationalError

log = logging.getLogger(__name__)

MAGIC = b"OLW1"
HEADER = struct.Struct("<4sIIQ")  # magic, payload length, crc32, lsn
SEGMENT_BYTES = 64 * 1024 * 1024
DURABILITY = ("fsync", "batch", "off")
BATCH_INTERVAL_S = 0.01


@dataclass
class Record:
    lsn: int
    parts: list[tuple[dict, pa.Table]]  # (metadata, rows) per table written


def encode_payload(parts: list[tuple[dict, pa.Table]]) -> bytes:
    head = json.dumps([meta for meta, _ in parts], separators=(",", ":")).encode()
    chunks = [struct.pack("<I", len(head)), head]
    for _, rows in parts:
        sink = io.BytesIO()
        with pa.ipc.new_stream(sink, rows.schema) as writer:
            writer.write_table(rows)
        chunks += [struct.pack("<Q", sink.tell()), sink.getvalue()]
    return b"".join(chunks)


def decode_payload(payload: bytes) -> list[tuple[dict, pa.Table]]:
    (head_len,) = struct.unpack_from("<I", payload)
    metas = json.loads(payload[4:4 + head_len])
    offset, parts = 4 + head_len, []
    for meta in metas:
        (length,) = struct.unpack_from("<Q", payload, offset)
        offset += 8
        parts.append((meta, pa.ipc.open_stream(payload[offset:offset + length]).read_all()))
        offset += length
    return parts


def _crc(lsn: int, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(struct.pack("<Q", lsn)))


def _operational(exc: OSError, what: str) -> OperationalError:
    reason = {errno.ENOSPC: "the disk is full", errno.EACCES: "permission denied",
              errno.EROFS: "the file system is read-only"}.get(exc.errno, exc.strerror or str(exc))
    return OperationalError(f"write-ahead log: cannot {what}: {reason}",
                            hint="nothing was written; free space or fix permissions and retry")


class WriteAheadLog:
    """The log this process appends to. Open it with `WriteAheadLog.create(root, durability)`."""

    def __init__(self, folder: Path, durability: str, lock_fd: int):
        if durability not in DURABILITY:
            raise InvalidParameterValue(f"durability must be one of {', '.join(DURABILITY)}")
        self.folder = folder
        self.id = folder.name
        self.durability = durability
        self._lock_fd = lock_fd
        self._write_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._next_lsn = 1
        self._written_lsn = 0
        self._synced_lsn = 0
        self._segment_no = 0
        self._fd = -1
        self._segment_size = 0
        self._segments: dict[int, dict[str, int]] = {}  # segment -> table key -> max lsn
        self._closed = False
        self._open_segment()
        self._batch_thread = None
        if durability == "batch":
            self._batch_thread = threading.Thread(target=self._batch_sync, daemon=True,
                                                  name=f"omnilake-wal-{self.id}")
            self._batch_thread.start()

    @classmethod
    def create(cls, root: Path, durability: str = "fsync") -> "WriteAheadLog":
        name = uuid.uuid4().hex[:16]
        folder, staging = root / name, root / f".{name}"
        try:
            # Locked under a hidden name first, so a process opening the warehouse never takes
            # the new log for one whose owner died.
            staging.mkdir(parents=True)
            lock_fd = os.open(staging / "lock", os.O_CREAT | os.O_RDWR, 0o644)
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            staging.rename(folder)
        except OSError as exc:
            raise _operational(exc, f"create {folder}") from exc
        return cls(folder, durability, lock_fd)

    # -- writing -------------------------------------------------------------------------
    def append(self, parts: list[tuple[dict, pa.Table, str | None]], wait: bool = True) -> int:
        """Write one record of (metadata, rows, table key) parts; its LSN. With `wait`, return
        only once it is as durable as the durability setting asks; without, the caller calls
        `wait_durable(lsn)`."""
        payload = encode_payload([(meta, rows) for meta, rows, _ in parts])
        with self._write_lock:
            if self._closed:
                raise OperationalError("write-ahead log is closed")
            lsn = self._next_lsn
            data = HEADER.pack(MAGIC, len(payload), _crc(lsn, payload), lsn) + payload
            if self._segment_size and self._segment_size + len(data) > SEGMENT_BYTES:
                self._open_segment()
            start = self._segment_size
            try:
                written = 0
                while written < len(data):
                    written += os.write(self._fd, data[written:])
            except OSError as exc:
                try:  # never leave a torn record in front of later ones
                    os.ftruncate(self._fd, start)
                    os.lseek(self._fd, start, os.SEEK_SET)
                except OSError:
                    pass
                raise _operational(exc, "append a record") from exc
            self._segment_size += len(data)
            self._next_lsn += 1
            self._written_lsn = lsn
            tables = self._segments[self._segment_no]
            for _, _, table_key in parts:
                if table_key is not None:  # None: a record about records (an abort)
                    tables[table_key] = max(tables.get(table_key, 0), lsn)
        if wait:
            self.wait_durable(lsn)
        return lsn

    def wait_durable(self, lsn: int) -> None:
        if self.durability == "fsync":
            self.sync(lsn)

    def sync(self, lsn: int) -> None:
        """Return once `lsn` is on disk. One writer's fsync covers every record before it."""
        if self._synced_lsn >= lsn:
            return
        with self._sync_lock:
            if self._synced_lsn >= lsn:
                return  # another writer's fsync covered this record: group commit
            with self._write_lock:
                target, fd = self._written_lsn, self._fd
            try:
                os.fsync(fd)
            except OSError as exc:
                # A segment switch closed `fd` after fsyncing it, which covers `lsn`.
                if exc.errno != errno.EBADF or self._synced_lsn < lsn:
                    raise _operational(exc, "fsync") from exc
            self._synced_lsn = max(self._synced_lsn, target)

    def _batch_sync(self) -> None:
        while not self._closed:
            time.sleep(BATCH_INTERVAL_S)
            try:
                if self._written_lsn > self._synced_lsn:
                    self.sync(self._written_lsn)
            except OperationalError as exc:
                log.error("%s", exc)

    def _open_segment(self) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)
            self._synced_lsn = max(self._synced_lsn, self._written_lsn)
            os.close(self._fd)
        self._segment_no += 1
        path = self.folder / f"{self._segment_no:08d}.wal"
        try:
            self._fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o644)
        except OSError as exc:
            raise _operational(exc, f"create segment {path}") from exc
        self._segment_size = 0
        self._segments[self._segment_no] = {}

    # -- trimming ------------------------------------------------------------------------
    def release(self, flushed: dict[str, int]) -> None:
        """Delete closed segments whose records are all flushed (`flushed`: table -> LSN)."""
        with self._write_lock:
            for number, tables in list(self._segments.items()):
                if number == self._segment_no:
                    continue
                if all(flushed.get(key, 0) >= lsn for key, lsn in tables.items()):
                    (self.folder / f"{number:08d}.wal").unlink(missing_ok=True)
                    del self._segments[number]

    def close(self, remove) -> None:
        """Stop writing. `remove()` is asked once no record can be added any more: when it
        says everything is flushed, the log's folder goes too."""
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            if self._fd >= 0:
                if self.durability != "off":
                    os.fsync(self._fd)
                os.close(self._fd)
                self._fd = -1
            remove = remove()
        if remove:
            for path in self.folder.glob("*.wal"):
                path.unlink(missing_ok=True)
            (self.folder / "lock").unlink(missing_ok=True)
            try:
                self.folder.rmdir()
            except OSError:
                pass
        os.close(self._lock_fd)


def orphaned_logs(root: Path) -> Iterator[tuple[Path, int]]:
    """Logs whose owner is gone (their lock can be taken): (folder, lock fd held by us)."""
    if not root.is_dir():
        return
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            fd = os.open(folder / "lock", os.O_CREAT | os.O_RDWR, 0o644)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)  # a live process owns it
            continue
        yield folder, fd


def read_log(folder: Path) -> Iterator[Record]:
    """Every intact record of a log, in LSN order. A torn or corrupt record ends its segment:
    it is logged, and the segment is cut there."""
    for path in sorted(folder.glob("*.wal")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            problem = None
            if len(data) - offset < HEADER.size:
                problem = "truncated record header"
            else:
                magic, length, crc, lsn = HEADER.unpack_from(data, offset)
                end = offset + HEADER.size + length
                if magic != MAGIC:
                    problem = "bad record marker"
                elif end > len(data):
                    problem = "truncated record"
                else:
                    payload = data[offset + HEADER.size:end]
                    if _crc(lsn, payload) != crc:
                        problem = "checksum mismatch"
            if problem:
                log.warning("write-ahead log %s: %s at byte %d; %d byte(s) after it skipped",
                            path, problem, offset, len(data) - offset)
                with open(path, "r+b") as handle:
                    handle.truncate(offset)
                break
            yield Record(lsn, decode_payload(payload))
            offset = end


def remove_log(folder: Path, lock_fd: int) -> None:
    for path in folder.glob("*.wal"):
        path.unlink(missing_ok=True)
    (folder / "lock").unlink(missing_ok=True)
    os.close(lock_fd)
    try:
        folder.rmdir()
    except OSError:
        pass

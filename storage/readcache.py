"""A bounded local disk cache of warehouse objects read from object storage.

Every file an Iceberg table refers to is immutable once written (data files, manifests,
manifest lists and metadata JSON all get fresh names), so a cached copy never goes stale and
the object's URI is its key. Layout under the cache folder:

    objects/<sha256 of URI>.ext   whole copies; the modification time is the last use
    tmp/                          downloads in progress, renamed into objects/ when complete
    stats.db                      hit/miss counters (SQLite), shared by every process
    evict.lock                    held (flock) by the one process evicting at a time

Safe when several processes share the folder: a copy appears by an atomic rename, so a
reader sees a whole file or none; eviction removes the least recently used copies until the
total is under `max_bytes`, but never one used in the last `grace_s` seconds, so a scan that
was handed a path can still open it (the limit may be exceeded for that long). A copy that
vanishes between check and use is fetched again. Nothing here knows SQL.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import sqlite3
import time
import uuid
from pathlib import Path

COUNTERS = ("hits", "misses", "bytes_from_cache", "bytes_downloaded", "evictions")
COUNT_TRIES = 5
CHUNK = 8 * 1024 * 1024


def default_folder() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "omnilake" / "objects"


class ReadCache:
    def __init__(self, folder: str | Path, max_bytes: int, grace_s: float = 60.0):
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        self.grace_s = grace_s
        (self.folder / "objects").mkdir(parents=True, exist_ok=True)
        (self.folder / "tmp").mkdir(parents=True, exist_ok=True)

    def path_for(self, uri: str) -> Path:
        """The copy's path: the URI's hash, with its extension (readers check `.parquet`)."""
        suffix = os.path.splitext(uri.rsplit("/", 1)[-1])[1][:16]
        return self.folder / "objects" / (hashlib.sha256(uri.encode()).hexdigest() + suffix)

    def fetch(self, uri: str, open_stream) -> str:
        """A local path holding the object at `uri`; `open_stream()` opens the object for a
        download on a miss."""
        target = self.path_for(uri)
        try:
            os.utime(target)  # last use, for LRU
            self._count(hits=1, bytes_from_cache=target.stat().st_size)
            return str(target)
        except FileNotFoundError:
            pass
        partial = self.folder / "tmp" / f"{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        size = 0
        try:
            with open_stream() as source, open(partial, "wb") as sink:
                while chunk := source.read(CHUNK):
                    sink.write(chunk)
                    size += len(chunk)
            os.replace(partial, target)  # whole or absent, for every process
        finally:
            partial.unlink(missing_ok=True)
        self._count(misses=1, bytes_downloaded=size)
        self.evict()
        return str(target)

    def evict(self) -> int:
        """Remove least recently used copies until under `max_bytes`; the number removed."""
        with open(self.folder / "evict.lock", "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0  # another process is evicting
            entries = []
            for path in (self.folder / "objects").iterdir():
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                entries.append((st.st_mtime, st.st_size, path))
            total = sum(size for _, size, _ in entries)
            removed = 0
            now = time.time()
            for mtime, size, path in sorted(entries):
                if total <= self.max_bytes:
                    break
                if now - mtime < self.grace_s:
                    break  # everything after this was used more recently still
                path.unlink(missing_ok=True)
                total -= size
                removed += 1
        if removed:
            self._count(evictions=removed)
        return removed

    # -- counters ------------------------------------------------------------------------
    def _db(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.folder / "stats.db", timeout=10, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=OFF")  # counters: losing the last few to a crash is fine
        db.execute("CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER)")
        return db

    def _count(self, **deltas: int) -> None:
        # SQLite can answer "database is locked" without waiting out the timeout (a WAL
        # checkpoint as another process's last connection closes): a few quick retries keep
        # the counters exact; after that, statistics must never fail a read.
        for attempt in range(COUNT_TRIES):
            try:
                db = self._db()
                try:
                    db.executemany(
                        "INSERT INTO counters VALUES (?, ?) "
                        "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                        list(deltas.items()))
                    return
                finally:
                    db.close()
            except sqlite3.OperationalError:
                time.sleep(0.005 * (attempt + 1))
            except sqlite3.Error:
                return

    def stats(self) -> dict[str, int | str]:
        """Counters of every process that used this folder, plus its current size."""
        values: dict[str, int | str] = dict.fromkeys(COUNTERS, 0)
        try:
            db = self._db()
            try:
                values.update(dict(db.execute("SELECT name, value FROM counters").fetchall()))
            finally:
                db.close()
        except sqlite3.Error:
            pass
        sizes = []
        for path in (self.folder / "objects").iterdir():
            try:
                sizes.append(path.stat().st_size)
            except FileNotFoundError:
                continue
        values.update(folder=str(self.folder), max_bytes=self.max_bytes, entries=len(sizes),
                      bytes=sum(sizes))
        return values

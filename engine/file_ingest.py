"""Folder ingest: files into a table, one row per file (`omnilake ingest`, `conn.ingest_files`).

Each row holds the file's path, size, modification time, MIME type, sha256 and content (a
BLOB, stored once per content), the width and height of images (Pillow reads only the header),
the text of .txt/.md/.pdf files (pypdf for PDFs) and, on request, an embedding of that text.
The table is created on first use. Running it again skips files whose (size, mtime) did not
change; a changed file's old row is deleted and the file ingested again. Rows are written in
batches (one WAL record each), so an interrupted run keeps what it finished and the next run
goes on from there.
"""

from __future__ import annotations

import datetime as dt
import logging
import mimetypes
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa

from omnilake import errors as E
from omnilake.catalog.types import BLOB_ARROW
from omnilake.engine import blobs

if TYPE_CHECKING:
    from omnilake.engine.engine import Session

log = logging.getLogger(__name__)

TEXT_SUFFIXES = (".txt", ".md", ".markdown")
TEXT_LIMIT = 10 * 1024 * 1024  # characters of extracted text kept per file
BATCH_FILES = 64
BATCH_BYTES = 256 * 1024 * 1024  # content read per batch (large files are streamed anyway)
EMBEDDING_COLUMN = "embedding"

COLUMNS = [("path", "TEXT NOT NULL"), ("size", "BIGINT"), ("mtime", "TIMESTAMPTZ"),
           ("mime", "TEXT"), ("sha256", "TEXT"), ("content", "BLOB"), ("width", "INTEGER"),
           ("height", "INTEGER"), ("text", "TEXT")]


@dataclass
class IngestResult:
    added: int = 0
    replaced: int = 0
    skipped: int = 0
    bytes: int = 0


def list_files(paths: Iterable[str], recursive: bool) -> list[str]:
    """Absolute paths of the files named or inside the folders named, sorted."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    found: set[str] = set()
    for given in paths:
        path = os.path.abspath(os.fspath(given))
        if os.path.isfile(path):
            found.add(path)
        elif os.path.isdir(path):
            if recursive:
                for folder, _, names in os.walk(path):
                    found.update(os.path.join(folder, n) for n in names
                                 if os.path.isfile(os.path.join(folder, n)))
            else:
                found.update(os.path.join(path, n) for n in os.listdir(path)
                             if os.path.isfile(os.path.join(path, n)))
        else:
            raise E.UndefinedFile(f'could not ingest "{given}": no such file or directory')
    return sorted(found)


def ingest(session: "Session", paths, table: str, recursive: bool = False,
           embed: str | None = None, progress: bool = True) -> IngestResult:
    files = list_files(paths, recursive)
    namespace, name = _split(table, session.schema)
    quoted = f'"{namespace}"."{name}"'
    model = session.engine.embeddings.get(embed) if embed else None
    _create(session, quoted, model)
    known = _known(session, quoted)
    result = IngestResult()
    todo, stale = [], []
    for path in files:
        stat = os.stat(path)
        seen = known.get(path)
        if seen is not None and seen == (stat.st_size, _mtime(stat)):
            result.skipped += 1
            continue
        todo.append(path)
        if seen is not None:
            stale.append(path)
    if stale:  # changed files: their old rows go first (copy-on-write DELETE)
        for start in range(0, len(stale), 500):
            part = stale[start:start + 500]
            session.execute(f"DELETE FROM {quoted} WHERE path IN ({', '.join(['%s'] * len(part))})",
                            part)
        result.replaced = len(stale)
    bar = _bar(len(todo), progress)
    batch: list[dict] = []
    batch_bytes = 0
    try:
        for path in todo:
            row = describe_file(session, path)
            batch.append(row)
            batch_bytes += row["size"]
            result.bytes += row["size"]
            if len(batch) >= BATCH_FILES or batch_bytes >= BATCH_BYTES:
                _write(session, namespace, name, batch, model)
                batch, batch_bytes = [], 0
            bar.update(1)
        if batch:
            _write(session, namespace, name, batch, model)
    finally:
        bar.close()
    result.added = len(todo) - result.replaced
    log.info("ingest into %s: %d new, %d replaced, %d unchanged", quoted, result.added,
             result.replaced, result.skipped)
    return result


def describe_file(session: "Session", path: str) -> dict:
    """One file's row: metadata, content stored in the blob store, width/height, text."""
    stat = os.stat(path)
    ref = session.engine.blobs.put_file(path)
    mime = ref.mime
    if mime in ("text/plain", "application/octet-stream"):  # content says little: ask the name
        mime = mimetypes.guess_type(path)[0] or mime
    width = height = None
    if mime.startswith("image/"):
        width, height = _image_size(path)
    return {"path": path, "size": ref.size, "mtime": _mtime(stat), "mime": mime,
            "sha256": ref.sha256, "content": ref.as_dict(), "width": width, "height": height,
            "text": _text(path, mime)}


def _image_size(path: str) -> tuple[int | None, int | None]:
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as image:  # reads the header only
            return image.size
    except (UnidentifiedImageError, OSError) as exc:
        log.warning("cannot read image size of %s: %s", path, exc)
        return None, None


def _text(path: str, mime: str) -> str | None:
    lowered = path.lower()
    try:
        if lowered.endswith(".pdf") or mime == "application/pdf":
            from pypdf import PdfReader
            reader = PdfReader(path)
            return "\n".join(page.extract_text() or "" for page in reader.pages)[:TEXT_LIMIT]
        if lowered.endswith(TEXT_SUFFIXES):
            with open(path, encoding="utf-8", errors="replace") as f:
                return f.read(TEXT_LIMIT)
    except Exception as exc:  # noqa: BLE001 - a broken document keeps its row, without text
        log.warning("cannot extract text of %s: %s", path, exc)
    return None


def _write(session: "Session", namespace: str, name: str, batch: list[dict], model) -> None:
    from omnilake.engine.dml import insert_arrow
    columns = {
        "path": pa.array([r["path"] for r in batch], pa.large_string()),
        "size": pa.array([r["size"] for r in batch], pa.int64()),
        "mtime": pa.array([r["mtime"] for r in batch], pa.timestamp("us", tz="UTC")),
        "mime": pa.array([r["mime"] for r in batch], pa.large_string()),
        "sha256": pa.array([r["sha256"] for r in batch], pa.large_string()),
        "content": pa.array([r["content"] for r in batch], BLOB_ARROW),
        "width": pa.array([r["width"] for r in batch], pa.int32()),
        "height": pa.array([r["height"] for r in batch], pa.int32()),
        "text": pa.array([r["text"] for r in batch], pa.large_string()),
    }
    if model is not None:
        columns[EMBEDDING_COLUMN] = _embeddings([r["text"] for r in batch], model)
    with blobs.using(session.engine.blobs):
        insert_arrow(session, f'{namespace}.{name}', pa.table(columns))


def _embeddings(texts: list[str | None], model) -> pa.Array:
    present = [i for i, t in enumerate(texts) if t]
    vectors: list = [None] * len(texts)
    if present:
        encoded = model.encode([texts[i] for i in present])
        for i, vector in zip(present, encoded):
            vectors[i] = [float(x) for x in vector]
    return pa.array(vectors, pa.list_(pa.float32(), model.dimension))


def _create(session: "Session", quoted: str, model) -> None:
    columns = ", ".join(f"{n} {t}" for n, t in COLUMNS)
    if model is not None:
        columns += f", {EMBEDDING_COLUMN} VECTOR({model.dimension})"
    session.execute(f"CREATE TABLE IF NOT EXISTS {quoted} ({columns})")
    if model is not None:  # a table made without --embed gets the column now
        have = set(session.execute(f"SELECT * FROM {quoted} LIMIT 0")[-1].table.column_names)
        if EMBEDDING_COLUMN not in have:
            session.execute(f"ALTER TABLE {quoted} ADD COLUMN {EMBEDDING_COLUMN} "
                            f"VECTOR({model.dimension})")


def _known(session: "Session", quoted: str) -> dict[str, tuple[int, dt.datetime]]:
    table = session.execute(f"SELECT path, size, mtime FROM {quoted}")[-1].table
    return {p: (s, m) for p, s, m in zip(*(c.to_pylist() for c in table.columns))}


def _mtime(stat: os.stat_result) -> dt.datetime:
    micros = stat.st_mtime_ns // 1000
    return dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=micros)


def _split(table: str, schema: str) -> tuple[str, str]:
    if not table or not all(part.replace("_", "a").isalnum() for part in table.split(".")) \
            or table.count(".") > 1:
        raise E.InvalidParameterValue(f"ingest needs a table name like docs or public.docs, "
                                      f"not {table!r}")
    namespace, _, name = table.rpartition(".")
    return (namespace or schema).lower(), name.lower()


def _bar(total: int, enabled: bool):
    """A tqdm bar on a terminal (none when output is not one, or when turned off)."""
    from tqdm import tqdm
    return tqdm(total=total, unit="file", desc="ingest", disable=None if enabled else True)

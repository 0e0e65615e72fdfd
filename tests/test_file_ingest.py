"""Folder ingest (`conn.ingest_files`, `omnilake ingest`) on a local folder and on S3: one row
per file with metadata, content BLOB, image size and extracted text; reruns skip unchanged
files and re-ingest changed ones; an embedding column through a registered model; an ingest
through a faulty network to S3 loses nothing."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest
from fault_proxy import FaultProxy

import omnilake
from omnilake import errors as E


def tiny_pdf(text: str) -> bytes:
    """A one-page PDF showing `text` in Helvetica, with a correct xref table."""
    stream = f"BT /F1 12 Tf 20 100 Td ({text}) Tj ET".encode()
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>",
               b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 300 200] /Contents 4 0 R "
               b"/Resources << /Font << /F1 5 0 R >> >> >>",
               b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


@pytest.fixture
def folder(tmp_path):
    from PIL import Image
    root = tmp_path / "files"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("plain words about lakes")
    (root / "b.md").write_text("# Heading\n\nmarkdown body")
    (root / "c.pdf").write_bytes(tiny_pdf("Hello from a PDF"))
    Image.new("RGB", (31, 17), "red").save(root / "d.png")
    Image.new("RGB", (8, 5), "blue").save(root / "sub" / "e.jpg")
    (root / "sub" / "f.bin").write_bytes(hashlib.shake_256(b"f").digest(200_000))
    (root / "dup.bin").write_bytes(hashlib.shake_256(b"f").digest(200_000))  # same content
    return root


def _rows(conn, table="docs"):
    cur = conn.execute(f"SELECT path, size, mime, sha256, width, height, text, "
                       f"blob_size(content), content FROM {table} ORDER BY path")
    return {os.path.basename(r[0]): r for r in cur.fetchall()}


def test_ingest_rows_rerun_and_changes(any_warehouse, folder):
    with omnilake.connect(**any_warehouse) as conn:
        done = conn.ingest_files(str(folder), "docs", progress=False)
        assert (done.added, done.replaced, done.skipped) == (5, 0, 0)  # top level only
        rows = _rows(conn)
        assert sorted(rows) == ["a.txt", "b.md", "c.pdf", "d.png", "dup.bin"]
        assert rows["a.txt"][1:4] == (23, "text/plain",
                                      hashlib.sha256(b"plain words about lakes").hexdigest())
        assert rows["a.txt"][6] == "plain words about lakes"
        assert rows["a.txt"][8] == b"plain words about lakes"
        assert rows["b.md"][2] == "text/markdown" and "markdown body" in rows["b.md"][6]
        assert rows["c.pdf"][2] == "application/pdf" and "Hello from a PDF" in rows["c.pdf"][6]
        assert rows["d.png"][2:3] + rows["d.png"][4:7] == ("image/png", 31, 17, None)
        assert rows["dup.bin"][7] == 200_000 and rows["dup.bin"][6] is None

        done = conn.ingest_files([str(folder)], "docs", recursive=True, progress=False)
        assert (done.added, done.replaced, done.skipped) == (2, 0, 5)
        rows = _rows(conn)
        assert rows["e.jpg"][2] == "image/jpeg" and rows["e.jpg"][4:6] == (8, 5)
        assert rows["f.bin"][3] == rows["dup.bin"][3]
        stored = [k for k in conn.session.engine.blobs.objects() if not k.startswith("tmp/")]
        assert stored == [rows["f.bin"][3]]  # f.bin and dup.bin: one object

        (folder / "a.txt").write_text("changed words")
        os.utime(folder / "a.txt", (1_700_000_000, 1_700_000_000))
        done = conn.ingest_files(str(folder), "docs", recursive=True, progress=False)
        assert (done.added, done.replaced, done.skipped) == (0, 1, 6)
        rows = _rows(conn)
        assert len(rows) == 7 and rows["a.txt"][6] == "changed words"
        assert conn.execute("SELECT count(*) FROM docs WHERE path LIKE '%a.txt'").fetchall() == [(1,)]


@pytest.mark.parametrize("paths, table, error, sqlstate", [
    (["/no/such/folder"], "docs", E.UndefinedFile, "58P01"),
    ([], "docs; DROP TABLE x", E.InvalidParameterValue, "22023"),
    ([], "", E.InvalidParameterValue, "22023"),
])
def test_bad_arguments(conn, folder, paths, table, error, sqlstate):
    with pytest.raises(error) as info:
        conn.ingest_files(paths or [str(folder)], table, progress=False)
    assert info.value.sqlstate == sqlstate


def test_unknown_model_and_broken_files(conn, folder):
    with pytest.raises(E.UndefinedFunction):
        conn.ingest_files(str(folder), "docs", embed="nosuchmodel", progress=False)
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 not really")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    conn.ingest_files(str(folder), "docs", progress=False)  # rows kept, without text or size
    rows = _rows(conn)
    assert rows["broken.pdf"][6] in (None, "") and rows["broken.png"][4:6] == (None, None)


def test_embedding_column_from_a_registered_model(conn, folder):
    def model(texts):  # deterministic: the length and the count of 'a'
        return np.array([[len(t), t.count("a"), 1.0] for t in texts], dtype=np.float32)
    conn.register_embedding("toy", model, 3)
    conn.ingest_files(str(folder), "docs", embed="toy", progress=False)
    got = dict(conn.execute("SELECT path, embedding FROM docs").fetchall())
    by_name = {os.path.basename(k): v for k, v in got.items()}
    assert list(by_name["a.txt"]) == [23.0, 3.0, 1.0]
    assert by_name["d.png"] is None  # no text, no embedding
    nearest = conn.execute("SELECT path FROM docs ORDER BY embedding <-> '[23, 3, 1]' LIMIT 1")
    assert nearest.fetchall()[0][0].endswith("a.txt")


def test_builtin_model_when_fetched(conn, folder):
    from omnilake.gpu.models import locate
    try:
        locate("minilm", None)
    except Exception:  # noqa: BLE001 - not fetched here: `omnilake models fetch minilm`
        pytest.skip("the minilm model is not fetched")
    conn.ingest_files(str(folder), "docs", embed="minilm", progress=False)
    (dims,) = conn.execute("SELECT vector_dims(embedding) FROM docs WHERE path LIKE '%a.txt'").fetchone()
    assert dims == 384


def test_cli(tmp_path, folder):
    warehouse = str(tmp_path / "wh")
    command = [sys.executable, "-m", "omnilake", "ingest", str(folder), "--table", "docs",
               "--recursive", "-w", warehouse]
    first = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert first.returncode == 0, first.stderr
    assert "7 file(s) added" in first.stdout
    again = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert "0 file(s) added, 0 changed, 7 unchanged" in again.stdout
    bad = subprocess.run(command[:4] + [str(tmp_path / "none")] + command[5:],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert bad.returncode == 1 and "58P01" in bad.stderr


@pytest.mark.s3
@pytest.mark.slow  # retries with backoff through the proxy
def test_ingest_through_a_faulty_network_loses_nothing(s3_server, s3_warehouse, tmp_path):
    root = tmp_path / "many"
    root.mkdir()
    expected = {}
    for i in range(40):  # half inline, half stored objects
        data = hashlib.shake_256(f"file {i}".encode()).digest(1000 if i % 2 else 300_000)
        (root / f"f{i:02}.bin").write_bytes(data)
        expected[f"f{i:02}.bin"] = hashlib.sha256(data).hexdigest()
    proxy = FaultProxy(s3_server.port, error_rate=0.06, drop_rate=0.04, delay_rate=0.06,
                       stall_rate=0.01, stall_s=1.5, seed=11).start()
    try:
        settings = {**s3_warehouse, "s3_endpoint": proxy.endpoint, "s3_max_attempts": 10,
                    "s3_request_timeout": 2.0, "s3_connect_timeout": 1.0}
        with omnilake.connect(**settings) as conn:
            conn.ingest_files(str(root), "docs", progress=False)
            conn.flush()
        assert proxy.counts["errors"] + proxy.counts["drops"] > 0
    finally:
        proxy.stop()
    with omnilake.connect(**s3_warehouse) as conn:  # straight to the server
        rows = conn.execute("SELECT path, sha256, content FROM docs").fetchall()
        assert {os.path.basename(p): s for p, s, _ in rows} == expected
        assert all(hashlib.sha256(c).hexdigest() == s for _, s, c in rows)

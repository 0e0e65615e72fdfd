"""A multi-hundred-MB blob streamed in and out, on a local folder and on S3, in a child
process whose peak memory is measured: a value is never held whole (storage/blobs.py)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest

SIZE = 300 * 1024 * 1024
CHUNK = 4 * 1024 * 1024
# Peak RSS may grow by this much over the child's baseline; holding the value once would
# take SIZE. Measured: ~40 MiB local, ~45 MiB on S3 (a multipart part, read chunks).
MAX_GROWTH = 120 * 1024 * 1024

CHILD = r"""
import hashlib, json, resource, sys
import omnilake
settings, path = json.loads(sys.argv[1]), sys.argv[2]
with omnilake.connect(**settings) as conn:
    cur = conn.cursor()
    cur.execute("CREATE TABLE big (id INT, b BLOB)")
    cur.execute("INSERT INTO big VALUES (0, 'warm-up')")
    cur.execute("SELECT blob_size(b), b FROM big").fetchall()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    cur.execute("INSERT INTO big SELECT 1, load_file(%s)", [path])
    cur.execute("INSERT INTO big SELECT 2, load_file(%s)", [path])  # dedupe: no second upload
    conn.flush()
    size, sha, uri = cur.execute(
        "SELECT blob_size(b), blob_sha256(b), blob_uri(b) FROM big WHERE id = 1").fetchone()
    middle = cur.execute("SELECT blob_read(b, %s, 16) FROM big WHERE id = 2",
                         [size // 2]).fetchone()[0]
    conn.lazy_blobs = True
    (f,) = cur.execute("SELECT b FROM big WHERE id = 1").fetchone()
    digest = hashlib.sha256()
    while chunk := f.read(8 << 20):
        digest.update(chunk)
    objects = [k for k in conn.session.engine.blobs.objects() if not k.startswith("tmp/")]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"size": size, "sha": sha, "read_sha": digest.hexdigest(), "uri": uri,
                  "middle": middle.hex(), "objects": objects, "growth": peak - base}))
"""


@pytest.fixture(scope="module")
def big_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("big") / "big.bin"
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for i in range(SIZE // CHUNK):
            chunk = hashlib.shake_256(i.to_bytes(4, "big")).digest(4096) * (CHUNK // 4096)
            digest.update(chunk)
            f.write(chunk)
    return path, digest.hexdigest()


@pytest.mark.slow  # ~10-40 s each on 2 cores
@pytest.mark.parametrize("backend", ["local", "s3"])
def test_300mb_blob_streams_with_bounded_memory(backend, big_file, tmp_path, request):
    path, sha = big_file
    if backend == "local":
        settings = {"warehouse": str(tmp_path / "wh")}
    else:
        settings = request.getfixturevalue("s3_warehouse")
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(settings), str(path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["size"] == SIZE and got["sha"] == sha and got["read_sha"] == sha
    assert got["objects"] == [sha]
    with open(path, "rb") as f:
        f.seek(SIZE // 2)
        assert bytes.fromhex(got["middle"]) == f.read(16)
    assert got["growth"] < MAX_GROWTH, f"peak RSS grew by {got['growth'] / 2**20:.0f} MiB"

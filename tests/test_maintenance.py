"""OPTIMIZE (compaction), VACUUM (snapshot expiry + orphan files), `omnilake maintenance`."""

import os
import pathlib
import subprocess
import sys
import time

import pytest

import omnilake
from omnilake import errors as E

from conftest import rows


def data_files(conn, name):
    table = conn.session.engine.warehouse.catalog.load_table(f"public.{name}")
    return [t.file.file_path for t in table.scan().plan_files()]


def small_files_table(conn, name="t", batches=6):
    conn.sql(f"CREATE TABLE {name} (a INT, b TEXT)")
    for i in range(batches):
        conn.sql(f"INSERT INTO {name} VALUES ({i}, 'x{i}'), ({i + 100}, 'y{i}')")
        conn.flush()


def test_optimize_compacts_small_files_keeping_rows(conn, cur):
    small_files_table(conn)
    cur.execute("DELETE FROM t WHERE a = 3")
    before = rows(cur, "SELECT a, b FROM t ORDER BY a")
    assert len(data_files(conn, "t")) >= 6
    assert rows(cur, "OPTIMIZE t") == [("public.t", 6, 6, 1, 11)]
    assert len(data_files(conn, "t")) == 1
    assert rows(cur, "SELECT a, b FROM t ORDER BY a") == before
    assert rows(cur, "OPTIMIZE t")[0][2] == 0  # nothing left to do


def test_vacuum_expires_old_snapshots_and_removes_orphans(warehouse):
    with omnilake.connect(warehouse, retention_hours=0) as conn:
        small_files_table(conn)
        conn.sql("OPTIMIZE t")
        location = pathlib.Path(conn.session.engine.warehouse.catalog.load_table("public.t")
                                .location().removeprefix("file://"))
        stray = location / "data" / "stray.parquet"
        stray.write_bytes(b"not referenced by any snapshot")
        time.sleep(0.05)
        files_before = sum(1 for p in location.rglob("*") if p.is_file())
        ((_, expired, removed, _),) = conn.sql("VACUUM t").fetchall()
        assert expired >= 6 and removed >= 7 and not stray.exists()
        # the expiry commit itself writes one new metadata file
        assert sum(1 for p in location.rglob("*") if p.is_file()) == files_before - removed + 1
        assert conn.sql("SELECT count(*) FROM t").fetchall() == [(12,)]
    with omnilake.connect(warehouse) as conn:
        assert conn.sql("SELECT count(*) FROM t").fetchall() == [(12,)]


def test_vacuum_keeps_recent_files_and_snapshots(conn, cur):
    small_files_table(conn, batches=3)
    assert rows(cur, "VACUUM t") == [("public.t", 0, 0, 0)]  # default window: 7 days
    with pytest.raises(E.UndefinedTable):
        cur.execute("VACUUM nope")


def test_background_compaction(warehouse):
    with omnilake.connect(warehouse, flush_interval=0.05, compact_files=4) as conn:
        conn.sql("CREATE TABLE bg (a INT)")
        for i in range(11):
            conn.sql(f"INSERT INTO bg VALUES ({i})")
            conn.flush("bg")  # one small file each
        assert len(data_files(conn, "bg")) == 11
        conn.sql("INSERT INTO bg VALUES (11)")  # flushed by the background flusher, which compacts
        deadline = time.time() + 10
        while len(data_files(conn, "bg")) > 1 and time.time() < deadline:
            time.sleep(0.1)
        assert len(data_files(conn, "bg")) == 1
        assert conn.sql("SELECT count(*), sum(a) FROM bg").fetchall() == [(12, 66)]


def test_maintenance_command(tmp_path):
    wh = str(tmp_path / "wh")
    with omnilake.connect(wh) as conn:
        small_files_table(conn)
    out = subprocess.run([sys.executable, "-m", "omnilake", "maintenance", "-w", wh,
                          "--retention-hours", "0"], capture_output=True, text=True, timeout=120,
                         cwd=os.path.expanduser("~"))
    assert out.returncode == 0, out.stderr
    assert "public.t: 6 small file(s) -> 1" in out.stdout + out.stderr
    with omnilake.connect(wh) as conn:
        assert len(data_files(conn, "t")) == 1
        assert conn.sql("SELECT count(*) FROM t").fetchall() == [(12,)]

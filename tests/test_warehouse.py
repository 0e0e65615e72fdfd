"""Opening warehouses: persistence across reopen, temporary warehouses, settings sources."""

import os
import pathlib

import pytest

import omnilake
from omnilake import errors as E
from omnilake.config import Settings

from conftest import rows


def test_data_survives_reopen(warehouse):
    with omnilake.connect(warehouse) as conn:
        cur = conn.cursor()
        cur.execute("CREATE SCHEMA iot")
        cur.execute("CREATE TABLE iot.r (ts TIMESTAMP, v VECTOR(2))")
        cur.execute("INSERT INTO iot.r VALUES ('2024-01-01 00:00:00', '[1, 2]')")
        cur.execute("ALTER TABLE iot.r RENAME COLUMN v TO vec")
    with omnilake.connect(warehouse) as conn:
        cur = conn.cursor()
        assert rows(cur, "SELECT vec FROM iot.r") == [([1.0, 2.0],)]
        assert rows(cur, "SHOW TABLES FROM iot") == [("iot", "r")]


def test_temporary_warehouse_is_removed_on_close():
    conn = omnilake.connect()
    folder = pathlib.Path(conn.warehouse.removeprefix("file://"))
    conn.sql("CREATE TABLE t (a INT); INSERT INTO t VALUES (1)")
    assert folder.exists()
    conn.close()
    assert not folder.exists()


def test_settings_from_env_toml_and_arguments(tmp_path, monkeypatch):
    (tmp_path / "omnilake.toml").write_text('[omnilake]\nschema = "from_toml"\nbatch_size = 1024\n')
    monkeypatch.chdir(tmp_path)
    env = {"OMNILAKE_BATCH_SIZE": "2048"}
    settings = Settings.load(environ=env)
    assert settings.schema == "from_toml" and settings.batch_size == 2048
    assert Settings.load(environ=env, batch_size=4096).batch_size == 4096
    with pytest.raises(E.InvalidParameterValue, match="batch_size"):
        Settings.load(environ={"OMNILAKE_BATCH_SIZE": "many"})
    with pytest.raises(E.InvalidParameterValue, match="unknown setting"):
        Settings.load(environ={}, nonsense=1)
    with pytest.raises(E.InvalidParameterValue, match="dialect"):
        Settings.load(environ={}, dialect="oracle")
    with pytest.raises(E.InvalidParameterValue, match="event_loop must be auto, uvloop or asyncio"):
        Settings.load(environ={"OMNILAKE_EVENT_LOOP": "trio"})


def test_warehouse_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("OMNILAKE_WAREHOUSE", str(tmp_path / "envwh"))
    with omnilake.connect() as conn:
        conn.sql("CREATE TABLE t (a INT)")
    assert (tmp_path / "envwh" / "catalog.db").exists()


def test_unusable_warehouse_is_an_operational_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(E.OperationalError, match="cannot create warehouse"):
        omnilake.connect(str(blocker / "wh"))
    with pytest.raises(E.OperationalError, match="only local folders"):
        omnilake.connect("gs://bucket/prefix")


def test_missing_data_file_is_a_clear_error(warehouse):
    with omnilake.connect(warehouse) as conn:
        conn.sql("CREATE TABLE t (a INT); INSERT INTO t VALUES (1)")
        conn.flush()
        for f in pathlib.Path(warehouse).rglob("*.parquet"):
            os.remove(f)
        with pytest.raises(E.OperationalError, match="missing"):
            conn.sql("SELECT * FROM t")


def test_every_setting_is_documented():
    doc = (pathlib.Path(__file__).parent.parent / "docs" / "configuration.md").read_text()
    for name, _, _, _ in Settings.declarations():
        assert f"`{name}`" in doc, f"setting {name} is missing from docs/configuration.md"
        assert f"OMNILAKE_{name.upper()}" in doc

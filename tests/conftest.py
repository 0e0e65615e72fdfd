import os

import pytest

import omnilake

# Child Pythons the tests start (CLI, server, workers) must import the installed package: with
# the checkout as working directory its omnilake/ folder (a part of the package) would shadow it.
os.environ["PYTHONSAFEPATH"] = "1"


@pytest.fixture
def warehouse(tmp_path):
    return str(tmp_path / "wh")


@pytest.fixture
def conn(warehouse):
    with omnilake.connect(warehouse) as connection:
        yield connection


@pytest.fixture
def cur(conn):
    return conn.cursor()


def rows(cur, sql, params=None):
    cur.execute(sql, params)
    return cur.fetchall()


def fast_and_general(monkeypatch, module, run_statement):
    """(result, result with `module.run` declining, whether `module.run` answered the
    first): a statement through a path that answers without DataFusion (key_lookup,
    search_result) and through the general path, for comparing the two."""
    served, original = [], module.run

    def counted(session, plan, values):
        found = original(session, plan, values)
        served.append(found is not None)
        return found
    monkeypatch.setattr(module, "run", counted)
    fast = run_statement()
    monkeypatch.setattr(module, "run", lambda session, plan, values: None)
    general = run_statement()
    monkeypatch.setattr(module, "run", original)
    return fast, general, any(served)


# -- S3 on loopback ---------------------------------------------------------------------------
@pytest.fixture(scope="session")
def s3_server():
    """One moto_server process for the session (tests that kill a server start their own)."""
    pytest.importorskip("moto.server", reason="needs moto[server] (the test extra)")
    from s3server import MotoServer, free_port
    server = MotoServer(free_port()).start()
    yield server
    server.stop()


@pytest.fixture
def s3_warehouse(s3_server, tmp_path, request):
    """connect() arguments for a fresh S3 warehouse: its own bucket, local state in tmp_path."""
    import uuid
    bucket = s3_server.create_bucket(f"wh-{uuid.uuid4().hex[:12]}")
    return {"warehouse": f"s3://{bucket}/lake", "local_dir": str(tmp_path / "state"),
            "cache_dir": str(tmp_path / "cache"), **s3_server.settings()}


@pytest.fixture(params=["local", "s3"])
def any_warehouse(request, tmp_path):
    """connect() arguments for a local folder and for S3: one contract, both backends."""
    if request.param == "local":
        return {"warehouse": str(tmp_path / "wh")}
    return request.getfixturevalue("s3_warehouse")

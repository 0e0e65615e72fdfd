"""Replay the catalog and introspection statements real clients sent (captured by
tests/fixtures/client_queries/capture.py): each must parse, plan and, when it takes no
parameters, run without an error."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

psycopg = pytest.importorskip("psycopg")

from wire_server import start_server  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "client_queries"
CASES = [(path.stem, i, text) for path in sorted(FIXTURES.glob("*.json"))
         for i, text in enumerate(json.loads(path.read_text())["statements"])]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(str(tmp_path_factory.mktemp("fixtures") / "wh"))
    setup = {s for path in FIXTURES.glob("*.json") for s in json.loads(path.read_text())["setup"]}
    with psycopg.connect(srv.conninfo(), autocommit=True) as c:
        for sql in sorted(setup):
            c.execute(sql)
    yield srv
    assert srv.stop() == 0


def test_fixtures_were_captured():
    clients = {client for client, _, _ in CASES}
    assert {"psql", "sqlalchemy", "asyncpg", "psycopg"} <= clients
    assert len(CASES) >= 40


@pytest.mark.parametrize("client, number, text", CASES, ids=[f"{c}-{i}" for c, i, _ in CASES])
def test_captured_statement(server, client, number, text):
    with psycopg.connect(server.conninfo()) as c:  # inside a transaction, as clients send them
        savepoint = re.match(r'\s*(?:RELEASE|ROLLBACK TO)\s+(?:SAVEPOINT\s+)?("[^"]+"|\w+)', text, re.I)
        if savepoint:
            c.execute(f"SAVEPOINT {savepoint.group(1)}")
        if "$1" in text:
            result = c.pgconn.prepare(b"", text.encode())
            assert result.status == psycopg.pq.ExecStatus.COMMAND_OK, result.error_message.decode()
            described = c.pgconn.describe_prepared(b"")
            assert described.status == psycopg.pq.ExecStatus.COMMAND_OK, described.error_message.decode()
        else:
            c.execute(text, prepare=False)

"""Exchanges answered again from the read callback (server/replay.py): a repeat gets the
same bytes the message loop gave, and nothing that could have changed is ever replayed: a
redefined statement, a transaction, a statement reading a table, an error, a request that
arrives in pieces or pipelined. The server runs in this process so the test can count the
replays; clients are raw sockets and psycopg."""

from __future__ import annotations

import time

import pytest

psycopg = pytest.importorskip("psycopg")

from omnilake.server import messages as M  # noqa: E402
from omnilake.server.replay import MAX_EXCHANGES, MAX_REPLY, Exchanges  # noqa: E402
from wire_messages import (bind, columns, connect, error_code, message, parse, read_messages,  # noqa: E402
                           read_messages_from, rows, run_portal)
from wire_server import in_process_server, start_server  # noqa: E402

SYNC = message(b"S", b"")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with in_process_server(str(tmp_path_factory.mktemp("replay") / "wh")) as srv:
        yield srv


def _session(server):
    """A raw connection and the server's side of it."""
    sock = connect(server)
    return sock, max(server.connections.values(), key=lambda c: c.pid)


def _exchange(sock, request: bytes) -> list[tuple[bytes, bytes]]:
    sock.sendall(request)
    return read_messages(sock)


def _remembered(server, sql: bytes):
    """A raw connection (and the server's side) that has prepared `sql` as statement "s" and
    run it three times: its exchange is remembered."""
    sock, conn = _session(server)
    _exchange(sock, parse(b"s", sql) + SYNC)
    for _ in range(3):
        _exchange(sock, run_portal(b"s"))
    return sock, conn


def test_a_repeated_constant_exchange_gets_the_same_bytes_without_the_loop(server):
    sock, conn = _session(server)
    assert [k for k, _ in _exchange(sock, parse(b"one", b"SELECT 1 AS n") + SYNC)] == [b"1", b"Z"]
    first = _exchange(sock, run_portal(b"one"))
    assert [k for k, _ in first] == [b"2", b"T", b"D", b"C", b"Z"] and rows(first) == [[b"1"]]
    trips = len(server.trips)
    repeats = [_exchange(sock, run_portal(b"one")) for _ in range(5)]
    assert repeats == [first] * 5
    assert conn.exchanges.replayed >= 4  # the first repeat may still meet the loop
    assert len(server.trips) == trips  # and no statement ran on the pool
    sock.close()


def test_a_redefined_statement_is_answered_by_its_new_text(server):
    sock, conn = _session(server)
    _exchange(sock, parse(b"s", b"SELECT 1") + SYNC)
    for _ in range(3):
        assert rows(_exchange(sock, run_portal(b"s"))) == [[b"1"]]
    assert conn.exchanges.replayed >= 1
    closed = _exchange(sock, message(b"C", b"Ss\0") + parse(b"s", b"SELECT 2") + SYNC)
    assert [k for k, _ in closed] == [b"3", b"1", b"Z"]
    for _ in range(3):
        assert rows(_exchange(sock, run_portal(b"s"))) == [[b"2"]]
    # the unnamed statement, replaced by the next Parse in the same request as its Bind
    _exchange(sock, parse(b"", b"SELECT 3") + SYNC)
    assert [rows(_exchange(sock, run_portal(b""))) for _ in range(3)] == [[[b"3"]]] * 3
    _exchange(sock, parse(b"", b"SELECT 4") + SYNC)
    assert rows(_exchange(sock, run_portal(b""))) == [[b"4"]]
    sock.close()


def test_inside_a_transaction_the_message_loop_answers(server):
    sock, conn = _remembered(server, b"SELECT 5")
    assert _exchange(sock, message(b"Q", b"BEGIN\0"))[-1] == (b"Z", b"T")
    replayed = conn.exchanges.replayed
    inside = _exchange(sock, run_portal(b"s"))
    assert rows(inside) == [[b"5"]] and inside[-1] == (b"Z", b"T")  # in the transaction
    failed = _exchange(sock, message(b"Q", b"SELECT * FROM no_such_table\0"))
    assert failed[-1] == (b"Z", b"E")
    refused = _exchange(sock, run_portal(b"s"))
    assert [k for k, _ in refused][-2:] == [b"E", b"Z"] and refused[-1] == (b"Z", b"E")
    assert error_code(refused[-2][1]) == "25P02"
    assert _exchange(sock, message(b"Q", b"ROLLBACK\0"))[-1] == (b"Z", b"I")
    assert conn.exchanges.replayed == replayed
    after = _exchange(sock, run_portal(b"s"))
    assert rows(after) == [[b"5"]] and after[-1] == (b"Z", b"I")
    sock.close()


def test_statements_reading_tables_are_never_replayed(server):
    with psycopg.connect(server.conninfo, autocommit=True) as writer:
        writer.execute("CREATE TABLE ticks (n INT)")
        sock, conn = _session(server)
        _exchange(sock, parse(b"count", b"SELECT count(*) FROM ticks") + SYNC)
        seen = []
        for i in range(4):
            seen.append(rows(_exchange(sock, run_portal(b"count")))[0][0])
            seen.append(rows(_exchange(sock, run_portal(b"count")))[0][0])
            writer.execute("INSERT INTO ticks VALUES (%s)", (i,))
    assert seen == [b"0", b"0", b"1", b"1", b"2", b"2", b"3", b"3"]
    assert conn.exchanges.replayed == 0
    sock.close()


def test_simple_queries_and_descriptions_of_tables_are_never_replayed(server):
    with psycopg.connect(server.conninfo, autocommit=True) as writer:
        writer.execute("CREATE TABLE grows (a INT)")
        sock, conn = _session(server)
        _exchange(sock, parse(b"all", b"SELECT * FROM grows") + SYNC)
        describe = message(b"D", b"Sall\0") + SYNC
        count = message(b"Q", b"SELECT count(*) FROM grows\0")
        before = [_exchange(sock, describe) for _ in range(3)]
        counts = [rows(_exchange(sock, count)) for _ in range(2)]
        writer.execute("ALTER TABLE grows ADD COLUMN b TEXT")
        writer.execute("INSERT INTO grows VALUES (1, 'x')")
        after = _exchange(sock, describe)
        counts += [rows(_exchange(sock, count)) for _ in range(2)]
    assert [k for k, _ in before[0]] == [b"t", b"T", b"Z"] and before == [before[0]] * 3
    assert columns(before[0]) == [b"a"] and columns(after) == [b"a", b"b"]  # the new column
    assert counts == [[[b"0"]]] * 2 + [[[b"1"]]] * 2
    assert conn.exchanges.replayed == 0
    sock.close()


def test_errors_are_never_replayed(server):
    sock, conn = _session(server)
    _exchange(sock, parse(b"bad", b"SELECT 1 / 0") + SYNC)
    for _ in range(3):
        reply = _exchange(sock, run_portal(b"bad"))
        assert [k for k, _ in reply] == [b"2", b"E", b"Z"] and error_code(reply[1][1]) == "22012"
    assert conn.exchanges.replayed == 0
    sock.close()


def test_messages_skipped_after_an_error_are_never_remembered(server):
    """After an error without Sync, Bind/Describe/Execute are skipped up to the next Sync: an
    exchange of skipped messages got only ReadyForQuery, which its repeat must not get."""
    sock, conn = _session(server)
    _exchange(sock, parse(b"s", b"SELECT 7") + SYNC)
    assert rows(_exchange(sock, run_portal(b"s"))) == [[b"7"]]
    sock.sendall(bind(b"no_such_statement") + message(b"H", b""))
    failed = read_messages(sock, until=b"E")
    assert error_code(failed[-1][1]) == "26000"
    skipped = _exchange(sock, run_portal(b"s"))
    assert [k for k, _ in skipped] == [b"Z"]  # skipped up to the Sync, as PostgreSQL does
    for _ in range(3):
        again = _exchange(sock, run_portal(b"s"))
        assert [k for k, _ in again] == [b"2", b"T", b"D", b"C", b"Z"] and rows(again) == [[b"7"]]
    sock.close()


def test_copy_out_of_a_prepared_statement_is_never_replayed(server):
    with psycopg.connect(server.conninfo, autocommit=True) as writer:
        writer.execute("CREATE TABLE copied (n INT)")
        writer.execute("INSERT INTO copied VALUES (1)")
        sock, conn = _session(server)
        _exchange(sock, parse(b"c", b"COPY copied TO STDOUT") + SYNC)
        request = bind(b"c") + message(b"E", b"\0\0\0\0\0") + SYNC
        data = [b"".join(body for kind, body in _exchange(sock, request) if kind == b"d")
                for _ in range(2)]
        writer.execute("INSERT INTO copied VALUES (2)")
        data += [b"".join(body for kind, body in _exchange(sock, request) if kind == b"d")
                 for _ in range(2)]
    assert data == [b"1\n", b"1\n", b"1\n2\n", b"1\n2\n"]
    assert conn.exchanges.replayed == 0
    sock.close()


def test_pipelined_and_split_requests_go_through_the_loop(server):
    sock, conn = _remembered(server, b"SELECT 'x'")
    replayed = conn.exchanges.replayed
    assert replayed >= 1
    sock.sendall(run_portal(b"s") * 3)  # three exchanges in one piece
    data, idle = b"", M.ready_for_query("I")
    while data.count(idle) < 3:
        data += sock.recv(65536)
    replies = read_messages_from(data)
    assert [k for k, _ in replies] == [b"2", b"T", b"D", b"C", b"Z"] * 3
    assert rows(replies) == [[b"x"]] * 3
    request = run_portal(b"s")
    for cut in (1, 5, len(request) - 5):  # one exchange in two pieces
        sock.sendall(request[:cut])
        time.sleep(0.05)
        sock.sendall(request[cut:])
        assert rows(read_messages(sock)) == [[b"x"]]
    assert conn.exchanges.replayed == replayed
    assert rows(_exchange(sock, run_portal(b"s"))) == [[b"x"]]
    sock.close()


def test_psycopg_repeats_in_both_protocols(server):
    with psycopg.connect(server.conninfo, autocommit=True) as c:
        conn = server.connections[c.info.backend_pid]
        prepared = [c.execute("SELECT 41 + 1 AS answer", prepare=True).fetchall() for _ in range(5)]
        simple = psycopg.ClientCursor(c)
        texts = [simple.execute("SELECT 'ok' AS status").fetchall() for _ in range(5)]
        assert prepared == [[(42,)]] * 5 and texts == [[("ok",)]] * 5
        assert conn.exchanges.replayed >= 6
        c.execute("SET application_name = 'replayed'")  # forgets the remembered exchanges
        assert c.execute("SELECT 41 + 1 AS answer", prepare=True).fetchall() == [(42,)]
        assert c.execute("SHOW application_name").fetchone() == ("replayed",)


def test_remembered_exchanges_are_bounded():
    idle = M.ready_for_query("I")
    exchanges = Exchanges()
    for i in range(MAX_EXCHANGES + 1):
        exchanges.start(b"request %d" % i)
        exchanges.finish([b"reply %d" % i, idle])
    assert exchanges.get(b"request 0") is None  # the oldest went first
    assert exchanges.get(b"request 1") == b"reply 1" + idle
    exchanges.start(b"big")
    exchanges.finish([b"x" * MAX_REPLY, idle])
    assert exchanges.get(b"big") is None
    exchanges.start(b"in a transaction")
    exchanges.finish([b"reply", M.ready_for_query("T")])
    assert exchanges.get(b"in a transaction") is None
    assert exchanges.get(b"request 1") is None  # and it forgot the others
    exchanges.start(b"again")
    exchanges.spoil()
    exchanges.finish([b"reply", idle])
    assert exchanges.get(b"again") is None


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_the_server_on_either_event_loop(tmp_path, monkeypatch, loop):
    """`omnilake serve` on the loop the event_loop setting names (auto: uvloop when installed),
    replaying repeats and running table reads alike."""
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    from omnilake.server.server import event_loop
    assert (event_loop(loop) is None) is (loop == "asyncio")
    monkeypatch.setenv("OMNILAKE_EVENT_LOOP", loop)
    srv = start_server(str(tmp_path / "wh"))
    try:
        with psycopg.connect(srv.conninfo(), autocommit=True) as c:
            assert [c.execute("SELECT 1", prepare=True).fetchone() for _ in range(5)] == [(1,)] * 5
            c.execute("CREATE TABLE t (n INT)")
            for n in range(3):
                c.execute("INSERT INTO t VALUES (%s)", (n,))
                assert c.execute("SELECT count(*) FROM t", prepare=True).fetchone() == (n + 1,)
    finally:
        assert srv.stop() == 0

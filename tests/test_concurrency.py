"""Several writers on one warehouse: appends from separate processes all land."""

import multiprocessing as mp

import omnilake

from conftest import rows


def _writer(warehouse: str, worker: int, batches: int) -> None:
    with omnilake.connect(warehouse) as conn:
        cur = conn.cursor()
        for b in range(batches):
            cur.executemany("INSERT INTO shared VALUES (%s, %s)",
                            [(worker, b * 10 + i) for i in range(10)])


def test_two_processes_append_to_one_table(warehouse):
    with omnilake.connect(warehouse) as conn:
        conn.sql("CREATE TABLE shared (worker INT, n INT)")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(warehouse, w, 15)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    with omnilake.connect(warehouse) as conn:
        cur = conn.cursor()
        assert rows(cur, "SELECT worker, count(*), count(DISTINCT n) FROM shared GROUP BY worker "
                         "ORDER BY worker") == [(0, 150, 150), (1, 150, 150)]

"""The wire server's statement pool (server/pool.py): results and errors reach the awaiting
task, the most recently idle thread runs the next statement, at most max_workers run at once
(the rest wait their turn), a canceled wait drops the result, and shutdown ends the threads.
Then, over real sockets: a slow statement does not hold up other connections."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from omnilake.server.pool import StatementPool

psycopg = pytest.importorskip("psycopg")

from wire_server import start_server  # noqa: E402


def test_results_and_errors_reach_the_caller():
    pool = StatementPool(4)

    async def main():
        loop = asyncio.get_running_loop()
        assert await pool.run(loop, lambda a, b: a + b, 2, 3) == 5
        with pytest.raises(ZeroDivisionError):
            await pool.run(loop, lambda: 1 / 0)
        with pytest.raises(RuntimeError, match="StopIteration"):
            await pool.run(loop, lambda: next(iter(())))
        return await asyncio.gather(*(pool.run(loop, lambda i=i: i * i) for i in range(50)))
    try:
        assert asyncio.run(main()) == [i * i for i in range(50)]
        assert pool.submit(lambda: "x").result(timeout=10) == "x"  # the Executor interface
        with pytest.raises(KeyError):
            pool.submit(lambda: {}["k"]).result(timeout=10)
    finally:
        pool.shutdown(wait=True)
    assert all(not w.thread.is_alive() for w in pool._workers)
    with pytest.raises(RuntimeError):
        pool.submit(lambda: None)


def test_the_warm_thread_runs_the_next_statement():
    pool = StatementPool(8)

    async def main():
        loop = asyncio.get_running_loop()
        gate = threading.Event()
        # four at once make four threads; then one at a time reuse the last one idle
        busy = [pool.run(loop, lambda: (gate.wait(10), threading.get_ident())[1]) for _ in range(4)]
        await asyncio.sleep(0.05)
        gate.set()
        await asyncio.gather(*busy)
        await asyncio.sleep(0.05)  # all four idle again
        seen = {await pool.run(loop, threading.get_ident) for _ in range(20)}
        return len(pool._workers), seen
    try:
        workers, seen = asyncio.run(main())
    finally:
        pool.shutdown(wait=True)
    assert workers == 4 and len(seen) == 1


def test_at_most_max_workers_at_once_and_the_rest_in_order():
    pool = StatementPool(2)
    running, peak, order = [0], [0], []
    lock = threading.Lock()

    def job(i):
        with lock:
            order.append(i)
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.02)
        with lock:
            running[0] -= 1
        return i

    async def main():
        loop = asyncio.get_running_loop()
        return await asyncio.gather(*(pool.run(loop, job, i) for i in range(10)))
    try:
        assert asyncio.run(main()) == list(range(10))
    finally:
        pool.shutdown(wait=True)
    assert peak[0] == 2 and len(pool._workers) == 2
    # the backlog starts first in, first out (two threads taking jobs 2 and 3 together may
    # record them in either order)
    assert sorted(order) == list(range(10))
    assert all(abs(job - position) <= 1 for position, job in enumerate(order))


def test_a_canceled_wait_drops_the_result_and_the_pool_goes_on():
    pool = StatementPool(1)
    finished = threading.Event()

    def slow():
        time.sleep(0.2)
        finished.set()
        return "late"

    async def main():
        loop = asyncio.get_running_loop()
        waiting = asyncio.ensure_future(pool.run(loop, slow))
        await asyncio.sleep(0.05)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        return await pool.run(loop, lambda: "next")  # runs after `slow`, on the same thread
    try:
        assert asyncio.run(main()) == "next"
        assert finished.is_set()
    finally:
        pool.shutdown(wait=True)


def test_shutdown_drops_waiting_work_when_asked():
    pool = StatementPool(1)
    gate = threading.Event()
    first = pool.submit(gate.wait, 10)
    dropped = pool.submit(lambda: "never")
    stopper = threading.Thread(target=pool.shutdown, kwargs={"cancel_futures": True})
    stopper.start()
    time.sleep(0.05)
    gate.set()
    stopper.join(10)
    assert not stopper.is_alive() and first.result(timeout=1) is True
    assert not dropped.done()  # never started


def test_slow_statement_does_not_hold_up_other_connections(tmp_path):
    """20 quick statements on one connection finish while another runs a query of ~800M
    joined rows."""
    srv = start_server(str(tmp_path / "wh"))
    try:
        slow_done = threading.Event()

        def slow():
            with psycopg.connect(srv.conninfo(), autocommit=True) as c:
                c.execute("SELECT count(*) FROM (SELECT a.v FROM generate_series(1, 20000) a(v), "
                          "generate_series(1, 40000) b(v) WHERE (a.v * b.v) % 7 = 3) x").fetchone()
            slow_done.set()
        thread = threading.Thread(target=slow)
        thread.start()
        time.sleep(0.2)
        with psycopg.connect(srv.conninfo(), autocommit=True) as c:
            start = time.perf_counter()
            for i in range(20):
                assert c.execute("SELECT %s::int + 1", (i,), prepare=True).fetchone() == (i + 1,)
            quick = time.perf_counter() - start
        was_running = not slow_done.is_set()  # (~3 s of work on a 2-core VM)
        thread.join(120)
        assert slow_done.is_set() and was_running and quick < 2
    finally:
        assert srv.stop() == 0

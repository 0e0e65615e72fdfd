"""Crash trials: a writer process is killed with SIGKILL at a random moment, the warehouse is
reopened (recovery), and every acknowledged row must be there exactly once.

The test suite runs a few dozen quick trials (tests/test_durability.py); for a long run:
    python tests/crash_trials.py --trials 1000
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

ROWS_PER_TRIAL_RANGE = 1_000_000


def writer(warehouse: str, ack_path: str, first_id: int, seed: int) -> None:
    """Insert small batches forever; after each INSERT (or COMMIT) returns, append its ids to
    `ack_path`. Before a transaction, its ids go to `<ack_path>.tx`: they must be all present
    or all absent after a crash."""
    import omnilake
    from omnilake.errors import SerializationFailure
    rng = random.Random(seed)
    # Small thresholds, so flushes (and their commits) interleave with the kills.
    conn = omnilake.connect(warehouse, flush_rows=rng.choice([7, 30, 200]), flush_interval=0.05)
    cur = conn.cursor()
    next_id = first_id
    with open(ack_path, "a", buffering=1) as ack, open(ack_path + ".tx", "a", buffering=1) as intents:
        while True:
            n = rng.randint(1, 6)
            ids = list(range(next_id, next_id + n))
            if rng.random() < 0.25 and n > 1:  # a transaction of two INSERTs (and an UPDATE)
                update = rng.random() < 0.3
                intents.write(("u " if update else "") + " ".join(map(str, ids)) + "\n")
                cur.execute("BEGIN")
                cur.executemany("INSERT INTO crash VALUES (%s, %s)", [(i, f"v{i}") for i in ids[:1]])
                cur.executemany("INSERT INTO crash VALUES (%s, %s)", [(i, f"v{i}") for i in ids[1:]])
                if update:  # rewrites the table at COMMIT: the rows come back updated or not at all
                    cur.execute("UPDATE crash SET v = 'u' || id WHERE id >= %s", (ids[0],))
                try:
                    cur.execute("COMMIT")
                except SerializationFailure:  # a background compaction won: not acknowledged
                    next_id += n
                    continue
            elif rng.random() < 0.5:
                cur.executemany("INSERT INTO crash VALUES (%s, %s)", [(i, f"v{i}") for i in ids])
            else:
                cur.execute("INSERT INTO crash VALUES " + ", ".join(f"({i}, 'v{i}')" for i in ids))
            ack.write(" ".join(map(str, ids)) + "\n")  # acknowledged: the INSERT returned
            next_id += n


def prepare(warehouse: str) -> None:
    import omnilake
    with omnilake.connect(warehouse) as conn:
        conn.sql("CREATE TABLE IF NOT EXISTS crash (id BIGINT NOT NULL, v TEXT)")


def trial(ctx, warehouse: str, folder: Path, number: int, rng: random.Random) -> dict:
    ack_path = folder / f"ack-{number}.txt"
    ack_path.write_text("")
    first = number * ROWS_PER_TRIAL_RANGE
    proc = ctx.Process(target=writer, args=(warehouse, str(ack_path), first, rng.randint(0, 10**9)))
    proc.start()
    # Wait until it writes, then let it run a random while before the kill.
    deadline = time.time() + 30
    while ack_path.stat().st_size == 0 and time.time() < deadline and proc.is_alive():
        time.sleep(0.005)
    time.sleep(rng.uniform(0.0, 0.25))
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    complete_lines = ack_path.read_text().split("\n")[:-1]  # a line cut by the kill is not counted
    acked = {int(x) for line in complete_lines for x in line.split()}
    intents = Path(str(ack_path) + ".tx").read_text().split("\n")[:-1]
    return {"first": first, "acked": acked,
            "transactions": [{int(x) for x in line.split() if x != "u"} for line in intents],
            "updated": {int(x) for line in intents if line.startswith("u ")
                        for x in line.split()[1:]}}


def check(warehouse: str, results: list[dict], maintain: bool = False) -> tuple[int, int]:
    """Reopen (recovering) and compare with what was acknowledged: (rows, acknowledged).
    With `maintain`, compact and expire first, as a deployment would now and then (no writer
    is alive at this point): thousands of tiny flushes otherwise slow every open."""
    import omnilake
    with omnilake.connect(warehouse, retention_hours=0) as conn:
        if maintain:
            conn.sql("OPTIMIZE crash")
            conn.sql("VACUUM crash")
        values = dict(conn.sql("SELECT id, v FROM crash").fetchall())
        ids = [row[0] for row in conn.sql("SELECT id FROM crash").fetchall()]
    present = set(ids)
    assert len(ids) == len(present), f"{len(ids) - len(present)} row(s) applied twice"
    acked = set().union(*(r["acked"] for r in results))
    missing = acked - present
    assert not missing, f"{len(missing)} acknowledged row(s) lost, e.g. {sorted(missing)[:5]}"
    for group in (g for r in results for g in r.get("transactions", [])):
        assert len(group & present) in (0, len(group)), f"transaction {sorted(group)} half applied"
    for i in set().union(*(r.get("updated", set()) for r in results)) & present:
        assert values[i] == f"u{i}", f"row {i} of a transaction is there without its UPDATE"
    return len(ids), len(acked)


def run(trials: int, seed: int = 0, warehouse: str | None = None, verbose: bool = False) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="omnilake-crash-"))
    warehouse = warehouse or str(folder / "wh")
    prepare(warehouse)
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["omnilake"])  # children start in milliseconds
    rng = random.Random(seed)
    results, tally = [], {"trials": 0, "acknowledged": 0, "rows": 0}
    for number in range(1, trials + 1):
        results.append(trial(ctx, warehouse, folder, number, rng))
        rows, acked = check(warehouse, results, maintain=number % 25 == 0)
        tally.update(trials=number, acknowledged=acked, rows=rows)
        if verbose and (number % 50 == 0 or number == trials):
            print(f"{number} trials: {acked} acknowledged rows, {rows} present, "
                  "none lost, none twice", flush=True)
    return tally


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.time()
    tally = run(args.trials, args.seed, verbose=True)
    print(f"done: {tally['trials']} kill -9 trials in {time.time() - started:.0f} s; "
          f"{tally['acknowledged']} acknowledged rows all present exactly once "
          f"({tally['rows']} rows in the table, the rest written but not yet acknowledged "
          "when the writer died)")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()

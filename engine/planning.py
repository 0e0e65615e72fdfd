"""DataFusion planning on the engine's one shared context, with the parallelism each
statement needs.

A statement over few rows runs best as one partition: DataFusion's round-robin and hash
repartitioning and the tasks of a second partition cost more than they save there
(measured on 16k rows: 0.96 against 1.22 ms for a GROUP BY, 0.51 against 0.75 ms for a
filter; about even at 64k; 2 cores). Point queries and a time range of one series (which
the zone maps cut to one 64k-row batch) are such statements, and they are most of what an
application sends. So the engine's context plans with one partition, and a larger
statement is planned with one per core.

A DataFrame keeps the settings its context had when it was made, so the setting is changed
for the one `ctx.sql` call (or the one frame a caller makes in `parallel`) and set back,
under a lock that all planning through here takes: no other statement is planned with it.
Changing the setting costs two short statements (~30 us each alone, more amid other work),
paid by the large statements only.
"""

from __future__ import annotations

import threading
import weakref
from contextlib import contextmanager

from datafusion import SessionContext

SMALL_STATEMENT_ROWS = 1 << 16
_PARTITIONS = "datafusion.execution.target_partitions"
_lock = threading.Lock()
_parallel: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # context -> partitions


def adopt(ctx: SessionContext, partitions: int) -> None:
    """`ctx` (made with one partition) plans large statements with `partitions`."""
    _parallel[ctx] = partitions


@contextmanager
def parallel(ctx: SessionContext):
    """Frames made from `ctx` inside the block are planned with all the context's partitions
    (made, not run: run them after the block)."""
    partitions = _parallel.get(ctx, 1)
    with _lock:
        if partitions == 1:
            yield
            return
        ctx.sql(f"SET {_PARTITIONS} = {partitions}")
        try:
            yield
        finally:
            ctx.sql(f"SET {_PARTITIONS} = 1")


def plan_sql(ctx: SessionContext, sql: str, values: dict | None = None, small: bool = False):
    """`ctx.sql(sql)` as a DataFrame: one partition when `small`, else all the context's."""
    if small:
        with _lock:
            return ctx.sql(sql, param_values=values or None)
    with parallel(ctx):
        return ctx.sql(sql, param_values=values or None)

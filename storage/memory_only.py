"""Work that must not wait: a statement answered on the wire server's event loop.

The server answers a key lookup on its event loop when everything the lookup needs is in
memory, which saves the trip to a statement thread (~0.1-0.2 ms of a ~0.5 ms point query)
while no other connection waits for more than the lookup's own ~0.1 ms. Within `only()`,
each step that would wait (storage or catalog I/O, a lock held through a commit) or do work
that grows with the data raises WouldWait instead, and the caller runs the statement on a
statement thread as usual. Outside it, the checks cost one attribute read.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

_state = threading.local()


class WouldWait(Exception):
    """Raised inside only() by a step that would wait or do unbounded work."""


# Bounds on work that grows with the data, inside only()
MAX_ROWS = 65536  # rows compared one by one (a key lookup's unindexed batches, memtable)
MAX_FILES = 64    # data files looked at


@contextmanager
def only():
    """This thread's statements may not wait until the block ends."""
    before = getattr(_state, "on", False)
    _state.on = True
    try:
        yield
    finally:
        _state.on = before


def active() -> bool:
    return getattr(_state, "on", False)


def check(ready: bool, what: str) -> None:
    """Raise WouldWait (naming `what`) when `ready` is false inside only()."""
    if not ready and getattr(_state, "on", False):
        raise WouldWait(what)

"""Results decided by a statement's text alone, kept so a repeat skips the pool and DataFusion.

Connection pools and load balancers check a server with `SELECT 1` before lending a
connection, and clients send such statements between every real one. Run through the engine,
one costs ~0.4 ms of planning and a trip to the statement pool; the protocol alone costs
~0.13 ms. A statement is *constant* when its result can depend on nothing but its text: a
SELECT without FROM (or any other clause) whose projections are literals, NULL, booleans,
arithmetic and || on them and casts to number, text or boolean types. No function (now(), random(),
current_setting()), no parameter, no temporal type (its text form depends on TimeZone and
DateStyle), no table. The first run of each such text goes through the engine as usual, so the
answer, its column names and types are the engine's own; its encoded reply is then kept
(`ConstantResults`, bounded) and sent again for the same text and result formats, from the
event loop. An error is never kept: a failing constant statement runs every time.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import pyarrow as pa
from sqlglot import exp

# The nodes a constant statement is made of.
_NODES = (exp.Select, exp.Alias, exp.Identifier, exp.Literal, exp.Boolean, exp.Null, exp.Neg,
          exp.Paren, exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Mod, exp.DPipe, exp.Cast,
          exp.DataType)
_CAST_TYPES = frozenset({
    exp.DataType.Type.SMALLINT, exp.DataType.Type.INT, exp.DataType.Type.BIGINT,
    exp.DataType.Type.FLOAT, exp.DataType.Type.DOUBLE, exp.DataType.Type.DECIMAL,
    exp.DataType.Type.TEXT, exp.DataType.Type.VARCHAR, exp.DataType.Type.CHAR,
    exp.DataType.Type.BOOLEAN})
_MAX_BYTES = 4096  # a constant reply larger than this is not kept
_MAX_ENTRIES = 256


def is_constant(tree: exp.Expression | None) -> bool:
    """True when `tree`'s result depends on its text alone (see the module's comment)."""
    if type(tree) is not exp.Select or not tree.expressions:
        return False
    if any(value for key, value in tree.args.items() if key != "expressions"):
        return False  # FROM, WHERE, DISTINCT, LIMIT, INTO, ...
    for node in tree.walk():
        if type(node) not in _NODES:
            return False
        if isinstance(node, exp.Cast) and node.to.this not in _CAST_TYPES:
            return False
        if isinstance(node, exp.DataType) and node.this not in _CAST_TYPES:
            return False
    return True


@dataclass(frozen=True)
class ConstantReply:
    """A constant statement's answer (a row or so) and its encoded RowDescription, DataRows
    and command tag."""

    table: pa.Table
    row_description: bytes
    rows: tuple[bytes, ...]
    status: str


class ConstantResults:
    """Encoded replies of constant statements, by (statement text, result formats); shared
    by the server's connections. The oldest entry goes first when it is full."""

    def __init__(self, max_entries: int = _MAX_ENTRIES):
        self.max_entries = max_entries
        self._replies: dict[tuple[str, tuple[int, ...]], ConstantReply] = {}
        self._trees: dict[str, exp.Expression] = {}  # texts known constant, parsed
        self._lock = threading.Lock()

    def get(self, text: str, formats: tuple[int, ...]) -> ConstantReply | None:
        return self._replies.get((text, formats))

    def parsed(self, text: str) -> exp.Expression | None:
        """A copy of the statement `text`, when it is a constant statement kept here (so a
        Parse message needs no trip to the pool)."""
        tree = self._trees.get(text)
        return None if tree is None else tree.copy()

    def keep(self, text: str, formats: tuple[int, ...], reply: ConstantReply,
             tree: exp.Expression) -> None:
        """Keep `reply` to the constant statement `text` (parsed: `tree`, not to be changed)."""
        if len(reply.row_description) + sum(map(len, reply.rows)) > _MAX_BYTES:
            return
        with self._lock:
            if len(self._replies) >= self.max_entries:
                self._replies.pop(next(iter(self._replies)))
            if len(self._trees) >= self.max_entries:
                self._trees.pop(next(iter(self._trees)))
            self._replies[(text, formats)] = reply
            self._trees[text] = tree

"""Multi-statement transactions: BEGIN ... COMMIT / ROLLBACK.

Inside a transaction, INSERTs are checked and buffered in the session, not logged; COMMIT
writes them all as one WAL record, so they are acknowledged and recovered together or not at
all. Reads see, per table, the snapshot and pending rows as of the transaction's first read of
that table, plus the transaction's own inserts. After an error the transaction only accepts
ROLLBACK (or COMMIT, which then rolls back), as in PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pyarrow as pa

from omnilake import errors as E

if TYPE_CHECKING:
    from omnilake.engine.tables import TableRef


class InFailedTransaction(E.Error):
    sqlstate = "25P02"


@dataclass
class Transaction:
    writes: dict[tuple[str, str], tuple["TableRef", list[pa.Table]]] = field(default_factory=dict)
    pinned: dict[tuple[str, str], tuple["TableRef", list[pa.Table]]] = field(default_factory=dict)
    failed: bool = False
    savepoints: list[tuple[str, dict[tuple[str, str], int]]] = field(default_factory=list)

    def add(self, ref: "TableRef", rows: pa.Table) -> None:
        key = (ref.namespace, ref.name)
        if key not in self.writes:
            self.writes[key] = (ref, [])
        self.writes[key][1].append(rows)

    def own_rows(self, key: tuple[str, str]) -> list[pa.Table]:
        return list(self.writes[key][1]) if key in self.writes else []

    def pin(self, key: tuple[str, str], load) -> tuple["TableRef", list[pa.Table]]:
        """The table as this transaction first saw it (`load` gives (ref, pending rows))."""
        if key not in self.pinned:
            self.pinned[key] = load()
        return self.pinned[key]

    def savepoint(self, name: str) -> None:
        self.savepoints.append((name, {key: len(tables) for key, (_, tables) in self.writes.items()}))

    def _find(self, name: str) -> int:
        for i in range(len(self.savepoints) - 1, -1, -1):
            if self.savepoints[i][0] == name:
                return i
        raise E.Error(f'savepoint "{name}" does not exist', sqlstate="3B001")

    def release(self, name: str) -> None:
        del self.savepoints[self._find(name):]

    def rollback_to(self, name: str) -> None:
        """Forget the inserts made since the savepoint; the savepoint stays, as in PostgreSQL."""
        index = self._find(name)
        kept = self.savepoints[index][1]
        for key in list(self.writes):
            ref, tables = self.writes[key]
            if key not in kept:
                del self.writes[key]
            else:
                del tables[kept[key]:]
        del self.savepoints[index + 1:]
        self.failed = False

    def parts(self) -> list[tuple["TableRef", pa.Table]]:
        return [(ref, pa.concat_tables(tables)) for ref, tables in self.writes.values()]

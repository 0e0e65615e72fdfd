"""Multi-statement transactions: BEGIN ... COMMIT / ROLLBACK.

Inside a transaction, INSERTs are checked and buffered in the session, not logged; COMMIT
writes them all as one WAL record, so they are acknowledged and recovered together or not at
all. Reads see, per table, the snapshot and pending rows as of the transaction's first read of
that table, plus the transaction's own writes. After an error the transaction only accepts
ROLLBACK (or COMMIT, which then rolls back), as in PostgreSQL.

UPDATE, DELETE and TRUNCATE inside a transaction replace the table's rows as the transaction
sees them with a new version held here (`replaced`); later statements read and change that
version. COMMIT logs it in the same WAL record as the inserts and applies it to Iceberg as one
overwrite, provided nobody changed the table since the transaction first read it (otherwise
SQLSTATE 40001, as PostgreSQL's repeatable read would say).
"""

from __future__ import annotations

import copy
import dataclasses
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
    replaced: dict[tuple[str, str], pa.Table] = field(default_factory=dict)
    failed: bool = False
    savepoints: list[tuple[str, dict, dict]] = field(default_factory=list)

    @property
    def has_writes(self) -> bool:
        return bool(self.writes or self.replaced)

    def add(self, ref: "TableRef", rows: pa.Table) -> None:
        key = (ref.namespace, ref.name)
        if key not in self.writes:
            self.writes[key] = (ref, [])
        self.writes[key][1].append(rows)

    def own_rows(self, key: tuple[str, str]) -> list[pa.Table]:
        return list(self.writes[key][1]) if key in self.writes else []

    def pin(self, key: tuple[str, str], load) -> tuple["TableRef", list[pa.Table]]:
        """The table as this transaction first saw it (`load` gives (ref, pending rows)).
        A commit updates the engine's shared table object in place, so the pin keeps its own."""
        if key not in self.pinned:
            ref, pending = load()
            self.pinned[key] = (dataclasses.replace(ref, table=copy.copy(ref.table)), pending)
        return self.pinned[key]

    def visible(self, key: tuple[str, str], snapshot_id: int | None,
                pending: list[pa.Table]) -> tuple[int | None, list[pa.Table]]:
        """What a read of a pinned table sees: (snapshot to scan, in-memory rows)."""
        if key in self.replaced:
            return None, [self.replaced[key], *self.own_rows(key)]
        return snapshot_id, pending + self.own_rows(key)

    def replace(self, ref: "TableRef", rows: pa.Table) -> None:
        """The table's rows from now on in this transaction (storage form); its own inserts
        so far are part of them."""
        key = (ref.namespace, ref.name)
        self.replaced[key] = rows
        self.writes.pop(key, None)

    def savepoint(self, name: str) -> None:
        self.savepoints.append((name, {key: (ref, list(tables))
                                       for key, (ref, tables) in self.writes.items()},
                                dict(self.replaced)))

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
        _, writes, replaced = self.savepoints[index]
        self.writes = {key: (ref, list(tables)) for key, (ref, tables) in writes.items()}
        self.replaced = dict(replaced)
        del self.savepoints[index + 1:]
        self.failed = False

    def parts(self) -> list[tuple["TableRef", pa.Table]]:
        """Inserts into tables the transaction did not replace: appended at COMMIT."""
        return [(ref, pa.concat_tables(tables)) for key, (ref, tables) in self.writes.items()
                if key not in self.replaced]

    def replacements(self) -> list[tuple["TableRef", list[pa.Table], pa.Table]]:
        """(table as first read, its pending rows then, its rows now) per replaced table."""
        out = []
        for key, rows in self.replaced.items():
            ref, pending = self.pinned[key]
            out.append((ref, pending, pa.concat_tables([rows, *self.own_rows(key)],
                                                       promote_options="permissive")))
        return out

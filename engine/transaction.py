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

    def parts(self) -> list[tuple["TableRef", pa.Table]]:
        return [(ref, pa.concat_tables(tables)) for ref, tables in self.writes.values()]

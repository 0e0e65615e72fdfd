"""The vector-index registry of a table, kept in its Iceberg properties.

The table property `omnilake.indexes` holds, per index name, what the index is (column field
id, method, metric, build options, dimension) and its segments: data file path -> location
of the index object built from exactly that file's rows ("" when the file holds no vector).
Data files are immutable, so a segment stays valid as long as its file is in the snapshot
being read; a file rewritten by DELETE, UPDATE or compaction is a new path with no segment
until one is built. Changes commit through the catalog (optimistic, retried), so several
processes may maintain one table.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from pyiceberg.exceptions import CommitFailedException

from omnilake.errors import OperationalError, SerializationFailure

INDEXES_PROPERTY = "omnilake.indexes"
COMMIT_ATTEMPTS = 8


@dataclass
class VectorIndexDef:
    name: str
    field_id: int
    method: str               # hnsw | ivfflat
    metric: str               # l2 | cosine | ip | l1
    opclass: str              # the operator class it was created with, for EXPLAIN and errors
    options: dict[str, int]
    dim: int
    id: str = field(default_factory=lambda: uuid.uuid4().hex)  # a DROP + CREATE is a new id
    segments: dict[str, str] = field(default_factory=dict)


def read_indexes(properties: dict[str, str]) -> dict[str, VectorIndexDef]:
    raw = properties.get(INDEXES_PROPERTY)
    if not raw:
        return {}
    return {name: VectorIndexDef(**value) for name, value in json.loads(raw).items()}


def encode_indexes(indexes: dict[str, VectorIndexDef]) -> str:
    return json.dumps({name: asdict(d) for name, d in sorted(indexes.items())})


def update_indexes(catalog, identifier: tuple[str, str],
                   change: Callable[[dict[str, VectorIndexDef]], dict[str, VectorIndexDef] | None]):
    """Apply `change` to the table's current registry and commit it; retried on conflicts
    with the latest table each time. `change` returns None to leave the table as it is.
    Returns the table as committed (or as read, when nothing changed)."""
    for attempt in range(COMMIT_ATTEMPTS):
        table = catalog.load_table(identifier)
        current = read_indexes(table.properties)
        new = change(current)
        if new is None:
            return table
        try:
            with table.transaction() as tx:
                if new:
                    tx.set_properties({INDEXES_PROPERTY: encode_indexes(new)})
                else:
                    tx.remove_properties(INDEXES_PROPERTY)
            return catalog.load_table(identifier)
        except CommitFailedException as exc:
            if attempt == COMMIT_ATTEMPTS - 1:
                raise SerializationFailure(
                    f"could not update the indexes of {'.'.join(identifier)}: concurrent "
                    "commits kept winning", hint="run the statement again") from exc
            time.sleep(random.uniform(0.005, 0.01 * 2 ** attempt))
        except Exception as exc:
            raise OperationalError(f"could not update the indexes of {'.'.join(identifier)}: {exc}") from exc
    raise AssertionError("unreachable")

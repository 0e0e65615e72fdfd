"""OmniLake's SQL dialects on top of sqlglot.

`Postgres` reads what clients send (PostgreSQL syntax; pgvector operators are added here as the
vector work lands), `DataFusionSQL` writes what DataFusion's parser (in PostgreSQL mode)
accepts. sqlglot has no DataFusion dialect of its own.
"""

from __future__ import annotations

from sqlglot import exp
from sqlglot.dialects.mysql import MySQL as _MySQL
from sqlglot.dialects.postgres import Postgres as _Postgres


class Postgres(_Postgres):
    """The default input dialect."""


class MySQL(_MySQL):
    """Accepted input dialect (`dialect="mysql"`)."""


class DataFusionSQL(_Postgres):
    """Output dialect for DataFusion 55 with `sql_parser.dialect = postgresql`."""

    class Generator(_Postgres.Generator):
        TYPE_MAPPING = {
            **_Postgres.Generator.TYPE_MAPPING,
            exp.DataType.Type.TIMESTAMPTZ: "TIMESTAMPTZ",
            exp.DataType.Type.JSON: "TEXT",
            exp.DataType.Type.JSONB: "TEXT",
            exp.DataType.Type.UUID: "TEXT",
        }


INPUT_DIALECTS = {"postgres": Postgres, "mysql": MySQL}


def to_datafusion(tree: exp.Expression) -> str:
    return DataFusionSQL().generate(tree)

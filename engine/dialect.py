"""OmniLake's SQL dialects on top of sqlglot.

`Postgres` reads what clients send (PostgreSQL syntax; pgvector operators are added here as the
vector work lands), `DataFusionSQL` writes what DataFusion's parser (in PostgreSQL mode)
accepts. sqlglot has no DataFusion dialect of its own.
"""

from __future__ import annotations

from sqlglot import exp
from sqlglot.dialects.mysql import MySQL as _MySQL
from sqlglot.dialects.postgres import Postgres as _Postgres
from sqlglot.tokens import TokenType


class VectorDistance(exp.Expression, exp.Binary):
    """A pgvector distance operator; DataFusion gets the matching function."""

    function = ""


class L2Distance(VectorDistance):
    """`a <-> b`: Euclidean distance."""

    function = "array_distance"


class CosineDistance(VectorDistance):
    """`a <=> b`: cosine distance (1 - cosine similarity)."""

    function = "cosine_distance"


class Postgres(_Postgres):
    """The default input dialect, with pgvector's `<->` and `<=>`. (Stock sqlglot reads `<=>`
    as MySQL's null-safe equality and `<->` as a geometric distance; `IS NOT DISTINCT FROM`
    is parsed elsewhere and is unaffected.)"""

    class Parser(_Postgres.Parser):
        EQUALITY = {**_Postgres.Parser.EQUALITY, TokenType.NULLSAFE_EQ: CosineDistance}
        FACTOR = {**_Postgres.Parser.FACTOR, TokenType.LR_ARROW: L2Distance}

        def _parse_property(self):
            # `WITH (partition = 'day')`: a keyword followed by `=` is an option name.
            if (self._curr and self._next and self._next.token_type == TokenType.EQ
                    and self._curr.text.upper() in self.PROPERTY_PARSERS):
                return self._parse_key_value_property()
            return super()._parse_property()

    class Generator(_Postgres.Generator):
        TRANSFORMS = {
            **_Postgres.Generator.TRANSFORMS,
            L2Distance: lambda self, e: self.binary(e, "<->"),
            CosineDistance: lambda self, e: self.binary(e, "<=>"),
        }


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
        TRANSFORMS = {
            **_Postgres.Generator.TRANSFORMS,
            L2Distance: lambda self, e: self.func(e.function, e.this, e.expression),
            CosineDistance: lambda self, e: self.func(e.function, e.this, e.expression),
        }


INPUT_DIALECTS = {"postgres": Postgres, "mysql": MySQL}


def to_datafusion(tree: exp.Expression) -> str:
    return DataFusionSQL().generate(tree)

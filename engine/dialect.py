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


class NegativeInnerProduct(VectorDistance):
    """`a <#> b`: the negative inner product (smaller is nearer, as pgvector)."""

    function = "inner_product"


class L1Distance(VectorDistance):
    """`a <+> b`: taxicab distance (an OmniLake UDF, see engine/vector_functions.py)."""

    function = "l1_distance"


# sqlglot has no token types for `<#>` and `<+>`; these two are unused by the Postgres
# dialect (they are Snowflake's `::$` and `::%`), so they can stand for the new operators.
_NEG_IP = TokenType.DCOLONDOLLAR
_L1 = TokenType.DCOLONPERCENT


class Postgres(_Postgres):
    """The default input dialect, with pgvector's `<->`, `<=>`, `<#>` and `<+>`. (Stock
    sqlglot reads `<=>` as MySQL's null-safe equality, `<->` as a geometric distance and
    fails on `<#>`; `IS NOT DISTINCT FROM` is parsed elsewhere and is unaffected.)"""

    class Tokenizer(_Postgres.Tokenizer):
        KEYWORDS = {**_Postgres.Tokenizer.KEYWORDS, "<#>": _NEG_IP, "<+>": _L1}

    class Parser(_Postgres.Parser):
        EQUALITY = {**_Postgres.Parser.EQUALITY, TokenType.NULLSAFE_EQ: CosineDistance}
        FACTOR = {**_Postgres.Parser.FACTOR, TokenType.LR_ARROW: L2Distance,
                  _NEG_IP: NegativeInnerProduct, _L1: L1Distance}

    class Generator(_Postgres.Generator):
        TRANSFORMS = {
            **_Postgres.Generator.TRANSFORMS,
            L2Distance: lambda self, e: self.binary(e, "<->"),
            CosineDistance: lambda self, e: self.binary(e, "<=>"),
            NegativeInnerProduct: lambda self, e: self.binary(e, "<#>"),
            L1Distance: lambda self, e: self.binary(e, "<+>"),
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
            NegativeInnerProduct: lambda self, e: f"(-{self.func(e.function, e.this, e.expression)})",
            L1Distance: lambda self, e: self.func(e.function, e.this, e.expression),
        }


INPUT_DIALECTS = {"postgres": Postgres, "mysql": MySQL}


def to_datafusion(tree: exp.Expression) -> str:
    return DataFusionSQL().generate(tree)

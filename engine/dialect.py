"""OmniLake's SQL dialects on top of sqlglot.

`Postgres` reads what clients send (PostgreSQL syntax; pgvector operators are added here as the
vector work lands), `DataFusionSQL` writes what DataFusion's parser (in PostgreSQL mode)
accepts. sqlglot has no DataFusion dialect of its own.
"""

from __future__ import annotations

import re

import pyarrow as pa

from sqlglot import exp
from sqlglot.dialects.mysql import MySQL as _MySQL
from sqlglot.dialects.postgres import Postgres as _Postgres
from sqlglot.tokens import TokenType


class NumberArray(exp.Array):
    """An array of plain numbers (a vector literal or parameter, often hundreds of numbers)
    kept as Python values: one node for sqlglot to walk, copy and compare instead of one per
    element. `expressions` builds the element literals when something asks for them."""

    arg_types = {"values": True}

    @property
    def expressions(self) -> list[exp.Expression]:
        return [exp.Literal.number(v if isinstance(v, int) else repr(v))
                for v in self.args["values"]]


def _number_array_sql(self, e: NumberArray) -> str:
    """PostgreSQL's `ARRAY[...]` (DataFusion reads it too), written without element nodes."""
    return "ARRAY[" + ", ".join(str(v) if isinstance(v, int) else repr(v)
                                for v in e.args["values"]) + "]"


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
        # BLOB is OmniLake's large-object type, not PostgreSQL's name for bytea.
        KEYWORDS = {**_Postgres.Tokenizer.KEYWORDS, "<#>": _NEG_IP, "<+>": _L1,
                    "BLOB": TokenType.BLOB}

    class Parser(_Postgres.Parser):
        EQUALITY = {**_Postgres.Parser.EQUALITY, TokenType.NULLSAFE_EQ: CosineDistance}
        FACTOR = {**_Postgres.Parser.FACTOR, TokenType.LR_ARROW: L2Distance,
                  _NEG_IP: NegativeInnerProduct, _L1: L1Distance}

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
            NegativeInnerProduct: lambda self, e: self.binary(e, "<#>"),
            L1Distance: lambda self, e: self.binary(e, "<+>"),
            NumberArray: _number_array_sql,
        }


class MySQL(_MySQL):
    """Accepted input dialect (`dialect="mysql"`)."""

    class Generator(_MySQL.Generator):
        TRANSFORMS = {**_MySQL.Generator.TRANSFORMS,
                      NumberArray: lambda self, e: self.sql(exp.Array(expressions=e.expressions))}


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
            # DataFusion looks table functions up by their lower-case name
            exp.ExplodingGenerateSeries: lambda self, e: "generate_series(" + ", ".join(
                self.sql(a) for a in (e.args.get("start"), e.args.get("end"), e.args.get("step"))
                if a is not None) + ")",
            NegativeInnerProduct: lambda self, e: f"(-{self.func(e.function, e.this, e.expression)})",
            L1Distance: lambda self, e: self.func(e.function, e.this, e.expression),
            NumberArray: lambda self, e: _datafusion_number_array(self, e),
            exp.IsNan: lambda self, e: self.func("isnan", e.this),  # (sqlglot writes is_nan)
        }


INPUT_DIALECTS = {"postgres": Postgres, "mysql": MySQL}


def to_datafusion(tree: exp.Expression) -> str:
    return DataFusionSQL().generate(tree)


PARAMETER_MIN_NUMBERS = 16


def to_datafusion_with_values(tree: exp.Expression) -> tuple[str, dict[str, pa.Scalar]]:
    """DataFusion SQL in which number arrays of PARAMETER_MIN_NUMBERS or more elements are
    placeholders `$__ol_vN`, with their values as Arrow list scalars (float64, or int64 where
    every element is an integer: the types DataFusion gives the same literals).

    A statement's root is generated in place (sqlglot copies the tree first by default, which
    cost more than generating): the generator's transforms may change it, so callers must not
    use the tree after. A subtree is still copied, since sqlglot writes a node with a parent
    differently from a root in places."""
    generator = DataFusionSQL().generator()
    generator.array_values = {}
    return generator.generate(tree, copy=tree.parent is not None), generator.array_values


def _datafusion_number_array(self, e: NumberArray) -> str:
    values = e.args["values"]
    collected = getattr(self, "array_values", None)
    if collected is None or len(values) < PARAMETER_MIN_NUMBERS:
        return _number_array_sql(self, e)
    name = f"__ol_v{len(collected)}"
    kind = pa.int64() if all(isinstance(v, int) for v in values) else pa.float64()
    collected[name] = pa.scalar(values, pa.list_(kind))
    return f"${name}"


_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")
_PARAMETER = re.compile(r"\$\d+")


def space_parameters(sql: str) -> str:
    """`$1,$2` with a space after each positional parameter. sqlglot's tokenizer reads `$1,$`
    as the start of a dollar-quoted string (its tag check allows `1,`); PostgreSQL tags cannot
    start with a digit. Text inside quotes, dollar quotes and comments is left alone."""
    if "$" not in sql:
        return sql
    out, i, n = [], 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch in "'\"":
            end = i + 1
            while end < n:
                if sql[end] == ch:
                    if end + 1 < n and sql[end + 1] == ch:
                        end += 2
                        continue
                    break
                end += 1
            out.append(sql[i:end + 1])
            i = end + 1
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            end = n if end < 0 else end
            out.append(sql[i:end])
            i = end
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            end = n if end < 0 else end + 2
            out.append(sql[i:end])
            i = end
        elif ch == "$":
            param = _PARAMETER.match(sql, i)
            if param and not (i > 0 and (sql[i - 1].isalnum() or sql[i - 1] == "_")):
                out.append(param.group() + " ")
                i = param.end()
                continue
            tag = _DOLLAR_TAG.match(sql, i)
            if tag:
                end = sql.find(tag.group(), tag.end())
                end = n if end < 0 else end + len(tag.group())
                out.append(sql[i:end])
                i = end
                continue
            out.append(ch)
            i += 1
        else:
            out.append(ch)
            i += 1
    return "".join(out)

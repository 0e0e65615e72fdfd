"""Rewrites of parsed statements before DataFusion sees them: pure functions over sqlglot
trees, applied in order by `apply`. Each takes a tree and returns the rewritten tree."""

from __future__ import annotations

import math

from sqlglot import exp

from omnilake import errors as E
from omnilake.engine.walk import Kinds, nodes


def fold_identifiers(tree: exp.Expression) -> exp.Expression:
    """Unquoted identifiers fold to lower case, as in PostgreSQL; afterwards all are quoted so
    DataFusion keeps them exactly."""
    for node in nodes(tree):
        if isinstance(node, exp.Identifier) and not node.quoted:
            node.set("this", node.this.lower())
            node.set("quoted", True)
    return tree


def bytea_hex_literals(tree: exp.Expression) -> exp.Expression:
    """`'\\x0102'::bytea` is PostgreSQL's hex input format: make it a binary literal."""
    for cast in [n for n in nodes(tree) if isinstance(n, exp.Cast)]:
        value = cast.this
        if (cast.to.this in (exp.DataType.Type.VARBINARY, exp.DataType.Type.BINARY)
                and isinstance(value, exp.Literal) and value.is_string
                and value.this.startswith("\\x")):
            try:
                bytes.fromhex(value.this[2:])
            except ValueError:
                continue  # left to DataFusion, which reports the bad value
            cast.replace(exp.HexString(this=value.this[2:]))
    return tree


def _literal_array(node: exp.Expression) -> bool:
    """Arrays of plain numbers (vector literals and parameters, often hundreds of elements)
    hold nothing the vector rules look for: walks skip their elements."""
    from omnilake.engine.dialect import NumberArray
    return isinstance(node, NumberArray) or (isinstance(node, exp.Array) and all(
        isinstance(e, (exp.Literal, exp.Neg)) for e in node.expressions))


# pgvector's distance functions, as the operator nodes the planner and generator know.
_DISTANCE_FUNCTIONS = {"l2_distance": "L2Distance", "cosine_distance": "CosineDistance",
                       "l1_distance": "L1Distance",
                       "vector_negative_inner_product": "NegativeInnerProduct"}


def vector_functions(tree: exp.Expression) -> exp.Expression:
    """`l2_distance(a, b)` and friends become the operator nodes (`a <-> b`), so both
    spellings plan the same way (index search included). sqlglot reads `cosine_distance`
    as its own node; it becomes ours too."""
    from omnilake.engine import dialect

    for node in [n for n in nodes(tree, prune=_literal_array) if isinstance(n, exp.Func)]:
        if isinstance(node, dialect.VectorDistance):
            continue
        if isinstance(node, exp.Anonymous):
            name, args = node.name.lower(), node.expressions
        elif type(node).__name__ == "CosineDistance":
            name, args = "cosine_distance", [node.this, node.expression]
        else:
            continue
        kind = _DISTANCE_FUNCTIONS.get(name)
        if kind is None or len(args) != 2:
            continue
        node.replace(getattr(dialect, kind)(this=args[0].copy(), expression=args[1].copy()))
    return tree


# Functions whose text arguments are vectors, as pgvector's signatures say.
VECTOR_FUNCTIONS = ("inner_product", "cosine_similarity", "vector_dims", "l2_norm", "normalize_l2",
                    "vector_add", "vector_sub", "vector_mul")


def vector_literals(tree: exp.Expression) -> exp.Expression:
    """pgvector's text form as an array: `'[1,2]'::vector`, and a bare `'[1,2]'` beside a
    distance operator or as an argument of a vector function (PostgreSQL types such a
    literal from the operator or function)."""
    from omnilake.engine.dialect import VectorDistance

    found = [n for n in nodes(tree, prune=_literal_array)
             if isinstance(n, (exp.Cast, exp.Anonymous, VectorDistance))]
    for cast in found:
        if isinstance(cast, exp.Cast) and cast.to.this == exp.DataType.Type.VECTOR \
                and isinstance(cast.this, exp.Literal) and cast.this.is_string:
            array = vector_array(cast.this)
            if array is not None:
                cast.replace(array)
    vector_calls = [f for f in found if isinstance(f, exp.Anonymous) and f.name.lower() in VECTOR_FUNCTIONS]
    for op in [n for n in found if isinstance(n, VectorDistance)] + vector_calls:
        for side in op.expressions if isinstance(op, exp.Anonymous) else (op.this, op.expression):
            if isinstance(side, exp.Literal) and side.is_string:
                array = vector_array(side)
                if array is not None:
                    side.replace(array)
            elif type(side) is exp.Array and any(_non_finite(e) for e in side.expressions):
                raise _non_finite_error()  # a parameter list with NaN (params.literal)
    return tree


def _non_finite(node: exp.Expression) -> bool:
    """A NaN or infinite element, as params.literal writes one: 'NaN'::DOUBLE."""
    return isinstance(node, exp.Cast) and isinstance(node.this, exp.Literal) \
        and node.this.is_string and node.this.this in ("NaN", "Infinity", "-Infinity")


def _non_finite_error() -> E.DataError:
    # as pgvector: a NaN or infinite element makes every distance to the vector meaningless
    return E.DataError("NaN and infinite values are not allowed in a vector",
                       hint="replace them before searching")


def vector_text_values(text: str) -> list[float] | None:
    """The numbers of pgvector's text form `[1, 2]`; None when the text is not a vector."""
    text = text.strip()
    if not (text.startswith("[") and text.endswith("]")):
        return None
    try:
        return [float(v) for v in text[1:-1].split(",")] if text[1:-1].strip() else []
    except ValueError:
        return None


def vector_array(literal: exp.Literal) -> exp.Expression | None:
    """`'[1, 2]'` as an array literal; None when the text is not a vector."""
    values = vector_text_values(literal.this)
    if values is None:
        return None
    from omnilake.engine.dialect import NumberArray
    if not all(math.isfinite(v) for v in values):
        raise _non_finite_error()
    if not values:
        return exp.Array(expressions=[])
    return NumberArray(values=tuple(values))


def split_intersecting_in_lists(tree: exp.Expression) -> exp.Expression:
    """DataFusion 55 folds `x IN (a) AND x IN (b)` (and IN with NOT IN) into its list
    intersection, ignoring NULL: `NOT (x IN (0) AND x IN (1))` came out TRUE where x is NULL.
    Where one conjunction tests a column with more than one IN list, those lists become
    `x = a OR x = b`, which is evaluated as SQL says."""
    def conjuncts(node):
        node = node.unnest()
        if isinstance(node, exp.And):
            return conjuncts(node.left) + conjuncts(node.right)
        return [node]

    for root in [n for n in nodes(tree) if isinstance(n, exp.And)]:
        if isinstance(root.parent, (exp.And, exp.Paren)) and root.parent.find_ancestor(exp.And):
            continue  # handled from the top of its chain
        lists: dict[str, list[exp.In]] = {}
        for part in conjuncts(root):
            target = part.this.unnest() if isinstance(part, exp.Not) else part
            if isinstance(target, exp.In) and target.expressions and not target.args.get("query"):
                lists.setdefault(target.this.sql(), []).append(target)
        for group in lists.values():
            if len(group) < 2:
                continue
            for node in group:
                equalities = [exp.EQ(this=node.this.copy(), expression=v.copy()) for v in node.expressions]
                node.replace(exp.Paren(this=exp.or_(*equalities)))
    return tree


def time_series_functions(tree: exp.Expression) -> exp.Expression:
    """time_bucket, first/last, delta/increase/rate (see engine/timeseries.py)."""
    from omnilake.engine.timeseries import rewrite
    return rewrite(tree)


def fetch_as_limit(tree: exp.Expression) -> exp.Expression:
    """`FETCH FIRST n ROWS ONLY` (the SQL standard's LIMIT) as LIMIT n, which DataFusion
    reads; `FETCH FIRST ROW ONLY` is one row."""
    from omnilake import errors as E
    for node in [n for n in nodes(tree) if isinstance(n, exp.Fetch)]:
        options = node.args.get("limit_options")
        if options is not None and (options.args.get("percent") or options.args.get("with_ties")):
            raise E.NotSupportedError("FETCH ... PERCENT / WITH TIES is not supported",
                                      hint="use FETCH FIRST n ROWS ONLY or LIMIT n")
        count = node.args.get("count") or exp.Literal.number(1)
        node.replace(exp.Limit(expression=count))
    return tree


def set_returning_projections(tree: exp.Expression) -> exp.Expression:
    """`SELECT generate_series(1, 3)` gives a row per value, as in PostgreSQL (DataFusion's
    generate_series in a projection is one list): the call is unnested. Named
    `generate_series` unless aliased, as PostgreSQL names it."""
    for select in [n for n in nodes(tree) if isinstance(n, exp.Select)]:
        for i, projection in enumerate(select.expressions):
            value = projection.this if isinstance(projection, exp.Alias) else projection
            if not isinstance(value, exp.ExplodingGenerateSeries):
                continue
            unnested = exp.Anonymous(this="unnest", expressions=[value.copy()])
            if isinstance(projection, exp.Alias):
                projection.set("this", unnested)
            else:
                select.expressions[i].replace(exp.alias_(unnested, "generate_series"))
    return tree


def _vector_functions_needed(kinds: Kinds) -> bool:
    return kinds.has(exp.CosineDistance) or kinds.calls(*_DISTANCE_FUNCTIONS)


def _vector_literals_needed(kinds: Kinds) -> bool:
    from omnilake.engine.dialect import VectorDistance
    # vector_functions makes the VectorDistance nodes this rule looks at
    return kinds.has(exp.Cast, VectorDistance) or kinds.calls(*VECTOR_FUNCTIONS) \
        or _vector_functions_needed(kinds)


def _time_series_needed(kinds: Kinds) -> bool:
    from omnilake.engine.timeseries import COUNTER_FUNCTIONS
    return kinds.has(exp.First, exp.Last) or kinds.calls("time_bucket", *COUNTER_FUNCTIONS)


# Each rule with a test of what the statement holds (its Kinds, seen in one walk before the
# first rule): a rule is skipped when the statement has nothing it could rewrite, and most
# statements need one or two of the eight. A rule that makes nodes a later rule looks for says
# so in that rule's test.
RULES = (
    (fold_identifiers, lambda kinds: kinds.has(exp.Identifier)),
    (bytea_hex_literals, lambda kinds: kinds.has(exp.Cast)),
    (vector_functions, _vector_functions_needed),
    (vector_literals, _vector_literals_needed),
    (split_intersecting_in_lists, lambda kinds: kinds.has(exp.And) and kinds.has(exp.In)),
    (time_series_functions, _time_series_needed),
    (fetch_as_limit, lambda kinds: kinds.has(exp.Fetch)),
    (set_returning_projections, lambda kinds: kinds.has(exp.ExplodingGenerateSeries)),
)


def apply(tree: exp.Expression, kinds: Kinds | None = None) -> exp.Expression:
    """The rules, in order, on `tree`; `kinds` are the tree's when the caller has them."""
    kinds = kinds or Kinds(tree)
    for rule, needed in RULES:
        if needed(kinds):
            tree = rule(tree)
    return tree

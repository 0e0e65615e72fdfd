"""Which queries have a result small enough to materialise whatever the data.

The wire server streams a query's rows (DataFusion batches pulled as the client reads them)
so that a large result is never held whole. Streaming has a fixed cost, though: a separate
trip into DataFusion's runtime per batch and Python work per batch, ~0.15 ms a statement,
which is a third of a `SELECT 1`. A query whose row count is bounded by its text alone is
run to completion instead (`Session.run`), which holds at most `limit` rows:

- a SELECT without FROM (one row, or none with a WHERE) and without set-returning functions;
- a top-level `LIMIT n` / `FETCH FIRST n ROWS` with a literal n;
- an aggregate without GROUP BY (one row), with no window function in its projection;
- VALUES lists, and UNION / INTERSECT / EXCEPT of bounded queries.

Anything else streams. A wrong "bounded" here would cost memory, never a wrong answer: both
paths run the same statement through the same handlers.
"""

from __future__ import annotations

from sqlglot import exp

# Set-returning functions: in a projection they turn one row into many.
_GENERATORS = (exp.Explode, exp.ExplodeOuter, exp.ExplodingGenerateSeries, exp.GenerateSeries,
               exp.Inline, exp.Posexplode, exp.PosexplodeOuter, exp.Unnest, exp.UDTF)
_GENERATOR_NAMES = frozenset({
    "unnest", "generate_series", "generate_subscripts", "range", "regexp_matches",
    "regexp_split_to_table", "string_to_table", "json_each", "json_each_text", "jsonb_each",
    "jsonb_each_text", "json_array_elements", "json_array_elements_text",
    "jsonb_array_elements", "jsonb_array_elements_text", "json_object_keys", "jsonb_object_keys",
    "json_populate_recordset", "jsonb_populate_recordset", "json_to_recordset",
    "jsonb_to_recordset", "jsonb_path_query", "pg_get_keywords", "pg_options_to_table",
    "_pg_expandarray", "pg_listening_channels", "pg_tablespace_databases", "ts_stat",
    "pg_ls_dir", "pg_timezone_names", "pg_timezone_abbrevs", "pg_event_trigger_ddl_commands"})


def bounded(tree: exp.Expression | None, limit: int) -> bool:
    """True when `tree` is a query whose result has at most `limit` rows, from its text."""
    rows = max_rows(tree)
    return rows is not None and rows <= limit


def max_rows(tree: exp.Expression | None) -> int | None:
    """An upper bound on the rows of the query `tree`, or None when the data decides."""
    while isinstance(tree, (exp.Subquery, exp.Paren)):
        if tree.args.get("limit") is not None or tree.args.get("offset") is not None:
            literal = _literal_limit(tree)
            if literal is not None:
                return literal
        tree = tree.this
    if isinstance(tree, exp.Values):
        return len(tree.expressions)
    if isinstance(tree, exp.SetOperation):
        literal = _literal_limit(tree)
        if literal is not None:
            return literal
        left, right = max_rows(tree.this), max_rows(tree.expression)
        if isinstance(tree, exp.Except):
            return left
        if isinstance(tree, exp.Intersect):
            return left if right is None else right if left is None else min(left, right)
        return None if left is None or right is None else left + right
    if not isinstance(tree, exp.Select):
        return None
    literal = _literal_limit(tree)
    if literal is not None:
        return literal  # LIMIT applies after set-returning functions
    if tree.args.get("from_") is None and not tree.args.get("joins"):
        return None if _generates_rows(tree) else 1
    if _aggregates_to_one_row(tree):
        return 1
    return None


def _literal_limit(tree: exp.Expression) -> int | None:
    clause = tree.args.get("limit")
    if isinstance(clause, exp.Limit):
        value = clause.expression
    elif isinstance(clause, exp.Fetch):
        options = clause.args.get("limit_options")
        if options is not None and (options.args.get("percent") or options.args.get("with_ties")):
            return None
        value = clause.args.get("count")
    else:
        return None
    if isinstance(value, exp.Literal) and not value.is_string:
        try:
            count = int(value.this)
        except ValueError:
            return None
        return count if count >= 0 else None
    return None


def _generates_rows(tree: exp.Expression) -> bool:
    for node in tree.walk():
        if isinstance(node, _GENERATORS):
            return True
        if isinstance(node, exp.Anonymous) and node.name.lower() in _GENERATOR_NAMES:
            return True
        if isinstance(node, exp.Func) and not isinstance(node, exp.Anonymous) \
                and node.sql_name().lower() in _GENERATOR_NAMES:
            return True
    return False


def _aggregates_to_one_row(select: exp.Select) -> bool:
    """An aggregate without GROUP BY: exactly one row (none with a HAVING that fails)."""
    if select.args.get("group") is not None or select.args.get("distinct") is not None:
        return False
    found = False
    for projection in select.expressions:
        for node in projection.walk():
            if isinstance(node, exp.Window) or isinstance(node, _GENERATORS) or (
                    isinstance(node, exp.Anonymous) and node.name.lower() in _GENERATOR_NAMES):
                return False
            if isinstance(node, exp.AggFunc) and node.find_ancestor(exp.Select) is select:
                found = True
    return found

"""`time_bucket_gapfill(interval, ts [, start, finish])` with `locf()` and `interpolate()`,
as in TimescaleDB.

The query runs with `time_bucket` in place of `time_bucket_gapfill` and without the
`locf`/`interpolate` wrappers; then every group (the non-aggregate columns) gets a row for
each bucket from `start` to `finish` (exclusive) that it lacks. In those rows a plain
aggregate is NULL, `locf(agg)` carries the group's last earlier value forward, and
`interpolate(agg)` is linear in time between the group's neighbouring values (NULL before the
first and after the last). `start`/`finish` default to the bounds of the WHERE clause on the
time column (`ts >= '...' AND ts < '...'`); without either it is an error, as in
TimescaleDB. ORDER BY and LIMIT apply to the filled result (default order: groups, then time).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute
from sqlglot import exp

from omnilake import errors as E
from omnilake.engine.timeseries import bucket_start, constant_interval, next_bucket

if TYPE_CHECKING:
    from omnilake.engine.engine import Result, Session

MAX_BUCKETS = 1_000_000
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
# Aggregates that are not sqlglot AggFuncs, before and after engine/timeseries.py's rewrite.
_AGGREGATES = ("delta", "increase", "rate", "__ol_delta", "__ol_increase", "__ol_rate",
               "first_value", "last_value")


def _is_aggregate(node: exp.Expression) -> bool:
    if node.find(exp.AggFunc) is not None:
        return True
    return any(a.name.lower() in _AGGREGATES for a in node.find_all(exp.Anonymous))


def _micros(text: str, what: str) -> int:
    try:
        value = dt.datetime.fromisoformat(text.strip().replace(" ", "T", 1))
    except ValueError:
        raise E.DataError(f"time_bucket_gapfill: invalid {what} {text!r}", sqlstate="22007") \
            from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return (value - EPOCH) // dt.timedelta(microseconds=1)


def _literal_text(node: exp.Expression) -> str | None:
    node = node.unnest()
    if isinstance(node, exp.Cast):
        node = node.this
    if isinstance(node, exp.Literal) and node.is_string:
        return node.this
    return None


def _bounds_from_where(where: exp.Expression | None, column: exp.Column):
    """(start, finish) in microseconds from `column >= x`, `column < y`, BETWEEN."""
    start = finish = None
    if where is None:
        return start, finish
    name = column.name

    def conjuncts(node):
        node = node.unnest()
        if isinstance(node, exp.And):
            return conjuncts(node.left) + conjuncts(node.right)
        return [node]

    for part in conjuncts(where.this):
        if isinstance(part, exp.Between) and isinstance(part.this, exp.Column) \
                and part.this.name == name:
            low, high = _literal_text(part.args["low"]), _literal_text(part.args["high"])
            if low:
                start = _micros(low, "start")
            if high:
                finish = _micros(high, "finish") + 1
            continue
        if not isinstance(part, (exp.GT, exp.GTE, exp.LT, exp.LTE)):
            continue
        left, right = part.this.unnest(), part.expression.unnest()
        kind = type(part)
        if isinstance(right, exp.Column) and right.name == name:  # 'x' < ts
            left, right = right, left
            kind = {exp.GT: exp.LT, exp.GTE: exp.LTE, exp.LT: exp.GT, exp.LTE: exp.GTE}[kind]
        if not (isinstance(left, exp.Column) and left.name == name):
            continue
        text = _literal_text(right)
        if text is None:
            continue
        value = _micros(text, "bound")
        if kind in (exp.GT, exp.GTE):
            start = value + (1 if kind is exp.GT else 0)
        else:
            finish = value + (1 if kind is exp.LTE else 0)
    return start, finish


def gapfill_query(session: "Session", tree: exp.Select) -> "Result":
    from omnilake.engine.engine import Result
    from omnilake.engine.query import _postgres_name, bind, normalise_output
    tree = tree.copy()
    calls = [c for c in tree.find_all(exp.Anonymous) if c.name.lower() == "time_bucket_gapfill"]
    if len(calls) != 1:
        raise E.NotSupportedError("a query can use time_bucket_gapfill() once")
    call = calls[0]
    args = call.expressions
    if len(args) not in (2, 3, 4):
        raise E.UndefinedFunction("time_bucket_gapfill(interval, ts [, start, finish]) takes 2 "
                                  "to 4 arguments", sqlstate="42883")
    interval = constant_interval(args[0], "time_bucket_gapfill")
    column = args[1]
    start = finish = None
    if len(args) >= 3 and not isinstance(args[2], exp.Null):
        text = _literal_text(args[2])
        if text is None:
            raise E.NotSupportedError("time_bucket_gapfill(): start must be a constant timestamp")
        start = _micros(text, "start")
    if len(args) == 4 and not isinstance(args[3], exp.Null):
        text = _literal_text(args[3])
        if text is None:
            raise E.NotSupportedError("time_bucket_gapfill(): finish must be a constant timestamp")
        finish = _micros(text, "finish")
    if isinstance(column, exp.Column) and (start is None or finish is None):
        where_start, where_finish = _bounds_from_where(tree.args.get("where"), column)
        start = where_start if start is None else start
        finish = where_finish if finish is None else finish
    if start is None or finish is None:
        missing = "start" if start is None else "finish"
        raise E.InvalidParameterValue(
            f"missing time_bucket_gapfill argument: could not infer {missing} from WHERE clause",
            hint="give start and finish as arguments, or bound the time column in WHERE")
    if finish <= start:
        raise E.InvalidParameterValue("time_bucket_gapfill(): finish must be after start")
    if call.find_ancestor(exp.Select) is not tree:
        raise E.NotSupportedError("time_bucket_gapfill() must be in the outer SELECT")

    # GROUP BY an output alias: by position, since the outputs get private names below.
    aliases = {p.alias: i for i, p in enumerate(tree.expressions) if isinstance(p, exp.Alias)}
    group = tree.args.get("group")
    for item in list(group.expressions) if group is not None else []:
        if isinstance(item, exp.Column) and not item.table and item.name in aliases:
            item.replace(exp.Literal.number(aliases[item.name] + 1))
    # The plain query: private column names, roles remembered per column.
    names, roles, bucket_index = [], [], None
    for i, projection in enumerate(tree.expressions):
        if isinstance(projection, exp.Star):
            raise E.NotSupportedError("time_bucket_gapfill() queries need explicit columns")
        value = projection.unalias() if isinstance(projection, exp.Alias) else projection
        names.append(projection.alias if isinstance(projection, exp.Alias) else _postgres_name(value))
        role = "key"
        if any(node is call for node in value.find_all(exp.Anonymous)):
            role, bucket_index = "bucket", i
        elif isinstance(value, exp.Anonymous) and value.name.lower() in ("locf", "interpolate"):
            role = value.name.lower()
            if len(value.expressions) != 1:
                raise E.UndefinedFunction(f"{role}() takes one aggregate", sqlstate="42883")
            value.replace(value.expressions[0].copy())
        elif _is_aggregate(value):
            role = "aggregate"
        roles.append(role)
        target = tree.expressions[i]
        inner = target.unalias() if isinstance(target, exp.Alias) else target
        tree.expressions[i].replace(exp.alias_(inner.copy(), f"__ol_gf{i}", quoted=True))
    if bucket_index is None:
        raise E.NotSupportedError("time_bucket_gapfill() must be a column of the SELECT list")
    for node in list(tree.find_all(exp.Anonymous)):
        if node.name.lower() == "time_bucket_gapfill":
            node.replace(exp.Anonymous(this="time_bucket",
                                       expressions=[a.copy() for a in node.expressions[:2]]))
        elif node.name.lower() in ("locf", "interpolate"):
            raise E.NotSupportedError(f"{node.name.lower()}() must wrap a whole output column")
    order, limit, offset = tree.args.get("order"), tree.args.get("limit"), tree.args.get("offset")
    for key in ("order", "limit", "offset"):
        tree.set(key, None)
    from omnilake.engine import rewrites
    tree = rewrites.apply(tree)
    result = bind(session, tree).to_arrow()
    filled = _fill(result, roles, bucket_index, interval, start, finish)
    filled = _order(session, filled, order, limit, offset, roles, bucket_index, names)
    filled = normalise_output(filled.rename_columns(names))
    return Result(status=f"SELECT {filled.num_rows}", table=filled, rowcount=filled.num_rows)


def _fill(result: pa.Table, roles, bucket_index, interval, start, finish) -> pa.Table:
    import pandas as pd
    bucket_name = result.column_names[bucket_index]
    bucket_type = result.schema.field(bucket_index).type
    buckets = []
    current = bucket_start(start, interval)
    while current < finish:
        buckets.append(current)
        current = next_bucket(current, interval)
        if len(buckets) > MAX_BUCKETS:
            raise E.InvalidParameterValue(f"time_bucket_gapfill would make more than "
                                          f"{MAX_BUCKETS} buckets per group", sqlstate="54000")
    # rows whose time is NULL fall in no bucket of the grid: left out, as the WHERE bounds
    # that usually come with gap fill leave them out
    result = result.filter(pa.compute.is_valid(result.column(bucket_index)))
    frame = result.to_pandas(types_mapper=pd.ArrowDtype)
    times = result.column(bucket_index).cast(pa.timestamp("us", bucket_type.tz)).cast(pa.int64())
    frame[bucket_name] = times.to_numpy(zero_copy_only=False)
    keys = [result.column_names[i] for i, r in enumerate(roles) if r == "key"]
    if keys:
        groups = frame[keys].drop_duplicates()
        grid = groups.merge(pd.DataFrame({bucket_name: buckets}), how="cross")
    else:
        grid = pd.DataFrame({bucket_name: buckets})
    merged = grid.merge(frame, on=keys + [bucket_name], how="outer") if len(frame) else grid
    merged = merged.sort_values(keys + [bucket_name], kind="stable").reset_index(drop=True)
    for i, role in enumerate(roles):
        name = result.column_names[i]
        if name not in merged:
            merged[name] = pd.Series([None] * len(merged), dtype=object)
        if role == "locf":
            merged[name] = merged.groupby(keys, dropna=False, sort=False)[name].ffill() \
                if keys else merged[name].ffill()
        elif role == "interpolate":
            merged[name] = _interpolate(merged, keys, bucket_name, name)
    columns = []
    for i, field in enumerate(result.schema):
        values = merged[field.name]
        if i == bucket_index:
            array = pa.array(values.to_numpy(dtype=np.int64), pa.int64()).cast(
                pa.timestamp("us", bucket_type.tz))
        elif roles[i] == "interpolate":
            array = pa.array(pd.to_numeric(values.astype(object), errors="coerce")
                             .to_numpy(dtype=float, na_value=np.nan), pa.float64(), from_pandas=True)
        else:
            array = pa.array(values.astype(object).where(values.notna(), None).tolist(), field.type)
        columns.append(array)
    return pa.Table.from_arrays(columns, names=result.column_names)


def _interpolate(merged, keys, bucket_name, name):
    import pandas as pd
    values = pd.to_numeric(merged[name].astype(object), errors="coerce").astype(float)
    out = values.copy()
    groups = merged.groupby(keys, dropna=False, sort=False).indices.values() if keys \
        else [np.arange(len(merged))]
    for index in groups:
        series = pd.Series(values.iloc[index].to_numpy(),
                           index=merged[bucket_name].iloc[index].to_numpy(dtype=np.int64))
        filled = series.interpolate(method="index", limit_area="inside")
        out.iloc[index] = filled.to_numpy()
    return out


def _order(session, table: pa.Table, order, limit, offset, roles, bucket_index, names):
    """ORDER BY / LIMIT of the original query over the filled rows."""
    if order is None and limit is None and offset is None:
        return table
    from omnilake.engine.dialect import to_datafusion
    from omnilake.engine.planning import SMALL_STATEMENT_ROWS, plan_sql
    from omnilake.engine.query import batches_of, new_statement_name
    from omnilake.engine.errors import from_datafusion
    from omnilake.engine.rewrites import fold_identifiers
    private = new_statement_name("gapfill")
    select = exp.select("*").from_(exp.to_identifier(private, quoted=True))
    if order is not None:
        items = []
        for ordered in order.expressions:
            target = ordered.this
            column = None
            if isinstance(target, exp.Literal) and not target.is_string:
                column = int(target.this) - 1
            elif isinstance(target, exp.Column) and not target.table and target.name in names:
                column = names.index(target.name)
            elif isinstance(target, exp.Anonymous) and target.name.lower() == "time_bucket_gapfill":
                column = bucket_index
            if column is None or not 0 <= column < len(names):
                raise E.NotSupportedError("ORDER BY of a time_bucket_gapfill query must name "
                                          "output columns (by name or position)")
            copy = ordered.copy()
            copy.set("this", exp.column(table.column_names[column], quoted=True))
            items.append(copy)
        select = select.order_by(*items)
    if limit is not None:
        select.set("limit", limit.copy())
    if offset is not None:
        select.set("offset", offset.copy())
    ctx = session.engine.datafusion
    ctx.register_record_batches(private, [batches_of(table)])
    try:
        return plan_sql(ctx, to_datafusion(fold_identifiers(select)),
                        small=table.num_rows <= SMALL_STATEMENT_ROWS).to_arrow_table()
    except Exception as exc:
        raise from_datafusion(exc) from exc
    finally:
        ctx.deregister_table(private)


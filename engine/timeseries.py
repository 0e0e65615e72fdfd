"""Time-series functions: `time_bucket`, `first`/`last`, `delta`/`increase`/`rate`.

Most are rewrites into what DataFusion runs natively (`rewrite` is one of the rules in
engine/rewrites.py):

- `time_bucket(interval, ts [, origin | offset])` has TimescaleDB's semantics: buckets are
  aligned to 2000-01-03 00:00 UTC (a Monday, so weekly buckets start on Mondays), or to
  2000-01-01 for month and year intervals; an origin timestamp moves the alignment, an offset
  interval shifts it. It becomes DataFusion's `date_bin(interval, ts, origin)`, which floors
  (also before the origin) and handles month strides. `time_bucket(10, n)` buckets integers.
  An interval must be a constant; month intervals cannot carry days or time (as TimescaleDB).
- `first(v, ts)` / `last(v, ts)`: the value at the smallest / largest `ts` of the group,
  NULL values included, rows whose `ts` is NULL ignored:
  `first_value(v ORDER BY ts) FILTER (WHERE ts IS NOT NULL)`.
- `delta(v, ts)`: last minus first value (a gauge's change). `increase(v, ts)`: a counter's
  increase, where a drop means the counter restarted from zero (Prometheus semantics, without
  extrapolation). `rate(v, ts)`: `increase` per second between the first and last sample.
  NULL with fewer than two samples. These are aggregate functions (Python UDAFs over whole
  Arrow arrays) registered in the engine's DataFusion context.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datafusion import Accumulator, SessionContext, udaf
from sqlglot import exp, parse_one

from omnilake import errors as E
from omnilake.catalog.table_options import Interval, parse_interval
from omnilake.engine.walk import nodes

DEFAULT_ORIGIN = dt.datetime(2000, 1, 3, tzinfo=dt.timezone.utc)
MONTH_ORIGIN = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
COUNTER_FUNCTIONS = ("delta", "increase", "rate")

_FIRST = parse_one("first_value(__v ORDER BY __t ASC) FILTER (WHERE __t IS NOT NULL)",
                   dialect="postgres")
_LAST = parse_one("first_value(__v ORDER BY __t DESC) FILTER (WHERE __t IS NOT NULL)",
                  dialect="postgres")


# -- intervals in SQL ----------------------------------------------------------------------
def constant_interval(node: exp.Expression, function: str) -> Interval:
    """The value of an interval argument: `'5 minutes'`, `INTERVAL '5 minutes'`,
    `INTERVAL '5' MINUTE`, `'5 minutes'::interval`."""
    text = interval_text(node)
    if text is None:
        raise E.NotSupportedError(f"{function}() needs a constant interval, not {node.sql('postgres')}",
                                  hint="e.g. time_bucket('5 minutes', ts)")
    interval = parse_interval(text, function)
    if not interval.positive:
        raise E.InvalidParameterValue(f"{function}() needs a positive interval, not {text!r}",
                                      sqlstate="22023")
    if interval.months and interval.micros:
        raise E.NotSupportedError(f"{function}(): month intervals cannot have a day or time "
                                  f"component ({text!r})", hint="use '1 month' or '30 days'")
    return interval


def interval_text(node: exp.Expression) -> str | None:
    if isinstance(node, exp.Paren):
        node = node.unnest()
    if isinstance(node, exp.Cast) and node.to.this == exp.DataType.Type.INTERVAL:
        node = node.this
    if isinstance(node, exp.Literal) and node.is_string:
        return node.this
    if isinstance(node, exp.Interval) and isinstance(node.this, exp.Literal):
        unit = node.args.get("unit")
        return f"{node.this.this} {unit.name}" if unit is not None else node.this.this
    return None


def interval_sql(interval: Interval) -> exp.Expression:
    if interval.months:
        return exp.Interval(this=exp.Literal.string(f"{interval.months} months"))
    return exp.Interval(this=exp.Literal.string(f"{interval.micros} microseconds"))


def _timestamp_literal(text: str) -> str:
    try:
        value = dt.datetime.fromisoformat(text.strip().replace(" ", "T", 1))
    except ValueError:
        raise E.DataError(f'invalid input syntax for type timestamp with time zone: "{text}"',
                          sqlstate="22007") from None
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value.isoformat()


# -- rewrites ------------------------------------------------------------------------------
def rewrite(tree: exp.Expression) -> exp.Expression:
    """time_bucket, first/last and the counter functions into what DataFusion runs."""
    if isinstance(tree, exp.Create) and tree.find(exp.MaterializedProperty) is not None:
        return tree  # a continuous aggregate keeps its definition; rewritten when it runs
    for node in [n for n in nodes(tree) if isinstance(n, (exp.First, exp.Last))]:
        if node.args.get("expression") is not None:
            replacement = _first_last(node)
            if isinstance(node.parent, exp.Select) and node.arg_key == "expressions":
                # unnamed, it keeps PostgreSQL's name (the function's), not `?column?`
                replacement = exp.alias_(replacement, node.key, quoted=True)
            node.replace(replacement)
    for call in [n for n in nodes(tree) if isinstance(n, exp.Anonymous)]:
        name = call.name.lower()
        if name == "time_bucket":
            replacement = time_bucket_sql(call.expressions)
            if isinstance(call.parent, exp.Select) and call.arg_key == "expressions":
                # an unnamed projection keeps PostgreSQL's name for it, not date_bin's
                replacement = exp.alias_(replacement, "time_bucket", quoted=True)
            call.replace(replacement)
        elif name in COUNTER_FUNCTIONS:
            call.replace(_counter(name, call.expressions))
    return tree


def _first_last(node: exp.Expression) -> exp.Expression:
    template = (_FIRST if isinstance(node, exp.First) else _LAST).copy()
    for column in list(template.find_all(exp.Column)):
        source = node.this if column.name == "__v" else node.expression
        column.replace(source.copy())
    return template


def time_bucket_sql(args: list[exp.Expression]) -> exp.Expression:
    """The DataFusion expression of time_bucket(interval, ts [, origin | offset])."""
    if len(args) not in (2, 3):
        raise E.UndefinedFunction("time_bucket(interval, ts [, origin | offset]) takes 2 or 3 "
                                  f"arguments, not {len(args)}", sqlstate="42883")
    width, value = args[0], args[1]
    if isinstance(width, exp.Literal) and not width.is_string:
        return _integer_bucket(width, value, args[2] if len(args) == 3 else None)
    interval = constant_interval(width, "time_bucket")
    origin = MONTH_ORIGIN if interval.months else DEFAULT_ORIGIN
    origin_sql: exp.Expression = exp.Literal.string(origin.replace(tzinfo=None).isoformat())
    offset = None
    if len(args) == 3:
        third = interval_text(args[2])
        if third is not None and not _looks_like_timestamp(third):
            offset = parse_interval(third, "time_bucket offset")  # an offset interval
            if offset.months and offset.micros:
                raise E.NotSupportedError("time_bucket(): an offset cannot mix months and time")
        elif third is not None:
            text = _timestamp_literal(third)
            if interval.months:  # month buckets start at the origin's month (as DuckDB)
                text = text[:7] + "-01T00:00:00"
            origin_sql = exp.Literal.string(text)
        else:
            origin_sql = args[2].copy()
            if interval.months:
                origin_sql = exp.Anonymous(this="date_trunc", expressions=[
                    exp.Literal.string("month"), origin_sql])
    if offset is None:
        return exp.Anonymous(this="date_bin", expressions=[
            interval_sql(interval), value.copy(), origin_sql])
    # time_bucket(i, ts, offset) = time_bucket(i, ts - offset) + offset
    shift = exp.Interval(this=exp.Literal.string(
        f"{offset.months} months" if offset.months else f"{offset.micros} microseconds"))
    binned = exp.Anonymous(this="date_bin", expressions=[
        interval_sql(interval), exp.Sub(this=exp.Paren(this=value.copy()), expression=shift),
        origin_sql])
    return exp.Paren(this=exp.Add(this=binned, expression=shift.copy()))


def _looks_like_timestamp(text: str) -> bool:
    return len(text) >= 8 and text[:4].isdigit() and text[4] == "-"


def _integer_bucket(width: exp.Literal, value: exp.Expression, offset) -> exp.Expression:
    try:
        n = int(width.this)
    except ValueError:
        raise E.InvalidParameterValue(f"time_bucket(): integer width must be whole, not {width.this}") \
            from None
    if n <= 0:
        raise E.InvalidParameterValue("time_bucket(): the bucket width must be positive")
    shifted = value.copy() if offset is None else exp.Sub(this=value.copy(), expression=offset.copy())
    size = exp.Literal.number(n)
    # floor to a multiple of n, also for negative values: x - ((x % n) + n) % n
    floored = exp.Sub(this=exp.Paren(this=shifted.copy()), expression=exp.Mod(
        this=exp.Paren(this=exp.Add(this=exp.Mod(this=exp.Paren(this=shifted), expression=size),
                                    expression=size.copy())), expression=size.copy()))
    if offset is not None:
        floored = exp.Add(this=floored, expression=offset.copy())
    return exp.Paren(this=floored)


def _counter(name: str, args: list[exp.Expression]) -> exp.Expression:
    if len(args) != 2:
        raise E.UndefinedFunction(f"{name}(value, time) takes 2 arguments, not {len(args)}",
                                  sqlstate="42883")
    value = exp.Cast(this=args[0].copy(), to=exp.DataType.build("DOUBLE"))
    seconds = exp.Anonymous(this="date_part", expressions=[exp.Literal.string("epoch"),
                                                           args[1].copy()])
    return exp.Anonymous(this=f"__ol_{name}", expressions=[value, seconds])


# -- python aggregates ---------------------------------------------------------------------
class _Samples(Accumulator):
    """Collects (time, value) samples; `kind` says what to compute from them."""

    kind = "delta"

    def __init__(self):
        self.times: list[np.ndarray] = []
        self.values: list[np.ndarray] = []

    def update(self, values: pa.Array, times: pa.Array) -> None:
        keep = pc.and_(pc.is_valid(values), pc.is_valid(times))
        if keep.null_count or not pc.all(keep).as_py():
            values, times = values.filter(keep), times.filter(keep)
        if len(values):
            self.values.append(values.to_numpy(zero_copy_only=False).astype(np.float64))
            self.times.append(times.to_numpy(zero_copy_only=False).astype(np.float64))

    def merge(self, states: list[pa.Array]) -> None:
        times, values = states
        for t, v in zip(times.to_pylist(), values.to_pylist()):
            if t:
                self.times.append(np.asarray(t, dtype=np.float64))
                self.values.append(np.asarray(v, dtype=np.float64))

    def state(self) -> list[pa.Scalar]:
        t, v = self._arrays()
        return [pa.scalar(t.tolist(), pa.list_(pa.float64())),
                pa.scalar(v.tolist(), pa.list_(pa.float64()))]

    def _arrays(self):
        if not self.times:
            return np.empty(0), np.empty(0)
        t, v = np.concatenate(self.times), np.concatenate(self.values)
        order = np.argsort(t, kind="stable")
        self.times, self.values = [t[order]], [v[order]]
        return t[order], v[order]

    def evaluate(self) -> pa.Scalar:
        t, v = self._arrays()
        if len(v) < 2:
            return pa.scalar(None, pa.float64())
        if self.kind == "delta":
            return pa.scalar(float(v[-1] - v[0]), pa.float64())
        steps = np.diff(v)
        increase = float(np.where(steps >= 0, steps, v[1:]).sum())
        if self.kind == "increase":
            return pa.scalar(increase, pa.float64())
        span = float(t[-1] - t[0])
        return pa.scalar(increase / span if span > 0 else None, pa.float64())


def _accumulator(kind: str):
    return type(f"_{kind.title()}Samples", (_Samples,), {"kind": kind})


def register_functions(ctx: SessionContext) -> None:
    """The aggregate functions behind delta / increase / rate."""
    for name in COUNTER_FUNCTIONS:
        ctx.register_udaf(udaf(_accumulator(name), [pa.float64(), pa.float64()], pa.float64(),
                               [pa.list_(pa.float64()), pa.list_(pa.float64())], "immutable",
                               name=f"__ol_{name}"))


# -- the same bucketing in Python (retention, continuous aggregates, gap fill) -------------
def bucket_start(micros: int, interval: Interval, origin: dt.datetime | None = None) -> int:
    """time_bucket of one timestamp (microseconds since the epoch, UTC)."""
    origin = origin or (MONTH_ORIGIN if interval.months else DEFAULT_ORIGIN)
    if interval.months:  # month buckets start at the origin's month, as in time_bucket_sql
        origin = origin.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    origin_us = int((origin - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc))
                    / dt.timedelta(microseconds=1))
    if not interval.months:
        return origin_us + ((micros - origin_us) // interval.micros) * interval.micros
    when = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=micros)
    months = (when.year - origin.year) * 12 + when.month - origin.month
    start = _add_months(origin, (months // interval.months) * interval.months)
    if start > when:
        start = _add_months(origin, (months // interval.months - 1) * interval.months)
    return int((start - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)) / dt.timedelta(microseconds=1))


def next_bucket(start_micros: int, interval: Interval) -> int:
    if not interval.months:
        return start_micros + interval.micros
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    start = epoch + dt.timedelta(microseconds=start_micros)
    return int((_add_months(start, interval.months) - epoch) / dt.timedelta(microseconds=1))


def _add_months(when: dt.datetime, months: int) -> dt.datetime:
    index = when.year * 12 + when.month - 1 + months
    return when.replace(year=index // 12, month=index % 12 + 1)


# -- statements that are not plain queries -------------------------------------------------
def special_query(session, tree: exp.Expression):
    """`SELECT drop_chunks(...)` and queries with time_bucket_gapfill; None for the rest."""
    if not isinstance(tree, exp.Select):
        return None
    projections = tree.expressions
    if (len(projections) == 1 and tree.args.get("from_") is None
            and isinstance(projections[0].unalias(), exp.Anonymous)
            and projections[0].unalias().name.lower() == "drop_chunks"):
        from omnilake.engine.engine import Result
        from omnilake.engine.retention import drop_chunks
        dropped = drop_chunks(session, projections[0].unalias().expressions)
        table = pa.table({"drop_chunks": pa.array([dropped], pa.int64())})
        return Result(status="SELECT 1", table=table, rowcount=1)
    if any(isinstance(c, exp.Anonymous) and c.name.lower() == "time_bucket_gapfill"
           for c in nodes(tree)):
        from omnilake.engine.gapfill import gapfill_query
        return gapfill_query(session, tree)
    return None

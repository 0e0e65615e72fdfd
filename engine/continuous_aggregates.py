"""Continuous aggregates: `CREATE MATERIALIZED VIEW m AS SELECT time_bucket(...) AS bucket,
tag, agg(...) FROM source [WHERE ...] GROUP BY ...`, stored as an Iceberg table and refreshed
incrementally.

The view's table holds the query's result as of a source snapshot, the *watermark* (table
property `omnilake.cagg.watermark`). A refresh reads the source snapshots committed since
the watermark, takes the time range of the data files they added or removed (Iceberg column
bounds of the time column), widens it to whole buckets, recomputes the query for just those
buckets and replaces them in the view, in one Iceberg commit that also moves the watermark:
rows and watermark change together or not at all. Buckets that no new data touches are not
read again. When the watermark snapshot was expired, or a file has no bounds or carries
deletes, the refresh recomputes everything (from the floor, below).

Retention on the source does not empty the view: partitions dropped by retention (snapshots
marked `omnilake.operation = retention`) are not changes, and the buckets up to the newest
dropped time (the *floor*, table property `omnilake.cagg.floor`) are kept as they are and
never recomputed from the partial data left, as TimescaleDB keeps aggregates of dropped
chunks. Rows arriving late for such buckets do not change them. Above the floor the view
equals the query over the source.

`REFRESH MATERIALIZED VIEW m` flushes the source's pending rows first and refreshes; the
background worker (engine/retention.py) refreshes views whose source has new snapshots
every `timeseries_interval` seconds. The view is queried like any table.
"""

from __future__ import annotations

import json
import threading
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa
from pyiceberg.conversions import from_bytes
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.expressions import And, GreaterThanOrEqual, LessThan
from pyiceberg.manifest import DataFileContent, ManifestEntryStatus
from sqlglot import exp, parse_one

from omnilake import errors as E
from omnilake.catalog.table_options import Interval
from omnilake.engine.dialect import Postgres

if TYPE_CHECKING:
    from omnilake.engine.engine import Result, Session

CAGG_PROPERTY = "omnilake.cagg"
WATERMARK_PROPERTY = "omnilake.cagg.watermark"
FLOOR_PROPERTY = "omnilake.cagg.floor"  # buckets before it outlived the source's retention
RETENTION_OPERATION = "retention"  # engine/retention.py marks its snapshots so
END_OF_TIME = 7258118400000000  # 2200-01-01 UTC in microseconds (DataFusion: nanoseconds)
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


@dataclass
class Definition:
    query: str                 # the SELECT, PostgreSQL text
    source: tuple[str, str]    # (namespace, name)
    source_uuid: str
    time_column: str           # the source column inside time_bucket()
    bucket_column: str         # the view's column holding the bucket
    interval: Interval
    origin_micros: int | None  # an explicit time_bucket origin

    def to_json(self) -> str:
        return json.dumps({"query": self.query, "source": list(self.source),
                           "source_uuid": self.source_uuid, "time_column": self.time_column,
                           "bucket_column": self.bucket_column,
                           "interval": [self.interval.months, self.interval.micros],
                           "origin": self.origin_micros})

    @classmethod
    def from_json(cls, text: str) -> "Definition":
        d = json.loads(text)
        return cls(d["query"], tuple(d["source"]), d["source_uuid"], d["time_column"],
                   d["bucket_column"], Interval(*d["interval"]), d.get("origin"))


def _lock(key: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(key, threading.Lock())


def _analyse(session: "Session", query: exp.Expression, view: str):
    """Check the query's shape; (source key, time column, bucket output name, interval, origin)."""
    from omnilake.engine.query import _postgres_name
    from omnilake.engine.tables import split_name
    from omnilake.engine.timeseries import _timestamp_literal, constant_interval, interval_text
    if not isinstance(query, exp.Select) or query.args.get("group") is None:
        raise E.NotSupportedError("a continuous aggregate is SELECT time_bucket(...), ... FROM "
                                  "<table> GROUP BY ...", hint="one table, with GROUP BY")
    tables = list(query.find_all(exp.Table))
    if len(tables) != 1 or query.args.get("joins") or query.find(exp.Subquery) is not None:
        raise E.NotSupportedError("a continuous aggregate reads exactly one table (no joins or "
                                  "subqueries)")
    for key in ("limit", "offset"):
        if query.args.get(key) is not None:
            raise E.NotSupportedError(f"{key.upper()} is not supported in a continuous aggregate")
    source = split_name(tables[0], session.schema)
    buckets = []
    names = []
    for projection in query.expressions:
        value = projection.unalias() if isinstance(projection, exp.Alias) else projection
        name = projection.alias if isinstance(projection, exp.Alias) else _postgres_name(value)
        names.append(name)
        if isinstance(value, exp.Anonymous) and value.name.lower() == "time_bucket":
            buckets.append((name, value))
    if len(set(names)) != len(names):
        raise E.DuplicateColumn("a continuous aggregate needs unique column names; add aliases")
    if len(buckets) != 1:
        raise E.NotSupportedError("a continuous aggregate needs exactly one time_bucket(interval, "
                                  "time) column", hint="SELECT time_bucket('1 hour', ts) AS bucket, ...")
    bucket_name, call = buckets[0]
    args = call.expressions
    if len(args) < 2 or not isinstance(args[1], exp.Column):
        raise E.NotSupportedError("time_bucket() of a continuous aggregate must bucket a column")
    interval = constant_interval(args[0], "time_bucket")
    origin = None
    if len(args) == 3:
        text = interval_text(args[2])
        if text is None or not text[:4].isdigit():
            raise E.NotSupportedError("a continuous aggregate's time_bucket takes an origin "
                                      "timestamp literal, not an offset or expression")
        import datetime as dt
        value = dt.datetime.fromisoformat(_timestamp_literal(text)).replace(tzinfo=dt.timezone.utc)
        origin = (value - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)) // dt.timedelta(
            microseconds=1)
    from omnilake.engine.tables import ident
    return source, ident(args[1].this), bucket_name, interval, origin


def create(session: "Session", tree: exp.Create) -> "Result":
    """CREATE MATERIALIZED VIEW [IF NOT EXISTS] name AS SELECT ..."""
    from omnilake.catalog.types import from_arrow
    from omnilake.engine import ddl
    from omnilake.engine.engine import Result
    from omnilake.engine.tables import split_name
    target = tree.this.this if isinstance(tree.this, exp.Schema) else tree.this
    namespace, name = split_name(target, session.schema)
    catalog = session.engine.warehouse.catalog
    if catalog.table_exists((namespace, name)):
        if tree.args.get("exists"):
            return Result(status="CREATE MATERIALIZED VIEW")  # PostgreSQL: a notice, this tag
        raise E.DuplicateTable(f'relation "{name}" already exists')
    query = tree.expression
    if query is None:
        raise E.SyntaxError("CREATE MATERIALIZED VIEW needs AS SELECT ...")
    text = query.sql(dialect=Postgres)
    source, time_column, bucket, interval, origin = _analyse(session, parse_one(text, dialect=Postgres), name)
    if not catalog.table_exists(source):
        raise E.UndefinedTable(f'relation "{source[1]}" does not exist')
    session.engine.writer.flush(*source)
    from omnilake.engine.tables import load
    ref = load(session.engine, *source)
    if time_column not in {c.name for c in ref.columns()}:
        raise E.UndefinedColumn(f'column "{time_column}" does not exist in "{source[1]}"')
    snapshot, rows = _compute(session, text, ref, None)
    columns = [(f.name, from_arrow(f.type), False) for f in rows.schema]
    definition = Definition(text, source, str(ref.table.metadata.table_uuid), time_column,
                            bucket, interval, origin)
    view = ddl.create_table(session, namespace, name, columns, [])
    try:
        with view.table.transaction() as tx:
            tx.set_properties({CAGG_PROPERTY: definition.to_json()})
        _commit(session, namespace, name, rows, None, snapshot)
    except BaseException:
        ddl.drop_table(session, namespace, name)
        raise
    return Result(status=f"SELECT {rows.num_rows}", rowcount=rows.num_rows)  # PostgreSQL's tag


def _compute(session: "Session", text: str, ref, bounds: tuple[int, int] | None,
             time_column: str | None = None):
    """(source snapshot id, rows) of the query at the pinned snapshot of `ref`, optionally for
    time_column in [bounds)."""
    from omnilake.engine import rewrites
    from omnilake.engine.query import bind
    tree = parse_one(text, dialect=Postgres)
    if bounds is not None:
        low, high = (_timestamp_sql(b) for b in bounds)
        column = exp.column(time_column, quoted=True)
        condition = exp.and_(exp.GTE(this=column.copy(), expression=low),
                             exp.LT(this=column.copy(), expression=high))
        tree = tree.where(condition, copy=False)
    tree = rewrites.apply(tree)
    snapshot = ref.table.current_snapshot()
    rows = bind(session, tree, pinned=ref).to_arrow()
    return (snapshot.snapshot_id if snapshot else None), rows


def _timestamp_sql(micros: int) -> exp.Expression:
    import datetime as dt
    value = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=micros)
    return exp.cast(exp.Literal.string(value.isoformat()), exp.DataType.build("TIMESTAMPTZ"))


def _commit(session: "Session", namespace: str, name: str, rows: pa.Table,
            bounds: tuple[int, int] | None, snapshot_id: int | None,
            properties: dict[str, str] | None = None) -> None:
    """Replace the view's rows (all, or those whose bucket is in [bounds)) and move the
    watermark, in one commit."""
    from omnilake.engine.coerce import to_storage
    from omnilake.engine.tables import load
    view = load(session.engine, namespace, name)
    definition = Definition.from_json(view.table.properties[CAGG_PROPERTY])
    columns = view.columns()
    stored = to_storage(rows, columns, rows.column_names, name)
    if bounds is None:
        row_filter = None
    else:
        bucket = definition.bucket_column
        row_filter = And(GreaterThanOrEqual(bucket, bounds[0]), LessThan(bucket, bounds[1]))
    try:
        with view.table.transaction() as tx, warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Delete operation did not match any records")
            if row_filter is None:
                tx.overwrite(stored)
            else:
                tx.overwrite(stored, overwrite_filter=row_filter)
            tx.set_properties({WATERMARK_PROPERTY: str(snapshot_id or 0), **(properties or {})})
    except CommitFailedException as exc:
        raise E.SerializationFailure(f"refresh of {namespace}.{name} lost to a concurrent commit",
                                     hint="run REFRESH MATERIALIZED VIEW again") from exc


def _touched(source_table, watermark: int | None, time_field_id: int):
    """(change, dropped): `change` is (low, high) micros of data added or removed since
    `watermark`, 'all' when unknown, 'empty' when no timed data changed, None when nothing
    was committed; `dropped` is the newest time in partitions that retention dropped since
    (None if none): those removals are not changes for the view, which keeps its buckets."""
    current = source_table.current_snapshot()
    if current is None:
        return (None if not watermark else "all"), None
    if watermark is not None and current.snapshot_id == watermark:
        return None, None
    chain = []
    snapshot = current
    while snapshot is not None and snapshot.snapshot_id != watermark:
        chain.append(snapshot)
        parent = snapshot.parent_snapshot_id
        snapshot = source_table.snapshot_by_id(parent) if parent is not None else None
    if watermark and snapshot is None:
        return "all", None  # the watermark snapshot is gone (expired) or not an ancestor
    field = source_table.schema().find_field(time_field_id)
    low = high = dropped = None
    io = source_table.io
    for snap in chain:
        operation = snap.summary.get("omnilake.operation") if snap.summary is not None else None
        if operation == "optimize":
            continue  # compaction rewrites files, not rows (engine/maintenance.py)
        by_retention = operation == RETENTION_OPERATION
        for manifest in snap.manifests(io):
            if manifest.added_snapshot_id != snap.snapshot_id:
                continue
            for entry in manifest.fetch_manifest_entry(io, discard_deleted=False):
                if entry.status == ManifestEntryStatus.EXISTING:
                    continue
                data_file = entry.data_file
                if data_file.content != DataFileContent.DATA:
                    return "all", dropped
                lower = (data_file.lower_bounds or {}).get(time_field_id)
                upper = (data_file.upper_bounds or {}).get(time_field_id)
                if lower is None or upper is None:
                    if data_file.record_count and (data_file.null_value_counts or {}).get(
                            time_field_id) == data_file.record_count:
                        continue  # only NULL times: in no bucket
                    return "all", dropped
                lo = from_bytes(field.field_type, lower)
                hi = from_bytes(field.field_type, upper)
                if by_retention and entry.status == ManifestEntryStatus.DELETED:
                    dropped = hi if dropped is None else max(dropped, hi)
                    continue
                low = lo if low is None else min(low, lo)
                high = hi if high is None else max(high, hi)
    if low is None:
        return "empty", dropped
    return (low, high), dropped


def refresh(session: "Session", namespace: str, name: str, flush: bool = True) -> int:
    """Bring the view up to date with its source; the number of buckets' rows rewritten
    (-1 for a full recompute, 0 when it was current)."""
    from omnilake.engine.tables import load
    from omnilake.engine.timeseries import bucket_start, next_bucket
    import datetime as dt
    with _lock(f"{namespace}.{name}"):
        view = load(session.engine, namespace, name)
        text = view.table.properties.get(CAGG_PROPERTY)
        if text is None:
            raise E.Error(f'"{name}" is not a materialized view', sqlstate="42809")
        definition = Definition.from_json(text)
        if not session.engine.warehouse.catalog.table_exists(definition.source):
            raise E.UndefinedTable(f'the source "{definition.source[1]}" of materialized view '
                                   f'"{name}" does not exist')
        if flush:
            session.engine.writer.flush(*definition.source)
        ref = load(session.engine, *definition.source)
        if str(ref.table.metadata.table_uuid) != definition.source_uuid:
            raise E.UndefinedTable(f'the source "{definition.source[1]}" of materialized view '
                                   f'"{name}" was dropped and created again',
                                   hint="drop the view and create it again")
        watermark = int(view.table.properties.get(WATERMARK_PROPERTY, "0")) or None
        time_id = ref.column(definition.time_column).field_id
        touched, dropped = _touched(ref.table, watermark, time_id)
        if touched is None:
            return 0
        snapshot_id = ref.table.current_snapshot().snapshot_id if ref.table.current_snapshot() \
            else None
        origin = None
        if definition.origin_micros is not None:
            origin = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(
                microseconds=definition.origin_micros)
        # Buckets before the floor hold data retention dropped from the source: kept as they
        # are, never recomputed from what is left (TimescaleDB keeps them too).
        floor = int(view.table.properties[FLOOR_PROPERTY]) \
            if FLOOR_PROPERTY in view.table.properties else None
        if dropped is not None:
            after = next_bucket(bucket_start(dropped, definition.interval, origin),
                                definition.interval)
            floor = after if floor is None else max(floor, after)
        extra = {FLOOR_PROPERTY: str(floor)} if floor is not None else {}
        if touched == "empty":  # no timed data changed (e.g. only partitions dropped)
            with view.table.transaction() as tx:
                tx.set_properties({WATERMARK_PROPERTY: str(snapshot_id or 0), **extra})
            return 0
        if touched == "all":
            if floor is None:
                snapshot, rows = _compute(session, definition.query, ref, None)
                _commit(session, namespace, name, rows, None, snapshot, extra)
            else:
                bounds = (floor, END_OF_TIME)
                snapshot, rows = _compute(session, definition.query, ref, bounds,
                                          definition.time_column)
                _commit(session, namespace, name, rows, bounds, snapshot, extra)
            return -1
        low = bucket_start(touched[0], definition.interval, origin)
        high = next_bucket(bucket_start(touched[1], definition.interval, origin),
                           definition.interval)
        if floor is not None:
            low = max(low, floor)
        if low >= high:  # only late rows for buckets retention already dropped
            with view.table.transaction() as tx:
                tx.set_properties({WATERMARK_PROPERTY: str(snapshot_id or 0), **extra})
            return 0
        snapshot, rows = _compute(session, definition.query, ref, (low, high),
                                  definition.time_column)
        _commit(session, namespace, name, rows, (low, high), snapshot, extra)
        buckets, current = 0, low
        while current < high and buckets < 10**6:
            current = next_bucket(current, definition.interval)
            buckets += 1
        return buckets


def refresh_statement(session: "Session", text: str) -> "Result":
    """REFRESH MATERIALIZED VIEW name"""
    from omnilake.engine.engine import Result
    from omnilake.engine.tables import split_name
    words = text.split()
    if len(words) != 3 or [w.upper() for w in words[:2]] != ["MATERIALIZED", "VIEW"]:
        raise E.NotSupportedError(f"REFRESH {text} is not supported",
                                  hint="REFRESH MATERIALIZED VIEW <name>")
    target = parse_one(f"SELECT * FROM {words[2]}", dialect=Postgres).find(exp.Table)
    namespace, name = split_name(target, session.schema)
    if not session.engine.warehouse.catalog.table_exists((namespace, name)):
        raise E.UndefinedTable(f'relation "{words[2]}" does not exist')
    refresh(session, namespace, name)
    return Result(status="REFRESH MATERIALIZED VIEW")


def drop(session: "Session", tree: exp.Drop) -> "Result":
    """DROP MATERIALIZED VIEW [IF EXISTS] name [, ...]"""
    from omnilake.engine import ddl
    from omnilake.engine.engine import Result
    from omnilake.engine.tables import split_name
    catalog = session.engine.warehouse.catalog
    for node in tree.args.get("tables") or tree.expressions or [tree.this]:
        namespace, name = split_name(node, session.schema)
        if not catalog.table_exists((namespace, name)):
            if tree.args.get("exists"):
                continue
            raise E.UndefinedTable(f'materialized view "{name}" does not exist')
        if CAGG_PROPERTY not in catalog.load_table((namespace, name)).properties:
            raise E.Error(f'"{name}" is not a materialized view', sqlstate="42809",
                          hint="use DROP TABLE")
        ddl.drop_table(session, namespace, name)
    return Result(status="DROP MATERIALIZED VIEW")


def refresh_due(engine, namespace: str, name: str, table) -> None:
    """Background refresh of `table` if it is a continuous aggregate whose source moved on."""
    if CAGG_PROPERTY not in table.properties:
        return
    definition = Definition.from_json(table.properties[CAGG_PROPERTY])
    try:
        source = engine.warehouse.catalog.load_table(definition.source)
    except Exception:
        return  # the source is gone; REFRESH reports it
    snapshot = source.current_snapshot()
    watermark = int(table.properties.get(WATERMARK_PROPERTY, "0"))
    if snapshot is not None and snapshot.snapshot_id != watermark:
        refresh(engine.session(), namespace, name, flush=False)

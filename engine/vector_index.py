"""Vector indexes: CREATE INDEX ... USING hnsw | ivfflat, DROP INDEX, REINDEX, the index
settings, and the per-engine state that serves searches (caches, background upkeep).

An index is a set of segments, one per immutable data file (see catalog/indexes.py), each a
faiss index of that file's vectors keyed by row position in the file, stored as an object
under `<table location>/vector_index/<index>/`. Segments are loaded lazily and kept in an
LRU cache; so are the rows of data files that searches fetch by position. After flushes,
compactions and DML, a background thread builds the segments of new files; until then the
search reads those files exactly, so results never depend on the upkeep being current.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections import OrderedDict
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.expressions import AlwaysTrue
from sqlglot import exp

from omnilake import errors as E
from omnilake.catalog.indexes import (INDEXES_PROPERTY, VectorIndexDef, read_indexes,
                                      update_indexes)
from omnilake.engine.scan import Column, engine_schema, scan_type
from omnilake.engine.tables import TableRef, ident, load, split_name
from omnilake.engine.vector_functions import as_matrix
from omnilake.gpu import ann, get_backend, kernels
from omnilake.storage.files import top_level_field_ids
from omnilake.storage.objects import delete_object, read_object, write_object

if TYPE_CHECKING:
    from omnilake.engine.engine import Engine, Result, Session

log = logging.getLogger(__name__)

OPCLASSES = {"vector_l2_ops": "l2", "vector_cosine_ops": "cosine", "vector_ip_ops": "ip",
             "vector_l1_ops": "l1"}
OPCLASS_OF = {metric: opclass for opclass, metric in OPCLASSES.items()}
# Build options per method: (default, lowest, highest), pgvector's names and ranges. HNSW
# defaults are higher than pgvector's (m 16, ef_construction 64): on 128-d clustered vectors
# (bench/vector_bench.py data, faiss alone) recall@10 at ef_search 100 was 0.969 at 200k rows
# and 0.826 at 1M with pgvector's; 0.991 and 0.958 with these, for about 1.5x the build time
# (measured at 200k; 1M builds were not timed under the same conditions)
# and ~20% more bytes per vector (m links per node).
# IVF `lists` is not fixed by default (None): each segment gets sqrt(its rows), as many as
# pgvector's advice (rows / 1000) at 1M rows. At 1M x 128 (faiss alone) 1000 lists with
# probes 10 gave recall@10 0.967 at 0.4 ms a query; pgvector's fixed 100 lists there make
# each probe scan 10,000 rows.
OPTIONS = {"hnsw": {"m": (32, 2, 100), "ef_construction": (128, 4, 1000)},
           "ivfflat": {"lists": (None, 1, 32768)}}
# Search settings: (default, lowest, highest). pgvector's defaults are ef_search 40 and
# probes 1; OmniLake's aim at recall >= 0.95 out of the box. Measured on 3000 clustered 16-d
# vectors (tests/test_vector_index.py), cosine recall@10 was 0.96 at ef_search 40, 0.98 at 64
# and 0.995 at 100 with the default build options (0.82, 0.945, 0.985 with pgvector's).
# ef_search also grows with the segment (default_ef_search).
SETTINGS = {"hnsw.ef_search": (100, 1, 1000), "ivfflat.probes": (10, 1, 32768)}
INDEX_FOLDER = "vector_index"
UPKEEP_TICK_S = 1.0


def setting(session: "Session", name: str) -> int:
    value = session.variables.get(name)
    return int(value) if value is not None else SETTINGS[name][0]


def default_ef_search(rows: int) -> int:
    """ef_search for an HNSW segment of `rows` vectors when the session has not SET it.

    At a fixed ef_search, recall falls as a graph grows, so the default grows with the
    segment: max(100, sqrt(rows) / 8), which is 100 up to 640k rows. Measured with m=32,
    ef_construction=128 on 128-d clustered vectors (faiss alone): recall@10 0.977 at 200k
    rows with ef 64; at 1M rows 0.958 at ef 100, 0.969 at 120, 0.976 at 130 (sqrt/8 =
    125), 0.982 at 143, 0.993 at 200; faiss's p50 there 0.49 ms at ef 100, 0.57 at 120,
    0.68 at 143, 0.90 at 200 (sqrt/7 = 143 was the default before: its ~0.1 ms more a
    search bought recall 0.98 where the aim is 0.95, and kept SQL above 1 ms)."""
    return max(SETTINGS["hnsw.ef_search"][0], math.ceil(math.sqrt(max(rows, 0)) / 8))


def default_probes(lists: int) -> int:
    """ivfflat.probes for a segment of `lists` lists when the session has not SET it.

    A fixed 10 gave recall@10 1.0 on clustered vectors but 0.869 on real text embeddings
    (100k x 384 all-MiniLM-L6-v2, 316 lists: 0.922 at 20 probes, 0.948 at 32, 0.965 at 45,
    1.35 ms). The default grows with the lists: max(10, 2.5 * sqrt(lists))."""
    return max(SETTINGS["ivfflat.probes"][0], math.ceil(2.5 * math.sqrt(max(lists, 0))))


def check_setting(name: str, value: str) -> None:
    """Refuse a bad value for `SET hnsw.ef_search` / `SET ivfflat.probes`."""
    if name not in SETTINGS:
        return
    _, low, high = SETTINGS[name]
    try:
        number = int(value)
    except ValueError:
        raise E.InvalidParameterValue(f'invalid value for parameter "{name}": "{value}"',
                                      hint=f"an integer between {low} and {high}") from None
    if not low <= number <= high:
        raise E.InvalidParameterValue(
            f'{number} is outside the valid range for parameter "{name}" ({low} .. {high})')


# -- the engine's state ------------------------------------------------------------------
class _Lru:
    """A byte-bounded LRU cache; thread-safe."""

    def __init__(self, budget: int):
        self.budget = budget
        self._items: OrderedDict = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key][0]
        return None

    def put(self, key, value, size: int) -> None:
        with self._lock:
            if key in self._items:
                self._bytes -= self._items.pop(key)[1]
            self._items[key] = (value, size)
            self._bytes += size
            while self._bytes > self.budget and len(self._items) > 1:
                _, (_, dropped) = self._items.popitem(last=False)
                self._bytes -= dropped

    def drop(self, key) -> None:
        with self._lock:
            if key in self._items:
                self._bytes -= self._items.pop(key)[1]


class VectorIndexes:
    """Per engine: loaded segments, cached data-file rows, index builds, background upkeep."""

    def __init__(self, engine: "Engine"):
        self.engine = engine
        budget = engine.settings.vector_cache_bytes
        self.segments = _Lru(budget // 2)
        self.rows = _Lru(budget // 2)
        # GPU copies of those rows, in device memory: a budget of their own, the same size.
        self.device_rows = _Lru(budget // 2)
        self.masks = _Lru(64 * 1024 * 1024)
        self._build_lock = threading.RLock()
        self._watched: dict[tuple[str, str], str | None] = {}  # table -> metadata seen
        self._watch_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- reading -------------------------------------------------------------------------
    def file_rows(self, ref: TableRef, path: str, columns: list[Column]) -> pa.Table:
        """All rows of one data file, in file order (row positions are index ids), in the
        engine's column types for the current schema. Cached: data files never change."""
        key = (path, ref.table.metadata.current_schema_id)
        rows = self.rows.get(key)
        if rows is None:
            # One chunk per column: searches then take the vector matrix without a copy.
            # Plain string types, cast once here: a search takes its k rows from these.
            rows = without_views(read_data_file(ref.table.io, path, columns).combine_chunks())
            self.rows.put(key, rows, rows.nbytes)
        return rows

    def file_vectors(self, ref: TableRef, path: str, rows: pa.Table,
                     column: str) -> tuple[np.ndarray, np.ndarray]:
        """(matrix, validity) of a vector column of a data file's cached rows, kept with them
        (a view of the Arrow buffer when no vector is NULL)."""
        key = ("vectors", path, ref.table.metadata.current_schema_id, column)
        found = self.rows.get(key)
        if found is None:
            found = as_matrix(rows.column(column), np.float32)
            copied = 0 if found[1].all() else found[0].nbytes
            self.rows.put(key, found, copied + found[1].nbytes)
        return found

    def file_prepared(self, ref: TableRef, path: str, column: str, matrix: np.ndarray,
                      backend) -> kernels.Prepared:
        """A data file's vectors as exact searches take them: on the backend's device with
        their squared lengths, made once per file (on a GPU the copy and the lengths are most
        of an exact search's time)."""
        key = ("prepared", path, ref.table.metadata.current_schema_id, column, backend.name)
        # Host rows and device copies are different memory: on a GPU, counting the copy
        # against the rows' budget pushed a file that fills half of it out at every search.
        cache = self.device_rows if backend.is_gpu else self.rows
        found = cache.get(key)
        if found is None:
            found = kernels.Prepared(matrix, backend)
            # On the CPU the matrix is the file's cached vectors, not a copy: counting it
            # twice pushed a 1M x 128 file (524 MB of rows) out of its own cache at every
            # exact search, which then read the file again (1.4 s a search instead of 60 ms).
            shared = isinstance(found.data, np.ndarray) and np.may_share_memory(found.data, matrix)
            cache.put(key, found, (0 if shared else matrix.nbytes) + 4 * len(matrix))
        return found

    def file_mask(self, path: str, schema_id: int, where: str, compute) -> np.ndarray:
        """Which rows of a data file satisfy `where` (SQL text), computed once per file and
        filter: files never change, and searches often repeat a filter with new vectors."""
        key = ("mask", path, schema_id, where)
        found = self.masks.get(key)
        if found is None:
            found = compute()
            self.masks.put(key, found, found.nbytes)
        return found

    def segment(self, ref: TableRef, index: VectorIndexDef, location: str) -> ann.AnnIndex:
        found = self.segments.get(location)
        if found is None:
            data = read_object(ref.table.io, location)
            found = ann.deserialize(data, index.method, index.metric)
            ann.use_huge_pages(found)
            self.segments.put(location, found, len(data))
        return found

    # -- building ------------------------------------------------------------------------
    def catch_up(self, namespace: str, name: str, rebuild: str | None = None) -> int:
        """Build the missing segments of every index of a table (all of them for the index
        named `rebuild`), drop those of files gone from the current snapshot, and commit.
        Returns the number of segments built."""
        with self._build_lock:
            ref = load(self.engine, namespace, name)
            indexes = read_indexes(ref.table.properties)
            if not indexes:
                self.unwatch(namespace, name)
                return 0
            snapshot = ref.table.current_snapshot()
            tasks = self.engine.plan_cache.plan(ref.table, snapshot.snapshot_id, AlwaysTrue())[0] \
                if snapshot else []
            files = [t.file.file_path for t in tasks if not t.delete_files]
            columns = ref.columns()
            built: dict[str, tuple[str, dict[str, str], set[str]]] = {}
            count = 0
            for index in indexes.values():
                seen = set(index.segments)
                existing = {} if index.name == rebuild else index.segments
                segments = {}
                for number, path in enumerate(files):
                    if path in existing:
                        segments[path] = existing[path]
                        continue
                    started = time.monotonic()
                    segments[path] = self._build_segment(ref, index, path, columns)
                    count += 1
                    log.info("index %s: segment %d/%d built in %.1fs", index.name, number + 1,
                             len(files), time.monotonic() - started)
                if segments != index.segments:
                    built[index.name] = (index.id, segments, seen)
            if not built:
                return 0

            def change(current: dict[str, VectorIndexDef]):
                changed = False
                for index_name, (index_id, segments, seen) in built.items():
                    target = current.get(index_name)
                    if target is None or target.id != index_id:
                        continue  # dropped (or dropped and created again) meanwhile
                    # Entries another process added since we read are kept.
                    extra = {p: s for p, s in target.segments.items() if p not in seen}
                    target.segments = {**extra, **segments}
                    changed = True
                return current if changed else None

            update_indexes(self.engine.warehouse.catalog, (namespace, name), change)
            return count

    def _build_segment(self, ref: TableRef, index: VectorIndexDef, path: str,
                       columns: list[Column]) -> str:
        column = next((c for c in columns if c.field_id == index.field_id), None)
        if column is None:
            return ""
        rows = self.file_rows(ref, path, columns)
        matrix, valid = as_matrix(rows.column(column.name), np.float32)
        if not valid.any():
            return ""
        ids = np.nonzero(valid)[0]
        built = ann.build(matrix[valid] if not valid.all() else matrix, ids, index.method,
                          index.metric, index.options,
                          backend=get_backend(self.engine.settings.device))
        data = ann.serialize(built)
        location = f"{ref.table.location()}/{INDEX_FOLDER}/{index.name}/{uuid.uuid4().hex}.faiss"
        write_object(ref.table.io, location, data)
        ann.use_huge_pages(built)
        self.segments.put(location, built, len(data))
        return location

    # -- upkeep --------------------------------------------------------------------------
    def watch(self, namespace: str, name: str) -> None:
        """Keep this table's indexes current in the background from now on."""
        with self._watch_lock:
            self._watched.setdefault((namespace, name), None)
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._upkeep, daemon=True,
                                                name="omnilake-indexer")
                self._thread.start()

    def note_write(self, ref: TableRef) -> None:
        """A write to a table: watch it if it has indexes (cheap: a property lookup)."""
        if INDEXES_PROPERTY in ref.table.properties and (ref.namespace, ref.name) not in self._watched:
            self.watch(ref.namespace, ref.name)

    def unwatch(self, namespace: str, name: str) -> None:
        with self._watch_lock:
            self._watched.pop((namespace, name), None)

    def _upkeep(self) -> None:
        while not self._stop.wait(UPKEEP_TICK_S):
            with self._watch_lock:
                watched = list(self._watched.items())
            for (namespace, name), seen in watched:
                if self._stop.is_set():
                    return
                try:
                    location = self.engine.warehouse.metadata_location(namespace, name)
                    if location is None or location == seen:
                        continue
                    self.catch_up(namespace, name)
                    location = self.engine.warehouse.metadata_location(namespace, name)
                    with self._watch_lock:
                        if (namespace, name) in self._watched:
                            self._watched[(namespace, name)] = location
                except E.UndefinedTable:
                    self.unwatch(namespace, name)
                except Exception as exc:  # retried at the next change of the table
                    log.warning("index upkeep of %s.%s failed: %s", namespace, name, exc)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


def without_views(rows: pa.Table) -> pa.Table:
    """Arrow's take has no kernel for string_view/binary_view (what DataFusion reads text as)."""
    views = {i: pa.large_string() if pa.types.is_string_view(f.type) else pa.large_binary()
             for i, f in enumerate(rows.schema)
             if pa.types.is_string_view(f.type) or pa.types.is_binary_view(f.type)}
    if not views:
        return rows
    fields = [f.with_type(views[i]) if i in views else f for i, f in enumerate(rows.schema)]
    return rows.cast(pa.schema(fields))


def read_data_file(io, path: str, columns: list[Column]) -> pa.Table:
    """A data file's rows in file order, columns matched by Iceberg field id (by name for
    files written without ids), in the engine's types."""
    try:
        with io.new_input(path).open() as stream:
            data = pq.read_table(stream)
    except OSError as exc:
        raise E.OperationalError(f"cannot read data file {path}: {exc}") from exc
    by_id = top_level_field_ids(data.schema)
    if not by_id:
        by_name = {f.name: f for f in data.schema}
        by_id = {c.field_id: by_name[c.name] for c in columns if c.name in by_name}
    arrays = []
    for c in columns:
        source = by_id.get(c.field_id)
        target = scan_type(c.sql_type)
        arrays.append(pa.nulls(data.num_rows, target) if source is None
                      else data.column(source.name).cast(target))
    return pa.Table.from_arrays(arrays, schema=engine_schema(columns))


# -- statements --------------------------------------------------------------------------
def _result(status: str) -> "Result":
    from omnilake.engine.engine import Result
    return Result(status=status)


def create_index(session: "Session", tree: exp.Create) -> "Result":
    index_node = tree.this
    if not isinstance(index_node, exp.Index) or index_node.args.get("table") is None:
        raise E.SyntaxError("CREATE INDEX needs ON table (column opclass)")
    if tree.args.get("unique"):
        raise E.NotSupportedError("UNIQUE indexes are not supported; OmniLake indexes vectors")
    params = index_node.args.get("params")
    using = params.args.get("using") if params is not None else None
    method = using.name.lower() if using is not None else "btree"
    if method not in OPTIONS:
        raise E.NotSupportedError(
            f'access method "{method}" is not supported',
            hint="OmniLake indexes vector columns: USING hnsw (v vector_l2_ops) or USING ivfflat")
    columns = params.args.get("columns") or []
    if len(columns) != 1:
        raise E.NotSupportedError(f"{method} indexes take exactly one column")
    item = columns[0].this if isinstance(columns[0], exp.Ordered) else columns[0]
    opclass_node = None
    if isinstance(item, exp.Opclass):
        item, opclass_node = item.this, item.expression
    if not isinstance(item, exp.Column):
        raise E.NotSupportedError(f"{method} indexes take a column, not an expression")
    table_node = index_node.args["table"]
    namespace, table_name = split_name(table_node, session.schema)
    ref = load(session.engine, namespace, table_name)
    column = ref.column(ident(item.this))
    if column.sql_type.name != "vector":
        raise E.DatatypeMismatch(
            f'column "{column.name}" is of type {column.sql_type}; {method} indexes need a '
            "vector column")
    if opclass_node is None:
        raise E.UndefinedObject(
            f"data type vector has no default operator class for access method \"{method}\"",
            hint="name one: vector_l2_ops, vector_cosine_ops, vector_ip_ops"
                 + (", vector_l1_ops" if method == "hnsw" else ""))
    opclass = opclass_node.name.lower()
    metric = OPCLASSES.get(opclass)
    if metric is None or (method == "ivfflat" and metric == "l1"):
        raise E.UndefinedObject(f'operator class "{opclass}" does not exist for access method "{method}"',
                                hint="use vector_l2_ops, vector_cosine_ops or vector_ip_ops"
                                     + (" or vector_l1_ops" if method == "hnsw" else ""))
    options = _options(method, params.args.get("with_storage") or [])
    name = ident(index_node.this) if index_node.this is not None else \
        _free_name(session, namespace, f"{table_name}_{column.name}_idx")
    if _find(session, namespace, name) is not None:
        if tree.args.get("exists"):
            return _result("CREATE INDEX")
        raise E.DuplicateTable(f'relation "{name}" already exists')
    index = VectorIndexDef(name=name, field_id=column.field_id, method=method, metric=metric,
                           opclass=opclass, options=options, dim=column.sql_type.params[0])
    engine = session.engine
    engine.writer.flush(namespace, table_name)  # index what was acknowledged so far

    def add(current: dict[str, VectorIndexDef]):
        if name in current:
            raise E.DuplicateTable(f'relation "{name}" already exists')
        return {**current, name: index}

    update_indexes(engine.warehouse.catalog, (namespace, table_name), add)
    try:
        engine.vectors.catch_up(namespace, table_name, rebuild=name)
    except BaseException:
        _remove(session, namespace, table_name, name)
        raise
    engine.vectors.watch(namespace, table_name)
    return _result("CREATE INDEX")


def _options(method: str, properties: list[exp.Expression]) -> dict[str, int]:
    allowed = OPTIONS[method]
    options = {key: default for key, (default, _, _) in allowed.items()}
    given = set()
    for prop in properties:
        key = prop.name.lower() if not isinstance(prop, exp.Property) else prop.this.name.lower()
        if key not in allowed:
            raise E.InvalidParameterValue(f'unrecognized parameter "{key}" for {method}',
                                          hint="valid: " + ", ".join(allowed))
        value = prop.args.get("value")
        _, low, high = allowed[key]
        try:
            number = int(value.name)
        except (AttributeError, ValueError):
            raise E.InvalidParameterValue(f'invalid value for parameter "{key}"',
                                          hint=f"an integer between {low} and {high}") from None
        if not low <= number <= high:
            raise E.InvalidParameterValue(
                f'value {number} out of bounds for option "{key}"',
                detail=f"Valid values are between {low} and {high}.")
        options[key] = number
        given.add(key)
    if method == "hnsw" and given == {"m"}:
        options["ef_construction"] = max(options["ef_construction"], 2 * options["m"])
    elif method == "hnsw" and given == {"ef_construction"}:
        # Our default m is above pgvector's 16: an ef_construction given alone that pgvector
        # accepts (>= 2 * 16) must work here too, so m shrinks to fit it.
        options["m"] = max(min(options["m"], options["ef_construction"] // 2), 2)
    if method == "hnsw" and options["ef_construction"] < 2 * options["m"]:
        raise E.InvalidParameterValue("ef_construction must be greater than or equal to 2 * m")
    return options


def _tables(session: "Session", namespace: str) -> list[tuple[str, str]]:
    try:
        return [tuple(i) for i in session.engine.warehouse.catalog.list_tables(namespace)]
    except Exception:
        return []


def _find(session: "Session", namespace: str, name: str) -> tuple[str, str] | None:
    """The table of the index `name` in a schema; index names are unique per schema."""
    for ns, table_name in _tables(session, namespace):
        ref = load(session.engine, ns, table_name)
        if name in read_indexes(ref.table.properties):
            return ns, table_name
    return None


def _free_name(session: "Session", namespace: str, base: str) -> str:
    name, number = base, 0
    while _find(session, namespace, name) is not None:
        number += 1
        name = f"{base}{number}"
    return name


def _target_index(session: "Session", node: exp.Expression) -> tuple[str, str]:
    """(schema, index name) of a possibly schema-qualified index name."""
    return ident(node.args.get("db")) or session.schema, ident(node.this)


def drop_index(session: "Session", tree: exp.Drop) -> "Result":
    for node in tree.args.get("tables") or [tree.this]:
        namespace, name = _target_index(session, node)
        found = _find(session, namespace, name)
        if found is None:
            if tree.args.get("exists"):
                continue
            raise E.UndefinedObject(f'index "{name}" does not exist')
        _remove(session, *found, name)
    return _result("DROP INDEX")


def _remove(session: "Session", namespace: str, table_name: str, name: str) -> None:
    removed: list[VectorIndexDef] = []

    def change(current: dict[str, VectorIndexDef]):
        if name not in current:
            return None
        removed.append(current.pop(name))
        return current

    table = update_indexes(session.engine.warehouse.catalog, (namespace, table_name), change)
    for index in removed:
        for location in index.segments.values():
            if location:
                session.engine.vectors.segments.drop(location)
                delete_object(table.io, location)


def reindex(session: "Session", text: str) -> "Result":
    """REINDEX INDEX name | REINDEX TABLE name: build every segment again."""
    words = text.strip().rstrip(";").split()
    if words and words[0].upper() == "CONCURRENTLY":
        words.pop(0)
    if len(words) != 2 or words[0].upper() not in ("INDEX", "TABLE"):
        raise E.SyntaxError("REINDEX needs INDEX name or TABLE name")
    trees = session.parse(f"SELECT * FROM {words[1]}")
    node = trees[0].find(exp.Table)
    if words[0].upper() == "INDEX":
        namespace, name = _target_index(session, node)
        found = _find(session, namespace, name)
        if found is None:
            raise E.UndefinedObject(f'index "{name}" does not exist')
        session.engine.vectors.catch_up(*found, rebuild=name)
    else:
        namespace, table_name = split_name(node, session.schema)
        ref = load(session.engine, namespace, table_name)
        for name in read_indexes(ref.table.properties):
            session.engine.vectors.catch_up(namespace, table_name, rebuild=name)
    return _result("REINDEX")

"""Answers to the few client introspection queries too PostgreSQL-specific to plan (recursive
CTEs over pg_type with correlated subqueries). Each is recognised by a fingerprint of its text
and answered from the same type table pg_catalog serves; the captured queries are test
fixtures (tests/fixtures/client_queries/).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa

from omnilake.server.codecs import PG_OID_KEY
from omnilake.server.pg_catalog import TYPES, format_type

OID_ARRAY = 1028


@dataclass(frozen=True)
class KnownQuery:
    name: str
    param_oids: list[int]
    schema: pa.Schema
    answer: Callable[[list], pa.Table]


_TYPEINFO_SCHEMA = pa.schema([
    ("oid", pa.int64()), ("ns", pa.large_string()), ("name", pa.large_string()),
    ("kind", pa.large_string()), ("basetype", pa.int64()), ("elemtype", pa.int64()),
    ("elemdelim", pa.large_string()), ("range_subtype", pa.int64()),
    ("attrtypoids", pa.list_(pa.field("item", pa.int64(), metadata={PG_OID_KEY: b"26"}))), ("attrnames", pa.list_(pa.large_string())),
    ("depth", pa.int32()), ("basetype_name", pa.large_string()),
    ("elemtype_name", pa.large_string()), ("range_subtype_name", pa.large_string())])


def _asyncpg_typeinfo(params: list) -> pa.Table:
    """asyncpg's INTRO_LOOKUP_TYPES: the requested types and, deeper first, their elements."""
    wanted = [int(o) for o in (params[0] or []) if o is not None]
    rows, depth, seen = [], 0, set()
    while wanted:
        next_level = []
        for oid in wanted:
            if oid in seen or oid not in TYPES:
                continue
            seen.add(oid)
            name, length, category, _array, element = TYPES[oid]
            rows.append({"oid": oid, "ns": "public" if name in ("vector", "_vector") else "pg_catalog",
                         "name": name, "kind": "p" if category == "P" else "b",
                         "elemtype": element or None, "elemdelim": "," if element else None,
                         "depth": depth,
                         "elemtype_name": format_type(element, None) if element else None})
            if element:
                next_level.append(element)
        wanted, depth = next_level, depth + 1
    rows.sort(key=lambda r: -r["depth"])
    return pa.Table.from_pylist(rows, schema=_TYPEINFO_SCHEMA)


_KNOWN = [
    (("typeinfo_tree", "range_subtype", "any($1::oid[])"),
     KnownQuery("asyncpg type introspection", [OID_ARRAY], _TYPEINFO_SCHEMA, _asyncpg_typeinfo)),
]


def recognise(sql: str) -> KnownQuery | None:
    if "typeinfo_tree" not in sql:  # the only fingerprint so far; keep this test cheap
        return None
    for marks, query in _KNOWN:
        if all(m in sql for m in marks):
            return query
    return None


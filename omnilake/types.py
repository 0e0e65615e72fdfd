"""PEP 249 type objects and constructors.

A column's `type_code` in `cursor.description` is its PostgreSQL type OID (as psycopg
reports it), so it compares equal to one of these type objects.
"""

from __future__ import annotations

import datetime as dt
import time

import pyarrow as pa

from omnilake.catalog.types import OIDS, SQL_TYPE_KEY, SqlType, from_arrow


class DBAPITypeObject:
    def __init__(self, name: str, *oids: int):
        self.name = name
        self.values = frozenset(oids)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, DBAPITypeObject):
            return self.values == other.values
        return other in self.values

    def __hash__(self) -> int:
        return hash(self.values)

    def __repr__(self) -> str:
        return f"<DBAPITypeObject {self.name}>"


STRING = DBAPITypeObject("STRING", OIDS["text"], OIDS["varchar"], OIDS["json"], OIDS["uuid"])
BINARY = DBAPITypeObject("BINARY", OIDS["bytea"])
NUMBER = DBAPITypeObject("NUMBER", OIDS["smallint"], OIDS["integer"], OIDS["bigint"], OIDS["real"],
                         OIDS["double precision"], OIDS["numeric"], OIDS["boolean"])
DATETIME = DBAPITypeObject("DATETIME", OIDS["date"], OIDS["time"], OIDS["timestamp"],
                           OIDS["timestamptz"])
ROWID = DBAPITypeObject("ROWID", OIDS["bigint"])
VECTOR = DBAPITypeObject("VECTOR", OIDS["vector"])

Date = dt.date
Time = dt.time
Timestamp = dt.datetime


def DateFromTicks(ticks: float) -> dt.date:  # noqa: N802 - PEP 249 names
    return Date(*time.localtime(ticks)[:3])


def TimeFromTicks(ticks: float) -> dt.time:  # noqa: N802
    return Time(*time.localtime(ticks)[3:6])


def TimestampFromTicks(ticks: float) -> dt.datetime:  # noqa: N802
    return Timestamp(*time.localtime(ticks)[:6])


def Binary(value) -> bytes:  # noqa: N802
    return bytes(value)


def sql_type_of(field: pa.Field) -> SqlType | None:
    """The SQL type of a result column: from its metadata when it comes straight from a table
    column, else derived from the Arrow type; None for types with no SQL form."""
    text = (field.metadata or {}).get(SQL_TYPE_KEY.encode())
    if text:
        return SqlType.parse(text.decode())
    try:
        return from_arrow(field.type)
    except Exception:  # lists, structs, maps
        return None


def type_code(field: pa.Field) -> int:
    """PostgreSQL OID for a result column (text for types with no SQL form)."""
    sql_type = sql_type_of(field)
    return sql_type.oid if sql_type is not None else OIDS["text"]

"""OmniLake: one engine for rows, IoT time series, vectors and files on open Iceberg tables.

Quick start::

    import omnilake

    with omnilake.connect("./warehouse") as conn:
        cur = conn.cursor()
        cur.execute("CREATE TABLE IF NOT EXISTS readings (ts TIMESTAMPTZ, device TEXT, value DOUBLE PRECISION)")
        cur.execute("INSERT INTO readings VALUES (%s, %s, %s)", ("2026-01-01T00:00:00Z", "d1", 21.5))
        cur.execute("SELECT device, avg(value) FROM readings GROUP BY device")
        print(cur.fetchall())
        print(conn.sql("SELECT * FROM readings").to_pandas())
"""

from omnilake.errors import (  # noqa: F401 - re-exported PEP 249 names
    DatabaseError, DataError, Error, IntegrityError, InterfaceError, InternalError,
    NotSupportedError, OperationalError, ProgrammingError, Warning)

# The connection and type names load on first use, so that `import omnilake.gpu` (kernels and
# the encoder alone) does not load DataFusion, pyiceberg and sqlglot.
_LAZY = {
    "omnilake.dbapi": ("Connection", "Cursor", "Relation", "apilevel", "connect", "paramstyle",
                       "threadsafety"),
    "omnilake.types": ("BINARY", "DATETIME", "NUMBER", "ROWID", "STRING", "VECTOR", "Binary",
                       "Date", "DateFromTicks", "Time", "TimeFromTicks", "Timestamp",
                       "TimestampFromTicks"),
}
_HOME = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name: str):
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'omnilake' has no attribute {name!r}")
    import importlib
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_HOME))


__version__ = "0.1.0"

__all__ = [
    "connect", "Connection", "Cursor", "Relation", "apilevel", "threadsafety", "paramstyle",
    "Error", "Warning", "InterfaceError", "DatabaseError", "DataError", "OperationalError",
    "IntegrityError", "InternalError", "ProgrammingError", "NotSupportedError",
    "STRING", "BINARY", "NUMBER", "DATETIME", "ROWID", "VECTOR",
    "Date", "Time", "Timestamp", "DateFromTicks", "TimeFromTicks", "TimestampFromTicks", "Binary",
]

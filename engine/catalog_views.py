"""information_schema and SHOW, answered live from the Iceberg catalog."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa

from omnilake import errors as E
from omnilake.engine.tables import load

if TYPE_CHECKING:
    from omnilake.engine.engine import Session

DATABASE = "omnilake"


def namespaces(session: "Session") -> list[str]:
    return sorted(".".join(ns) for ns in session.engine.warehouse.catalog.list_namespaces())


def table_names(session: "Session", namespace: str) -> list[str]:
    return sorted(ident[-1] for ident in session.engine.warehouse.catalog.list_tables(namespace))


def virtual_table(session: "Session", namespace: str, name: str) -> pa.Table:
    builders = {"tables": _tables, "columns": _columns, "schemata": _schemata}
    if name not in builders:
        raise E.UndefinedTable(f'relation "{namespace}.{name}" does not exist',
                               hint="available: " + ", ".join(f"{namespace}.{n}" for n in builders))
    return builders[name](session)


def _schemata(session: "Session") -> pa.Table:
    names = namespaces(session) + ["information_schema"]
    return pa.table({"catalog_name": [DATABASE] * len(names), "schema_name": names,
                     "schema_owner": ["omnilake"] * len(names)})


def _tables(session: "Session") -> pa.Table:
    rows = [(ns, t) for ns in namespaces(session) for t in table_names(session, ns)]
    return pa.table({
        "table_catalog": pa.array([DATABASE] * len(rows), pa.large_string()),
        "table_schema": pa.array([r[0] for r in rows], pa.large_string()),
        "table_name": pa.array([r[1] for r in rows], pa.large_string()),
        "table_type": pa.array(["BASE TABLE"] * len(rows), pa.large_string()),
    })


_DATA_TYPE_NAMES = {"varchar": "character varying", "timestamp": "timestamp without time zone",
                    "timestamptz": "timestamp with time zone", "time": "time without time zone",
                    "vector": "USER-DEFINED"}


def _columns(session: "Session") -> pa.Table:
    cols: dict[str, list] = {k: [] for k in (
        "table_catalog", "table_schema", "table_name", "column_name", "ordinal_position",
        "is_nullable", "data_type", "character_maximum_length", "numeric_precision",
        "numeric_scale", "udt_name", "omnilake_type")}
    for ns in namespaces(session):
        for name in table_names(session, ns):
            ref = load(session.engine, ns, name)
            for position, c in enumerate(ref.columns(), start=1):
                t = c.sql_type
                cols["table_catalog"].append(DATABASE)
                cols["table_schema"].append(ns)
                cols["table_name"].append(name)
                cols["column_name"].append(c.name)
                cols["ordinal_position"].append(position)
                cols["is_nullable"].append("NO" if c.required else "YES")
                cols["data_type"].append(_DATA_TYPE_NAMES.get(t.name, t.name))
                cols["character_maximum_length"].append(t.params[0] if t.name == "varchar" and t.params else None)
                cols["numeric_precision"].append(t.params[0] if t.name == "numeric" else None)
                cols["numeric_scale"].append(t.params[1] if t.name == "numeric" else None)
                cols["udt_name"].append(t.name)
                cols["omnilake_type"].append(str(t))
    types = {"ordinal_position": pa.int32(), "character_maximum_length": pa.int32(),
             "numeric_precision": pa.int32(), "numeric_scale": pa.int32()}
    return pa.table({k: pa.array(v, types.get(k, pa.large_string())) for k, v in cols.items()})

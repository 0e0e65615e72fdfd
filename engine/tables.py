"""Looking up Iceberg tables by SQL name, with their SQL column types."""

from __future__ import annotations

from dataclasses import dataclass

from pyiceberg.exceptions import NoSuchTableError, NoSuchNamespaceError
from pyiceberg.table import Table
from sqlglot import exp

from omnilake import errors as E
from omnilake.catalog.types import SqlType
from omnilake.catalog.warehouse import Warehouse, sql_types_of
from omnilake.engine.scan import Column, table_columns


def ident(node: exp.Expression | str | None) -> str | None:
    """An identifier as PostgreSQL resolves it: unquoted names fold to lower case."""
    if node is None:
        return None
    if isinstance(node, str):
        return node
    if isinstance(node, exp.Identifier):
        return node.this if node.quoted else node.this.lower()
    return node.name.lower() if node.name else None


@dataclass
class TableRef:
    namespace: str
    name: str
    table: Table
    sql_types: dict[int, SqlType]

    @property
    def qualified(self) -> str:
        return f"{self.namespace}.{self.name}"

    def columns(self) -> list[Column]:
        return table_columns(self.table, self.sql_types)

    def column(self, name: str) -> Column:
        for c in self.columns():
            if c.name == name:
                return c
        raise E.UndefinedColumn(f'column "{name}" of relation "{self.name}" does not exist')


def split_name(node: exp.Table, default_schema: str) -> tuple[str, str]:
    if node.args.get("catalog") is not None and ident(node.args["catalog"]) not in ("omnilake",):
        raise E.UndefinedTable(f'cross-database references are not implemented: {node.sql()}',
                               sqlstate="0A000")
    namespace = ident(node.args.get("db")) or default_schema
    return namespace, ident(node.this)


def load(warehouse: Warehouse, namespace: str, name: str) -> TableRef:
    try:
        table = warehouse.catalog.load_table((namespace, name))
    except (NoSuchTableError, NoSuchNamespaceError):
        shown = name if namespace == "public" else f"{namespace}.{name}"
        raise E.UndefinedTable(f'relation "{shown}" does not exist') from None
    return TableRef(namespace, name, table, sql_types_of(table))


def exists(warehouse: Warehouse, namespace: str, name: str) -> bool:
    return warehouse.catalog.table_exists((namespace, name))

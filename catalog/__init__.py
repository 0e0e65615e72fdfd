"""Catalog: Iceberg catalog access and the SQL <-> Arrow <-> Iceberg type mapping."""

from omnilake.catalog.types import SqlType
from omnilake.catalog.warehouse import Warehouse

__all__ = ["SqlType", "Warehouse"]

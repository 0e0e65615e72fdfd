"""Opening a warehouse: an Iceberg catalog plus the place its data files live.

A local warehouse is a folder holding `catalog.db` (pyiceberg's SQL catalog on SQLite) and one
sub-folder per namespace and table for data and metadata files. Tables written here are plain
Iceberg: pyiceberg, DuckDB, Spark or Trino can read them through the same catalog.
"""

from __future__ import annotations

import logging
import shutil
import uuid
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from pyiceberg.catalog import Catalog
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import NamespaceAlreadyExistsError
from pyiceberg.table import Table

from omnilake.errors import OperationalError
from omnilake.catalog.types import SqlType, column_sql_types

log = logging.getLogger(__name__)
CATALOG_NAME = "omnilake"
DEFAULT_SCHEMA = "public"


@dataclass
class Warehouse:
    catalog: Catalog
    location: str            # root URI of data files, e.g. file:///data/wh
    local_root: Path | None  # the folder, for a local warehouse
    temporary: bool = False
    _closed: bool = field(default=False, repr=False)

    @classmethod
    def open(cls, location: str | None, catalog_uri: str | None = None) -> "Warehouse":
        temporary = location is None
        if temporary:
            location = tempfile.mkdtemp(prefix="omnilake-")
        if "://" in location and not location.startswith("file://"):
            raise OperationalError(
                f"warehouse {location!r}: only local folders are supported in this version",
                hint="pass a folder path, e.g. omnilake.connect('./warehouse')")
        root = Path(location.removeprefix("file://")).expanduser().resolve()
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OperationalError(f"cannot create warehouse folder {root}: {exc.strerror}") from exc
        uri = catalog_uri or f"sqlite:///{root / 'catalog.db'}"
        try:
            catalog = SqlCatalog(CATALOG_NAME, uri=uri, warehouse=root.as_uri())
            try:
                catalog.create_namespace(DEFAULT_SCHEMA)
            except NamespaceAlreadyExistsError:
                pass
        except Exception as exc:  # pyiceberg/SQLAlchemy errors while opening the catalog
            raise OperationalError(f"cannot open the catalog at {uri}: {exc}") from exc
        log.debug("opened warehouse %s (catalog %s)", root, uri)
        return cls(catalog=catalog, location=root.as_uri(), local_root=root, temporary=temporary)

    def metadata_location(self, namespace: str, name: str) -> str | None:
        """Current metadata file of a table, read straight from the catalog's table (the JDBC
        catalog layout pyiceberg's SqlCatalog uses), or None when that is not available. A
        cheap check that lets callers reuse a table they loaded before."""
        engine = getattr(self.catalog, "engine", None)
        if engine is None:
            return None
        from sqlalchemy import text
        try:
            with engine.connect() as connection:
                row = connection.execute(text(
                    "SELECT metadata_location FROM iceberg_tables WHERE catalog_name = :c "
                    "AND table_namespace = :ns AND table_name = :t"),
                    {"c": CATALOG_NAME, "ns": namespace, "t": name}).first()
        except Exception as exc:  # SQLAlchemy: database locked, unreachable, ...
            raise OperationalError(f"cannot read the catalog: {exc}".split("\n")[0],
                                   hint="another process may hold the catalog locked; retry") from exc
        return row[0] if row else None

    def table_location(self, namespace: str, name: str) -> str:
        """A folder of its own for every table created: a table renamed away keeps its folder,
        and a new table under the old name must not share (or on DROP, delete) it."""
        return f"{self.location}/{namespace}/{name}-{uuid.uuid4().hex[:12]}"

    def remove_location(self, location: str) -> None:
        """Delete a dropped table's files (local warehouses: only inside the warehouse)."""
        if self.local_root is None or not location.startswith("file://"):
            return
        path = Path(location.removeprefix("file://")).resolve()
        if self.local_root in path.parents:
            shutil.rmtree(path, ignore_errors=True)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        engine = getattr(self.catalog, "engine", None)
        if engine is not None:
            engine.dispose()
        if self.temporary and self.local_root is not None:
            shutil.rmtree(self.local_root, ignore_errors=True)


def sql_types_of(table: Table) -> dict[int, SqlType]:
    return column_sql_types(table.schema(), table.properties)

"""SQL types and their Arrow and Iceberg forms.

Iceberg has fewer types than SQL: SMALLINT is stored as int, VARCHAR(n)/UUID/JSON as string,
VECTOR(n) as list<float>, BLOB as struct<data, size, sha256, mime> (see `BLOB_ARROW`). The SQL type of every column is therefore also kept in the table
property `omnilake.sql-types` (field id -> type text); field ids survive renames, so the
mapping does too. Inside the engine, values use the Arrow type of the SQL type (int16 for
SMALLINT, fixed-size lists for vectors), and are converted to the storage form on write.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache

import pyarrow as pa
from pyiceberg import types as it
from pyiceberg.schema import Schema
from sqlglot import exp

from omnilake.errors import NotSupportedError, DataError

SQL_TYPES_PROPERTY = "omnilake.sql-types"
SQL_TYPE_KEY = "omnilake.sql_type"  # Arrow field metadata: the column's SQL type
GENERATED_PROPERTY = "omnilake.generated"  # field id -> expression of a generated column
DEFAULT_NUMERIC = (38, 9)

# A BLOB value: its bytes inline (`data`, values up to storage.blobs.INLINE_LIMIT) or NULL
# with the content stored once as an object named by `sha256` (storage/blobs.py). The struct
# is self-describing, so results and clients recognise a blob by its shape even where an
# expression dropped the column's metadata; size and MIME type read without the object.
BLOB_FIELDS = ("data", "size", "sha256", "mime")
BLOB_ARROW = pa.struct([pa.field("data", pa.large_binary()), pa.field("size", pa.int64()),
                        pa.field("sha256", pa.large_string()), pa.field("mime", pa.large_string())])


def is_blob_type(dtype: pa.DataType) -> bool:
    return pa.types.is_struct(dtype) and tuple(f.name for f in dtype) == BLOB_FIELDS

# PostgreSQL type OIDs, so DB-API type codes and the wire server agree.
OIDS = {
    "boolean": 16, "bytea": 17, "bigint": 20, "smallint": 21, "integer": 23, "text": 25,
    "json": 114, "real": 700, "double precision": 701, "varchar": 1043, "date": 1082,
    "time": 1083, "timestamp": 1114, "timestamptz": 1184, "numeric": 1700, "uuid": 2950,
    # pgvector's `vector` has no fixed OID in PostgreSQL; OmniLake pins one for its catalog.
    "vector": 16385,
}


@dataclass(frozen=True)
class SqlType:
    """A column's SQL type: a canonical name plus parameters (precision, length, dimension)."""

    name: str
    params: tuple[int, ...] = ()

    def __str__(self) -> str:
        if self.params:
            return f"{self.name}({', '.join(map(str, self.params))})"
        return self.name

    @property
    def oid(self) -> int:
        return OIDS["bytea"] if self.name == "blob" else OIDS[self.name]  # bytea on the wire

    @classmethod
    def parse(cls, text: str) -> "SqlType":
        return _parse_type(text)

    # -- Arrow ---------------------------------------------------------------------------
    def to_arrow(self) -> pa.DataType:
        """Arrow type used inside the engine and returned to users."""
        if self.name == "numeric":
            return pa.decimal128(*self.params)
        if self.name == "vector":
            return pa.list_(pa.field("item", pa.float32()), self.params[0])
        if self.name == "blob":
            return BLOB_ARROW
        return _ARROW[self.name]

    def storage_arrow(self) -> pa.DataType:
        """Arrow type of the stored (Iceberg) form."""
        if self.name == "smallint":
            return pa.int32()
        if self.name == "vector":
            return pa.large_list(pa.field("element", pa.float32()))
        if self.name in ("varchar", "uuid", "json"):
            return pa.large_string()
        return self.to_arrow()

    # -- Iceberg -------------------------------------------------------------------------
    def to_iceberg(self) -> it.IcebergType:
        if self.name == "numeric":
            return it.DecimalType(*self.params)
        if self.name == "vector":
            return it.ListType(element_id=0, element_type=it.FloatType(), element_required=False)
        if self.name == "blob":  # nested ids are placeholders: the table assigns fresh ones
            return it.StructType(
                it.NestedField(-1, "data", it.BinaryType(), required=False),
                it.NestedField(-2, "size", it.LongType(), required=False),
                it.NestedField(-3, "sha256", it.StringType(), required=False),
                it.NestedField(-4, "mime", it.StringType(), required=False))
        return _ICEBERG[self.name]


_ARROW = {
    "boolean": pa.bool_(), "smallint": pa.int16(), "integer": pa.int32(), "bigint": pa.int64(),
    "real": pa.float32(), "double precision": pa.float64(), "text": pa.large_string(),
    "varchar": pa.large_string(), "bytea": pa.large_binary(), "date": pa.date32(),
    "time": pa.time64("us"), "timestamp": pa.timestamp("us"),
    "timestamptz": pa.timestamp("us", tz="UTC"), "uuid": pa.large_string(),
    "json": pa.large_string(),
}

_ICEBERG = {
    "boolean": it.BooleanType(), "smallint": it.IntegerType(), "integer": it.IntegerType(),
    "bigint": it.LongType(), "real": it.FloatType(), "double precision": it.DoubleType(),
    "text": it.StringType(), "varchar": it.StringType(), "bytea": it.BinaryType(),
    "date": it.DateType(), "time": it.TimeType(), "timestamp": it.TimestampType(),
    "timestamptz": it.TimestamptzType(), "uuid": it.StringType(), "json": it.StringType(),
}

_FROM_SQLGLOT = {
    exp.DataType.Type.BOOLEAN: "boolean",
    exp.DataType.Type.TINYINT: "smallint", exp.DataType.Type.SMALLINT: "smallint",
    exp.DataType.Type.INT: "integer", exp.DataType.Type.MEDIUMINT: "integer",
    exp.DataType.Type.BIGINT: "bigint",
    exp.DataType.Type.FLOAT: "real", exp.DataType.Type.DOUBLE: "double precision",
    exp.DataType.Type.TEXT: "text", exp.DataType.Type.LONGTEXT: "text",
    exp.DataType.Type.MEDIUMTEXT: "text", exp.DataType.Type.TINYTEXT: "text",
    exp.DataType.Type.VARCHAR: "varchar", exp.DataType.Type.NVARCHAR: "varchar",
    exp.DataType.Type.CHAR: "varchar", exp.DataType.Type.NCHAR: "varchar",
    exp.DataType.Type.VARBINARY: "bytea", exp.DataType.Type.BINARY: "bytea",
    exp.DataType.Type.BLOB: "blob", exp.DataType.Type.LONGBLOB: "blob",
    exp.DataType.Type.MEDIUMBLOB: "blob", exp.DataType.Type.TINYBLOB: "bytea",
    exp.DataType.Type.DATE: "date", exp.DataType.Type.TIME: "time",
    exp.DataType.Type.TIMESTAMP: "timestamp", exp.DataType.Type.DATETIME: "timestamp",
    exp.DataType.Type.TIMESTAMPTZ: "timestamptz", exp.DataType.Type.TIMESTAMPLTZ: "timestamptz",
    exp.DataType.Type.UUID: "uuid", exp.DataType.Type.JSON: "json",
    exp.DataType.Type.JSONB: "json", exp.DataType.Type.VECTOR: "vector",
    exp.DataType.Type.DECIMAL: "numeric",
}


@lru_cache(maxsize=1024)
def _parse_type(text: str) -> SqlType:
    from sqlglot import parse_one
    return from_sqlglot(parse_one(f"CAST(NULL AS {text})", read="postgres").to)


def from_sqlglot(dtype: exp.DataType) -> SqlType:
    """SqlType of a parsed sqlglot DataType; a clear error for types not stored yet."""
    name = _FROM_SQLGLOT.get(dtype.this)
    if name is None:
        raise NotSupportedError(f"type {dtype.sql('postgres')} is not supported",
                                hint="supported: " + ", ".join(sorted(set(_FROM_SQLGLOT.values()))))
    params = tuple(int(p.name) for p in dtype.expressions if p.name.isdigit())
    if name == "numeric":
        if not params:
            params = DEFAULT_NUMERIC
        elif len(params) == 1:
            params = (params[0], 0)
        if not 1 <= params[0] <= 38 or not 0 <= params[1] <= params[0]:
            raise DataError(f"NUMERIC({params[0]}, {params[1]}) is out of range: "
                            "precision must be 1..38 and scale 0..precision")
    elif name == "vector":
        if len(params) != 1 or not 1 <= params[0] <= 16000:
            raise DataError("VECTOR needs a dimension between 1 and 16000, e.g. VECTOR(384)")
    elif name == "varchar" and dtype.this in (exp.DataType.Type.CHAR, exp.DataType.Type.NCHAR):
        params = params or (1,)
    params = params[:1] if name == "varchar" else params
    if name not in ("numeric", "vector", "varchar"):
        params = ()
    return SqlType(name, params)


def from_arrow(dtype: pa.DataType) -> SqlType:
    """The SQL type for an Arrow type (CREATE TABLE AS, conn.insert into a new table)."""
    if pa.types.is_boolean(dtype):
        return SqlType("boolean")
    if pa.types.is_int8(dtype) or pa.types.is_int16(dtype) or pa.types.is_uint8(dtype):
        return SqlType("smallint")
    if pa.types.is_int32(dtype) or pa.types.is_uint16(dtype):
        return SqlType("integer")
    if pa.types.is_integer(dtype):
        return SqlType("bigint")
    if pa.types.is_float16(dtype) or pa.types.is_float32(dtype):
        return SqlType("real")
    if pa.types.is_float64(dtype):
        return SqlType("double precision")
    if pa.types.is_decimal(dtype):
        if dtype.precision > 38:
            return SqlType("numeric", DEFAULT_NUMERIC)
        return SqlType("numeric", (dtype.precision, dtype.scale))
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype) or pa.types.is_string_view(dtype):
        return SqlType("text")
    if pa.types.is_binary(dtype) or pa.types.is_large_binary(dtype) or pa.types.is_binary_view(dtype) \
            or pa.types.is_fixed_size_binary(dtype):
        return SqlType("bytea")
    if pa.types.is_date(dtype):
        return SqlType("date")
    if pa.types.is_time(dtype):
        return SqlType("time")
    if pa.types.is_timestamp(dtype):
        return SqlType("timestamptz" if dtype.tz else "timestamp")
    if pa.types.is_dictionary(dtype):
        return from_arrow(dtype.value_type)
    if pa.types.is_fixed_size_list(dtype) and pa.types.is_floating(dtype.value_type):
        return SqlType("vector", (dtype.list_size,))
    if is_blob_type(dtype):
        return SqlType("blob")
    raise NotSupportedError(f"cannot store Arrow type {dtype} in a table",
                            hint="cast it to a supported SQL type first")


def from_iceberg(dtype: it.IcebergType) -> SqlType:
    """SQL type of an Iceberg column without OmniLake metadata (tables other engines wrote)."""
    simple = {it.BooleanType: "boolean", it.IntegerType: "integer", it.LongType: "bigint",
              it.FloatType: "real", it.DoubleType: "double precision", it.StringType: "text",
              it.BinaryType: "bytea", it.DateType: "date", it.TimeType: "time",
              it.TimestampType: "timestamp", it.TimestamptzType: "timestamptz",
              it.UUIDType: "uuid", it.FixedType: "bytea"}
    for kind, name in simple.items():
        if isinstance(dtype, kind):
            return SqlType(name)
    if isinstance(dtype, it.DecimalType):
        return SqlType("numeric", (dtype.precision, dtype.scale))
    if isinstance(dtype, it.StructType) and tuple(f.name for f in dtype.fields) == BLOB_FIELDS:
        return SqlType("blob")
    raise NotSupportedError(f"Iceberg type {dtype} is not supported by OmniLake yet")


def column_sql_types(schema: Schema, properties: dict[str, str]) -> dict[int, SqlType]:
    """field id -> SqlType for a table's top-level columns."""
    stored = json.loads(properties.get(SQL_TYPES_PROPERTY, "{}"))
    result = {}
    for nf in schema.fields:
        text = stored.get(str(nf.field_id))
        result[nf.field_id] = SqlType.parse(text) if text else from_iceberg(nf.field_type)
    return result


def encode_sql_types(types: dict[int, SqlType]) -> str:
    return json.dumps({str(k): str(v) for k, v in sorted(types.items())})

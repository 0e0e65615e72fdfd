"""Min/max of each chunk of a cached file's columns, so a filtered scan skips chunks.

A cached file is handed to DataFusion as chunks of rows (engine/column_cache.py), and an
in-memory table has no statistics DataFusion could prune with: a point lookup or a one-host,
one-hour time-series query would scan every row of the file. Files written to a table with a
sort order (time-series tables sort by tags, then time) keep like rows together, so most
chunks cannot hold a match and are left out of the scan.

A chunk is judged exactly as pyiceberg judges a data file from its column metrics: the
chunk's bounds are given to pyiceberg's inclusive metrics evaluator in a data file's shape
(`_InclusiveMetricsEvaluator`, private in pyiceberg 0.12, pinned below 0.13 as the scan
planner's evaluators are). Bounds are exact (never truncated); a float column holding NaN
gets none, since DataFusion orders NaN above every number where Iceberg's metrics assume NaN
matches no comparison.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.conversions import to_bytes
from pyiceberg.expressions import AlwaysTrue, BooleanExpression
from pyiceberg.expressions.visitors import _InclusiveMetricsEvaluator, extract_field_ids
from pyiceberg.schema import Schema
from pyiceberg.types import (BooleanType, DateType, DecimalType, DoubleType, FloatType,
                             IcebergType, IntegerType, LongType, StringType, TimestampType,
                             TimestamptzType)

_BOUNDED = (BooleanType, DateType, DecimalType, DoubleType, FloatType, IntegerType, LongType,
            StringType, TimestampType, TimestamptzType)


@dataclass
class ChunkMetrics:
    """One chunk's metrics, with the attributes pyiceberg's evaluator reads of a DataFile."""

    record_count: int
    value_counts: dict[int, int] = field(default_factory=dict)
    null_value_counts: dict[int, int] = field(default_factory=dict)
    nan_value_counts: dict[int, int] = field(default_factory=dict)
    lower_bounds: dict[int, bytes] = field(default_factory=dict)
    upper_bounds: dict[int, bytes] = field(default_factory=dict)

    def merge(self, other: "ChunkMetrics", field_id: int) -> None:
        """Take one column's metrics from `other` (the same chunk)."""
        for name in ("value_counts", "null_value_counts", "nan_value_counts", "lower_bounds",
                     "upper_bounds"):
            value = getattr(other, name).get(field_id)
            if value is not None:
                getattr(self, name)[field_id] = value


def add_column(metrics: list[ChunkMetrics], field_id: int, kind: IcebergType,
               chunks: list[pa.Array]) -> None:
    """Fill in one column's metrics, chunk by chunk (`chunks` line up with `metrics`)."""
    for chunk_metrics, array in zip(metrics, chunks):
        chunk_metrics.value_counts[field_id] = len(array)
        chunk_metrics.null_value_counts[field_id] = array.null_count
        if not isinstance(kind, _BOUNDED) or array.null_count == len(array):
            continue
        if isinstance(kind, (FloatType, DoubleType)):
            nans = pc.sum(pc.is_nan(array)).as_py() or 0
            chunk_metrics.nan_value_counts[field_id] = nans
            if nans:
                continue
        if pa.types.is_string_view(array.type):
            array = array.cast(pa.large_string())
        elif pa.types.is_timestamp(array.type):
            if array.type.unit != "us":
                continue
            array = array.cast(pa.int64())
        elif pa.types.is_date32(array.type):
            array = array.cast(pa.int32())
        low, high = pc.min_max(array).values()
        chunk_metrics.lower_bounds[field_id] = to_bytes(kind, low.as_py())
        chunk_metrics.upper_bounds[field_id] = to_bytes(kind, high.as_py())


class ChunkFilter:
    """A scan's row filter, for judging chunks: `might_match(metrics)`. `key` names it (a
    file remembers which chunks each filter keeps, so a repeated statement binds nothing);
    `field_ids` are the columns it reads. Bound on first use."""

    def __init__(self, schema: Schema, row_filter: BooleanExpression, text: str):
        self._schema, self._row_filter = schema, row_filter
        self._evaluator = None
        self.key = (schema.schema_id, text)

    @property
    def evaluator(self) -> _InclusiveMetricsEvaluator:
        if self._evaluator is None:
            self._evaluator = _InclusiveMetricsEvaluator(self._schema, self._row_filter,
                                                         include_empty_files=True)
        return self._evaluator

    @property
    def types(self) -> dict[int, IcebergType]:
        return {f.field_id: f.field_type for f in self._schema.fields}

    @property
    def field_ids(self) -> set[int]:
        return extract_field_ids(self.evaluator.expr)

    def might_match(self, metrics: ChunkMetrics) -> bool:
        return self.evaluator.eval(metrics)


def chunk_filter(schema: Schema, row_filter: BooleanExpression, text: str) -> ChunkFilter | None:
    """The filter for judging chunks (`text`: the filter as EXPLAIN prints it, which names it),
    or None where there is nothing to judge by."""
    if row_filter == AlwaysTrue():
        return None
    return ChunkFilter(schema, row_filter, text)

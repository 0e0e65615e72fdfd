"""Time-series table options: `CREATE TABLE ... WITH (time_column = 'ts', tags = 'host',
partition = 'day', retention = '30 days')`.

The options are kept as JSON in the table property `omnilake.timeseries`, keyed by Iceberg
field id (ids survive renames). They decide the table's Iceberg partition spec (hour, day,
month or year of the time column) and sort order (the tags, then the time column), and the
retention window after which whole partitions are dropped.

Intervals (`'30 days'`, `'5 minutes'`, `'1 month'`) are parsed here too: months and
microseconds, kept apart as PostgreSQL keeps them (a month has no fixed length).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from omnilake import errors as E

TIMESERIES_PROPERTY = "omnilake.timeseries"
PARTITIONS = ("hour", "day", "month", "year")
OPTIONS = ("time_column", "tags", "partition", "retention")
TIME_TYPES = ("timestamptz", "timestamp")

_MICROS = {"microsecond": 1, "millisecond": 1_000, "second": 1_000_000, "minute": 60_000_000,
           "hour": 3_600_000_000, "day": 86_400_000_000, "week": 7 * 86_400_000_000}
_MONTHS = {"month": 1, "year": 12, "decade": 120, "century": 1200}
_UNITS = {
    "us": "microsecond", "usec": "microsecond", "usecs": "microsecond",
    "microsecond": "microsecond", "microseconds": "microsecond",
    "ms": "millisecond", "msec": "millisecond", "msecs": "millisecond",
    "millisecond": "millisecond", "milliseconds": "millisecond",
    "s": "second", "sec": "second", "secs": "second", "second": "second", "seconds": "second",
    "m": "minute", "min": "minute", "mins": "minute", "minute": "minute", "minutes": "minute",
    "h": "hour", "hr": "hour", "hrs": "hour", "hour": "hour", "hours": "hour",
    "d": "day", "day": "day", "days": "day",
    "w": "week", "week": "week", "weeks": "week",
    "mon": "month", "mons": "month", "month": "month", "months": "month",
    "y": "year", "yr": "year", "yrs": "year", "year": "year", "years": "year",
    "decade": "decade", "decades": "decade", "century": "century", "centuries": "century",
}
_PART = re.compile(r"\s*([+-]?\d+(?:\.\d+)?)\s*([a-z]+)\s*", re.I)
_CLOCK = re.compile(r"\s*([+-]?)(\d+):(\d{1,2})(?::(\d{1,2}(?:\.\d{1,6})?))?\s*$")


@dataclass(frozen=True)
class Interval:
    """A calendar interval: whole months plus microseconds (days count as 24 hours, in UTC)."""

    months: int = 0
    micros: int = 0

    @property
    def positive(self) -> bool:
        return self.months >= 0 and self.micros >= 0 and (self.months or self.micros) > 0

    def sql(self) -> str:
        parts = []
        if self.months:
            parts.append(f"{self.months} months")
        if self.micros or not parts:
            parts.append(f"{self.micros} microseconds")
        return " ".join(parts)


def parse_interval(text: str, what: str = "interval") -> Interval:
    """`'5 minutes'`, `'1 day 2 hours'`, `'1 month'`, `'01:30:00'`, `'15m'` -> Interval."""
    if not isinstance(text, str) or not text.strip():
        raise _bad_interval(text, what)
    clock = _CLOCK.match(text)
    if clock:
        sign = -1 if clock.group(1) == "-" else 1
        seconds = float(clock.group(4) or 0)
        micros = (int(clock.group(2)) * 3600 + int(clock.group(3)) * 60) * 1_000_000 \
            + round(seconds * 1_000_000)
        return Interval(0, sign * micros)
    months = micros = 0
    position = 0
    body = text.strip().lower()
    if body.startswith("@"):
        body = body[1:]
    while position < len(body):
        match = _PART.match(body, position)
        if match is None or match.end() == position:
            raise _bad_interval(text, what)
        number, unit = match.group(1), _UNITS.get(match.group(2))
        if unit is None:
            raise _bad_interval(text, what)
        if unit in _MONTHS:
            value = float(number) * _MONTHS[unit]
            if value != int(value):
                raise _bad_interval(text, what, "fractional months are not supported")
            months += int(value)
        else:
            micros += round(float(number) * _MICROS[unit])
        position = match.end()
    return Interval(months, micros)


def _bad_interval(text, what: str, detail: str | None = None) -> E.Error:
    return E.DataError(f'invalid input syntax for type interval: "{text}" ({what})',
                       detail=detail, hint="e.g. '5 minutes', '1 hour', '30 days', '1 month'",
                       sqlstate="22007")


@dataclass(frozen=True)
class TimeSeriesOptions:
    time_column: str
    tags: tuple[str, ...] = ()
    partition: str = "day"
    retention: str | None = None
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def retention_interval(self) -> Interval | None:
        return parse_interval(self.retention, "retention") if self.retention else None

    def to_property(self, ids: dict[str, int]) -> str:
        return json.dumps({"time_column": ids[self.time_column],
                           "tags": [ids[t] for t in self.tags],
                           "partition": self.partition, "retention": self.retention})


def from_with(values: dict[str, str], column_types: dict[str, str]) -> TimeSeriesOptions:
    """Validated options from `WITH (...)`; `column_types` maps column name -> SQL type name."""
    unknown = [k for k in values if k not in OPTIONS]
    if unknown:
        raise E.InvalidParameterValue(f'unrecognized parameter "{unknown[0]}"',
                                      hint=f"table options: {', '.join(OPTIONS)}")
    if "time_column" not in values:
        raise E.InvalidParameterValue("a time-series table needs time_column = '<column>'",
                                      hint="WITH (time_column = 'ts', tags = 'host', "
                                           "partition = 'day', retention = '30 days')")
    time_column = values["time_column"]
    if time_column not in column_types:
        raise E.UndefinedColumn(f'time_column "{time_column}" is not a column of the table')
    if column_types[time_column] not in TIME_TYPES:
        raise E.DatatypeMismatch(
            f'time_column "{time_column}" has type {column_types[time_column]}',
            hint="the time column must be TIMESTAMPTZ or TIMESTAMP")
    tags = tuple(t.strip() for t in values.get("tags", "").split(",") if t.strip())
    for tag in tags:
        if tag not in column_types:
            raise E.UndefinedColumn(f'tag "{tag}" is not a column of the table')
        if tag == time_column:
            raise E.InvalidParameterValue(f'"{tag}" cannot be both the time column and a tag')
    if len(set(tags)) != len(tags):
        raise E.InvalidParameterValue("a tag is named more than once")
    partition = values.get("partition", "day").strip().lower()
    if partition not in PARTITIONS:
        raise E.InvalidParameterValue(f"invalid value for partition: {values['partition']!r}",
                                      hint=f"one of {', '.join(PARTITIONS)}")
    retention = values.get("retention")
    if retention is not None:
        interval = parse_interval(retention, "retention")
        if not interval.positive:
            raise E.InvalidParameterValue(f"retention must be a positive interval, not {retention!r}")
    return TimeSeriesOptions(time_column, tags, partition, retention)


def from_properties(properties: dict[str, str], names: dict[int, str]) -> TimeSeriesOptions | None:
    """The options of a table (None for an ordinary table); `names` maps field id -> name."""
    text = properties.get(TIMESERIES_PROPERTY)
    if not text:
        return None
    stored = json.loads(text)
    time_column = names.get(stored["time_column"])
    if time_column is None:
        return None  # the time column was dropped: no longer a time series
    return TimeSeriesOptions(time_column, tuple(names[i] for i in stored["tags"] if i in names),
                             stored.get("partition", "day"), stored.get("retention"))


def iceberg_layout(options: TimeSeriesOptions, ids: dict[str, int]):
    """(partition spec, sort order) of a time-series table: partitioned by hour/day/month/year
    of the time column, sorted by the tags and then the time column."""
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.table.sorting import SortField, SortOrder
    from pyiceberg.transforms import (DayTransform, HourTransform, IdentityTransform,
                                      MonthTransform, YearTransform)
    transform = {"hour": HourTransform, "day": DayTransform, "month": MonthTransform,
                 "year": YearTransform}[options.partition]()
    time_id = ids[options.time_column]
    spec = PartitionSpec(PartitionField(source_id=time_id, field_id=1000, transform=transform,
                                        name=f"{options.time_column}_{options.partition}"))
    order = SortOrder(*[SortField(source_id=ids[t], transform=IdentityTransform())
                        for t in options.tags],
                      SortField(source_id=time_id, transform=IdentityTransform()))
    return spec, order

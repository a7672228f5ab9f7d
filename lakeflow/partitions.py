"""Partition values: Delta string serialization, typed parsing and Hive-style paths."""

from __future__ import annotations

import datetime as dt
import decimal
import math
import re
from typing import Any
from urllib.parse import quote

import pyarrow as pa

from lakeflow.civil import civil_from_days, days_from_civil
from lakeflow.errors import CorruptLogError, SchemaMismatchError

HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
# Characters Hive/Spark escape in partition directory names.
_HIVE_ESCAPE = set('"#%\'*/:=?\\\x7f{[]^') | {chr(i) for i in range(32)}


def _parse_timestamp(text: str, tz: bool) -> dt.datetime:
    value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if tz:
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)
    return value.replace(tzinfo=None)


# An ISO-8601 date or timestamp of any year, as Spark writes them ("-9999-01-01",
# "+10000-01-01 00:00:00", "0000-12-31T23:59:59.999-05:00").
_TEMPORAL = re.compile(r"([+-]?\d{4,})-(\d{2})-(\d{2})"
                       r"(?:[ T](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?)?"
                       r"(Z|[+-]\d{2}(?::?\d{2})?)?")
_ONE_MS = dt.timedelta(milliseconds=1)
_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)



def epoch_value(text: str, typ: pa.DataType) -> int:
    """Days (a date type) or microseconds (a timestamp type) since the epoch, for any year.

    Integer arithmetic only: Python's `datetime` holds the years 1-9999, Delta's
    dates and timestamps hold many more. A zone offset shifts a timestamp with a
    time zone to UTC and is dropped from one without (as Delta readers do).

    Raises:
        ValueError: `text` is no valid date or timestamp.
    """
    m = _TEMPORAL.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"{text!r} is not an ISO-8601 date or timestamp")
    year, month, day = int(m[1]), int(m[2]), int(m[3])
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    if not (1 <= month <= 12 and 1 <= day <= _MONTH_DAYS[month - 1] - (month == 2 and not leap)):
        raise ValueError(f"{text!r} is not a calendar date")
    days = days_from_civil(year, month, day)
    if pa.types.is_date(typ):
        return days
    hour, minute, second = int(m[4] or 0), int(m[5] or 0), int(m[6] or 0)
    if hour > 23 or minute > 59 or second > 59:
        raise ValueError(f"{text!r} is not a time of day")
    micros = (((days * 24 + hour) * 60 + minute) * 60 + second) * 1_000_000 + int((m[7] or "").ljust(6, "0")[:6])
    zone = m[8]
    if typ.tz is not None and zone and zone != "Z":
        digits = zone[1:].replace(":", "")
        offset = (int(digits[:2]) * 60 + int(digits[2:] or 0)) * 60_000_000
        micros -= offset if zone[0] == "+" else -offset
    return micros


def temporal_scalar(value: int, typ: pa.DataType) -> pa.Scalar:
    """An Arrow scalar of `typ` from `epoch_value`'s days or microseconds (never via datetime)."""
    unit = pa.date32() if pa.types.is_date(typ) else pa.timestamp("us", typ.tz)
    return pa.scalar(value, unit) if unit == typ else pa.scalar(value, unit).cast(typ)


def _any_year(text: str, typ: pa.DataType) -> Any:
    """A date or timestamp Python's `datetime` rejected, as a Python value if one holds it.

    Else an Arrow scalar: years before 1 or after 9999, also after a zone shift.
    """
    try:
        scalar = temporal_scalar(epoch_value(text, typ), typ)
    except (OverflowError, pa.ArrowInvalid) as e:  # beyond even 64-bit microseconds
        raise ValueError(f"{text!r} is out of range") from e
    try:
        return scalar.as_py()
    except (OverflowError, ValueError):
        return scalar


def parse_partition_value(text: str | None, typ: pa.DataType, column: str = "?") -> Any:
    """Parse a serialized partition value into a Python value of the column type.

    Dates and timestamps outside the years 1-9999 become Arrow scalars of the type.

    Raises:
        CorruptLogError: the string is not a valid value of that type.
    """
    if text is None or text == "" or text == HIVE_NULL:
        return None
    try:
        if pa.types.is_string(typ):
            return text
        if pa.types.is_integer(typ):
            return int(text)
        if pa.types.is_floating(typ):
            return float(text)
        if pa.types.is_boolean(typ):
            if text.lower() not in ("true", "false"):
                raise ValueError(text)
            return text.lower() == "true"
        if pa.types.is_decimal(typ):
            return decimal.Decimal(text)
        if pa.types.is_date(typ) or pa.types.is_timestamp(typ):
            return _temporal(text, typ)
        if pa.types.is_binary(typ):
            return text.encode("utf-8")  # Spark, delta-rs and the acceptance tests use UTF-8
    except (ValueError, decimal.InvalidOperation) as e:
        raise CorruptLogError(
            f"partition value {text!r} of column {column!r} is not a valid {typ}"
        ) from e
    raise CorruptLogError(f"partition column {column!r} has unsupported type {typ}")


def _python_temporal(text: str, typ: pa.DataType) -> dt.date:
    """A date or timestamp of the years 1-9999 through Python's datetime (the fast path)."""
    if pa.types.is_date(typ):
        return dt.date.fromisoformat(text.strip()[:10])
    return _parse_timestamp(text, typ.tz is not None)


def _temporal(text: str, typ: pa.DataType) -> Any:
    try:
        return _python_temporal(text, typ)
    except (ValueError, OverflowError):
        return _any_year(text, typ)


def temporal_bounds(lo: str, hi: str, typ: pa.DataType) -> tuple[pa.Scalar, pa.Scalar]:
    """[lo, hi] date or timestamp statistics as scalars of `typ`, for any year.

    Writers truncate timestamp statistics to milliseconds: the upper bound is widened.

    Raises:
        ValueError: a bound is no valid date or timestamp.
    """
    date = pa.types.is_date(typ)
    try:
        high = _python_temporal(hi, typ)
        return (pa.scalar(_python_temporal(lo, typ), typ),
                pa.scalar(high if date else high + _ONE_MS, typ))
    except (ValueError, OverflowError):  # outside the years 1-9999: in Arrow
        return (temporal_scalar(epoch_value(lo, typ), typ),
                temporal_scalar(epoch_value(hi, typ) + (0 if date else 1000), typ))


def serialize_partition_value(value: Any, column: str) -> str | None:
    """Serialize a Python partition value the way the Delta protocol stores it.

    Raises:
        SchemaMismatchError: the value cannot be a partition value (NaN, infinity,
            bytes that are not UTF-8).
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise SchemaMismatchError(
                f"partition column {column!r} holds {value}; NaN and infinity cannot be "
                "partition values, filter or replace them first"
            )
        return repr(value)
    if isinstance(value, pa.Scalar):  # a date or timestamp outside the years 1-9999
        return _serialize_temporal(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        # (not strftime's %Y, which leaves years before 1000 unpadded on Linux)
        return f"{value.year:04d}-{value:%m-%d %H:%M:%S.%f}"
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as e:
            raise SchemaMismatchError(
                f"partition column {column!r} holds the bytes {value[:16]!r}, which are not "
                "UTF-8; the Delta log stores binary partition values as UTF-8 text, so "
                "partition by another column or encode the values first"
            ) from e
    if isinstance(value, decimal.Decimal):
        return format(value, "f")
    return str(value)


def _serialize_temporal(value: pa.Scalar) -> str:
    """An Arrow date or timestamp of any year as Spark writes it ("-9999-01-01", "+10000-...")."""
    if pa.types.is_date(value.type):
        days, micros = value.cast(pa.date32()).cast(pa.int32()).as_py(), None
    else:  # in UTC when zoned, like datetimes above
        days, micros = divmod(value.cast(pa.timestamp("us", value.type.tz)).cast(pa.int64()).as_py(),
                              86_400_000_000)
    year, month, day = civil_from_days(days)
    text = f"{year:04d}" if 0 <= year <= 9999 else f"{year:+05d}"
    text += f"-{month:02d}-{day:02d}"
    if micros is None:
        return text
    seconds, fraction = divmod(micros, 1_000_000)
    return f"{text} {seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}.{fraction:06d}"


def as_python(column: pa.ChunkedArray | pa.Array) -> list[Any]:
    """The values of `column` as Python values, where Python can hold them.

    Dates and timestamps outside Python's years 1-9999 stay Arrow scalars (which
    `serialize_partition_value` writes).
    """
    try:
        values: list[Any] = column.to_pylist()
        return values
    except (OverflowError, ValueError):
        out: list[Any] = []
        for scalar in column:
            try:
                out.append(scalar.as_py())
            except (OverflowError, ValueError):
                out.append(scalar)
        return out


def escape_dir_value(text: str | None) -> str:
    """Escape a serialized partition value for use in a directory name (Hive style)."""
    if text is None:
        return HIVE_NULL
    if text == "":
        return HIVE_NULL
    return "".join(f"%{ord(c):02X}" if c in _HIVE_ESCAPE else c for c in text)


MAX_NAME_BYTES = 255  # the longest file name most file systems (ext4, xfs, APFS, HDFS) allow


def partition_dir(values: list[tuple[str, str | None]]) -> str:
    """The relative directory `a=1/b=x` for serialized partition values.

    Raises:
        SchemaMismatchError: a directory name would be longer than file systems allow.
    """
    names = [f"{escape_dir_value(c)}={escape_dir_value(v)}" for c, v in values]
    for (column, _), name in zip(values, names, strict=True):
        if len(name.encode("utf-8")) > MAX_NAME_BYTES:
            raise SchemaMismatchError(
                f"the value of partition column {column!r} makes the directory name "
                f"{name[:40]!r}... {len(name.encode('utf-8'))} bytes long, more than the "
                f"{MAX_NAME_BYTES} file systems allow; shorten it or partition by another column"
            )
    return "/".join(names)


def encode_log_path(relative_path: str) -> str:
    """URL-encode an on-disk relative path for `add.path` (readers decode it once)."""
    return quote(relative_path, safe="/=-_.~")

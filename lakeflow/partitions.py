"""Partition values: Delta string serialization, typed parsing and Hive-style paths."""

from __future__ import annotations

import datetime as dt
import decimal
import math
from typing import Any
from urllib.parse import quote

import pyarrow as pa

from lakeflow.errors import CorruptLogError, SchemaMismatchError, UnsupportedFeatureError

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


def parse_partition_value(text: str | None, typ: pa.DataType, column: str = "?") -> Any:
    """Parse a serialized partition value into a Python value of the column type.

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
        if pa.types.is_date(typ):
            return dt.date.fromisoformat(text.strip()[:10])
        if pa.types.is_timestamp(typ):
            return _parse_timestamp(text, typ.tz is not None)
        if pa.types.is_binary(typ):
            return text.encode("utf-8")  # Spark, delta-rs and the acceptance tests use UTF-8
    except (ValueError, decimal.InvalidOperation) as e:
        raise CorruptLogError(
            f"partition value {text!r} of column {column!r} is not a valid {typ}"
        ) from e
    except OverflowError as e:  # a valid instant, but past what Python's datetime holds
        raise UnsupportedFeatureError(
            f"partition value {text!r} of column {column!r} lies outside the years 1-9999, "
            "which lakeflow cannot read yet; read the table with deltalake or Spark"
        ) from e
    raise CorruptLogError(f"partition column {column!r} has unsupported type {typ}")


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
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return str(value.strftime("%Y-%m-%d %H:%M:%S.%f"))
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

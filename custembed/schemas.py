"""Column names as constants and the Spark schema of every persisted table, built from the registry.

The tables themselves (columns, types, partitions) are declared once, without
pyspark, in :mod:`custembed.tables`; this module turns them into
``StructType`` objects for the jobs. ``docs/tables.md`` documents them for
analysts; a test checks that each table written by a job matches its schema.
"""

from __future__ import annotations

from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DataType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    MapType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from custembed import tables
from custembed.tables import (  # noqa: F401 - the column constants jobs import from here
    AMOUNTS,
    CUSTOMER_ID,
    DT,
    EVENT_TIME,
    EVENT_TYPE,
    GAPS,
    ITEM,
    RAW_EVENT_COLUMNS,
    VIEW,
    VIEW_CURRENT,
    VIEW_TRAIN,
)

_ATOMIC: dict[str, DataType] = {
    "string": StringType(),
    "int": IntegerType(),
    "bigint": LongType(),
    "double": DoubleType(),
    "float": FloatType(),
    "boolean": BooleanType(),
    "timestamp": TimestampType(),
}


def _split_top_level(text: str) -> list[str]:
    """``"string,array<int>"`` → ``["string", "array<int>"]`` (commas inside ``<>`` kept)."""
    parts, depth, start = [], 0, 0
    for index, char in enumerate(text):
        depth += {"<": 1, ">": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(text[start:index].strip())
            start = index + 1
    parts.append(text[start:].strip())
    return parts


def data_type(type_string: str) -> DataType:
    """A Spark ``DataType`` from a registry type string (``int``, ``array<float>``, ``map<string,bigint>``)."""
    text = type_string.strip().lower()
    if text in _ATOMIC:
        return _ATOMIC[text]
    if text.startswith("array<") and text.endswith(">"):
        return ArrayType(data_type(text[len("array<") : -1]))
    if text.startswith("map<") and text.endswith(">"):
        key, value = _split_top_level(text[len("map<") : -1])
        return MapType(data_type(key), data_type(value))
    raise ValueError(f"unsupported column type {type_string!r} (known: {', '.join(_ATOMIC)}, array<>, map<>)")


def struct_of(name: str) -> StructType:
    """The ``StructType`` of a registered table, columns in on-disk order."""
    return StructType([StructField(column.name, data_type(column.type)) for column in tables.table(name).columns])


RAW_EVENTS = struct_of("raw_events")
REJECTS = struct_of("rejects")
SEQUENCES = struct_of("sequences")
LABELS = struct_of("labels")
RUNS = struct_of("runs")
EMBEDDINGS = struct_of("embeddings")
PROPENSITY_SCORES = struct_of("propensity_scores")
MODEL_METRICS = struct_of("model_metrics")
DECILE_LIFT = struct_of("decile_lift")

# the per-run tables jobs write through ``Lake.write_partitions`` / ``Lake.append``
TABLE_SCHEMAS: dict[str, StructType] = {
    name: struct_of(name) for name, spec in tables.TABLES.items() if spec.kind in (tables.PARTITIONS, tables.APPEND)
}

# partition columns of every per-run table (last columns of its schema, in order)
PARTITIONS: dict[str, tuple[str, ...]] = {name: tables.table(name).partitions for name in TABLE_SCHEMAS}

"""Column names as constants and the schema of every persisted table.

``docs/tables.md`` documents these for analysts; a test checks that each
table written by a job matches the schema declared here.
"""

from __future__ import annotations

from pyspark.sql.types import (
    ArrayType,
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

# raw-event contract
CUSTOMER_ID = "customer_id"
EVENT_TIME = "event_time"
EVENT_TYPE = "event_type"
ITEM = "item"
RAW_EVENT_COLUMNS = (CUSTOMER_ID, EVENT_TIME, EVENT_TYPE, ITEM)

DT = "dt"  # run-date partition, YYYY-MM-DD text
VIEW = "view"  # sequences partition: "train" (cutoff before label windows) or "current" (cutoff = run date)
VIEW_TRAIN = "train"
VIEW_CURRENT = "current"

RAW_EVENTS = StructType(
    [
        StructField(CUSTOMER_ID, StringType()),
        StructField(EVENT_TIME, TimestampType()),
        StructField(EVENT_TYPE, StringType()),
        StructField(ITEM, StringType()),
        StructField("channel", StringType()),
        StructField("amount", DoubleType()),
    ]
)

REJECTS = StructType(
    [
        StructField("reason", StringType()),
        StructField(CUSTOMER_ID, StringType()),
        StructField(EVENT_TIME, StringType()),
        StructField(EVENT_TYPE, StringType()),
        StructField(ITEM, StringType()),
        StructField("raw", StringType()),  # the whole input row as JSON, extra columns included
        StructField(DT, StringType()),
    ]
)

SEQUENCES = StructType(
    [
        StructField(CUSTOMER_ID, StringType()),
        StructField("cutoff", StringType()),
        StructField("tokens", ArrayType(IntegerType())),
        StructField("text", StringType()),
        StructField("seq_len", IntegerType()),  # length kept (<= max_len)
        StructField("full_len", IntegerType()),  # length before truncation
        StructField("n_events", IntegerType()),  # real events up to the cutoff
        StructField("n_no_action", IntegerType()),  # empty months filled with "no action"
        StructField("first_event_time", TimestampType()),
        StructField("last_event_time", TimestampType()),
        StructField(DT, StringType()),
        StructField(VIEW, StringType()),
    ]
)

LABELS = StructType(
    [
        StructField(CUSTOMER_ID, StringType()),
        StructField("product", StringType()),
        StructField("label_window", StringType()),
        StructField("window_start", StringType()),
        StructField("window_end", StringType()),
        StructField("label", IntegerType()),
        StructField(DT, StringType()),
    ]
)

RUNS = StructType(
    [
        StructField("run_id", StringType()),
        StructField("job", StringType()),
        StructField("status", StringType()),  # succeeded | failed
        StructField("started_at", TimestampType()),
        StructField("finished_at", TimestampType()),
        StructField("rows_read", LongType()),
        StructField("rows_accepted", LongType()),
        StructField("rows_rejected", LongType()),
        StructField("rejected_by_reason", MapType(StringType(), LongType())),
        StructField("details", StringType()),  # JSON: job-specific figures
        StructField(DT, StringType()),
    ]
)

EMBEDDINGS = StructType(
    [
        StructField(CUSTOMER_ID, StringType()),
        StructField("model_name", StringType()),
        StructField("model_version", StringType()),
        StructField("vector", ArrayType(FloatType())),
        StructField(DT, StringType()),
        StructField(VIEW, StringType()),
        StructField("source", StringType()),
    ]
)

PROPENSITY_SCORES = StructType(
    [
        StructField(CUSTOMER_ID, StringType()),
        StructField("product", StringType()),
        StructField("score", DoubleType()),
        StructField("decile", IntegerType()),  # 1 = the 10 % most likely buyers
        StructField("classifier", StringType()),
        StructField(DT, StringType()),
        StructField("source", StringType()),
    ]
)

MODEL_METRICS = StructType(
    [
        StructField("product", StringType()),
        StructField("classifier", StringType()),
        StructField("rows", LongType()),
        StructField("positives", LongType()),
        StructField("auc", DoubleType()),
        StructField("f1", DoubleType()),
        StructField("precision", DoubleType()),
        StructField("recall", DoubleType()),
        StructField("accuracy", DoubleType()),
        StructField("top10_lift", DoubleType()),
        StructField("train_rows", LongType()),
        StructField("train_seconds", DoubleType()),
        StructField("message", StringType()),
        StructField(DT, StringType()),
        StructField("source", StringType()),
    ]
)

DECILE_LIFT = StructType(
    [
        StructField("product", StringType()),
        StructField("classifier", StringType()),
        StructField("decile", IntegerType()),
        StructField("customers", LongType()),
        StructField("buyers", LongType()),
        StructField("buy_rate", DoubleType()),
        StructField("lift", DoubleType()),
        StructField("cumulative_lift", DoubleType()),
        StructField(DT, StringType()),
        StructField("source", StringType()),
    ]
)

TABLE_SCHEMAS: dict[str, StructType] = {
    "rejects": REJECTS,
    "sequences": SEQUENCES,
    "labels": LABELS,
    "runs": RUNS,
    "embeddings": EMBEDDINGS,
    "propensity_scores": PROPENSITY_SCORES,
    "model_metrics": MODEL_METRICS,
    "decile_lift": DECILE_LIFT,
}

# partition columns of every per-run table (last columns of its schema, in order)
PARTITIONS: dict[str, tuple[str, ...]] = {
    "rejects": (DT,),
    "sequences": (DT, VIEW),
    "labels": (DT,),
    "runs": (DT,),
    "embeddings": (DT, VIEW, "source"),
    "propensity_scores": (DT, "source"),
    "model_metrics": (DT, "source"),
    "decile_lift": (DT, "source"),
}

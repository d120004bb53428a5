"""``custembed ingest``: public data formats → the raw-event contract, bad lines to ``ingest_rejects``.

Formats (``--format``):

* ``online-retail``: the UCI Online Retail CSV. Each invoice line becomes one event:
  ``PURCHASE`` for a sale, ``RETURN`` for a cancellation (invoice number starting with
  ``C``), ``SERVICE`` for postage and carriage lines. The item is the product family
  of the line's description (``conf/retail_families.yaml``: the first matching rule
  wins, else ``other``); other non-goods stock codes keep their stock code as item,
  so step 1 rejects them as unknown items with their reason. Lines without a
  customer id are kept as they are: step 1 rejects them.
* ``user-item``: one ``user item`` pair per line (whitespace-separated), each user's
  lines in time order: the format of the public BERT4Rec / SASRec data files. Event
  times are synthesised ``--step-seconds`` apart per user from 2000-01-01 UTC, in
  file order, so each user's order is kept; the event type is ``--behaviour``.
* ``taobao``: Taobao UserBehavior lines ``user_id,item_id,category_id,behavior_type,
  timestamp`` (headerless as published; a header line is skipped), behaviours ``pv``,
  ``cart``, ``fav``, ``buy``, epoch-second timestamps; the category is kept as
  ``category``.

Event times are written as ISO text in UTC (``...Z``) and parsed by step 1. A line
that cannot become an event (wrong number of fields, empty ids, a timestamp that is
not a number) goes to ``ingest_rejects`` with its reason and the line itself; every
line read is either an event or a reject, and ``runs`` records the counts.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from collections.abc import Sequence

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from custembed import schemas, tables
from custembed.config import Config, RetailFamilies, build, read_yaml_file, resolve_conf_file
from custembed.errors import InputError
from custembed.io import Lake

LINES = "online_retail_lines"  # the CSV's columns, in the table registry
GOODS_CODE = r"^[0-9]{5}[A-Za-z]{0,2}$"  # real products: five digits and an optional variant letter


def family_rules(path: str = "retail_families.yaml") -> tuple[dict[str, str], list[tuple[str, str]]]:
    """(service items by stock code, (family, pattern) rules in order) of a family file, read strictly."""
    file = resolve_conf_file(path)
    families = build(RetailFamilies, read_yaml_file(file), str(file))
    return dict(families.services), [(rule.family, rule.pattern) for rule in families.rules]


def family_of(description: Column, rules: Sequence[tuple[str, str]]) -> Column:
    text = F.upper(F.coalesce(description, F.lit("")))
    result: Column = F.lit("other")
    for family, pattern in reversed(rules):
        result = F.when(text.rlike(pattern), F.lit(family)).otherwise(result)
    return result


def to_events(lines: DataFrame, *, services: dict[str, str], rules: Sequence[tuple[str, str]]) -> DataFrame:
    """Online Retail lines (all text columns, as in the CSV) → raw events.

    Output: ``customer_id`` (``17850.0`` → ``17850``; null when absent),
    ``event_time`` (text), ``event_type``, ``item``, plus ``invoice``,
    ``stock_code``, ``quantity``, ``unit_price``, ``country``.
    """
    missing = [c for c in tables.table(LINES).column_names if c not in lines.columns]
    if missing:
        raise InputError(f"online retail input: missing column '{missing[0]}'")
    code = F.trim(F.col("StockCode"))
    service_map = F.create_map(*[F.lit(x) for kv in services.items() for x in kv])
    service = F.try_element_at(service_map, code)
    cancelled = F.col("InvoiceNo").startswith("C")
    event_type = (
        F.when(service.isNotNull(), F.lit("SERVICE")).when(cancelled, F.lit("RETURN")).otherwise(F.lit("PURCHASE"))
    )
    item = (
        F.when(service.isNotNull(), service)
        .when(code.rlike(GOODS_CODE), family_of(F.col("Description"), rules))
        .otherwise(code)
    )
    customer = F.regexp_replace(F.trim(F.col("CustomerID")), r"\.0$", "")
    return lines.select(
        F.when(customer == "", None).otherwise(customer).alias(schemas.CUSTOMER_ID),
        F.col("InvoiceDate").alias(schemas.EVENT_TIME),
        event_type.alias(schemas.EVENT_TYPE),
        item.alias(schemas.ITEM),
        F.col("InvoiceNo").alias("invoice"),
        code.alias("stock_code"),
        F.col("Quantity").cast("int").alias("quantity"),
        F.col("UnitPrice").cast("double").alias("unit_price"),
        F.col("Country").alias("country"),
    )


# ---------------------------------------------------------------- text formats

MALFORMED = "malformed_line"
MISSING_ID = "missing_id"
UNPARSEABLE_TIME = "unparseable_time"
SYNTHETIC_START = 946_684_800  # 2000-01-01T00:00:00Z: first synthesised time of a user-item user
TAOBAO_FIELDS = ("user_id", "item_id", "category_id", "behavior_type", "timestamp")
_LINE = "_line"  # position of the line in the input (file order)
_REASON = "_reason"


def iso_utc(seconds: Column) -> Column:
    """Epoch seconds → ISO 8601 text in UTC (``2000-01-01T00:00:05Z``), whatever the session's zone."""
    day = F.date_from_unix_date(F.floor(seconds / 86400).cast("int"))
    clock = F.pmod(seconds, F.lit(86400))
    hms = F.format_string(
        "%02d:%02d:%02d", (clock / 3600).cast("int"), (F.pmod(clock, 3600) / 60).cast("int"), F.pmod(clock, 60)
    )
    return F.concat(F.date_format(day, "yyyy-MM-dd"), F.lit("T"), hms, F.lit("Z"))


def user_item_events(lines: DataFrame, *, behaviour: str, step_seconds: int) -> DataFrame:
    """``value`` text lines (with ``_line`` positions) → events and ``_reason`` (null for a good line)."""
    fields = F.split(F.trim(F.col("value")), r"\s+")
    reason = F.when(F.size(fields) != 2, F.lit(MALFORMED)).when(
        (F.trim(F.col("value")) == "") | (F.get(fields, 0) == "") | (F.get(fields, 1) == ""), F.lit(MISSING_ID)
    )
    parsed = lines.select(
        "value",
        _LINE,
        F.get(fields, 0).alias(schemas.CUSTOMER_ID),
        F.get(fields, 1).alias(schemas.ITEM),
        reason.alias(_REASON),
    )
    # a user's good lines are numbered in file order; bad lines are numbered apart and get no time
    order = Window.partitionBy(schemas.CUSTOMER_ID, F.col(_REASON).isNull()).orderBy(_LINE)
    step = F.row_number().over(order) - 1
    return parsed.select(
        "value",
        _LINE,
        schemas.CUSTOMER_ID,
        F.when(F.col(_REASON).isNull(), iso_utc(F.lit(SYNTHETIC_START) + step * F.lit(step_seconds))).alias(
            schemas.EVENT_TIME
        ),
        F.lit(behaviour).alias(schemas.EVENT_TYPE),
        schemas.ITEM,
        _REASON,
    )


def taobao_events(lines: DataFrame) -> DataFrame:
    """Taobao UserBehavior ``value`` lines → events (``category`` kept) and ``_reason``; a header is dropped."""
    fields = F.split(F.trim(F.col("value")), ",")
    header = F.lower(F.trim(F.col("value"))).startswith("user_id")
    seconds = F.expr("try_cast(trim(get(split(trim(value), ','), 4)) as bigint)")
    reason = (
        F.when(F.size(fields) != len(TAOBAO_FIELDS), F.lit(MALFORMED))
        .when((F.trim(F.get(fields, 0)) == "") | (F.trim(F.get(fields, 1)) == ""), F.lit(MISSING_ID))
        .when(seconds.isNull(), F.lit(UNPARSEABLE_TIME))
    )
    return lines.where(~header).select(
        "value",
        _LINE,
        F.trim(F.get(fields, 0)).alias(schemas.CUSTOMER_ID),
        F.when(reason.isNull(), iso_utc(seconds)).alias(schemas.EVENT_TIME),
        F.trim(F.get(fields, 3)).alias(schemas.EVENT_TYPE),
        F.trim(F.get(fields, 1)).alias(schemas.ITEM),
        F.trim(F.get(fields, 2)).alias("category"),
        reason.alias(_REASON),
    )


# ---------------------------------------------------------------- the job

FORMATS = ("online-retail", "user-item", "taobao")
OUTPUTS = {"online-retail": "online_retail_events", "user-item": "user_item_events", "taobao": "taobao_events"}


def read_lines(lake: Lake, path: str) -> DataFrame:
    """The input's text lines with their position in file order (``_line``: increasing along the file)."""
    return lake.read_text(path).withColumn(_LINE, F.monotonically_increasing_id())


def convert(lake: Lake, fmt: str, input_path: str, *, behaviour: str, step_seconds: int) -> DataFrame:
    """The input as events of ``fmt``'s table plus ``value`` (the raw line) and ``_reason``."""
    if fmt == "online-retail":
        # every CSV line becomes an event; step 1 rejects the unusable ones with their reason
        lines = lake.read_csv(input_path, what="online retail file", logical=LINES)
        services, rules = family_rules()
        events = to_events(lines, services=services, rules=rules)
        return events.withColumn("value", F.lit(None).cast("string")).withColumn(_REASON, F.lit(None).cast("string"))
    if fmt == "user-item":
        return user_item_events(read_lines(lake, input_path), behaviour=behaviour, step_seconds=step_seconds)
    return taobao_events(read_lines(lake, input_path))


def run(
    spark,  # type: ignore[no-untyped-def]
    cfg: Config,
    *,
    fmt: str,
    input_path: str,
    output: str | None = None,
    run_date: dt.date,
    behaviour: str = "buying",
    step_seconds: int = 1,
) -> dict[str, object]:
    """Reads one input file; writes the events table of its format and ``ingest_rejects``; records a run."""
    from custembed.jobs.common import lake_from, record_run

    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r} (formats: {', '.join(FORMATS)})")
    if step_seconds < 1:
        raise InputError(f"--step-seconds must be at least 1, got {step_seconds}")
    started = dt.datetime.now(dt.timezone.utc)
    lake = lake_from(spark, cfg)
    target = output or OUTPUTS[fmt]
    rows = convert(lake, fmt, input_path, behaviour=behaviour, step_seconds=step_seconds).persist()
    try:
        events = rows.where(F.col(_REASON).isNull())
        lake.overwrite(events.select(*tables.table(OUTPUTS[fmt]).column_names), target)
        rejects = rows.where(F.col(_REASON).isNotNull()).select(
            F.col(_REASON).alias("reason"),
            F.col("value").alias("raw"),
            F.lit(input_path).alias("input"),
            F.lit(run_date.isoformat()).alias(schemas.DT),
            F.lit(fmt).alias("format"),
        )
        lake.write_partitions(rejects, "ingest_rejects")
        counts = rows.groupBy(_REASON).count().collect()  # one row per reason
    finally:
        rows.unpersist()
    by_reason = {r[_REASON]: int(r["count"]) for r in counts if r[_REASON] is not None}
    accepted = sum(int(r["count"]) for r in counts if r[_REASON] is None)
    summary: dict[str, object] = {
        "format": fmt,
        "input": input_path,
        "events": accepted,
        "rejected": by_reason,
        "written_to": lake.table(target),
    }
    record_run(
        lake,
        job="ingest",
        run_date=run_date,
        started=started,
        status="succeeded",
        rows_read=accepted + sum(by_reason.values()),
        rows_accepted=accepted,
        rows_rejected=sum(by_reason.values()),
        rejected_by_reason=by_reason,
        details=json.dumps(summary),
    )
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", dest="fmt", choices=FORMATS, required=True, help="input format")
    parser.add_argument("--input", required=True, help="input file or directory (local path or lake URI)")
    parser.add_argument("--output", default=None, help="events table to write (default: <format>_events)")
    parser.add_argument("--behaviour", default="buying", help="user-item: the event type of every line")
    parser.add_argument(
        "--step-seconds", type=int, default=1, help="user-item: seconds between a user's synthesised event times"
    )


def main(argv: Sequence[str] | None = None) -> int:
    from custembed.jobs.common import job_main

    return job_main(
        "ingest",
        argv,
        add_arguments,
        lambda spark, cfg, args, run_date: run(
            spark,
            cfg,
            fmt=args.fmt,
            input_path=args.input,
            output=args.output,
            run_date=run_date,
            behaviour=args.behaviour,
            step_seconds=args.step_seconds,
        ),
    )

"""UCI Online Retail → the raw-event contract (real data for an end-to-end run).

Each invoice line becomes one event: ``PURCHASE`` for a sale, ``RETURN`` for a
cancellation (invoice number starting with ``C``), ``SERVICE`` for postage and
carriage lines. The item is the product family of the line's description
(``conf/retail_families.yaml``: the first matching rule wins, else ``other``);
other non-goods stock codes (manual adjustments, bank charges, samples) keep
their stock code as item, so step 1 rejects them as unknown items with their
reason. Lines without a customer id are kept as they are: step 1 rejects them.
``event_time`` stays ISO text, parsed (or rejected) by step 1.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from custembed import schemas, tables
from custembed.config import Config, RetailFamilies, build, read_yaml_file, resolve_conf_file
from custembed.errors import InputError

DEFAULT_INPUT = "../shared/data/online_retail.csv.gz"
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


def run(spark, cfg: Config, *, input_path: str, output: str) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """Reads the Online Retail CSV (online_retail_lines); writes the events table (online_retail_events)."""
    from custembed.jobs.common import lake_from

    lake = lake_from(spark, cfg)
    lines = lake.read_csv(input_path, what="online retail file", logical=LINES)
    services, rules = family_rules()
    events = to_events(lines, services=services, rules=rules)
    lake.overwrite(events, output)
    written = lake.read(output)
    counts = written.groupBy("event_type").agg(F.count("*").alias("n")).collect()
    by_type = {r["event_type"]: int(r["n"]) for r in counts}
    return {"events": sum(by_type.values()), "by_event_type": by_type, "written_to": lake.table(output)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", default=DEFAULT_INPUT, help=f"Online Retail CSV (default {DEFAULT_INPUT})")
    parser.add_argument("--output", default="online_retail_events", help="events table to write")


def main(argv: Sequence[str] | None = None) -> int:
    from custembed.jobs.common import job_main

    return job_main(
        "retail",
        argv,
        add_arguments,
        lambda spark, cfg, args, run_date: run(spark, cfg, input_path=args.input, output=args.output),
    )

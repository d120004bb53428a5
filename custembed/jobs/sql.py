"""``custembed sql "<query>"``: print a query's result against the project's catalogue."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from custembed.config import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("query", help="SQL; unqualified table names resolve in the project's database")
    parser.add_argument("--limit", type=int, default=50, help="rows to print (default 50)")


def run(spark, database: str, query: str, limit: int) -> None:  # type: ignore[no-untyped-def]
    from pyspark.errors import AnalysisException, ParseException

    spark.catalog.setCurrentDatabase(database)
    try:
        result = spark.sql(query)
        result.show(limit, truncate=60)
    except (AnalysisException, ParseException) as e:
        first = str(e).strip().splitlines()[0]
        raise ConfigError(f"query failed: {first}") from e


def main(argv: Sequence[str] | None = None) -> int:
    from custembed.jobs.common import job_main

    return job_main("sql", argv, add_arguments,
                    lambda spark, cfg, args, run_date: run(spark, cfg.project.database, args.query, args.limit))

"""``custembed sql "<query>"``: print a query's result against the project's catalogue.

A quick look must not be able to destroy a table: only read-only statements
run by default (SELECT, WITH … SELECT, VALUES, TABLE, SHOW, DESCRIBE, EXPLAIN).
Anything else (DROP, INSERT, ALTER, CREATE, …) is refused in one line with exit
code 2 unless ``--write`` is given.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence

from custembed.errors import QueryError, UserError

READ_ONLY_FIRST_WORDS = frozenset({"select", "with", "values", "table", "show", "describe", "desc", "explain", "from"})
# words that make a statement write, wherever they stand outside string literals and comments
WRITE_WORDS = frozenset(
    {
        "insert",
        "update",
        "delete",
        "merge",
        "drop",
        "create",
        "alter",
        "truncate",
        "replace",
        "load",
        "msck",
        "refresh",
        "cache",
        "uncache",
        "set",
        "reset",
        "add",
        "use",
        "grant",
        "revoke",
        "analyze",
        "repair",
    }
)
_LITERALS_AND_COMMENTS = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|`[^`]*`|--[^\n]*|/\*.*?\*/", re.S)


def statement_words(query: str) -> list[str]:
    """The lower-cased words of ``query``, with string literals, quoted names and comments removed."""
    return re.findall(r"[a-z_]+", _LITERALS_AND_COMMENTS.sub(" ", query).lower())


def check_read_only(query: str) -> None:
    """Raise ``UserError`` unless ``query`` is a read-only statement."""
    words = statement_words(query)
    if not words:
        raise QueryError("empty query")
    writes = sorted(WRITE_WORDS.intersection(words))
    if words[0] not in READ_ONLY_FIRST_WORDS or writes:
        what = words[0].upper() if words[0] not in READ_ONLY_FIRST_WORDS else writes[0].upper()
        raise UserError(
            f"refused: {what} is not a read-only statement (custembed sql runs SELECT, WITH, SHOW, DESCRIBE, "
            "EXPLAIN by default; pass --write to change tables)"
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("query", help="SQL; unqualified table names resolve in the project's database")
    parser.add_argument("--limit", type=int, default=50, help="rows to print (default 50)")
    parser.add_argument(
        "--write", action="store_true", help="allow statements that change or drop tables (refused by default)"
    )


def run(spark, database: str, query: str, limit: int, *, write: bool = False) -> None:  # type: ignore[no-untyped-def]
    """Runs ``query`` in ``database`` and prints up to ``limit`` rows; reads only, unless ``write``."""
    from pyspark.errors import AnalysisException, ParseException

    if not write:
        check_read_only(query)
    spark.catalog.setCurrentDatabase(database)
    try:
        result = spark.sql(query)
        result.show(limit, truncate=60)
    except (AnalysisException, ParseException) as e:
        first = str(e).strip().splitlines()[0]
        raise QueryError(f"query failed: {first}") from e


def main(argv: Sequence[str] | None = None) -> int:
    from custembed.jobs.common import job_main

    return job_main(
        "sql",
        argv,
        add_arguments,
        lambda spark, cfg, args, run_date: run(spark, cfg.project.database, args.query, args.limit, write=args.write),
    )

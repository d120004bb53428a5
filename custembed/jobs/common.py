"""What every job's ``main`` shares: arguments, config, logging, session lifecycle, errors, runs table."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from custembed.config import Config, load_config, parse_date
from custembed.errors import UserError
from custembed.io import Lake

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from custembed.catalogue import ActionCatalogue

log = logging.getLogger(__name__)

JobFn = Callable[["SparkSession", Config, argparse.Namespace, dt.date], Any]


def base_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"custembed {prog}")
    parser.add_argument("--conf", help="YAML file merged over conf/base.yaml")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config value, e.g. --set sequences.max_len=100 (repeatable)",
    )
    parser.add_argument("--run-date", help="run date YYYY-MM-DD (default: project.run_date, else today)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )
    for noisy in ("py4j", "urllib3", "matplotlib", "numba", "PIL", "alembic", "mlflow", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # PySpark logs every failed query with its full JVM stack trace; jobs report it in one line.
    for chatty in ("SQLQueryContextLogger", "DataFrameQueryContextLogger"):
        logging.getLogger(chatty).disabled = True


def resolve_run_date(arg: str | None, cfg: Config) -> dt.date:
    if arg:
        return parse_date(arg, "--run-date")
    if cfg.project.run_date:
        return parse_date(cfg.project.run_date, "project.run_date")
    return dt.datetime.now(dt.timezone.utc).date()


def lake_from(spark: SparkSession, cfg: Config) -> Lake:
    return Lake(spark, cfg.project.database, cfg.project.lake_dir, cfg.spark.table_format, dict(cfg.tables))


def run_catalogue(lake: Lake, cfg: Config, day: str) -> ActionCatalogue:
    """The action catalogue a run's sequences were built with: the configured file, plus the
    ``vocabulary`` rows of ``day`` when it takes items from data (a vocabulary, small by design:
    at most ``vocabulary.max_items`` rows reach the driver)."""
    from pyspark.sql import functions as F

    from custembed.catalogue import load_catalogue
    from custembed.errors import InputError

    catalogue = load_catalogue(cfg.sequences.catalogue)
    if not catalogue.needs_data:
        return catalogue
    rows = lake.read_partition("vocabulary", day).select("behaviour", "item", "id").orderBy(F.col("id")).collect()
    if not rows:
        raise InputError(f"no vocabulary for {day}: run `custembed sequences --run-date {day}` first")
    return catalogue.with_data_actions((r["behaviour"], r["item"], int(r["id"])) for r in rows)


def session_for(cfg: Config) -> tuple[SparkSession, bool]:
    """The active session if a caller (a test, a notebook, the demo) has one, else a new one to stop after."""
    from pyspark.sql import SparkSession

    from custembed.spark import build_session, ensure_database

    active = SparkSession.getActiveSession()
    if active is not None:
        ensure_database(active, cfg.project.database)
        return active, False
    return build_session(cfg.spark, cfg.project), True


def job_main(
    name: str,
    argv: Sequence[str] | None,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None,
    fn: JobFn,
    *,
    needs_spark: bool = True,
) -> int:
    """Parse, load config, run ``fn``.

    Returns 0 when done; 2 for a user mistake (``UserError``: one line, no stack
    trace); 1 for a crash (any other exception: the stack trace goes to the log).
    """
    parser = base_parser(name)
    if add_arguments:
        add_arguments(parser)
    args = parser.parse_args(list(argv) if argv is not None else None)
    setup_logging(args.verbose)
    # model loading prints progress bars and load reports per process; job logs say what matters
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    spark = None
    created = False
    try:
        cfg = load_config(args.conf, args.set)
        run_date = resolve_run_date(args.run_date, cfg)
        if needs_spark:
            spark, created = session_for(cfg)
        result = fn(spark, cfg, args, run_date)  # type: ignore[arg-type]
    except UserError as e:
        print(f"custembed {name}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"custembed {name}: interrupted", file=sys.stderr)
        return 130
    except Exception:
        log.exception("custembed %s: crashed (a bug or an environment failure, not a configuration mistake)", name)
        return 1
    finally:
        if spark is not None and created:
            spark.stop()
    if isinstance(result, Mapping):
        print_summary(name, result)
    return 0


def print_summary(name: str, result: Mapping[str, Any]) -> None:
    print(f"custembed {name}: done")
    for key, value in result.items():
        text = json.dumps(value, default=str) if isinstance(value, (dict, list, tuple)) else str(value)
        print(f"  {key}: {text}")


def as_utc(moment: dt.datetime) -> dt.datetime:
    """An aware UTC datetime; a naive ``moment`` is taken to hold UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=dt.timezone.utc)
    return moment.astimezone(dt.timezone.utc)


def record_run(
    lake: Lake,
    *,
    job: str,
    run_date: dt.date,
    started: dt.datetime,
    status: str,
    rows_read: int | None = None,
    rows_accepted: int | None = None,
    rows_rejected: int | None = None,
    rejected_by_reason: Mapping[str, int] | None = None,
    details: str | None = None,
) -> str:
    """Append one row to the ``runs`` audit table; returns the run id.

    ``started`` is an aware datetime or a naive one holding UTC. Both times are
    written as aware UTC datetimes: Spark reads a naive datetime in the driver's
    local zone, which would shift ``started_at``/``finished_at`` by its offset.
    """
    from custembed import schemas

    run_id = uuid.uuid4().hex[:12]
    finished = dt.datetime.now(dt.timezone.utc)
    row = (
        run_id,
        job,
        status,
        as_utc(started),
        finished,
        rows_read,
        rows_accepted,
        rows_rejected,
        dict(rejected_by_reason or {}),
        details,
        run_date.isoformat(),
    )
    lake.append(lake.spark.createDataFrame([row], schemas.RUNS), "runs")
    return run_id

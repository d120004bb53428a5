"""The scheduled job: sequences → embed (registered champions and the baseline) → score → report, per date.

The embed stages are incremental (``embed.incremental``): a customer whose sequence and
model are unchanged since the latest earlier run keeps that run's vector, so their cost
follows the customers with new events; their ``runs`` rows and the summary say how many
were carried over and how many embedded.

Each stage records its outcome in ``runs`` (job ``nightly:<stage>``). A rerun
for the same date skips stages that already succeeded for it and resumes from
the first unfinished one (``--force`` reruns everything). Every table is
written with dynamic partition overwrite for the run date only, so a failing
stage leaves earlier dates untouched. A stage stopped by a user mistake
(``UserError``: a missing table, a bad input) exits 2 with one line naming the
stage; a stage that crashes exits 1 with its stack trace in the log. Either way
the failure is recorded in ``runs`` and a rerun resumes from that stage.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from custembed.config import Config
from custembed.errors import UserError
from custembed.io import Lake

log = logging.getLogger(__name__)


class StageFailed(UserError):
    """A stage stopped on a user mistake: one line naming the stage, exit 2, earlier stages kept."""


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def succeeded_stages(lake: Lake, run_date: dt.date) -> set[str]:
    if not lake.exists("runs"):
        return set()
    rows = (
        lake.read_partition("runs", run_date.isoformat())
        .where(F.col("job").startswith("nightly:") & (F.col("status") == "succeeded"))
        .select("job")
        .distinct()
        .collect()
    )
    return {r["job"].split(":", 1)[1] for r in rows}


def stage_figures(outcome: Any) -> dict[str, Any]:
    """What a stage's summary says beyond its time: an embed stage's customers carried over and embedded."""
    if not isinstance(outcome, dict):
        return {}
    return {key: outcome[key] for key in ("carried_over", "embedded") if key in outcome}


def stages(
    cfg: Config, run_date: dt.date, sources: Sequence[str], with_report: bool
) -> list[tuple[str, Callable[[SparkSession], Any]]]:
    from custembed.jobs import embed, score, sequences

    plan: list[tuple[str, Callable[[SparkSession], Any]]] = [
        ("sequences", lambda spark: sequences.run(spark, cfg, run_date=run_date, products=cfg.score.products)),
    ]
    for source in sources:
        plan.append((f"embed-{source}", lambda spark, s=source: embed.run(spark, cfg, run_date=run_date, source=s)))
    plan.append(("score", lambda spark: score.run(spark, cfg, run_date=run_date)))
    if with_report:
        from custembed.jobs import report

        plan.append(("report", lambda spark: report.run(spark, cfg, run_date=run_date)))
    return plan


def run(
    spark: SparkSession,
    cfg: Config,
    *,
    run_date: dt.date,
    sources: Sequence[str],
    force: bool = False,
    with_report: bool = True,
) -> dict[str, Any]:
    """Runs the stages not yet done for ``run_date`` (reads ``runs``); each writes its tables and a ``runs`` row."""
    from custembed.jobs.common import lake_from, record_run

    lake = lake_from(spark, cfg)
    done = set() if force else succeeded_stages(lake, run_date)
    timings: dict[str, Any] = {}
    for name, stage in stages(cfg, run_date, sources, with_report):
        if name in done:
            log.info("nightly %s: stage %s already succeeded, skipped", run_date, name)
            timings[name] = "skipped (done)"
            continue
        started = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        t0 = time.monotonic()
        log.info("nightly %s: stage %s", run_date, name)
        try:
            outcome = stage(spark)
        except Exception as e:
            record_run(
                lake,
                job=f"nightly:{name}",
                run_date=run_date,
                started=started,
                status="failed",
                details=_first_line(e)[:500],
            )
            if isinstance(e, UserError):
                raise StageFailed(f"stage {name} failed: {_first_line(e)} (rerun to resume from this stage)") from e
            log.error("nightly %s: stage %s crashed; a rerun resumes from this stage", run_date, name)
            raise
        seconds = round(time.monotonic() - t0, 1)
        figures = stage_figures(outcome)
        record_run(
            lake,
            job=f"nightly:{name}",
            run_date=run_date,
            started=started,
            status="succeeded",
            details=json.dumps({"seconds": seconds, **figures}),
        )
        timings[name] = f"{seconds} s" + "".join(f"; {key} {value}" for key, value in figures.items())
    return {"run_date": run_date.isoformat(), "stages": timings}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sources",
        nargs="+",
        default=None,
        help="embedding sources: encoder names (registry champions) and/or counts "
        "(default: score.sources, else every trained encoder plus counts)",
    )
    parser.add_argument("--force", action="store_true", help="rerun stages that already succeeded")
    parser.add_argument("--no-report", action="store_true", help="skip the HTML report")


def default_sources(cfg: Config, lake_dir: str) -> list[str]:
    """score.sources, else the encoders with a registered version, plus the counts baseline."""
    if cfg.score.sources:
        return list(cfg.score.sources)
    from custembed.tracking import tracking_for

    tracking = tracking_for(cfg.tracking, lake_dir)
    registered = {m.name for m in tracking.client().search_registered_models()}
    return [n for n in cfg.train.encoders if tracking.model_name(n) in registered] + ["counts"]


def main(argv: Sequence[str] | None = None) -> int:
    from custembed.jobs.common import job_main

    def go(spark: SparkSession, cfg: Config, args: argparse.Namespace, run_date: dt.date) -> dict[str, Any]:
        sources = args.sources or default_sources(cfg, cfg.project.lake_dir)
        return run(spark, cfg, run_date=run_date, sources=sources, force=args.force, with_report=not args.no_report)

    return job_main("nightly", argv, add_arguments, go)

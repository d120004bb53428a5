"""``custembed journeys-generate``: continue every held-out test visit from its first points, per model.

For each model named in ``journeys.generate.models`` (or ``--encoder``) and each store
with held-out visits, the registered ``<encoder>-<store>`` model (alias or version
``journeys.generate.model_ref``) continues the prompt of each test visit: its tokens up to
its ``prompt_points``-th location code (paper: 7). Sampling runs on executors in a
``mapInPandas`` function that loads the model once per Python worker; nothing is
collected to the driver but the list of stores. Output: ``generated_journeys``, one row per
(visit, model), its counts from ``custembed.journeys.text.parse_journey``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from custembed.config import Config, JourneysGenerateConfig
from custembed.jobs import journeys_frames as frames

log = logging.getLogger(__name__)

GENERATED_SCHEMA = "store string, visit_id string, text string, n_positions int, n_purchases int, bad_tokens int"
SAMPLING_FIELDS = ("temperature", "top_k", "top_p", "max_new_tokens", "seed")


def generate_journeys(
    test_visits: DataFrame,
    *,
    model_dir: str,
    settings: JourneysGenerateConfig,
    model: str,
    version: str,
    train_fraction: float = 1.0,
) -> DataFrame:
    """``generated_journeys`` rows of one model over ``test_visits`` (``store, visit_id, text``)."""
    from custembed.udfs.journeys import generate_fn

    sampling = {name: getattr(settings, name) for name in SAMPLING_FIELDS}
    fn = generate_fn(model_dir, sampling=sampling, batch_size=settings.batch_size, threads=settings.threads_per_worker)
    prompts = (
        frames.prompts(test_visits, points=settings.prompt_points)
        .withColumn(frames.VISIT_ID, F.col(frames.VISIT_ID).cast("string"))
        # fixed partitioning and order: batches, hence their seeds, are the same on a rerun
        .repartition(settings.partitions, frames.STORE, frames.VISIT_ID)
        .sortWithinPartitions(frames.STORE, frames.VISIT_ID)
    )
    return prompts.mapInPandas(fn, GENERATED_SCHEMA).select(
        "*",
        F.lit(float(train_fraction)).alias("train_fraction"),
        F.lit(version).alias("version"),
        F.lit(model).alias("model"),
    )


def run(spark: SparkSession, cfg: Config, *, run_date: dt.date, models: Sequence[str] | None = None) -> dict[str, Any]:
    """Generate from every (model, store) registered; skip, with a warning, the pairs never trained."""
    from custembed.errors import ConfigError
    from custembed.jobs.common import lake_from, record_run
    from custembed.jobs.journeys_common import journey_model_name, test_journeys
    from custembed.tracking import tracking_for

    started = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    settings = cfg.journeys.generate
    names = list(models or settings.models)
    unknown = [name for name in names if name not in cfg.train.encoders]
    if unknown:
        raise ConfigError(f"unknown model(s) {unknown} (train.encoders: {', '.join(cfg.train.encoders)})")
    lake = lake_from(spark, cfg)
    day = run_date.isoformat()
    tracking = tracking_for(cfg.tracking, cfg.project.lake_dir)
    test_visits = test_journeys(lake, cfg.journeys.holdout, day=day)
    stores = sorted(r[frames.STORE] for r in test_visits.select(frames.STORE).distinct().collect())
    done: dict[str, Any] = {}
    for name in names:
        t0 = time.monotonic()
        per_store = []
        for store in stores:
            registered = journey_model_name(name, store)
            try:
                model_dir, version = tracking.encoder_uri(registered, settings.model_ref, staging=lake.path("models"))
            except ConfigError:
                log.warning("journeys-generate: no registered %s for store %s: skipped", name, store)
                continue
            per_store.append(
                generate_journeys(
                    test_visits.where(F.col(frames.STORE) == store),
                    model_dir=model_dir,
                    settings=settings,
                    model=name,
                    version=version,
                )
            )
            done[f"{name}@{store}"] = f"version {version}"
        if per_store:
            rows = per_store[0]
            for other in per_store[1:]:
                rows = rows.unionByName(other)
            write_generated(lake, rows, day)
        log.info("journeys-generate %s: %.1f s", name, time.monotonic() - t0)
    summary = {"models": done, "prompt_points": settings.prompt_points, "sampling": dataclasses.asdict(settings)}
    record_run(
        lake,
        job="journeys-generate",
        run_date=run_date,
        started=started,
        status="succeeded",
        details=json.dumps(summary, default=str),
    )
    return summary


def write_generated(lake: Any, rows: DataFrame, day: str) -> None:
    """Rows of one model, every store, into ``generated_journeys`` (its (dt, model) partition replaced)."""
    from custembed import schemas

    lake.write_partitions(rows.withColumn(schemas.DT, F.lit(day)), "generated_journeys")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--encoder",
        action="append",
        default=None,
        help="a model under train.encoders (repeatable; default: journeys.generate.models)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    from custembed.jobs.common import job_main

    def go(spark: SparkSession, cfg: Config, args: argparse.Namespace, run_date: dt.date) -> dict[str, Any]:
        return run(spark, cfg, run_date=run_date, models=args.encoder)

    return job_main("journeys-generate", argv, add_arguments, go)

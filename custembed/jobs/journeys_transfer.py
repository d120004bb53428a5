"""``custembed journeys-transfer``: the source store's model fine-tuned on the target store, against scratch.

For each fraction in ``journeys.transfer.fractions`` (paper: 1/1, 1/10, 1/100) of the
target store's training visits (nested seeded shares, :func:`custembed.jobs.journeys_frames.sample_visits`):

* ``<encoder>-finetuned``: the registered ``<encoder>-<source store>`` model trained further
  on that share, for ``fine_tune_epochs`` (paper: 3) at ``fine_tune_lr`` (default: the
  encoder's own). Its tokenizer keeps every id and, with ``extend_vocabulary``, grows by a
  BPE learnt on the share (the target store's codes would otherwise be cut into bytes:
  measured on the demo stores, store B's journeys took 2.3 tokens per position under store
  A's BPE, so a context window held under half a journey); the new embedding rows start at
  the mean of their pieces';
* ``<encoder>-scratch``: the same encoder trained from fresh weights, with a BPE of its
  own, on the same share, with the encoder's own budget.

The source model itself, not fine-tuned, also continues the target's prompts
(``<encoder>-source``, ``train_fraction`` 0): the floor fine-tuning should improve on.

All go through the train job (same launcher, checkpoints, MLflow: registered as
``<encoder>-<target>-finetuned-<fraction>`` / ``-scratch-<fraction>``), generate from the
target's held-out visits (``generated_journeys``, ``train_fraction`` set) and are
measured by ``journeys-evaluate`` (``journey_metrics``, one row per fraction).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Sequence
from typing import Any

from pyspark.sql import SparkSession

from custembed.config import Config

log = logging.getLogger(__name__)

FINETUNED = "finetuned"
SCRATCH = "scratch"
SOURCE = "source"


def with_encoder_settings(cfg: Config, name: str, **changes: Any) -> Config:
    """``cfg`` with fields of ``train.encoders.<name>`` replaced (fine-tuning's epochs and step size)."""
    encoders = dict(cfg.train.encoders)
    encoders[name] = dataclasses.replace(encoders[name], **changes)
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, encoders=encoders))


def fraction_label(fraction: float) -> str:
    return f"{fraction:g}"


def run(spark: SparkSession, cfg: Config, *, run_date: dt.date, evaluate: bool = True) -> dict[str, Any]:
    """Train, generate and (with ``evaluate``) measure both variants at every fraction."""
    from custembed.jobs import journeys_evaluate, train
    from custembed.jobs.common import lake_from
    from custembed.jobs.journeys_common import journey_model_name, test_journeys, training_journeys
    from custembed.jobs.journeys_generate import generate_journeys, write_generated
    from custembed.tracking import tracking_for

    settings = cfg.journeys.transfer
    encoder = settings.encoder
    lake = lake_from(spark, cfg)
    tracking = tracking_for(cfg.tracking, cfg.project.lake_dir)
    day = run_date.isoformat()
    source_dir, source_version = tracking.encoder_uri(
        journey_model_name(encoder, settings.source_store), cfg.train.alias, staging=lake.path("models")
    )
    base = cfg.train.encoders[encoder]
    fine_cfg = with_encoder_settings(
        cfg,
        encoder,
        epochs=settings.fine_tune_epochs,
        lr=settings.fine_tune_lr if settings.fine_tune_lr is not None else base.lr,
        early_stopping_patience=None,
    )
    test_visits = test_journeys(lake, cfg.journeys.holdout, day=day, store=settings.target_store)
    timings: dict[str, float] = {}

    def generated_by(model_dir: str, variant: str, version: str, fraction: float) -> Any:
        return generate_journeys(
            test_visits,
            model_dir=model_dir,
            settings=cfg.journeys.generate,
            model=f"{encoder}-{variant}",
            version=version,
            train_fraction=fraction,
        )

    # the source model as it is (share 0): the floor fine-tuning has to improve on
    generated: dict[str, list[Any]] = {
        SOURCE: [generated_by(source_dir, SOURCE, source_version, 0.0)],
        FINETUNED: [],
        SCRATCH: [],
    }
    target = settings.target_store
    for fraction in settings.fractions:
        # 1/100 of a store may be fewer visits than a batch on every process: smaller batches then
        share = training_journeys(
            lake, cfg.journeys.holdout, day=day, store=settings.target_store, fraction=fraction, seed=base.seed
        ).count()
        if share == 0:
            log.warning("journeys-transfer: fraction %s of %s holds no training visit: skipped", fraction, target)
            continue
        batch_size = max(1, min(base.batch_size, share * (100 - base.val_pct) // 100 // (2 * cfg.train.num_processes)))
        variants = (
            (FINETUNED, with_encoder_settings(fine_cfg, encoder, batch_size=batch_size), source_dir),
            (SCRATCH, with_encoder_settings(cfg, encoder, batch_size=batch_size), None),
        )
        log.info("journeys-transfer: fraction %s: %d training visits, batches of %d", fraction, share, batch_size)
        for variant, variant_cfg, init in variants:
            t0 = time.monotonic()
            name = journey_model_name(encoder, settings.target_store, f"{variant}-{fraction_label(fraction)}")
            train.run(
                spark,
                variant_cfg,
                run_date=run_date,
                encoder_name=encoder,
                store=settings.target_store,
                init_from=init,
                extend_vocabulary=settings.extend_vocabulary,
                train_fraction=fraction,
                registry_name=name,
                promote="always",  # each (variant, fraction) is its own model: its newest training is it
            )
            model_dir, version = tracking.encoder_uri(name, cfg.train.alias, staging=lake.path("models"))
            generated[variant].append(generated_by(model_dir, variant, version, fraction))
            timings[f"{variant} {fraction_label(fraction)}"] = round(time.monotonic() - t0, 1)
    for rows in (rows for rows in generated.values() if rows):
        union = rows[0]
        for other in rows[1:]:
            union = union.unionByName(other)
        write_generated(lake, union, day)
    summary: dict[str, Any] = {
        "source": f"{journey_model_name(encoder, settings.source_store)} version {source_version}",
        "target_store": settings.target_store,
        "timings_s": timings,
    }
    if evaluate:
        result = journeys_evaluate.run(spark, cfg, run_date=run_date)
        summary["curve"] = transfer_curve(lake.read_partition("journey_metrics", day), encoder)
        summary["protocol"] = result["protocol"]
    log.info("journeys-transfer: %s", summary["timings_s"])
    return summary


def transfer_curve(metrics: Any, encoder: str) -> dict[str, dict[str, float]]:
    """``<variant>`` → ``<fraction>`` → ``js_cells`` / ``js_purchase_zones`` (small: a handful of rows)."""
    rows = metrics.where(
        metrics.model.isin(f"{encoder}-{FINETUNED}", f"{encoder}-{SCRATCH}", f"{encoder}-{SOURCE}")
        & metrics.metric.isin("js_cells", "js_purchase_zones")
    ).collect()
    curve: dict[str, dict[str, float]] = {}
    for r in rows:
        curve.setdefault(f"{r['model']} {r['metric']}", {})[fraction_label(r["train_fraction"])] = round(r["value"], 5)
    return curve


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-evaluate", action="store_true", help="train and generate only")


def main(argv: Sequence[str] | None = None) -> int:
    from custembed.jobs.common import job_main

    def go(spark: SparkSession, cfg: Config, args: argparse.Namespace, run_date: dt.date) -> dict[str, Any]:
        return run(spark, cfg, run_date=run_date, evaluate=not args.no_evaluate)

    return job_main("journeys-transfer", argv, add_arguments, go)

"""The Markov chain baseline of system B, trained by ``custembed train --encoder journeys-markov``.

Counts of (state, next token) over the training journeys of a store come from Spark
built-ins (:func:`custembed.jobs.journeys_frames.markov_counts`: split, transform, explode,
groupBy); only the counts reach the driver, where they become the model file
(:class:`custembed.journeys.markov.MarkovChain`). The model is registered in MLflow like
the neural encoders, with the same lineage tags and the same "already registered" rule,
so generation and evaluation resolve every model the same way. No TorchDistributor: there
is nothing to train by gradient.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from custembed import lakefs
from custembed.config import Config
from custembed.encoders.base import FORMAT_VERSION, META_FILE
from custembed.jobs import journeys_frames as frames
from custembed.journeys.markov import KIND, MarkovChain
from custembed.tracking import LINEAGE_FILE, TAG_CUTOFF, TAG_INIT_CHECKPOINT, TAG_RUN_DATE, TAG_TRAINING_KEY

log = logging.getLogger(__name__)


def save_chain(chain: MarkovChain, target: str) -> str:
    """The chain and its ``custembed_encoder.json`` (kind ``journeys_markov``) under ``target`` (path or URI)."""
    meta = {"format_version": FORMAT_VERSION, "kind": KIND, "config": {"order": chain.order}}
    local = lakefs.local_path(target)
    with tempfile.TemporaryDirectory(prefix="custembed-markov-") as scratch:
        directory = Path(local) if local is not None else Path(scratch)
        chain.save(directory)
        (directory / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
        if local is None:
            lakefs.put_dir(scratch, target)
    return target


def train_markov(
    spark: SparkSession,
    cfg: Config,
    *,
    run_date: dt.date,
    encoder_name: str,
    store: str,
    train_fraction: float = 1.0,
    registry_name: str | None = None,
) -> dict[str, Any]:
    """Count, save and register the Markov chain of ``store``'s training journeys of ``run_date``."""
    from custembed.jobs.common import lake_from, record_run
    from custembed.jobs.journeys_common import journey_model_name, training_journeys
    from custembed.jobs.train import already_registered, journeys_files, registered_version, training_source
    from custembed.tracking import tracking_for

    started = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    t0 = time.monotonic()
    settings = cfg.train.encoders[encoder_name]
    order = cfg.journeys.model.markov_order
    lake = lake_from(spark, cfg)
    day = run_date.isoformat()
    name = registry_name or journey_model_name(encoder_name, store)
    journeys = training_journeys(
        lake, cfg.journeys.holdout, day=day, store=store, fraction=train_fraction, seed=settings.seed
    )
    training = {"kind": KIND, "order": order, "store": store, "train_fraction": train_fraction, "seed": settings.seed}
    source = training_source(journeys_files(journeys, day, store), training)
    tracking = tracking_for(cfg.tracking, cfg.project.lake_dir)
    registered = registered_version(tracking, name, source["key"])
    if registered is not None:
        return already_registered(
            lake, tracking, cfg, name, registered, run_date=run_date, promote=None, started=started
        )
    counts = frames.markov_counts(journeys, order=order)
    # the counts are the model: one row per (state, next) seen, small next to the journeys
    chain = MarkovChain.from_counts(
        order, ((int(r["order"]), r["state"], r["next"], int(r["count"])) for r in counts.toLocalIterator())
    )
    states = sum(len(s) for s in chain.transitions.values())
    if not chain.transitions.get(0):
        from custembed.errors import InputError

        raise InputError(f"no training journeys of store {store} for {day}: run `custembed journeys-prepare` first")
    output_dir = lakefs.join(lake.path("training", name, day), source["key"], "encoder")
    save_chain(chain, output_dir)
    lineage = {TAG_RUN_DATE: day, TAG_CUTOFF: "", TAG_INIT_CHECKPOINT: "", TAG_TRAINING_KEY: source["key"]}
    lakefs.write_text(lakefs.join(output_dir, LINEAGE_FILE), json.dumps(lineage, indent=2, sort_keys=True))
    run_id, _ = tracking.open_run(f"{name}/{day}/{source['key']}", {"encoder": encoder_name, **training})
    metrics = {"states": states}
    version = tracking.finish_run(run_id, metrics, output_dir, name, tags=lineage)
    # no validation loss to compare: the newest chain of the same data takes the alias
    tracking.record_promotion(name, version, cfg.train.alias, promoted=True, reason="a Markov chain is recounted")
    summary = {
        "encoder": encoder_name,
        "kind": KIND,
        "model": f"{tracking.model_name(name)} version {version} (alias {cfg.train.alias})",
        "order": order,
        "states": states,
        "seconds": round(time.monotonic() - t0, 1),
    }
    log.info("train %s: Markov chain of order %d, %d states, version %s", name, order, states, version)
    record_run(
        lake, job=f"train:{name}", run_date=run_date, started=started, status="succeeded", details=json.dumps(summary)
    )
    return summary

"""``custembed recommend``: the top-K next items of every customer, as a table for BI.

For a next-item encoder (BERT4Rec, SASRec) registered by ``train``, scores every item
of ``nextitem.behaviour`` as each customer's next action after the ``current`` view of
the run date's sequences (everything up to the run date), keeps the ``nextitem.k`` best
(without the items already in the history when ``nextitem.exclude_seen``), and writes
them to ``recommendations`` (customer_id, rank, item, score, model_version, dt, model).
Items are those of the vocabulary stored with the encoder (``vocabulary.json``), so
ids are the ones it was trained with, whatever the run date's catalogue. Scoring runs
in ``mapInPandas`` on the executors, the encoder loaded once per Python worker.
Rerunning a date replaces its partition for that model.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from custembed import lakefs, schemas, tables
from custembed.catalogue import VOCABULARY_FILE, StoredVocabulary
from custembed.config import Config, ConfigError
from custembed.errors import InputError
from custembed.io import Lake
from custembed.tracking import LINEAGE_FILE, TAG_HOLDOUT_LAST

log = logging.getLogger(__name__)

RECOMMENDATIONS_SCHEMA = "customer_id string, ids array<bigint>, scores array<double>"


@dataclass(frozen=True)
class RankingModel:
    """A next-item encoder to score with: where executors load it and what its ids stand for."""

    name: str  # the encoder's name under train.encoders, or the path given
    version: str
    model_dir: str
    vocabulary: StoredVocabulary
    holdout_last: int  # actions cut from the end of each training sequence (0: it saw every action)

    def item_ids(self, behaviour: str) -> dict[str, int]:
        ids = self.vocabulary.item_ids(behaviour)
        if not ids:
            raise ConfigError(
                f"the vocabulary of {self.name} (catalogue {self.vocabulary.catalogue}) has no items of behaviour "
                f"{behaviour!r}; set nextitem.behaviour"
            )
        return ids


def ranking_model(
    cfg: Config, lake: Lake, sequences: DataFrame, *, encoder: str, ref: str | None, model_path: str | None
) -> RankingModel:
    """The encoder ``--encoder`` (registry, eligible for the sequences' cutoff) or ``--model-path`` names."""
    from custembed.jobs.embed import eligible_encoder

    if model_path:
        model_dir, version, name = lakefs.qualify(model_path), "path", model_path
    else:
        if encoder not in cfg.train.encoders:
            raise ConfigError(f"unknown encoder {encoder!r} (train.encoders: {', '.join(cfg.train.encoders)})")
        model_dir, version, _ = eligible_encoder(lake, cfg, sequences, encoder, ref)
        name = encoder
    vocabulary_file = lakefs.join(model_dir, VOCABULARY_FILE)
    if not lakefs.exists(vocabulary_file):
        raise InputError(f"{model_dir} has no {VOCABULARY_FILE}: retrain it with this version of custembed train")
    lineage_file = lakefs.join(model_dir, LINEAGE_FILE)
    lineage = json.loads(lakefs.read_text(lineage_file)) if lakefs.exists(lineage_file) else {}
    return RankingModel(
        name,
        str(version),
        model_dir,
        StoredVocabulary.from_json(lakefs.read_text(vocabulary_file)),
        holdout_last=int(lineage.get(TAG_HOLDOUT_LAST) or 0),
    )


def histories(lake: Lake, day: str, *, partitions: int) -> DataFrame:
    """``customer_id``, ``tokens``, ``gaps``, ``cutoff`` of the run date's ``current`` view, in ``partitions``."""
    sequences = lake.read_partition("sequences", day, view=schemas.VIEW_CURRENT)
    return sequences.select(schemas.CUSTOMER_ID, "tokens", schemas.GAPS, "cutoff").repartition(partitions)


def recommend(
    histories_df: DataFrame,
    *,
    model_dir: str,
    item_ids: np.ndarray,
    k: int,
    exclude_seen: bool,
    batch_size: int,
    threads: int,
) -> DataFrame:
    """Histories → ``customer_id``, ``rank`` (1 = best), ``id``, ``score``: the ``k`` best of ``item_ids`` each."""
    from custembed.udfs.rank import recommend_partitions

    fn = recommend_partitions(
        model_dir, item_ids=item_ids, k=k, exclude_seen=exclude_seen, batch_size=batch_size, threads=threads
    )
    best = histories_df.mapInPandas(fn, RECOMMENDATIONS_SCHEMA)
    return best.select(
        schemas.CUSTOMER_ID,
        F.posexplode(F.arrays_zip(F.col("ids").alias("id"), F.col("scores").alias("score"))).alias("_pos", "_pair"),
    ).select(
        schemas.CUSTOMER_ID,
        (F.col("_pos") + 1).cast("int").alias("rank"),
        F.col("_pair.id").alias("id"),
        F.col("_pair.score").alias(tables.SCORE),
    )


def run(
    spark: SparkSession,
    cfg: Config,
    *,
    run_date: dt.date,
    encoder: str,
    ref: str | None = None,
    model_path: str | None = None,
) -> dict[str, Any]:
    """Write the ``recommendations`` partition (run date, model) and record the run."""
    from custembed.jobs.common import lake_from, record_run

    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.monotonic()
    lake = lake_from(spark, cfg)
    day = run_date.isoformat()
    settings = cfg.nextitem
    rows = histories(lake, day, partitions=settings.partitions)
    model = ranking_model(cfg, lake, rows, encoder=encoder, ref=ref, model_path=model_path)
    item_of = {action_id: item for item, action_id in model.item_ids(settings.behaviour).items()}
    item_ids = np.array(sorted(item_of), dtype=np.int64)
    items = spark.createDataFrame(sorted(item_of.items()), "id bigint, item string")
    log.info(
        "recommend %s (version %s): top %d of %d %s items for the customers of %s",
        model.name,
        model.version,
        settings.k,
        len(item_ids),
        settings.behaviour,
        day,
    )
    best = recommend(
        rows,
        model_dir=model.model_dir,
        item_ids=item_ids,
        k=settings.k,
        exclude_seen=settings.exclude_seen,
        batch_size=settings.batch_size,
        threads=cfg.embed.threads_per_worker or 1,
    )
    table = best.join(F.broadcast(items), "id").select(
        schemas.CUSTOMER_ID,
        "rank",
        schemas.ITEM,
        tables.SCORE,
        F.lit(model.version).alias("model_version"),
        F.lit(day).alias(schemas.DT),
        F.lit(model.name).alias("model"),
    )
    lake.write_partitions(table, "recommendations")
    written = lake.read_partition("recommendations", day, model=model.name)
    counts = written.agg(F.countDistinct(schemas.CUSTOMER_ID).alias("customers"), F.count("*").alias("rows")).first()
    summary = {
        "model": f"{model.name} version {model.version}",
        "behaviour": settings.behaviour,
        "k": settings.k,
        "customers": int(counts["customers"]) if counts else 0,
        "rows": int(counts["rows"]) if counts else 0,
        "seconds": round(time.monotonic() - t0, 1),
    }
    record_run(
        lake,
        job=f"recommend:{model.name}",
        run_date=run_date,
        started=started,
        status="succeeded",
        details=json.dumps(summary),
    )
    return summary


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--encoder", default="sasrec", help="a next-item encoder under train.encoders (default sasrec)")
    parser.add_argument("--ref", help="registry alias or version (default: embed.model_ref)")
    parser.add_argument("--model-path", help="a saved encoder directory instead of the registry")


def model_job_main(
    name: str,
    argv: Sequence[str] | None,
    run_fn: Callable[..., dict[str, Any]],
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
    options: Callable[[argparse.Namespace], dict[str, Any]] = lambda args: {},
) -> int:
    """``main`` of a job over one next-item model (recommend, rank, evaluate-nextitem): the model
    arguments, the job's own (``add_arguments``, read back by ``options``), then ``run_fn``."""
    from custembed.jobs.common import job_main

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    def arguments(parser: argparse.ArgumentParser) -> None:
        add_model_arguments(parser)
        if add_arguments is not None:
            add_arguments(parser)

    def go(spark: SparkSession, cfg: Config, args: argparse.Namespace, run_date: dt.date) -> dict[str, Any]:
        model = {"encoder": args.encoder, "ref": args.ref, "model_path": args.model_path}
        return run_fn(spark, cfg, run_date=run_date, **model, **options(args))

    return job_main(name, argv, arguments, go)


def main(argv: Sequence[str] | None = None) -> int:
    return model_job_main("recommend", argv, run)

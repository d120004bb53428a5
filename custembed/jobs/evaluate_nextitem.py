"""``custembed evaluate-nextitem``: HR@K and NDCG@K of a next-item encoder, time-ordered leave-one-out.

The protocol of the next-item literature (BERT4Rec, SASRec): each customer's last action
in the run date's ``current`` sequences is the test target, ranked after the actions
before it. The encoder must not have seen those targets: train it with
``holdout_last: 2`` (``conf/nextitem.yaml`` does), which cuts the last two actions (test
and validation targets) from every training sequence; the job refuses a model trained
without it unless ``--allow-seen-targets`` says the user knows.

Three protocols, each named in the output (:mod:`custembed.nextitem`): ``full`` (the
target ranks among every item of ``nextitem.behaviour``), ``sampled-uniform`` and
``sampled-popularity`` (among ``nextitem.negatives`` items the customer never interacted
with, drawn uniformly or by item popularity, seeded per customer). Ties are pessimistic.
Each figure comes with a 95 % interval: the normal interval of a mean over customers
(mean ± 1.96 · sd / √n; customers are independent cases, and n is in the thousands).

Ranks are computed in ``mapInPandas`` on the executors; Spark aggregates them. Writes
``nextitem_metrics`` (partition run date × model; a rerun replaces it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from custembed import schemas
from custembed.config import Config
from custembed.errors import InputError
from custembed.jobs.recommend import histories, model_job_main, ranking_model
from custembed.nextitem import PROTOCOLS, protocol_name

log = logging.getLogger(__name__)

RANKS_SCHEMA = "customer_id string, protocol string, rank bigint"
Z95 = 1.959963984540054


def item_popularity(histories_df: DataFrame, vocab_size: int) -> np.ndarray:
    """``[vocab_size]`` occurrences of each id in the histories (one small row per id reaches the driver)."""
    counts = histories_df.select(F.explode("tokens").alias("id")).groupBy("id").count().collect()
    popularity = np.zeros(vocab_size, dtype=np.float64)
    for row in counts:
        if 0 <= int(row["id"]) < vocab_size:
            popularity[int(row["id"])] = float(row["count"])
    return popularity


def summarise_ranks(ranks: DataFrame, ks: Sequence[int], negatives: int) -> DataFrame:
    """Per-customer ranks → ``protocol``, ``protocol_name``, ``metric``, ``k``, ``value``, ``ci_low``,
    ``ci_high``, ``customers``."""
    rank = F.col("rank").cast("double")
    per_case = ranks.select(
        "protocol",
        *[(rank < k).cast("double").alias(f"hr@{k}") for k in ks],
        *[F.when(rank < k, 1.0 / F.log2(rank + 2.0)).otherwise(0.0).alias(f"ndcg@{k}") for k in ks],
    )
    metrics = [f"{m}@{k}" for m in ("hr", "ndcg") for k in ks]
    stats = per_case.groupBy("protocol").agg(
        F.count(F.lit(1)).alias("customers"),
        *[F.avg(F.col(f"`{m}`")).alias(f"mean_{i}") for i, m in enumerate(metrics)],
        *[F.stddev_samp(F.col(f"`{m}`")).alias(f"sd_{i}") for i, m in enumerate(metrics)],
    )
    names = F.create_map(*[x for p in PROTOCOLS for x in (F.lit(p), F.lit(protocol_name(p, negatives)))])
    rows = stats.select(
        "protocol",
        "customers",
        F.explode(
            F.array(
                *[
                    F.struct(
                        F.lit(m.split("@")[0]).alias("metric"),
                        F.lit(int(m.split("@")[1])).alias("k"),
                        F.col(f"mean_{i}").alias("value"),
                        (F.coalesce(F.col(f"sd_{i}"), F.lit(0.0)) / F.sqrt(F.col("customers"))).alias("se"),
                    )
                    for i, m in enumerate(metrics)
                ]
            )
        ).alias("_m"),
    )
    return rows.select(
        "protocol",
        F.element_at(names, F.col("protocol")).alias("protocol_name"),
        F.col("_m.metric").alias("metric"),
        F.col("_m.k").alias("k"),
        F.col("_m.value").alias("value"),
        F.greatest(F.col("_m.value") - F.lit(Z95) * F.col("_m.se"), F.lit(0.0)).alias("ci_low"),
        F.least(F.col("_m.value") + F.lit(Z95) * F.col("_m.se"), F.lit(1.0)).alias("ci_high"),
        F.col("customers").cast("bigint").alias("customers"),
    )


def run(
    spark: SparkSession,
    cfg: Config,
    *,
    run_date: dt.date,
    encoder: str,
    ref: str | None = None,
    model_path: str | None = None,
    allow_seen_targets: bool = False,
) -> dict[str, Any]:
    """Rank every customer's last action under every protocol; write ``nextitem_metrics``."""
    from custembed.jobs.common import lake_from, record_run
    from custembed.udfs.rank import evaluate_partitions

    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.monotonic()
    lake = lake_from(spark, cfg)
    day = run_date.isoformat()
    settings = cfg.nextitem
    rows = histories(lake, day, partitions=settings.partitions)
    model = ranking_model(cfg, lake, rows, encoder=encoder, ref=ref, model_path=model_path)
    if not allow_seen_targets and model.holdout_last < 1:
        raise InputError(
            f"{model.name} was trained on every action (holdout_last 0), the test targets included; train it "
            "with holdout_last: 2 (conf/nextitem.yaml) or pass --allow-seen-targets"
        )
    vocab_size = model.vocabulary.vocab_size
    candidates = np.zeros(vocab_size, dtype=bool)
    candidates[list(model.item_ids(settings.behaviour).values())] = True
    popularity = item_popularity(rows, vocab_size)
    fn = evaluate_partitions(
        model.model_dir,
        candidates=candidates,
        popularity=popularity,
        negatives=settings.negatives,
        seed=settings.seed,
        batch_size=settings.batch_size,
        threads=cfg.embed.threads_per_worker or 1,
    )
    log.info(
        "evaluate-nextitem %s (version %s): last %s action of each customer of %s among %d items",
        model.name,
        model.version,
        settings.behaviour,
        day,
        int(candidates.sum()),
    )
    ranks = rows.where(F.size("tokens") >= 2).mapInPandas(fn, RANKS_SCHEMA)
    table = summarise_ranks(ranks, settings.ks, settings.negatives).select(
        "*",
        F.lit(model.version).alias("model_version"),
        F.lit(day).alias(schemas.DT),
        F.lit(model.name).alias("model"),
    )
    lake.write_partitions(table, "nextitem_metrics")
    written = lake.read_partition("nextitem_metrics", day, model=model.name).orderBy("protocol", "metric", "k")
    figures = [
        f"{r['protocol']:19s} {r['metric']}@{r['k']:<3d} {r['value']:.4f} [{r['ci_low']:.4f}, {r['ci_high']:.4f}]"
        f" n={r['customers']}"
        for r in written.collect()  # a few rows: protocols x metrics x cut-offs
    ]
    for line in figures:
        log.info("evaluate-nextitem %s: %s", model.name, line)
    summary = {
        "model": f"{model.name} version {model.version}",
        "protocols": {p: protocol_name(p, settings.negatives) for p in PROTOCOLS},
        "interval": "95 % normal interval of the mean over customers",
        "figures": figures,
        "seconds": round(time.monotonic() - t0, 1),
    }
    record_run(
        lake,
        job=f"evaluate-nextitem:{model.name}",
        run_date=run_date,
        started=started,
        status="succeeded",
        details=json.dumps(summary),
    )
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allow-seen-targets",
        action="store_true",
        help="evaluate a model trained without holdout_last (its figures are optimistic)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    return model_job_main(
        "evaluate-nextitem", argv, run, add_arguments, lambda args: {"allow_seen_targets": args.allow_seen_targets}
    )

"""``custembed segment --encoder NAME``: marketing segments from any source's customer embeddings.

k-means (Spark MLlib) on the embeddings of one source (a learned encoder, a hybrid
input or ``counts``) for the run date's ``segment.view``. The number of segments is
chosen by silhouette (squared Euclidean, MLlib's ``ClusteringEvaluator``): each k of
``segment.k_min..k_max`` is fitted on a seeded sample of ``segment.choose_sample``
customers and scored there; the best k is then fitted on every customer. Vectors are
L2-normalised first (``segment.normalize``), so segments group directions, as cosine
similarity does.

Writes, partitioned by run date and model (a rerun replaces them):

* ``segments``: customer_id, segment, distance (to its segment's centre), k;
* ``segment_profiles``: per segment its size and share, the actions most
  over-represented among its customers (lift over all customers above 1, among actions
  at least 5 % of the segment has; none listed when no action stands out), the share of
  its customers who bought anything (``buyers_share``), and the silhouette of the chosen k.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import Window as SparkWindow
from pyspark.sql import functions as F

from custembed import schemas, tables
from custembed.config import Config, SegmentConfig
from custembed.errors import InputError

log = logging.getLogger(__name__)

FEATURES = "_features"
MIN_REACH = 0.05  # an action listed in a profile is held by at least this share of the segment


def features(embeddings: DataFrame, *, normalize: bool) -> DataFrame:
    """``customer_id``, ``vector`` → ``customer_id`` and an MLlib vector column ``_features`` (L2-normalised or not)."""
    from pyspark.ml.feature import Normalizer
    from pyspark.ml.functions import array_to_vector

    rows = embeddings.select(schemas.CUSTOMER_ID, array_to_vector(tables.VECTOR).alias("_raw"))
    if not normalize:
        return rows.withColumnRenamed("_raw", FEATURES)
    return Normalizer(inputCol="_raw", outputCol=FEATURES, p=2.0).transform(rows).drop("_raw")


def choose_k(sample: DataFrame, cfg: SegmentConfig) -> tuple[int, dict[int, float]]:
    """(best k, silhouette of each k) of k-means fitted on ``sample`` (``_features``)."""
    from pyspark.ml.clustering import KMeans
    from pyspark.ml.evaluation import ClusteringEvaluator

    evaluator = ClusteringEvaluator(featuresCol=FEATURES, predictionCol="segment", metricName="silhouette")
    scores: dict[int, float] = {}
    for k in range(cfg.k_min, cfg.k_max + 1):
        model = KMeans(k=k, seed=cfg.seed, maxIter=cfg.max_iter, featuresCol=FEATURES, predictionCol="segment").fit(
            sample
        )
        scores[k] = float(evaluator.evaluate(model.transform(sample)))
        log.info("segment: k=%d silhouette %.4f", k, scores[k])
    best = max(scores, key=lambda k: (scores[k], -k))  # ties: fewer segments
    return best, scores


def _distance(centres: Sequence[Sequence[float]]) -> Column:
    """Euclidean distance of ``_features`` to the centre of its ``segment``, with built-ins only."""
    from pyspark.ml.functions import vector_to_array

    table = F.array(*[F.array(*[F.lit(float(x)) for x in centre]) for centre in centres])
    centre = F.element_at(table, F.col("segment") + 1)
    squares = F.zip_with(vector_to_array(F.col(FEATURES)), centre, lambda a, b: (a - b) * (a - b))
    return F.sqrt(F.aggregate(squares, F.lit(0.0), lambda acc, x: acc + x))


def assign(rows: DataFrame, *, k: int, cfg: SegmentConfig) -> DataFrame:
    """k-means with ``k`` segments fitted on every row → ``customer_id``, ``segment``, ``distance``."""
    from pyspark.ml.clustering import KMeans

    model = KMeans(k=k, seed=cfg.seed, maxIter=cfg.max_iter, featuresCol=FEATURES, predictionCol="segment").fit(rows)
    centres = [list(c) for c in model.clusterCenters()]  # k x width: the model, not the data
    return model.transform(rows).select(
        schemas.CUSTOMER_ID, F.col("segment").cast("int").alias("segment"), _distance(centres).alias("distance")
    )


def profiles(
    segments: DataFrame, sequences: DataFrame, texts: DataFrame, *, buying_ids: Sequence[int], top: int
) -> DataFrame:
    """Per segment: ``customers``, ``share``, ``top_actions`` (most over-represented, by lift), ``buyers_share``.

    ``sequences``: ``customer_id``, ``tokens``; ``texts``: ``id``, ``text`` of every action id.
    """
    held = segments.join(sequences.select(schemas.CUSTOMER_ID, "tokens"), schemas.CUSTOMER_ID)
    reach = held.select("segment", F.explode(F.array_distinct("tokens")).alias("id"))
    by_segment = reach.groupBy("segment", "id").agg(F.count(F.lit(1)).alias("reach"))
    sizes = segments.groupBy("segment").agg(F.count(F.lit(1)).alias("customers"))
    total = segments.agg(F.count(F.lit(1)).alias("n"))
    overall = by_segment.groupBy("id").agg(F.sum("reach").alias("reach_all"))
    lifted = (
        by_segment.join(sizes, "segment")
        .join(overall, "id")
        .crossJoin(total)
        .select(
            "segment",
            "id",
            (F.col("reach") / F.col("customers")).alias("share"),
            ((F.col("reach") / F.col("customers")) / (F.col("reach_all") / F.col("n"))).alias("lift"),
        )
        .where((F.col("share") >= MIN_REACH) & (F.col("lift") > 1.0))  # over-represented only
        .join(F.broadcast(texts), "id")
    )
    order = SparkWindow.partitionBy("segment").orderBy(F.col("lift").desc(), F.col("id"))
    top_actions = (
        lifted.withColumn("_r", F.row_number().over(order))
        .where(F.col("_r") <= top)
        .groupBy("segment")
        .agg(
            F.transform(
                F.array_sort(F.collect_list(F.struct("_r", "text", "lift"))),
                lambda x: F.format_string("%s (x%.1f)", x["text"], x["lift"]),
            ).alias("top_actions")
        )
    )
    bought = F.exists("tokens", lambda t: t.isin(list(buying_ids))) if buying_ids else F.lit(False)
    buyers = held.groupBy("segment").agg(F.avg(bought.cast("double")).alias("buyers_share"))
    return (
        sizes.crossJoin(total)
        .join(top_actions, "segment", "left")
        .join(buyers, "segment", "left")
        .select(
            "segment",
            F.col("customers").cast("bigint").alias("customers"),
            (F.col("customers") / F.col("n")).alias("share"),
            F.coalesce("top_actions", F.array().cast("array<string>")).alias("top_actions"),
            F.coalesce("buyers_share", F.lit(0.0)).alias("buyers_share"),
        )
    )


def run(spark: SparkSession, cfg: Config, *, run_date: dt.date, source: str) -> dict[str, Any]:
    """Segments and their profiles for one source's embeddings of the run date."""
    from custembed.jobs.common import lake_from, record_run, run_catalogue

    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.monotonic()
    lake = lake_from(spark, cfg)
    day = run_date.isoformat()
    settings = cfg.segment
    embedded = lake.read_partition("embeddings", day, view=settings.view, source=source)
    rows = features(embedded, normalize=settings.normalize).persist()
    try:
        n = rows.count()
        if n < settings.k_max:
            raise InputError(
                f"{n} customers have {settings.view!r} embeddings of {source!r} for {day} (segment.k_max is "
                f"{settings.k_max}): run `custembed embed --encoder {source}` first"
            )
        sample = rows.sample(fraction=min(1.0, settings.choose_sample / n), seed=settings.seed).persist()
        try:
            k, silhouettes = choose_k(sample, settings)
        finally:
            sample.unpersist()
        log.info("segment %s: %d customers, k = %d (silhouette %.4f)", source, n, k, silhouettes[k])
        assigned = assign(rows, k=k, cfg=settings)
        lake.write_partitions(
            assigned.select("*", F.lit(k).alias("k"), F.lit(day).alias(schemas.DT), F.lit(source).alias("model")),
            "segments",
        )
    finally:
        rows.unpersist()
    segments = lake.read_partition("segments", day, model=source)
    catalogue = run_catalogue(lake, cfg, day)
    texts = spark.createDataFrame(list(enumerate(catalogue.id_to_text())), "id int, text string")
    buying = [a.id for a in catalogue.actions if a.behaviour == "buying"]
    sequences = lake.read_partition("sequences", day, view=settings.view)
    profile = profiles(segments, sequences, texts, buying_ids=buying, top=settings.top_actions).select(
        "*",
        F.lit(silhouettes[k]).alias("silhouette"),
        F.lit(k).alias("k"),
        F.lit(day).alias(schemas.DT),
        F.lit(source).alias("model"),
    )
    lake.write_partitions(profile, "segment_profiles")
    shown = lake.read_partition("segment_profiles", day, model=source).orderBy("segment").collect()  # k rows
    lines = [
        f"segment {r['segment']}: {r['customers']} customers ({r['share']:.1%}), buyers {r['buyers_share']:.1%}; "
        + "; ".join(r["top_actions"])
        for r in shown
    ]
    for line in lines:
        log.info("segment %s: %s", source, line)
    summary = {
        "source": source,
        "customers": n,
        "k": k,
        "silhouette_by_k": {str(key): round(v, 4) for key, v in silhouettes.items()},
        "profiles": lines,
        "seconds": round(time.monotonic() - t0, 1),
    }
    record_run(
        lake,
        job=f"segment:{source}",
        run_date=run_date,
        started=started,
        status="succeeded",
        rows_read=n,
        rows_accepted=n,
        rows_rejected=0,
        details=json.dumps(summary),
    )
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--encoder", required=True, help="the embedding source to segment (e.g. bert4rec, counts)")


def main(argv: Sequence[str] | None = None) -> int:
    from custembed.jobs.common import job_main

    return job_main(
        "segment",
        argv,
        add_arguments,
        lambda spark, cfg, args, run_date: run(spark, cfg, run_date=run_date, source=args.encoder),
    )

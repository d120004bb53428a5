"""Step 3b: per-product classifiers on the embeddings, propensity scores, metrics and lift tables.

For every embedding source (BERT4Rec, the fine-tuned LM, the counts
baseline, ...) and every configured product:

* training set: ``train`` view embeddings with labels of the ``train`` window,
  balanced 50/50 by seeded sampling of non-buyers (the paper's choice;
  ``score.balance: class_weight`` keeps every row and weights classes instead);
* test set: the same customers with labels of the ``test`` window, at the
  natural rate;
* classifiers are fitted one (source, product, classifier) group per Python
  worker with ``applyInPandas``; with ``spark_random_forest`` Spark MLlib fits
  them distributed instead, for training sets too large for one worker;
* ``model_metrics`` and ``decile_lift`` are computed in Spark from the scored
  test set; ``propensity_scores`` scores every customer's ``current`` view.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from custembed import schemas
from custembed.config import Config, ConfigError, ScoreConfig
from custembed.io import Lake
from custembed.metrics import binary_metrics, decile_lift, with_deciles

log = logging.getLogger(__name__)

KEYS = ("source", "product", "classifier")
MODEL_SCHEMA = ("source string, product string, classifier string, model binary, train_rows long, "
                "train_seconds double, message string")
SPARK_RF = "spark_random_forest"


def labelled(embeddings: DataFrame, labels: DataFrame, *, window: str) -> DataFrame:
    """(source, product, customer_id, vector, label) of the ``train`` view and one label window."""
    return embeddings.where(F.col(schemas.VIEW) == schemas.VIEW_TRAIN).select("source", schemas.CUSTOMER_ID,
                                                                              "vector").join(
        labels.where(F.col("label_window") == window).select(schemas.CUSTOMER_ID, "product", "label"),
        schemas.CUSTOMER_ID,
    )


def balance(train: DataFrame, *, fractions: dict[tuple[str, str], float], seed: int) -> DataFrame:
    """Keep every buyer and a seeded ``fractions[(source, product)]`` share of non-buyers."""
    if not fractions:
        return train.limit(0)
    keys = F.create_map(*[x for (s, p), f in fractions.items() for x in (F.lit(f"{s}\u0001{p}"), F.lit(f))])
    keep = F.coalesce(F.try_element_at(keys, F.concat_ws("\u0001", "source", "product")), F.lit(0.0))
    return train.where((F.col("label") == 1) | (F.rand(seed) < keep))


def undersample_fractions(train: DataFrame) -> dict[tuple[str, str], float]:
    """Share of non-buyers to keep per (source, product) for a 50/50 training set (one small aggregate)."""
    counts = train.groupBy("source", "product").agg(
        F.sum("label").alias("pos"), F.sum(1 - F.col("label")).alias("neg")).collect()
    return {(r["source"], r["product"]): (min(1.0, r["pos"] / r["neg"]) if r["neg"] else 0.0) for r in counts}


def fit_models(train: DataFrame, tasks: DataFrame, *, seed: int, class_weight: bool) -> DataFrame:
    """One fitted model per (source, product, classifier) in ``tasks``; each group on one worker."""
    from custembed.udfs.classify import fit_groups

    jobs = train.join(F.broadcast(tasks), ["source", "product"])
    fn = fit_groups(seed=seed, class_weight=class_weight, keys=("source", "product"))
    return jobs.groupBy(*KEYS).applyInPandas(fn, MODEL_SCHEMA)


def apply_models(rows: DataFrame, models: dict[tuple[str, str, str], bytes]) -> DataFrame:
    """Score (source, product, classifier, vector, ...) rows with their model (broadcast once)."""
    from custembed.udfs.classify import score_partitions

    spark = rows.sparkSession
    shared = spark.sparkContext.broadcast(models)
    schema = ", ".join(f"{f.name} {f.dataType.simpleString()}" for f in rows.schema.fields if f.name != "vector")
    return rows.mapInPandas(score_partitions(shared, KEYS), f"{schema}, score double")


def spark_forest(train: DataFrame, targets: Sequence[DataFrame], *,
                 seed: int) -> tuple[DataFrame, list[DataFrame]]:
    """The distributed path: one MLlib random forest per (source, product), fitted once and applied
    to every frame of ``targets``; (models info, scored rows per target)."""
    from pyspark.ml.classification import RandomForestClassifier
    from pyspark.ml.functions import array_to_vector, vector_to_array

    spark = train.sparkSession
    pairs = [(r["source"], r["product"]) for r in train.select("source", "product").distinct().collect()]
    if not pairs:
        raise ConfigError("no training rows: are there embeddings and labels for this run date?")
    infos = []
    scored: list[DataFrame | None] = [None] * len(targets)
    for source, product in sorted(pairs):
        t0 = time.perf_counter()
        part = train.where((F.col("source") == source) & (F.col("product") == product))
        part = part.select(array_to_vector("vector").alias("features"), F.col("label").cast("double"))
        model = RandomForestClassifier(numTrees=100, maxDepth=10, seed=seed).fit(part)
        for i, rows in enumerate(targets):
            target = rows.where((F.col("source") == source) & (F.col("product") == product))
            one = model.transform(target.withColumn("features", array_to_vector("vector"))).select(
                *[c for c in target.columns if c != "vector"], vector_to_array("probability")[1].alias("score"))
            scored[i] = one if scored[i] is None else scored[i].unionByName(one)  # type: ignore[union-attr]
        infos.append((source, product, SPARK_RF, b"", int(part.count()), time.perf_counter() - t0, "ok"))
    return spark.createDataFrame(infos, MODEL_SCHEMA), [frame for frame in scored if frame is not None]


def run(spark: SparkSession, cfg: Config, *, run_date: dt.date) -> dict[str, Any]:
    from custembed.jobs.common import lake_from, record_run

    started = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    t0 = time.monotonic()
    score_cfg: ScoreConfig = cfg.score
    lake: Lake = lake_from(spark, cfg)
    day = run_date.isoformat()
    products = list(score_cfg.products)
    if not products:
        raise ConfigError("score.products is empty: name the products to score")
    embeddings = lake.read_partition("embeddings", day)
    available = sorted(r["source"] for r in embeddings.select("source").distinct().collect())
    sources = list(score_cfg.sources) or available
    missing = [s for s in sources if s not in available]
    if missing:
        raise ConfigError(f"no embeddings of source {missing[0]!r} for {day}: run `custembed embed --encoder "
                          f"{missing[0]}` first (available: {', '.join(available) or 'none'})")
    embeddings = embeddings.where(F.col("source").isin(sources))
    labels = lake.read_partition("labels", day).where(F.col("product").isin(products))
    windows = {r["label_window"] for r in labels.select("label_window").distinct().collect()}
    if not {"train", "test"} <= windows:
        raise ConfigError(f"labels for {day} lack the train or test window (have: {sorted(windows)}): "
                          "is the run date late enough for both label windows?")
    train = labelled(embeddings, labels, window="train")
    test = labelled(embeddings, labels, window="test")
    class_weight = score_cfg.balance == "class_weight"
    if score_cfg.balance not in ("undersample", "class_weight"):
        raise ConfigError(f"score.balance: {score_cfg.balance!r} (undersample or class_weight)")
    if not class_weight:
        train = balance(train, fractions=undersample_fractions(train), seed=score_cfg.seed)

    tasks = [(s, p, score_cfg.classifier) for s in sources for p in products]
    comparison = score_cfg.comparison
    if comparison.product:
        if comparison.product not in products:
            raise ConfigError(f"score.comparison.product {comparison.product!r} is not in score.products")
        comparison_source = comparison.source or sources[0]
        tasks += [(comparison_source, comparison.product, c) for c in comparison.classifiers
                  if c != score_cfg.classifier and c != SPARK_RF]
    current = embeddings.where(F.col(schemas.VIEW) == schemas.VIEW_CURRENT).select("source", schemas.CUSTOMER_ID,
                                                                                   "vector")
    product_rows = spark.createDataFrame([(p,) for p in products], "product string")
    if score_cfg.classifier == SPARK_RF:
        infos, (scored_test, scored_current) = spark_forest(
            train,
            [test.withColumn("classifier", F.lit(SPARK_RF)),
             current.crossJoin(product_rows).withColumn("classifier", F.lit(SPARK_RF))],
            seed=score_cfg.seed)
        extra = [t for t in tasks if t[2] != SPARK_RF]
        models: dict[tuple[str, str, str], bytes] = {}
        if extra:
            task_rows = spark.createDataFrame(extra, "source string, product string, classifier string")
            fitted = fit_models(train, task_rows, seed=score_cfg.seed, class_weight=class_weight)
            fitted_rows = fitted.collect()  # one small row per model
            models = {(r["source"], r["product"], r["classifier"]): bytes(r["model"]) for r in fitted_rows}
            infos = infos.unionByName(spark.createDataFrame(fitted_rows, MODEL_SCHEMA))
            scored_test = scored_test.unionByName(apply_models(test.join(F.broadcast(task_rows),
                                                                         ["source", "product"]), models))
    else:
        task_rows = spark.createDataFrame(tasks, "source string, product string, classifier string")
        fitted_rows = fit_models(train, task_rows, seed=score_cfg.seed, class_weight=class_weight).collect()
        models = {(r["source"], r["product"], r["classifier"]): bytes(r["model"]) for r in fitted_rows}
        infos = spark.createDataFrame(fitted_rows, MODEL_SCHEMA)
        scored_test = apply_models(test.join(F.broadcast(task_rows), ["source", "product"]), models)
        scored_current = apply_models(
            current.crossJoin(F.broadcast(product_rows)).withColumn("classifier", F.lit(score_cfg.classifier)),
            models)
    scored_test = scored_test.persist()
    try:
        metrics = binary_metrics(scored_test.where(F.col("score").isNotNull()), groups=KEYS,
                                 threshold=score_cfg.threshold)
        lift = decile_lift(scored_test.where(F.col("score").isNotNull()), groups=KEYS)
        top = lift.where(F.col("decile") == 1).select(*KEYS, F.col("lift").alias("top10_lift"))
        info = infos.drop("model")
        metric_rows = info.join(metrics, list(KEYS), "left").join(top, list(KEYS), "left")
        metric_rows = metric_rows.withColumn(
            "message",
            F.when(F.col("message") != "ok", F.col("message"))
            .when(F.coalesce(F.col("positives"), F.lit(0)) == 0, F.lit("no buyers in the test window: AUC undefined"))
            .otherwise(F.lit("ok")),
        ).withColumn(schemas.DT, F.lit(day))
        lake.write_partitions(metric_rows, "model_metrics")
        lake.write_partitions(lift.withColumn(schemas.DT, F.lit(day)), "decile_lift")
    finally:
        scored_test.unpersist()
    if score_cfg.scoring_source:
        scored_current = scored_current.where(F.col("source") == score_cfg.scoring_source)
    propensity = with_deciles(scored_current.where(F.col("score").isNotNull()),
                              groups=("source", "product")).withColumn(schemas.DT, F.lit(day))
    lake.write_partitions(propensity, "propensity_scores")
    refresh_bi_views(lake)
    summary: dict[str, Any] = {"sources": sources, "products": products, "seconds": round(time.monotonic() - t0, 1),
                               "tables": ", ".join(lake.table(t) for t in ("model_metrics", "decile_lift",
                                                                           "propensity_scores"))}
    record_run(lake, job="score", run_date=run_date, started=started, status="succeeded",
               details=json.dumps(summary))
    print_comparison(lake, day, classifier=score_cfg.classifier)
    return summary


def comparison_table(lake: Lake, day: str, *, classifier: str) -> list[dict[str, Any]]:
    """(product, source, auc, f1, top10_lift) rows of ``model_metrics`` for the default classifier."""
    rows = (lake.read_partition("model_metrics", day).where(F.col("classifier") == classifier)
            .select("product", "source", "auc", "f1", "top10_lift", "positives", "message")
            .orderBy("product", "source").collect())
    return [r.asDict() for r in rows]


def print_comparison(lake: Lake, day: str, *, classifier: str) -> None:
    """The model comparison as a text table: per product, AUC / F1 / top-10 % lift per source."""
    rows = comparison_table(lake, day, classifier=classifier)
    if not rows:
        return
    print(f"\nmodel comparison ({classifier}, test window, run date {day})")
    print(f"{'product':<18} {'source':<10} {'AUC':>6} {'F1':>6} {'lift@10%':>9} {'buyers':>7}")

    def fmt(value: Any, width: int) -> str:
        return f"{value:>{width}.3f}" if isinstance(value, float) else f"{'-':>{width}}"

    for r in rows:
        print(f"{r['product']:<18} {r['source']:<10} {fmt(r['auc'], 6)} {fmt(r['f1'], 6)} "
              f"{fmt(r['top10_lift'], 9)} {r['positives'] if r['positives'] is not None else '-':>7}")
    sources = sorted({r["source"] for r in rows})
    for s in sources:
        mine = [r for r in rows if r["source"] == s and isinstance(r["auc"], float)]
        if mine:
            auc = sum(r["auc"] for r in mine) / len(mine)
            lifts = [r["top10_lift"] for r in mine if isinstance(r["top10_lift"], float)]
            print(f"{'mean':<18} {s:<10} {auc:>6.3f} {'':>6} {sum(lifts) / max(1, len(lifts)):>9.3f}")


def refresh_bi_views(lake: Lake) -> None:
    """``top_decile_customers``: the 10 % most likely buyers per product and source of the latest run."""
    scores = lake.table("propensity_scores")
    view = lake.table("top_decile_customers")
    lake.spark.sql(
        f"""CREATE OR REPLACE VIEW {view} AS
        SELECT customer_id, product, source, classifier, score, dt
        FROM {scores}
        WHERE decile = 1 AND dt = (SELECT max(dt) FROM {scores})"""
    )


def main(argv: Sequence[str] | None = None) -> int:
    from custembed.jobs.common import job_main

    return job_main("score", argv, None, lambda spark, cfg, args, run_date: run(spark, cfg, run_date=run_date))

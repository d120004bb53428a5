"""Binary-classification metrics and decile lift, computed in Spark (no collect of scored rows).

Inputs are scored rows: group columns (e.g. source, product, classifier),
``customer_id``, ``score`` (P(buy)) and ``label`` (0/1). AUC is exact: the
Mann-Whitney statistic over distinct scores, ties counting one half — equal to
``sklearn.metrics.roc_auc_score``. Deciles are ``ntile(10)`` by descending
score (ties broken by customer id, so reruns give the same deciles); decile 1
is the 10 % most likely buyers.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F


def binary_metrics(scored: DataFrame, *, groups: Sequence[str], threshold: float = 0.5) -> DataFrame:
    """One row per group: rows, positives, auc, f1, precision, recall, accuracy (at ``threshold``)."""
    keys = list(groups)
    by_score = scored.groupBy(*keys, "score").agg(F.sum("label").alias("pos"), F.sum(1 - F.col("label")).alias("neg"))
    below = Window.partitionBy(*keys).orderBy("score").rowsBetween(Window.unboundedPreceding, -1)
    ranked = by_score.select(*keys, "pos", "neg", F.coalesce(F.sum("neg").over(below), F.lit(0)).alias("neg_below"))
    auc = (
        ranked.groupBy(*keys)
        .agg(
            F.sum(F.col("pos") * (F.col("neg_below") + F.col("neg") * 0.5)).alias("_u"),
            F.sum("pos").alias("_p"),
            F.sum("neg").alias("_n"),
        )
        .select(
            *keys, F.when((F.col("_p") > 0) & (F.col("_n") > 0), F.col("_u") / (F.col("_p") * F.col("_n"))).alias("auc")
        )
    )
    predicted = (F.col("score") >= threshold).cast("int")
    counts = scored.groupBy(*keys).agg(
        F.count("*").alias("rows"),
        F.sum("label").alias("positives"),
        F.sum(predicted * F.col("label")).alias("tp"),
        F.sum(predicted * (1 - F.col("label"))).alias("fp"),
        F.sum((1 - predicted) * F.col("label")).alias("fn"),
        F.sum((1 - predicted) * (1 - F.col("label"))).alias("tn"),
    )
    precision = F.when(F.col("tp") + F.col("fp") > 0, F.col("tp") / (F.col("tp") + F.col("fp"))).otherwise(0.0)
    recall = F.when(F.col("tp") + F.col("fn") > 0, F.col("tp") / (F.col("tp") + F.col("fn"))).otherwise(0.0)
    f1 = F.when(
        2 * F.col("tp") + F.col("fp") + F.col("fn") > 0, 2 * F.col("tp") / (2 * F.col("tp") + F.col("fp") + F.col("fn"))
    ).otherwise(0.0)
    return counts.join(auc, keys, "left").select(
        *keys,
        F.col("rows").cast("long"),
        F.col("positives").cast("long"),
        F.col("auc").cast("double"),
        f1.cast("double").alias("f1"),
        precision.cast("double").alias("precision"),
        recall.cast("double").alias("recall"),
        ((F.col("tp") + F.col("tn")) / F.col("rows")).cast("double").alias("accuracy"),
    )


def with_deciles(scored: DataFrame, *, groups: Sequence[str]) -> DataFrame:
    """Adds ``decile`` (1 = highest scores) within each group."""
    order = Window.partitionBy(*groups).orderBy(F.col("score").desc(), F.col("customer_id"))
    return scored.withColumn("decile", F.ntile(10).over(order))


def decile_lift(scored: DataFrame, *, groups: Sequence[str]) -> DataFrame:
    """Per group and decile: customers, buyers, buy_rate, lift, cumulative_lift (vs the group's base rate)."""
    keys = list(groups)
    per_decile = (
        with_deciles(scored, groups=keys)
        .groupBy(*keys, "decile")
        .agg(F.count("*").alias("customers"), F.sum("label").alias("buyers"))
    )
    whole = Window.partitionBy(*keys)
    running = Window.partitionBy(*keys).orderBy("decile").rowsBetween(Window.unboundedPreceding, 0)
    base = F.sum("buyers").over(whole) / F.sum("customers").over(whole)
    rate = F.col("buyers") / F.col("customers")
    cumulative = F.sum("buyers").over(running) / F.sum("customers").over(running)
    return per_decile.select(
        *keys,
        F.col("decile").cast("int"),
        F.col("customers").cast("long"),
        F.col("buyers").cast("long"),
        rate.cast("double").alias("buy_rate"),
        F.when(base > 0, rate / base).cast("double").alias("lift"),
        F.when(base > 0, cumulative / base).cast("double").alias("cumulative_lift"),
    )

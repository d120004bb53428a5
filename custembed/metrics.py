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

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, IntegerType, StructField, StructType


def binary_metrics(scored: DataFrame, *, groups: Sequence[str], threshold: float = 0.5) -> DataFrame:
    """One row per group: rows, positives, auc, f1, precision, recall, accuracy (at ``threshold``)."""
    keys = list(groups)
    by_score = scored.groupBy(*keys, "score").agg(
        F.sum(F.col("label")).alias("pos"), F.sum(1 - F.col("label")).alias("neg")
    )
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


# ---------------------------------------------------------------- bootstrap intervals

# Metrics that get a 95 % interval, as named in ``model_metrics``.
INTERVAL_METRICS: tuple[str, ...] = ("auc", "f1", "precision", "recall", "accuracy", "top10_lift")
REPLICATE = "replicate"
# P(K <= k) for K ~ Poisson(1), k = 0..7: a uniform draw above the first j of these is a multiplicity of j.
_POISSON1_CDF = np.array(
    [0.36787944, 0.73575888, 0.91969860, 0.98101184, 0.99634015, 0.99940582, 0.99991676, 0.99998975]
)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
# Cells (rows × replicates) of weights held at once by one group's computation.
_CELLS_PER_BLOCK = 1 << 22


def replicate_multiplicities(customer_hashes: np.ndarray, replicates: Sequence[int]) -> np.ndarray:
    """Poisson(1) multiplicities, one row per replicate: a function of (customer hash, replicate) only.

    The hash is Spark's ``xxhash64(customer_id, seed)``; each replicate mixes it with
    splitmix64, so a customer is drawn alike in every group of a replicate (a *paired*
    bootstrap across sources) and on every machine.
    """
    hashed = customer_hashes.astype(np.int64).view(np.uint64)
    steps = (np.asarray(replicates, dtype=np.uint64) + np.uint64(1))[:, None]
    with np.errstate(over="ignore"):
        x = hashed[None, :] + steps * _GOLDEN
        x = (x ^ (x >> np.uint64(30))) * _MIX1
        x = (x ^ (x >> np.uint64(27))) * _MIX2
        x = x ^ (x >> np.uint64(31))
    uniform = (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    return np.searchsorted(_POISSON1_CDF, uniform, side="right").astype(np.float64)


def stratified_weights(multiplicities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Multiplicities rescaled per replicate and class to sum to the class's row count (stratified)."""
    weights = np.zeros_like(multiplicities)
    for cls in (0, 1):
        members = labels == cls
        drawn = multiplicities[:, members].sum(axis=1, keepdims=True)
        scale = np.divide(members.sum(), drawn, out=np.zeros_like(drawn), where=drawn > 0)
        weights[:, members] = multiplicities[:, members] * scale
    return weights


def weighted_metrics(
    weights: np.ndarray, *, levels: np.ndarray, labels: np.ndarray, predicted: np.ndarray, top_order: np.ndarray
) -> dict[str, float]:
    """The :data:`INTERVAL_METRICS` of one replicate's weights (NaN where undefined).

    ``levels`` is each row's index among the distinct scores (ascending), ``top_order`` the
    rows by descending score then customer id, as :func:`decile_lift` orders them.
    """
    pos_w, neg_w = weights * labels, weights * (1 - labels)
    pos = np.bincount(levels, weights=pos_w)
    neg = np.bincount(levels, weights=neg_w)
    p, n = pos.sum(), neg.sum()
    below = np.cumsum(neg) - neg
    auc = float((pos * (below + 0.5 * neg)).sum() / (p * n)) if p > 0 and n > 0 else np.nan
    tp, fp = float((pos_w * predicted).sum()), float((neg_w * predicted).sum())
    fn, tn = p - tp, n - fp
    ordered = weights[top_order]
    before = np.cumsum(ordered) - ordered
    top = before < (p + n) * 0.1
    top_rows = ordered[top].sum()
    top_rate = (ordered * labels[top_order])[top].sum() / top_rows if top_rows > 0 else np.nan
    return {
        "auc": auc,
        "f1": 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn > 0 else 0.0,
        "precision": tp / (tp + fp) if tp + fp > 0 else 0.0,
        "recall": tp / (tp + fn) if tp + fn > 0 else 0.0,
        "accuracy": (tp + tn) / (p + n) if p + n > 0 else np.nan,
        "top10_lift": top_rate / (p / (p + n)) if p > 0 else np.nan,
    }


def _group_replicates(rows: pd.DataFrame, *, keys: Sequence[str], threshold: float, replicates: int) -> pd.DataFrame:
    """One group's scored rows → one row of metrics per replicate (the grouped-map function)."""
    scores = rows["score"].to_numpy(dtype=np.float64)
    labels = rows["label"].to_numpy(dtype=np.float64)
    _, levels = np.unique(scores, return_inverse=True)
    top_order = np.lexsort((rows["customer_id"].to_numpy(dtype=str), -scores))
    predicted = (scores >= threshold).astype(np.float64)
    block = max(1, _CELLS_PER_BLOCK // max(len(rows), 1))
    out = []
    for first in range(0, replicates, block):
        numbers = range(first, min(first + block, replicates))
        weights = stratified_weights(replicate_multiplicities(rows["_hash"].to_numpy(), numbers), labels)
        for b, w in zip(numbers, weights, strict=True):
            measured = weighted_metrics(w, levels=levels, labels=labels, predicted=predicted, top_order=top_order)
            out.append({**{k: rows[k].iloc[0] for k in keys}, REPLICATE: b, **measured})
    return pd.DataFrame(out, columns=[*keys, REPLICATE, *INTERVAL_METRICS])


def bootstrap_replicates(
    scored: DataFrame, *, groups: Sequence[str], threshold: float, replicates: int, seed: int
) -> DataFrame:
    """Per group and ``replicate``: the :data:`INTERVAL_METRICS` of that bootstrap replicate.

    A stratified Poisson bootstrap: in replicate ``b`` a customer counts
    :func:`replicate_multiplicities` times, rescaled within its group and class so that every
    replicate keeps the buyers and non-buyers of the sample (:func:`stratified_weights`).
    Each group's rows are one Arrow batch of a grouped map (a group is one source × product
    × classifier's test customers); nothing is collected to the driver, and the output is
    groups × replicates rows. Undefined values (a class left empty) are null.
    """
    if replicates < 1:
        raise ValueError(f"replicates must be positive, got {replicates}")
    keys = list(groups)
    out_schema = StructType(
        [scored.schema[k] for k in keys]
        + [StructField(REPLICATE, IntegerType())]
        + [StructField(m, DoubleType()) for m in INTERVAL_METRICS]
    )
    rows = scored.select(*keys, "customer_id", F.xxhash64("customer_id", F.lit(seed)).alias("_hash"), "score", "label")

    def compute(group: pd.DataFrame) -> pd.DataFrame:
        return _group_replicates(group, keys=keys, threshold=threshold, replicates=replicates)

    replicated = rows.groupBy(*keys).applyInPandas(compute, schema=out_schema)
    return replicated.select(*keys, REPLICATE, *[F.when(~F.isnan(m), F.col(m)).alias(m) for m in INTERVAL_METRICS])


def percentile_intervals(
    replicated: DataFrame, *, groups: Sequence[str], metrics: Sequence[str] = INTERVAL_METRICS, level: float = 0.95
) -> DataFrame:
    """Per group: ``<metric>_lo`` and ``<metric>_hi``, the percentile interval of the replicates' values."""
    tail = (1.0 - level) / 2.0
    bounds = []
    for metric in metrics:
        bounds += [
            F.percentile(metric, tail).cast("double").alias(f"{metric}_lo"),
            F.percentile(metric, 1.0 - tail).cast("double").alias(f"{metric}_hi"),
        ]
    return replicated.groupBy(*groups).agg(*bounds)


def paired_auc_differences(
    replicated: DataFrame, point: DataFrame, *, unit: str, groups: Sequence[str], level: float = 0.95
) -> DataFrame:
    """Each ``unit`` (e.g. source) against the best one of its group (e.g. product, classifier), paired.

    ``point`` holds the point AUC per (``unit``, groups...); the best unit of a group has the
    highest AUC (ties: the first by name). Per (unit, groups...) the output holds
    ``best_source``, ``auc_diff`` (this AUC − the best's), its percentile interval over the
    replicates (``auc_diff_lo``, ``auc_diff_hi``, the same customers resampled alike in
    both) and ``auc_diff_significant`` (the interval excludes 0); null diffs for the best.
    """
    keys = list(groups)
    tail = (1.0 - level) / 2.0
    rank = Window.partitionBy(*keys).orderBy(F.col("auc").desc_nulls_last(), F.col(unit))
    best = (
        point.where(F.col("auc").isNotNull())
        .withColumn("_rank", F.row_number().over(rank))
        .where(F.col("_rank") == 1)
        .select(*keys, F.col(unit).alias("best_source"), F.col("auc").alias("_best_auc"))
    )
    best_replicates = replicated.select(*keys, REPLICATE, F.col(unit).alias("best_source"), F.col("auc").alias("_b"))
    diffs = (
        replicated.select(unit, *keys, REPLICATE, "auc")
        .join(best, keys)
        .where(F.col(unit) != F.col("best_source"))
        .join(best_replicates, [*keys, "best_source", REPLICATE])
        .groupBy(unit, *keys)
        .agg(
            F.percentile(F.col("auc") - F.col("_b"), tail).cast("double").alias("auc_diff_lo"),
            F.percentile(F.col("auc") - F.col("_b"), 1.0 - tail).cast("double").alias("auc_diff_hi"),
        )
    )
    return (
        point.select(unit, *keys, "auc")
        .join(best, keys, "left")
        .join(diffs, [unit, *keys], "left")
        .select(
            unit,
            *keys,
            "best_source",
            F.when(F.col(unit) != F.col("best_source"), F.col("auc") - F.col("_best_auc")).alias("auc_diff"),
            "auc_diff_lo",
            "auc_diff_hi",
            ((F.col("auc_diff_hi") < 0) | (F.col("auc_diff_lo") > 0)).alias("auc_diff_significant"),
        )
    )

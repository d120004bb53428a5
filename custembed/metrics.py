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


def binary_metrics(
    scored: DataFrame, *, groups: Sequence[str], threshold: float = 0.5, weight: str | None = None
) -> DataFrame:
    """One row per group: rows, positives, auc, f1, precision, recall, accuracy (at ``threshold``).

    With ``weight`` (a numeric column, e.g. bootstrap multiplicities) every row counts that many
    times: the weighted Mann-Whitney AUC and weighted confusion counts (``rows`` and
    ``positives`` then hold the summed weights, cast to long).
    """
    keys = list(groups)
    w = F.col(weight).cast("double") if weight else F.lit(1)
    by_score = scored.groupBy(*keys, "score").agg(
        F.sum(w * F.col("label")).alias("pos"), F.sum(w * (1 - F.col("label"))).alias("neg")
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
        F.sum(w).alias("rows"),
        F.sum(w * F.col("label")).alias("positives"),
        F.sum(w * predicted * F.col("label")).alias("tp"),
        F.sum(w * predicted * (1 - F.col("label"))).alias("fp"),
        F.sum(w * (1 - predicted) * F.col("label")).alias("fn"),
        F.sum(w * (1 - predicted) * (1 - F.col("label"))).alias("tn"),
    )
    precision = F.when(F.col("tp") + F.col("fp") > 0, F.col("tp") / (F.col("tp") + F.col("fp"))).otherwise(0.0)
    recall = F.when(F.col("tp") + F.col("fn") > 0, F.col("tp") / (F.col("tp") + F.col("fn"))).otherwise(0.0)
    f1 = F.when(
        2 * F.col("tp") + F.col("fp") + F.col("fn") > 0, 2 * F.col("tp") / (2 * F.col("tp") + F.col("fp") + F.col("fn"))
    ).otherwise(0.0)
    return counts.join(auc, keys, "left").select(
        *keys,
        F.round("rows").cast("long").alias("rows"),
        F.round("positives").cast("long").alias("positives"),
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
WEIGHT = "weight"
# P(K <= k) for K ~ Poisson(1), k = 0..7: a uniform draw above the first j of these is a multiplicity of j.
_POISSON1_CDF = (0.36787944, 0.73575888, 0.91969860, 0.98101184, 0.99634015, 0.99940582, 0.99991676, 0.99998975)
_UNIT = float(1 << 53)


def bootstrap_weights(scored: DataFrame, *, groups: Sequence[str], replicates: int, seed: int) -> DataFrame:
    """Scored rows × ``replicates``: a stratified Poisson-bootstrap weight per (row, replicate).

    A customer's multiplicity in replicate ``b`` is a Poisson(1) draw from a seeded hash of
    (customer_id, b), whatever its group: two sources scored on the same customers get the
    same resampling in every replicate (a *paired* bootstrap). Within each group and class
    the weights are rescaled to sum to the class's row count, so that every replicate keeps
    the buyers and non-buyers of the original (stratified; AUC is unaffected by the scaling).

    Output: the input columns plus ``replicate`` (int) and ``weight`` (double > 0).
    """
    if replicates < 1:
        raise ValueError(f"replicates must be positive, got {replicates}")
    keys = list(groups)
    draw = F.pmod(F.xxhash64(F.col("customer_id"), F.col(REPLICATE), F.lit(seed)), F.lit(1 << 53)) / F.lit(_UNIT)
    multiplicity = sum((draw >= F.lit(c)).cast("int") for c in _POISSON1_CDF)
    exploded = scored.withColumn("_class_rows", F.count("*").over(Window.partitionBy(*keys, "label"))).withColumn(
        REPLICATE, F.explode(F.sequence(F.lit(0), F.lit(replicates - 1)))
    )
    drawn = exploded.withColumn(WEIGHT, multiplicity).where(F.col(WEIGHT) > 0)
    class_weight = F.sum(WEIGHT).over(Window.partitionBy(*keys, REPLICATE, "label"))
    return drawn.withColumn(WEIGHT, (F.col(WEIGHT) * F.col("_class_rows") / class_weight).cast("double")).drop(
        "_class_rows"
    )


def weighted_top_lift(weighted: DataFrame, *, groups: Sequence[str], share: float = 0.1) -> DataFrame:
    """Per group: ``top10_lift``, the weighted buy rate of the top ``share`` by score over the group's rate."""
    keys = list(groups)
    order = Window.partitionBy(*keys).orderBy(F.col("score").desc(), F.col("customer_id"))
    before = F.coalesce(F.sum(WEIGHT).over(order.rowsBetween(Window.unboundedPreceding, -1)), F.lit(0.0))
    total = F.sum(WEIGHT).over(Window.partitionBy(*keys))
    marked = weighted.withColumn("_top", (before < total * share).cast("double"))
    sums = marked.groupBy(*keys).agg(
        F.sum(F.col(WEIGHT) * F.col("_top") * F.col("label")).alias("_top_pos"),
        F.sum(F.col(WEIGHT) * F.col("_top")).alias("_top_rows"),
        F.sum(F.col(WEIGHT) * F.col("label")).alias("_pos"),
        F.sum(WEIGHT).alias("_rows"),
    )
    rate = F.col("_top_pos") / F.col("_top_rows")
    base = F.col("_pos") / F.col("_rows")
    return sums.select(*keys, F.when(base > 0, rate / base).cast("double").alias("top10_lift"))


def bootstrap_replicates(
    scored: DataFrame, *, groups: Sequence[str], threshold: float, replicates: int, seed: int
) -> DataFrame:
    """Per group and ``replicate``: the :data:`INTERVAL_METRICS` of that bootstrap replicate.

    Computed in Spark from the scored rows (:func:`bootstrap_weights`), grouped, nothing collected.
    """
    keys = [*groups, REPLICATE]
    weighted = bootstrap_weights(scored, groups=groups, replicates=replicates, seed=seed)
    metrics = binary_metrics(weighted, groups=keys, threshold=threshold, weight=WEIGHT)
    lift = weighted_top_lift(weighted, groups=keys)
    return metrics.join(lift, keys, "left").select(*keys, *INTERVAL_METRICS)


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

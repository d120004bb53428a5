"""Step 3b: per-product classifiers on the embeddings, propensity scores, metrics and lift tables.

For every embedding source (BERT4Rec, the fine-tuned LM, the counts
baseline, ...) and every configured product:

* training set: ``train`` view embeddings with labels of the ``train`` window,
  balanced 50/50 by seeded sampling of non-buyers (the paper's choice;
  ``score.balance: class_weight`` keeps every row and weights classes instead);
* test set (``score.protocol``): with ``customer_disjoint`` (the default) customers
  are hashed (seeded) into a train fold and a test fold of ``score.test_share``;
  classifiers learn on the train fold's ``train``-window rows and are measured on
  the test fold's ``test``-window rows, customers they never saw. With
  ``same_customers`` (the paper's protocol) the test set is the training
  customers with labels of the ``test`` window; both at the natural rate;
* classifiers are fitted one (source, product, classifier) group per Python
  worker with ``applyInPandas``; with ``spark_random_forest`` Spark MLlib fits
  them distributed instead, for training sets too large for one worker;
* ``model_metrics`` and ``decile_lift`` are computed in Spark from the scored
  test set, every metric with a 95 % stratified-bootstrap interval (seeded, paired
  across sources so that each source's AUC is compared with the best one's);
  ``propensity_scores`` scores every customer's ``current`` view.

``run`` reads as plan → fit → score → write: :func:`plan_scoring` decides the
(source, product, classifier) tasks from the configuration and what the tables
hold, :func:`fit` fits every task's model once (whichever family),
:func:`apply` scores any rows with them, :func:`write_results` writes the
tables and the BI view.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from custembed import schemas
from custembed.comparison import (
    COMPARISON_LINE_VALUES,
    comparison_lines,
    model_comparison,
    probe_lines,
    probe_table,
)
from custembed.config import Config, ConfigError, ScoreConfig
from custembed.errors import InputError
from custembed.io import Lake
from custembed.metrics import (
    INTERVAL_METRICS,
    binary_metrics,
    bootstrap_replicates,
    decile_lift,
    paired_auc_differences,
    percentile_intervals,
    with_deciles,
)
from custembed.udfs.classify import CLASSIFIERS

log = logging.getLogger(__name__)

KEYS = ("source", "product", "classifier")
TASK_SCHEMA = "source string, product string, classifier string"
MODEL_SCHEMA = (
    "source string, product string, classifier string, path string, bytes long, train_rows long, "
    "train_seconds double, message string, params string, validation_auc double"
)
SPARK_RF = "spark_random_forest"
BALANCES = ("undersample", "class_weight")
CUSTOMER_DISJOINT = "customer_disjoint"
SAME_CUSTOMERS = "same_customers"
PROTOCOLS = (CUSTOMER_DISJOINT, SAME_CUSTOMERS)
FOLD_BUCKETS = 1_000_000  # resolution of the customer hash behind the folds
WINDOWS = ("train", "test")  # label windows: classifiers learn on the first, are measured on the second
HYBRID = "+"  # source names: "a+b" is a and b's vectors concatenated

Task = tuple[str, str, str]  # (source, product, classifier)


# ---------------------------------------------------------------- plan


@dataclass(frozen=True)
class ScorePlan:
    """What one scoring run does: the tasks to fit and how, decided before any model is fitted."""

    day: str
    sources: tuple[str, ...]
    products: tuple[str, ...]
    classifier: str  # the default classifier: every (source, product), and the current view's scores
    tasks: tuple[Task, ...]
    class_weight: bool
    seed: int
    threshold: float
    scoring_source: str | None
    protocol: str = CUSTOMER_DISJOINT
    test_share: float = 0.3
    bootstrap: int = 0  # replicates behind the intervals; 0: none
    tuning_trials: int = 0  # trials of the seeded search per model (score.tuning_trials); 0: the defaults


def plan_scoring(
    score_cfg: ScoreConfig, *, day: str, available_sources: Sequence[str], label_windows: Sequence[str]
) -> ScorePlan:
    """The run's tasks: every source × product with the default classifier, plus the classifier comparison.

    Raises:
        ConfigError: no products, an unknown balance, a comparison product that is not scored.
        InputError: a configured source has no embeddings, or the labels lack a window.
    """
    products = tuple(score_cfg.products)
    if not products:
        raise ConfigError("score.products is empty: name the products to score")
    check_settings(score_cfg)
    sources = scored_sources(score_cfg, day=day, available=available_sources)
    if not set(WINDOWS) <= set(label_windows):
        raise InputError(
            f"labels for {day} lack the train or test window (have: {sorted(label_windows)}): "
            "is the run date late enough for both label windows?"
        )
    tasks = [
        (s, p, c) for c in dict.fromkeys((score_cfg.classifier, *score_cfg.probes)) for s in sources for p in products
    ]
    comparison = score_cfg.comparison
    if comparison.product:
        if comparison.product not in products:
            raise ConfigError(f"score.comparison.product {comparison.product!r} is not in score.products")
        comparison_source = comparison.source or sources[0]
        tasks += [
            (comparison_source, comparison.product, c)
            for c in comparison.classifiers
            if c != SPARK_RF and (comparison_source, comparison.product, c) not in tasks
        ]
    return ScorePlan(
        day=day,
        sources=sources,
        products=products,
        classifier=score_cfg.classifier,
        tasks=tuple(tasks),
        class_weight=score_cfg.balance == "class_weight",
        seed=score_cfg.seed,
        threshold=score_cfg.threshold,
        scoring_source=score_cfg.scoring_source,
        protocol=score_cfg.protocol,
        test_share=score_cfg.test_share,
        bootstrap=score_cfg.bootstrap,
        tuning_trials=score_cfg.tuning_trials,
    )


def check_settings(score_cfg: ScoreConfig) -> None:
    """``ConfigError`` naming the first unknown classifier, balance, protocol or out-of-range number."""
    known = (*CLASSIFIERS, SPARK_RF)
    unknown = [c for c in (score_cfg.classifier, *score_cfg.probes) if c not in known]
    if unknown:
        raise ConfigError(f"score classifier {unknown[0]!r} (known: {', '.join(known)})")
    if SPARK_RF in score_cfg.probes:
        raise ConfigError("score.probes: spark_random_forest cannot be a probe (use it as score.classifier)")
    if score_cfg.balance not in BALANCES:
        raise ConfigError(f"score.balance: {score_cfg.balance!r} (undersample or class_weight)")
    if score_cfg.protocol not in PROTOCOLS:
        raise ConfigError(f"score.protocol: {score_cfg.protocol!r} ({' or '.join(PROTOCOLS)})")
    if score_cfg.protocol == CUSTOMER_DISJOINT and not 0.0 < score_cfg.test_share < 1.0:
        raise ConfigError(f"score.test_share: {score_cfg.test_share!r} (a share strictly between 0 and 1)")
    if score_cfg.bootstrap < 0:
        raise ConfigError(f"score.bootstrap: {score_cfg.bootstrap!r} (replicates, 0 for none)")
    if score_cfg.tuning_trials < 0:
        raise ConfigError(f"score.tuning_trials: {score_cfg.tuning_trials!r} (trials per model, 0 for none)")
    if score_cfg.tuning_trials and score_cfg.classifier == SPARK_RF:
        raise ConfigError("score.tuning_trials: spark_random_forest is not tuned; use random_forest or set 0")


def scored_sources(score_cfg: ScoreConfig, *, day: str, available: Sequence[str]) -> tuple[str, ...]:
    """``score.sources`` (every embedded source when empty) plus the ``score.hybrid_with`` hybrids.

    Raises:
        InputError: a source, or a part of a hybrid, has no embeddings for ``day``.
    """
    sources = tuple(score_cfg.sources) or tuple(sorted(available))
    partner = score_cfg.hybrid_with
    if partner:
        sources += tuple(
            f"{s}{HYBRID}{partner}"
            for s in sources
            if HYBRID not in s and s != partner and f"{s}{HYBRID}{partner}" not in sources
        )
    missing = [part for s in sources for part in hybrid_parts(s) if part not in available]
    if missing:
        raise InputError(
            f"no embeddings of source {missing[0]!r} for {day}: run `custembed embed --encoder "
            f"{missing[0]}` first (available: {', '.join(sorted(available)) or 'none'})"
        )
    return sources


def hybrid_parts(source: str) -> list[str]:
    """The embedded sources behind a source name: ``bert4rec+counts`` → [bert4rec, counts]."""
    return source.split(HYBRID)


def with_hybrids(embeddings: DataFrame, sources: Sequence[str]) -> DataFrame:
    """The embeddings of ``sources``, hybrids built by concatenating their parts' vectors per customer and view.

    A customer without a vector in one part (not embedded by it) has none in the hybrid.
    """
    plain = embeddings.where(F.col("source").isin([s for s in sources if HYBRID not in s]))
    keys = [schemas.CUSTOMER_ID, schemas.VIEW]
    built = [plain]
    for source in (s for s in sources if HYBRID in s):
        parts = hybrid_parts(source)
        joined = None
        for i, part in enumerate(parts):
            vectors = embeddings.where(F.col("source") == part).select(*keys, F.col("vector").alias(f"_v{i}"))
            joined = vectors if joined is None else joined.join(vectors, keys)
        assert joined is not None
        vector = F.concat(*[F.col(f"_v{i}") for i in range(len(parts))]).alias("vector")
        built.append(joined.select(F.lit(source).alias("source"), *keys, vector))
    columns = ["source", *keys, "vector"]
    return functools.reduce(DataFrame.unionByName, [b.select(*columns) for b in built])


def _distinct(rows: DataFrame, column: str) -> list[str]:
    """Distinct values of a low-cardinality column (sources, label windows): one small collect."""
    return [r[column] for r in rows.select(column).distinct().collect()]


# ---------------------------------------------------------------- training and test sets


def in_test_fold(*, test_share: float, seed: int) -> Column:
    """True for customers of the test fold: a seeded hash of ``customer_id`` below ``test_share``.

    Spark built-ins only, so every executor and every rerun puts a customer in the same fold.
    """
    bucket = F.pmod(F.xxhash64(F.col(schemas.CUSTOMER_ID), F.lit(seed)), F.lit(FOLD_BUCKETS))
    return bucket < F.lit(int(round(test_share * FOLD_BUCKETS)))


def fold_rows(embeddings: DataFrame, plan: ScorePlan, *, test: bool) -> DataFrame:
    """The embeddings of one fold's customers: every customer under ``same_customers``."""
    if plan.protocol == SAME_CUSTOMERS:
        return embeddings
    test_fold = in_test_fold(test_share=plan.test_share, seed=plan.seed)
    return embeddings.where(test_fold if test else ~test_fold)


def labelled(embeddings: DataFrame, labels: DataFrame, *, window: str) -> DataFrame:
    """(source, product, customer_id, vector, label) of the ``train`` view and one label window."""
    return (
        embeddings.where(F.col(schemas.VIEW) == schemas.VIEW_TRAIN)
        .select("source", schemas.CUSTOMER_ID, "vector")
        .join(
            labels.where(F.col("label_window") == window).select(schemas.CUSTOMER_ID, "product", "label"),
            schemas.CUSTOMER_ID,
        )
    )


def balance(train: DataFrame, *, fractions: dict[tuple[str, str], float], seed: int) -> DataFrame:
    """Keep every buyer and a seeded ``fractions[(source, product)]`` share of non-buyers.

    A non-buyer is kept when a seeded hash of (customer, product) falls below the share: the
    same rows on every rerun however the data is partitioned, and the same customers for
    every source of a product (the sources are compared on like training sets).
    """
    if not fractions:
        return train.limit(0)
    keys = F.create_map(*[x for (s, p), f in fractions.items() for x in (F.lit(f"{s}\u0001{p}"), F.lit(f))])
    keep = F.coalesce(F.try_element_at(keys, F.concat_ws("\u0001", "source", "product")), F.lit(0.0))
    draw = F.pmod(F.xxhash64(schemas.CUSTOMER_ID, "product", F.lit(seed)), F.lit(FOLD_BUCKETS)) / F.lit(FOLD_BUCKETS)
    return train.where((F.col("label") == 1) | (draw < keep))


def undersample_fractions(train: DataFrame) -> dict[tuple[str, str], float]:
    """Share of non-buyers to keep per (source, product) for a 50/50 training set (one small aggregate)."""
    counts = (
        train.groupBy("source", "product")
        .agg(F.sum("label").alias("pos"), F.sum(1 - F.col("label")).alias("neg"))
        .collect()
    )
    return {(r["source"], r["product"]): (min(1.0, r["pos"] / r["neg"]) if r["neg"] else 0.0) for r in counts}


def training_set(embeddings: DataFrame, labels: DataFrame, plan: ScorePlan) -> DataFrame:
    """Train-fold customers' labelled ``train``-window rows, balanced 50/50 unless the plan weights classes."""
    train = labelled(fold_rows(embeddings, plan, test=False), labels, window="train")
    if plan.class_weight:
        return train
    return balance(train, fractions=undersample_fractions(train), seed=plan.seed)


def task_frame(spark: SparkSession, tasks: Sequence[Task]) -> DataFrame:
    """The tasks as (source, product, classifier) rows."""
    return spark.createDataFrame(list(tasks), TASK_SCHEMA)


def held_out_rows(embeddings: DataFrame, labels: DataFrame, plan: ScorePlan) -> DataFrame:
    """Test-fold customers' ``test``-window rows once per task of their (source, product).

    Columns: (source, product, customer_id, vector, label, classifier).
    """
    test = labelled(fold_rows(embeddings, plan, test=True), labels, window="test")
    return test.join(F.broadcast(task_frame(embeddings.sparkSession, plan.tasks)), ["source", "product"])


def current_view_rows(embeddings: DataFrame, plan: ScorePlan) -> DataFrame:
    """Every customer's ``current`` view once per product, for the default classifier."""
    current = embeddings.where(F.col(schemas.VIEW) == schemas.VIEW_CURRENT).select(
        "source", schemas.CUSTOMER_ID, "vector"
    )
    products = embeddings.sparkSession.createDataFrame([(p,) for p in plan.products], "product string")
    return current.crossJoin(F.broadcast(products)).withColumn("classifier", F.lit(plan.classifier))


# ---------------------------------------------------------------- fit


def fit_models(
    train: DataFrame, tasks: DataFrame, *, seed: int, class_weight: bool, store: str, day: str, trials: int = 0
) -> DataFrame:
    """One model per (source, product, classifier) in ``tasks``, each group fitted on one worker that
    writes it to the model store; the output is the manifest (:data:`MODEL_SCHEMA`), no model bytes."""
    from custembed.udfs.classify import fit_groups

    jobs = train.join(F.broadcast(tasks), ["source", "product"])
    fn = fit_groups(
        seed=seed, class_weight=class_weight, keys=("source", "product"), store=store, day=day, trials=trials
    )
    return jobs.groupBy(*KEYS).applyInPandas(fn, MODEL_SCHEMA)


def class_weights(part: DataFrame) -> Column:
    """``n / (2 · n_class)`` per row of one (source, product): both classes weigh the same (one small aggregate)."""
    counts = {r["label"]: r["n"] for r in part.groupBy("label").agg(F.count("*").alias("n")).collect()}
    total = sum(counts.values())
    pos, neg = counts.get(1, 0), counts.get(0, 0)
    return F.when(F.col("label") == 1, F.lit(total / (2.0 * max(pos, 1)))).otherwise(F.lit(total / (2.0 * max(neg, 1))))


def fit_forests(
    train: DataFrame, *, seed: int, class_weight: bool = False, store: str | None = None, day: str = ""
) -> tuple[DataFrame, dict[tuple[str, str], Any]]:
    """The distributed path: one MLlib random forest per (source, product) of ``train``; (manifest, forests).

    With ``class_weight`` each forest weighs buyers and non-buyers equally (``weightCol``). With a
    ``store`` each forest is saved there too (MLlib's own format), as the other classifiers are.
    """
    from pyspark.ml.classification import RandomForestClassifier
    from pyspark.ml.functions import array_to_vector

    from custembed import lakefs
    from custembed.udfs.classify import model_uri

    pairs = [(r["source"], r["product"]) for r in train.select("source", "product").distinct().collect()]
    if not pairs:
        raise InputError("no training rows: are there embeddings and labels for this run date?")
    infos, forests = [], {}
    for source, product in sorted(pairs):
        t0 = time.perf_counter()
        part = train.where((F.col("source") == source) & (F.col("product") == product))
        weight = class_weights(part) if class_weight else F.lit(1.0)
        part = part.select(
            array_to_vector("vector").alias("features"), F.col("label").cast("double"), weight.alias("weight")
        )
        forest = RandomForestClassifier(numTrees=100, maxDepth=10, seed=seed, weightCol="weight").fit(part)
        forests[(source, product)] = forest
        path, size = "", 0
        if store is not None:
            path = model_uri(store, day, source, product, SPARK_RF, suffix="")
            forest.write().overwrite().save(lakefs.spark_uri(path))
            size = _stored_bytes(path)
        rows = int(part.count())
        infos.append((source, product, SPARK_RF, path, size, rows, time.perf_counter() - t0, "ok", None, None))
    return train.sparkSession.createDataFrame(infos, MODEL_SCHEMA), forests


def _stored_bytes(uri: str) -> int:
    """Total size of the files under ``uri`` in the model store."""
    from custembed import lakefs

    fs, path = lakefs.fs_and_path(uri)
    return int(fs.du(path, total=True))


@dataclass(frozen=True)
class FittedModels:
    """Every task's model, fitted once and stored: the manifest, and where to find each model.

    ``paths`` maps the scikit-learn-family tasks to their stored model (empty path: none could be
    fitted); ``forests`` holds the MLlib forests (Spark models, distributed themselves). ``None``
    for a family the plan has no task of.
    """

    info: DataFrame  # the manifest: MODEL_SCHEMA
    paths: Mapping[Task, str] | None
    forests: Mapping[tuple[str, str], Any] | None


def fit(train: DataFrame, plan: ScorePlan, *, store: str) -> FittedModels:
    """Fit the plan's tasks into the model store ``store`` (a lake URI): scikit-learn family on the
    workers (``applyInPandas``; each worker writes its models), MLlib forests distributed.

    Only the manifest (one small row per model) reaches the driver, never a model.
    """
    spark = train.sparkSession
    infos: list[DataFrame] = []
    forests = None
    if any(task[2] == SPARK_RF for task in plan.tasks):
        forest_info, forests = fit_forests(
            train, seed=plan.seed, class_weight=plan.class_weight, store=store, day=plan.day
        )
        infos.append(forest_info)
    paths = None
    sklearn_tasks = [task for task in plan.tasks if task[2] != SPARK_RF]
    if sklearn_tasks:
        manifest = fit_models(
            train,
            task_frame(spark, sklearn_tasks),
            seed=plan.seed,
            class_weight=plan.class_weight,
            store=store,
            day=plan.day,
            trials=plan.tuning_trials,
        ).collect()  # one small row per model: where it is, its size and figures
        paths = {(r["source"], r["product"], r["classifier"]): r["path"] for r in manifest}
        stored = sum(r["bytes"] for r in manifest)
        log.info("score: %d models fitted into %s (%.1f MiB)", len(manifest), store, stored / 2**20)
        infos.append(spark.createDataFrame(manifest, MODEL_SCHEMA))
    info = functools.reduce(DataFrame.unionByName, infos)
    return FittedModels(info=info, paths=paths, forests=forests)


# ---------------------------------------------------------------- score


def apply_models(rows: DataFrame, models: Mapping[Task, str]) -> DataFrame:
    """Score (source, product, classifier, vector, ...) rows with their stored model.

    Rows are repartitioned by task and sorted within partitions, so each Python worker loads
    only the models of its partition, once per run of their rows, and holds one at a time;
    only the task → path mapping is broadcast.
    """
    from custembed.udfs.classify import score_partitions

    spark = rows.sparkSession
    shared = spark.sparkContext.broadcast(dict(models))
    schema = ", ".join(f"{f.name} {f.dataType.simpleString()}" for f in rows.schema.fields if f.name != "vector")
    grouped = rows.repartition(max(1, len(models)), *KEYS).sortWithinPartitions(*KEYS)
    return grouped.mapInPandas(score_partitions(shared, KEYS), f"{schema}, score double")


def apply_forests(rows: DataFrame, forests: Mapping[tuple[str, str], Any]) -> DataFrame:
    """Score (source, product, vector, ...) rows with the MLlib forest of their (source, product)."""
    from pyspark.ml.functions import array_to_vector, vector_to_array

    scored = []
    for (source, product), forest in sorted(forests.items()):
        target = rows.where((F.col("source") == source) & (F.col("product") == product))
        scored.append(
            forest.transform(target.withColumn("features", array_to_vector("vector"))).select(
                *[c for c in target.columns if c != "vector"], vector_to_array("probability")[1].alias("score")
            )
        )
    return functools.reduce(DataFrame.unionByName, scored)


def apply(models: FittedModels, rows: DataFrame) -> DataFrame:
    """(source, product, classifier, vector, ...) → the same without ``vector``, plus ``score`` (P(buy)).

    Each row is scored by the model of its task, whichever family fitted it; rows of a
    task without a model score null (NaN for a task whose training window had one class).
    """
    both = models.paths is not None and models.forests is not None
    parts = []
    if models.forests is not None:
        parts.append(apply_forests(rows.where(F.col("classifier") == SPARK_RF) if both else rows, models.forests))
    if models.paths is not None:
        parts.append(apply_models(rows.where(F.col("classifier") != SPARK_RF) if both else rows, models.paths))
    return functools.reduce(DataFrame.unionByName, parts)


# ---------------------------------------------------------------- write


def intervals(scored: DataFrame, point: DataFrame, *, threshold: float, replicates: int, seed: int) -> DataFrame:
    """Per (source, product, classifier): the 95 % interval columns of ``model_metrics``.

    A stratified Poisson bootstrap of the scored test rows in Spark (``replicates`` seeded
    replicates, the same customers resampled alike for every source: paired), and each
    source's AUC against the best source's of its (product, classifier). ``point`` holds
    the point AUCs. With no replicates every interval column is null.
    """
    if replicates < 1:
        nulls = [F.lit(None).cast("double").alias(f"{m}_{end}") for m in INTERVAL_METRICS for end in ("lo", "hi")]
        return point.select(
            *KEYS,
            *nulls,
            F.lit(None).cast("string").alias("best_source"),
            *[F.lit(None).cast("double").alias(c) for c in ("auc_diff", "auc_diff_lo", "auc_diff_hi")],
            F.lit(None).cast("boolean").alias("auc_diff_significant"),
        )
    replicated = bootstrap_replicates(
        scored, groups=KEYS, threshold=threshold, replicates=replicates, seed=seed
    ).localCheckpoint()  # groups × replicates rows, read twice below
    bounds = percentile_intervals(replicated, groups=KEYS)
    paired = paired_auc_differences(replicated, point, unit="source", groups=("product", "classifier"))
    return bounds.join(paired, list(KEYS), "full")


def evaluation(
    info: DataFrame,
    scored_test: DataFrame,
    *,
    threshold: float,
    day: str,
    protocol: str = CUSTOMER_DISJOINT,
    replicates: int = 0,
    seed: int = 13,
) -> tuple[DataFrame, DataFrame]:
    """(``model_metrics`` rows, ``decile_lift`` rows) of the scored test set and the models' info.

    ``model_metrics`` names the ``protocol`` and holds 95 % intervals from ``replicates``
    bootstrap replicates (:func:`intervals`).
    """
    scored = scored_test.where(F.col("score").isNotNull())
    metrics = binary_metrics(scored, groups=KEYS, threshold=threshold)
    lift = decile_lift(scored, groups=KEYS)
    top = lift.where(F.col("decile") == 1).select(*KEYS, F.col("lift").alias("top10_lift"))
    bounds = intervals(scored, metrics, threshold=threshold, replicates=replicates, seed=seed)
    metric_rows = (
        info.join(metrics, list(KEYS), "left")
        .join(top, list(KEYS), "left")
        .join(bounds, list(KEYS), "left")
        .withColumn("protocol", F.lit(protocol))
        .withColumn("bootstrap", F.lit(replicates).cast("int"))
    )
    metric_rows = metric_rows.withColumn(
        "message",
        F.when(F.col("message") != "ok", F.col("message"))
        .when(F.coalesce(F.col("positives"), F.lit(0)) == 0, F.lit("no buyers in the test window: AUC undefined"))
        .otherwise(F.lit("ok")),
    ).withColumn(schemas.DT, F.lit(day))
    return metric_rows, lift.withColumn(schemas.DT, F.lit(day))


def propensity(scored_current: DataFrame, *, scoring_source: str | None, day: str) -> DataFrame:
    """``propensity_scores`` rows: scored current-view rows (of one source if given) with their deciles."""
    if scoring_source:
        scored_current = scored_current.where(F.col("source") == scoring_source)
    return with_deciles(scored_current.where(F.col("score").isNotNull()), groups=("source", "product")).withColumn(
        schemas.DT, F.lit(day)
    )


def write_results(
    lake: Lake, plan: ScorePlan, models: FittedModels, scored_test: DataFrame, scored_current: DataFrame
) -> None:
    """Write ``classifier_models`` (the model store's manifest), ``model_metrics``, ``decile_lift``,
    ``propensity_scores`` and refresh ``top_decile_customers``."""
    lake.write_partitions(models.info.withColumn(schemas.DT, F.lit(plan.day)), "classifier_models")
    scored_test = scored_test.persist()
    try:
        metric_rows, lift = evaluation(
            models.info,
            scored_test,
            threshold=plan.threshold,
            day=plan.day,
            protocol=plan.protocol,
            replicates=plan.bootstrap,
            seed=plan.seed,
        )
        lake.write_partitions(metric_rows, "model_metrics")
        lake.write_partitions(lift, "decile_lift")
    finally:
        scored_test.unpersist()
    lake.write_partitions(
        propensity(scored_current, scoring_source=plan.scoring_source, day=plan.day), "propensity_scores"
    )
    refresh_bi_views(lake)


def refresh_bi_views(lake: Lake) -> None:
    """``top_decile_customers``: the 10 % most likely buyers per product and source of the latest run."""
    lake.refresh_view("top_decile_customers")


# ---------------------------------------------------------------- the job


def run(spark: SparkSession, cfg: Config, *, run_date: dt.date) -> dict[str, Any]:
    """Reads embeddings, labels; writes the model store and classifier_models, model_metrics, decile_lift,
    propensity_scores, top_decile_customers, runs."""
    from custembed.jobs.common import lake_from, record_run

    started = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    t0 = time.monotonic()
    lake: Lake = lake_from(spark, cfg)
    day = run_date.isoformat()
    embeddings = lake.read_partition("embeddings", day)
    labels = lake.read_partition("labels", day).where(F.col("product").isin(list(cfg.score.products)))
    plan = plan_scoring(
        cfg.score,
        day=day,
        available_sources=_distinct(embeddings, "source"),
        label_windows=_distinct(labels, "label_window"),
    )
    embeddings = with_hybrids(embeddings, plan.sources)
    models = fit(training_set(embeddings, labels, plan), plan, store=lake.path("models", "classifiers"))
    scored_test = apply(models, held_out_rows(embeddings, labels, plan))
    scored_current = apply(models, current_view_rows(embeddings, plan))
    write_results(lake, plan, models, scored_test, scored_current)
    summary: dict[str, Any] = {
        "sources": list(plan.sources),
        "products": list(plan.products),
        "seconds": round(time.monotonic() - t0, 1),
        "tables": ", ".join(lake.table(t) for t in ("model_metrics", "decile_lift", "propensity_scores")),
    }
    record_run(lake, job="score", run_date=run_date, started=started, status="succeeded", details=json.dumps(summary))
    print_comparison(lake, day, classifier=plan.classifier, protocol=plan.protocol)
    return summary


def print_comparison(lake: Lake, day: str, *, classifier: str, protocol: str) -> None:
    """The model comparison as a text table: per product, AUC (95 % interval) / F1 / top-10 % lift per source."""
    metrics = lake.read_partition("model_metrics", day).drop(schemas.DT).toPandas()  # a few rows per product
    if not (metrics["classifier"] == classifier).any():
        return
    table = model_comparison(
        metrics,
        classifier=classifier,
        values=COMPARISON_LINE_VALUES,
        duplicates="last",
        where=f"model_metrics of {day}",
    )
    for line in comparison_lines(table, classifier=classifier, day=day, protocol=protocol):
        print(line)
    for line in probe_lines(probe_table(metrics, first=classifier)):
        print(line)


def main(argv: Sequence[str] | None = None) -> int:
    """``custembed score``: classifiers, metrics, lift tables and propensity scores of one run date."""
    from custembed.jobs.common import job_main

    return job_main("score", argv, None, lambda spark, cfg, args, run_date: run(spark, cfg, run_date=run_date))

"""The scoring job's units: the plan (no Spark), and fit → apply with MLlib forests and scikit-learn models."""

from __future__ import annotations

import numpy as np
import pytest
from pyspark.sql import functions as F

from custembed.config import ComparisonConfig, ConfigError, ScoreConfig
from custembed.errors import InputError
from custembed.jobs.score import (
    SPARK_RF,
    ScorePlan,
    apply,
    fit,
    fit_forests,
    held_out_rows,
    plan_scoring,
    training_set,
)

DAY = "2023-07-31"


def _plan(**changes: object) -> ScorePlan:
    settings = {"products": ("p", "q"), "classifier": "random_forest", **changes}
    return plan_scoring(
        ScoreConfig(**settings),
        day=DAY,
        available_sources=["s", "t"],  # type: ignore[arg-type]
        label_windows=["test", "train"],
    )


def test_plan_covers_every_source_and_product_and_the_comparison() -> None:
    plan = _plan(comparison=ComparisonConfig(product="q", source="t", classifiers=("random_forest", "mlp", SPARK_RF)))
    assert plan.sources == ("s", "t") and plan.products == ("p", "q")
    assert plan.tasks == (
        ("s", "p", "random_forest"),
        ("s", "q", "random_forest"),
        ("t", "p", "random_forest"),
        ("t", "q", "random_forest"),
        ("t", "q", "mlp"),
    )
    assert not plan.class_weight and _plan(balance="class_weight").class_weight


def test_plan_rejects_what_cannot_be_scored() -> None:
    with pytest.raises(ConfigError, match="score.products is empty"):
        _plan(products=())
    with pytest.raises(InputError, match="no embeddings of source 'u'.*available: s, t"):
        _plan(sources=("s", "u"))
    with pytest.raises(ConfigError, match="score.balance"):
        _plan(balance="oversample")
    with pytest.raises(ConfigError, match="comparison.product 'r'"):
        _plan(comparison=ComparisonConfig(product="r"))
    with pytest.raises(ConfigError, match="score.protocol: 'random'"):
        _plan(protocol="random")
    with pytest.raises(ConfigError, match="score.test_share: 1.0"):
        _plan(test_share=1.0)
    with pytest.raises(ConfigError, match="score.bootstrap: -1"):
        _plan(bootstrap=-1)
    with pytest.raises(InputError, match="lack the train or test window"):
        plan_scoring(ScoreConfig(products=("p",)), day=DAY, available_sources=["s"], label_windows=["train"])


def _train(spark):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    labels = (rng.random(120) < 0.5).astype(int)
    vectors = rng.normal(size=(120, 4)) + labels[:, None] * 2.0
    rows = [
        ("s", "p", f"c{i}", [float(x) for x in v], int(y)) for i, (v, y) in enumerate(zip(vectors, labels, strict=True))
    ]
    train = spark.createDataFrame(
        rows, "source string, product string, customer_id string, vector array<double>, label int"
    )
    return train, labels


def _separates(scores: dict[str, float], labels: np.ndarray) -> bool:
    buyers = np.mean([scores[f"c{i}"] for i in range(len(labels)) if labels[i]])
    others = np.mean([scores[f"c{i}"] for i in range(len(labels)) if not labels[i]])
    return bool(buyers > others + 0.3)


def test_fit_forests_fits_one_forest_per_source_and_product(spark) -> None:  # type: ignore[no-untyped-def]
    train, labels = _train(spark)
    info, forests = fit_forests(train, seed=1)
    assert [r["classifier"] for r in info.collect()] == [SPARK_RF] and list(forests) == [("s", "p")]


@pytest.mark.slow
def test_one_fit_and_apply_path_for_both_families(spark, tmp_path) -> None:  # type: ignore[no-untyped-def]
    train, labels = _train(spark)
    plan = ScorePlan(
        day=DAY,
        sources=("s",),
        products=("p",),
        classifier=SPARK_RF,
        tasks=(("s", "p", SPARK_RF), ("s", "p", "logistic_regression")),
        class_weight=False,
        seed=1,
        threshold=0.5,
        scoring_source=None,
    )
    store = (tmp_path / "models").as_uri()
    models = fit(train, plan, store=store)
    manifest = {r["classifier"]: r for r in models.info.collect()}
    assert sorted(manifest) == ["logistic_regression", SPARK_RF]
    assert "model" not in models.info.columns  # the driver sees where models are, never a model
    for classifier, row in manifest.items():
        assert row["path"].startswith(f"{store}/{DAY}/s/p/{classifier}") and row["bytes"] > 0
    assert (tmp_path / "models" / DAY / "s" / "p" / "logistic_regression.pkl").is_file()
    assert (tmp_path / "models" / DAY / "s" / "p" / SPARK_RF / "metadata").is_dir()
    targets = train.drop("label").crossJoin(
        spark.createDataFrame([(SPARK_RF,), ("logistic_regression",)], "classifier string")
    )
    scored = apply(models, targets)
    assert "vector" not in scored.columns and "score" in scored.columns
    for classifier in (SPARK_RF, "logistic_regression"):
        scores = {r["customer_id"]: r["score"] for r in scored.where(F.col("classifier") == classifier).collect()}
        assert len(scores) == 120 and _separates(scores, labels), classifier
    assert apply(models, targets.limit(10).where(F.col("classifier") == SPARK_RF)).count() == 10


def test_protocol_defaults_to_customer_disjoint() -> None:
    plan = _plan()
    assert (plan.protocol, plan.test_share) == ("customer_disjoint", 0.3)
    assert _plan(protocol="same_customers").protocol == "same_customers"


def _embeddings_and_labels(spark, n: int = 400):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(2)
    embeddings = spark.createDataFrame(
        [
            (src, view, f"c{i}", [float(x) for x in rng.normal(size=2)])
            for src in ("s", "t")
            for view in ("train", "current")
            for i in range(n)
        ],
        "source string, view string, customer_id string, vector array<double>",
    )
    labels = spark.createDataFrame(
        [(f"c{i}", "p", window, int(rng.random() < 0.3)) for window in ("train", "test") for i in range(n)],
        "customer_id string, product string, label_window string, label int",
    )
    return embeddings, labels


@pytest.mark.parametrize("protocol", ["customer_disjoint", "same_customers"])
def test_test_customers_are_disjoint_from_training_customers(spark, protocol: str) -> None:  # type: ignore[no-untyped-def]
    embeddings, labels = _embeddings_and_labels(spark)
    plan = _plan(products=("p",), protocol=protocol, balance="class_weight")
    train = training_set(embeddings, labels, plan).select("source", "customer_id").collect()
    test = held_out_rows(embeddings, labels, plan).select("source", "customer_id", "classifier").collect()
    train_ids = {(r["source"], r["customer_id"]) for r in train}
    test_ids = {(r["source"], r["customer_id"]) for r in test}
    assert len(test) == len(test_ids)  # once per task
    if protocol == "same_customers":
        assert train_ids == test_ids and len(train_ids) == 800
        return
    assert not train_ids & test_ids and len(train_ids | test_ids) == 800
    share = len(test_ids) / 800
    assert 0.22 < share < 0.38, share
    # a customer is in the same fold for every source: sources are compared on the same customers
    assert {c for s, c in test_ids if s == "s"} == {c for s, c in test_ids if s == "t"}
    # the fold depends on the seed
    reseeded = {r["customer_id"] for r in held_out_rows(embeddings, labels, _plan(products=("p",), seed=99)).collect()}
    assert reseeded != {c for s, c in test_ids if s == "s"}


def test_spark_forest_honours_class_weight(spark) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(4)
    labels = (rng.random(400) < 0.05).astype(int)
    vectors = rng.normal(size=(400, 4)) + labels[:, None] * 0.7
    train = spark.createDataFrame(
        [
            ("s", "p", f"c{i}", [float(x) for x in v], int(y))
            for i, (v, y) in enumerate(zip(vectors, labels, strict=True))
        ],
        "source string, product string, customer_id string, vector array<double>, label int",
    )

    def scores(class_weight: bool) -> list[float]:
        _, forests = fit_forests(train, seed=1, class_weight=class_weight)
        assert forests[("s", "p")].getOrDefault("weightCol") == "weight"
        rows = apply(_forests_only(forests), train.drop("label").withColumn("classifier", F.lit(SPARK_RF)))
        return [r["score"] for r in rows.orderBy("customer_id").collect()]

    # deep, unpruned forests have mostly pure leaves, so the scores move little (either way), but they move
    assert scores(False) != scores(True)


def _forests_only(forests):  # type: ignore[no-untyped-def]
    from custembed.jobs.score import FittedModels

    return FittedModels(info=None, paths=None, forests=forests)  # type: ignore[arg-type]


def test_plan_adds_probes_and_hybrids() -> None:
    plan = _plan(products=("p",), probes=("logistic_regression", "knn"), hybrid_with="t")
    assert plan.sources == ("s", "t", "s+t")
    assert plan.tasks == tuple(
        (s, "p", c) for c in ("random_forest", "logistic_regression", "knn") for s in ("s", "t", "s+t")
    )
    assert _plan(sources=("t+s",)).sources == ("t+s",)
    with pytest.raises(InputError, match="no embeddings of source 'u'"):
        _plan(sources=("s+u",))
    with pytest.raises(ConfigError, match="score classifier 'svm'"):
        _plan(probes=("svm",))
    with pytest.raises(ConfigError, match="cannot be a probe"):
        _plan(probes=(SPARK_RF,))


def test_hybrid_vectors_concatenate_their_parts_per_customer_and_view(spark) -> None:  # type: ignore[no-untyped-def]
    from custembed.jobs.score import with_hybrids

    embeddings = spark.createDataFrame(
        [
            ("s", "train", "a", [1.0, 2.0]),
            ("t", "train", "a", [3.0]),
            ("s", "current", "a", [4.0, 5.0]),
            ("t", "current", "a", [6.0]),
            ("s", "train", "b", [7.0, 8.0]),  # b has no t vector: no hybrid row
        ],
        "source string, view string, customer_id string, vector array<double>",
    )
    rows = {
        (r["source"], r["view"], r["customer_id"]): r["vector"]
        for r in with_hybrids(embeddings, ("s", "s+t")).collect()
    }
    assert rows == {
        ("s", "train", "a"): [1.0, 2.0],
        ("s", "current", "a"): [4.0, 5.0],
        ("s", "train", "b"): [7.0, 8.0],
        ("s+t", "train", "a"): [1.0, 2.0, 3.0],
        ("s+t", "current", "a"): [4.0, 5.0, 6.0],
    }


def test_balanced_training_set_does_not_depend_on_partitioning(spark) -> None:  # type: ignore[no-untyped-def]
    embeddings, labels = _embeddings_and_labels(spark)
    plan = _plan(products=("p",))

    def kept(partitions: int) -> set[tuple[str, str]]:
        rows = training_set(embeddings.repartition(partitions), labels.repartition(partitions + 1), plan)
        return {(r["source"], r["customer_id"]) for r in rows.collect()}

    one, other = kept(1), kept(7)
    assert one == other
    # the same non-buyers kept for every source of the product: sources train on like sets
    assert {c for s, c in one if s == "s"} == {c for s, c in one if s == "t"}


def test_fit_tunes_each_model_when_asked(spark, tmp_path) -> None:  # type: ignore[no-untyped-def]
    train, _ = _train(spark)
    plan = ScorePlan(
        day=DAY,
        sources=("s",),
        products=("p",),
        classifier="logistic_regression",
        tasks=(("s", "p", "logistic_regression"),),
        class_weight=False,
        seed=1,
        threshold=0.5,
        scoring_source=None,
        tuning_trials=2,
    )
    row = fit(train, plan, store=tmp_path.as_uri()).info.collect()[0]
    assert "logisticregression__C" in row["params"] and row["validation_auc"] > 0.5
    with pytest.raises(ConfigError, match="score.tuning_trials: -1"):
        _plan(tuning_trials=-1)
    with pytest.raises(ConfigError, match="spark_random_forest is not tuned"):
        _plan(tuning_trials=3, classifier=SPARK_RF)

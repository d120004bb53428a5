"""Spark metrics against scikit-learn on the same scored rows (random, ties, degenerate)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

from custembed.metrics import binary_metrics, decile_lift


def scored_frame(spark, groups: dict[str, tuple[np.ndarray, np.ndarray]]):  # type: ignore[no-untyped-def]
    rows = [
        (g, f"c{i:05d}", float(s), int(y))
        for g, (scores, labels) in groups.items()
        for i, (s, y) in enumerate(zip(scores, labels, strict=True))
    ]
    return spark.createDataFrame(rows, "product string, customer_id string, score double, label int")


def test_metrics_equal_sklearn_on_random_and_tied_scores(spark) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(5)
    labels = (rng.random(3000) < 0.05).astype(int)
    smooth = np.clip(rng.normal(0.4 + 0.2 * labels, 0.15), 0, 1)
    tied = np.round(smooth, 1)  # many ties
    got = {
        r["product"]: r
        for r in binary_metrics(
            scored_frame(spark, {"smooth": (smooth, labels), "tied": (tied, labels)}), groups=["product"]
        ).collect()
    }
    for name, scores in (("smooth", smooth), ("tied", tied)):
        r = got[name]
        predicted = (scores >= 0.5).astype(int)
        assert r["auc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)
        assert r["f1"] == pytest.approx(f1_score(labels, predicted), abs=1e-9)
        assert r["precision"] == pytest.approx(precision_score(labels, predicted, zero_division=0), abs=1e-9)
        assert r["recall"] == pytest.approx(recall_score(labels, predicted), abs=1e-9)
        assert r["accuracy"] == pytest.approx(accuracy_score(labels, predicted), abs=1e-9)
        assert (r["rows"], r["positives"]) == (3000, labels.sum())


def test_auc_is_null_when_one_class_only(spark) -> None:  # type: ignore[no-untyped-def]
    scores = np.linspace(0, 1, 50)
    got = binary_metrics(
        scored_frame(spark, {"none": (scores, np.zeros(50, int)), "all": (scores, np.ones(50, int))}),
        groups=["product"],
    ).collect()
    assert {r["product"]: r["auc"] for r in got} == {"none": None, "all": None}


@pytest.mark.parametrize("base_rate", [0.02, 0.3])
def test_perfect_ranking_top_decile_lift(spark, base_rate: float) -> None:  # type: ignore[no-untyped-def]
    n = 1000
    labels = np.zeros(n, int)
    labels[: int(n * base_rate)] = 1
    scores = labels + np.linspace(0.5, 0.0, n)  # buyers first, strictly decreasing
    lift = decile_lift(scored_frame(spark, {"p": (scores, labels)}), groups=["product"]).orderBy("decile").collect()
    assert [r["decile"] for r in lift] == list(range(1, 11))
    assert sum(r["customers"] for r in lift) == n and sum(r["buyers"] for r in lift) == labels.sum()
    assert lift[0]["lift"] == pytest.approx(min(1 / base_rate, 10.0))
    assert lift[-1]["cumulative_lift"] == pytest.approx(1.0)


def test_random_ranking_lift_near_one(spark) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(1)
    labels = (rng.random(20000) < 0.1).astype(int)
    lift = decile_lift(scored_frame(spark, {"p": (rng.random(20000), labels)}), groups=["product"]).collect()
    assert all(0.75 < r["lift"] < 1.25 for r in lift)


def _replicate_weights(frame, replicates: int, seed: int) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    """The weights of each replicate, recomputed from the documented rule (hash → multiplicity → strata)."""
    from custembed.metrics import replicate_multiplicities, stratified_weights

    rows = frame.select("customer_id", F.xxhash64("customer_id", F.lit(seed)).alias("h"), "score", "label").toPandas()
    labels = rows["label"].to_numpy(dtype=float)
    weights = stratified_weights(replicate_multiplicities(rows["h"].to_numpy(), range(replicates)), labels)
    return pd.concat([rows.assign(replicate=b, weight=w) for b, w in enumerate(weights)])


def test_multiplicities_are_poisson_one_and_depend_on_customer_and_replicate_only() -> None:
    from custembed.metrics import replicate_multiplicities

    hashes = np.random.default_rng(0).integers(-(2**63), 2**63 - 1, size=20000, dtype=np.int64)
    drawn = replicate_multiplicities(hashes, range(3))
    assert drawn.shape == (3, 20000)
    assert drawn.mean() == pytest.approx(1.0, abs=0.02) and drawn.var() == pytest.approx(1.0, abs=0.04)
    assert (drawn == 0).mean() == pytest.approx(np.exp(-1), abs=0.01)
    # replicate 2 alone, or the customers in another order: the same draws (paired across groups)
    assert np.array_equal(replicate_multiplicities(hashes[::-1], [2])[0], drawn[2][::-1])
    assert not np.array_equal(drawn[0], drawn[1])


def test_bootstrap_replicate_metrics_equal_sklearn_with_the_same_weights(spark) -> None:  # type: ignore[no-untyped-def]
    from custembed.metrics import bootstrap_replicates

    rng = np.random.default_rng(3)
    labels = (rng.random(300) < 0.2).astype(int)
    scores = np.round(np.clip(rng.normal(0.4 + 0.2 * labels, 0.2), 0, 1), 2)  # ties too
    frame = scored_frame(spark, {"p": (scores, labels)})
    weights = _replicate_weights(frame, 4, 7)
    got = {
        r["replicate"]: r
        for r in bootstrap_replicates(frame, groups=["product"], threshold=0.5, replicates=4, seed=7).collect()
    }
    assert sorted(got) == [0, 1, 2, 3]
    for b, rows in weights.groupby("replicate"):
        # stratified: each replicate keeps the class totals of the sample
        totals = rows.groupby("label")["weight"].sum()
        assert totals[1] == pytest.approx(labels.sum()) and totals[0] == pytest.approx(len(labels) - labels.sum())
        predicted = (rows["score"] >= 0.5).astype(int)
        assert got[b]["auc"] == pytest.approx(
            roc_auc_score(rows["label"], rows["score"], sample_weight=rows["weight"]), abs=1e-9
        )
        assert got[b]["f1"] == pytest.approx(f1_score(rows["label"], predicted, sample_weight=rows["weight"]))
        assert got[b]["accuracy"] == pytest.approx(
            accuracy_score(rows["label"], predicted, sample_weight=rows["weight"])
        )
        ranked = rows.sort_values(["score", "customer_id"], ascending=[False, True])
        before = ranked["weight"].cumsum() - ranked["weight"]
        top = ranked[before < ranked["weight"].sum() * 0.1]
        expected = np.average(top["label"], weights=top["weight"]) / labels.mean()
        assert got[b]["top10_lift"] == pytest.approx(expected)
    # a replicate resamples: not every customer once
    assert (weights["weight"] == 0).groupby(weights["replicate"]).any().all()
    # seeded: the same seed gives the same replicates, another seed others
    again = _replicate_weights(frame, 4, 7)
    assert again["weight"].tolist() == pytest.approx(weights["weight"].tolist())
    assert not np.allclose(_replicate_weights(frame, 4, 8)["weight"], weights["weight"])


def test_bootstrap_leaves_undefined_values_null(spark) -> None:  # type: ignore[no-untyped-def]
    from custembed.metrics import bootstrap_replicates

    frame = scored_frame(spark, {"p": (np.linspace(0, 1, 50), np.zeros(50, int))})  # no buyers
    rows = bootstrap_replicates(frame, groups=["product"], threshold=0.5, replicates=3, seed=1).collect()
    assert len(rows) == 3 and all(r["auc"] is None and r["top10_lift"] is None for r in rows)


def test_intervals_cover_the_point_and_paired_differences_mark_significance(spark) -> None:  # type: ignore[no-untyped-def]
    from custembed.metrics import (
        INTERVAL_METRICS,
        bootstrap_replicates,
        paired_auc_differences,
        percentile_intervals,
    )

    rng = np.random.default_rng(11)
    n = 1500
    labels = (rng.random(n) < 0.1).astype(int)
    strong = rng.normal(1.5 * labels, 1.0)
    weak = rng.normal(0.2 * labels, 1.0)
    close = strong + rng.normal(0, 0.05, n)  # nearly the strong source: no significant difference
    rows = [
        (src, "p", "rf", f"c{i:05d}", float(1 / (1 + np.exp(-v[i]))), int(labels[i]))
        for src, v in (("strong", strong), ("weak", weak), ("close", close))
        for i in range(n)
    ]
    scored = spark.createDataFrame(
        rows, "source string, product string, classifier string, customer_id string, score double, label int"
    )
    keys = ["source", "product", "classifier"]
    point = binary_metrics(scored, groups=keys)
    replicated = bootstrap_replicates(scored, groups=keys, threshold=0.5, replicates=60, seed=1)
    bounds = {r["source"]: r for r in percentile_intervals(replicated, groups=keys).collect()}
    points = {r["source"]: r for r in point.collect()}
    for source in ("strong", "weak", "close"):
        for metric in INTERVAL_METRICS[:-1]:
            lo, hi, value = bounds[source][f"{metric}_lo"], bounds[source][f"{metric}_hi"], points[source][metric]
            assert lo <= value <= hi, (source, metric)
        assert bounds[source]["top10_lift_lo"] < bounds[source]["top10_lift_hi"]
    assert bounds["weak"]["auc_hi"] - bounds["weak"]["auc_lo"] > 0.02
    diffs = {
        r["source"]: r
        for r in paired_auc_differences(replicated, point, unit="source", groups=["product", "classifier"]).collect()
    }
    best = max(points, key=lambda s: points[s]["auc"])
    assert best in ("strong", "close") and all(r["best_source"] == best for r in diffs.values())
    assert diffs[best]["auc_diff"] is None
    assert diffs["weak"]["auc_diff_significant"] and diffs["weak"]["auc_diff_hi"] < 0
    other = "close" if best == "strong" else "strong"
    assert not diffs[other]["auc_diff_significant"]
    assert diffs[other]["auc_diff_lo"] <= diffs[other]["auc_diff"] <= diffs[other]["auc_diff_hi"]

"""Spark metrics against scikit-learn on the same scored rows (random, ties, degenerate)."""

from __future__ import annotations

import numpy as np
import pytest
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

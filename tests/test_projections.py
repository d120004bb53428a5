"""The projection sample rule (one rule, pandas and Spark) and the pure PCA / t-SNE computation."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")

from custembed import explore, projections


def test_sample_sizes_keep_buyers_while_they_fit_in_half() -> None:
    assert projections.sample_sizes(8, 28, 20) == (8, 12)  # every buyer, non-buyers fill up
    assert projections.sample_sizes(8, 28, 10) == (5, 5)  # buyers would take more than half
    assert projections.sample_sizes(8, 2, 10) == (8, 2)  # fewer than n in all: everyone
    assert projections.sample_sizes(30, 3, 10) == (7, 3)  # few non-buyers: buyers fill up
    with pytest.raises(ValueError, match="n must be at least 1"):
        projections.sample_sizes(1, 1, 0)


def test_choose_sample_takes_the_lowest_keys_of_each_group() -> None:
    ids = [f"C{index:03d}" for index in range(50)]
    buyer = np.array([index % 5 == 0 for index in range(50)])
    chosen = projections.choose_sample(ids, buyer, 20, seed=3)
    assert chosen.sum() == 20 and chosen[buyer].all()  # all 10 buyers, 10 non-buyers
    others = [customer for customer, is_buyer in zip(ids, buyer, strict=True) if not is_buyer]
    expected = sorted(others, key=lambda customer: hashlib.md5(f"3:{customer}".encode()).hexdigest())[:10]
    assert sorted(np.array(ids)[chosen & ~buyer]) == sorted(expected)
    assert not np.array_equal(chosen, projections.choose_sample(ids, buyer, 20, seed=4))


def test_project_returns_points_per_method_and_says_why_not() -> None:
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(60, 8))
    embeddings[3, 0] = np.nan
    is_buyer = rng.random(60) < 0.2
    result = projections.project(embeddings, is_buyer, methods=("PCA", "t-SNE"), max_points=40, seed=1)
    assert list(result.coordinates) == ["PCA", "t-SNE"] and result.coordinates["PCA"].shape == (40, 2)
    assert (result.total, result.count, result.width, result.dropped) == (59, 40, 8, 1)
    assert 0 < result.explained_variance[0] <= 1 and result.titles["PCA"].startswith("PCA (")
    few = projections.project(embeddings[:5], is_buyer[:5], seed=1)
    assert isinstance(few.coordinates["t-SNE"], str) and "too few points" in few.coordinates["t-SNE"]
    assert projections.project(embeddings[:2], is_buyer[:2]).unavailable.startswith("2 usable embeddings")
    again = projections.project(embeddings, is_buyer, methods=("PCA",), max_points=40, seed=1)
    np.testing.assert_array_equal(again.coordinates["PCA"], result.coordinates["PCA"])


def test_spark_and_pandas_readers_choose_the_same_customers(spark, lake_dir: Path) -> None:  # type: ignore[no-untyped-def]
    from pyspark.sql import functions as F

    from custembed.io import Lake
    from custembed.jobs.report import projection_sample

    database = "test_projections"
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {database}")
    lake = Lake(spark, database, str(lake_dir))
    day, customers = "2023-07-31", [f"C{index:04d}" for index in range(80)]
    embeddings = spark.createDataFrame(
        [
            (c, "m", "1", [float(i), float(i % 7)], None, day, view, "s")
            for i, c in enumerate(customers)
            for view in ("train", "current")
        ],
        "customer_id string, model_name string, model_version string, vector array<float>, fingerprint bigint, "
        "dt string, view string, source string",
    )
    labels = spark.createDataFrame(
        [
            (c, "p", window, "2023-05-01", "2023-07-31", int(i % 6 == 0), day)
            for i, c in enumerate(customers[5:])
            for window in ("train", "test")
        ],
        "customer_id string, product string, label_window string, window_start string, window_end string, "
        "label int, dt string",
    )
    lake.write_partitions(embeddings, "embeddings")
    lake.write_partitions(labels.withColumn("label", F.col("label")), "labels")

    for n, seed in ((30, 0), (30, 7), (8, 2), (500, 1)):
        from_spark, spark_buyers = projection_sample(lake, day, "s", "p", n=n, seed=seed)
        from_files, file_buyers = explore.embedding_sample(lake_dir, day, "s", "p", n=n, seed=seed, database=database)
        np.testing.assert_array_equal(from_spark, from_files)
        np.testing.assert_array_equal(spark_buyers, file_buyers)
        assert len(from_spark) == min(n, 75)

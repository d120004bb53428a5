"""``custembed segment``: k chosen by silhouette, segments and profiles of a source's embeddings."""

from __future__ import annotations

import random

import pytest
from pyspark.sql import functions as F

from custembed.config import SegmentConfig
from custembed.jobs import segment

DAY = "2023-07-31"


def blobs(spark, k: int = 3, per: int = 40, width: int = 6, seed: int = 0):  # type: ignore[no-untyped-def]
    """``k`` well separated directions in ``width`` dimensions, ``per`` customers each; customer ``c<j>-<i>``."""
    rng = random.Random(seed)
    rows = []
    for j in range(k):
        for i in range(per):
            vector = [rng.gauss(0.0, 0.05) for _ in range(width)]
            vector[j] += 3.0
            rows.append((f"c{j}-{i}", vector))
    return spark.createDataFrame(rows, "customer_id string, vector array<float>")


def test_silhouette_finds_the_number_of_blobs_and_assigns_each_to_one_segment(spark) -> None:  # type: ignore[no-untyped-def]
    rows = segment.features(blobs(spark), normalize=True)
    settings = SegmentConfig(k_min=2, k_max=6, seed=3)
    k, scores = segment.choose_k(rows, settings)
    assert k == 3 and set(scores) == {2, 3, 4, 5, 6} and scores[3] > 0.8
    assigned = segment.assign(rows, k=3, cfg=settings).collect()
    by_blob: dict[str, set[int]] = {}
    for r in assigned:
        by_blob.setdefault(r["customer_id"].split("-")[0], set()).add(r["segment"])
    assert all(len(s) == 1 for s in by_blob.values()) and len(set.union(*by_blob.values())) == 3
    assert all(0.0 <= r["distance"] < 0.2 for r in assigned)  # normalised blobs sit next to their centre


def test_profiles_list_over_represented_actions_and_buyers(spark) -> None:  # type: ignore[no-untyped-def]
    segments = spark.createDataFrame(
        [(f"a{i}", 0, 0.1) for i in range(10)] + [(f"b{i}", 1, 0.1) for i in range(10)],
        "customer_id string, segment int, distance double",
    )
    sequences = spark.createDataFrame(
        [(f"a{i}", [3, 4, 4]) for i in range(10)] + [(f"b{i}", [3, 5] if i < 5 else [3]) for i in range(10)],
        "customer_id string, tokens array<int>",
    )
    texts = spark.createDataFrame([(3, "visiting shop"), (4, "consulting tv"), (5, "buying tv")], "id int, text string")
    got = {r["segment"]: r for r in segment.profiles(segments, sequences, texts, buying_ids=[5], top=2).collect()}
    assert got[0]["customers"] == 10 and got[0]["share"] == pytest.approx(0.5)
    assert got[0]["top_actions"][0] == "consulting tv (x2.0)"  # all of segment 0, half of everyone
    assert got[1]["top_actions"][0] == "buying tv (x2.0)"
    assert all("visiting shop" not in a for r in got.values() for a in r["top_actions"])  # lift 1: not listed
    assert got[0]["buyers_share"] == 0.0 and got[1]["buyers_share"] == pytest.approx(0.5)


def test_the_job_writes_segments_and_profiles_and_a_rerun_replaces_them(spark, lake_sets, database) -> None:  # type: ignore[no-untyped-def]
    from custembed.config import load_config
    from custembed.jobs.common import lake_from

    cfg = load_config(None, [s for s in lake_sets if s != "--set"])
    lake = lake_from(spark, cfg)
    vectors = blobs(spark, per=20)
    lake.write_partitions(
        vectors.select(
            "customer_id",
            F.lit("counts").alias("model_name"),
            F.lit("1").alias("model_version"),
            "vector",
            F.lit(None).cast("bigint").alias("fingerprint"),
            F.lit(DAY).alias("dt"),
            F.lit("current").alias("view"),
            F.lit("counts").alias("source"),
        ),
        "embeddings",
    )
    lake.write_partitions(
        vectors.select(
            "customer_id",
            F.lit(DAY).alias("cutoff"),
            F.array(F.lit(3), F.lit(4)).alias("tokens"),
            F.lit("x").alias("text"),
            F.lit(2).alias("seq_len"),
            F.lit(2).alias("full_len"),
            F.lit(2).alias("n_events"),
            F.lit(0).alias("n_no_action"),
            F.current_timestamp().alias("first_event_time"),
            F.current_timestamp().alias("last_event_time"),
            F.array(F.lit(0), F.lit(1)).alias("gaps"),
            F.array(F.lit(0), F.lit(0)).alias("amounts"),
            F.lit(DAY).alias("dt"),
            F.lit("current").alias("view"),
        ),
        "sequences",
    )
    args = [*lake_sets, "--run-date", DAY, "--encoder", "counts", "--set", "segment.k_max=5"]
    assert segment.main(args) == 0
    assert segment.main(args) == 0
    spark.catalog.setCurrentDatabase(database)
    assert spark.table("segments").where(f"dt = '{DAY}' and model = 'counts'").count() == 60
    profiles = spark.table("segment_profiles").where(f"dt = '{DAY}' and model = 'counts'").collect()
    assert len(profiles) == 3 and sum(r["customers"] for r in profiles) == 60
    assert segment.main([*lake_sets, "--run-date", DAY, "--encoder", "nothing"]) == 2  # no embeddings: one line

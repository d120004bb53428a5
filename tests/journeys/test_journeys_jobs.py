"""journeys-simulate and journeys-prepare: Spark transforms on inline rows and a tiny end-to-end run."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from custembed.cli import JOBS
from custembed.config import load_config
from custembed.jobs import journeys_prepare as prep
from custembed.jobs import journeys_simulate
from custembed.journeys import codes
from custembed.journeys.layout import load_layout
from custembed.journeys.text import parse_journey

RUN = dt.date(2024, 5, 1)
STORES = ("store_a", "store_b")
TINY = ["--set", "journeys.simulate.visits=10", "--set", "journeys.simulate.partitions=2"]
DIRTY = ["--set", "journeys.simulate.dirty_fraction=0.01"]


def ts(seconds: float) -> dt.datetime:
    return dt.datetime(2024, 5, 1, 10, tzinfo=dt.timezone.utc) + dt.timedelta(seconds=seconds)


def test_spark_location_code_matches_numpy(spark) -> None:  # type: ignore[no-untyped-def]
    layout = load_layout("store_b")
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.uniform(-0.4, layout.width + 0.4, 300), [0.0, layout.width, 39.99]])
    y = np.concatenate([rng.uniform(-0.4, layout.height + 0.4, 300), [0.0, layout.height, 0.25]])
    nx, ny = layout.grid_shape
    points = spark.createDataFrame([(float(a), float(b)) for a, b in zip(x, y, strict=True)], "x double, y double")
    coded = points.select(prep.location_code(F.col("x"), F.col("y"), F.lit(nx), F.lit(ny)).alias("code")).collect()
    assert [r["code"] for r in coded] == codes.encode(x, y, layout).tolist()


def test_classify_positions_gives_each_reason(spark) -> None:  # type: ignore[no-untyped-def]
    rows = [
        ("store_a", "v1", 0, ts(0), 2.0, 1.0),
        ("store_a", "v1", 1, ts(1), -0.3, 1.0),  # within the margin: moved onto the wall
        ("store_a", "v1", 2, ts(2), -3.0, 1.0),  # outside
        ("store_a", "v1", 3, ts(-5), 2.0, 1.0),  # earlier than samples before it
        ("store_a", "v1", 4, ts(4), 2.5, 1.0),
        ("store_a", " ", 0, ts(0), 2.0, 1.0),
        (None, "v2", 0, ts(0), 2.0, 1.0),
        ("store_q", "v3", 0, ts(0), 2.0, 1.0),
        ("store_a", "v4", 0, None, 2.0, 1.0),
        ("store_a", "v4", 1, ts(1), float("nan"), 1.0),
    ]
    positions = spark.createDataFrame(
        rows, "store string, visit_id string, seq bigint, t timestamp, x double, y double"
    )
    stores = prep.store_frame(spark, [load_layout("store_a")])
    classified = prep.classify_positions(positions, stores, outside_margin_m=0.5)
    got = {(r["visit_id"], r["seq"]): (r["_reason"], r["x"]) for r in classified.collect()}
    assert {key: reason for key, (reason, _) in got.items()} == {
        ("v1", 0): None,
        ("v1", 1): None,
        ("v1", 2): prep.OUTSIDE_STORE,
        ("v1", 3): prep.TIME_BACKWARDS,
        ("v1", 4): None,
        ("", 0): prep.MISSING_ID,
        ("v2", 0): prep.MISSING_ID,
        ("v3", 0): prep.UNKNOWN_STORE,
        ("v4", 0): prep.MISSING_POSITION,
        ("v4", 1): prep.MISSING_POSITION,
    }
    assert got[("v1", 1)][1] == 0.0  # within the margin: moved onto the wall
    assert got[("v1", 2)][1] == -3.0  # rejected rows keep what was read


def test_journey_of_a_hand_made_visit(spark) -> None:  # type: ignore[no-untyped-def]
    """Walk, stand 20 s beside a dairy shelf, walk on: one pause, one purchase marker after its last position."""
    layout = load_layout("store_a")
    stand = (5.5, 18.0)  # beside a_dairy_1 (y 18.6-19.8)
    path = [(2.0 + 0.35 * k, 1.0 + 1.7 * k) for k in range(10)] + [stand] * 20 + [(5.5 + k, 17.5) for k in range(1, 8)]
    rows = [("store_a", "v1", k, ts(k), float(x), float(y)) for k, (x, y) in enumerate(path)]
    positions = spark.createDataFrame(
        rows, "store string, visit_id string, seq bigint, t timestamp, x double, y double"
    )
    scans = spark.createDataFrame(
        [("store_a", "v1", "dairy"), ("store_a", "v9", "meat")], "store string, visit_id string, zone string"
    )
    classified = prep.classify_positions(positions, prep.store_frame(spark, [layout]), outside_margin_m=0.5)
    params = load_config().journeys.prepare
    journeys = prep.build_journeys(prep.with_codes(classified), scans, layouts={"store_a": layout}, params=params)
    (journey,) = journeys.collect()
    parsed = parse_journey(journey["text"])
    assert parsed.codes == tuple(codes.encode(*np.array(path).T, layout))
    assert [(i, z) for i, z in parsed.purchases] == [(29, "dairy")]
    assert (journey["n_positions"], journey["n_pauses"], journey["n_purchases"], journey["n_scans"]) == (37, 1, 1, 1)
    assert journey["duration_s"] == 36.0


@pytest.fixture(scope="module")
def simulated(spark, lake_dir, tmp_path_factory):  # type: ignore[no-untyped-def]
    """A tiny simulated lake in this module's database: 10 visits to each store, 1 % dirty rows."""
    from custembed.spark import ensure_database

    database = "t_journeys_jobs"
    ensure_database(spark, database)
    sets = ["--set", f"project.lake_dir={lake_dir}", "--set", f"project.database={database}"]
    cfg = load_config(None, [*TINY[1::2], *DIRTY[1::2], *sets[1::2]])
    summary = journeys_simulate.run(spark, cfg, run_date=RUN)
    return cfg, sets, summary


def test_simulate_writes_both_tables_per_store(spark, simulated) -> None:  # type: ignore[no-untyped-def]
    cfg, _, summary = simulated
    assert set(summary["positions"]) == set(STORES) and set(summary["scans"]) == set(STORES)
    positions = spark.table(f"{cfg.project.database}.store_positions")
    assert positions.select("visit_id").distinct().where(F.col("visit_id").isNotNull()).count() == 20
    assert positions.where(F.col("dt") != RUN.isoformat()).count() == 0


def test_simulate_is_independent_of_partitioning(spark, simulated) -> None:  # type: ignore[no-untyped-def]
    cfg, _, _ = simulated
    from custembed.journeys.simulate import SimulationSettings

    sim = cfg.journeys.simulate
    settings = SimulationSettings(sim.sample_hz, sim.noise_m, sim.dirty_fraction, sim.seed, RUN)
    layouts = [load_layout(s) for s in STORES]
    one = journeys_simulate.simulate_visits(spark, layouts, settings, visits=10, partitions=1)
    three = journeys_simulate.simulate_visits(spark, layouts, settings, visits=10, partitions=3)
    assertDataFrameEqual(one, three)
    written, _ = journeys_simulate.split_rows(one, RUN)
    assertDataFrameEqual(written, spark.table(f"{cfg.project.database}.store_positions"))


def test_prepare_counts_add_up_and_a_rerun_gives_the_same_rows(spark, simulated) -> None:  # type: ignore[no-untyped-def]
    cfg, sets, _ = simulated
    db = cfg.project.database
    assert JOBS["journeys-prepare"] == "journeys_prepare"
    assert prep.main([*sets, *TINY, "--run-date", RUN.isoformat()]) == 0
    first = spark.table(f"{db}.journeys").collect()
    summary = prep.run(spark, cfg, run_date=RUN)
    assert summary["rows_read"] == summary["rows_used"] + summary["rows_rejected"]
    assert summary["rows_read"] == spark.table(f"{db}.store_positions").count()
    reasons = summary["rejected_by_reason"]
    assert set(reasons) <= set(prep.REJECT_REASONS) and reasons.get(prep.MISSING_ID, 0) > 0
    assert reasons.get(prep.OUTSIDE_STORE, 0) > 0 and reasons.get(prep.TIME_BACKWARDS, 0) > 0
    assert spark.table(f"{db}.journey_rejects").count() == summary["rows_rejected"]
    assertDataFrameEqual(spark.table(f"{db}.journeys").collect(), first)  # rerun: same rows, none twice
    runs = spark.table(f"{db}.runs").where(F.col("job") == "journeys-prepare").collect()
    assert len(runs) == 2 and all(r["status"] == "succeeded" for r in runs)
    assert json.loads(runs[0]["details"])["journeys"] == {s: 10 for s in STORES}


def test_journey_texts_read_back(spark, simulated) -> None:  # type: ignore[no-untyped-def]
    cfg, _, _ = simulated
    journeys = spark.table(f"{cfg.project.database}.journeys").collect()
    assert len(journeys) == 20 and sum(j["n_purchases"] for j in journeys) > 0
    for journey in journeys:
        parsed = parse_journey(journey["text"])
        layout = load_layout(journey["store"])
        assert parsed.bad_tokens == 0 and len(parsed.codes) == journey["n_positions"]
        assert len(parsed.purchases) == journey["n_purchases"] <= journey["n_scans"]
        x, y = codes.decode(list(parsed.codes), layout)
        assert layout.inside(x, y).all()
        assert {zone for _, zone in parsed.purchases} <= set(layout.zones)

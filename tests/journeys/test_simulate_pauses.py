"""The shopper simulator's invariants and DBSCAN pause detection (numpy cores, no Spark)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from custembed.journeys import simulate as sim
from custembed.journeys.layout import load_layout
from custembed.journeys.pauses import DetectedPause, find_pauses, pause_zones, purchase_markers

SETTINGS = sim.SimulationSettings(
    sample_hz=1.0, noise_m=0.15, dirty_fraction=0.0, seed=11, run_date=dt.date(2024, 5, 1)
)
PAUSE = {"eps_m": 0.75, "time_scale_s": 4.0, "min_samples": 5, "min_duration_s": 5.0}


@pytest.fixture(scope="module", params=["store_a", "store_b"])
def graph(request: pytest.FixtureRequest) -> sim.StoreGraph:
    return sim.StoreGraph(load_layout(request.param))


@pytest.fixture(scope="module")
def visits(graph: sim.StoreGraph) -> list[sim.Visit]:
    return [sim.simulate_visit(graph, SETTINGS, index) for index in range(60)]


def test_true_positions_never_enter_a_shelf_and_stay_inside(graph: sim.StoreGraph, visits: list[sim.Visit]) -> None:
    layout = graph.layout
    steps = cut = 0
    for visit in visits:
        assert not layout.in_shelf(visit.true_x, visit.true_y).any(), visit.visit_id
        assert layout.inside(visit.true_x, visit.true_y).all(), visit.visit_id
        ends = (visit.true_x[:-1], visit.true_y[:-1], visit.true_x[1:], visit.true_y[1:])
        # the chord between two samples may cut a shelf's corner where the path turns round it, never deeply
        assert not layout.crosses_shelf(*ends, margin=-0.3).any(), visit.visit_id
        steps += len(visit.t) - 1
        cut += int(layout.crosses_shelf(*ends).sum())
    assert cut <= 0.005 * steps


def test_speeds_are_bounded_and_timing_is_regular(visits: list[sim.Visit]) -> None:
    for visit in visits:
        np.testing.assert_allclose(np.diff(visit.t), 1.0 / SETTINGS.sample_hz)
        speed = np.hypot(np.diff(visit.true_x), np.diff(visit.true_y)) * SETTINGS.sample_hz
        assert speed.max() <= sim.MAX_SPEED + 1e-9
    moving = np.concatenate([np.hypot(np.diff(v.true_x), np.diff(v.true_y)) for v in visits])
    assert np.median(moving[moving > 0.2]) >= sim.MIN_SPEED * 0.9  # walking, not creeping


def test_visits_start_at_the_entrance_and_end_at_the_exit(graph: sim.StoreGraph, visits: list[sim.Visit]) -> None:
    for visit in visits:
        assert np.hypot(visit.true_x[0] - graph.layout.entrance[0], visit.true_y[0] - graph.layout.entrance[1]) < 1e-9
        assert np.hypot(visit.true_x[-1] - graph.layout.exit[0], visit.true_y[-1] - graph.layout.exit[1]) <= 1.5


def test_scans_are_the_products_bought_at_a_till(visits: list[sim.Visit]) -> None:
    assert {v.shopper for v in visits} == {s.name for s in sim.SHOPPER_TYPES}
    for visit in visits:
        bought = sorted((p.zone, product) for p in visit.pauses for product in p.products)
        assert sorted((zone, product) for _, zone, product in visit.scans) == bought
        if visit.scans:
            till = visit.pauses[-1]
            assert till.zone is None and all(till.start_s <= t <= till.end_s for t, _, _ in visit.scans)


def test_a_visit_is_the_same_whatever_batch_simulates_it() -> None:
    layout = load_layout("store_a")
    alone_positions, alone_scans = sim.simulate_rows([layout], SETTINGS, np.array([0]), np.array([7]))
    batch_positions, batch_scans = sim.simulate_rows([layout], SETTINGS, np.zeros(4, int), np.array([3, 9, 7, 1]))
    in_batch = batch_positions[batch_positions["visit_id"].eq(alone_positions["visit_id"].iloc[0])]
    np.testing.assert_array_equal(in_batch[["x", "y"]].to_numpy(), alone_positions[["x", "y"]].to_numpy())
    assert batch_scans.merge(alone_scans).shape[0] == len(alone_scans)
    other_seed = sim.SimulationSettings(1.0, 0.15, 0.0, 12, SETTINGS.run_date)
    changed, _ = sim.simulate_rows([layout], other_seed, np.array([0]), np.array([7]))
    assert len(changed) != len(alone_positions) or not np.allclose(changed["x"], alone_positions["x"])


def test_dirty_rows_are_of_the_three_kinds() -> None:
    layout = load_layout("store_a")
    dirty = sim.SimulationSettings(1.0, 0.15, 0.05, 11, SETTINGS.run_date)
    clean_rows, _ = sim.simulate_rows([layout], SETTINGS, np.zeros(10, int), np.arange(10))
    rows, _ = sim.simulate_rows([layout], dirty, np.zeros(10, int), np.arange(10))
    assert len(rows) == len(clean_rows)
    assert rows["visit_id"].isna().sum() > 0
    assert (rows["x"] < -2.5).sum() > 0
    backwards = rows.groupby(clean_rows["visit_id"])["t"].apply(lambda t: (t.diff().dt.total_seconds() < 0).sum())
    assert backwards.sum() > 0
    changed = (rows["x"] != clean_rows["x"]) | (rows["t"] != clean_rows["t"]) | rows["visit_id"].isna()
    assert 0.01 < changed.mean() < 0.1


# -- pauses ---------------------------------------------------------------------------------
def hand_made_visit() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """1 Hz: walk east at 1 m/s for 10 s, stand 20 s at (10, 5), walk 10 s, stand 8 s at (20, 5), walk 5 s."""
    rng = np.random.default_rng(0)
    xs = np.concatenate(
        [np.arange(0, 10, 1.0), np.full(20, 10.0), 10 + np.arange(1, 11, 1.0), np.full(8, 20.0), 20 + np.arange(1, 6)]
    )
    t = np.arange(len(xs), dtype=float)
    return t, xs + rng.normal(0, 0.1, len(xs)), 5.0 + rng.normal(0, 0.1, len(xs))


def test_dbscan_finds_the_two_pauses_of_a_hand_made_visit() -> None:
    t, x, y = hand_made_visit()
    pauses = find_pauses(t, x, y, **PAUSE)
    assert len(pauses) == 2
    for pause, (first, last) in zip(pauses, [(10, 29), (40, 47)], strict=True):
        assert abs(pause.first - first) <= 1 and abs(pause.last - last) <= 1
    assert abs(pauses[0].x - 10.0) < 0.2 and abs(pauses[1].x - 20.0) < 0.2
    assert 17 <= pauses[0].duration_s <= 20
    # min_duration drops the short stop; a large min_samples finds nothing
    assert len(find_pauses(t, x, y, **{**PAUSE, "min_duration_s": 10.0})) == 1
    assert find_pauses(t, x, y, **{**PAUSE, "min_samples": 30}) == []


def test_coming_back_to_a_spot_later_is_another_pause() -> None:
    t = np.arange(60, dtype=float)
    x = np.concatenate([np.full(10, 3.0), np.linspace(3.5, 15, 20), np.linspace(15, 3.5, 20), np.full(10, 3.0)])
    pauses = find_pauses(t, x, np.full(60, 2.0), **PAUSE)
    assert len(pauses) == 2  # the first step away (0.5 m) is still within eps of the stop
    assert pauses[0].first == 0 and abs(pauses[0].last - 9) <= 1
    assert abs(pauses[1].first - 50) <= 1 and pauses[1].last == 59


def test_purchase_markers_take_the_longest_pauses_of_each_scanned_zone() -> None:
    pauses = [DetectedPause(0, 9, 0, 9, 1, 1), DetectedPause(20, 49, 20, 49, 1, 1), DetectedPause(60, 65, 60, 65, 5, 5)]
    zones = ["dairy", "dairy", None]
    assert purchase_markers(pauses, zones, ["dairy"]) == {49: ["dairy"]}
    assert purchase_markers(pauses, zones, ["dairy", "dairy", "dairy", "meat"]) == {9: ["dairy"], 49: ["dairy"]}
    assert purchase_markers(pauses, zones, []) == {}


def test_simulated_pauses_are_found_and_matched(graph: sim.StoreGraph, visits: list[sim.Visit]) -> None:
    true = found = marked = bought = 0
    for visit in visits:
        pauses = find_pauses(visit.t, visit.x, visit.y, **PAUSE)
        markers = purchase_markers(pauses, pause_zones(pauses, graph.layout, 1.5), [z for _, z, _ in visit.scans])
        true += len(visit.pauses)
        found += sum(any(p.start_s <= q.end_s and p.end_s >= q.start_s for p in pauses) for q in visit.pauses)
        marked += sum(len(z) for z in markers.values())
        bought += sum(1 for p in visit.pauses if p.products)
    assert found >= 0.95 * true
    assert 0.9 * bought <= marked <= bought

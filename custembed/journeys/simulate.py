"""Simulated shoppers walking a store layout: positions at a fixed rate with sensor noise, and till scans.

The numpy core of ``custembed journeys-simulate`` (which runs it in ``mapInPandas``).
A visit is determined by ``(seed, store, run date, visit index)``, whatever batch
or Spark partition simulates it.

The model, visit by visit:

1. a shopper type (:data:`SHOPPER_TYPES`: quick top-up, weekly shop, browser) sets
   how many zones the visit targets, the walking speed, how long pauses last and
   how often a pause ends with a purchase;
2. target zones are drawn by popularity (:data:`ZONE_POPULARITY`), without
   repeats; in each, one shelf and one place to stand beside it;
3. the shopper walks from the entrance to the nearest unvisited target each time
   (path length on the grid), along shortest paths over free 50 cm cells (8
   neighbours, no corner cutting, never through a shelf), smoothed by string
   pulling (a shortcut is taken only if it keeps ``CLEARANCE`` from every shelf),
   at a speed in [0.5, 1.5] m/s that varies a little per leg;
4. at each target they pause to look; some pauses end with 1-2 products of the
   shelf bought;
5. with something bought they walk to a till, pause to pay (one scan per product,
   a few seconds apart: ``store_scans``), then walk to the exit; without, straight
   to the exit;
6. positions are sampled every ``1 / sample_hz`` s along that timeline (the true
   positions never fall inside a shelf), plus Gaussian noise of ``noise_m`` per
   axis (a noisy point may fall just beside a walkable cell, as with real sensors);
7. a share ``dirty_fraction`` of position rows is made dirty, as real feeds are:
   far outside the walls, a time earlier than the sample before, a missing visit id.
"""

from __future__ import annotations

import datetime as dt
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from custembed.journeys.layout import CELL_SIZE, StoreLayout, stand_cells

MIN_SPEED = 0.5  # m/s
MAX_SPEED = 1.5
CLEARANCE = 0.2  # metres a smoothed path keeps from every shelf
STANDS_PER_SHELF = 4  # places to stand beside a shelf, spread along it
OPENING_S = 8 * 3600  # visits start between 08:00 and 21:00 UTC of the run date
OPEN_FOR_S = 13 * 3600
# relative popularity of a zone as a target (zones not listed: 1.0); the same in every store
ZONE_POPULARITY = {
    "produce": 1.5,
    "dairy": 1.5,
    "bakery": 1.3,
    "beverages": 1.1,
    "meat": 1.0,
    "pantry": 1.0,
    "snacks": 0.9,
    "frozen": 0.8,
    "household": 0.6,
    "personal_care": 0.6,
}

# position rows and scan rows, as the job writes them (without dt)
POSITION_COLUMNS = ("store", "visit_id", "seq", "t", "x", "y")
SCAN_COLUMNS = ("store", "visit_id", "t", "zone", "product")


@dataclass(frozen=True)
class ShopperType:
    """How one kind of shopper behaves."""

    name: str
    share: float  # of visits
    zones: tuple[int, int]  # number of target zones, inclusive range
    speed: float  # mean walking speed, m/s
    pause_s: tuple[float, float]  # length of a pause at a shelf, uniform range
    buy_prob: float  # chance a pause ends with a purchase


SHOPPER_TYPES = (
    ShopperType("quick_top_up", 0.35, (1, 3), 1.2, (5.0, 15.0), 0.85),
    ShopperType("weekly_shop", 0.40, (5, 9), 0.95, (8.0, 35.0), 0.7),
    ShopperType("browser", 0.25, (3, 7), 0.75, (10.0, 60.0), 0.3),
)


@dataclass(frozen=True)
class SimulationSettings:
    """Plain values the workers need (shipped in the closure)."""

    sample_hz: float
    noise_m: float
    dirty_fraction: float
    seed: int
    run_date: dt.date


@dataclass(frozen=True)
class Pause:
    """A stop the shopper made (ground truth, for tests and docs)."""

    start_s: float
    end_s: float
    zone: str | None  # None: at a till
    products: tuple[str, ...]


@dataclass(frozen=True)
class Visit:
    """One simulated visit before dirt: times in seconds from its start, true and noisy positions."""

    visit_id: str
    shopper: str
    start: float  # epoch seconds
    t: np.ndarray  # [N] seconds since start
    true_x: np.ndarray
    true_y: np.ndarray
    x: np.ndarray  # with sensor noise
    y: np.ndarray
    pauses: tuple[Pause, ...]
    scans: tuple[tuple[float, str, str], ...]  # (seconds since start, zone, product)


def store_key(name: str) -> int:
    """A stable integer of a store's name for seeding (Python's hash() differs per process)."""
    return zlib.crc32(name.encode("utf-8"))


# -- paths on the grid -----------------------------------------------------------------
@dataclass
class StoreGraph:
    """Shortest paths over the free 50 cm cells of a layout, to every target (stand places, tills, exit).

    Built once per store in each Python worker batch: one Dijkstra from each target
    gives, for any cell, the distance to it and the next cell towards it.
    """

    layout: StoreLayout
    node_of: np.ndarray = field(init=False)  # [nx, ny] node id or -1
    cells: np.ndarray = field(init=False)  # [nodes, 2] ix, iy
    stands: list[list[int]] = field(init=False)  # per shelf: target ids of places to stand
    tills: list[int] = field(init=False)  # target ids
    exit: int = field(init=False)  # target id
    entrance_node: int = field(init=False)
    distance: np.ndarray = field(init=False)  # [targets, nodes] metres
    towards: np.ndarray = field(init=False)  # [targets, nodes] next node towards the target

    def __post_init__(self) -> None:
        from scipy import ndimage
        from scipy.sparse.csgraph import dijkstra

        layout = self.layout
        free = layout.free_cells()
        components, _ = ndimage.label(free, structure=np.ones((3, 3)))
        free &= components == components[layout.cell_of(*layout.entrance)]
        self.node_of = np.full(free.shape, -1, dtype=np.int64)
        self.cells = np.argwhere(free)
        self.node_of[free] = np.arange(len(self.cells))
        graph = self._grid_graph(free)
        targets: list[int] = []
        self.stands = []
        for cells in stand_cells(layout):
            nodes = [int(self.node_of[c]) for c in cells if self.node_of[c] >= 0]
            picks = np.unique(np.linspace(0, len(nodes) - 1, min(STANDS_PER_SHELF, len(nodes))).round().astype(int))
            self.stands.append(list(range(len(targets), len(targets) + len(picks))))
            targets.extend(nodes[i] for i in picks)
        self.tills = list(range(len(targets), len(targets) + len(layout.tills)))
        targets.extend(int(self.node_of[layout.cell_of(*till)]) for till in layout.tills)
        self.exit = len(targets)
        targets.append(int(self.node_of[layout.cell_of(*layout.exit)]))
        self.entrance_node = int(self.node_of[layout.cell_of(*layout.entrance)])
        self.target_nodes = np.array(targets)
        distance, predecessors = dijkstra(graph, directed=False, indices=self.target_nodes, return_predecessors=True)
        self.distance = distance * CELL_SIZE
        self.towards = predecessors

    def _grid_graph(self, free: np.ndarray):  # type: ignore[no-untyped-def]
        """Sparse graph of free cells: 4 neighbours (1 cell) and diagonals (√2) where both sides are free."""
        from scipy.sparse import coo_matrix

        nx, ny = free.shape
        rows: list[np.ndarray] = []
        cols: list[np.ndarray] = []
        weights: list[np.ndarray] = []
        for dx, dy in ((1, 0), (0, 1), (1, 1), (1, -1)):
            a = free[max(0, -dx) : nx - max(0, dx), max(0, -dy) : ny - max(0, dy)]
            b = free[max(0, dx) : max(0, dx) + a.shape[0], max(0, dy) : max(0, dy) + a.shape[1]]
            ok = a & b
            if dx and dy:  # no corner cutting: both orthogonal neighbours free
                side_x = free[max(0, dx) : max(0, dx) + a.shape[0], max(0, -dy) : max(0, -dy) + a.shape[1]]
                side_y = free[max(0, -dx) : max(0, -dx) + a.shape[0], max(0, dy) : max(0, dy) + a.shape[1]]
                ok &= side_x & side_y
            ia, ja = np.nonzero(ok)
            ia_from, ja_from = ia + max(0, -dx), ja + max(0, -dy)
            rows.append(self.node_of[ia_from, ja_from])
            cols.append(self.node_of[ia_from + dx, ja_from + dy])
            weights.append(np.full(len(ia), np.hypot(dx, dy)))
        n = len(self.cells)
        return coo_matrix((np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)).tocsr()

    def centre(self, node: int) -> np.ndarray:
        return (self.cells[node] + 0.5) * CELL_SIZE

    def path(self, start: int, target: int) -> np.ndarray:
        """``[n, 2]`` smoothed waypoints (cell centres) from node ``start`` to target ``target``."""
        goal = int(self.target_nodes[target])
        nodes = [start]
        while nodes[-1] != goal:
            nodes.append(int(self.towards[target, nodes[-1]]))
        return self._smooth((self.cells[nodes] + 0.5) * CELL_SIZE)

    def _smooth(self, points: np.ndarray) -> np.ndarray:
        """String pulling: from each kept point, the farthest later one reachable in a straight line with clearance."""
        kept = [0]
        while kept[-1] < len(points) - 1:
            i = kept[-1]
            later = points[i + 1 :]
            blocked = self.layout.crosses_shelf(points[i, 0], points[i, 1], later[:, 0], later[:, 1], margin=CLEARANCE)
            clear = np.flatnonzero(~blocked)
            kept.append(i + 1 + int(clear[-1]) if len(clear) else i + 1)  # the next cell is always clear
        return points[kept]


# -- one visit ----------------------------------------------------------------------------
class _Timeline:
    """Knots (t, x, y) of a visit's true path: walks at a speed, pauses in place."""

    def __init__(self, x: float, y: float) -> None:
        self.t = [0.0]
        self.x = [x]
        self.y = [y]

    @property
    def now(self) -> float:
        return self.t[-1]

    def walk(self, waypoints: np.ndarray, speed: float) -> None:
        for wx, wy in waypoints:
            step = float(np.hypot(wx - self.x[-1], wy - self.y[-1]))
            if step > 0:
                self._add(self.now + step / speed, float(wx), float(wy))

    def pause(self, seconds: float) -> None:
        self._add(self.now + seconds, self.x[-1], self.y[-1])

    def _add(self, t: float, x: float, y: float) -> None:
        self.t.append(t)
        self.x.append(x)
        self.y.append(y)

    def sample(self, hz: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        times = np.arange(0.0, self.now, 1.0 / hz)
        return times, np.interp(times, self.t, self.x), np.interp(times, self.t, self.y)


def _targets(rng: np.random.Generator, graph: StoreGraph, shopper: ShopperType) -> list[tuple[int, int]]:
    """(shelf index, stand target) per target zone of the visit."""
    layout = graph.layout
    zones = list(layout.zones)
    weights = np.array([ZONE_POPULARITY.get(z, 1.0) for z in zones])
    count = min(int(rng.integers(shopper.zones[0], shopper.zones[1] + 1)), len(zones))
    chosen = rng.choice(len(zones), size=count, replace=False, p=weights / weights.sum())
    stops = []
    for z in chosen:
        shelves = [i for i, s in enumerate(layout.shelves) if s.zone == zones[z] and graph.stands[i]]
        shelf = shelves[int(rng.integers(len(shelves)))]
        stops.append((shelf, graph.stands[shelf][int(rng.integers(len(graph.stands[shelf])))]))
    return stops


def simulate_visit(graph: StoreGraph, settings: SimulationSettings, index: int) -> Visit:
    """The visit of number ``index`` to the graph's store on the run date (deterministic)."""
    layout = graph.layout
    rng = np.random.default_rng([settings.seed, store_key(layout.name), settings.run_date.toordinal(), index])
    shopper = SHOPPER_TYPES[int(rng.choice(len(SHOPPER_TYPES), p=[s.share for s in SHOPPER_TYPES]))]
    speed = float(np.clip(rng.normal(shopper.speed, 0.12), MIN_SPEED, MAX_SPEED))
    stops = _targets(rng, graph, shopper)
    line = _Timeline(*layout.entrance)
    node = graph.entrance_node
    pauses: list[Pause] = []
    bought: list[tuple[str, str]] = []

    def go(target: int) -> int:
        leg_speed = float(np.clip(speed * rng.uniform(0.9, 1.1), MIN_SPEED, MAX_SPEED))
        line.walk(graph.path(node, target), leg_speed)
        return int(graph.target_nodes[target])

    while stops:  # the nearest unvisited target next
        k = int(np.argmin([graph.distance[target, node] for _, target in stops]))
        shelf_index, target = stops.pop(k)
        node = go(target)
        start = line.now
        line.pause(float(rng.uniform(*shopper.pause_s)))
        shelf = layout.shelves[shelf_index]
        products: tuple[str, ...] = ()
        if rng.random() < shopper.buy_prob:
            size = min(int(rng.integers(1, 3)), len(shelf.products))
            products = tuple(str(p) for p in rng.choice(shelf.products, size=size, replace=False))
            bought.extend((shelf.zone, p) for p in products)
        pauses.append(Pause(start, line.now, shelf.zone, products))
    scans: list[tuple[float, str, str]] = []
    if bought:
        node = go(graph.tills[int(rng.integers(len(graph.tills)))])
        start = line.now
        line.pause(15.0 + 5.0 * len(bought) + float(rng.uniform(0.0, 20.0)))
        scans = [(start + 5.0 + 3.0 * k, zone, product) for k, (zone, product) in enumerate(bought)]
        pauses.append(Pause(start, line.now, None, ()))
    go(graph.exit)
    line.walk(np.array([layout.exit]), speed)
    t, true_x, true_y = line.sample(settings.sample_hz)
    noise_x, noise_y = rng.normal(0.0, settings.noise_m, size=(2, len(t)))
    start_s = dt.datetime(*settings.run_date.timetuple()[:3], tzinfo=dt.timezone.utc).timestamp()
    start_s += OPENING_S + float(rng.integers(0, OPEN_FOR_S))
    return Visit(
        visit_id=f"{layout.name}-{settings.run_date:%Y%m%d}-{index:06d}",
        shopper=shopper.name,
        start=start_s,
        t=t,
        true_x=true_x,
        true_y=true_y,
        x=true_x + noise_x,
        y=true_y + noise_y,
        pauses=tuple(pauses),
        scans=tuple(scans),
    )


# -- rows -----------------------------------------------------------------------------------
def _dirty(visit: Visit, index: int, layout: StoreLayout, settings: SimulationSettings) -> pd.DataFrame:
    """The visit's position rows, a share ``dirty_fraction`` of them made dirty (its own random stream)."""
    n = len(visit.t)
    visit_ids = np.full(n, visit.visit_id, dtype=object)
    t = visit.start + visit.t
    x = visit.x.copy()
    # a stream of its own, so dirt never changes the clean rows
    rng = np.random.default_rng([settings.seed, store_key(layout.name), settings.run_date.toordinal(), index, 1])
    count = int(rng.binomial(n, settings.dirty_fraction)) if n > 1 else 0
    rows = rng.choice(np.arange(1, n), size=count, replace=False) if count else np.zeros(0, np.int64)
    for row, kind in zip(rows.tolist(), rng.integers(0, 3, size=count).tolist(), strict=True):
        if kind == 0:  # a ghost reading far outside the walls
            x[row] = -3.0 - float(rng.uniform(0.0, 10.0))
        elif kind == 1:  # a clock step back: earlier than the sample before
            t[row] = t[row - 1] - float(rng.uniform(1.0, 30.0))
        else:
            visit_ids[row] = None
    return pd.DataFrame(
        {"store": layout.name, "visit_id": visit_ids, "seq": np.arange(n, dtype=np.int64), "t": t, "x": x, "y": visit.y}
    )


def simulate_rows(
    layouts: Sequence[StoreLayout], settings: SimulationSettings, store_index: np.ndarray, visit_index: np.ndarray
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Position rows and scan rows (:data:`POSITION_COLUMNS`, :data:`SCAN_COLUMNS`; ``t`` as datetime64 UTC)
    of the visits ``visit_index[k]`` to stores ``layouts[store_index[k]]``."""
    graphs: dict[int, StoreGraph] = {}
    positions: list[pd.DataFrame] = []
    scans: list[tuple[str, str, float, str, str]] = []
    for s, v in zip(store_index.tolist(), visit_index.tolist(), strict=True):
        if s not in graphs:
            graphs[s] = StoreGraph(layouts[s])
        visit = simulate_visit(graphs[s], settings, v)
        positions.append(_dirty(visit, v, layouts[s], settings))
        scans.extend((layouts[s].name, visit.visit_id, visit.start + t, z, p) for t, z, p in visit.scans)
    position_rows = (
        pd.concat(positions, ignore_index=True) if positions else pd.DataFrame(columns=list(POSITION_COLUMNS))
    )
    position_rows["t"] = _timestamps(position_rows["t"])
    scan_rows = pd.DataFrame(scans, columns=list(SCAN_COLUMNS))
    scan_rows["t"] = _timestamps(scan_rows["t"])
    return position_rows, scan_rows


def _timestamps(seconds: pd.Series) -> pd.Series:
    """Epoch seconds → naive UTC datetimes at whole microseconds (Spark's resolution: no lossy cast)."""
    micros = np.round(seconds.to_numpy(dtype=float) * 1e6).astype(np.int64)
    return pd.Series(pd.to_datetime(micros, unit="us"), index=seconds.index)

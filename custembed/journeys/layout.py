"""Store layouts: walls, shelves with product zones, entrance, tills and exit, read from ``conf/stores/*.yaml``.

Coordinates are metres in the store's frame: the walls are the rectangle
``[0, width] × [0, height]``, x to the east, y to the north. Shelves are
axis-aligned rectangles; a point is *in* a shelf when it is strictly inside it
(a point on a shelf's edge is beside it). Every geometric method is vectorised
over numpy arrays and also takes scalars.

A layout file::

    name: store_a                 # optional, default: the file's stem
    width: 30.0                   # metres, at most MAX_SIDE (the location code's square)
    height: 20.0
    entrance: [2.0, 1.0]          # where visits start
    exit: [22.0, 1.0]             # where visits end
    tills: [[9.0, 3.0], ...]      # where a shopper stands to pay
    shelves:
      - {name: a01, zone: dairy, rect: [3.0, 18.5, 13.0, 19.5], products: [milk, yogurt]}

:func:`load_layout` checks it: shelves inside the walls and not overlapping,
entrance, exit and tills on the floor (not in a shelf), every shelf reachable
from the entrance on the 50 cm grid; a problem is a ``ConfigError`` naming the
file.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from custembed import lakefs
from custembed.config import conf_dir, read_yaml
from custembed.errors import ConfigError

CELL_SIZE = 0.5  # metres: the side of a grid cell, the resolution of the location code's last level
MAX_SIDE = 64.0  # metres: the side of the square the six-character code covers (custembed.journeys.codes)
ZONE_NAME = re.compile(r"[a-z][a-z0-9_]*")  # a zone is one token of the journey text ($<zone>)
STORES_DIR = "stores"  # under conf/: conf/stores/<name>.yaml

Point = tuple[float, float]


@dataclass(frozen=True)
class Shelf:
    """One shelf (or gondola, freezer, counter): an axis-aligned rectangle holding products of one zone."""

    name: str
    zone: str
    x0: float
    y0: float
    x1: float
    y1: float
    products: tuple[str, ...]


def _arrays(*values: Any) -> tuple[np.ndarray, ...]:
    """Float arrays broadcast to one shape (scalars become 0-d arrays)."""
    return tuple(np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in values)))


@dataclass(frozen=True)
class StoreLayout:
    """A store: its walls (``[0, width] × [0, height]``), shelves, entrance, tills and exit."""

    name: str
    width: float
    height: float
    shelves: tuple[Shelf, ...]
    entrance: Point
    tills: tuple[Point, ...]
    exit: Point
    source: str = field(default="", compare=False, metadata={"help": "the file it was read from"})

    # -- shelf arrays [S] -------------------------------------------------------------
    @cached_property
    def _rects(self) -> np.ndarray:
        """``[S, 4]`` x0, y0, x1, y1 of every shelf."""
        return np.array([[s.x0, s.y0, s.x1, s.y1] for s in self.shelves], dtype=float).reshape(-1, 4)

    @cached_property
    def _shelf_zones(self) -> np.ndarray:
        return np.array([s.zone for s in self.shelves], dtype=object)

    # -- geometry -----------------------------------------------------------------------
    def inside(self, x: Any, y: Any) -> np.ndarray:
        """Whether each point is within the walls (edges included)."""
        x, y = _arrays(x, y)
        return (x >= 0) & (x <= self.width) & (y >= 0) & (y <= self.height)

    def in_shelf(self, x: Any, y: Any) -> np.ndarray:
        """Whether each point is strictly inside a shelf."""
        x, y = _arrays(x, y)
        r = self._rects
        px, py = x[..., None], y[..., None]  # [..., 1] against [S]
        hit = (px > r[:, 0]) & (px < r[:, 2]) & (py > r[:, 1]) & (py < r[:, 3])
        return np.asarray(hit.any(axis=-1))

    def crosses_shelf(self, x0: Any, y0: Any, x1: Any, y1: Any, *, margin: float = 0.0) -> np.ndarray:
        """Whether the straight segment from (x0, y0) to (x1, y1) passes through a shelf's interior.

        ``margin`` grows every shelf by that many metres first (a walker's clearance). Liang–Barsky
        clipping of each segment against each open rectangle: the segment crosses when some
        ``s`` in [0, 1] satisfies all four strict inequalities ``p_k s < q_k``.
        """
        x0, y0, x1, y1 = _arrays(x0, y0, x1, y1)
        r = self._rects
        ax, ay = x0[..., None], y0[..., None]  # [..., 1]
        dx, dy = (x1 - x0)[..., None], (y1 - y0)[..., None]
        ps = (-dx, dx, -dy, dy)
        qs = (ax - (r[:, 0] - margin), (r[:, 2] + margin) - ax, ay - (r[:, 1] - margin), (r[:, 3] + margin) - ay)
        lo = np.zeros(np.broadcast_shapes(ax.shape, r[:, 0].shape))
        hi = np.ones_like(lo)
        possible = np.ones_like(lo, dtype=bool)
        with np.errstate(divide="ignore", invalid="ignore"):
            for p, q in zip(ps, qs, strict=True):
                p, q = np.broadcast_arrays(p, q)
                # parallel to this edge: inside its half-plane or never
                possible &= (p != 0) | (q > 0)
                ratio = np.where(p != 0, q / np.where(p == 0, 1.0, p), 0.0)
                lo = np.where(p < 0, np.maximum(lo, ratio), lo)  # entering
                hi = np.where(p > 0, np.minimum(hi, ratio), hi)  # leaving
        return np.asarray((possible & (lo < hi)).any(axis=-1))

    def shelf_distance(self, x: Any, y: Any) -> np.ndarray:
        """``[..., S]`` distance in metres from each point to each shelf (0 inside)."""
        x, y = _arrays(x, y)
        r = self._rects
        px, py = x[..., None], y[..., None]
        dx = np.maximum(np.maximum(r[:, 0] - px, 0.0), px - r[:, 2])
        dy = np.maximum(np.maximum(r[:, 1] - py, 0.0), py - r[:, 3])
        return np.asarray(np.hypot(dx, dy))

    def zone_near(self, x: Any, y: Any, reach: float) -> np.ndarray:
        """Zone of the nearest shelf within ``reach`` metres of each point, else None (object array)."""
        distance = self.shelf_distance(x, y)
        nearest = distance.argmin(axis=-1)
        close = np.take_along_axis(distance, nearest[..., None], axis=-1)[..., 0] <= reach
        result = np.full(close.shape, None, dtype=object)
        result[close] = self._shelf_zones[nearest[close]]
        return result

    @property
    def zones(self) -> tuple[str, ...]:
        """Zone names, sorted, each once."""
        return tuple(sorted({s.zone for s in self.shelves}))

    @property
    def grid_shape(self) -> tuple[int, int]:
        """``(nx, ny)``: cells of CELL_SIZE covering the walls."""
        return math.ceil(self.width / CELL_SIZE - 1e-9), math.ceil(self.height / CELL_SIZE - 1e-9)

    def cell_of(self, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        """Cell indices ``(ix, iy)`` of each point, clipped to the grid (a point on or beyond a wall
        belongs to the cell along that wall)."""
        x, y = _arrays(x, y)
        nx, ny = self.grid_shape
        ix = np.clip(np.floor(x / CELL_SIZE), 0, nx - 1).astype(np.int64)
        iy = np.clip(np.floor(y / CELL_SIZE), 0, ny - 1).astype(np.int64)
        return ix, iy

    def free_cells(self) -> np.ndarray:
        """``[nx, ny]`` bool: cells a shopper can stand in: centre within the walls, no shelf overlapping them."""
        nx, ny = self.grid_shape
        lo_x = np.arange(nx) * CELL_SIZE
        lo_y = np.arange(ny) * CELL_SIZE
        free = ((lo_x + CELL_SIZE / 2)[:, None] < self.width) & ((lo_y + CELL_SIZE / 2)[None, :] < self.height)
        for s in self.shelves:
            overlap_x = (lo_x < s.x1) & (lo_x + CELL_SIZE > s.x0)
            overlap_y = (lo_y < s.y1) & (lo_y + CELL_SIZE > s.y0)
            free &= ~(overlap_x[:, None] & overlap_y[None, :])
        return free

    # -- validation ---------------------------------------------------------------------
    def problems(self) -> list[str]:
        """What is wrong with the layout, one line each (empty: nothing)."""
        found = _size_problems(self) + _shelf_problems(self) + _point_problems(self)
        return found or _reach_problems(self)


def _size_problems(layout: StoreLayout) -> list[str]:
    if not (0 < layout.width <= MAX_SIDE and 0 < layout.height <= MAX_SIDE):
        return [f"walls {layout.width} × {layout.height} m: each side must be in (0, {MAX_SIDE:g}] m"]
    if not layout.shelves:
        return ["no shelves"]
    if not layout.tills:
        return ["no tills"]
    return []


def _shelf_problems(layout: StoreLayout) -> list[str]:
    found: list[str] = []
    names = [s.name for s in layout.shelves]
    for name in sorted({n for n in names if names.count(n) > 1}):
        found.append(f"shelf name {name!r} appears twice")
    for s in layout.shelves:
        if not (s.x0 < s.x1 and s.y0 < s.y1):
            found.append(f"shelf {s.name}: rect needs x0 < x1 and y0 < y1, got {[s.x0, s.y0, s.x1, s.y1]}")
        elif not (0 <= s.x0 and s.x1 <= layout.width and 0 <= s.y0 and s.y1 <= layout.height):
            found.append(f"shelf {s.name} {[s.x0, s.y0, s.x1, s.y1]} is outside the walls")
        if not ZONE_NAME.fullmatch(s.zone):
            found.append(f"shelf {s.name}: zone {s.zone!r} must be lower-case letters, digits and _")
        if not s.products:
            found.append(f"shelf {s.name}: no products")
    for i, a in enumerate(layout.shelves):
        for b in layout.shelves[i + 1 :]:
            if a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1:
                found.append(f"shelves {a.name} and {b.name} overlap")
    return found


def _point_problems(layout: StoreLayout) -> list[str]:
    found: list[str] = []
    free = layout.free_cells()
    points = [("entrance", layout.entrance), ("exit", layout.exit)]
    points += [(f"till {i + 1}", till) for i, till in enumerate(layout.tills)]
    for what, (x, y) in points:
        if not layout.inside(x, y):
            found.append(f"{what} {[x, y]} is outside the walls")
        elif layout.in_shelf(x, y):
            found.append(f"{what} {[x, y]} is inside a shelf")
        elif not free[layout.cell_of(x, y)]:
            found.append(f"{what} {[x, y]} is in a 50 cm cell a shelf overlaps: move it off the shelf")
    return found


def _reach_problems(layout: StoreLayout) -> list[str]:
    """Every shelf, till and the exit reachable on the free grid from the entrance's cell."""
    from scipy import ndimage

    free = layout.free_cells()
    components, _ = ndimage.label(free, structure=np.ones((3, 3)))
    home = components[layout.cell_of(*layout.entrance)]
    found: list[str] = []
    for what, (x, y) in [("exit", layout.exit), *((f"till {i + 1}", t) for i, t in enumerate(layout.tills))]:
        if components[layout.cell_of(x, y)] != home:
            found.append(f"{what} {[x, y]} cannot be reached from the entrance")
    for shelf, cells in zip(layout.shelves, stand_cells(layout), strict=True):
        if not any(components[ix, iy] == home for ix, iy in cells):
            found.append(f"shelf {shelf.name} cannot be reached from the entrance")
    return found


def stand_cells(layout: StoreLayout, reach: float = 0.8) -> list[list[tuple[int, int]]]:
    """Per shelf, the free cells whose centre is within ``reach`` metres of it (where a shopper stands)."""
    free = layout.free_cells()
    ix, iy = np.nonzero(free)
    distance = layout.shelf_distance((ix + 0.5) * CELL_SIZE, (iy + 0.5) * CELL_SIZE)  # [cells, S]
    return [
        [(int(ix[k]), int(iy[k])) for k in np.flatnonzero(distance[:, s] <= reach)] for s in range(len(layout.shelves))
    ]


# -- reading ---------------------------------------------------------------------------
_KEYS = {"name", "width", "height", "entrance", "exit", "tills", "shelves"}
_SHELF_KEYS = {"name", "zone", "rect", "products"}


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} must be a number, got {value!r}")
    return float(value)


def _point(value: Any, what: str) -> Point:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError(f"{what} must be [x, y], got {value!r}")
    return _number(value[0], what), _number(value[1], what)


def _shelf(value: Any, index: int) -> Shelf:
    if not isinstance(value, dict):
        raise ValueError(f"shelves[{index}] must be a mapping, got {value!r}")
    unknown = sorted(set(value) - _SHELF_KEYS)
    missing = sorted(_SHELF_KEYS - set(value))
    if unknown or missing:
        raise ValueError(f"shelves[{index}]: unknown keys {unknown}, missing keys {missing}")
    rect = value["rect"]
    if not isinstance(rect, (list, tuple)) or len(rect) != 4:
        raise ValueError(f"shelves[{index}].rect must be [x0, y0, x1, y1], got {rect!r}")
    x0, y0, x1, y1 = (_number(v, f"shelves[{index}].rect") for v in rect)
    products = value["products"]
    if not isinstance(products, (list, tuple)) or not all(isinstance(p, str) for p in products):
        raise ValueError(f"shelves[{index}].products must be a list of names, got {products!r}")
    return Shelf(str(value["name"]), str(value["zone"]), x0, y0, x1, y1, tuple(products))


def parse_layout(data: Any, name: str, source: str = "") -> StoreLayout:
    """A layout from the plain data of a layout file; ``ValueError`` naming what is malformed or wrong."""
    if not isinstance(data, dict):
        raise ValueError("top level must be a mapping")
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} (known: {', '.join(sorted(_KEYS))})")
    missing = sorted(_KEYS - {"name"} - set(data))
    if missing:
        raise ValueError(f"missing key(s) {missing}")
    shelves = data["shelves"]
    tills = data["tills"]
    if not isinstance(shelves, list) or not isinstance(tills, list):
        raise ValueError("shelves and tills must be lists")
    layout = StoreLayout(
        name=str(data.get("name") or name),
        width=_number(data["width"], "width"),
        height=_number(data["height"], "height"),
        shelves=tuple(_shelf(s, i) for i, s in enumerate(shelves)),
        entrance=_point(data["entrance"], "entrance"),
        tills=tuple(_point(t, f"tills[{i}]") for i, t in enumerate(tills)),
        exit=_point(data["exit"], "exit"),
        source=source,
    )
    problems = layout.problems()
    if problems:
        raise ValueError("; ".join(problems))
    return layout


def layout_uri(name_or_path: str) -> str:
    """Where a layout is read from: a bare name (``store_a``) is ``conf/stores/<name>.yaml``; a path or URI as given."""
    if "/" in name_or_path or name_or_path.endswith((".yaml", ".yml")):
        return lakefs.qualify(name_or_path)
    return lakefs.qualify(conf_dir() / STORES_DIR / f"{name_or_path}.yaml")


def load_layout(name_or_path: str) -> StoreLayout:
    """Read and check a layout: ``store_a`` (``conf/stores/store_a.yaml``), a path or a URI.

    Raises:
        ConfigError: one line naming the file and the problem (missing file, bad YAML, a shelf
            outside the walls, overlapping shelves, an entrance inside a shelf, ...).
    """
    uri = layout_uri(name_or_path)
    if not lakefs.exists(uri):
        raise ConfigError(f"store layout not found: {name_or_path} ({uri})")
    stem = Path(lakefs.name(uri)).stem
    try:
        data = read_yaml(lakefs.read_text(uri))
        return parse_layout(data, stem, uri)
    except yaml.YAMLError as e:
        raise ConfigError(f"{uri}: not valid YAML ({str(e).splitlines()[0]})") from e
    except ValueError as e:
        raise ConfigError(f"{uri}: {e}") from e

"""Pauses in a visit (DBSCAN over position and scaled time), their zones, and purchase markers.

The per-visit core of ``custembed journeys-prepare`` (run there in a grouped
pandas UDF, one call per visit).

* **Pauses.** DBSCAN (scikit-learn) over ``(x, y, t / time_scale_s)``: with
  ``time_scale_s`` = 4, four seconds weigh as much as a metre, so points close in
  space *and* time cluster while a walk (one metre or more per second) does not,
  and coming back to the same spot later is another pause. A cluster lasting at
  least ``min_duration_s`` (from its first to its last position) is a pause; it
  stands at the median of its positions and ends at its last position.
* **Zones.** A pause whose position is within ``pause_reach_m`` of a shelf is a
  pause at the nearest shelf's zone (:meth:`StoreLayout.zone_near`); others (at a
  till, in an aisle) have none.
* **Purchases.** The visit's till scans say which zones it bought in, and how many
  products in each. A pause at a zone with scans is a purchase: per zone, as many
  pauses as products scanned from it, the longest first, each pause one marker.
  Scans of zones where no pause was found stay unmatched (counted).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from custembed.journeys.layout import StoreLayout


@dataclass(frozen=True)
class DetectedPause:
    """A pause: positions ``first``..``last`` (indices in time order), where it stood, how long."""

    first: int
    last: int
    start_s: float
    end_s: float
    x: float
    y: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


def find_pauses(
    t: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    *,
    eps_m: float,
    time_scale_s: float,
    min_samples: int,
    min_duration_s: float,
) -> list[DetectedPause]:
    """Pauses of one visit whose positions ``(t, x, y)`` (seconds, metres) are in time order, by start."""
    from sklearn.cluster import DBSCAN

    if len(t) < min_samples:
        return []
    features = np.column_stack([x, y, (t - t[0]) / time_scale_s])  # [N, 3]
    labels = DBSCAN(eps=eps_m, min_samples=min_samples).fit_predict(features)
    clusters = sorted((np.flatnonzero(labels == label) for label in np.unique(labels[labels >= 0])), key=min)
    pauses = []
    for members in _merge_touching(clusters, x, y, eps_m):
        first, last = int(members.min()), int(members.max())
        if t[last] - t[first] >= min_duration_s:
            pauses.append(
                DetectedPause(
                    first,
                    last,
                    float(t[first]),
                    float(t[last]),
                    float(np.median(x[members])),
                    float(np.median(y[members])),
                )
            )
    return pauses


def _merge_touching(clusters: list[np.ndarray], x: np.ndarray, y: np.ndarray, eps_m: float) -> list[np.ndarray]:
    """Clusters (in order of their first position) that follow each other within two positions and stand
    within ``eps_m`` of each other are one pause: a long stop DBSCAN cut in two where noise thinned it."""
    merged: list[np.ndarray] = []
    for members in clusters:
        if merged:
            before = merged[-1]
            near = np.hypot(np.median(x[before]) - np.median(x[members]), np.median(y[before]) - np.median(y[members]))
            if members.min() <= before.max() + 2 and near <= eps_m:
                merged[-1] = np.union1d(before, members)
                continue
        merged.append(members)
    return merged


def purchase_markers(
    pauses: Sequence[DetectedPause], zones: Sequence[str | None], scan_zones: Sequence[str]
) -> dict[int, list[str]]:
    """Purchase markers ``{position index: [zone, ...]}`` from pauses, their zones and the zones scanned.

    Per zone, as many pauses as scans of that zone are purchases, the longest pauses first;
    each marks the pause's last position.
    """
    wanted = Counter(scan_zones)
    markers: dict[int, list[str]] = {}
    for zone, count in sorted(wanted.items()):
        candidates = [p for p, z in zip(pauses, zones, strict=True) if z == zone]
        for pause in sorted(candidates, key=lambda p: (-p.duration_s, p.first))[:count]:
            markers.setdefault(pause.last, []).append(zone)
    return {index: markers[index] for index in sorted(markers)}


def pause_zones(pauses: Sequence[DetectedPause], layout: StoreLayout, reach: float) -> list[str | None]:
    """Zone of each pause (nearest shelf within ``reach`` metres), or None."""
    if not pauses:
        return []
    zones = layout.zone_near(np.array([p.x for p in pauses]), np.array([p.y for p in pauses]), reach)
    return [None if z is None else str(z) for z in zones]

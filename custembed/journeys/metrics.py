"""Jensen-Shannon divergence between two histograms given as category → count (base 2).

``JS(P, Q) = ½ KL(P ‖ M) + ½ KL(Q ‖ M)`` with ``M = ½ (P + Q)``, in bits: it lies in
[0, 1], 0 for equal distributions, 1 for disjoint ones. It is the *divergence*, the square
of SciPy's ``jensenshannon`` distance (``jensenshannon(p, q, base=2) ** 2``). The paper
reports JS ≈ 0.0097 without saying the base; at base e the same distributions give
``ln 2`` times our figure.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def aligned(p: Mapping[str, float], q: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Both histograms over the union of their categories (0 where absent), normalised."""
    keys = sorted(set(p) | set(q))
    a = np.array([float(p.get(k, 0.0)) for k in keys])
    b = np.array([float(q.get(k, 0.0)) for k in keys])
    if a.sum() <= 0 or b.sum() <= 0:
        raise ValueError("both histograms need a positive total")
    return a / a.sum(), b / b.sum()


def js_divergence(p: Mapping[str, float], q: Mapping[str, float]) -> float:
    """Jensen-Shannon divergence in bits between two count histograms; NaN when one is empty."""
    if sum(p.values()) <= 0 or sum(q.values()) <= 0:
        return float("nan")
    a, b = aligned(p, q)
    m = 0.5 * (a + b)

    def kl(x: np.ndarray) -> float:
        nz = x > 0  # 0 log 0 = 0; m > 0 wherever x > 0
        return float(np.sum(x[nz] * np.log2(x[nz] / m[nz])))

    return max(0.0, 0.5 * kl(a) + 0.5 * kl(b))

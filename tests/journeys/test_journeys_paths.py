"""Generated codes decode to positions of the layout; bad codes count as outside (needs the data side's modules)."""

from __future__ import annotations

import numpy as np
import pytest

layout_module = pytest.importorskip("custembed.journeys.layout")
codes_module = pytest.importorskip("custembed.journeys.codes")


def test_path_stats_on_codes_of_free_cells() -> None:
    from custembed.udfs.journeys import path_stats

    layout = layout_module.load_layout("store_a")
    rows, cols = layout.grid_shape
    size = layout_module.CELL_SIZE
    ys, xs = np.meshgrid((np.arange(rows) + 0.5) * size, (np.arange(cols) + 0.5) * size, indexing="ij")
    xs, ys = xs.ravel(), ys.ravel()
    free = np.asarray(layout.inside(xs, ys), dtype=bool) & ~np.asarray(layout.in_shelf(xs, ys), dtype=bool)
    codes = list(codes_module.encode(xs[free][:5], ys[free][:5], layout))
    x, y = codes_module.decode(np.asarray(codes), layout)
    assert np.allclose(x, xs[free][:5]) and np.allclose(y, ys[free][:5])  # decodes to the cell centres

    positions, outside, steps, crossings = path_stats(codes, layout)
    assert (positions, outside, steps) == (5, 0, 4) and 0 <= crossings <= 4
    positions, outside, steps, _ = path_stats([*codes[:2], "??????", *codes[2:]], layout)
    assert (positions, outside, steps) == (6, 1, 3)  # the bad code breaks two steps

"""The journeys report section renders the JS table, the rates, the transfer curve and the heat maps."""

from __future__ import annotations

import numpy as np
import pandas as pd

from custembed.report.journeys import journeys_section


def _metrics() -> pd.DataFrame:
    rows = []
    for model, js in (("journeys-gpt2", 0.01), ("journeys-markov", 0.05)):
        for metric in ("js_cells", "js_purchase_zones", "js_length"):
            rows.append(("store_a", model, 1.0, metric, js))
        rows.append(("store_a", model, 1.0, "shelf_crossing_rate", js / 10))
    rows.append(("store_a", "real", 1.0, "shelf_crossing_rate", 0.0))
    for fraction, fine, scratch in ((1.0, 0.01, 0.012), (0.1, 0.012, 0.03), (0.01, 0.015, 0.2)):
        for model, value in (("journeys-gpt2-finetuned", fine), ("journeys-gpt2-scratch", scratch)):
            for metric in ("js_cells", "js_purchase_zones"):
                rows.append(("store_b", model, fraction, metric, value))
    for metric in ("js_cells", "js_purchase_zones"):
        rows.append(("store_b", "journeys-gpt2-source", 0.0, metric, 0.3))
    frame = pd.DataFrame(rows, columns=["store", "model", "train_fraction", "metric", "value"])
    frame["protocol"] = "test protocol, base 2"
    frame["ci_low"], frame["ci_high"] = frame["value"] * 0.5, frame["value"] * 2
    return frame


def test_section_shows_table_rates_curve_and_heat_maps() -> None:
    shelf = np.ones((4, 6))
    shelf[1, 2:4] = np.nan  # a shelf
    heat = {("store_a", "real"): shelf, ("store_a", "journeys-gpt2"): np.eye(4, 6)}
    html = journeys_section(_metrics(), heat)
    assert html.count("<table>") == 2
    assert "0.01000" in html and "0.05000" in html  # JS values, 5 digits
    assert "<strong>0.01000 [0.00500, 0.02000]</strong>" in html  # the lowest JS of the store in bold, interval
    before_transfer = html.split("Transfer")[0]
    assert "journeys-gpt2-finetuned" not in before_transfer  # transfer rows stay out of the JS table
    assert "journeys-gpt2-source" not in before_transfer
    assert html.count("data:image/png;base64") == 2  # transfer curve + one heat-map figure (one store)
    assert "test protocol, base 2" in html


def test_section_without_metrics_says_so() -> None:
    assert "not available" in journeys_section(None)


def test_grid_counts_rows_are_y_and_shelves_are_nan() -> None:
    from custembed.jobs.journeys_report import grid_counts
    from custembed.journeys.codes import encode
    from custembed.journeys.layout import CELL_SIZE, load_layout

    layout = load_layout("store_a")
    nx, ny = layout.grid_shape
    x, y = 25.2, 1.3  # far east, near the south wall: a cell of column 50, row 2
    code = str(encode(np.asarray([x]), np.asarray([y]), layout)[0])
    grid = grid_counts({code: 7}, layout)
    assert grid.shape == (ny, nx)
    assert grid[int(y // CELL_SIZE), int(x // CELL_SIZE)] == 7
    shelf = layout.shelves[0]
    assert np.isnan(grid[int((shelf.y0 + shelf.y1) / 2 // CELL_SIZE), int((shelf.x0 + shelf.x1) / 2 // CELL_SIZE)])

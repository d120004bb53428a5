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
    frame = pd.DataFrame(rows, columns=["store", "model", "train_fraction", "metric", "value"])
    frame["protocol"] = "test protocol, base 2"
    frame["ci_low"], frame["ci_high"] = frame["value"] * 0.5, frame["value"] * 2
    return frame


def test_section_shows_table_rates_curve_and_heat_maps() -> None:
    heat = {("store_a", "real"): np.ones((4, 6)), ("store_a", "journeys-gpt2"): np.eye(4, 6)}
    html = journeys_section(_metrics(), heat)
    assert html.count("<table>") == 2
    assert "0.01000" in html and "0.05000" in html  # JS values, 5 digits
    assert "<strong>0.01000 [0.00500, 0.02000]</strong>" in html  # the lowest JS of the store in bold, interval
    assert "journeys-gpt2-finetuned" not in html.split("Transfer")[0]  # transfer rows stay out of the JS table
    assert html.count("data:image/png;base64") == 2  # transfer curve + one heat-map figure (one store)
    assert "test protocol, base 2" in html


def test_section_without_metrics_says_so() -> None:
    assert "not available" in journeys_section(None)

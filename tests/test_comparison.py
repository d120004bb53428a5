"""The model comparison's pandas views without Spark: the representation probes."""

from __future__ import annotations

import pandas as pd
import pytest

from custembed.comparison import probe_lines, probe_table


def _metrics(rows: list[tuple[str, str, str, float | None, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["source", "product", "classifier", "auc", "top10_lift"])


def test_probe_table_averages_each_classifier_over_the_same_products() -> None:
    metrics = _metrics(
        [
            ("counts", "p", "random_forest", 0.8, 3.0),
            ("counts", "q", "random_forest", 0.6, 2.0),
            ("counts", "p", "knn", 0.7, 2.0),
            ("counts", "q", "knn", None, 1.0),  # no AUC: q left out of every counts mean
            ("coles", "p", "random_forest", 0.7, 2.5),
            ("coles", "q", "random_forest", 0.7, 2.5),
            ("coles", "p", "knn", 0.75, 2.0),
            ("coles", "q", "knn", 0.65, 3.0),
            ("coles", "q", "mlp", 0.9, 4.0),  # the one-product classifier comparison: not a probe
        ]
    )
    table = probe_table(metrics)
    assert list(table["auc"].columns) == ["random_forest", "knn"]
    assert list(probe_table(metrics, first="knn")["auc"].columns) == ["knn", "random_forest"]
    assert table.loc["counts", ("auc", "random_forest")] == pytest.approx(0.8)
    assert table.loc["counts", ("auc", "knn")] == pytest.approx(0.7)
    assert table.loc["coles", ("auc", "knn")] == pytest.approx(0.7)
    assert table.loc["coles", ("top10_lift", "knn")] == pytest.approx(2.5)
    lines = probe_lines(table)
    assert "representation probes" in lines[0] and "random_forest" in lines[1] and "knn" in lines[1]
    assert any(line.startswith("counts") and "0.800 /  3.00" in line for line in lines)


def test_no_probes_without_a_second_classifier_on_every_pair() -> None:
    metrics = _metrics(
        [("s", "p", "random_forest", 0.7, 2.0), ("s", "p", "mlp", 0.6, 1.0), ("t", "p", "random_forest", 0.5, 1.0)]
    )
    assert probe_table(metrics).empty and probe_lines(probe_table(metrics)) == []

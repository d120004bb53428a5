"""The in-store journeys section (system B): JS table, path rates, transfer curve, heat maps real vs generated.

Inputs are driver-side and small: ``journey_metrics`` rows and, per (store, model), a
``[rows, cols]`` array of visits per 50 cm cell (``model = "real"`` for the held-out
journeys).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from custembed.report.markup import cell, figure_html, fmt, html_table, not_available, paragraph

JS_METRICS = ("js_cells", "js_purchase_zones", "js_length")
RATE_METRICS = ("shelf_crossing_rate", "out_of_store_rate")
REAL = "real"
HEADING = "In-store journeys (system B)"
TRANSFER_SUFFIXES = ("-finetuned", "-scratch", "-source")  # journeys-transfer's models


def _table(rows: pd.DataFrame, metrics: tuple[str, ...], digits: int) -> str:
    """One row per (store, model), one column per metric; the lowest value per store and column in bold."""
    if rows.empty:
        return not_available("no rows")
    wide = rows[rows["metric"].isin(metrics)].pivot_table(
        index=["store", "model"], columns="metric", values="value", aggfunc="first"
    )
    shown = [m for m in metrics if m in wide.columns]
    head = [[cell("store", header=True), cell("model", header=True), *(cell(m, header=True) for m in shown)]]
    body = []
    for store, model in wide.index:
        best = wide.loc[store].min()
        values = [wide.loc[(store, model), m] for m in shown]
        cells = [
            cell(
                fmt(v, digits) + _interval(rows, store, model, m, digits),
                numeric=True,
                bold=bool(np.isfinite(v) and v == best[m]),
            )
            for m, v in zip(shown, values, strict=True)
        ]
        body.append(([cell(str(store)), cell(str(model)), *cells], ""))
    return html_table(head, body)


def _interval(rows: pd.DataFrame, store: str, model: str, metric: str, digits: int) -> str:
    """`` [low, high]`` of the bootstrap when the row has one, else ``""``."""
    if "ci_low" not in rows.columns:
        return ""
    found = rows[(rows["store"] == store) & (rows["model"] == model) & (rows["metric"] == metric)]
    if found.empty or pd.isna(found["ci_low"].iloc[0]) or pd.isna(found["ci_high"].iloc[0]):
        return ""
    return f" [{fmt(found['ci_low'].iloc[0], digits)}, {fmt(found['ci_high'].iloc[0], digits)}]"


def transfer_figure(metrics: pd.DataFrame) -> str:
    """JS (cells, purchase zones) against the share of target training visits, fine-tuned vs scratch;
    the source model without fine-tuning (share 0) as a dashed line."""
    chosen = metrics[metrics["model"].str.endswith(TRANSFER_SUFFIXES) & metrics["metric"].isin(JS_METRICS[:2])]
    if chosen.empty:
        return not_available("no transfer run for this date (custembed journeys-transfer)")
    figure = Figure(figsize=(9, 3.5))
    for axes, metric in zip(figure.subplots(1, 2), JS_METRICS[:2], strict=True):
        for model, rows in chosen[chosen["metric"] == metric].groupby("model"):
            rows = rows.sort_values("train_fraction")
            if (rows["train_fraction"] == 0).all():
                axes.axhline(rows["value"].iloc[0], linestyle="--", color="grey", label=f"{model} (no fine-tuning)")
                continue
            axes.plot(rows["train_fraction"], rows["value"], marker="o", label=str(model))
        axes.set_xscale("log")
        axes.set_xlabel("share of target-store training visits")
        axes.set_ylabel(f"{metric} (bits)")
        axes.legend(fontsize=8)
    return figure_html(
        figure,
        alt="transfer curve",
        caption="Fine-tuned source-store model vs training from scratch on the same shares of the target store "
        "(JS divergence to the held-out real journeys; lower is better).",
    )


def heat_map_figures(heatmaps: Mapping[tuple[str, str], np.ndarray]) -> list[str]:
    """One figure per store: the real held-out visits' cell counts, then each model's; a log colour
    scale (a store's traffic spans orders of magnitude), shelves (NaN cells) in grey, north up."""
    from matplotlib import colormaps
    from matplotlib.colors import LogNorm

    # shelves grey (NaN), cells no position fell in black (below the scale)
    palette = colormaps["magma"].with_extremes(bad="#9a9a9a", under="black")
    figures = []
    for store in sorted({store for store, _ in heatmaps}):
        models = sorted((m for s, m in heatmaps if s == store), key=lambda m: (m != REAL, m))
        cols = min(4, len(models))
        rows = math.ceil(len(models) / cols)
        figure = Figure(figsize=(3.4 * cols, 2.8 * rows), layout="constrained")
        grid = np.atleast_1d(figure.subplots(rows, cols)).ravel()
        shares = {}
        for model in models:
            counts = heatmaps[(store, model)].astype(float)
            total = np.nansum(counts)
            shares[model] = counts / total if total > 0 else counts
        positive = [s[s > 0] for s in shares.values() if (s > 0).any()]
        low = min(float(p.min()) for p in positive) if positive else 1e-6
        high = max(float(p.max()) for p in positive) if positive else 1.0
        norm = LogNorm(vmin=low, vmax=max(high, low * 10))
        image = None
        for axes, model in zip(grid, models, strict=False):
            share = np.where(shares[model] == 0, low / 10, shares[model])  # empty cells: below the scale
            image = axes.imshow(share, origin="lower", cmap=palette, norm=norm, interpolation="nearest")
            axes.set_title(f"{model}", fontsize=9)
            axes.set_xticks([])
            axes.set_yticks([])
        for axes in grid[len(models) :]:
            axes.set_visible(False)
        if image is not None:
            figure.colorbar(image, ax=list(grid[: len(models)]), shrink=0.8, label="share of positions (log)")
        figures.append(
            figure_html(
                figure,
                alt=f"heat maps {store}",
                caption=f"{store}: share of positions per 50 cm cell (log scale), held-out real visits vs generated "
                "journeys; north up, shelves grey, cells no position reached black.",
            )
        )
    return figures


def journeys_body(metrics: pd.DataFrame | None, heatmaps: Mapping[tuple[str, str], np.ndarray] | None = None) -> str:
    """The section's content (the report wraps it in its ``<section>``)."""
    if metrics is None or metrics.empty:
        return not_available("no journey_metrics for this date (custembed journeys-evaluate)")
    parts = []
    plain = metrics[metrics["train_fraction"] == 1.0]
    plain = plain[~plain["model"].str.endswith(TRANSFER_SUFFIXES)]
    if "protocol" in metrics.columns:
        parts.append(paragraph(f"Protocol: {metrics['protocol'].iloc[0]}"))
    parts.append(
        "<h3>Jensen-Shannon divergence to held-out real journeys (bits, lower is better; where a bootstrap "
        "ran: bias-corrected, [basic 95 % interval])</h3>"
    )
    parts.append(_table(plain[plain["model"] != REAL], JS_METRICS, 5))
    parts.append("<h3>Generated steps crossing a shelf, positions outside the store</h3>")
    parts.append(_table(plain, RATE_METRICS, 4))
    parts.append("<h3>Transfer to another store</h3>")
    parts.append(transfer_figure(metrics))
    parts.append("<h3>Heat maps</h3>")
    parts.extend(heat_map_figures(heatmaps) if heatmaps else [not_available("no heat maps (layout not available)")])
    return "\n".join(parts)


def journeys_section(metrics: pd.DataFrame | None, heatmaps: Mapping[tuple[str, str], np.ndarray] | None = None) -> str:
    """The section as a standalone page shows it (``<section id="journeys">`` with its heading)."""
    body = journeys_body(metrics, heatmaps)
    return f'<section id="journeys" data-section="journeys">\n<h2>{HEADING}</h2>\n{body}\n</section>'

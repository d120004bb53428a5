"""The report's matplotlib figures (Agg, no pyplot state), each returned as an inline ``<figure>``."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from custembed.projections import PCA_BEFORE_NONLINEAR, Projection
from custembed.report.markup import figure_html, not_available

MAX_PANELS_PER_FIGURE = 12


ANNOTATE_MAX_LABELS = 10  # write values into heat-map cells up to this size


BUYER_COLOR = "#d62728"


NON_BUYER_COLOR = "#8c96a0"


def grouped_bars(
    axes: Axes, groups: Sequence[str], series: Mapping[str, Sequence[float]], colors: Mapping[str, str]
) -> None:
    """One bar group per entry of ``groups``, one bar per series; a dashed line at lift 1."""
    positions = np.arange(len(groups))
    width = 0.8 / max(len(series), 1)
    for index, (name, values) in enumerate(series.items()):
        offsets = positions + (index - (len(series) - 1) / 2) * width
        axes.bar(offsets, np.asarray(values, dtype=float), width, label=name, color=colors.get(name))
    axes.axhline(1.0, linestyle="--", color="0.3", linewidth=1)
    axes.grid(axis="y", alpha=0.3)
    axes.set_axisbelow(True)


def lift_bar_chart(lift: pd.DataFrame, classifier: str, colors: Mapping[str, str]) -> str:
    """Grouped bars of top-10 % lift: ``lift`` has one row per product and one column per source."""
    products = [str(product) for product in lift.index]
    sources = [str(source) for source in lift.columns]
    if lift.isna().all().all():
        return not_available("no top-10 % lift values to draw")
    figure = Figure(figsize=(max(5.0, 0.55 * len(products) * max(len(sources), 2) + 1.5), 3.2), layout="constrained")
    axes = figure.add_subplot()
    grouped_bars(axes, products, {source: lift[source].tolist() for source in sources}, colors)
    rotate = len(products) > 4
    axes.set_xticks(
        np.arange(len(products)), products, rotation=30 if rotate else 0, ha="right" if rotate else "center"
    )
    axes.set_ylabel("top-10 % lift")
    axes.set_title(f"Top-10 % lift per product ({classifier})")
    axes.legend(title="embedding source", fontsize="small", title_fontsize="small")
    return figure_html(
        figure,
        alt=f"Grouped bar chart of top-10 % lift for {len(products)} products and the sources {', '.join(sources)}",
        caption=(
            "Top-10 % lift: buying rate among the 10 % of customers with the highest scores divided by the "
            "overall buying rate. The dashed line is lift 1 (no better than random)."
        ),
    )


def decile_figures(lifts: Mapping[str, pd.DataFrame], classifier: str, colors: Mapping[str, str]) -> list[str]:
    """Small multiples of lift by decile, one panel per product (``lifts[product]``: deciles × sources),
    at most :data:`MAX_PANELS_PER_FIGURE` panels per figure."""
    products = list(lifts)
    chunks = [
        products[start : start + MAX_PANELS_PER_FIGURE] for start in range(0, len(products), MAX_PANELS_PER_FIGURE)
    ]
    parts = []
    for chunk_index, chunk in enumerate(chunks):
        part = "" if len(chunks) == 1 else f" (part {chunk_index + 1} of {len(chunks)})"
        parts.append(
            figure_html(
                _decile_figure({product: lifts[product] for product in chunk}, colors),
                alt=f"Lift by decile for the products {', '.join(chunk)}, one bar per embedding source{part}",
                caption=(
                    f"Lift per score decile{part}, classifier {classifier}: buying rate in the decile divided by "
                    "the overall buying rate; decile 1 holds the 10 % of customers with the highest scores. "
                    "Dashed line: lift 1."
                ),
            )
        )
    return parts


def _decile_figure(lifts: Mapping[str, pd.DataFrame], colors: Mapping[str, str]) -> Figure:
    chunk = list(lifts)
    columns = min(4, len(chunk))
    rows = math.ceil(len(chunk) / columns)
    figure = Figure(figsize=(3.3 * columns, 2.5 * rows + 0.4), layout="constrained")
    grid = figure.subplots(rows, columns, squeeze=False)
    sources: list[str] = []
    for index, axes in enumerate(grid.flat):
        if index >= len(chunk):
            axes.set_visible(False)
            continue
        product = chunk[index]
        lift = lifts[product]
        deciles = [str(decile) for decile in lift.index]
        sources = [str(source) for source in lift.columns]
        grouped_bars(axes, deciles, {source: lift[source].tolist() for source in sources}, colors)
        axes.set_xticks(np.arange(len(deciles)), deciles, fontsize="small")
        axes.set_title(product, fontsize="medium")
        if index % columns == 0:
            axes.set_ylabel("lift")
        if index // columns == rows - 1 or index + columns >= len(chunk):
            axes.set_xlabel("decile (1 = top 10 %)", fontsize="small")
    handles, labels = grid.flat[0].get_legend_handles_labels()
    figure.legend(
        handles,
        labels,
        loc="outside upper center",
        ncols=max(len(sources), 1),
        fontsize="small",
        title="embedding source",
        title_fontsize="small",
    )
    return figure


def projection_figure(source: str, projection: Projection, *, seed: int) -> str:
    """Scatter plots of :func:`custembed.projections.project`'s result, one panel per method, buyers on top."""
    projected = projection.coordinates
    buyers = projection.is_buyer
    count, total, width = projection.count, projection.total, projection.width
    figure = Figure(figsize=(3.6 * len(projected), 3.5), layout="constrained")
    grid = figure.subplots(1, len(projected), squeeze=False)
    buyer_count = int(buyers.sum())
    for axes, (method, coordinates) in zip(grid.flat, projected.items(), strict=True):
        axes.set_title(projection.titles[method], fontsize="medium")
        axes.set_xticks([])
        axes.set_yticks([])
        if isinstance(coordinates, str):
            axes.text(0.5, 0.5, coordinates, ha="center", va="center", transform=axes.transAxes, color="0.4")
            continue
        # buyers are rare: draw them last so non-buyers never hide them
        axes.scatter(
            coordinates[~buyers, 0],
            coordinates[~buyers, 1],
            s=6,
            color=NON_BUYER_COLOR,
            alpha=0.45,
            linewidths=0,
            label=f"non-buyer ({count - buyer_count:,})",
        )
        axes.scatter(
            coordinates[buyers, 0],
            coordinates[buyers, 1],
            s=16,
            color=BUYER_COLOR,
            alpha=0.9,
            linewidths=0,
            label=f"buyer ({buyer_count:,})",
        )
    grid.flat[0].legend(fontsize="small", loc="best", markerscale=1.5)
    sample = (
        f"{count:,} of {total:,} customers (uniform random sample, seed {seed})"
        if total > count
        else f"all {count:,} customers given"
    )
    notes = []
    if projection.reduced_first:
        notes.append(f"t-SNE and UMAP run on the first {PCA_BEFORE_NONLINEAR} principal components")
    if projection.dropped:
        notes.append(f"{projection.dropped:,} embeddings with NaN/inf values left out")
    caption = (
        f"{source}: 2-D projections of {width}-dimensional embeddings, {sample}; "
        f"{buyer_count:,} buyers in red drawn over non-buyers in grey."
        + (" " + "; ".join(notes) + "." if notes else "")
    )
    methods = ", ".join(projected)
    return figure_html(
        figure, alt=f"{methods} scatter plots of {source} embeddings, buyers vs non-buyers", caption=caption
    )


def attention_overview(change: Mapping[str, float], before: str, after: str) -> str:
    """Layer x head heat map of the change, when every key reads "layer L head H"."""
    positions = {}
    for key in change:
        match = re.fullmatch(r"\s*layer\D*(\d+)\D+head\D*(\d+)\s*", key, flags=re.IGNORECASE)
        if match is None:
            return ""
        positions[key] = (int(match.group(1)), int(match.group(2)))
    layers = sorted({layer for layer, _ in positions.values()})
    heads = sorted({head for _, head in positions.values()})
    grid = np.full((len(layers), len(heads)), np.nan)
    for key, (layer, head) in positions.items():
        grid[layers.index(layer), heads.index(head)] = change[key]
    figure = Figure(figsize=(1.0 + 0.7 * len(heads) + 1.2, 0.9 + 0.45 * len(layers)), layout="constrained")
    axes = figure.add_subplot()
    top = float(np.nanmax(grid)) or 1e-9
    # from 0, so that a small change looks small
    image = axes.imshow(grid, cmap="magma_r", aspect="auto", vmin=0.0, vmax=top)
    if grid.size <= 64:
        annotate_cells(axes, grid, "{:.3f}", lambda value: value / top > 0.55)
    axes.set_xticks(np.arange(len(heads)), [str(head) for head in heads])
    axes.set_yticks(np.arange(len(layers)), [str(layer) for layer in layers])
    axes.set_xlabel("head")
    axes.set_ylabel("layer")
    figure.colorbar(image, ax=axes, label="mean |Δ|")
    return figure_html(
        figure,
        alt=(
            f"Heat map of the mean absolute attention change per layer and head, "
            f"{len(layers)} layers by {len(heads)} heads"
        ),
        caption=f"Mean absolute change of the attention between behaviour types, {after} − {before}, "
        "for every layer and head.",
    )


def attention_figure(
    key: str, states: Sequence[tuple[str, np.ndarray]], names: Sequence[str], compared: bool, change: float
) -> str:
    size = len(names)
    panels = len(states) + (1 if compared else 0)
    panel_inches = max(2.6, 0.45 * size + 1.2)
    widths = [1.0] * len(states) + ([0.85] if compared else [])
    figure = Figure(figsize=(panel_inches * sum(widths) + 1.4, panel_inches + 0.6), layout="constrained")
    grid = figure.subplots(1, panels, squeeze=False, gridspec_kw={"width_ratios": widths})
    axes_list = list(grid.flat)
    values = np.concatenate([matrix.ravel() for _, matrix in states])
    low, high = float(np.nanmin(values)), float(np.nanmax(values))
    if low == high:
        high = low + 1e-9
    annotate = size <= ANNOTATE_MAX_LABELS
    images = []
    for axes, (state, matrix) in zip(axes_list[: len(states)], states, strict=True):
        images.append(axes.imshow(matrix, cmap="viridis", vmin=low, vmax=high))
        label_heat_map(axes, names, state)
        if annotate:
            # viridis is dark at the low end: white text there
            annotate_cells(axes, matrix, "{:.2f}", lambda value: (value - low) / (high - low) < 0.45)
    figure.colorbar(images[-1], ax=axes_list[: len(states)], shrink=0.8, label="mean attention")
    if compared:
        difference = states[-1][1] - states[0][1]
        limit = float(np.nanmax(np.abs(difference))) or 1e-9
        axes = axes_list[-1]
        diff_image = axes.imshow(difference, cmap="RdBu_r", vmin=-limit, vmax=limit)
        label_heat_map(axes, names, f"{states[-1][0]} − {states[0][0]}")
        if annotate:
            # RdBu is dark at both ends
            annotate_cells(axes, difference, "{:+.2f}", lambda value: abs(value) / limit > 0.6)
        figure.colorbar(diff_image, ax=axes, shrink=0.8, label="difference")
    state_names = " and ".join(state for state, _ in states)
    caption = (
        f"{key}: mean attention from the behaviour type of the row (query) to the behaviour type of the "
        f"column (key), {state_names}" + (f"; right: the difference, mean |Δ| = {change:.4f}." if compared else ".")
    )
    return figure_html(
        figure,
        alt=f"Attention heat maps for {key}: {state_names}" + (", and their difference" if compared else ""),
        caption=caption,
    )


def label_heat_map(axes: Axes, names: Sequence[str], title: str) -> None:
    axes.set_title(title, fontsize="medium")
    axes.set_xticks(np.arange(len(names)), names, rotation=45, ha="right", fontsize="small")
    axes.set_yticks(np.arange(len(names)), names, fontsize="small")


def annotate_cells(axes: Axes, values: np.ndarray, template: str, dark: Callable[[float], bool]) -> None:
    for row in range(values.shape[0]):
        for column in range(values.shape[1]):
            value = float(values[row, column])
            if math.isfinite(value):
                axes.text(
                    column,
                    row,
                    template.format(value),
                    ha="center",
                    va="center",
                    fontsize=6.5,
                    color="white" if dark(value) else "black",
                )


# Validation figures other than the loss, in the order drawn, with their legend names.
_VALIDATION_CURVES: tuple[tuple[str, str], ...] = (("val_accuracy", "validation accuracy"),)
_RANKING_CURVE = re.compile(r"(hr|ndcg)_at_(\d+)")
RUNNING_MEAN_FROM = 50  # train-loss points from which a running mean is drawn over the noisy per-step line


def training_curve_figure(
    source: str, curves: Mapping[str, pd.Series], kept_step: float | None, *, recorded: bool, origin: str
) -> str:
    """Training loss per step and validation figures per epoch of one encoder, the kept weights marked.

    ``curves``: MLflow key -> values indexed by step (``train_loss``, ``val_loss``, ``val_accuracy``,
    ``hr_at_<k>``, ``ndcg_at_<k>``); ``kept_step``: the step of the saved weights (None: unknown),
    ``recorded`` when the training said so (else it is that of the lowest validation loss).
    """
    others = [(key, label) for key, label in _VALIDATION_CURVES if key in curves]
    others += [
        (key, f"{match.group(1).upper()}@{match.group(2)}")
        for key in sorted(curves)
        if (match := _RANKING_CURVE.fullmatch(key))
    ]
    figure = Figure(figsize=(4.2 * (2 if others else 1), 3.0), layout="constrained")
    grid = figure.subplots(1, 2 if others else 1, squeeze=False)
    loss_axes = grid[0, 0]
    _loss_curves(loss_axes, curves, kept_step)
    if others:
        metric_axes = grid[0, 1]
        for index, (key, label) in enumerate(others):
            series = curves[key]
            metric_axes.plot(
                series.index, series.to_numpy(), marker="o", markersize=3, color=f"C{2 * index + 2}", label=label
            )
        if kept_step is not None:
            metric_axes.axvline(kept_step, color="0.3", linestyle=":", linewidth=1)
        metric_axes.set_xlabel("step")
        metric_axes.set_title("validation (after each epoch)", fontsize="medium")
        metric_axes.grid(alpha=0.3)
        metric_axes.legend(fontsize="small")
    val_loss = curves.get("val_loss")
    validations = len(val_loss) if val_loss is not None else 0
    caption = (
        f"{source}: training loss per step and the {validations} validations (after each epoch and at the end)"
        + (f", {origin}" if origin else "")
        + ". "
    )
    if kept_step is None:
        kept_text = "not known"
        caption += "The training recorded no kept weights and logged no validation loss."
    else:
        kept_text = f"step {int(kept_step):,}"
        kept_loss = _loss_at(val_loss, kept_step)
        if kept_loss is not None:
            kept_text += f", validation loss {kept_loss:.4f}"
        how = "as the training recorded" if recorded else "the lowest validation loss (the training recorded no step)"
        caption += f"Star or dotted line: the weights kept, {kept_text}, {how}."
    return figure_html(
        figure,
        alt=f"Training and validation curves of {source} against the optimiser step, kept weights at {kept_text}",
        caption=caption,
    )


def _loss_curves(axes: Axes, curves: Mapping[str, pd.Series], kept_step: float | None) -> None:
    train = curves.get("train_loss")
    if train is not None:
        noisy = len(train) >= RUNNING_MEAN_FROM
        axes.plot(
            train.index,
            train.to_numpy(),
            color="C0",
            linewidth=0.8,
            alpha=0.35 if noisy else 1.0,
            label="training loss (per step)",
        )
        if noisy:
            window = max(5, len(train) // RUNNING_MEAN_FROM)
            smooth = train.rolling(window, min_periods=1).mean()
            axes.plot(smooth.index, smooth.to_numpy(), color="C0", linewidth=1.5, label=f"mean of {window} steps")
    val_loss = curves.get("val_loss")
    if val_loss is not None:
        axes.plot(val_loss.index, val_loss.to_numpy(), color="C1", marker="o", markersize=3, label="validation loss")
    kept_loss = _loss_at(val_loss, kept_step)
    if kept_step is not None and kept_loss is not None:
        axes.plot(
            [kept_step],
            [kept_loss],
            marker="*",
            markersize=13,
            color="C3",
            linestyle="none",
            label="kept weights",
        )
    elif kept_step is not None:
        axes.axvline(kept_step, color="C3", linestyle=":", linewidth=1.2, label="kept weights")
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.set_title("loss", fontsize="medium")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")


def _loss_at(val_loss: pd.Series | None, step: float | None) -> float | None:
    """The validation loss logged at ``step``, if one was."""
    if val_loss is None or step is None or int(step) not in val_loss.index:
        return None
    return float(val_loss.loc[int(step)])

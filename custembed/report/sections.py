"""The report's sections: each turns one part of :class:`ReportData` into HTML (tables, notes, figures)."""

from __future__ import annotations

import html
import logging
import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from custembed.comparison import model_comparison, protocol_name
from custembed.projections import import_umap, project
from custembed.report.data import ReportData, TrainingHistory
from custembed.report.figures import (
    attention_figure,
    attention_overview,
    decile_figures,
    lift_bar_chart,
    projection_figure,
    training_curve_figure,
)
from custembed.report.markup import (
    MISSING,
    as_float,
    best_flags,
    cell,
    fmt,
    fmt_count,
    fmt_duration,
    fmt_parameters,
    fmt_rate,
    html_table,
    in_order,
    natural_key,
    not_available,
    paragraph,
)

log = logging.getLogger(__name__)


def source_colors(data: ReportData) -> dict[str, str]:
    """One colour per embedding source, the same in every figure."""
    sources: list[str] = []
    for frame in (data.metrics, data.decile_lift, data.model_info):
        if frame is not None and not frame.empty:
            sources += [source for source in in_order(frame["source"]) if source not in sources]
    palette = [f"C{index}" for index in range(10)]
    return {source: palette[index % len(palette)] for index, source in enumerate(sources)}


def _frame_or_reason(frame: pd.DataFrame | None, what: str) -> tuple[pd.DataFrame | None, str]:
    if frame is None:
        return None, f"no {what} were given"
    if frame.empty:
        return None, f"the {what} table is empty"
    return frame, ""


def _for_classifier(
    frame: pd.DataFrame, classifier: str, what: str, keys: Sequence[str]
) -> tuple[pd.DataFrame | None, str]:
    chosen = frame[frame["classifier"].astype(str) == classifier]
    if chosen.empty:
        present = ", ".join(in_order(frame["classifier"]))
        return None, f"no {what} rows for the default classifier {classifier!r} (present: {present})"
    chosen = chosen.assign(source=chosen["source"].astype(str), product=chosen["product"].astype(str))
    duplicated = chosen.duplicated(list(keys), keep="last")
    if duplicated.any():
        log.warning(
            "report: %d duplicate %s rows for %s; keeping the last of each", int(duplicated.sum()), what, list(keys)
        )
        chosen = chosen[~duplicated]
    return chosen, ""


def summary_section(summary: Mapping[str, object] | None) -> str:
    if not summary:
        return not_available("no run summary was given")
    rows = [([cell(str(key), header=True, scope="row"), cell(str(value))], "") for key, value in summary.items()]
    return html_table([], rows)


_COMPARISON_METRICS: tuple[tuple[str, str, int], ...] = (
    ("auc", "AUC", 3),
    ("f1", "F1", 3),
    ("top10_lift", "Top-10 % lift", 2),
)


def model_comparison_section(metrics: pd.DataFrame | None, classifier: str, colors: Mapping[str, str]) -> str:
    frame, reason = _frame_or_reason(metrics, "model metrics")
    if frame is None:
        return not_available(reason)
    chosen, reason = _for_classifier(frame, classifier, "model metrics", ("source", "product"))
    if chosen is None:
        return not_available(reason)
    comparison = model_comparison(
        chosen,
        classifier=classifier,
        values=[c for c, _, _ in _COMPARISON_METRICS],
        sort=False,
        duplicates="last",
        where="the report's model metrics",
    )
    comparison = comparison.replace([np.inf, -np.inf], np.nan)
    products, sources = list(comparison.index), list(comparison["auc"].columns)
    head = [
        [
            cell("product", header=True, rowspan=2),
            cell("test rows", header=True, rowspan=2),
            cell("buyers", header=True, rowspan=2),
        ]
        + [cell(label, header=True, colspan=len(sources)) for _, label, _ in _COMPARISON_METRICS],
        [cell(source, header=True) for _ in _COMPARISON_METRICS for source in sources],
    ]
    body = [(_comparison_cells(chosen, comparison, product, sources), "") for product in products]
    mean_cells, incomplete = _mean_cells(comparison, sources)
    body.append((mean_cells, "mean"))
    caption = f"Classifier {classifier}, {_protocol_text(chosen)}, at the natural buying rate. " + (
        "Best value per product in bold (higher is better for all three)."
    )
    if _has_intervals(chosen):
        replicates = int(pd.to_numeric(chosen["bootstrap"], errors="coerce").max())
        caption += (
            f" Brackets: 95 % intervals (stratified bootstrap, {replicates} replicates). "
            "* AUC significantly below the product's best source (paired bootstrap on the same customers)."
        )
    parts = [html_table(head, body, caption=caption)]
    if incomplete:
        parts.append(
            paragraph(
                "* mean over the products that have a value for this source only; not comparable with the other means."
            )
        )
    parts.append(_messages(chosen))
    parts.append(lift_bar_chart(pd.DataFrame(comparison["top10_lift"]), classifier, colors))
    return "\n".join(part for part in parts if part)


def _comparison_cells(
    chosen: pd.DataFrame, comparison: pd.DataFrame, product: str, sources: Sequence[str]
) -> list[str]:
    """One product's row: test rows, buyers, then each metric per source (best in bold)."""
    product_rows = chosen[chosen["product"] == product]
    cells = [
        cell(product, header=True, scope="row"),
        cell(_count_range(product_rows["rows"]), numeric=True),
        cell(_count_range(product_rows["positives"]), numeric=True),
    ]
    for column, _, digits in _COMPARISON_METRICS:
        values = [as_float(comparison.loc[product, (column, source)]) for source in sources]
        for source, value, best in zip(sources, values, best_flags(values, digits), strict=True):
            text = fmt(value, digits) + _interval_text(product_rows, source, column, digits)
            cells.append(cell(text, numeric=True, bold=best))
    return cells


def _protocol_text(rows: pd.DataFrame) -> str:
    """Which customers the metrics were measured on (``model_metrics.protocol``)."""
    if "protocol" not in rows.columns or rows["protocol"].dropna().empty:
        return "test window"
    return "evaluated on " + " and ".join(protocol_name(str(p)) for p in pd.unique(rows["protocol"].dropna()))


def _has_intervals(rows: pd.DataFrame) -> bool:
    return {"auc_lo", "auc_hi", "bootstrap"} <= set(rows.columns) and rows["auc_lo"].notna().any()


def _interval_text(product_rows: pd.DataFrame, source: str, column: str, digits: int) -> str:
    """`` [lo, hi]`` of one metric of one source (the last row), plus `` *`` for an AUC significantly below the best."""
    if f"{column}_lo" not in product_rows.columns:
        return ""
    rows = product_rows[product_rows["source"].astype(str) == source]
    if rows.empty:
        return ""
    row = rows.iloc[-1]
    lo, hi = as_float(row[f"{column}_lo"]), as_float(row[f"{column}_hi"])
    text = "" if np.isnan(lo) or np.isnan(hi) else f" [{lo:.{digits}f}, {hi:.{digits}f}]"
    significant = row.get("auc_diff_significant")
    if column == "auc" and significant is not None and not pd.isna(significant) and bool(significant):
        text += " *"
    return text


def _mean_cells(comparison: pd.DataFrame, sources: Sequence[str]) -> tuple[list[str], bool]:
    """The "mean over products" row, and whether a mean misses products (marked ``*``)."""
    incomplete = False
    cells = [cell("mean over products", header=True, scope="row"), cell(""), cell("")]
    for column, _, digits in _COMPARISON_METRICS:
        means = [as_float(comparison[(column, source)].mean()) for source in sources]
        counts = [int(comparison[(column, source)].notna().sum()) for source in sources]
        for value, best, count in zip(means, best_flags(means, digits), counts, strict=True):
            marker = "*" if 0 < count < len(comparison) else ""
            incomplete |= bool(marker)
            cells.append(cell(fmt(value, digits) + marker, numeric=True, bold=best))
    return cells, incomplete


def _count_range(values: pd.Series) -> str:
    numbers = pd.to_numeric(values, errors="coerce").dropna()
    if numbers.empty:
        return MISSING
    low, high = numbers.min(), numbers.max()
    return fmt_count(low) if low == high else f"{fmt_count(low)}–{fmt_count(high)}"


def _messages(rows: pd.DataFrame) -> str:
    if "message" not in rows.columns:
        return ""
    items = []
    for record in rows.itertuples(index=False):
        message = record.message
        if message is None or (isinstance(message, float) and math.isnan(message)) or not str(message).strip():
            continue
        if str(message).strip() == "ok":  # the scoring job's "nothing to report"
            continue
        items.append(f"<li>{html.escape(f'{record.product} / {record.source}: {message}')}</li>")
    if not items:
        return ""
    return '<p>Messages from the scoring job:</p><ul class="messages">' + "".join(items) + "</ul>"


def decile_section(decile_lift: pd.DataFrame | None, classifier: str, colors: Mapping[str, str]) -> str:
    frame, reason = _frame_or_reason(decile_lift, "decile lift rows")
    if frame is None:
        return not_available(reason)
    chosen, reason = _for_classifier(frame, classifier, "decile lift", ("source", "product", "decile"))
    if chosen is None:
        return not_available(reason)
    chosen = chosen.assign(decile=pd.to_numeric(chosen["decile"], errors="coerce")).dropna(subset=["decile"])
    chosen = chosen.assign(decile=chosen["decile"].astype(int))
    sources = in_order(chosen["source"])
    products = in_order(chosen["product"])
    deciles = sorted(chosen["decile"].unique().tolist())
    lifts = {
        product: (
            chosen[chosen["product"] == product]
            .pivot(index="decile", columns="source", values="lift")
            .reindex(index=deciles, columns=sources)
            .apply(pd.to_numeric, errors="coerce")
        )
        for product in products
    }
    parts = decile_figures(lifts, classifier, colors)
    parts.append(_decile_tables(chosen, products, sources))
    return "\n".join(parts)


def _decile_tables(chosen: pd.DataFrame, products: Sequence[str], sources: Sequence[str]) -> str:
    tables = []
    for product in products:
        rows = chosen[chosen["product"] == product]
        head = [
            [
                cell("decile", header=True, rowspan=2),
                cell("customers", header=True, colspan=len(sources)),
                cell("buyers", header=True, colspan=len(sources)),
                cell("buy rate", header=True, colspan=len(sources)),
                cell("lift", header=True, colspan=len(sources)),
                cell("cumulative lift", header=True, colspan=len(sources)),
            ],
            [cell(source, header=True) for _ in range(5) for source in sources],
        ]
        indexed = rows.set_index(["decile", "source"])
        body = []
        for decile in sorted(rows["decile"].unique().tolist()):
            cells = [cell(str(decile), header=True, scope="row")]
            for column, formatter in (
                ("customers", fmt_count),
                ("buyers", fmt_count),
                ("buy_rate", lambda value: fmt(value, 4)),
                ("lift", lambda value: fmt(value, 2)),
                ("cumulative_lift", lambda value: fmt(value, 2)),
            ):
                for source in sources:
                    cells.append(cell(formatter(indexed[column].get((decile, source), math.nan)), numeric=True))
            body.append((cells, ""))
        tables.append(html_table(head, body, caption=product))
    return f"<details><summary>Decile tables ({len(products)} products)</summary>{''.join(tables)}</details>"


_CLASSIFIER_METRICS: tuple[tuple[str, str, int], ...] = (
    ("accuracy", "accuracy", 3),
    ("precision", "precision", 3),
    ("recall", "recall", 3),
    ("f1", "F1", 3),
    ("auc", "AUC", 3),
    ("top10_lift", "top-10 % lift", 2),
)


def probes_section(probes: pd.DataFrame | None) -> str:
    """Mean AUC and top-10 % lift per source under the default classifier and each probe (``score.probes``)."""
    if probes is None or probes.empty:
        return not_available(
            "no probes were fitted: set score.probes (e.g. [logistic_regression, knn]) to see whether a "
            "representation carries the signal or the classifier finds it"
        )
    classifiers = [str(c) for c in probes["auc"].columns]
    head = [
        [cell("embedding source", header=True)]
        + [cell(f"{c}: mean AUC", header=True) for c in classifiers]
        + [cell(f"{c}: mean lift", header=True) for c in classifiers]
    ]
    body = []
    for source in probes.index:
        cells = [cell(str(source), header=True, scope="row")]
        cells += [cell(fmt(as_float(probes.loc[source, ("auc", c)]), 3), numeric=True) for c in classifiers]
        cells += [cell(fmt(as_float(probes.loc[source, ("top10_lift", c)]), 2), numeric=True) for c in classifiers]
        body.append((cells, ""))
    caption = (
        "The same embeddings and test customers under the default classifier and the probes, means over "
        "the products where all have an AUC. A linear probe (logistic regression) or k-NN close to the "
        "forest says the representation carries the signal; far below it, the forest finds it."
    )
    return html_table(head, body, caption=caption)


def classifier_comparison_section(comparison: pd.DataFrame | None) -> str:
    frame, reason = _frame_or_reason(comparison, "classifier comparison rows")
    if frame is None:
        return not_available(reason)
    frame = frame.assign(
        source=frame["source"].astype(str),
        product=frame["product"].astype(str),
        classifier=frame["classifier"].astype(str),
    )
    parts = []
    for (product, source), rows in frame.groupby(["product", "source"], sort=False):
        head = [
            [cell("classifier", header=True), cell("test rows", header=True), cell("buyers", header=True)]
            + [cell(label, header=True) for _, label, _ in _CLASSIFIER_METRICS]
        ]
        columns = {column: [as_float(value) for value in rows[column]] for column, _, _ in _CLASSIFIER_METRICS}
        flags = {column: best_flags(columns[column], digits) for column, _, digits in _CLASSIFIER_METRICS}
        body = []
        for position, record in enumerate(rows.itertuples(index=False)):
            cells = [
                cell(record.classifier, header=True, scope="row"),
                cell(fmt_count(record.rows), numeric=True),
                cell(fmt_count(record.positives), numeric=True),
            ]
            for column, _, digits in _CLASSIFIER_METRICS:
                cells.append(cell(fmt(columns[column][position], digits), numeric=True, bold=flags[column][position]))
            body.append((cells, ""))
        caption = (
            f"Product {product}, embedding source {source}: classifiers on the same embeddings and test set. "
            "Best value per column in bold."
        )
        parts.append(html_table(head, body, caption=caption))
        parts.append(_messages(rows))
    return "\n".join(part for part in parts if part)


_MODEL_COLUMNS: tuple[tuple[str, str, Callable[[object], str]], ...] = (
    ("parameters", "parameters", fmt_parameters),
    ("hidden_size", "hidden size", fmt_count),
    ("train_seconds", "training time", fmt_duration),
    ("embed_customers_per_s", "embedding throughput (customers/s)", fmt_rate),
    ("val_loss", "validation loss", lambda value: fmt(value, 4)),
    ("val_accuracy", "validation accuracy", lambda value: fmt(value, 4)),
    ("hr_at_10", "HR@10", lambda value: fmt(value, 4)),
    ("ndcg_at_10", "NDCG@10", lambda value: fmt(value, 4)),
    ("no_action_share", "held-out 'no action' share", lambda value: fmt(value, 3)),
)
# How HR@10 / NDCG@10 are measured (custembed.encoders.bert4rec.RANKING_PROTOCOL; no torch import here).
RANKING_PROTOCOL = "full ranking, leave-last-out, action targets, pessimistic ties"


def models_section(model_info: pd.DataFrame | None) -> str:
    frame, reason = _frame_or_reason(model_info, "model details")
    if frame is None:
        return not_available(reason)
    head = [[cell("embedding source", header=True)] + [cell(label, header=True) for _, label, _ in _MODEL_COLUMNS]]
    body = []
    for _, record in frame.iterrows():
        cells = [cell(str(record["source"]), header=True, scope="row")]
        for column, _, formatter in _MODEL_COLUMNS:
            cells.append(cell(formatter(record[column]) if column in frame.columns else MISSING, numeric=True))
        body.append((cells, ""))
    absent = [label for column, label, _ in _MODEL_COLUMNS if column not in frame.columns]
    parts = [
        html_table(
            head,
            body,
            caption="Model size, training time, inference throughput and validation metrics; "
            f"HR@10 and NDCG@10: {RANKING_PROTOCOL} (held-out 'no action' targets left out, their share shown); "
            f"{MISSING} where not measured.",
        )
    ]
    if absent:
        parts.append(paragraph(f"Not recorded for any model: {', '.join(absent)}."))
    return "\n".join(parts)


def training_curves_section(histories: Sequence[TrainingHistory] | None) -> str:
    """Per encoder trained for the run: its training and validation curves, or one line saying why not."""
    if not histories:
        return not_available("no training runs were given")
    parts = []
    for item in histories:
        curves = _curves(item.history)
        if item.missing or not {"train_loss", "val_loss"} & set(curves):
            reason = item.missing or f"no train_loss or val_loss in the MLflow history of {item.origin or 'its run'}"
            parts.append(not_available(f"{item.source}: {reason}"))
            continue
        kept_step, recorded = _kept_step(item.kept_step, curves.get("val_loss"))
        parts.append(f"<h3>{html.escape(item.source)}</h3>")
        parts.append(training_curve_figure(item.source, curves, kept_step, recorded=recorded, origin=item.origin))
    return "\n".join(parts)


def _curves(history: pd.DataFrame) -> dict[str, pd.Series]:
    """MLflow key -> values indexed by step, one per step: the last logged (a resumed run logs steps again)."""
    if history.empty:
        return {}
    frame = history.assign(
        step=pd.to_numeric(history["step"], errors="coerce"), value=pd.to_numeric(history["value"], errors="coerce")
    ).dropna(subset=["step", "value"])
    curves = {}
    for key, rows in frame.groupby("metric", sort=False):
        latest = rows.drop_duplicates("step", keep="last")
        curves[str(key)] = pd.Series(latest["value"].to_numpy(float), index=latest["step"].astype("int64")).sort_index()
    return curves


def _kept_step(recorded: float, val_loss: pd.Series | None) -> tuple[float | None, bool]:
    """(step of the kept weights, whether the training recorded it); else that of the lowest validation loss."""
    if math.isfinite(as_float(recorded)):
        return float(recorded), True
    if val_loss is not None and len(val_loss):
        return float(val_loss.index[int(np.argmin(val_loss.to_numpy()))]), False
    return None, False


def projections_section(
    projections: Mapping[str, tuple[np.ndarray, np.ndarray]] | None, *, max_points: int, seed: int
) -> str:
    if not projections:
        return not_available("no embedding samples were given")
    umap_module, umap_reason = import_umap()
    parts = []
    if umap_module is None:
        parts.append(not_available(f"UMAP projections: {umap_reason}"))
    for source, (embeddings, is_buyer) in projections.items():
        parts.append(f"<h3>{html.escape(str(source))}</h3>")
        projection = project(
            embeddings, is_buyer, max_points=max_points, seed=seed, umap_module=umap_module, name=f"{source} embeddings"
        )
        parts.append(
            not_available(f"{source}: {projection.unavailable}")
            if projection.unavailable
            else projection_figure(str(source), projection, seed=seed)
        )
    return "\n".join(parts)


def attention_section(
    attention: Mapping[str, Mapping[str, np.ndarray]] | None, labels: Sequence[str] | None, *, max_pairs: int
) -> str:
    states = [str(state) for state, maps in (attention or {}).items() if maps]
    if attention is None or not states:
        return not_available("no attention maps were given")
    maps = {
        str(state): {str(key): np.asarray(matrix, dtype=np.float64) for key, matrix in attention[state].items()}
        for state in attention
        if attention[state]
    }
    all_keys = sorted({key for state_maps in maps.values() for key in state_maps}, key=natural_key)
    common = [key for key in all_keys if all(key in maps[state] for state in states)]
    if not common:
        return not_available(f"no layer/head appears in every state ({', '.join(states)})")
    size = maps[states[0]][common[0]].shape[0]
    names = list(labels) if labels else [str(index) for index in range(size)]
    before, after = states[0], states[-1]
    compared = len(states) > 1
    change = {
        key: float(np.nanmean(np.abs(maps[after][key] - maps[before][key]))) if compared else 0.0 for key in common
    }
    shown = sorted(common, key=lambda key: -change[key])[:max_pairs] if compared else common[:max_pairs]

    parts = []
    if compared:
        parts.append(
            paragraph(
                f"Mean attention between behaviour types, {before} vs {after}. Showing {len(shown)} of {len(common)} "
                f"layer/head pairs, those whose attention changed most ({after} − {before}, mean absolute "
                "difference) first."
            )
        )
    else:
        parts.append(
            paragraph(
                f"Mean attention between behaviour types ({before}); only one state given, so "
                f"there is no difference to show. Showing {len(shown)} of {len(common)} "
                "layer/head pairs."
            )
        )
    partial = [key for key in all_keys if key not in common]
    if partial:
        parts.append(paragraph(f"Left out, not present in every state: {', '.join(partial)}."))
    if compared:
        overview = attention_overview(change, before, after)
        if overview:
            parts.append(overview)
    for key in shown:
        parts.append(f"<h3>{html.escape(key)}</h3>")
        parts.append(
            attention_figure(
                key, [(state, maps[state][key]) for state in states], names, compared, change.get(key, 0.0)
            )
        )
    return "\n".join(parts)


def segments_section(segments: pd.DataFrame | None) -> str:
    """Per segmented source: k, its silhouette and each segment's size, buyers and over-represented actions."""
    if segments is None or segments.empty:
        return not_available("no segments for this date: run `custembed segment --encoder NAME`")
    parts = []
    for model in in_order(segments["model"]):
        rows = segments[segments["model"] == model].sort_values("segment")
        head = [[cell(h, header=True) for h in ("segment", "customers", "share", "buyers", "over-represented actions")]]
        body = [
            (
                [
                    cell(str(r.segment), header=True, scope="row"),
                    cell(fmt_count(r.customers), numeric=True),
                    cell(fmt_rate(r.share), numeric=True),
                    cell(fmt_rate(r.buyers_share), numeric=True),
                    cell("; ".join(str(a) for a in r.top_actions) or MISSING),
                ],
                "",
            )
            for r in rows.itertuples()
        ]
        first = rows.iloc[0]
        caption = (
            f"{model}: k-means on L2-normalised embeddings, k = {int(first['k'])} chosen by silhouette "
            f"({fmt(as_float(first['silhouette']), 3)}); actions whose lift over all customers (x lift) is above 1, "
            "among those at least 5 % of the segment has; buyers = customers with a buying action in their history."
        )
        parts.append(html_table(head, body, caption=caption))
    return "".join(parts)


def nextitem_section(nextitem: pd.DataFrame | None, adaptation: pd.DataFrame | None = None) -> str:
    """HR@K and NDCG@K with their intervals per model and protocol (``evaluate-nextitem``), then, when
    ``cpl4rec-ablations`` ran, the parameter efficiency of CPL4Rec's adaptations (``adaptation_stats``)."""
    if nextitem is None or nextitem.empty:
        return not_available("no next-item evaluation for this date: run `custembed evaluate-nextitem`")
    return _nextitem_tables(nextitem) + adaptation_table(adaptation, nextitem)


def adaptation_table(adaptation: pd.DataFrame | None, nextitem: pd.DataFrame | None = None) -> str:
    """One row per CPL4Rec adaptation variant: trainable and total parameters, time, and full-ranking HR@10."""
    if adaptation is None or adaptation.empty:
        return ""
    head = [
        [
            cell(name, header=True)
            for name in ("model", "variant", "trainable", "total", "share", "adaptation time", "steps", "HR@10 full")
        ]
    ]
    body = []
    for r in adaptation.sort_values("trainable_parameters").itertuples():
        hr = MISSING
        if nextitem is not None and not nextitem.empty:
            hit = nextitem[
                (nextitem["model"] == r.model)
                & (nextitem["protocol"] == "full")
                & (nextitem["metric"] == "hr")
                & (nextitem["k"] == 10)
            ]
            hr = fmt(hit.iloc[0]["value"], 4) if len(hit) else MISSING
        body.append(
            (
                [
                    cell(str(r.model), header=True, scope="row"),
                    cell(str(r.variant)),
                    cell(fmt_parameters(r.trainable_parameters), numeric=True),
                    cell(fmt_parameters(r.total_parameters), numeric=True),
                    cell(f"{as_float(r.trainable_share):.1%}", numeric=True),
                    cell(fmt_duration(r.train_seconds), numeric=True),
                    cell(fmt_count(r.steps), numeric=True),
                    cell(hr, numeric=True),
                ],
                "",
            )
        )
    backbone = str(adaptation["backbone"].iloc[0])
    caption = (
        f"CPL4Rec adaptations of the backbone {backbone} (version {adaptation['backbone_version'].iloc[0]}): "
        "parameters each trains (share of the network), the training loop's time and steps; finetune trains the "
        "backbone too (the comparison prompt learning is measured against)."
    )
    return html_table(head, body, caption=caption)


def _nextitem_tables(nextitem: pd.DataFrame) -> str:
    parts = []
    for protocol in in_order(nextitem["protocol"]):
        rows = nextitem[nextitem["protocol"] == protocol]
        pairs = zip(rows["metric"], rows["k"], strict=True)
        columns = sorted({(str(m), int(k)) for m, k in pairs})
        head = [[cell("model", header=True)] + [cell(f"{m.upper()}@{k}", header=True) for m, k in columns]]
        body = []
        for model in in_order(rows["model"]):
            cells = [cell(str(model), header=True, scope="row")]
            for m, k in columns:
                hit = rows[(rows["model"] == model) & (rows["metric"] == m) & (rows["k"] == k)]
                text = MISSING
                if len(hit):
                    h = hit.iloc[0]
                    text = f"{h['value']:.4f} [{h['ci_low']:.4f}, {h['ci_high']:.4f}]"
                cells.append(cell(text, numeric=True))
            body.append((cells, ""))
        name = str(rows["protocol_name"].iloc[0]) if "protocol_name" in rows else str(protocol)
        customers = int(rows["customers"].max()) if "customers" in rows else 0
        caption = f"{protocol}: {name}; {customers} customers; 95 % intervals (mean ± 1.96 sd / √n)."
        parts.append(html_table(head, body, caption=caption))
    return "".join(parts)


def notes_section(notes: Sequence[str] | None) -> str:
    lines = [str(note) for note in (notes or []) if str(note).strip()]
    if not lines:
        return not_available("no notes were given")
    return '<ul class="notes">' + "".join(f"<li>{html.escape(line)}</li>" for line in lines) + "</ul>"

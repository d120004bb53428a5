"""Self-contained HTML report of a run: what analysts look at after step 3.

``render_report(data, path)`` writes one HTML file that needs no network to be
viewed: every figure is an inline base64 PNG drawn by matplotlib's Agg
renderer, the CSS is inline, and there is no JavaScript, no external font and
no external link. A Content-Security-Policy in the page forbids anything else,
so a stray external reference would show up as a blocked load, not a leak.

The input is :class:`ReportData`, plain pandas / numpy values already brought
to the driver by the caller (small aggregates: metric rows, decile tables, an
embedding sample of at most a few thousand rows). This module never imports
pyspark. Any input may be ``None`` or empty: its section then says
"not available: <reason>" instead of failing.

Sections (each ``<section data-section="...">``):

* ``summary``: key/value table of the run.
* ``model-comparison``: AUC, F1 and top-10 % lift per product and embedding
  source for the default classifier, best per product in bold, mean over
  products; grouped bar chart of top-10 % lift.
* ``decile-lift``: lift by decile, one panel per product, one bar group per
  source; the full decile tables in a collapsible block.
* ``classifier-comparison``: several classifiers on one product and source
  (the paper's Table 4).
* ``models``: model size, training time, inference throughput, validation
  metrics.
* ``projections``: PCA, t-SNE and UMAP of an embedding sample per source,
  buyers vs non-buyers.
* ``attention``: mean attention between behaviour types per layer and head,
  before and after fine-tuning, and the difference.
* ``notes``: free text.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import math
import os
import re
import time
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

log = logging.getLogger(__name__)

# Columns each input frame must have when it has rows (``message`` is optional).
METRIC_COLUMNS: tuple[str, ...] = (
    "source", "product", "classifier", "rows", "positives", "auc", "f1",
    "precision", "recall", "accuracy", "top10_lift",
)
METRIC_OPTIONAL_COLUMNS: tuple[str, ...] = ("message",)
DECILE_COLUMNS: tuple[str, ...] = (
    "source", "product", "classifier", "decile", "customers", "buyers",
    "buy_rate", "lift", "cumulative_lift",
)
# Only ``source`` is required; a missing column shows as "–" like a NaN.
MODEL_INFO_COLUMNS: tuple[str, ...] = (
    "source", "parameters", "hidden_size", "train_seconds", "embed_customers_per_s",
    "val_loss", "val_accuracy", "hr_at_10", "ndcg_at_10",
)

SECTIONS: tuple[tuple[str, str], ...] = (
    ("summary", "Run summary"),
    ("model-comparison", "Model comparison"),
    ("decile-lift", "Decile lift"),
    ("classifier-comparison", "Classifier comparison"),
    ("models", "Models"),
    ("projections", "Embedding projections"),
    ("attention", "Attention between behaviour types"),
    ("notes", "Notes"),
)

DPI = 90
MISSING = "–"
_MIN_POINTS_NONLINEAR = 10  # t-SNE / UMAP on fewer points says nothing
_PCA_BEFORE_NONLINEAR = 50  # reduce wider embeddings to this many dimensions first
_TSNE_ITERATIONS = 500
_MAX_PANELS_PER_FIGURE = 12
_ANNOTATE_MAX_LABELS = 10  # write values into heat-map cells up to this size
_BUYER_COLOR = "#d62728"
_NON_BUYER_COLOR = "#8c96a0"

_CSS = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       margin: 0 auto; max-width: 1180px; padding: 1.5rem 2rem 4rem; color: #1f2328; line-height: 1.45; }
header h1 { margin-bottom: .2rem; }
.meta { color: #57606a; margin-top: 0; }
nav ul { list-style: none; padding: 0; display: flex; flex-wrap: wrap; gap: .4rem 1.2rem; }
nav a { color: #0969da; text-decoration: none; }
section { border-top: 1px solid #d0d7de; margin-top: 2rem; padding-top: .5rem; }
h2 { margin: .6rem 0 .8rem; }
h3 { margin: 1.2rem 0 .5rem; font-size: 1.05rem; }
table { border-collapse: collapse; margin: .5rem 0 1rem; font-size: .9rem; }
caption { text-align: left; color: #57606a; padding-bottom: .3rem; }
th, td { border: 1px solid #d0d7de; padding: .25rem .6rem; }
th { background: #f6f8fa; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.mean td, tr.mean th { border-top: 2px solid #8c959f; background: #fbfbfc; }
figure { margin: 1rem 0 1.5rem; }
figure img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
figcaption { color: #57606a; font-size: .88rem; margin-top: .3rem; max-width: 60rem; }
p.na { color: #8a4600; background: #fff8c5; border: 1px solid #eac54f; border-radius: 4px;
       padding: .35rem .7rem; display: inline-block; margin: .3rem 0; }
details { margin: .5rem 0 1rem; }
summary { cursor: pointer; color: #0969da; }
ul.messages li, ul.notes li { margin: .15rem 0; }
footer { margin-top: 3rem; color: #8c959f; font-size: .8rem; }
"""

# The report is viewed from disk or an intranet share; nothing outside the file may load.
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


@dataclass(frozen=True, eq=False)
class ReportData:
    """Everything the report shows, as plain driver-side values.

    Every field may be ``None`` or empty; its section then shows a short
    "not available" note. Frames with rows must carry the columns listed in
    the module constants (:data:`METRIC_COLUMNS`, :data:`DECILE_COLUMNS`,
    ``source`` for ``model_info``); a missing column is a ``ValueError``.

    Attributes:
        title: page title and heading.
        run_date: the run's date partition (``YYYY-MM-DD``).
        generated_at: when the report was generated (free text, e.g. ISO time).
        summary: key/value lines at the top (tables location, rows read/accepted/rejected…).
        default_classifier: classifier whose rows feed the model comparison and decile lift.
        metrics: one row per (source, product, classifier): :data:`METRIC_COLUMNS` (+ ``message``).
        decile_lift: one row per (source, product, classifier, decile): :data:`DECILE_COLUMNS`;
            decile 1 is the 10 % of customers with the highest scores.
        classifier_comparison: metric rows (same columns as ``metrics``) of several
            classifiers on one product and one source.
        model_info: one row per source: :data:`MODEL_INFO_COLUMNS` (NaN where unknown).
        projections: per source, ``(embeddings [n, H] float, is_buyer [n] bool)``.
        attention: per state (e.g. "pre-trained", "fine-tuned", in that order) a mapping
            ``"layer L head H"`` -> ``[K, K]`` mean attention between behaviour types.
        attention_labels: the K behaviour names, row/column order of the attention matrices.
        notes: free-text lines shown at the end.
    """

    title: str = "custembed report"
    run_date: str = ""
    generated_at: str = ""
    summary: Mapping[str, object] | None = None
    default_classifier: str = "random_forest"
    metrics: pd.DataFrame | None = None
    decile_lift: pd.DataFrame | None = None
    classifier_comparison: pd.DataFrame | None = None
    model_info: pd.DataFrame | None = None
    projections: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None
    attention: Mapping[str, Mapping[str, np.ndarray]] | None = None
    attention_labels: Sequence[str] | None = None
    notes: Sequence[str] | None = None

    def __post_init__(self) -> None:
        _check_frame("metrics", self.metrics, METRIC_COLUMNS)
        _check_frame("decile_lift", self.decile_lift, DECILE_COLUMNS)
        _check_frame("classifier_comparison", self.classifier_comparison, METRIC_COLUMNS)
        _check_frame("model_info", self.model_info, ("source",))
        _check_projections(self.projections)
        _check_attention(self.attention, self.attention_labels)


def render_report(
    data: ReportData,
    path: str | Path,
    *,
    max_points: int = 2000,
    max_attention_pairs: int = 8,
    seed: int = 0,
) -> Path:
    """Write ``data`` as one self-contained HTML file and return its path.

    Args:
        data: what to show.
        path: the HTML file to write; parent directories are created. The file
            is written next to its final place and renamed, so a reader never
            sees half a report.
        max_points: embeddings per source drawn in the projections; larger
            samples are subsampled uniformly with ``seed``.
        max_attention_pairs: layer/head pairs drawn; the ones whose attention
            changed most between the first and last state come first.
        seed: random seed of the subsample, t-SNE and UMAP.

    Returns:
        The path written.
    """
    if max_points < 1:
        raise ValueError(f"max_points must be at least 1, got {max_points}")
    if max_attention_pairs < 1:
        raise ValueError(f"max_attention_pairs must be at least 1, got {max_attention_pairs}")
    started = time.perf_counter()
    colors = _source_colors(data)
    renderers: dict[str, Callable[[], str]] = {
        "summary": lambda: _summary_section(data.summary),
        "model-comparison": lambda: _model_comparison_section(data.metrics, data.default_classifier, colors),
        "decile-lift": lambda: _decile_section(data.decile_lift, data.default_classifier, colors),
        "classifier-comparison": lambda: _classifier_comparison_section(data.classifier_comparison),
        "models": lambda: _models_section(data.model_info),
        "projections": lambda: _projections_section(data.projections, max_points=max_points, seed=seed),
        "attention": lambda: _attention_section(
            data.attention, data.attention_labels, max_pairs=max_attention_pairs
        ),
        "notes": lambda: _notes_section(data.notes),
    }
    sections = []
    for key, heading in SECTIONS:
        section_started = time.perf_counter()
        body = renderers[key]()
        log.info("report section %s rendered in %.1f s", key, time.perf_counter() - section_started)
        sections.append(
            f'<section id="{key}" data-section="{key}">\n<h2>{html.escape(heading)}</h2>\n{body}\n</section>'
        )
    page = _page(data, sections)
    target = Path(path)
    _write_atomically(target, page)
    log.info(
        "wrote report %s (%.0f KiB) in %.1f s",
        target, len(page.encode("utf-8")) / 1024, time.perf_counter() - started,
    )
    return target


# ---------------------------------------------------------------- validation


def _check_frame(name: str, frame: pd.DataFrame | None, required: Sequence[str]) -> None:
    if frame is None:
        return
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"ReportData.{name} must be a pandas DataFrame or None, got {type(frame).__name__}")
    if frame.empty:
        return
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise ValueError(
            f"ReportData.{name} lacks column(s) {missing}; it has {list(frame.columns)}"
        )


def _check_projections(projections: Mapping[str, tuple[np.ndarray, np.ndarray]] | None) -> None:
    for source, pair in (projections or {}).items():
        if len(pair) != 2:
            raise ValueError(
                f"ReportData.projections[{source!r}] must be (embeddings, is_buyer), got {len(pair)} items"
            )
        embeddings, is_buyer = (np.asarray(part) for part in pair)
        if embeddings.ndim != 2:
            raise ValueError(
                f"ReportData.projections[{source!r}] embeddings must be [n, H], got shape {embeddings.shape}"
            )
        if is_buyer.shape != (embeddings.shape[0],):
            raise ValueError(
                f"ReportData.projections[{source!r}] is_buyer must have shape ({embeddings.shape[0]},) "
                f"to match the embeddings, got {is_buyer.shape}"
            )


def _check_attention(
    attention: Mapping[str, Mapping[str, np.ndarray]] | None, labels: Sequence[str] | None
) -> None:
    for state, maps in (attention or {}).items():
        for key, matrix in maps.items():
            shape = np.shape(matrix)
            if len(shape) != 2 or shape[0] != shape[1]:
                raise ValueError(
                    f"ReportData.attention[{state!r}][{key!r}] must be a square [K, K] matrix, got {shape}"
                )
            if labels is not None and len(labels) and shape[0] != len(labels):
                raise ValueError(
                    f"ReportData.attention[{state!r}][{key!r}] is {shape} but attention_labels has "
                    f"{len(labels)} names: {list(labels)}"
                )


# ---------------------------------------------------------------- page and HTML helpers


def _page(data: ReportData, sections: Sequence[str]) -> str:
    meta = []
    if data.run_date:
        meta.append(f"run date {html.escape(data.run_date)}")
    if data.generated_at:
        meta.append(f"generated {html.escape(data.generated_at)}")
    nav = "".join(f'<li><a href="#{key}">{html.escape(heading)}</a></li>' for key, heading in SECTIONS)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(data.title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<header>\n<h1>{html.escape(data.title)}</h1>\n"
        f'<p class="meta">{" · ".join(meta)}</p>\n</header>\n'
        f'<nav aria-label="Sections"><ul>{nav}</ul></nav>\n'
        + "\n".join(sections)
        + "\n<footer>Self-contained report written by custembed: no network access needed to view it.</footer>\n"
        "</body>\n</html>\n"
    )


def _write_atomically(target: Path, text: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # not tempfile.mkstemp: its 0600 mode would hide the report from the analysts' group
    temporary = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with temporary.open("x", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _not_available(reason: str) -> str:
    return f'<p class="na">not available: {html.escape(reason)}</p>'


def _paragraph(text: str) -> str:
    return f"<p>{html.escape(text)}</p>"


def _cell(text: str, *, header: bool = False, numeric: bool = False, bold: bool = False,
          colspan: int = 1, rowspan: int = 1, scope: str | None = None) -> str:
    tag = "th" if header else "td"
    attributes = ""
    if numeric and not header:
        attributes += ' class="num"'
    if colspan > 1:
        attributes += f' colspan="{colspan}"'
    if rowspan > 1:
        attributes += f' rowspan="{rowspan}"'
    if scope:
        attributes += f' scope="{scope}"'
    content = html.escape(text)
    if bold:
        content = f"<strong>{content}</strong>"
    return f"<{tag}{attributes}>{content}</{tag}>"


def _table(head_rows: Sequence[Sequence[str]], body_rows: Sequence[tuple[Sequence[str], str]],
           caption: str | None = None) -> str:
    """Rows are lists of already built cells; body rows carry a CSS class ("" for none)."""
    parts = ["<table>"]
    if caption:
        parts.append(f"<caption>{html.escape(caption)}</caption>")
    parts.append("<thead>" + "".join(f"<tr>{''.join(row)}</tr>" for row in head_rows) + "</thead>")
    body = []
    for cells, css_class in body_rows:
        class_attribute = f' class="{css_class}"' if css_class else ""
        body.append(f"<tr{class_attribute}>{''.join(cells)}</tr>")
    parts.append("<tbody>" + "".join(body) + "</tbody></table>")
    return "".join(parts)


def _as_float(value: object) -> float:
    """A finite float or NaN (None, text and infinities become NaN)."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
    return number if math.isfinite(number) else math.nan


def _fmt(value: object, digits: int) -> str:
    number = _as_float(value)
    return MISSING if math.isnan(number) else f"{number:.{digits}f}"


def _fmt_count(value: object) -> str:
    number = _as_float(value)
    return MISSING if math.isnan(number) else f"{int(round(number)):,}"


def _fmt_parameters(value: object) -> str:
    number = _as_float(value)
    if math.isnan(number):
        return MISSING
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if number >= scale:
            return f"{number / scale:.1f} {suffix} ({int(number):,})"
    return f"{int(number):,}"


def _fmt_duration(value: object) -> str:
    seconds = _as_float(value)
    if math.isnan(seconds):
        return MISSING
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _fmt_rate(value: object) -> str:
    number = _as_float(value)
    return MISSING if math.isnan(number) else f"{number:,.0f}/s"


def _best_flags(values: Sequence[float], digits: int) -> list[bool]:
    """Which values tie for the highest as shown (rounded to ``digits``).

    Nothing is marked when fewer than two values are known or all shown values are equal.
    """
    shown = [round(value, digits) for value in values]
    known = [value for value in shown if not math.isnan(value)]
    if len(known) < 2 or min(known) == max(known):
        return [False] * len(values)
    best = max(known)
    return [not math.isnan(value) and value == best for value in shown]


def _natural_key(text: str) -> list[object]:
    """Sort "layer 10" after "layer 2"."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def _in_order(values: pd.Series) -> list[str]:
    """Distinct values as text, in order of first appearance."""
    return [str(value) for value in pd.unique(values.astype(str))]


def _source_colors(data: ReportData) -> dict[str, str]:
    """One colour per embedding source, the same in every figure."""
    sources: list[str] = []
    for frame in (data.metrics, data.decile_lift, data.model_info):
        if frame is not None and not frame.empty:
            sources += [source for source in _in_order(frame["source"]) if source not in sources]
    palette = [f"C{index}" for index in range(10)]
    return {source: palette[index % len(palette)] for index, source in enumerate(sources)}


def _figure_html(figure: Figure, *, alt: str, caption: str) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", facecolor="white")
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (
        f'<figure>\n<img src="data:image/png;base64,{encoded}" alt="{html.escape(alt)}">\n'
        f"<figcaption>{html.escape(caption)}</figcaption>\n</figure>"
    )


def _frame_or_reason(frame: pd.DataFrame | None, what: str) -> tuple[pd.DataFrame | None, str]:
    if frame is None:
        return None, f"no {what} were given"
    if frame.empty:
        return None, f"the {what} table is empty"
    return frame, ""


def _for_classifier(frame: pd.DataFrame, classifier: str, what: str,
                    keys: Sequence[str]) -> tuple[pd.DataFrame | None, str]:
    chosen = frame[frame["classifier"].astype(str) == classifier]
    if chosen.empty:
        present = ", ".join(_in_order(frame["classifier"]))
        return None, f"no {what} rows for the default classifier {classifier!r} (present: {present})"
    chosen = chosen.assign(source=chosen["source"].astype(str), product=chosen["product"].astype(str))
    duplicated = chosen.duplicated(list(keys), keep="last")
    if duplicated.any():
        log.warning("report: %d duplicate %s rows for %s; keeping the last of each",
                    int(duplicated.sum()), what, list(keys))
        chosen = chosen[~duplicated]
    return chosen, ""


# ---------------------------------------------------------------- sections


def _summary_section(summary: Mapping[str, object] | None) -> str:
    if not summary:
        return _not_available("no run summary was given")
    rows = [([_cell(str(key), header=True, scope="row"), _cell(str(value))], "") for key, value in summary.items()]
    return _table([], rows)


_COMPARISON_METRICS: tuple[tuple[str, str, int], ...] = (
    ("auc", "AUC", 3),
    ("f1", "F1", 3),
    ("top10_lift", "Top-10 % lift", 2),
)


def _model_comparison_section(metrics: pd.DataFrame | None, classifier: str, colors: Mapping[str, str]) -> str:
    frame, reason = _frame_or_reason(metrics, "model metrics")
    if frame is None:
        return _not_available(reason)
    chosen, reason = _for_classifier(frame, classifier, "model metrics", ("source", "product"))
    if chosen is None:
        return _not_available(reason)
    sources = _in_order(chosen["source"])
    products = _in_order(chosen["product"])
    indexed = chosen.set_index(["product", "source"])

    head = [
        [_cell("product", header=True, rowspan=2), _cell("test rows", header=True, rowspan=2),
         _cell("buyers", header=True, rowspan=2)]
        + [_cell(label, header=True, colspan=len(sources)) for _, label, _ in _COMPARISON_METRICS],
        [_cell(source, header=True) for _ in _COMPARISON_METRICS for source in sources],
    ]
    body: list[tuple[list[str], str]] = []
    for product in products:
        product_rows = chosen[chosen["product"] == product]
        cells = [_cell(product, header=True, scope="row"),
                 _cell(_count_range(product_rows["rows"]), numeric=True),
                 _cell(_count_range(product_rows["positives"]), numeric=True)]
        for column, _, digits in _COMPARISON_METRICS:
            values = [_as_float(indexed[column].get((product, source), math.nan)) for source in sources]
            for value, best in zip(values, _best_flags(values, digits), strict=True):
                cells.append(_cell(_fmt(value, digits), numeric=True, bold=best))
        body.append((cells, ""))

    incomplete = False
    mean_cells = [_cell("mean over products", header=True, scope="row"), _cell(""), _cell("")]
    for column, _, digits in _COMPARISON_METRICS:
        table = chosen.pivot(index="product", columns="source", values=column).reindex(index=products, columns=sources)
        table = table.apply(pd.to_numeric, errors="coerce").replace([np.inf, -np.inf], np.nan)
        means = [_as_float(table[source].mean()) for source in sources]
        counts = [int(table[source].notna().sum()) for source in sources]
        for value, best, count in zip(means, _best_flags(means, digits), counts, strict=True):
            marker = "*" if 0 < count < len(products) else ""
            incomplete |= bool(marker)
            mean_cells.append(_cell(_fmt(value, digits) + marker, numeric=True, bold=best))
    body.append((mean_cells, "mean"))

    caption = (f"Classifier {classifier}, test set at the natural buying rate. "
               "Best value per product in bold (higher is better for all three).")
    parts = [_table(head, body, caption=caption)]
    if incomplete:
        parts.append(_paragraph("* mean over the products that have a value for this source only; "
                                "not comparable with the other means."))
    parts.append(_messages(chosen))
    parts.append(_lift_bar_chart(chosen, products, sources, classifier, colors))
    return "\n".join(part for part in parts if part)


def _count_range(values: pd.Series) -> str:
    numbers = pd.to_numeric(values, errors="coerce").dropna()
    if numbers.empty:
        return MISSING
    low, high = numbers.min(), numbers.max()
    return _fmt_count(low) if low == high else f"{_fmt_count(low)}–{_fmt_count(high)}"


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
    return "<p>Messages from the scoring job:</p><ul class=\"messages\">" + "".join(items) + "</ul>"


def _grouped_bars(axes: Axes, groups: Sequence[str], series: Mapping[str, Sequence[float]],
                  colors: Mapping[str, str]) -> None:
    """One bar group per entry of ``groups``, one bar per series; a dashed line at lift 1."""
    positions = np.arange(len(groups))
    width = 0.8 / max(len(series), 1)
    for index, (name, values) in enumerate(series.items()):
        offsets = positions + (index - (len(series) - 1) / 2) * width
        axes.bar(offsets, np.asarray(values, dtype=float), width, label=name, color=colors.get(name))
    axes.axhline(1.0, linestyle="--", color="0.3", linewidth=1)
    axes.grid(axis="y", alpha=0.3)
    axes.set_axisbelow(True)


def _lift_bar_chart(chosen: pd.DataFrame, products: Sequence[str], sources: Sequence[str], classifier: str,
                    colors: Mapping[str, str]) -> str:
    lift = chosen.pivot(index="product", columns="source", values="top10_lift").reindex(index=products, columns=sources)
    lift = lift.apply(pd.to_numeric, errors="coerce")
    if lift.isna().all().all():
        return _not_available("no top-10 % lift values to draw")
    figure = Figure(figsize=(max(5.0, 0.55 * len(products) * max(len(sources), 2) + 1.5), 3.2), layout="constrained")
    axes = figure.add_subplot()
    _grouped_bars(axes, products, {source: lift[source].tolist() for source in sources}, colors)
    rotate = len(products) > 4
    axes.set_xticks(np.arange(len(products)), products,
                    rotation=30 if rotate else 0, ha="right" if rotate else "center")
    axes.set_ylabel("top-10 % lift")
    axes.set_title(f"Top-10 % lift per product ({classifier})")
    axes.legend(title="embedding source", fontsize="small", title_fontsize="small")
    return _figure_html(
        figure,
        alt=f"Grouped bar chart of top-10 % lift for {len(products)} products and the sources {', '.join(sources)}",
        caption=("Top-10 % lift: buying rate among the 10 % of customers with the highest scores divided by the "
                 "overall buying rate. The dashed line is lift 1 (no better than random)."),
    )


def _decile_section(decile_lift: pd.DataFrame | None, classifier: str, colors: Mapping[str, str]) -> str:
    frame, reason = _frame_or_reason(decile_lift, "decile lift rows")
    if frame is None:
        return _not_available(reason)
    chosen, reason = _for_classifier(frame, classifier, "decile lift", ("source", "product", "decile"))
    if chosen is None:
        return _not_available(reason)
    chosen = chosen.assign(decile=pd.to_numeric(chosen["decile"], errors="coerce")).dropna(subset=["decile"])
    chosen = chosen.assign(decile=chosen["decile"].astype(int))
    sources = _in_order(chosen["source"])
    products = _in_order(chosen["product"])
    deciles = sorted(chosen["decile"].unique().tolist())
    parts = []
    chunks = [products[start:start + _MAX_PANELS_PER_FIGURE]
              for start in range(0, len(products), _MAX_PANELS_PER_FIGURE)]
    for chunk_index, chunk in enumerate(chunks):
        columns = min(4, len(chunk))
        rows = math.ceil(len(chunk) / columns)
        figure = Figure(figsize=(3.3 * columns, 2.5 * rows + 0.4), layout="constrained")
        grid = figure.subplots(rows, columns, squeeze=False)
        for index, axes in enumerate(grid.flat):
            if index >= len(chunk):
                axes.set_visible(False)
                continue
            product = chunk[index]
            lift = (chosen[chosen["product"] == product]
                    .pivot(index="decile", columns="source", values="lift")
                    .reindex(index=deciles, columns=sources)
                    .apply(pd.to_numeric, errors="coerce"))
            _grouped_bars(axes, [str(decile) for decile in deciles],
                          {source: lift[source].tolist() for source in sources}, colors)
            axes.set_xticks(np.arange(len(deciles)), [str(decile) for decile in deciles], fontsize="small")
            axes.set_title(product, fontsize="medium")
            if index % columns == 0:
                axes.set_ylabel("lift")
            if index // columns == rows - 1 or index + columns >= len(chunk):
                axes.set_xlabel("decile (1 = top 10 %)", fontsize="small")
        handles, labels = grid.flat[0].get_legend_handles_labels()
        figure.legend(handles, labels, loc="outside upper center", ncols=max(len(sources), 1),
                      fontsize="small", title="embedding source", title_fontsize="small")
        part = "" if len(chunks) == 1 else f" (part {chunk_index + 1} of {len(chunks)})"
        parts.append(_figure_html(
            figure,
            alt=f"Lift by decile for the products {', '.join(chunk)}, one bar per embedding source{part}",
            caption=(f"Lift per score decile{part}, classifier {classifier}: buying rate in the decile divided by "
                     "the overall buying rate; decile 1 holds the 10 % of customers with the highest scores. "
                     "Dashed line: lift 1."),
        ))
    parts.append(_decile_tables(chosen, products, sources))
    return "\n".join(parts)


def _decile_tables(chosen: pd.DataFrame, products: Sequence[str], sources: Sequence[str]) -> str:
    tables = []
    for product in products:
        rows = chosen[chosen["product"] == product]
        head = [
            [_cell("decile", header=True, rowspan=2),
             _cell("customers", header=True, colspan=len(sources)),
             _cell("buyers", header=True, colspan=len(sources)),
             _cell("buy rate", header=True, colspan=len(sources)),
             _cell("lift", header=True, colspan=len(sources)),
             _cell("cumulative lift", header=True, colspan=len(sources))],
            [_cell(source, header=True) for _ in range(5) for source in sources],
        ]
        indexed = rows.set_index(["decile", "source"])
        body = []
        for decile in sorted(rows["decile"].unique().tolist()):
            cells = [_cell(str(decile), header=True, scope="row")]
            for column, formatter in (("customers", _fmt_count), ("buyers", _fmt_count),
                                      ("buy_rate", lambda value: _fmt(value, 4)),
                                      ("lift", lambda value: _fmt(value, 2)),
                                      ("cumulative_lift", lambda value: _fmt(value, 2))):
                for source in sources:
                    cells.append(_cell(formatter(indexed[column].get((decile, source), math.nan)), numeric=True))
            body.append((cells, ""))
        tables.append(_table(head, body, caption=product))
    return f"<details><summary>Decile tables ({len(products)} products)</summary>{''.join(tables)}</details>"


_CLASSIFIER_METRICS: tuple[tuple[str, str, int], ...] = (
    ("accuracy", "accuracy", 3),
    ("precision", "precision", 3),
    ("recall", "recall", 3),
    ("f1", "F1", 3),
    ("auc", "AUC", 3),
    ("top10_lift", "top-10 % lift", 2),
)


def _classifier_comparison_section(comparison: pd.DataFrame | None) -> str:
    frame, reason = _frame_or_reason(comparison, "classifier comparison rows")
    if frame is None:
        return _not_available(reason)
    frame = frame.assign(source=frame["source"].astype(str), product=frame["product"].astype(str),
                         classifier=frame["classifier"].astype(str))
    parts = []
    for (product, source), rows in frame.groupby(["product", "source"], sort=False):
        head = [[_cell("classifier", header=True), _cell("test rows", header=True), _cell("buyers", header=True)]
                + [_cell(label, header=True) for _, label, _ in _CLASSIFIER_METRICS]]
        columns = {column: [_as_float(value) for value in rows[column]] for column, _, _ in _CLASSIFIER_METRICS}
        flags = {column: _best_flags(columns[column], digits) for column, _, digits in _CLASSIFIER_METRICS}
        body = []
        for position, record in enumerate(rows.itertuples(index=False)):
            cells = [_cell(record.classifier, header=True, scope="row"),
                     _cell(_fmt_count(record.rows), numeric=True), _cell(_fmt_count(record.positives), numeric=True)]
            for column, _, digits in _CLASSIFIER_METRICS:
                cells.append(_cell(_fmt(columns[column][position], digits), numeric=True,
                                   bold=flags[column][position]))
            body.append((cells, ""))
        caption = (f"Product {product}, embedding source {source}: classifiers on the same embeddings and test set. "
                   "Best value per column in bold.")
        parts.append(_table(head, body, caption=caption))
        parts.append(_messages(rows))
    return "\n".join(part for part in parts if part)


_MODEL_COLUMNS: tuple[tuple[str, str, Callable[[object], str]], ...] = (
    ("parameters", "parameters", _fmt_parameters),
    ("hidden_size", "hidden size", _fmt_count),
    ("train_seconds", "training time", _fmt_duration),
    ("embed_customers_per_s", "embedding throughput (customers/s)", _fmt_rate),
    ("val_loss", "validation loss", lambda value: _fmt(value, 4)),
    ("val_accuracy", "validation accuracy", lambda value: _fmt(value, 4)),
    ("hr_at_10", "HR@10", lambda value: _fmt(value, 4)),
    ("ndcg_at_10", "NDCG@10", lambda value: _fmt(value, 4)),
)


def _models_section(model_info: pd.DataFrame | None) -> str:
    frame, reason = _frame_or_reason(model_info, "model details")
    if frame is None:
        return _not_available(reason)
    head = [[_cell("embedding source", header=True)] + [_cell(label, header=True) for _, label, _ in _MODEL_COLUMNS]]
    body = []
    for _, record in frame.iterrows():
        cells = [_cell(str(record["source"]), header=True, scope="row")]
        for column, _, formatter in _MODEL_COLUMNS:
            cells.append(_cell(formatter(record[column]) if column in frame.columns else MISSING, numeric=True))
        body.append((cells, ""))
    absent = [label for column, label, _ in _MODEL_COLUMNS if column not in frame.columns]
    parts = [_table(head, body, caption="Model size, training time, inference throughput and validation metrics; "
                                       f"{MISSING} where not measured.")]
    if absent:
        parts.append(_paragraph(f"Not recorded for any model: {', '.join(absent)}."))
    return "\n".join(parts)


def _projections_section(projections: Mapping[str, tuple[np.ndarray, np.ndarray]] | None, *,
                         max_points: int, seed: int) -> str:
    if not projections:
        return _not_available("no embedding samples were given")
    umap_module, umap_reason = _import_umap()
    parts = []
    if umap_module is None:
        parts.append(_not_available(f"UMAP projections: {umap_reason}"))
    for source, (embeddings, is_buyer) in projections.items():
        parts.append(f"<h3>{html.escape(str(source))}</h3>")
        parts.append(_projection_figure(str(source), embeddings, is_buyer, umap_module,
                                        max_points=max_points, seed=seed))
    return "\n".join(parts)


def _import_umap() -> tuple[ModuleType | None, str]:
    try:
        with warnings.catch_warnings():
            # umap / numba announce optional dependencies at import time
            warnings.simplefilter("ignore")
            import umap
    except ImportError as error:
        return None, f"umap-learn could not be imported ({error}); install the 'report' extra"
    return umap, ""


def _projection_figure(source: str, embeddings: np.ndarray, is_buyer: np.ndarray, umap_module: ModuleType | None,
                       *, max_points: int, seed: int) -> str:
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    points = np.asarray(embeddings, dtype=np.float64)  # [n, H]
    buyers = np.asarray(is_buyer).astype(bool)  # [n]
    finite = np.isfinite(points).all(axis=1)
    dropped = int((~finite).sum())
    if dropped:
        log.warning("report: %d embeddings of %s with NaN/inf values left out of the projections", dropped, source)
    points, buyers = points[finite], buyers[finite]
    total = len(points)
    if total < 3 or points.shape[1] < 2:
        return _not_available(f"{source}: {total} usable embeddings of width {points.shape[1]}; "
                              "a projection needs at least 3 of width 2")
    if total > max_points:
        chosen = np.sort(np.random.default_rng(seed).choice(total, size=max_points, replace=False))
        points, buyers = points[chosen], buyers[chosen]
    count, width = points.shape

    pca = PCA(n_components=2, random_state=seed)
    projected: dict[str, np.ndarray | str] = {}
    projected["PCA"] = pca.fit_transform(points)  # [n, 2]
    explained = pca.explained_variance_ratio_
    titles = {"PCA": f"PCA ({explained[0]:.0%} + {explained[1]:.0%} of variance)", "t-SNE": "t-SNE", "UMAP": "UMAP"}
    reduced = points
    if width > _PCA_BEFORE_NONLINEAR and count > _PCA_BEFORE_NONLINEAR:
        reduced = PCA(n_components=_PCA_BEFORE_NONLINEAR, random_state=seed).fit_transform(points)
    if count < _MIN_POINTS_NONLINEAR:
        projected["t-SNE"] = f"too few points ({count})"
    else:
        started = time.perf_counter()
        perplexity = max(1.0, min(30.0, (count - 1) / 3))
        # 500 iterations (250 of them early exaggeration) settle the picture; sklearn's 1000 cost 3-5x the time
        projected["t-SNE"] = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto",
                                  max_iter=_TSNE_ITERATIONS, random_state=seed).fit_transform(reduced)
        log.info("report: t-SNE of %d %s embeddings in %.1f s", count, source, time.perf_counter() - started)
    if umap_module is not None:
        if count < _MIN_POINTS_NONLINEAR:
            projected["UMAP"] = f"too few points ({count})"
        else:
            started = time.perf_counter()
            reducer = umap_module.UMAP(n_components=2, n_neighbors=min(15, count - 1), min_dist=0.1,
                                       random_state=seed, n_jobs=1)
            projected["UMAP"] = reducer.fit_transform(reduced)
            log.info("report: UMAP of %d %s embeddings in %.1f s", count, source, time.perf_counter() - started)

    figure = Figure(figsize=(3.6 * len(projected), 3.5), layout="constrained")
    grid = figure.subplots(1, len(projected), squeeze=False)
    buyer_count = int(buyers.sum())
    for axes, (method, coordinates) in zip(grid.flat, projected.items(), strict=True):
        axes.set_title(titles[method], fontsize="medium")
        axes.set_xticks([])
        axes.set_yticks([])
        if isinstance(coordinates, str):
            axes.text(0.5, 0.5, coordinates, ha="center", va="center", transform=axes.transAxes, color="0.4")
            continue
        # buyers are rare: draw them last so non-buyers never hide them
        axes.scatter(coordinates[~buyers, 0], coordinates[~buyers, 1], s=6, color=_NON_BUYER_COLOR, alpha=0.45,
                     linewidths=0, label=f"non-buyer ({count - buyer_count:,})")
        axes.scatter(coordinates[buyers, 0], coordinates[buyers, 1], s=16, color=_BUYER_COLOR, alpha=0.9,
                     linewidths=0, label=f"buyer ({buyer_count:,})")
    grid.flat[0].legend(fontsize="small", loc="best", markerscale=1.5)
    sample = (f"{count:,} of {total:,} customers (uniform random sample, seed {seed})" if total > count
              else f"all {count:,} customers given")
    notes = []
    if width > _PCA_BEFORE_NONLINEAR and count > _PCA_BEFORE_NONLINEAR:
        notes.append(f"t-SNE and UMAP run on the first {_PCA_BEFORE_NONLINEAR} principal components")
    if dropped:
        notes.append(f"{dropped:,} embeddings with NaN/inf values left out")
    caption = (f"{source}: 2-D projections of {width}-dimensional embeddings, {sample}; "
               f"{buyer_count:,} buyers in red drawn over non-buyers in grey."
               + (" " + "; ".join(notes) + "." if notes else ""))
    methods = ", ".join(projected)
    return _figure_html(figure, alt=f"{methods} scatter plots of {source} embeddings, buyers vs non-buyers",
                        caption=caption)


def _attention_section(attention: Mapping[str, Mapping[str, np.ndarray]] | None,
                       labels: Sequence[str] | None, *, max_pairs: int) -> str:
    states = [str(state) for state, maps in (attention or {}).items() if maps]
    if attention is None or not states:
        return _not_available("no attention maps were given")
    maps = {str(state): {str(key): np.asarray(matrix, dtype=np.float64) for key, matrix in attention[state].items()}
            for state in attention if attention[state]}
    all_keys = sorted({key for state_maps in maps.values() for key in state_maps}, key=_natural_key)
    common = [key for key in all_keys if all(key in maps[state] for state in states)]
    if not common:
        return _not_available(f"no layer/head appears in every state ({', '.join(states)})")
    size = maps[states[0]][common[0]].shape[0]
    names = list(labels) if labels else [str(index) for index in range(size)]
    before, after = states[0], states[-1]
    compared = len(states) > 1
    change = {key: float(np.nanmean(np.abs(maps[after][key] - maps[before][key]))) if compared else 0.0
              for key in common}
    shown = sorted(common, key=lambda key: -change[key])[:max_pairs] if compared else common[:max_pairs]

    parts = []
    if compared:
        parts.append(_paragraph(
            f"Mean attention between behaviour types, {before} vs {after}. Showing {len(shown)} of {len(common)} "
            f"layer/head pairs, those whose attention changed most ({after} − {before}, mean absolute "
            "difference) first."))
    else:
        parts.append(_paragraph(f"Mean attention between behaviour types ({before}); only one state given, so "
                                f"there is no difference to show. Showing {len(shown)} of {len(common)} "
                                "layer/head pairs."))
    partial = [key for key in all_keys if key not in common]
    if partial:
        parts.append(_paragraph(f"Left out, not present in every state: {', '.join(partial)}."))
    if compared:
        overview = _attention_overview(change, before, after)
        if overview:
            parts.append(overview)
    for key in shown:
        parts.append(f"<h3>{html.escape(key)}</h3>")
        parts.append(_attention_figure(key, [(state, maps[state][key]) for state in states], names, compared,
                                       change.get(key, 0.0)))
    return "\n".join(parts)


def _attention_overview(change: Mapping[str, float], before: str, after: str) -> str:
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
        _annotate_cells(axes, grid, "{:.3f}", lambda value: value / top > 0.55)
    axes.set_xticks(np.arange(len(heads)), [str(head) for head in heads])
    axes.set_yticks(np.arange(len(layers)), [str(layer) for layer in layers])
    axes.set_xlabel("head")
    axes.set_ylabel("layer")
    figure.colorbar(image, ax=axes, label="mean |Δ|")
    return _figure_html(
        figure,
        alt=(f"Heat map of the mean absolute attention change per layer and head, "
             f"{len(layers)} layers by {len(heads)} heads"),
        caption=f"Mean absolute change of the attention between behaviour types, {after} − {before}, "
                "for every layer and head.",
    )


def _attention_figure(key: str, states: Sequence[tuple[str, np.ndarray]], names: Sequence[str], compared: bool,
                      change: float) -> str:
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
    annotate = size <= _ANNOTATE_MAX_LABELS
    images = []
    for axes, (state, matrix) in zip(axes_list[:len(states)], states, strict=True):
        images.append(axes.imshow(matrix, cmap="viridis", vmin=low, vmax=high))
        _label_heat_map(axes, names, state)
        if annotate:
            # viridis is dark at the low end: white text there
            _annotate_cells(axes, matrix, "{:.2f}", lambda value: (value - low) / (high - low) < 0.45)
    figure.colorbar(images[-1], ax=axes_list[:len(states)], shrink=0.8, label="mean attention")
    if compared:
        difference = states[-1][1] - states[0][1]
        limit = float(np.nanmax(np.abs(difference))) or 1e-9
        axes = axes_list[-1]
        diff_image = axes.imshow(difference, cmap="RdBu_r", vmin=-limit, vmax=limit)
        _label_heat_map(axes, names, f"{states[-1][0]} − {states[0][0]}")
        if annotate:
            # RdBu is dark at both ends
            _annotate_cells(axes, difference, "{:+.2f}", lambda value: abs(value) / limit > 0.6)
        figure.colorbar(diff_image, ax=axes, shrink=0.8, label="difference")
    state_names = " and ".join(state for state, _ in states)
    caption = (f"{key}: mean attention from the behaviour type of the row (query) to the behaviour type of the "
               f"column (key), {state_names}"
               + (f"; right: the difference, mean |Δ| = {change:.4f}." if compared else "."))
    return _figure_html(figure, alt=f"Attention heat maps for {key}: {state_names}"
                        + (", and their difference" if compared else ""), caption=caption)


def _label_heat_map(axes: Axes, names: Sequence[str], title: str) -> None:
    axes.set_title(title, fontsize="medium")
    axes.set_xticks(np.arange(len(names)), names, rotation=45, ha="right", fontsize="small")
    axes.set_yticks(np.arange(len(names)), names, fontsize="small")


def _annotate_cells(axes: Axes, values: np.ndarray, template: str, dark: Callable[[float], bool]) -> None:
    for row in range(values.shape[0]):
        for column in range(values.shape[1]):
            value = float(values[row, column])
            if math.isfinite(value):
                axes.text(column, row, template.format(value), ha="center", va="center", fontsize=6.5,
                          color="white" if dark(value) else "black")


def _notes_section(notes: Sequence[str] | None) -> str:
    lines = [str(note) for note in (notes or []) if str(note).strip()]
    if not lines:
        return _not_available("no notes were given")
    return '<ul class="notes">' + "".join(f"<li>{html.escape(line)}</li>" for line in lines) + "</ul>"

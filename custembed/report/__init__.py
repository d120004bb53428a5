"""Self-contained HTML report of a run: what analysts look at after step 3.

``render_report(data, path)`` writes one HTML file that needs no network to be
viewed: every figure is an inline base64 PNG drawn by matplotlib's Agg
renderer, the CSS is inline, and there is no JavaScript, no external font and
no external link. A Content-Security-Policy in the page forbids anything else,
so a stray external reference would show up as a blocked load, not a leak.

The input is :class:`ReportData`, plain pandas / numpy values already brought
to the driver by the caller (small aggregates: metric rows, decile tables, an
embedding sample of at most a few thousand rows). This package never imports
pyspark. Any input may be ``None`` or empty: its section then says
"not available: <reason>" instead of failing.

Layout: :mod:`.data` (what is shown, checked), :mod:`.sections` (one function
per section), :mod:`.figures` (matplotlib), :mod:`.markup` (HTML helpers). The
computation behind the figures lives outside, for the notebooks too:
:mod:`custembed.comparison` (the model comparison) and
:mod:`custembed.projections` (PCA / t-SNE / UMAP).

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
* ``training-curves``: per encoder trained for the run, training loss per step and the
  validation figures per epoch from its MLflow run, the kept weights marked.
* ``projections``: PCA, t-SNE and UMAP of an embedding sample per source,
  buyers vs non-buyers.
* ``attention``: mean attention between behaviour types per layer and head,
  before and after fine-tuning, and the difference.
* ``notes``: free text.
"""

from __future__ import annotations

import html
import logging
import time
from collections.abc import Callable
from pathlib import Path

from custembed import lakefs
from custembed.report.data import (
    DECILE_COLUMNS,
    METRIC_COLUMNS,
    METRIC_OPTIONAL_COLUMNS,
    MODEL_INFO_COLUMNS,
    ReportData,
    TrainingHistory,
)
from custembed.report.journeys import journeys_body
from custembed.report.markup import render_page
from custembed.report.sections import (
    attention_section,
    classifier_comparison_section,
    decile_section,
    model_comparison_section,
    models_section,
    nextitem_section,
    notes_section,
    probes_section,
    projections_section,
    segments_section,
    source_colors,
    summary_section,
    training_curves_section,
)

__all__ = [
    "DECILE_COLUMNS",
    "METRIC_COLUMNS",
    "METRIC_OPTIONAL_COLUMNS",
    "MODEL_INFO_COLUMNS",
    "SECTIONS",
    "ReportData",
    "TrainingHistory",
    "render_report",
]

log = logging.getLogger(__name__)

SECTIONS: tuple[tuple[str, str], ...] = (
    ("summary", "Run summary"),
    ("model-comparison", "Model comparison"),
    ("decile-lift", "Decile lift"),
    ("probes", "Representation probes"),
    ("classifier-comparison", "Classifier comparison"),
    ("models", "Models"),
    ("training-curves", "Training curves"),
    ("projections", "Embedding projections"),
    ("attention", "Attention between behaviour types"),
    ("segments", "Customer segments"),
    ("next-item", "Next-item recommendation"),
    ("journeys", "In-store journeys (system B)"),
    ("notes", "Notes"),
)


def render_report(
    data: ReportData,
    path: str | Path,
    *,
    max_points: int = 2000,
    max_attention_pairs: int = 8,
    seed: int = 0,
) -> str:
    """Write ``data`` as one self-contained HTML file and return its URI.

    Args:
        data: what to show.
        path: the HTML file to write, a local path or a lake URI
            (:mod:`custembed.lakefs`); parent directories are created. On a local
            disk the file is written next to its final place and renamed, so a
            reader never sees half a report.
        max_points: embeddings per source drawn in the projections; larger
            samples are subsampled uniformly with ``seed``.
        max_attention_pairs: layer/head pairs drawn; the ones whose attention
            changed most between the first and last state come first.
        seed: random seed of the subsample, t-SNE and UMAP.

    Returns:
        The URI written (``file:///…`` for a local path).
    """
    if max_points < 1:
        raise ValueError(f"max_points must be at least 1, got {max_points}")
    if max_attention_pairs < 1:
        raise ValueError(f"max_attention_pairs must be at least 1, got {max_attention_pairs}")
    started = time.perf_counter()
    colors = source_colors(data)
    renderers: dict[str, Callable[[], str]] = {
        "summary": lambda: summary_section(data.summary),
        "model-comparison": lambda: model_comparison_section(data.metrics, data.default_classifier, colors),
        "decile-lift": lambda: decile_section(data.decile_lift, data.default_classifier, colors),
        "probes": lambda: probes_section(data.probes),
        "classifier-comparison": lambda: classifier_comparison_section(data.classifier_comparison),
        "models": lambda: models_section(data.model_info),
        "training-curves": lambda: training_curves_section(data.training_histories),
        "projections": lambda: projections_section(data.projections, max_points=max_points, seed=seed),
        "attention": lambda: attention_section(data.attention, data.attention_labels, max_pairs=max_attention_pairs),
        "segments": lambda: segments_section(data.segments),
        "next-item": lambda: nextitem_section(data.nextitem, data.adaptation),
        "journeys": lambda: journeys_body(data.journey_metrics, data.journey_heatmaps),
        "notes": lambda: notes_section(data.notes),
    }
    sections = []
    for key, heading in SECTIONS:
        section_started = time.perf_counter()
        body = renderers[key]()
        log.info("report section %s rendered in %.1f s", key, time.perf_counter() - section_started)
        sections.append(
            f'<section id="{key}" data-section="{key}">\n<h2>{html.escape(heading)}</h2>\n{body}\n</section>'
        )
    page = render_page(
        title=data.title, run_date=data.run_date, generated_at=data.generated_at, nav=SECTIONS, sections=sections
    )
    target = lakefs.qualify(path)
    lakefs.write_text(target, page)
    log.info(
        "wrote report %s (%.0f KiB) in %.1f s",
        target,
        len(page.encode("utf-8")) / 1024,
        time.perf_counter() - started,
    )
    return target

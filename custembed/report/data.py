"""What the report shows (:class:`ReportData`) and the checks on it; the columns come from the table registry."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from custembed import tables

# Columns each input frame must have when it has rows (``message`` is optional), from the table registry.
# The protocol, the 95 % intervals and the paired comparison: shown where present (metrics of older runs lack them).
METRIC_EVALUATION_COLUMNS: tuple[str, ...] = tuple(
    column
    for column in tables.table("model_metrics").column_names
    if column in ("protocol", "bootstrap", "best_source") or column.endswith(("_lo", "_hi", "_diff", "_significant"))
)
METRIC_COLUMNS: tuple[str, ...] = tables.select_columns(
    "model_metrics",
    first=("source", "product"),
    without=("dt", "train_rows", "train_seconds", "message", *METRIC_EVALUATION_COLUMNS),
)
METRIC_OPTIONAL_COLUMNS: tuple[str, ...] = ("message", *METRIC_EVALUATION_COLUMNS)
DECILE_COLUMNS: tuple[str, ...] = tables.select_columns("decile_lift", first=("source",), without=("dt",))
# Only ``source`` is required; a missing column shows as "–" like a NaN.
MODEL_INFO_COLUMNS: tuple[str, ...] = (
    "source",
    "parameters",
    "hidden_size",
    "train_seconds",
    "embed_customers_per_s",
    "val_loss",
    "val_accuracy",
    "hr_at_10",
    "ndcg_at_10",
)
# One row per logged point of a training run's MLflow metric history (``TrainingHistory.history``).
HISTORY_COLUMNS: tuple[str, ...] = ("metric", "step", "value")


@dataclass(frozen=True, eq=False)
class TrainingHistory:
    """The metric history of the MLflow run that trained one encoder version, or why there is none.

    Attributes:
        source: the encoder's name (``train.encoders``), as in the other sections.
        history: one row per logged point, :data:`HISTORY_COLUMNS`: MLflow's metric key
            (``train_loss`` every step; ``val_loss``, ``val_accuracy``, ``hr_at_10``… after each
            epoch), the optimiser step and the value. Empty when ``missing`` says why.
        kept_step: the step of the weights the training saved (its ``weights_step``); NaN when
            not recorded, and the figure then marks the lowest validation loss, which the loop keeps.
        origin: what the history is of, for the caption (e.g. "custembed-bert4rec version 3, run 1a2b…").
        missing: why there is no history ("" when there is one).
    """

    source: str
    history: pd.DataFrame
    kept_step: float = float("nan")
    origin: str = ""
    missing: str = ""

    def __post_init__(self) -> None:
        _check_frame(f"training_histories[{self.source!r}].history", self.history, HISTORY_COLUMNS)


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
        probes: :func:`custembed.comparison.probe_table` of the run's metrics (mean AUC and
            lift per source and classifier), empty when no probes were fitted.
        model_info: one row per source: :data:`MODEL_INFO_COLUMNS` (NaN where unknown).
        training_histories: one :class:`TrainingHistory` per encoder trained for the run.
        projections: per source, ``(embeddings [n, H] float, is_buyer [n] bool)``.
        attention: per state (e.g. "pre-trained", "fine-tuned", in that order) a mapping
            ``"layer L head H"`` -> ``[K, K]`` mean attention between behaviour types.
        attention_labels: the K behaviour names, row/column order of the attention matrices.
        segments: ``segment_profiles`` rows of the run date (segment, customers, share,
            top_actions, buyers_share, silhouette, k, model), empty when nothing was segmented.
        nextitem: ``nextitem_metrics`` rows of the run date (model, protocol, protocol_name,
            metric, k, value, ci_low, ci_high, customers), empty when no next-item model was evaluated.
        adaptation: ``adaptation_stats`` rows of the run date (model, variant, trainable_parameters,
            total_parameters, trainable_share, train_seconds, steps, backbone, backbone_version), when
            ``cpl4rec-ablations`` ran.
        notes: free-text lines shown at the end.
        journey_metrics: system B's ``journey_metrics`` rows of the date (``None``: none written).
        journey_heatmaps: (store, model) → ``[rows, cols]`` visits per cell (``model="real"``: held out).
    """

    title: str = "custembed report"
    run_date: str = ""
    generated_at: str = ""
    summary: Mapping[str, object] | None = None
    default_classifier: str = "random_forest"
    metrics: pd.DataFrame | None = None
    decile_lift: pd.DataFrame | None = None
    classifier_comparison: pd.DataFrame | None = None
    probes: pd.DataFrame | None = None
    model_info: pd.DataFrame | None = None
    training_histories: Sequence[TrainingHistory] | None = None
    projections: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None
    attention: Mapping[str, Mapping[str, np.ndarray]] | None = None
    attention_labels: Sequence[str] | None = None
    segments: pd.DataFrame | None = None
    nextitem: pd.DataFrame | None = None
    adaptation: pd.DataFrame | None = None  # adaptation_stats rows of the date (cpl4rec-ablations)
    notes: Sequence[str] | None = None
    # system B: journey_metrics rows of the date, and (store, model) -> visits per 50 cm cell
    journey_metrics: pd.DataFrame | None = None
    journey_heatmaps: Mapping[tuple[str, str], np.ndarray] | None = None

    def __post_init__(self) -> None:
        _check_frame("metrics", self.metrics, METRIC_COLUMNS)
        _check_frame("decile_lift", self.decile_lift, DECILE_COLUMNS)
        _check_frame("classifier_comparison", self.classifier_comparison, METRIC_COLUMNS)
        _check_frame("model_info", self.model_info, ("source",))
        _check_frame("segments", self.segments, ("model", "segment", "customers", "top_actions"))
        _check_frame("nextitem", self.nextitem, ("model", "protocol", "metric", "k", "value", "ci_low", "ci_high"))
        _check_frame("adaptation", self.adaptation, ("model", "variant", "trainable_parameters", "total_parameters"))
        _check_projections(self.projections)
        _check_attention(self.attention, self.attention_labels)


def _check_frame(name: str, frame: pd.DataFrame | None, required: Sequence[str]) -> None:
    if frame is None:
        return
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"ReportData.{name} must be a pandas DataFrame or None, got {type(frame).__name__}")
    if frame.empty:
        return
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise ValueError(f"ReportData.{name} lacks column(s) {missing}; it has {list(frame.columns)}")


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


def _check_attention(attention: Mapping[str, Mapping[str, np.ndarray]] | None, labels: Sequence[str] | None) -> None:
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

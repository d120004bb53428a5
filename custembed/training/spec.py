"""What one training run needs, as plain values: no torch, no Spark, so that it pickles.

:class:`TrainParams` is the one definition of the training hyper-parameters: the
configuration's ``train.encoders.<name>`` entries (``custembed.config.EncoderSettings``)
and :class:`TrainSpec` both extend it, so a new knob is added here once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, kw_only=True)
class TrainParams:
    """How long and how fast to train, and how to watch it; the same for every encoder kind."""

    epochs: int = field(default=1, metadata={"help": "Passes over the training customers."})
    max_steps: int | None = field(default=None, metadata={"help": "Stop after this many steps."})
    batch_size: int = field(default=64, metadata={"help": "Sequences per rank per step."})
    lr: float = field(default=1e-3, metadata={"help": "Peak learning rate."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    warmup_steps: int = field(default=0, metadata={"help": "Linear warm-up steps."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm; 0 = off."})
    checkpoint_every: int = field(default=500, metadata={"help": "Steps between checkpoints."})
    keep_checkpoints: int = field(default=2, metadata={"help": "Newest checkpoints kept."})
    log_every: int = field(default=50, metadata={"help": "Steps between progress lines."})
    val_pct: int = field(default=5, metadata={"help": "Percent of customers held out."})
    seed: int = field(default=0, metadata={"help": "Seed of weights, data order and masks."})
    early_stopping_patience: int | None = field(
        default=None, metadata={"help": "Epochs without a better validation figure before stopping."}
    )
    early_stopping_min_delta: float = field(
        default=0.0, metadata={"help": "Change of the validation figure that counts as better."}
    )
    early_stopping_metric: str = field(
        default="val_loss",
        metadata={
            "help": "The validation figure that early stopping and the kept weights follow: val_loss (lower is "
            "better), or val_accuracy, hr@k, ndcg@k with k = metrics_k (higher is better)."
        },
    )
    metrics_k: int = field(default=10, metadata={"help": "Cut-off k of HR@k and NDCG@k."})
    length_buckets: int = field(
        default=0,
        metadata={
            "help": "0: batches of random rows; N: windows of N batches sorted by length, batches shuffled "
            "(less padding when histories vary in length)."
        },
    )

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "checkpoint_every", "keep_checkpoints", "log_every", "metrics_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        for name in ("max_steps", "early_stopping_patience"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be positive or None, got {value!r}")
        if self.lr <= 0 or self.weight_decay < 0 or self.warmup_steps < 0 or self.max_grad_norm < 0:
            raise ValueError(
                f"need lr > 0, weight_decay >= 0, warmup_steps >= 0, max_grad_norm >= 0; got "
                f"{self.lr}, {self.weight_decay}, {self.warmup_steps}, {self.max_grad_norm}"
            )
        if self.length_buckets < 0:
            raise ValueError(f"length_buckets must be 0 (off) or positive, got {self.length_buckets}")
        if not 0 <= self.val_pct < 100:
            raise ValueError(f"val_pct must be in [0, 100), got {self.val_pct}")
        if self.early_stopping_metric not in self.monitorable_metrics():
            raise ValueError(
                f"early_stopping_metric must be one of {', '.join(self.monitorable_metrics())}, "
                f"got {self.early_stopping_metric!r}"
            )

    def monitorable_metrics(self) -> tuple[str, ...]:
        """The validation figures early stopping can follow (hr and ndcg at ``metrics_k``)."""
        return ("val_loss", "val_accuracy", f"hr@{self.metrics_k}", f"ndcg@{self.metrics_k}")

    def monitored(self, metrics: Mapping[str, float]) -> float | None:
        """``early_stopping_metric`` of ``metrics`` as a loss (lower is better), None when absent.

        Figures where higher is better come negated, so one comparison serves them all.
        """
        value = metrics.get(self.early_stopping_metric)
        if value is None:
            return None
        return float(value) if lower_is_better(self.early_stopping_metric) else -float(value)


def lower_is_better(metric: str) -> bool:
    """Whether a smaller value of the validation figure ``metric`` is the better one (only the loss)."""
    return metric == "val_loss"


def train_params(settings: TrainParams) -> dict[str, Any]:
    """The :class:`TrainParams` fields of ``settings`` (or of any subclass instance), by name."""
    return {f.name: getattr(settings, f.name) for f in dataclasses.fields(TrainParams)}


@dataclass(frozen=True, kw_only=True)
class TrainSpec(TrainParams):
    """Everything one training run needs; plain values only, so that it pickles."""

    data_path: str = field(metadata={"help": "Directory (path or URI) of Parquet sequences written by Spark."})
    output_dir: str = field(metadata={"help": "Where rank 0 saves the final encoder (path or URI)."})
    checkpoint_dir: str = field(metadata={"help": "Checkpoints (path or URI); resumed from when not empty."})
    encoder_kind: str = field(default="bert4rec", metadata={"help": "A kind of custembed.encoders.registry."})
    encoder_params: Mapping[str, Any] = field(
        default_factory=dict, metadata={"help": "Fields of the encoder's config (build_encoder)."}
    )
    init_dir: str | None = field(
        default=None,
        metadata={"help": "Saved encoder to start from; overrides encoder_kind/encoder_params."},
    )
    compare_dir: str | None = field(
        default=None,
        metadata={
            "help": "Saved encoder (the current champion) validated at the end on the same held-out "
            "customers and masks; its figures come back as champion_<metric>."
        },
    )
    data_filter: tuple[tuple[str, str, Any], ...] = field(
        default=(), metadata={"help": "Row filter as (column, op, value) triples, ANDed."}
    )
    mlflow_tracking_uri: str | None = field(default=None, metadata={"help": "MLflow server."})
    mlflow_run_id: str | None = field(default=None, metadata={"help": "Existing run to log to."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.mlflow_tracking_uri is None) != (self.mlflow_run_id is None):
            raise ValueError("mlflow_tracking_uri and mlflow_run_id go together; got only one")
        for triple in self.data_filter:
            if len(triple) != 3:
                raise ValueError(f"data_filter entries are (column, op, value), got {triple!r}")

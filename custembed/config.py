"""Typed, frozen configuration: the only place YAML is read.

``load_config`` reads ``conf/base.yaml``, merges an optional override file and
``--set dotted.key=value`` overrides over it, and builds the dataclass tree
strictly: an unknown key or a value of the wrong type is a ``ConfigError``
naming the key and the file it came from.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from custembed.errors import ConfigError
from custembed.training.spec import TrainParams

PACKAGE_DIR = Path(__file__).resolve().parent
# conf/ sits next to the package in a checkout; a wheel ships a copy inside it.
CONF_DIRS = (PACKAGE_DIR.parent / "conf", PACKAGE_DIR / "conf")


@dataclass(frozen=True)
class ProjectConfig:
    database: str = field(default="custembed", metadata={"help": "catalogue database holding every table"})
    lake_dir: str = field(
        default="lake", metadata={"help": "lake root, a path or URI (hdfs://, s3a://...): models, snapshots, runs"}
    )
    run_date: str | None = field(default=None, metadata={"help": "default run date YYYY-MM-DD (else today)"})


@dataclass(frozen=True)
class SparkConfig:
    master: str | None = field(default="local[2]", metadata={"help": "null on a cluster: spark-submit decides"})
    app_name: str = "custembed"
    embedded_catalogue: bool = field(
        default=True, metadata={"help": "Derby metastore + warehouse under lake_dir; false: catalogue from the cluster"}
    )
    shuffle_partitions: int = 8
    table_format: str = field(
        default="parquet", metadata={"help": "parquet, or delta/iceberg where the cluster has them"}
    )
    ui: bool = False
    conf: dict[str, str] = field(default_factory=dict, metadata={"help": "extra spark.* settings"})


@dataclass(frozen=True)
class GenerateConfig:
    customers: int = 4000
    months: int = 36
    end_month: str = field(default="2023-07", metadata={"help": "last month of generated events YYYY-MM"})
    events_per_customer: float = field(default=40.0, metadata={"help": "mean events per customer over the span"})
    seed: int = 7
    purchase_rate: float = field(
        default=0.0035, metadata={"help": "share of customers buying a signal product per quarter"}
    )
    dirty_fraction: float = field(default=0.004, metadata={"help": "share of rows made dirty, spread over every kind"})
    partitions: int = 4


@dataclass(frozen=True)
class DemoConfig:
    input: str | None = field(
        default=None,
        metadata={"help": "null: generate the lake (generate:); else ingest this file (path or URI) as `format`"},
    )
    format: str = field(default="online-retail", metadata={"help": "ingest format of `input` (see custembed ingest)"})
    encoders: list[str] = field(
        default_factory=lambda: ["bert4rec", "coles", "electra"],
        metadata={"help": "encoders the demo trains and compares (names under train.encoders)"},
    )


@dataclass(frozen=True)
class LabelWindow:
    name: str
    start_offset_months: int = field(
        metadata={"help": "first month of the window, counted after the cutoff month (1 = next)"}
    )
    months: int = 3


@dataclass(frozen=True)
class SequencesConfig:
    catalogue: str = field(default="actions.yaml", metadata={"help": "action catalogue file (in conf/ or a path)"})
    max_len: int = field(default=200, metadata={"help": "keep the most recent max_len actions"})
    cutoff: str | None = field(
        default=None, metadata={"help": "feature cutoff YYYY-MM-DD; null: end of the month before the label windows"}
    )
    label_windows: tuple[LabelWindow, ...] = (
        LabelWindow(name="train", start_offset_months=1, months=3),
        LabelWindow(name="test", start_offset_months=4, months=3),
    )
    time_format: str | None = field(default=None, metadata={"help": "format of text event times; null: ISO 8601"})
    fill_empty_months: bool = field(
        default=True,
        metadata={"help": "one 'no action' token per complete month without events; false for next-item data"},
    )
    amount: str | None = field(
        default=None,
        metadata={
            "help": "SQL expression over the event columns giving an event's amount (amount, "
            "quantity * unit_price), written bucketed per token to sequences.amounts; null: none"
        },
    )


@dataclass(frozen=True, kw_only=True)
class EncoderSettings(TrainParams):
    """One named encoder: its kind, its model (``model:``) and its training budget.

    The training fields (``epochs``, ``batch_size``, ``lr``, ...) are those of
    :class:`custembed.training.spec.TrainParams`, defined there once. ``model:`` holds
    fields of the kind's config class (``Bert4RecConfig``, ``ColesConfig``, ``MlmConfig``,
    ``CausalLmConfig``), the single definition of each model's fields. Those classes
    live with their models and import torch, which the base install and this module do
    without, so ``model:`` is checked when the train job starts
    (``custembed.jobs.train.model_params``), before any Spark or training work; fields
    that are facts of the data (BERT4Rec's ``vocab_size``) are filled in there.
    """

    kind: str = field(metadata={"help": "bert4rec or coles (from scratch), mlm (fine-tune a masked LM), causal_lm"})
    model: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "fields of the kind's config class; mlm/causal_lm checkpoint: hub name, local dir, "
            "or package:<pkg>/<dir> (a checkpoint a package ships)"
        },
    )
    sample_fraction: float = field(default=1.0, metadata={"help": "share of training sequences used (seeded)"})
    holdout_last: int = field(
        default=0,
        metadata={
            "help": "actions cut from the end of every training sequence: 2 = leave-one-out for next-item "
            "evaluation (the last action is the test target, the one before it the validation target)"
        },
    )

    def __post_init__(self) -> None:
        # The strict builder reports a TypeError from a constructor as a ConfigError naming
        # the key and the file; a bad value is as much a mistake in that file as a bad type.
        try:
            super().__post_init__()
        except ValueError as e:
            raise TypeError(str(e)) from e
        if self.holdout_last < 0:
            raise TypeError(f"holdout_last must be 0 or positive, got {self.holdout_last}")
        if not 0.0 < self.sample_fraction <= 1.0:
            raise TypeError(f"sample_fraction must be in (0, 1], got {self.sample_fraction!r}")


@dataclass(frozen=True)
class TrainConfig:
    encoders: dict[str, EncoderSettings] = field(default_factory=dict)
    num_processes: int = field(default=2, metadata={"help": "data-parallel processes (TorchDistributor)"})
    local_mode: bool = field(default=True, metadata={"help": "true: processes on the driver; false: on executors"})
    use_gpu: bool = False
    files_per_process: int = field(default=2, metadata={"help": "Parquet files per process in the training snapshot"})
    alias: str = field(default="champion", metadata={"help": "registry alias set on a newly trained version"})
    promote: str = field(
        default="if_better",
        metadata={
            "help": "if_better: the alias moves only when the new version's validation loss is not above the "
            "alias holder's on the same held-out customers; always: to every new version"
        },
    )

    def __post_init__(self) -> None:
        if self.promote not in ("always", "if_better"):
            raise TypeError(f"promote must be always or if_better, got {self.promote!r}")


@dataclass(frozen=True)
class TrackingConfig:
    uri: str | None = field(default=None, metadata={"help": "MLflow tracking URI; null: sqlite under lake_dir"})
    experiment: str = "custembed"
    model_prefix: str = field(
        default="custembed", metadata={"help": "registered models are <model_prefix>-<encoder name>"}
    )


@dataclass(frozen=True)
class EmbedConfig:
    model_ref: str = field(default="champion", metadata={"help": "registry alias or version embedded by default"})
    views: tuple[str, ...] = ("train", "current")
    batch_size: int = field(default=256, metadata={"help": "sequences per forward pass"})
    arrow_batch_rows: int = field(default=4096, metadata={"help": "rows per Arrow batch handed to the UDF"})
    partitions: int = field(default=8, metadata={"help": "partitions of the sequences to embed (parallelism)"})
    pooling: str | None = field(default=None, metadata={"help": "mean, first, last; null: the encoder's default"})
    threads_per_worker: int = field(default=1, metadata={"help": "torch threads in each Python worker"})
    incremental: bool = field(
        default=True,
        metadata={
            "help": "copy the vector of a customer whose fingerprint (model and sequence inputs) equals the one "
            "of the latest earlier run of the same source and view; embed only the others"
        },
    )


@dataclass(frozen=True)
class ComparisonConfig:
    product: str | None = field(default=None, metadata={"help": "product of the classifier comparison (Table 4)"})
    source: str | None = None
    classifiers: tuple[str, ...] = ("random_forest", "xgboost", "lightgbm", "logistic_regression", "mlp")


@dataclass(frozen=True)
class ScoreConfig:
    products: tuple[str, ...] = field(
        default=(), metadata={"help": "products (buying actions of the catalogue) to label and score"}
    )
    sources: tuple[str, ...] = field(
        default=(),
        metadata={
            "help": "embedding sources to compare; empty: every source embedded for the date; "
            "a+b: the two sources' vectors concatenated per customer (a hybrid, e.g. bert4rec+counts)"
        },
    )
    hybrid_with: str | None = field(
        default=None,
        metadata={"help": "also score every other source concatenated with this one (e.g. counts); null: none"},
    )
    classifier: str = field(
        default="random_forest",
        metadata={"help": "random_forest, xgboost, lightgbm, logistic_regression, mlp, knn, spark_random_forest"},
    )
    probes: tuple[str, ...] = field(
        default=(),
        metadata={
            "help": "classifiers also fitted on every source × product beside the default one, e.g. "
            "[logistic_regression, knn]: a linear probe and k-NN say whether a representation carries "
            "the signal or the default classifier finds it"
        },
    )
    balance: str = field(default="undersample", metadata={"help": "undersample (50/50, seeded) or class_weight"})
    protocol: str = field(
        default="customer_disjoint",
        metadata={
            "help": "customer_disjoint: fit on train-fold customers, measure on the held-out test-fold customers; "
            "same_customers: the paper's protocol (the same customers, next label window)"
        },
    )
    test_share: float = field(
        default=0.3, metadata={"help": "share of customers hashed (seeded) into the test fold (customer_disjoint)"}
    )
    bootstrap: int = field(
        default=200, metadata={"help": "bootstrap replicates for the 95 % intervals of model_metrics; 0: none"}
    )
    tuning_trials: int = field(
        default=0,
        metadata={
            "help": "trials of a seeded Optuna (TPE) search of each classifier's main settings, on a validation "
            "fold of its training customers, before the refit; 0: the defaults"
        },
    )
    seed: int = 13
    threshold: float = field(default=0.5, metadata={"help": "score at or above which a customer is predicted buyer"})
    scoring_source: str | None = field(
        default=None, metadata={"help": "source whose scores go to propensity_scores for BI; null: all sources"}
    )
    comparison: ComparisonConfig = ComparisonConfig()


# -- system B (in-store journeys): the model side ---------------------------------------
@dataclass(frozen=True)
class JourneysHoldoutConfig:
    """Which visits are held out as the test set: never trained on, prompts and reference of the evaluation."""

    test_pct: int = field(default=20, metadata={"help": "percent of visits held out (hash of store:visit_id)"})
    salt: str = field(default="test", metadata={"help": "salt of the hash (independent of training's val_pct)"})

    def __post_init__(self) -> None:
        if not 0 < self.test_pct < 100:
            raise TypeError(f"test_pct must be in (0, 100), got {self.test_pct!r}")


@dataclass(frozen=True)
class JourneysModelConfig:
    """Which store the journey models train on, and the Markov chain baseline."""

    train_store: str = field(default="store_a", metadata={"help": "store trained on by `train` (--store overrides)"})
    markov_order: int = field(default=2, metadata={"help": "tokens of context of the Markov chain baseline (1 or 2)"})

    def __post_init__(self) -> None:
        if self.markov_order not in (1, 2, 3):
            raise TypeError(f"markov_order must be 1, 2 or 3, got {self.markov_order!r}")


@dataclass(frozen=True)
class JourneysGenerateConfig:
    """Sampling of journeys from their first points (held-out visits)."""

    models: tuple[str, ...] = field(
        default=("journeys-gpt2", "journeys-lstm", "journeys-markov"),
        metadata={"help": "names under train.encoders generated from (skipped with a warning when not trained)"},
    )
    model_ref: str = field(default="champion", metadata={"help": "registry alias or version of each model"})
    prompt_points: int = field(default=7, metadata={"help": "positions of a real visit given as the prompt (paper: 7)"})
    temperature: float = 1.0
    top_k: int = field(default=0, metadata={"help": "sample among the k likeliest tokens; 0: all"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling mass; 1: off"})
    max_new_tokens: int = field(default=256, metadata={"help": "longest continuation, in model tokens"})
    seed: int = 7
    batch_size: int = field(default=16, metadata={"help": "prompts per sampling call"})
    partitions: int = field(default=4, metadata={"help": "partitions of the prompts (parallelism)"})
    threads_per_worker: int = field(default=1, metadata={"help": "torch threads in each Python worker"})

    def __post_init__(self) -> None:
        if self.prompt_points < 1 or self.max_new_tokens < 1 or self.batch_size < 1 or self.partitions < 1:
            raise TypeError("prompt_points, max_new_tokens, batch_size and partitions must be positive")
        if self.temperature <= 0 or not 0 < self.top_p <= 1 or self.top_k < 0:
            raise TypeError(f"need temperature > 0, 0 < top_p <= 1, top_k >= 0; got {self}")


@dataclass(frozen=True)
class JourneysEvaluateConfig:
    """Generated vs held-out real journeys: Jensen-Shannon divergences (base 2) and path checks."""

    length_bin: int = field(default=10, metadata={"help": "positions per bin of the journey-length distribution"})
    bootstrap: int = field(
        default=0, metadata={"help": "Poisson-bootstrap replicates over visits for 95 % intervals of the JS; 0: none"}
    )
    seed: int = 13

    def __post_init__(self) -> None:
        if self.length_bin < 1 or self.bootstrap < 0:
            raise TypeError(f"need length_bin >= 1 and bootstrap >= 0, got {self.length_bin}, {self.bootstrap}")


@dataclass(frozen=True)
class JourneysTransferConfig:
    """The source store's model fine-tuned on the target store with fractions of its training visits."""

    encoder: str = field(default="journeys-gpt2", metadata={"help": "name under train.encoders"})
    source_store: str = "store_a"
    target_store: str = "store_b"
    fractions: tuple[float, ...] = field(default=(1.0, 0.1, 0.01), metadata={"help": "shares of target training"})
    fine_tune_epochs: int = field(default=3, metadata={"help": "epochs of fine-tuning (paper: 3)"})
    fine_tune_lr: float | None = field(
        default=None, metadata={"help": "peak learning rate of fine-tuning; null: the encoder's own lr"}
    )
    extend_vocabulary: bool = field(
        default=True,
        metadata={"help": "grow the source model's BPE by one learnt on the target share (else keep the source's)"},
    )

    def __post_init__(self) -> None:
        if not self.fractions or any(not 0 < f <= 1 for f in self.fractions):
            raise TypeError(f"fractions must be in (0, 1], got {self.fractions!r}")
        if self.fine_tune_epochs < 1 or (self.fine_tune_lr is not None and self.fine_tune_lr <= 0):
            raise TypeError("fine_tune_epochs and fine_tune_lr must be positive")


@dataclass(frozen=True)
class NextItemConfig:
    behaviour: str = field(default="buying", metadata={"help": "behaviour whose items rank and recommend score"})
    k: int = field(default=10, metadata={"help": "items per customer in the recommendations table"})
    exclude_seen: bool = field(
        default=True, metadata={"help": "recommend: leave out the items already in a customer's history"}
    )
    batch_size: int = field(default=256, metadata={"help": "histories per forward pass"})
    partitions: int = field(default=8, metadata={"help": "partitions of the histories to score (parallelism)"})
    ks: tuple[int, ...] = field(default=(1, 5, 10), metadata={"help": "evaluate-nextitem: cut-offs of HR@K, NDCG@K"})
    negatives: int = field(default=100, metadata={"help": "evaluate-nextitem: negatives of the sampled protocols"})
    seed: int = field(default=7, metadata={"help": "evaluate-nextitem: seed of the sampled negatives"})

    def __post_init__(self) -> None:
        if not self.ks or min(self.ks) < 1:
            raise ValueError(f"nextitem.ks must be positive cut-offs, got {self.ks!r}")
        for name in ("k", "batch_size", "partitions", "negatives"):
            if getattr(self, name) < 1:
                raise ValueError(f"nextitem.{name} must be positive, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class SegmentConfig:
    view: str = field(default="current", metadata={"help": "embeddings view to segment: current or train"})
    k_min: int = field(default=2, metadata={"help": "fewest segments tried"})
    k_max: int = field(default=8, metadata={"help": "most segments tried; the best silhouette wins"})
    choose_sample: int = field(
        default=20000, metadata={"help": "customers (seeded sample) on which each k is fitted and its silhouette taken"}
    )
    normalize: bool = field(default=True, metadata={"help": "L2-normalise vectors first (k-means on directions)"})
    max_iter: int = field(default=30, metadata={"help": "k-means iterations"})
    top_actions: int = field(default=5, metadata={"help": "actions listed per segment profile"})
    seed: int = field(default=11)

    def __post_init__(self) -> None:
        if not 2 <= self.k_min <= self.k_max:
            raise ValueError(f"need 2 <= segment.k_min <= segment.k_max, got {self.k_min}, {self.k_max}")
        for name in ("choose_sample", "max_iter", "top_actions"):
            if getattr(self, name) < 1:
                raise ValueError(f"segment.{name} must be positive, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class JourneySimulateConfig:
    """``journeys-simulate``: shoppers walking the store layouts (``custembed.journeys.simulate``)."""

    visits: int = field(default=2000, metadata={"help": "visits per store and run date"})
    sample_hz: float = field(default=1.0, metadata={"help": "positions per second (fixed sampling rate)"})
    noise_m: float = field(default=0.15, metadata={"help": "standard deviation of the sensor noise per axis, metres"})
    dirty_fraction: float = field(
        default=0.002, metadata={"help": "share of position rows made dirty (outside, time backwards, no visit id)"}
    )
    seed: int = 11
    partitions: int = field(default=4, metadata={"help": "Spark partitions the visits are simulated in"})

    def __post_init__(self) -> None:
        if self.visits < 1 or self.partitions < 1:
            raise TypeError(f"visits and partitions must be >= 1, got {self.visits} and {self.partitions}")
        if not 0.1 <= self.sample_hz <= 20.0:
            raise TypeError(f"sample_hz must be in [0.1, 20], got {self.sample_hz!r}")
        if self.noise_m < 0 or not 0.0 <= self.dirty_fraction < 1.0:
            raise TypeError(
                f"noise_m must be >= 0 and dirty_fraction in [0, 1), got {self.noise_m}, {self.dirty_fraction}"
            )


@dataclass(frozen=True)
class JourneyPrepareConfig:
    """``journeys-prepare``: positions → cells, codes, pauses (DBSCAN), purchase markers, one text per visit."""

    eps_m: float = field(default=0.75, metadata={"help": "DBSCAN radius over (x, y, t / time_scale_s), metres"})
    time_scale_s: float = field(default=4.0, metadata={"help": "seconds that count as one metre in DBSCAN"})
    min_samples: int = field(default=5, metadata={"help": "DBSCAN min_samples (positions, the point itself included)"})
    min_duration_s: float = field(default=5.0, metadata={"help": "shorter clusters are not pauses"})
    pause_reach_m: float = field(
        default=1.5, metadata={"help": "a pause's centre this close to a shelf is a pause at its zone"}
    )
    outside_margin_m: float = field(
        default=0.5,
        metadata={"help": "positions up to this far beyond a wall are sensor noise, moved onto it; further: rejected"},
    )

    def __post_init__(self) -> None:
        if self.eps_m <= 0 or self.time_scale_s <= 0 or self.min_samples < 1:
            raise TypeError("eps_m and time_scale_s must be > 0 and min_samples >= 1")
        if self.min_duration_s < 0 or self.pause_reach_m < 0 or self.outside_margin_m < 0:
            raise TypeError("min_duration_s, pause_reach_m and outside_margin_m must be >= 0")


@dataclass(frozen=True)
class JourneysConfig:
    """System B, in-store journeys. One sub-section per stage, so each stage adds its own."""

    stores: tuple[str, ...] = field(
        default=("store_a", "store_b"),
        metadata={"help": "store layouts: a name in conf/stores/ or a path/URI to a layout file"},
    )
    simulate: JourneySimulateConfig = JourneySimulateConfig()
    prepare: JourneyPrepareConfig = JourneyPrepareConfig()
    holdout: JourneysHoldoutConfig = JourneysHoldoutConfig()
    model: JourneysModelConfig = JourneysModelConfig()
    generate: JourneysGenerateConfig = JourneysGenerateConfig()
    evaluate: JourneysEvaluateConfig = JourneysEvaluateConfig()
    transfer: JourneysTransferConfig = JourneysTransferConfig()


@dataclass(frozen=True)
class Config:
    project: ProjectConfig = ProjectConfig()
    spark: SparkConfig = SparkConfig()
    generate: GenerateConfig = GenerateConfig()
    demo: DemoConfig = DemoConfig()
    sequences: SequencesConfig = SequencesConfig()
    train: TrainConfig = TrainConfig()
    tracking: TrackingConfig = TrackingConfig()
    embed: EmbedConfig = EmbedConfig()
    score: ScoreConfig = ScoreConfig()
    nextitem: NextItemConfig = NextItemConfig()
    segment: SegmentConfig = SegmentConfig()
    journeys: JourneysConfig = JourneysConfig()
    tables: dict[str, str] = field(default_factory=dict, metadata={"help": "table name overrides: logical -> physical"})
    sources: dict[str, str] = field(default_factory=dict, metadata={"help": "input overrides: events -> table or path"})


T = TypeVar("T")


def conf_dir() -> Path:
    """The directory holding ``base.yaml`` and the action catalogues."""
    for candidate in CONF_DIRS:
        if (candidate / "base.yaml").exists():
            return candidate
    raise ConfigError(f"conf/base.yaml not found in {', '.join(str(c) for c in CONF_DIRS)}")


def resolve_conf_file(name: str) -> Path:
    """A path as given if it exists, else the file of that name in ``conf/``."""
    path = Path(name)
    if path.exists():
        return path
    in_conf = conf_dir() / name
    if in_conf.exists():
        return in_conf
    raise ConfigError(f"config file not found: {name}")


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key written twice in one mapping (YAML would keep the last silently)."""


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key '{key}' appears twice (line {key_node.start_mark.line + 1})", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def read_yaml(text: str) -> Any:
    """Parse YAML safely, refusing duplicate keys."""
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass


def read_yaml_file(path: Path) -> dict[str, Any]:
    """A YAML file whose top level is a mapping, read strictly; a ``ConfigError`` naming the file otherwise."""
    try:
        data = read_yaml(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return data


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def parse_set(assignment: str) -> dict[str, Any]:
    """``a.b.c=value`` → ``{"a": {"b": {"c": value}}}``; the value is parsed as YAML."""
    if "=" not in assignment:
        raise ConfigError(f"--set expects dotted.key=value, got {assignment!r}")
    key, raw = assignment.split("=", 1)
    value = yaml.safe_load(raw) if raw != "" else ""
    nested: dict[str, Any] = {}
    cursor = nested
    parts = key.strip().split(".")
    for part in parts[:-1]:
        cursor = cursor.setdefault(part, {})
    cursor[parts[-1]] = value
    return nested


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _build(tp: Any, value: Any, key: str, source: str) -> Any:
    """Build ``value`` as type ``tp`` strictly; errors name ``key`` and ``source``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return _build_union(tp, value, key, source)
    if dataclasses.is_dataclass(tp):
        return _build_dataclass(tp, value, key, source)
    if origin in (tuple, list):
        (item_tp, *_) = typing.get_args(tp)
        if not isinstance(value, Sequence) or isinstance(value, str):
            raise ConfigError(f"{source}: {key} must be a list, got {value!r}")
        return tuple(_build(item_tp, v, f"{key}[{i}]", source) for i, v in enumerate(value))
    if origin is dict:
        _, value_tp = typing.get_args(tp)
        if not isinstance(value, Mapping):
            raise ConfigError(f"{source}: {key} must be a mapping, got {value!r}")
        return {str(k): _build(value_tp, v, f"{key}.{k}", source) for k, v in value.items()}
    if tp is Any:
        return value
    return _build_scalar(tp, value, key, source)


def _build_union(tp: Any, value: Any, key: str, source: str) -> Any:
    """``X | None`` and other unions: the first member type that accepts ``value``."""
    args = typing.get_args(tp)
    if value is None and type(None) in args:
        return None
    errors = []
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _build(arg, value, key, source)
        except ConfigError as e:
            errors.append(e)
    raise errors[0]


def _build_dataclass(tp: Any, value: Any, key: str, source: str) -> Any:
    """A mapping into dataclass ``tp``: every key known, every value of its field's type."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"{source}: {key} must be a mapping, got {value!r}")
    hints = typing.get_type_hints(tp)
    names = {f.name for f in dataclasses.fields(tp)}
    for k in value:
        if k not in names:
            known = ", ".join(sorted(names))
            raise ConfigError(f"{source}: unknown key '{key + '.' if key else ''}{k}' (known: {known})")
    kwargs = {k: _build(hints[k], v, f"{key + '.' if key else ''}{k}", source) for k, v in value.items()}
    try:
        return tp(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{source}: {key or 'config'}: {e}") from e


def _build_scalar(tp: Any, value: Any, key: str, source: str) -> Any:
    """int, float, str and bool; an int is a float, a YAML date or number is text where text is wanted."""
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is str and isinstance(value, (dt.date, int, float)) and not isinstance(value, bool):
        # YAML reads 2023-01-31 as a date and 2023-07 as text; accept both as text.
        return value.isoformat() if isinstance(value, dt.date) else str(value)
    if tp in (int, float, str, bool):
        if isinstance(value, bool) and tp is not bool:
            raise ConfigError(f"{source}: {key} must be {_type_name(tp)}, got {value!r}")
        if not isinstance(value, tp):
            raise ConfigError(f"{source}: {key} must be {_type_name(tp)}, got {value!r}")
        return value
    raise ConfigError(f"{source}: {key}: unsupported config type {_type_name(tp)}")


def build(tp: type[T], data: Mapping[str, Any], source: str = "config", prefix: str = "") -> T:
    """Build dataclass ``tp`` from plain data, strictly (see module docstring)."""
    result: T = _build(tp, data, prefix, source)
    return result


IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_identifier(value: str, key: str, source: str, *, qualified: bool = False) -> None:
    """``value`` must be a plain SQL identifier (``db.name`` when ``qualified``): config reaches SQL through it."""
    parts = value.split(".", 1) if qualified else [value]
    if not all(IDENTIFIER.fullmatch(part) for part in parts):
        shape = "name or db.name" if qualified else "name"
        raise ConfigError(
            f"{source}: {key} must be a {shape} of letters, digits and _ (not starting with a digit), got {value!r}"
        )


def check_identifiers(cfg: Config, source: str) -> None:
    """Every config value that becomes a SQL identifier: the database and the table overrides."""
    check_identifier(cfg.project.database, "project.database", source)
    for logical, physical in cfg.tables.items():
        check_identifier(physical, f"tables.{logical}", source, qualified=True)


def _build_config(data: Mapping[str, Any], source: str) -> Config:
    cfg = build(Config, data, source)
    check_identifiers(cfg, source)
    return cfg


def load_config(conf_file: str | None = None, sets: Sequence[str] = ()) -> Config:
    """``conf/base.yaml``, then ``conf_file``, then ``--set`` overrides, validated at each layer."""
    base_path = conf_dir() / "base.yaml"
    data = read_yaml_file(base_path)
    _build_config(data, str(base_path))
    if conf_file:
        path = resolve_conf_file(conf_file)
        override = read_yaml_file(path)
        data = _merge(data, override)
        _build_config(data, str(path))
    for assignment in sets:
        data = _merge(data, parse_set(assignment))
        _build_config(data, f"--set {assignment}")
    return _build_config(data, "config")


def parse_date(value: str, what: str) -> dt.date:
    """``YYYY-MM-DD`` → date, or a ``ConfigError`` naming ``what``."""
    try:
        return dt.date.fromisoformat(value)
    except ValueError as e:
        raise ConfigError(f"{what}: expected YYYY-MM-DD, got {value!r}") from e


@dataclass(frozen=True)
class FamilyRule:
    family: str = field(metadata={"help": "product family named when the pattern matches"})
    pattern: str = field(metadata={"help": "regular expression on the upper-cased Description"})


@dataclass(frozen=True)
class RetailFamilies:
    """UCI Online Retail product families (``conf/retail_families.yaml``), read by ``ingest --format online-retail``."""

    services: dict[str, str] = field(
        default_factory=dict, metadata={"help": "stock code of a non-goods line -> service item (postage, ...)"}
    )
    rules: tuple[FamilyRule, ...] = field(default=(), metadata={"help": "the first matching rule names the family"})

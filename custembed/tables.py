"""The table registry: every table's name, columns and types, partitions, writer and location. No pyspark here.

One :class:`Table` per logical table. Types are Spark SQL type strings
(``array<int>``, ``map<string,bigint>``): ``custembed.schemas`` builds the
Spark ``StructType`` of each table from them, ``custembed.io`` writes and reads
through them, ``custembed.explore`` reads the files with pyarrow from them and
``docs/tables.md`` documents them for analysts.

Location rule (:func:`physical_name`, :func:`warehouse_path`): a logical
table ``t`` lives in the catalogue database (``project.database``) as
```db`.`t```, unless ``tables: {t: other}`` in the config remaps it: a name
with a dot is used as given (``other_db.seq``), one without stays in the
database. On the embedded default the files of ``db.t`` sit under
``<lake_dir>/warehouse/db.db/t`` (Spark keeps the tables of ``default``
directly under the warehouse directory). Files that are not catalogue tables
(the training snapshot) live under a directory of the lake that the caller
names (:data:`FILES` tables).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from custembed import lakefs

# -- column names used across the package -------------------------------------
CUSTOMER_ID = "customer_id"
EVENT_TIME = "event_time"
EVENT_TYPE = "event_type"
ITEM = "item"
RAW_EVENT_COLUMNS = (CUSTOMER_ID, EVENT_TIME, EVENT_TYPE, ITEM)
TOKENS = "tokens"
TEXT = "text"
GAPS = "gaps"
AMOUNTS = "amounts"
VECTOR = "vector"
FINGERPRINT = "fingerprint"
SOURCE = "source"
PRODUCT = "product"
CLASSIFIER = "classifier"
LABEL = "label"
LABEL_WINDOW = "label_window"
SCORE = "score"
DECILE = "decile"

DT = "dt"  # run-date partition, YYYY-MM-DD text
VIEW = "view"  # sequences partition: "train" (cutoff before label windows) or "current" (cutoff = run date)
VIEW_TRAIN = "train"
VIEW_CURRENT = "current"

DEFAULT_DATABASE = "custembed"
WAREHOUSE_DIR = "warehouse"  # under the lake directory, on the embedded default

# how a job writes a table
PARTITIONS = "partitions"  # dynamic overwrite of the partitions present in the rows
APPEND = "append"  # audit tables: rows are only ever added
REPLACE = "replace"  # the whole table at once (inputs)
VIEW_KIND = "view"  # a SQL view over another table
FILES = "files"  # Parquet files under a lake directory, not in the catalogue
KINDS = (PARTITIONS, APPEND, REPLACE, VIEW_KIND, FILES)


@dataclass(frozen=True)
class Column:
    """One column: its name, Spark SQL type and meaning."""

    name: str
    type: str
    doc: str = ""


@dataclass(frozen=True)
class Table:
    """A logical table: what it holds and how it is written.

    Attributes:
        name: logical name (``embeddings``); the physical one follows :func:`physical_name`.
        columns: every column in on-disk order, partition columns last.
        partitions: partition columns, outermost first.
        written_by: the ``custembed`` command that writes it (named when it is missing).
        kind: one of :data:`KINDS`.
        one_row_per: what a row stands for.
        view_of: for a view, the table it selects from; ``view_where`` its condition,
            with ``{table}`` standing for that table's physical name.
    """

    name: str
    columns: tuple[Column, ...]
    partitions: tuple[str, ...]
    written_by: str
    kind: str
    one_row_per: str
    view_of: str | None = None
    view_where: str = ""

    def __post_init__(self) -> None:
        names = self.column_names
        if self.kind not in KINDS:
            raise ValueError(f"table {self.name}: kind {self.kind!r} is not one of {KINDS}")
        if len(set(names)) != len(names):
            raise ValueError(f"table {self.name}: a column appears twice in {names}")
        if self.partitions and names[-len(self.partitions) :] != self.partitions:
            raise ValueError(f"table {self.name}: partitions {self.partitions} must be its last columns {names}")

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)

    @property
    def types(self) -> dict[str, str]:
        """Column name → Spark SQL type."""
        return {column.name: column.type for column in self.columns}

    def ddl(self) -> str:
        """The columns as a Spark DDL string (``customer_id string, vector array<float>, ...``)."""
        return ", ".join(f"{column.name} {column.type}" for column in self.columns)


def _c(name: str, type_: str, doc: str = "") -> Column:
    return Column(name, type_, doc)


_RAW_EVENT_FIELDS = (
    _c(CUSTOMER_ID, "string", "customer key; nulls and blanks are rejected by step 1"),
    _c(EVENT_TIME, "timestamp", "when the event happened (UTC)"),
    _c(EVENT_TYPE, "string", "raw event code, mapped to a behaviour by the action catalogue"),
    _c(ITEM, "string", "raw item code, mapped through the catalogue's items"),
)

_TABLES: tuple[Table, ...] = (
    Table(
        "raw_events",
        (
            *_RAW_EVENT_FIELDS,
            _c("channel", "string", "store, online or call (generated data only)"),
            _c("amount", "double", "purchase amount for buying events (generated data only)"),
        ),
        (),
        "generate",
        REPLACE,
        "raw event (input)",
    ),
    Table(
        "online_retail_events",
        (
            _c(CUSTOMER_ID, "string"),
            _c(EVENT_TIME, "string", "ISO text, parsed by step 1"),
            _c(EVENT_TYPE, "string"),
            _c(ITEM, "string"),
            _c("invoice", "string"),
            _c("stock_code", "string"),
            _c("quantity", "int"),
            _c("unit_price", "double"),
            _c("country", "string"),
        ),
        (),
        "ingest",
        REPLACE,
        "Online Retail invoice line (input)",
    ),
    Table(
        "user_item_events",
        (
            _c(CUSTOMER_ID, "string"),
            _c(EVENT_TIME, "string", "ISO text (UTC), synthesised in file order, parsed by step 1"),
            _c(EVENT_TYPE, "string", "ingest --behaviour"),
            _c(ITEM, "string"),
        ),
        (),
        "ingest",
        REPLACE,
        "user-item line (input)",
    ),
    Table(
        "taobao_events",
        (
            _c(CUSTOMER_ID, "string"),
            _c(EVENT_TIME, "string", "ISO text (UTC) of the line's epoch seconds, parsed by step 1"),
            _c(EVENT_TYPE, "string", "pv, cart, fav or buy"),
            _c(ITEM, "string"),
            _c("category", "string"),
        ),
        (),
        "ingest",
        REPLACE,
        "Taobao UserBehavior line (input)",
    ),
    Table(
        "ingest_rejects",
        (
            _c("reason", "string", "why ingest could not make an event of the line"),
            _c("raw", "string", "the input line (CSV formats: its fields as JSON)"),
            _c("input", "string", "the file ingested"),
            _c(DT, "string"),
            _c("format", "string"),
        ),
        (DT, "format"),
        "ingest",
        PARTITIONS,
        "unusable input line",
    ),
    Table(
        "online_retail_lines",
        tuple(
            _c(name, "string")
            for name in (
                "InvoiceNo",
                "StockCode",
                "Description",
                "Quantity",
                "InvoiceDate",
                "UnitPrice",
                "CustomerID",
                "Country",
            )
        ),
        (),
        "the UCI Online Retail CSV",
        FILES,
        "invoice line, every column as text (read by `ingest --format online-retail`)",
    ),
    Table(
        "rejects",
        (
            _c("reason", "string", "why step 1 could not use the row"),
            _c(CUSTOMER_ID, "string"),
            _c(EVENT_TIME, "string"),
            _c(EVENT_TYPE, "string"),
            _c(ITEM, "string"),
            _c("raw", "string", "the whole input row as JSON, extra columns included"),
            _c(DT, "string"),
        ),
        (DT,),
        "sequences",
        PARTITIONS,
        "unusable input row",
    ),
    Table(
        "sequences",
        (
            _c(CUSTOMER_ID, "string"),
            _c("cutoff", "string", "last day included in this view"),
            _c(TOKENS, "array<int>", "action ids oldest → newest"),
            _c(TEXT, "string", "the same sequence as words"),
            _c("seq_len", "int", "length kept (<= max_len)"),
            _c("full_len", "int", "length before truncation"),
            _c("n_events", "int", "real events up to the cutoff"),
            _c("n_no_action", "int", "empty complete months filled with 'no action'"),
            _c("first_event_time", "timestamp"),
            _c("last_event_time", "timestamp"),
            # added after the others so that older tables migrate by adding it (Lake.write_partitions)
            _c(
                GAPS,
                "array<int>",
                "whole UTC days since the previous token, aligned with tokens; 0 for a customer's first "
                "token; a 'no action' month counts from its first day",
            ),
            _c(
                AMOUNTS,
                "array<int>",
                "the amount of each token's event (sequences.amount), bucketed: 0 none, else "
                "1 + floor(16 ln(1 + |amount|)) capped at 255; aligned with tokens",
            ),
            _c(DT, "string"),
            _c(VIEW, "string"),
        ),
        (DT, VIEW),
        "sequences",
        PARTITIONS,
        "customer × view",
    ),
    Table(
        "labels",
        (
            _c(CUSTOMER_ID, "string"),
            _c(PRODUCT, "string"),
            _c(LABEL_WINDOW, "string"),
            _c("window_start", "string"),
            _c("window_end", "string"),
            _c(LABEL, "int", "1 if the customer bought the product in the window"),
            _c(DT, "string"),
        ),
        (DT,),
        "sequences",
        PARTITIONS,
        "customer × product × label window",
    ),
    Table(
        "vocabulary",
        (
            _c("behaviour", "string", "a behaviour declared with `items: data` in the action catalogue"),
            _c(ITEM, "string", "item name (raw item code, trimmed and lower-cased, or its alias)"),
            _c("id", "int", "token id in the run's sequences; declared actions hold the ids below the first"),
            _c("count", "bigint", "usable events of the action up to the run date"),
            _c(TEXT, "string", "'<behaviour> <item>', what the text view shows"),
            _c(DT, "string"),
        ),
        (DT,),
        "sequences",
        PARTITIONS,
        "data-built action (item seen at least vocabulary.min_count times)",
    ),
    Table(
        "recommendations",
        (
            _c(CUSTOMER_ID, "string"),
            _c("rank", "int", "1 = the item the model puts first"),
            _c(ITEM, "string", "item of the behaviour recommended (nextitem.behaviour)"),
            _c(SCORE, "double", "the model's score of the item as the next action (compare within a customer)"),
            _c("model_version", "string", "registry version of the encoder (or 'path')"),
            _c(DT, "string"),
            _c("model", "string", "encoder name under train.encoders"),
        ),
        (DT, "model"),
        "recommend",
        PARTITIONS,
        "customer × recommended item × model",
    ),
    Table(
        "nextitem_metrics",
        (
            _c("protocol", "string", "full, sampled-uniform or sampled-popularity"),
            _c("protocol_name", "string", "the protocol in words (what to print beside the figure)"),
            _c("metric", "string", "hr or ndcg"),
            _c("k", "int", "cut-off"),
            _c("value", "double", "mean over the customers ranked"),
            _c("ci_low", "double", "95 % interval: mean - 1.96 sd / sqrt(n)"),
            _c("ci_high", "double", "95 % interval: mean + 1.96 sd / sqrt(n)"),
            _c("customers", "bigint", "customers whose last action was ranked"),
            _c("model_version", "string"),
            _c(DT, "string"),
            _c("model", "string", "encoder name under train.encoders"),
        ),
        (DT, "model"),
        "evaluate-nextitem",
        PARTITIONS,
        "protocol × metric × cut-off × model",
    ),
    Table(
        "adaptation_stats",
        (
            _c("variant", "string", "full, no_prompts, no_pfg, no_compactness, or finetune (backbone unfrozen)"),
            _c("backbone", "string", "the pretrain-stage encoder adapted (name under train.encoders)"),
            _c("backbone_version", "string", "its registry version"),
            _c("trainable_parameters", "bigint", "parameters the adaptation trains"),
            _c("total_parameters", "bigint", "every parameter of the network (backbone, heads, prompt parts)"),
            _c("trainable_share", "double", "trainable_parameters / total_parameters"),
            _c("train_seconds", "double", "the training loop's time (steps and validation, all processes)"),
            _c("wall_seconds", "double", "the train job's wall time (snapshot, launch, registry); null when reused"),
            _c("steps", "bigint", "optimiser steps of the adaptation"),
            _c("reused", "boolean", "true: a training already registered was reused (figures from its MLflow run)"),
            _c("model_version", "string", "registry version of the adapted encoder"),
            _c(DT, "string"),
            _c("model", "string", "encoder name: the prompt-stage entry or its ablation variant"),
        ),
        (DT, "model"),
        "cpl4rec-ablations",
        PARTITIONS,
        "adaptation variant of CPL4Rec × model",
    ),
    Table(
        "segments",
        (
            _c(CUSTOMER_ID, "string"),
            _c("segment", "int", "0..k-1"),
            _c("distance", "double", "Euclidean distance to the segment's centre (normalised vectors by default)"),
            _c("k", "int", "segments of this model and date, chosen by silhouette"),
            _c(DT, "string"),
            _c("model", "string", "the embedding source segmented"),
        ),
        (DT, "model"),
        "segment",
        PARTITIONS,
        "customer × model",
    ),
    Table(
        "segment_profiles",
        (
            _c("segment", "int"),
            _c("customers", "bigint"),
            _c("share", "double", "share of all segmented customers"),
            _c("top_actions", "array<string>", "actions most over-represented in the segment: 'text (x lift)'"),
            _c("buyers_share", "double", "share of the segment's customers with a buying action in their history"),
            _c("silhouette", "double", "silhouette of the chosen k (on the choosing sample)"),
            _c("k", "int"),
            _c(DT, "string"),
            _c("model", "string"),
        ),
        (DT, "model"),
        "segment",
        PARTITIONS,
        "segment × model",
    ),
    Table(
        "runs",
        (
            _c("run_id", "string"),
            _c("job", "string"),
            _c("status", "string", "succeeded | failed"),
            _c("started_at", "timestamp"),
            _c("finished_at", "timestamp"),
            _c("rows_read", "bigint"),
            _c("rows_accepted", "bigint"),
            _c("rows_rejected", "bigint"),
            _c("rejected_by_reason", "map<string,bigint>"),
            _c("details", "string", "JSON: job-specific figures"),
            _c(DT, "string"),
        ),
        (DT,),
        "any job",
        APPEND,
        "job run (audit log)",
    ),
    Table(
        "embeddings",
        (
            _c(CUSTOMER_ID, "string"),
            _c("model_name", "string"),
            _c("model_version", "string"),
            _c(VECTOR, "array<float>"),
            # added after the others so that older tables migrate by adding it (Lake.write_partitions)
            _c(
                FINGERPRINT,
                "bigint",
                "xxhash64 of what the vector depends on: the model (name, version, pooling; for counts the "
                "catalogue and vocabulary size) and the customer's sequence columns the model reads; a later "
                "run copies the vector of a customer whose fingerprint is unchanged (embed.incremental); "
                "null in partitions written before it existed",
            ),
            _c(DT, "string"),
            _c(VIEW, "string"),
            _c(SOURCE, "string"),
        ),
        (DT, VIEW, SOURCE),
        "embed",
        PARTITIONS,
        "customer × view × source",
    ),
    Table(
        "propensity_scores",
        (
            _c(CUSTOMER_ID, "string"),
            _c(PRODUCT, "string"),
            _c(SCORE, "double"),
            _c(DECILE, "int", "1 = the 10 % most likely buyers"),
            _c(CLASSIFIER, "string"),
            _c(DT, "string"),
            _c(SOURCE, "string"),
        ),
        (DT, SOURCE),
        "score",
        PARTITIONS,
        "customer × product × source",
    ),
    Table(
        "model_metrics",
        (
            _c(PRODUCT, "string"),
            _c(CLASSIFIER, "string"),
            _c("rows", "bigint"),
            _c("positives", "bigint"),
            _c("auc", "double"),
            _c("f1", "double"),
            _c("precision", "double"),
            _c("recall", "double"),
            _c("accuracy", "double"),
            _c("top10_lift", "double"),
            _c("protocol", "string", "customer_disjoint or same_customers (score.protocol)"),
            _c("bootstrap", "int", "bootstrap replicates behind the intervals (0: none)"),
            *(
                _c(f"{metric}_{end}", "double", f"{'lower' if end == 'lo' else 'upper'} end of the 95 % interval")
                for metric in ("auc", "f1", "precision", "recall", "accuracy", "top10_lift")
                for end in ("lo", "hi")
            ),
            _c("best_source", "string", "source with the highest AUC for this product and classifier"),
            _c("auc_diff", "double", "this AUC minus the best source's; null for the best"),
            _c("auc_diff_lo", "double", "paired bootstrap 95 % interval of auc_diff"),
            _c("auc_diff_hi", "double"),
            _c("auc_diff_significant", "boolean", "the interval of auc_diff excludes 0"),
            _c("train_rows", "bigint"),
            _c("train_seconds", "double"),
            _c("message", "string"),
            _c(DT, "string"),
            _c(SOURCE, "string"),
        ),
        (DT, SOURCE),
        "score",
        PARTITIONS,
        "product × classifier × source",
    ),
    Table(
        "classifier_models",
        (
            _c(PRODUCT, "string"),
            _c(CLASSIFIER, "string"),
            _c("path", "string", "the fitted model in the model store (lake URI); empty: none could be fitted"),
            _c("bytes", "bigint", "size of the stored model"),
            _c("train_rows", "bigint"),
            _c("train_seconds", "double"),
            _c("message", "string"),
            _c("params", "string", "JSON: the settings the tuning search chose (score.tuning_trials); null: defaults"),
            _c("validation_auc", "double", "the tuning search's best AUC on its validation fold; null: no search"),
            _c(DT, "string"),
            _c(SOURCE, "string"),
        ),
        (DT, SOURCE),
        "score",
        PARTITIONS,
        "stored classifier (product × classifier × source)",
    ),
    Table(
        "decile_lift",
        (
            _c(PRODUCT, "string"),
            _c(CLASSIFIER, "string"),
            _c(DECILE, "int"),
            _c("customers", "bigint"),
            _c("buyers", "bigint"),
            _c("buy_rate", "double"),
            _c("lift", "double"),
            _c("cumulative_lift", "double"),
            _c(DT, "string"),
            _c(SOURCE, "string"),
        ),
        (DT, SOURCE),
        "score",
        PARTITIONS,
        "product × classifier × decile × source",
    ),
    Table(
        "top_decile_customers",
        (
            _c(CUSTOMER_ID, "string"),
            _c(PRODUCT, "string"),
            _c(SOURCE, "string"),
            _c(CLASSIFIER, "string"),
            _c(SCORE, "double"),
            _c(DT, "string"),
        ),
        (),
        "score",
        VIEW_KIND,
        "customer × product × source, latest date, decile 1",
        view_of="propensity_scores",
        view_where="decile = 1 AND dt = (SELECT max(dt) FROM {table})",
    ),
    # -- system B (in-store journeys): the model side -----------------------------------
    Table(
        "generated_journeys",
        (
            _c("store", "string", "store of the held-out visit whose first points were the prompt"),
            _c("visit_id", "string", "that visit"),
            _c("train_fraction", "double", "share of the store's training visits the model saw (1 outside transfer)"),
            _c("version", "string", "registered model version that generated it"),
            _c(TEXT, "string", "prompt + sampled continuation, as journey text (codes and $zone markers)"),
            _c("n_positions", "int", "location codes in the text"),
            _c("n_purchases", "int", "purchase markers in the text"),
            _c("bad_tokens", "int", "tokens that are neither a code nor a purchase marker"),
            _c(DT, "string"),
            _c("model", "string", "model name (journeys-gpt2, ...; transfer: <encoder>-finetuned / -scratch)"),
        ),
        (DT, "model"),
        "journeys-generate",
        PARTITIONS,
        "held-out visit × model: one generated journey",
    ),
    Table(
        "journey_metrics",
        (
            _c("store", "string"),
            _c("train_fraction", "double", "share of the store's training visits the model saw"),
            _c("metric", "string", "js_cells, js_purchase_zones, js_length, shelf_crossing_rate, out_of_store_rate"),
            _c(
                "value",
                "double",
                "JS divergences in bits (base 2, in [0, 1]), bias-corrected by the bootstrap when there is one; "
                "rates as shares",
            ),
            _c("plugin_value", "double", "the JS of the two samples as measured (biased upward by finite samples)"),
            _c("ci_low", "double", "basic 95 % interval of the Poisson bootstrap over visits (JS only; null: none)"),
            _c("ci_high", "double", "upper end of the same interval"),
            _c("n_generated", "bigint", "generated journeys measured"),
            _c("n_real", "bigint", "held-out real journeys compared with"),
            _c("protocol", "string", "how the figure was measured (prompt, split, binning)"),
            _c(DT, "string"),
            _c("model", "string", "as generated_journeys.model; 'real' for the held-out journeys' own rates"),
        ),
        (DT, "model"),
        "journeys-evaluate",
        PARTITIONS,
        "store × model × metric",
    ),
    Table(
        "training_snapshot",
        (
            _c(CUSTOMER_ID, "string"),
            _c(TOKENS, "array<int>"),
            _c(TEXT, "string"),
            _c(GAPS, "array<int>", "days since the previous token, aligned with tokens"),
            _c(AMOUNTS, "array<int>", "amount bucket of each token's event, aligned with tokens"),
        ),
        (),
        "train",
        FILES,
        "train-view sequence, as the training processes read it",
    ),
)

# -- system B: in-store journeys (docs/journeys.md) --------------------------------------
STORE = "store"
VISIT_ID = "visit_id"

_JOURNEY_TABLES: tuple[Table, ...] = (
    Table(
        "store_positions",
        (
            _c(VISIT_ID, "string", "one shopper's visit; unique within a store and date"),
            _c("seq", "bigint", "the sensor's sample counter within the visit (orders rows; null: order by t)"),
            _c("t", "timestamp", "when the position was sampled (UTC)"),
            _c("x", "double", "metres east of the store's south-west corner (the layout's frame)"),
            _c("y", "double", "metres north of the store's south-west corner"),
            _c(DT, "string"),
            _c(STORE, "string", "store layout name (conf/stores/<store>.yaml)"),
        ),
        (DT, STORE),
        "journeys-simulate",
        PARTITIONS,
        "sampled position of a visit (input of journeys-prepare)",
    ),
    Table(
        "store_scans",
        (
            _c(VISIT_ID, "string"),
            _c("t", "timestamp", "when the till scanned the product (UTC)"),
            _c("zone", "string", "store zone of the product (the layout's shelf zones)"),
            _c(PRODUCT, "string"),
            _c(DT, "string"),
            _c(STORE, "string"),
        ),
        (DT, STORE),
        "journeys-simulate",
        PARTITIONS,
        "product scanned at a till during a visit",
    ),
    Table(
        "journeys",
        (
            _c(VISIT_ID, "string"),
            _c(
                TEXT,
                "string",
                "location codes (one per position, time order) and $<zone> purchase markers, space-separated",
            ),
            _c("n_positions", "int", "positions used (= location codes in text)"),
            _c("n_pauses", "int", "pauses found by DBSCAN"),
            _c("n_purchases", "int", "purchase markers in text"),
            _c("n_scans", "int", "till scans of the visit"),
            _c("start_time", "timestamp", "first position used"),
            _c("duration_s", "double", "seconds from the first to the last position used"),
            _c(DT, "string"),
            _c(STORE, "string"),
        ),
        (DT, STORE),
        "journeys-prepare",
        PARTITIONS,
        "store visit",
    ),
    Table(
        "journey_rejects",
        (
            _c("reason", "string", "why journeys-prepare could not use the position row"),
            _c(STORE, "string"),
            _c(VISIT_ID, "string"),
            _c("seq", "bigint"),
            _c("t", "timestamp"),
            _c("x", "double"),
            _c("y", "double"),
            _c(DT, "string"),
        ),
        (DT,),
        "journeys-prepare",
        PARTITIONS,
        "unusable position row",
    ),
)

TABLES: Mapping[str, Table] = {table.name: table for table in (*_TABLES, *_JOURNEY_TABLES)}


def table(name: str) -> Table:
    """The registered table of a logical name; ``KeyError`` naming the known ones otherwise."""
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"unknown table {name!r} (registered: {', '.join(TABLES)})") from None


def select_columns(name: str, *, first: Sequence[str] = (), without: Sequence[str] = ()) -> tuple[str, ...]:
    """Column names of a table, ``first`` moved to the front, ``without`` left out (display orders)."""
    names = table(name).column_names
    unknown = [column for column in (*first, *without) if column not in names]
    if unknown:
        raise KeyError(f"table {name} has no column(s) {unknown}")
    rest = [column for column in names if column not in first and column not in without]
    return (*first, *rest)


def missing_hint(name: str) -> str:
    """What to run when a table is missing (``run `custembed score` first``)."""
    spec = TABLES.get(name)
    if spec is None or spec.written_by == "any job" or spec.kind == FILES:
        return "run the job that writes it first"
    return f"run `custembed {spec.written_by}` first"


# -- location rule ---------------------------------------------------------------


def physical_name(logical: str, database: str, overrides: Mapping[str, str] | None = None) -> str:
    """Catalogue name of a logical table: ```db`.`t```, or an override as given when it names a database."""
    physical = (overrides or {}).get(logical, logical)
    return physical if "." in physical else f"`{database}`.`{physical}`"


def split_name(name: str, database: str) -> tuple[str, str]:
    """``(database, table)`` of a physical name with or without a database (backticks removed)."""
    bare = name.replace("`", "")
    if "." in bare:
        database, bare = bare.split(".", 1)
    if not bare or not database:
        raise ValueError(f"table and database must not be empty, got database={database!r} table={bare!r}")
    return database, bare


def warehouse_dir(lake_dir: str | os.PathLike[str]) -> str:
    """URI of the embedded default's warehouse directory under the lake (``spark.sql.warehouse.dir``)."""
    return lakefs.join(os.fspath(lake_dir), WAREHOUSE_DIR)


def warehouse_path(
    lake_dir: str | os.PathLike[str],
    name: str,
    database: str = DEFAULT_DATABASE,
    overrides: Mapping[str, str] | None = None,
) -> str:
    """URI of a table's directory in the embedded warehouse (not checked for existence).

    Args:
        lake_dir: the project's ``project.lake_dir``.
        name: logical table name (``embeddings``), or ``database.table`` for a table in another database.
        database: catalogue database (``project.database``).
        overrides: the config's ``tables`` remapping, applied to logical names.

    Returns:
        ``<lake_dir>/warehouse/<database>.db/<table>``, or ``<lake_dir>/warehouse/<table>`` for ``default``.
    """
    physical = (overrides or {}).get(name, name)
    database, bare = split_name(physical, database)
    if database == "default":
        return f"{warehouse_dir(lake_dir)}/{bare}"
    return f"{warehouse_dir(lake_dir)}/{database}.db/{bare}"


def view_sql(name: str, database: str, overrides: Mapping[str, str] | None = None) -> str:
    """``CREATE OR REPLACE VIEW`` statement of a registered view."""
    spec = table(name)
    if spec.kind != VIEW_KIND or spec.view_of is None:
        raise ValueError(f"table {name} is not a view")
    source = physical_name(spec.view_of, database, overrides)
    return (
        f"CREATE OR REPLACE VIEW {physical_name(name, database, overrides)} AS\n"
        f"        SELECT {', '.join(spec.column_names)}\n"
        f"        FROM {source}\n"
        f"        WHERE {spec.view_where.format(table=source)}"
    )

"""Step 3a: an embedding for every customer of a sequences partition, with an Arrow-batched pandas UDF.

Sources: a registered encoder (by name and alias or version, from MLflow), a
saved encoder directory (``--model-path``), or ``counts``: the non-neural
baseline (log counts of each action and recency). Both views (``train`` for
classifier training and evaluation, ``current`` for scoring) are embedded.
The encoder is loaded once per Python worker; nothing is collected to the
driver.

Incremental (``embed.incremental``, the default): every row stores a fingerprint
of what its vector depends on (the model and the customer's sequence columns the
model reads, :func:`fingerprint`). A customer whose fingerprint equals the one of
their row in the latest earlier run of the same source and view gets that vector
copied; only the others go through the model. Today's sequences alone define the
rows: a customer gone today is not carried, a new one is embedded.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, FloatType, StringType, StructField, StructType

from custembed import schemas
from custembed.catalogue import N_SPECIAL
from custembed.config import Config, ConfigError
from custembed.tables import FINGERPRINT, SOURCE, TEXT, TOKENS, VECTOR
from custembed.tracking import Tracking, tracking_for

if TYPE_CHECKING:
    import pandas as pd

    from custembed.io import Lake

log = logging.getLogger(__name__)

BASELINE = "counts"
VECTOR_SCHEMA = "customer_id string, vector array<float>"
ENCODER_INPUTS = (TOKENS, TEXT, schemas.GAPS, schemas.AMOUNTS)  # every column an encoder may read (each reads some)
BASELINE_INPUTS = (TOKENS,)  # what count_vectors reads
# Part of every fingerprint: bump it when a vector comes to depend on more than its model key and
# input columns (a change in how the counts or the pooling are computed), so that no vector is carried.
FINGERPRINT_FORMAT = 1
_CARRIED = "_carried"
_CARRIED_VECTOR = "_carried_vector"


def keeping_columns(
    fn: Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]], columns: Sequence[str]
) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """A ``mapInPandas`` function that runs ``fn`` on each batch and adds the batch's ``columns`` to its output.

    ``fn`` must give one frame per batch with its rows in order (the embedding and counts
    functions do); the columns pass by position, so a vector keeps its own row's values.
    """
    keep = list(columns)

    def run(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for frame in frames:
            for out in fn(iter([frame])):
                if len(out) != len(frame):
                    raise ValueError(f"the vector function gave {len(out)} rows for a batch of {len(frame)}")
                yield out.assign(**{c: frame[c].to_numpy() for c in keep})

    return run


def _vector_schema(sequences: DataFrame, keep: Sequence[str]) -> StructType:
    """(customer_id, vector, *keep) with the kept columns' types as in ``sequences``."""
    base = [StructField(schemas.CUSTOMER_ID, StringType()), StructField(VECTOR, ArrayType(FloatType()))]
    return StructType(base + [sequences.schema[c] for c in keep])


def embed_sequences(
    sequences: DataFrame,
    *,
    model_dir: str,
    batch_size: int,
    pooling: str | None,
    threads: int,
    keep: Sequence[str] = (),
    partitions: int | None = None,
    inputs: Sequence[str] | None = None,
) -> DataFrame:
    """(customer_id, <the encoder's input columns>, *keep, ...) → (customer_id, vector, *keep) with the encoder
    saved in ``model_dir``, over ``partitions`` partitions (a shuffle; default: as they come).

    Only the columns the encoder reads are selected, before the shuffle: ``inputs``, by default
    read from the saved encoder (``saved_input_columns``). BERT4Rec's rows do not carry the
    ``text`` column, the widest, to the Python workers."""
    from custembed.encoders import saved_input_columns
    from custembed.udfs.embed import embed_partitions

    fn = embed_partitions(model_dir, batch_size=batch_size, pooling=pooling, threads=threads)
    columns = saved_input_columns(model_dir) if inputs is None else inputs
    rows = sequences.select(schemas.CUSTOMER_ID, *columns, *keep)
    if partitions:
        rows = rows.repartition(partitions)
    if not keep:
        return rows.mapInPandas(fn, VECTOR_SCHEMA)
    return rows.mapInPandas(keeping_columns(fn, keep), _vector_schema(rows, keep))


def count_vectors(sequences: DataFrame, *, vocab_size: int, no_action_id: int, keep: Sequence[str] = ()) -> DataFrame:
    """(customer_id, tokens, *keep, ...) → (customer_id, vector, *keep) of the counts-and-recency baseline."""
    from custembed.udfs.baseline import count_partitions

    fn = count_partitions(vocab_size=vocab_size, n_special=N_SPECIAL, no_action_id=no_action_id)
    rows = sequences.select(schemas.CUSTOMER_ID, *BASELINE_INPUTS, *keep)
    if not keep:
        return rows.mapInPandas(fn, VECTOR_SCHEMA)
    return rows.mapInPandas(keeping_columns(fn, keep), _vector_schema(rows, keep))


def fingerprint(sequences: DataFrame, *, columns: Sequence[str], model_key: str) -> DataFrame:
    """(customer_id, <columns>, ...) → the same rows and ``fingerprint`` (bigint).

    The fingerprint is xxhash64 of ``model_key`` (with :data:`FINGERPRINT_FORMAT`) and, per
    column, of its null flag and value hashed on their own: a null and an empty value differ,
    and a token cannot move from one column into the next without changing it. Customers are
    compared with their own earlier row only, so 64 bits leave a changed customer carried
    with odds of 2^-64.
    """
    per_column = [F.xxhash64(F.col(c).isNull(), F.col(c)) for c in columns]
    return sequences.withColumn(FINGERPRINT, F.xxhash64(F.lit(f"{FINGERPRINT_FORMAT}:{model_key}"), *per_column))


def split_unchanged(fingerprinted: DataFrame, earlier: DataFrame) -> tuple[DataFrame, DataFrame]:
    """(carried, changed) of one view's fingerprinted sequences against an earlier run's embeddings.

    ``fingerprinted``: (customer_id, fingerprint, ...), today's rows; ``earlier``: (customer_id,
    fingerprint, vector, ...), one earlier partition of the same source and view.
    ``carried``: (customer_id, fingerprint, vector) of the customers whose fingerprint equals their
    earlier row's, the vector copied. ``changed``: the other rows of ``fingerprinted`` as they are
    (new customers, changed inputs or model, earlier rows without a fingerprint). A customer only
    in ``earlier`` is in neither.
    """
    previous = earlier.where(F.col(FINGERPRINT).isNotNull()).select(
        schemas.CUSTOMER_ID, FINGERPRINT, F.col(VECTOR).alias(_CARRIED_VECTOR), F.lit(True).alias(_CARRIED)
    )
    joined = fingerprinted.join(previous, [schemas.CUSTOMER_ID, FINGERPRINT], "left")
    # both branches share the join's exchanges (Spark reuses them), so the join runs once per write
    carried = joined.where(F.col(_CARRIED).isNotNull()).select(
        schemas.CUSTOMER_ID, FINGERPRINT, F.col(_CARRIED_VECTOR).alias(VECTOR)
    )
    changed = joined.where(F.col(_CARRIED).isNull()).select(*fingerprinted.columns)
    return carried, changed


@dataclass(frozen=True)
class EmbeddingModel:
    """What embeds a run's sequences.

    Attributes:
        name: ``model_name`` as the table records it (registry model, model directory or ``counts``).
        version: ``model_version`` as the table records it.
        key: what the fingerprint holds of the model: anything that changes the vectors of the same inputs.
        inputs: the sequence columns the vectors depend on.
        vectors: (customer_id, fingerprint, <inputs>) → (customer_id, vector, fingerprint).
    """

    name: str
    version: str
    key: str
    inputs: tuple[str, ...]
    vectors: Callable[[DataFrame], DataFrame]


def eligible_version(
    versions: Sequence[tuple[str, Mapping[str, str]]], *, requested: str, by_alias: bool, feature_cutoff: str
) -> tuple[str, str]:
    """(version, why) of the encoder to embed with, so that it never saw data after ``feature_cutoff``.

    ``versions``: (version, tags) newest first; a version's training cutoff is its
    ``custembed.train_cutoff`` tag. The requested version when it was trained on data up to
    the cutoff (or records no cutoff: registered before it was recorded; said in ``why``).
    Asked by alias, a later-trained holder gives way to the newest version trained up to the
    cutoff. A ``ConfigError`` when asked by number, or when no version qualifies.
    """
    from custembed.tracking import TAG_CUTOFF

    tags = dict(versions)
    cutoff = tags.get(requested, {}).get(TAG_CUTOFF)
    if not cutoff:
        return requested, f"version {requested} records no training cutoff; not checked against {feature_cutoff}"
    if cutoff <= feature_cutoff:
        return requested, f"version {requested} trained on data up to {cutoff} <= feature cutoff {feature_cutoff}"
    earlier = [v for v, t in versions if t.get(TAG_CUTOFF) and t[TAG_CUTOFF] <= feature_cutoff]
    problem = f"version {requested} was trained on data up to {cutoff}, after the feature cutoff {feature_cutoff}"
    if not by_alias or not earlier:
        hint = f"versions trained up to it: {', '.join(earlier)}" if earlier else "no version is trained up to it"
        raise ConfigError(f"{problem} (its labels would leak); {hint}; or pass --model-path")
    chosen = earlier[0]
    return chosen, f"{problem}; using version {chosen}, trained up to {tags[chosen][TAG_CUTOFF]}"


def registered_encoder(
    tracking: Tracking, encoder_name: str, ref: str, *, feature_cutoff: str, staging: str | None = None
) -> tuple[str, str]:
    """(URI, version) of the registered encoder ``ref`` names, or of an earlier one (see
    :func:`eligible_version`); logs which and why. The URI is one executors load from
    (:meth:`~custembed.tracking.Tracking.encoder_uri`, copies under the lake URI ``staging``)."""
    requested = ref if ref.isdigit() else tracking.alias_version(encoder_name, ref)
    if requested is None:
        return tracking.encoder_uri(encoder_name, ref, staging=staging)  # its error names the missing alias
    version, why = eligible_version(
        tracking.versions(encoder_name), requested=requested, by_alias=not ref.isdigit(), feature_cutoff=feature_cutoff
    )
    log.info("embed %s: %s", encoder_name, why)
    return tracking.encoder_uri(encoder_name, version, staging=staging)


def feature_cutoff(sequences: DataFrame) -> str:
    """The earliest cutoff of the views to embed: no encoder may have seen data after it."""
    row = sequences.agg(F.min("cutoff").alias("cutoff")).first()
    if row is None or row["cutoff"] is None:
        raise ConfigError("no sequences to embed for this run date: run `custembed sequences` first")
    return str(row["cutoff"])


def eligible_encoder(
    lake: Lake, cfg: Config, sequences: DataFrame, encoder_name: str, ref: str | None
) -> tuple[str, str, str]:
    """(URI, version, registry model name) of the registered encoder ``ref`` (default ``embed.model_ref``)
    names, eligible for ``sequences``' feature cutoff (:func:`registered_encoder`), copied under the lake."""
    tracking = tracking_for(cfg.tracking, cfg.project.lake_dir)
    model_dir, version = registered_encoder(
        tracking,
        encoder_name,
        ref or cfg.embed.model_ref,
        feature_cutoff=feature_cutoff(sequences),
        staging=lake.path("models"),
    )
    return model_dir, version, tracking.model_name(encoder_name)


def embedding_model(
    lake: Lake,
    cfg: Config,
    sequences: DataFrame,
    *,
    day: str,
    source: str,
    ref: str | None,
    model_path: str | None,
) -> EmbeddingModel:
    """The model of ``source`` for the run of ``day``: the counts baseline, a saved directory or a registered
    encoder (see :func:`registered_encoder`)."""
    from custembed.jobs.common import run_catalogue

    if source == BASELINE:
        catalogue = run_catalogue(lake, cfg, day)
        vocab_size, no_action_id = catalogue.vocab_size, catalogue.no_action_id
        return EmbeddingModel(
            name=BASELINE,
            version=catalogue.name,
            key=f"{BASELINE}:{catalogue.name}:vocab={vocab_size}:no_action={no_action_id}:special={N_SPECIAL}",
            inputs=BASELINE_INPUTS,
            vectors=lambda rows: count_vectors(
                rows, vocab_size=vocab_size, no_action_id=no_action_id, keep=(FINGERPRINT,)
            ),
        )
    if model_path:
        model_dir, version, model_name = model_path, "path", model_path
    else:
        model_dir, version, model_name = eligible_encoder(lake, cfg, sequences, source, ref)
    from custembed.encoders import saved_input_columns

    settings = cfg.embed
    inputs = saved_input_columns(model_dir)  # read once: the fingerprint and every view's UDF use them
    return EmbeddingModel(
        name=model_name,
        version=str(version),
        # a registered version never changes; a --model-path directory is trusted not to be rewritten in place
        key=f"{model_name}:{version}:pooling={settings.pooling}",
        inputs=inputs,
        vectors=lambda rows: embed_sequences(
            rows,
            model_dir=model_dir,
            batch_size=settings.batch_size,
            pooling=settings.pooling,
            threads=settings.threads_per_worker or 1,
            keep=(FINGERPRINT,),
            partitions=settings.partitions,
            inputs=inputs,
        ),
    )


def earlier_runs(lake: Lake, *, source: str, day: str, views: Sequence[str]) -> dict[str, str]:
    """View → the latest run date before ``day`` with embeddings of ``source`` (a view never embedded: absent).

    On Parquet the catalogue's partition list answers without opening a file; other formats
    (Delta, Iceberg) answer from their own metadata through an aggregate of the partition columns.
    """
    if not lake.exists("embeddings"):
        return {}
    if lake.table_format == "parquet":
        partitions = lake.spark.sql(f"SHOW PARTITIONS {lake.table('embeddings')}").collect()
        latest: dict[str, str] = {}
        for row in partitions:
            values = dict(part.split("=", 1) for part in row[0].split("/"))
            dt_, view = unquote(values[schemas.DT]), unquote(values[schemas.VIEW])
            if unquote(values[SOURCE]) == source and view in views and dt_ < day and dt_ > latest.get(view, ""):
                latest[view] = dt_
        return latest
    rows = (
        lake.read("embeddings")
        .where((F.col(SOURCE) == source) & (F.col(schemas.DT) < day) & F.col(schemas.VIEW).isin(list(views)))
        .groupBy(schemas.VIEW)
        .agg(F.max(schemas.DT).alias(schemas.DT))
        .collect()
    )
    return {r[schemas.VIEW]: r[schemas.DT] for r in rows}


def run(
    spark: SparkSession,
    cfg: Config,
    *,
    run_date: dt.date,
    source: str,
    ref: str | None = None,
    model_path: str | None = None,
) -> dict[str, Any]:
    """Reads ``sequences`` of the run date (and, incremental, the latest earlier ``embeddings`` of ``source``);
    writes ``embeddings`` (``source``, both views) and a ``runs`` row."""
    from custembed.jobs.common import lake_from, record_run

    started = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    t0 = time.monotonic()
    lake = lake_from(spark, cfg)
    day = run_date.isoformat()
    sequences = lake.read_partition("sequences", day)
    views = list(cfg.embed.views)
    sequences = sequences.where(F.col(schemas.VIEW).isin(views))
    # Arrow batches of the configured size reach the UDF; partitions spread them over the executors.
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(cfg.embed.arrow_batch_rows))
    model = embedding_model(lake, cfg, sequences, day=day, source=source, ref=ref, model_path=model_path)
    earlier = earlier_runs(lake, source=source, day=day, views=views) if cfg.embed.incremental else {}
    parts, carried_parts = [], []
    for v in views:
        rows = fingerprint(sequences.where(F.col(schemas.VIEW) == v), columns=model.inputs, model_key=model.key)
        if v not in earlier:
            parts.append(model.vectors(rows).withColumn(schemas.VIEW, F.lit(v)))
            continue
        carried, changed = split_unchanged(rows, lake.read_partition("embeddings", earlier[v], view=v, source=source))
        carried_parts.append(carried.withColumn(schemas.VIEW, F.lit(v)))
        parts += [carried_parts[-1], model.vectors(changed).withColumn(schemas.VIEW, F.lit(v))]
    vectors = parts[0]
    for part in parts[1:]:
        vectors = vectors.unionByName(part)
    embeddings = vectors.select(
        schemas.CUSTOMER_ID,
        F.lit(model.name).alias("model_name"),
        F.lit(model.version).alias("model_version"),
        VECTOR,
        FINGERPRINT,
        F.lit(day).alias(schemas.DT),
        schemas.VIEW,
        F.lit(source).alias(SOURCE),
    )
    lake.write_partitions(embeddings, "embeddings")
    written = lake.read_partition("embeddings", day, source=source)
    per_view = {
        r[schemas.VIEW]: int(r["n"]) for r in written.groupBy(schemas.VIEW).agg(F.count("*").alias("n")).collect()
    }
    counts = {v: per_view[v] for v in views if v in per_view}
    carried_counts = carried_per_view(carried_parts)
    embedded_counts = {v: n - carried_counts.get(v, 0) for v, n in counts.items()}
    for v in counts:
        log.info(
            "embed %s %s: %d customers, %d carried over from %s, %d embedded",
            source,
            v,
            counts[v],
            carried_counts.get(v, 0),
            earlier.get(v, "no earlier run"),
            embedded_counts[v],
        )
    seconds = time.monotonic() - t0
    customers = sum(counts.values())
    summary = {
        "source": source,
        "model": f"{model.name} version {model.version}",
        "customers": counts,
        "incremental": cfg.embed.incremental,
        "carried_from": {v: earlier[v] for v in counts if v in earlier},
        "carried_over": {v: carried_counts.get(v, 0) for v in counts},
        "embedded": embedded_counts,
        "seconds": round(seconds, 1),
        "customers_per_s": round(customers / max(seconds, 1e-9), 1),
    }
    record_run(
        lake,
        job=f"embed:{source}",
        run_date=run_date,
        started=started,
        status="succeeded",
        rows_read=customers,
        rows_accepted=customers,
        rows_rejected=0,
        details=json.dumps(summary),
    )
    return summary


def carried_per_view(carried_parts: Sequence[DataFrame]) -> dict[str, int]:
    """View → rows carried over, of the carried rows of each view (one Spark job over the key columns)."""
    if not carried_parts:
        return {}
    keys = carried_parts[0].select(schemas.VIEW)
    for part in carried_parts[1:]:
        keys = keys.unionByName(part.select(schemas.VIEW))
    return {r[schemas.VIEW]: int(r["n"]) for r in keys.groupBy(schemas.VIEW).agg(F.count("*").alias("n")).collect()}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--encoder",
        default="bert4rec",
        help=f"a name under train.encoders (registry model <prefix>-<name>), or {BASELINE!r}",
    )
    parser.add_argument("--ref", help="registry alias or version (default: embed.model_ref)")
    parser.add_argument("--model-path", help="a saved encoder directory instead of the registry")


def main(argv: Sequence[str] | None = None) -> int:
    from custembed.jobs.common import job_main

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    def go(spark: SparkSession, cfg: Config, args: argparse.Namespace, run_date: dt.date) -> dict[str, Any]:
        if args.encoder != BASELINE and args.encoder not in cfg.train.encoders and not args.model_path:
            raise ConfigError(f"unknown encoder {args.encoder!r} (train.encoders: {', '.join(cfg.train.encoders)})")
        return run(spark, cfg, run_date=run_date, source=args.encoder, ref=args.ref, model_path=args.model_path)

    return job_main("embed", argv, add_arguments, go)

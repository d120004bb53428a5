"""Step 3a: an embedding for every customer of a sequences partition, with an Arrow-batched pandas UDF.

Sources: a registered encoder (by name and alias or version, from MLflow), a
saved encoder directory (``--model-path``), or ``counts``: the non-neural
baseline (log counts of each action and recency). Both views (``train`` for
classifier training and evaluation, ``current`` for scoring) are embedded.
The encoder is loaded once per Python worker; nothing is collected to the
driver.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from custembed import schemas
from custembed.catalogue import N_SPECIAL
from custembed.config import Config, ConfigError
from custembed.tracking import Tracking, tracking_for

log = logging.getLogger(__name__)

BASELINE = "counts"
VECTOR_SCHEMA = "customer_id string, vector array<float>"


def embed_sequences(
    sequences: DataFrame, *, model_dir: str, batch_size: int, pooling: str | None, threads: int
) -> DataFrame:
    """(customer_id, tokens, text, gaps, ...) → (customer_id, vector) with the encoder saved in ``model_dir``."""
    from custembed.udfs.embed import embed_partitions

    fn = embed_partitions(model_dir, batch_size=batch_size, pooling=pooling, threads=threads)
    return sequences.select(schemas.CUSTOMER_ID, "tokens", "text", schemas.GAPS).mapInPandas(fn, VECTOR_SCHEMA)


def count_vectors(sequences: DataFrame, *, vocab_size: int, no_action_id: int) -> DataFrame:
    """(customer_id, tokens, ...) → (customer_id, vector) of the counts-and-recency baseline."""
    from custembed.udfs.baseline import count_partitions

    fn = count_partitions(vocab_size=vocab_size, n_special=N_SPECIAL, no_action_id=no_action_id)
    return sequences.select(schemas.CUSTOMER_ID, "tokens").mapInPandas(fn, VECTOR_SCHEMA)


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


def run(
    spark: SparkSession,
    cfg: Config,
    *,
    run_date: dt.date,
    source: str,
    ref: str | None = None,
    model_path: str | None = None,
) -> dict[str, Any]:
    """Reads ``sequences`` of the run date; writes ``embeddings`` (``source``, both views) and a ``runs`` row."""
    from custembed.jobs.common import lake_from, record_run, run_catalogue

    started = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    t0 = time.monotonic()
    lake = lake_from(spark, cfg)
    day = run_date.isoformat()
    sequences = lake.read_partition("sequences", day)
    views = list(cfg.embed.views)
    sequences = sequences.where(F.col(schemas.VIEW).isin(views))
    # Arrow batches of the configured size reach the UDF; partitions spread them over the executors.
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(cfg.embed.arrow_batch_rows))
    if source == BASELINE:
        catalogue = run_catalogue(lake, cfg, day)
        version = catalogue.name
        model_name = BASELINE
        parts = [
            count_vectors(
                sequences.where(F.col(schemas.VIEW) == v),
                vocab_size=catalogue.vocab_size,
                no_action_id=catalogue.no_action_id,
            ).withColumn(schemas.VIEW, F.lit(v))
            for v in views
        ]
    else:
        if model_path:
            model_dir, version, model_name = model_path, "path", model_path
        else:
            tracking = tracking_for(cfg.tracking, cfg.project.lake_dir)
            model_dir, version = registered_encoder(
                tracking,
                source,
                ref or cfg.embed.model_ref,
                feature_cutoff=feature_cutoff(sequences),
                staging=lake.path("models"),
            )
            model_name = tracking.model_name(source)
        threads = cfg.embed.threads_per_worker or 1
        parts = [
            embed_sequences(
                sequences.where(F.col(schemas.VIEW) == v).repartition(cfg.embed.partitions),
                model_dir=model_dir,
                batch_size=cfg.embed.batch_size,
                pooling=cfg.embed.pooling,
                threads=threads,
            ).withColumn(schemas.VIEW, F.lit(v))
            for v in views
        ]
    vectors = parts[0]
    for part in parts[1:]:
        vectors = vectors.unionByName(part)
    embeddings = vectors.select(
        schemas.CUSTOMER_ID,
        F.lit(model_name).alias("model_name"),
        F.lit(str(version)).alias("model_version"),
        "vector",
        F.lit(day).alias(schemas.DT),
        schemas.VIEW,
        F.lit(source).alias("source"),
    )
    lake.write_partitions(embeddings, "embeddings")
    written = lake.read_partition("embeddings", day, source=source)
    per_view = written.groupBy(schemas.VIEW).agg(F.count("*").alias("n")).collect()
    counts = {r[schemas.VIEW]: int(r["n"]) for r in per_view}
    seconds = time.monotonic() - t0
    customers = sum(counts.values())
    summary = {
        "source": source,
        "model": f"{model_name} version {version}",
        "customers": counts,
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

"""``custembed report``: one self-contained HTML file for a run date.

Reads only small things to the driver: the metric and lift tables (a few rows
per product and source), a bounded, seeded sample of embeddings for the 2-D
projections, run records, a few dozen sequences for the attention maps, and
the MLflow metric history of each encoder's training run for its curves.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from custembed import lakefs, schemas
from custembed.config import Config
from custembed.io import Lake
from custembed.projections import sample_prefix, sample_sizes

if TYPE_CHECKING:
    from custembed.report import TrainingHistory
    from custembed.tracking import Tracking

log = logging.getLogger(__name__)

PROJECTION_SAMPLE = 1500
ATTENTION_SAMPLE = 48
# The MLflow keys the training loop logs as curves (custembed.training.loop): the loss every step,
# the validation figures after each epoch; ``weights_step`` comes back as ``final_weights_step``.
CURVE_KEYS = ("train_loss", "val_loss", "val_accuracy")
RANKING_CURVE_KEY = re.compile(r"(hr|ndcg)_at_\d+")
KEPT_STEP_KEY = "final_weights_step"


def _latest_details(lake: Lake, day: str, job: str) -> dict[str, Any]:
    rows = (
        lake.read_partition("runs", day)
        .where((F.col("job") == job) & (F.col("status") == "succeeded"))
        .orderBy(F.col("finished_at").desc())
        .limit(1)
        .collect()
    )
    if not rows or not rows[0]["details"]:
        return {}
    try:
        return dict(json.loads(rows[0]["details"]))
    except json.JSONDecodeError:
        return {}


def model_info(lake: Lake, cfg: Config, day: str, sources: Sequence[str]) -> pd.DataFrame:
    """Size, training time, inference throughput and validation metrics per source."""
    from custembed.tracking import tracking_for

    rows = []
    for source in sources:
        trained = _latest_details(lake, day, f"train:{source}")
        embedded = _latest_details(lake, day, f"embed:{source}")
        parameters: float = float("nan")
        hidden: float = float("nan")
        if source in cfg.train.encoders:
            try:
                from custembed.encoders import load_encoder

                model_dir, _ = tracking_for(cfg.tracking, cfg.project.lake_dir).resolve(source, cfg.embed.model_ref)
                encoder = load_encoder(model_dir)
                parameters = float(sum(p.numel() for p in encoder.model.parameters()))
                hidden = float(encoder.hidden_size)
            except Exception as e:  # noqa: BLE001 - the report shows what it can
                log.warning("report: no model size for %s (%s)", source, str(e).splitlines()[0])
        rows.append(
            {
                "source": source,
                "parameters": parameters,
                "hidden_size": hidden,
                "train_seconds": trained.get("seconds", np.nan),
                "embed_customers_per_s": embedded.get("customers_per_s", np.nan),
                "val_loss": trained.get("val_loss", np.nan),
                "val_accuracy": trained.get("val_accuracy", np.nan),
                "hr_at_10": trained.get("hr@10", np.nan),
                "ndcg_at_10": trained.get("ndcg@10", np.nan),
                "no_action_share": trained.get("no_action_share", np.nan),
            }
        )
    return pd.DataFrame(rows)


def trained_encoders(lake: Lake, cfg: Config, day: str, sources: Sequence[str]) -> list[str]:
    """The configured encoders trained for the run: scored on ``day`` or trained on it (``train:<name>`` runs)."""
    trained = {
        row["job"]
        for row in lake.read_partition("runs", day)
        .where((F.col("status") == "succeeded") & F.col("job").startswith("train:"))
        .select("job")
        .distinct()
        .collect()
    }
    return [name for name in cfg.train.encoders if name in sources or f"train:{name}" in trained]


def training_history(tracking: Tracking, encoder_name: str, day: str, ref: str) -> TrainingHistory:
    """The MLflow curves of the run that trained ``encoder_name``: the newest version trained on ``day``,
    else the version ``ref`` (alias or number) names, the one embedded. Why not, when there is none."""
    from custembed.report import TrainingHistory
    from custembed.tracking import TAG_RUN_DATE

    name = tracking.model_name(encoder_name)
    versions = tracking.versions(encoder_name)
    version = next((number for number, tags in versions if tags.get(TAG_RUN_DATE) == day), None)
    how = f"trained on {day}"
    if version is None:
        version = ref if ref.isdigit() else tracking.alias_version(encoder_name, ref)
        how = f"{ref}, none trained on {day}"
    if version is None:
        missing = f"no version of {name} was trained on {day} and none holds the alias {ref}"
        return TrainingHistory(encoder_name, pd.DataFrame(), missing=missing)
    client = tracking.client()
    run_id = client.get_model_version(name, version).run_id
    if not run_id:
        return TrainingHistory(encoder_name, pd.DataFrame(), missing=f"{name} version {version} names no MLflow run")
    logged = client.get_run(run_id).data.metrics
    rows = [
        (key, point.step, point.value)
        for key in sorted(logged)
        if key in CURVE_KEYS or RANKING_CURVE_KEY.fullmatch(key)
        # in logging order: a resumed run's repeated steps come after the first ones
        for point in sorted(client.get_metric_history(run_id, key), key=lambda point: point.timestamp)
    ]
    return TrainingHistory(
        encoder_name,
        pd.DataFrame(rows, columns=["metric", "step", "value"]),
        kept_step=float(logged.get(KEPT_STEP_KEY, math.nan)),
        origin=f"{name} version {version} ({how}), MLflow run {run_id}",
    )


def training_histories(cfg: Config, day: str, encoders: Sequence[str]) -> list[TrainingHistory]:
    """:func:`training_history` of each encoder; a tracking store that cannot answer is the reason shown."""
    from custembed.report import TrainingHistory
    from custembed.tracking import tracking_for

    histories = []
    for name in encoders:
        try:
            tracking = tracking_for(cfg.tracking, cfg.project.lake_dir)
            histories.append(training_history(tracking, name, day, cfg.embed.model_ref))
        except Exception as e:  # noqa: BLE001 - the report shows what it can; MLflow raises many kinds
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            log.warning("report: no training curves for %s (%s)", name, reason)
            histories.append(TrainingHistory(name, pd.DataFrame(), missing=f"no MLflow history: {reason}"))
    return histories


def projection_sample(
    lake: Lake, day: str, source: str, product: str, *, n: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Train-view embeddings of ``source`` for a bounded sample, test-window buyers of ``product`` flagged.

    The customers follow :mod:`custembed.projections`' rule, as ``explore.embedding_sample`` does on the
    same tables: the group sizes from one small aggregate, then the customers with the lowest seeded
    ``md5`` key per group (top-k, no full sort). Returns ``(embeddings [m, H] float32, is_buyer [m])``,
    rows in customer-id order, ``m <= n``.
    """
    customer = F.col(schemas.CUSTOMER_ID)
    labels = (
        lake.read_partition("labels", day)
        .where((F.col("product") == product) & (F.col("label_window") == "test"))
        .select(customer, (F.col("label") == 1).alias("buyer"))
        .dropDuplicates([schemas.CUSTOMER_ID])
    )
    embedded = lake.read_partition("embeddings", day, view=schemas.VIEW_TRAIN, source=source)
    joined = embedded.select(customer).dropDuplicates().join(labels, schemas.CUSTOMER_ID)
    counts = {bool(r["buyer"]): int(r["n"]) for r in joined.groupBy("buyer").agg(F.count("*").alias("n")).collect()}
    keep_buyers, keep_others = sample_sizes(counts.get(True, 0), counts.get(False, 0), n)
    key = F.md5(F.concat(F.lit(sample_prefix(seed)), customer))
    chosen = (
        joined.where("buyer")
        .orderBy(key, customer)
        .limit(keep_buyers)
        .unionByName(joined.where("not buyer").orderBy(key, customer).limit(keep_others))
    )
    sample = (
        embedded.join(chosen, schemas.CUSTOMER_ID)
        .select(schemas.CUSTOMER_ID, "vector", "buyer")
        .orderBy(schemas.CUSTOMER_ID)
        .toPandas()
    )
    if not len(sample):
        return np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=bool)
    return np.stack(sample["vector"].to_numpy()).astype(np.float32), sample["buyer"].to_numpy().astype(bool)


def projections(
    lake: Lake, day: str, sources: Sequence[str], product: str, seed: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A seeded sample of train-view embeddings per source, with test-window buyers of ``product`` flagged."""
    result = {}
    for source in sources:
        embeddings, is_buyer = projection_sample(lake, day, source, product, n=PROJECTION_SAMPLE, seed=seed)
        if len(embeddings):
            result[source] = (embeddings, is_buyer)
    return result


def attention_maps(lake: Lake, cfg: Config, day: str) -> tuple[dict[str, dict[str, np.ndarray]], list[str]]:
    """Behaviour-attention of the first fine-tuned masked LM, before (the checkpoint it was fine-tuned
    from, as recorded with it) and after fine-tuning."""
    from custembed.analysis import encoder_behaviour_attention
    from custembed.encoders import build_encoder, load_encoder
    from custembed.jobs.common import run_catalogue
    from custembed.tracking import initial_checkpoint, tracking_for

    catalogue = run_catalogue(lake, cfg, day)
    behaviours = [b for b in catalogue.behaviours]
    name = next((n for n, e in cfg.train.encoders.items() if e.kind == "mlm"), None)
    if name is None:
        return {}, behaviours
    model_dir, _ = tracking_for(cfg.tracking, cfg.project.lake_dir).resolve(name, cfg.embed.model_ref)
    # the model it was fine-tuned from, not today's configured checkpoint
    checkpoint, before_config = initial_checkpoint(model_dir)
    sample = (
        lake.read_partition("sequences", day, view=schemas.VIEW_TRAIN)
        .where("n_events >= 5")
        .orderBy(F.xxhash64(schemas.CUSTOMER_ID))
        .limit(ATTENTION_SAMPLE)
        .select("text", "tokens")
        .toPandas()
    )
    texts, tokens = sample["text"].tolist(), sample["tokens"].tolist()
    before = build_encoder("mlm", **before_config)
    after = load_encoder(model_dir)
    id_behaviour = catalogue.id_to_behaviour()
    log.info("report: attention of %s before (from %s) and after fine-tuning", name, checkpoint)
    return {
        f"pre-trained ({name})": encoder_behaviour_attention(before, texts, tokens, behaviours, id_behaviour),
        f"fine-tuned ({name})": encoder_behaviour_attention(after, texts, tokens, behaviours, id_behaviour),
    }, behaviours


def journeys_data(
    spark: SparkSession, cfg: Config, lake: Lake, day: str
) -> tuple[pd.DataFrame | None, dict[tuple[str, str], np.ndarray] | None]:
    """System B's metrics and heat maps of ``day`` when ``journeys-evaluate`` wrote them, else ``(None, None)``."""
    if not lake.exists("journey_metrics"):
        return None, None
    metrics = lake.read_partition("journey_metrics", day).drop(schemas.DT).toPandas()
    if metrics.empty:
        return None, None
    from custembed.jobs.journeys_report import heatmaps

    try:
        return metrics, heatmaps(spark, cfg, day)
    except (ImportError, ValueError) as e:
        log.warning("report: no journey heat maps (%s)", e)
        return metrics, None


def run(spark: SparkSession, cfg: Config, *, run_date: dt.date, output: str | None = None) -> dict[str, Any]:
    """Reads model_metrics, decile_lift, runs, labels, embeddings, sequences and the MLflow training runs;
    writes one HTML report file."""
    from custembed.comparison import probe_table
    from custembed.jobs.common import lake_from
    from custembed.report import ReportData, render_report

    lake = lake_from(spark, cfg)
    day = run_date.isoformat()
    metrics = lake.read_partition("model_metrics", day).drop(schemas.DT).toPandas()
    lift = lake.read_partition("decile_lift", day).drop(schemas.DT).toPandas()
    classifier = cfg.score.classifier
    sources = sorted(metrics["source"].unique()) if len(metrics) else []
    comparison = cfg.score.comparison
    comparison_source = comparison.source or (sources[0] if sources else None)
    table4 = metrics[(metrics["product"] == comparison.product) & (metrics["source"] == comparison_source)]
    default = metrics[metrics["classifier"] == classifier]
    focus = comparison.product or (cfg.score.products[0] if cfg.score.products else "")
    steps = _latest_details(lake, day, "sequences")
    seq_run = (
        lake.read_partition("runs", day)
        .where("job = 'sequences' and status = 'succeeded'")
        .orderBy(F.col("finished_at").desc())
        .limit(1)
        .collect()
    )
    summary: dict[str, object] = {
        "run date": day,
        "feature cutoff": steps.get("cutoff", "?"),
        "catalogue": steps.get("catalogue", "?"),
        "tables": f"{cfg.project.database} ({lakefs.qualify(cfg.project.lake_dir)})",
    }
    if seq_run:
        r = seq_run[0]
        summary.update(
            {
                "rows read": r["rows_read"],
                "rows accepted": r["rows_accepted"],
                "rows rejected": f"{r['rows_rejected']} {dict(r['rejected_by_reason'])}",
                "sequences": json.dumps(steps.get("sequences", {})),
            }
        )
    notes = [
        "Metrics are on the test label window at the natural buy rate; classifiers were trained on the train "
        "window, balanced 50/50 (score.balance).",
        "AUC is exact (ties count one half); lift = buy rate in a decile / overall buy rate; decile 1 = the 10 % "
        "highest scores.",
    ]
    try:
        attention, labels = attention_maps(lake, cfg, day)
    except Exception as e:  # noqa: BLE001 - a missing model empties that section, not the report
        log.warning("report: no attention maps (%s)", str(e).splitlines()[0])
        attention, labels = {}, []
        notes.append(f"attention maps not available: {str(e).splitlines()[0]}")
    segments = lake.read_partition("segment_profiles", day).toPandas() if lake.exists("segment_profiles") else None
    nextitem = lake.read_partition("nextitem_metrics", day).toPandas() if lake.exists("nextitem_metrics") else None
    adaptation = lake.read_partition("adaptation_stats", day).toPandas() if lake.exists("adaptation_stats") else None
    journey_metrics, journey_maps = journeys_data(spark, cfg, lake, day)
    data = ReportData(
        title="custembed: customer embeddings, propensity and lift",
        run_date=day,
        generated_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        summary=summary,
        default_classifier=classifier,
        metrics=default.reset_index(drop=True),
        decile_lift=lift[lift["classifier"] == classifier].reset_index(drop=True),
        classifier_comparison=table4.reset_index(drop=True),
        probes=probe_table(metrics, first=classifier),
        model_info=model_info(lake, cfg, day, sources),
        training_histories=training_histories(cfg, day, trained_encoders(lake, cfg, day, sources)),
        projections=projections(lake, day, sources, focus, cfg.score.seed),
        attention=attention or None,
        attention_labels=labels or None,
        segments=segments,
        nextitem=nextitem,
        adaptation=adaptation,
        notes=notes + [f"projections coloured by buyers of {focus} in the test window"],
        journey_metrics=journey_metrics,
        journey_heatmaps=journey_maps,
    )
    target = output or lake.path("reports", f"report-{day}.html")
    return {"report": render_report(data, target)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", help="HTML file to write (default: <lake>/reports/report-<date>.html)")


def main(argv: Sequence[str] | None = None) -> int:
    from custembed.jobs.common import job_main

    return job_main(
        "report",
        argv,
        add_arguments,
        lambda spark, cfg, args, run_date: run(spark, cfg, run_date=run_date, output=args.output),
    )

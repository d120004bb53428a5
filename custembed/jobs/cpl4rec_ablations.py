"""``custembed cpl4rec-ablations``: CPL4Rec's backbone once, its adaptations side by side, one command.

From the prompt-stage encoder ``--encoder`` (default ``cpl4rec``, a ``cpl4rec`` entry of
``train.encoders`` with ``stage: prompt`` and ``backbone: <pretrain entry>``):

1. the backbone entry is trained through the train job (or, when a version was already
   registered from the same sequences and config, reused) and takes the alias;
2. each variant of :data:`VARIANTS` is the prompt-stage entry with one switch changed,
   trained through the same train job (TorchDistributor, checkpoints, MLflow), registered
   under its own name (``cpl4rec_no_pfg`` ...): ``full`` (prompts, PFG, compactness),
   ``no_prompts`` (head and gate on the frozen backbone), ``no_pfg`` (last layer instead of the
   gate), ``no_compactness`` (``compactness: 0``) and ``finetune`` (the backbone unfrozen:
   what prompt learning is compared with for parameter efficiency);
3. every variant, and the backbone alone (a ``[mask]`` step of the target behaviour read by
   its MLM head, no adaptation), is evaluated by ``evaluate-nextitem`` on the same
   leave-one-out splits (full and sampled protocols, intervals) into ``nextitem_metrics``
   under its own model name;
4. ``adaptation_stats`` gets one row per variant: trainable and total parameters and the
   adaptation time; the same figures go to the variant's MLflow run.

The summary table prints HR@10 / NDCG@10 of each model beside its trainable share.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from pyspark.sql import SparkSession

from custembed import schemas
from custembed.config import Config, ConfigError

log = logging.getLogger(__name__)

KIND = "cpl4rec"
# variant -> changes of the prompt-stage entry's model fields ("full": none)
VARIANTS: Mapping[str, Mapping[str, Any]] = {
    "full": {},
    "no_prompts": {"use_prompts": False},
    "no_pfg": {"use_pfg": False},
    "no_compactness": {"compactness": 0.0},
    "finetune": {"finetune_backbone": True},
}
SUMMARY_K = 10


def variant_name(encoder: str, variant: str) -> str:
    """The registry / ``nextitem_metrics`` name of a variant: the entry's own name for ``full``."""
    return encoder if variant == "full" else f"{encoder}_{variant}"


def with_variant(cfg: Config, encoder: str, variant: str) -> Config:
    """``cfg`` with ``train.encoders.<variant name>``: the prompt-stage entry with the variant's switch."""
    settings = cfg.train.encoders[encoder]
    encoders = dict(cfg.train.encoders)
    encoders[variant_name(encoder, variant)] = dataclasses.replace(
        settings, model={**settings.model, **VARIANTS[variant]}
    )
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, encoders=encoders))


def check_prompt_entry(cfg: Config, encoder: str) -> str:
    """The backbone entry of the prompt-stage entry ``encoder``; ``ConfigError`` naming what is wrong."""
    if encoder not in cfg.train.encoders:
        raise ConfigError(f"unknown encoder {encoder!r} (train.encoders: {', '.join(cfg.train.encoders)})")
    settings = cfg.train.encoders[encoder]
    if settings.kind != KIND or settings.model.get("stage") != "prompt":
        raise ConfigError(f"train.encoders.{encoder} must be kind {KIND} with model.stage: prompt")
    backbone = str(settings.model.get("backbone") or "")
    if backbone not in cfg.train.encoders or cfg.train.encoders[backbone].kind != KIND:
        raise ConfigError(f"train.encoders.{encoder}.model.backbone must name a {KIND} entry, got {backbone!r}")
    return backbone


def _recorded(cfg: Config, model: str, version: str) -> dict[str, float]:
    """``final_*`` metrics of the MLflow run that produced a registered version (a reused training)."""
    from custembed.tracking import tracking_for

    tracking = tracking_for(cfg.tracking, cfg.project.lake_dir)
    client = tracking.client()
    run_id = client.get_model_version(tracking.model_name(model), version).run_id
    metrics = client.get_run(run_id).data.metrics if run_id else {}
    return {k.removeprefix("final_"): float(v) for k, v in metrics.items() if k.startswith("final_")}


def _log_to_run(cfg: Config, model: str, version: str, figures: Mapping[str, float]) -> None:
    """The adaptation figures on the MLflow run of the version (a finished run takes metrics too)."""
    from custembed.tracking import tracking_for

    tracking = tracking_for(cfg.tracking, cfg.project.lake_dir)
    client = tracking.client()
    run_id = client.get_model_version(tracking.model_name(model), version).run_id
    if run_id:
        for name, value in figures.items():
            client.log_metric(run_id, name, float(value))


def adapt(spark: SparkSession, cfg: Config, *, run_date: dt.date, encoder: str, variant: str) -> dict[str, Any]:
    """Train one variant (or reuse its registered version); its ``adaptation_stats`` row as a dict."""
    from custembed.encoders.cpl4rec import Cpl4RecEncoder
    from custembed.encoders.registry import load_encoder
    from custembed.jobs import train
    from custembed.jobs.common import lake_from
    from custembed.tracking import tracking_for

    name = variant_name(encoder, variant)
    backbone = str(cfg.train.encoders[encoder].model["backbone"])
    t0 = time.monotonic()
    summary = train.run(spark, cfg, run_date=run_date, encoder_name=name, promote="always")
    wall = time.monotonic() - t0
    lake = lake_from(spark, cfg)
    tracking = tracking_for(cfg.tracking, cfg.project.lake_dir)
    model_dir, version = tracking.encoder_uri(name, cfg.train.alias, staging=lake.path("models"))
    _, backbone_version = tracking.encoder_uri(backbone, cfg.train.alias, staging=lake.path("models"))
    adapted = load_encoder(model_dir)
    if not isinstance(adapted, Cpl4RecEncoder):
        raise TypeError(f"{model_dir} holds a {adapted.kind} encoder, not {KIND}")
    reused = bool(summary.get("already_registered"))
    figures = _recorded(cfg, name, version) if reused else summary
    trainable, total = adapted.trainable_parameters(), adapted.total_parameters()
    train_seconds = float(figures["seconds"]) if "seconds" in figures else None
    row = {
        "variant": variant,
        "backbone": backbone,
        "backbone_version": str(backbone_version),
        "trainable_parameters": trainable,
        "total_parameters": total,
        "trainable_share": trainable / total,
        "train_seconds": train_seconds,
        "wall_seconds": None if reused else round(wall, 1),
        "steps": int(figures["steps"]) if "steps" in figures else None,
        "reused": reused,
        "model_version": str(version),
        schemas.DT: run_date.isoformat(),
        "model": name,
    }
    logged = {
        "trainable_parameters": float(trainable),
        "total_parameters": float(total),
        "trainable_share": trainable / total,
    }
    if train_seconds is not None:
        logged["adaptation_seconds"] = train_seconds
    _log_to_run(cfg, name, version, logged)
    log.info("cpl4rec-ablations: %s: %s", name, json.dumps(row, default=str))
    return row


def summary_table(metrics: Sequence[Mapping[str, Any]], stats: Sequence[Mapping[str, Any]]) -> list[str]:
    """Lines of a table: model, trainable share, adaptation seconds, HR@10 / NDCG@10 per protocol.

    ``metrics`` are ``nextitem_metrics`` rows, ``stats`` ``adaptation_stats`` rows (both small).
    """
    from custembed.nextitem import PROTOCOLS

    values = {(r["model"], r["protocol"], r["metric"]): r["value"] for r in metrics if int(r["k"]) == SUMMARY_K}
    models = list(dict.fromkeys([*(s["model"] for s in stats), *sorted({r["model"] for r in metrics})]))
    by_model = {s["model"]: s for s in stats}
    short = {"full": "full", "sampled-uniform": "uniform", "sampled-popularity": "popular"}
    header = f"{'model':28s} {'trainable':>10s} {'share':>7s} {'seconds':>8s}" + "".join(
        f" {short[p] + ' hr@10':>14s} {short[p] + ' ndcg@10':>16s}" for p in PROTOCOLS
    )
    lines = [header]
    for model in models:
        stat = by_model.get(model)
        trainable = f"{stat['trainable_parameters']:>10,d}" if stat else f"{'-':>10s}"
        share = f"{stat['trainable_share']:>7.1%}" if stat else f"{'-':>7s}"
        seconds = stat.get("train_seconds") if stat else None
        line = f"{model:28s} {trainable} {share} {'-' if seconds is None else f'{seconds:.0f}':>8s}"
        for protocol in PROTOCOLS:
            hr, ndcg = values.get((model, protocol, "hr")), values.get((model, protocol, "ndcg"))
            line += f" {'-' if hr is None else f'{hr:.4f}':>14s} {'-' if ndcg is None else f'{ndcg:.4f}':>16s}"
        lines.append(line)
    return lines


def run(
    spark: SparkSession,
    cfg: Config,
    *,
    run_date: dt.date,
    encoder: str = KIND,
    variants: Sequence[str] = tuple(VARIANTS),
    baselines: Sequence[str] = (),
    evaluate: bool = True,
) -> dict[str, Any]:
    """Backbone, then every variant: train, evaluate, record; see the module doc."""
    from pyspark.sql import functions as F

    from custembed import tables
    from custembed.jobs import evaluate_nextitem, train
    from custembed.jobs.common import lake_from, record_run

    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ConfigError(f"unknown variant {unknown[0]!r} (variants: {', '.join(VARIANTS)})")
    backbone = check_prompt_entry(cfg, encoder)
    missing = [name for name in baselines if name not in cfg.train.encoders]
    if missing:
        raise ConfigError(f"baseline {missing[0]!r} is not an encoder under train.encoders")
    started = dt.datetime.now(dt.timezone.utc)
    t_all = time.monotonic()
    lake = lake_from(spark, cfg)
    day = run_date.isoformat()
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    pretrained = train.run(spark, cfg, run_date=run_date, encoder_name=backbone, promote="always")
    timings[f"pretrain {backbone}"] = round(time.monotonic() - t0, 1)
    stats = []
    for variant in variants:
        variant_cfg = with_variant(cfg, encoder, variant)
        t0 = time.monotonic()
        stats.append(adapt(spark, variant_cfg, run_date=run_date, encoder=encoder, variant=variant))
        if evaluate:
            evaluate_nextitem.run(spark, variant_cfg, run_date=run_date, encoder=variant_name(encoder, variant))
        timings[variant_name(encoder, variant)] = round(time.monotonic() - t0, 1)
    if evaluate:
        t0 = time.monotonic()
        evaluate_nextitem.run(spark, cfg, run_date=run_date, encoder=backbone)
        timings[f"evaluate {backbone}"] = round(time.monotonic() - t0, 1)
    for name in baselines:  # e.g. SASRec, on the same splits, for the table and the report
        t0 = time.monotonic()
        train.run(spark, cfg, run_date=run_date, encoder_name=name)
        if evaluate:
            evaluate_nextitem.run(spark, cfg, run_date=run_date, encoder=name)
        timings[name] = round(time.monotonic() - t0, 1)
    rows = spark.createDataFrame(stats, schemas.struct_of("adaptation_stats"))
    lake.write_partitions(rows.select(*tables.table("adaptation_stats").column_names), "adaptation_stats")
    models = [backbone, *(variant_name(encoder, v) for v in variants), *baselines]
    metrics = (
        [r.asDict() for r in lake.read_partition("nextitem_metrics", day).where(F.col("model").isin(models)).collect()]
        if evaluate
        else []
    )  # a few rows: models x protocols x metrics x cut-offs
    table = summary_table(metrics, stats)
    for line in table:
        log.info("cpl4rec-ablations: %s", line)
    summary = {
        "backbone": pretrained.get("model", backbone),
        "variants": {s["model"]: s["variant"] for s in stats},
        "timings_s": {**timings, "total": round(time.monotonic() - t_all, 1)},
        "table": table,
    }
    record_run(
        lake,
        job=f"cpl4rec-ablations:{encoder}",
        run_date=run_date,
        started=started,
        status="succeeded",
        details=json.dumps({k: v for k, v in summary.items() if k != "table"}, default=str),
    )
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--encoder", default=KIND, help="the prompt-stage cpl4rec entry under train.encoders (default cpl4rec)"
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        default=list(VARIANTS),
        choices=list(VARIANTS),
        help=f"variants to adapt (default: all of {', '.join(VARIANTS)})",
    )
    parser.add_argument(
        "--baselines", nargs="*", default=[], help="other next-item encoders to train and evaluate beside (e.g. sasrec)"
    )
    parser.add_argument("--no-evaluate", action="store_true", help="train and record only")


def main(argv: Sequence[str] | None = None) -> int:
    from custembed.jobs.common import job_main

    def go(spark: SparkSession, cfg: Config, args: argparse.Namespace, run_date: dt.date) -> dict[str, Any]:
        summary = run(
            spark,
            cfg,
            run_date=run_date,
            encoder=args.encoder,
            variants=args.variants,
            baselines=args.baselines,
            evaluate=not args.no_evaluate,
        )
        print("\n".join(summary.pop("table")), flush=True)  # the table, as a table, before the summary lines
        return summary

    return job_main("cpl4rec-ablations", argv, add_arguments, go)

"""Step 2: train an encoder on the ``train`` view of a sequences partition, data-parallel from Spark.

The launcher is Spark's ``TorchDistributor`` (torchrun in barrier mode; gloo
on CPU, nccl on GPU) — the maintained replacement for Horovod on Spark. Spark
writes a training snapshot (customer id, tokens, text) as Parquet files under
the lake; each process reads only its own share of those files with pyarrow
(``custembed.training.data``), never through the driver. Checkpoints go to
the lake: rerunning the same command after a kill resumes from the last one,
in the same MLflow run. The final encoder is registered in MLflow and gets
the configured alias.

Seams: ``launch`` (how processes start) and ``TrainSpec.data_path`` (what
they read) are the only places that know about TorchDistributor and the
snapshot, so a cluster with other tools can swap either.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from custembed import schemas
from custembed.catalogue import load_catalogue
from custembed.config import Config, ConfigError, EncoderSettings, TrainConfig
from custembed.io import Lake

log = logging.getLogger(__name__)

SNAPSHOT_COLUMNS = (schemas.CUSTOMER_ID, "tokens", "text")


def resolve_checkpoint(checkpoint: str | None) -> str:
    """A hub name or directory as given; ``package:<pkg>/<sub/dir>`` → that directory inside an installed package."""
    if not checkpoint:
        raise ConfigError("this encoder kind needs train.encoders.<name>.checkpoint")
    if not checkpoint.startswith("package:"):
        return checkpoint
    package, _, sub = checkpoint[len("package:"):].partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"checkpoint {checkpoint}: package {package!r} is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / sub
    if not path.exists():
        raise ConfigError(f"checkpoint {checkpoint}: {path} does not exist")
    return str(path)


def encoder_params(settings: EncoderSettings, vocab_size: int) -> dict[str, Any]:
    """The encoder-config fields of one named encoder (``build_encoder(kind, **params)``)."""
    params: dict[str, Any]
    if settings.kind == "bert4rec":
        params = dict(vocab_size=vocab_size, hidden_size=settings.hidden_size, num_layers=settings.num_layers,
                      num_heads=settings.num_heads, max_len=settings.max_len, dropout=settings.dropout,
                      mask_prob=settings.mask_prob)
    elif settings.kind == "mlm":
        params = dict(checkpoint=resolve_checkpoint(settings.checkpoint), max_len=settings.max_len,
                      mask_prob=settings.mask_prob)
    elif settings.kind == "causal_lm":
        params = dict(checkpoint=resolve_checkpoint(settings.checkpoint), max_len=settings.max_len)
    else:
        raise ConfigError(f"train.encoders: unknown kind {settings.kind!r} (bert4rec, mlm, causal_lm)")
    if settings.pooling:
        params["pooling"] = settings.pooling
    return params


def write_snapshot(lake: Lake, run_date: dt.date, settings: EncoderSettings, files: int, target: Path) -> int:
    """The train view of ``run_date`` as ``files`` Parquet files (reused when complete); returns rows."""
    if (target / "_SUCCESS").exists():
        log.info("train: reusing the training snapshot %s", target)
    else:
        sequences = lake.read_partition("sequences", run_date.isoformat(), view=schemas.VIEW_TRAIN)
        if settings.sample_fraction < 1.0:
            sequences = sequences.sample(fraction=settings.sample_fraction, seed=settings.seed)
        snapshot = sequences.select(*SNAPSHOT_COLUMNS).repartition(files, F.xxhash64(schemas.CUSTOMER_ID))
        snapshot.write.mode("overwrite").parquet(str(target))
    import pyarrow.parquet as pq

    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in sorted(target.glob("*.parquet")))
    if rows == 0:
        raise ConfigError(f"no train-view sequences for {run_date}: run `custembed sequences --run-date {run_date}`")
    return rows


def launch(train_cfg: TrainConfig) -> Callable[..., Any]:
    """The launcher seam: a function that runs ``fn(spec)`` on every process and returns rank 0's result."""
    from pyspark.ml.torch.distributor import TorchDistributor

    distributor = TorchDistributor(
        num_processes=train_cfg.num_processes, local_mode=train_cfg.local_mode, use_gpu=train_cfg.use_gpu
    )
    return distributor.run


def run(spark: SparkSession, cfg: Config, *, run_date: dt.date, encoder_name: str) -> dict[str, Any]:
    from custembed.jobs.common import lake_from, record_run
    from custembed.tracking import tracking_for
    from custembed.training.loop import TrainSpec, train

    if encoder_name not in cfg.train.encoders:
        raise ConfigError(f"unknown encoder {encoder_name!r} (train.encoders: {', '.join(cfg.train.encoders)})")
    settings = cfg.train.encoders[encoder_name]
    started = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    t0 = time.monotonic()
    lake = lake_from(spark, cfg)
    catalogue = load_catalogue(cfg.sequences.catalogue)
    params = encoder_params(settings, catalogue.vocab_size)
    work = lake.path("training", encoder_name, run_date.isoformat())
    files = cfg.train.num_processes * cfg.train.files_per_process
    rows = write_snapshot(lake, run_date, settings, files, work / "data")
    output_dir = work / "encoder"
    tracking = tracking_for(cfg.tracking, cfg.project.lake_dir)
    run_id, resumed = tracking.open_run(
        f"{encoder_name}/{run_date.isoformat()}",
        {"encoder": encoder_name, "kind": settings.kind, "run_date": run_date.isoformat(), "sequences": rows,
         "num_processes": cfg.train.num_processes, **params, **{k: v for k, v in vars(settings).items()
                                                                  if k not in params}},
    )
    log.info("train %s: %d sequences, %d processes, MLflow run %s%s", encoder_name, rows,
             cfg.train.num_processes, run_id, " (resuming)" if resumed else "")
    spec = TrainSpec(
        data_path=str(work / "data"),
        output_dir=str(output_dir),
        checkpoint_dir=str(work / "checkpoints"),
        encoder_kind=settings.kind,
        encoder_params=params,
        epochs=settings.epochs,
        max_steps=settings.max_steps,
        batch_size=settings.batch_size,
        lr=settings.lr,
        weight_decay=settings.weight_decay,
        warmup_steps=settings.warmup_steps,
        checkpoint_every=settings.checkpoint_every,
        log_every=settings.log_every,
        val_pct=settings.val_pct,
        seed=settings.seed,
        mlflow_tracking_uri=tracking.uri,
        mlflow_run_id=run_id,
        early_stopping_patience=settings.early_stopping_patience,
    )
    # each process gets its share of the cores (torch would otherwise oversubscribe them)
    cores = max(1, (os.cpu_count() or 1) // max(1, cfg.train.num_processes))
    os.environ["OMP_NUM_THREADS"] = str(cores)
    try:
        metrics = launch(cfg.train)(train, spec)
    except Exception:
        log.error("train %s failed; rerun the same command to resume from the last checkpoint", encoder_name)
        raise
    version = tracking.finish_run(run_id, dict(metrics), output_dir, encoder_name, cfg.train.alias)
    summary = {
        "encoder": encoder_name,
        "kind": settings.kind,
        "model": f"{tracking.model_name(encoder_name)} version {version} (alias {cfg.train.alias})",
        "sequences": rows,
        "seconds": round(time.monotonic() - t0, 1),
        **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in dict(metrics).items()},
    }
    record_run(lake, job=f"train:{encoder_name}", run_date=run_date, started=started, status="succeeded",
               details=json.dumps(summary, default=str))
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--encoder", default="bert4rec", help="a name under train.encoders (default bert4rec)")


def main(argv: Sequence[str] | None = None) -> int:
    from custembed.jobs.common import job_main

    return job_main("train", argv, add_arguments,
                    lambda spark, cfg, args, run_date: run(spark, cfg, run_date=run_date, encoder_name=args.encoder))

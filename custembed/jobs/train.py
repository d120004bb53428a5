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
from custembed.config import (
    Config,
    ConfigError,
    EncoderSettings,
    TrainConfig,
    build,
    conf_dir,
    load_config,
    resolve_conf_file,
)
from custembed.io import Lake

log = logging.getLogger(__name__)

SNAPSHOT_COLUMNS = (schemas.CUSTOMER_ID, "tokens", "text")


def resolve_checkpoint(checkpoint: str | None) -> str:
    """A hub name or directory as given; ``package:<pkg>/<sub/dir>`` → that directory inside an installed package."""
    if not checkpoint:
        raise ConfigError("this encoder kind needs train.encoders.<name>.model.checkpoint")
    if not checkpoint.startswith("package:"):
        return checkpoint
    package, _, sub = checkpoint[len("package:") :].partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"checkpoint {checkpoint}: package {package!r} is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / sub
    if not path.exists():
        raise ConfigError(f"checkpoint {checkpoint}: {path} does not exist")
    return str(path)


def check_model(name: str, settings: EncoderSettings, *, vocab_size: int, source: str = "config") -> dict[str, Any]:
    """The fields of ``train.encoders.<name>.model`` checked against the kind's config class.

    An unknown key, a wrong type or a bad value is a ``ConfigError`` naming the key and
    ``source``. Fields the data decides (the kind's ``data_fields``, e.g. BERT4Rec's
    ``vocab_size`` from the action catalogue) are added here and refused under ``model:``.
    Imports the kind's encoder module (torch): the reason this check waits for the job.
    """
    from custembed.encoders.registry import encoder_class

    key = f"train.encoders.{name}"
    try:
        cls = encoder_class(settings.kind)
    except ValueError as e:
        raise ConfigError(f"{source}: {key}.kind: {e}") from e
    from_data = {"vocab_size": vocab_size}
    for field_name in cls.data_fields:
        if field_name in settings.model:
            raise ConfigError(f"{source}: {key}.model.{field_name} is set from the data; remove it")
        if field_name not in from_data:
            raise TypeError(f"{cls.__name__}.data_fields names {field_name!r}, which the train job does not know")
    params = {**{field_name: from_data[field_name] for field_name in cls.data_fields}, **settings.model}
    try:
        build(cls.config_class, params, source, prefix=f"{key}.model")
    except ConfigError:
        raise
    except ValueError as e:  # the config class's own checks (__post_init__)
        raise ConfigError(f"{source}: {key}.model: {e}") from e
    return params


def model_params(name: str, settings: EncoderSettings, *, vocab_size: int) -> dict[str, Any]:
    """The encoder-config fields of one named encoder (``build_encoder(kind, **params)``), checked,
    with a ``package:`` checkpoint resolved to its directory."""
    params = check_model(name, settings, vocab_size=vocab_size)
    if "checkpoint" in params:
        params["checkpoint"] = resolve_checkpoint(params["checkpoint"])
    return params


def check_model_layers(conf_file: str | None, sets: Sequence[str], name: str) -> None:
    """:func:`check_model` on each configuration layer (base file, ``--conf`` file, each ``--set``),
    so that an error names the layer that brought the bad key, as ``load_config`` does for the rest."""
    # (source, conf file, how many --set) of each layer, in load_config's order
    layers: list[tuple[str, str | None, int]] = [(str(conf_dir() / "base.yaml"), None, 0)]
    if conf_file:
        layers.append((str(resolve_conf_file(conf_file)), conf_file, 0))
    layers += [(f"--set {assignment}", conf_file, i + 1) for i, assignment in enumerate(sets)]
    for source, layer_file, n_sets in layers:
        cfg = load_config(layer_file, sets[:n_sets])
        if name in cfg.train.encoders:
            vocab_size = load_catalogue(cfg.sequences.catalogue).vocab_size
            check_model(name, cfg.train.encoders[name], vocab_size=vocab_size, source=source)


def write_snapshot(lake: Lake, run_date: dt.date, settings: EncoderSettings, files: int, target: Path) -> int:
    """The train view of ``run_date`` as ``files`` Parquet files (reused when complete); returns rows."""
    from custembed import tables
    from custembed.errors import InputError

    if (target / "_SUCCESS").exists():
        log.info("train: reusing the training snapshot %s", target)
    else:
        sequences = lake.read_partition("sequences", run_date.isoformat(), view=schemas.VIEW_TRAIN)
        if settings.sample_fraction < 1.0:
            sequences = sequences.sample(fraction=settings.sample_fraction, seed=settings.seed)
        snapshot = sequences.select(*tables.table("training_snapshot").column_names)
        lake.write_files(snapshot.repartition(files, F.xxhash64(schemas.CUSTOMER_ID)), "training_snapshot", target)
    import pyarrow.parquet as pq

    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in sorted(target.glob("*.parquet")))
    if rows == 0:
        raise InputError(f"no train-view sequences for {run_date}: run `custembed sequences --run-date {run_date}`")
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
    from custembed.training.loop import train
    from custembed.training.spec import TrainSpec, train_params

    if encoder_name not in cfg.train.encoders:
        raise ConfigError(f"unknown encoder {encoder_name!r} (train.encoders: {', '.join(cfg.train.encoders)})")
    settings = cfg.train.encoders[encoder_name]
    started = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    t0 = time.monotonic()
    # The model's fields are checked before any Spark or training work.
    params = model_params(encoder_name, settings, vocab_size=load_catalogue(cfg.sequences.catalogue).vocab_size)
    lake = lake_from(spark, cfg)
    work = lake.path("training", encoder_name, run_date.isoformat())
    files = cfg.train.num_processes * cfg.train.files_per_process
    rows = write_snapshot(lake, run_date, settings, files, work / "data")
    output_dir = work / "encoder"
    tracking = tracking_for(cfg.tracking, cfg.project.lake_dir)
    run_id, resumed = tracking.open_run(
        f"{encoder_name}/{run_date.isoformat()}",
        {
            "encoder": encoder_name,
            "kind": settings.kind,
            "run_date": run_date.isoformat(),
            "sequences": rows,
            "num_processes": cfg.train.num_processes,
            **params,
            **train_params(settings),
            "sample_fraction": settings.sample_fraction,
        },
    )
    log.info(
        "train %s: %d sequences, %d processes, MLflow run %s%s",
        encoder_name,
        rows,
        cfg.train.num_processes,
        run_id,
        " (resuming)" if resumed else "",
    )
    spec = TrainSpec(
        data_path=str(work / "data"),
        output_dir=str(output_dir),
        checkpoint_dir=str(work / "checkpoints"),
        encoder_kind=settings.kind,
        encoder_params=params,
        mlflow_tracking_uri=tracking.uri,
        mlflow_run_id=run_id,
        **train_params(settings),
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
    record_run(
        lake,
        job=f"train:{encoder_name}",
        run_date=run_date,
        started=started,
        status="succeeded",
        details=json.dumps(summary, default=str),
    )
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--encoder", default="bert4rec", help="a name under train.encoders (default bert4rec)")


def _run_from_cli(spark: SparkSession, cfg: Config, args: argparse.Namespace, run_date: dt.date) -> dict[str, Any]:
    if args.encoder in cfg.train.encoders:
        check_model_layers(args.conf, args.set, args.encoder)  # a bad `model:` key names its file
    return run(spark, cfg, run_date=run_date, encoder_name=args.encoder)


def main(argv: Sequence[str] | None = None) -> int:
    from custembed.jobs.common import job_main

    return job_main("train", argv, add_arguments, _run_from_cli)

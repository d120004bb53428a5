"""Step 2: train an encoder on the ``train`` view of a sequences partition, data-parallel from Spark.

The launcher is Spark's ``TorchDistributor`` (torchrun in barrier mode; gloo
on CPU, nccl on GPU) — the maintained replacement for Horovod on Spark. Spark
writes a training snapshot (customer id, tokens, text) as Parquet files under
the lake; each process reads only its own share of those files with pyarrow
(``custembed.training.data``), never through the driver. Snapshot, checkpoints
and encoder live under ``training/<encoder>/<date>/<key>``, the key a digest of
the sequences files read and of the training config: rerunning the same command
after a kill resumes from the last checkpoint, in the same MLflow run, while a
rerun of ``sequences`` or a changed config trains afresh (and the log says which
changed). The encoder is registered in MLflow with its lineage (run date, data
cutoff, initial checkpoint, key) as version tags; it gets the configured alias
only when its validation loss is not above the alias holder's on the same
held-out customers (``train.promote: if_better``), or always (``--promote``).

Seams: ``launch`` (how processes start) and ``TrainSpec.data_path`` (what
they read) are the only places that know about TorchDistributor and the
snapshot, so a cluster with other tools can swap either.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import importlib.util
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from custembed import lakefs, schemas
from custembed.catalogue import VOCABULARY_FILE, load_catalogue, vocabulary_json
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
from custembed.tracking import (
    LINEAGE_FILE,
    TAG_CUTOFF,
    TAG_HOLDOUT_LAST,
    TAG_INIT_CHECKPOINT,
    TAG_RUN_DATE,
    TAG_TRAINING_KEY,
    Tracking,
)

log = logging.getLogger(__name__)

SNAPSHOT_COLUMNS = (schemas.CUSTOMER_ID, "tokens", "text")
JOURNEYS = "journeys"  # the input table of system B's encoders
MARKOV_KIND = "journeys_markov"  # counted by Spark, not a SequenceEncoder: no TorchDistributor


def input_table(kind: str) -> str:
    """The table an encoder kind trains on (its class's ``input_table``): ``sequences`` or ``journeys``."""
    from custembed.encoders.registry import encoder_class

    return JOURNEYS if kind == MARKOV_KIND else encoder_class(kind).input_table


def journeys_files(journeys: DataFrame, day: str, store: str) -> list[str]:
    """The data files behind one date and store of the journeys table (all files if not partitioned so)."""
    files = sorted(journeys.inputFiles())
    ours = [f for f in files if f"{schemas.DT}={day}" in f.split("/") and f"store={store}" in f.split("/")]
    return ours or files


def fit_tokenizer(data_dir: str, target: str, params: Mapping[str, Any], *, extend: str | None = None) -> str:
    """A byte-level BPE learnt on the snapshot's texts (streamed in Arrow batches), saved at ``target``.

    With ``extend`` (a saved journey model's URI, fine-tuning on another store), the model's
    own tokenizer grown by what this BPE has and it lacks (:func:`extend_tokenizer`): the
    model keeps its ids and the new store's codes are single tokens, not bytes.
    """
    import pyarrow.dataset as ds

    from custembed.journeys.tokenizer import extend_tokenizer, load_tokenizer, save_tokenizer, train_tokenizer

    local = lakefs.local_path(target)
    if lakefs.exists(lakefs.join(target, "tokenizer.json")):  # a resumed training keeps its ids
        return local if local is not None else lakefs.get_dir(target)
    filesystem, path = lakefs.pyarrow_filesystem(data_dir)
    dataset = ds.dataset(path, filesystem=filesystem, format="parquet")
    texts = (text for batch in dataset.to_batches(columns=["text"]) for text in batch.column(0).to_pylist() if text)
    tokenizer = train_tokenizer(
        texts, vocab_size=int(params["bpe_vocab_size"]), min_frequency=int(params["bpe_min_frequency"])
    )
    if extend is not None:
        learnt = len(tokenizer)
        source = load_tokenizer(lakefs.get_dir(extend))
        tokenizer = extend_tokenizer(source, tokenizer)
        log.info(
            "train: the fine-tuned model's %d tokens grow by %d of the %d learnt on this store's journeys",
            len(source),
            len(tokenizer) - len(source),
            learnt,
        )
    if local is not None:
        save_tokenizer(tokenizer, local)
    else:
        with tempfile.TemporaryDirectory(prefix="custembed-bpe-") as scratch:
            save_tokenizer(tokenizer, scratch)
            lakefs.put_dir(scratch, target)
    log.info("train: a byte-level BPE of %d tokens for the training journeys (%s)", len(tokenizer), target)
    return local if local is not None else lakefs.get_dir(target)


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


def check_model(
    name: str, settings: EncoderSettings, *, vocab_size: int, no_action_id: int | None = None, source: str = "config"
) -> dict[str, Any]:
    """The fields of ``train.encoders.<name>.model`` checked against the kind's config class.

    An unknown key, a wrong type or a bad value is a ``ConfigError`` naming the key and
    ``source``. Fields the data decides (the kind's ``data_fields``, e.g. BERT4Rec's
    ``vocab_size`` from the action catalogue) are added here and refused under ``model:``.
    Imports the kind's encoder module (torch): the reason this check waits for the job.
    """
    from custembed.encoders.registry import encoder_class

    key = f"train.encoders.{name}"
    if settings.kind == MARKOV_KIND:
        if settings.model:
            raise ConfigError(f"{source}: {key}.model: a Markov chain has no model fields (its order: journeys.model)")
        return {}
    try:
        cls = encoder_class(settings.kind)
    except ValueError as e:
        raise ConfigError(f"{source}: {key}.kind: {e}") from e
    # tokenizer_dir: learnt by the job on the training journeys (a placeholder until then);
    # vocabulary_file, backbone_dir (CPL4Rec): the run's vocabulary and the registered backbone, set by `run`
    from_data = {
        "vocab_size": vocab_size,
        "no_action_id": no_action_id,
        "tokenizer_dir": "",
        "vocabulary_file": "",
        "backbone_dir": "",
    }
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


def model_params(
    name: str, settings: EncoderSettings, *, vocab_size: int, no_action_id: int | None = None
) -> dict[str, Any]:
    """The encoder-config fields of one named encoder (``build_encoder(kind, **params)``), checked,
    with a ``package:`` checkpoint resolved to its directory."""
    params = check_model(name, settings, vocab_size=vocab_size, no_action_id=no_action_id)
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
            catalogue = load_catalogue(cfg.sequences.catalogue)
            check_model(
                name,
                cfg.train.encoders[name],
                vocab_size=catalogue.vocab_size,
                no_action_id=catalogue.no_action_id,
                source=source,
            )


# Fields that change what is trained; the others (max_steps, log_every, checkpoint_every,
# keep_checkpoints) only stop, watch or keep, so a run may resume with new values of them.
_NOT_IN_KEY = frozenset({"max_steps", "log_every", "checkpoint_every", "keep_checkpoints"})
SOURCE_FILE = "source.json"


def sequences_files(sequences: DataFrame, run_date: dt.date) -> list[str]:
    """The data files behind the train view of ``run_date`` (a rerun of ``sequences`` writes new ones).

    ``inputFiles`` lists the whole table; the Hive-style partition directories narrow it to
    the date and view. A layout without them keeps every file (a rerun of any date then
    counts as a change: conservative).
    """
    files = sorted(sequences.inputFiles())
    day, view = f"{schemas.DT}={run_date.isoformat()}", f"{schemas.VIEW}={schemas.VIEW_TRAIN}"
    ours = [f for f in files if day in f.split("/") and view in f.split("/")]
    return ours or files


def training_source(files: Sequence[str], training: Mapping[str, Any]) -> dict[str, str]:
    """What a training run is keyed to: digests of the sequences files and of the training config, and the key."""

    def digest(value: Any) -> str:
        return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]

    source = {
        "sequences_files": digest(list(files)),
        "config": digest({k: v for k, v in training.items() if k not in _NOT_IN_KEY}),
    }
    source["key"] = digest(source)[:12]
    return source


def training_dir(base: str, source: Mapping[str, str]) -> str:
    """``base/<key>`` (URIs): snapshot, checkpoints and encoder of one (sequences run, training config).

    A run resumes only from its own directory; when an earlier key exists for the same
    encoder and date, the log says what changed and that training starts afresh.
    """
    work = lakefs.join(base, source["key"])
    if lakefs.exists(lakefs.join(work, SOURCE_FILE)):
        return work
    for other in lakefs.glob(base, f"*/{SOURCE_FILE}"):
        earlier = json.loads(lakefs.read_text(other))
        changed = [name for name in ("sequences_files", "config") if earlier.get(name) != source[name]]
        log.info(
            "train: %s changed since the training in %s; training afresh in %s",
            " and ".join("the sequences (rerun)" if c == "sequences_files" else "the training config" for c in changed),
            lakefs.parent(other),
            work,
        )
    lakefs.makedirs(work)
    lakefs.write_text(lakefs.join(work, SOURCE_FILE), json.dumps(dict(source), indent=2))
    return work


def write_snapshot(
    lake: Lake,
    sequences: DataFrame,
    run_date: dt.date,
    settings: EncoderSettings,
    files: int,
    target: str,
    *,
    missing: str = "",
) -> int:
    """The train view of ``run_date`` as ``files`` Parquet files (reused when complete); returns rows.

    ``target`` is keyed to the sequences files and the training config (:func:`training_dir`),
    so a complete snapshot there is of the same data. Spark writes it and pyarrow counts it at the
    same URI (:mod:`custembed.lakefs`), whatever ``fs.defaultFS`` is.
    """
    from custembed import tables
    from custembed.errors import InputError

    if lakefs.exists(lakefs.join(target, "_SUCCESS")):
        log.info("train: reusing the training snapshot %s", target)
    else:
        if settings.sample_fraction < 1.0:
            sequences = sequences.sample(fraction=settings.sample_fraction, seed=settings.seed)
        if settings.holdout_last:
            sequences = without_last(sequences, settings.holdout_last)
        snapshot = sequences.select(*tables.table("training_snapshot").column_names)
        lake.write_files(snapshot.repartition(files, F.xxhash64(schemas.CUSTOMER_ID)), "training_snapshot", target)
    import pyarrow.dataset as ds

    filesystem, path = lakefs.pyarrow_filesystem(target)
    rows = int(ds.dataset(path, filesystem=filesystem, format="parquet").count_rows())
    if rows == 0:
        raise InputError(
            missing or f"no train-view sequences for {run_date}: run `custembed sequences --run-date {run_date}`"
        )
    return rows


def without_last(sequences: DataFrame, n: int) -> DataFrame:
    """Sequences with their last ``n`` actions cut (tokens, gaps, amounts and text alike); emptied ones dropped.

    What next-item evaluation holds out (``holdout_last: 2``: the last action is the test
    target, the one before it the validation target), so training never sees either.
    """
    from custembed.catalogue import ACTION_SEPARATOR

    # never negative: Spark may evaluate the projection before the filter
    keep = F.greatest(F.size("tokens") - F.lit(n), F.lit(0))
    return (
        sequences.where(keep > 0)
        .withColumn("tokens", F.slice("tokens", 1, keep))
        .withColumn(schemas.GAPS, F.slice(schemas.GAPS, 1, keep))
        .withColumn(schemas.AMOUNTS, F.slice(schemas.AMOUNTS, 1, keep))
        .withColumn("text", F.array_join(F.slice(F.split("text", ACTION_SEPARATOR, -1), 1, keep), ACTION_SEPARATOR))
    )


def launch(train_cfg: TrainConfig) -> Callable[..., Any]:
    """The launcher seam: a function that runs ``fn(spec)`` on every process and returns rank 0's result."""
    from pyspark.ml.torch.distributor import TorchDistributor

    distributor = TorchDistributor(
        num_processes=train_cfg.num_processes, local_mode=train_cfg.local_mode, use_gpu=train_cfg.use_gpu
    )
    return distributor.run


def train_cutoff(sequences: DataFrame) -> str | None:
    """The last day the train view holds (its ``cutoff``); recorded with the model version."""
    row = sequences.agg(F.max("cutoff").alias("cutoff")).first()
    return None if row is None or row["cutoff"] is None else str(row["cutoff"])


def _champion_dir(tracking: Tracking, encoder_name: str, alias: str, work: str) -> tuple[str | None, str | None]:
    """(version, URI) of the version holding ``alias``, copied under ``work`` (seen by every rank)."""
    version = tracking.alias_version(encoder_name, alias)
    if version is None:
        return None, None
    target = lakefs.join(work, "champion")
    local_target = lakefs.local_path(target)
    if local_target is not None:
        downloaded, _ = tracking.resolve(encoder_name, version, dst_path=local_target)  # a directory inside it
        return version, lakefs.qualify(downloaded)
    with tempfile.TemporaryDirectory(prefix="custembed-champion-") as scratch:
        downloaded, _ = tracking.resolve(encoder_name, version, dst_path=scratch)
        lakefs.rm(target, recursive=True)
        lakefs.put_dir(downloaded, target)
    return version, target


def registered_version(tracking: Tracking, encoder_name: str, key: str) -> str | None:
    """The newest registered version trained from the sequences and config of training ``key``, if any."""
    for version, tags in tracking.versions(encoder_name):
        if tags.get(TAG_TRAINING_KEY) == key:
            return version
    return None


def already_registered(
    lake: Lake,
    tracking: Tracking,
    cfg: Config,
    encoder_name: str,
    version: str,
    *,
    run_date: dt.date,
    promote: str | None,
    started: dt.datetime,
) -> dict[str, Any]:
    """A rerun of a training already registered: no new version; the alias moves to it only if asked."""
    from custembed.jobs.common import record_run

    alias = cfg.train.alias
    if promote == "always":
        tracking.record_promotion(encoder_name, version, alias, promoted=True, reason="asked (--promote) on a rerun")
    holder = tracking.alias_version(encoder_name, alias)
    note = f"alias {alias}" if holder == version else f"{alias} is version {holder}"
    log.info(
        "train %s: version %s was trained from the same sequences and training config: not training or "
        "registering it again (%s); change either, or rerun `sequences`, to train afresh",
        encoder_name,
        version,
        note,
    )
    summary = {
        "encoder": encoder_name,
        "model": f"{tracking.model_name(encoder_name)} version {version} (already registered; {note})",
        "already_registered": True,
    }
    record_run(
        lake,
        job=f"train:{encoder_name}",
        run_date=run_date,
        started=started,
        status="succeeded",
        details=json.dumps(summary),
    )
    return summary


def registered_backbone(cfg: Config, lake: Lake, name: str) -> str:
    """URI of the registered version (``train.alias``) of the encoder ``name`` a prompt stage adapts."""
    from custembed.tracking import tracking_for

    if name not in cfg.train.encoders:
        raise ConfigError(f"backbone {name!r} is not an encoder under train.encoders ({', '.join(cfg.train.encoders)})")
    tracking = tracking_for(cfg.tracking, cfg.project.lake_dir)
    uri, version = tracking.encoder_uri(name, cfg.train.alias, staging=lake.path("models"))
    log.info("train: backbone %s version %s (%s)", name, version, uri)
    return uri


def run(
    spark: SparkSession,
    cfg: Config,
    *,
    run_date: dt.date,
    encoder_name: str,
    promote: str | None = None,
    store: str | None = None,
    init_from: str | None = None,
    train_fraction: float = 1.0,
    registry_name: str | None = None,
    extend_vocabulary: bool = True,
) -> dict[str, Any]:
    """Train ``encoder_name`` on the train view of ``run_date``; register it; move the alias if it is not worse.

    ``promote`` (``always`` or ``if_better``) overrides ``train.promote``. Encoders whose
    ``input_table`` is ``journeys`` (system B) train on the journeys of ``run_date`` and of
    ``store`` (default ``journeys.model.train_store``) outside the held-out test visits, of
    which a seeded ``train_fraction``; ``init_from`` (a saved encoder's URI) starts from its
    weights and tokenizer (fine-tuning; with ``extend_vocabulary`` the tokenizer grows by a
    BPE learnt on this store's journeys and the model's embeddings with it); they register
    as ``<encoder>-<store>`` unless ``registry_name`` says otherwise. The Markov chain
    baseline is counted by Spark instead (:mod:`custembed.jobs.journeys_markov`).
    """
    from custembed.jobs.common import lake_from, record_run, run_catalogue
    from custembed.tracking import promotion, tracking_for
    from custembed.training.loop import train
    from custembed.training.spec import TrainSpec, train_params

    if encoder_name not in cfg.train.encoders:
        raise ConfigError(f"unknown encoder {encoder_name!r} (train.encoders: {', '.join(cfg.train.encoders)})")
    settings = cfg.train.encoders[encoder_name]
    if settings.kind == MARKOV_KIND:
        from custembed.jobs.journeys_markov import train_markov

        return train_markov(
            spark,
            cfg,
            run_date=run_date,
            encoder_name=encoder_name,
            store=store or cfg.journeys.model.train_store,
            train_fraction=train_fraction,
            registry_name=registry_name,
        )
    started = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    t0 = time.monotonic()
    # The model's fields are checked before any Spark or training work.
    declared = load_catalogue(cfg.sequences.catalogue)
    params = model_params(encoder_name, settings, vocab_size=declared.vocab_size, no_action_id=declared.no_action_id)
    lake = lake_from(spark, cfg)
    day = run_date.isoformat()
    catalogue = run_catalogue(lake, cfg, day)  # with the run's data-built actions, if any
    if catalogue.needs_data:
        params = model_params(
            encoder_name, settings, vocab_size=catalogue.vocab_size, no_action_id=catalogue.no_action_id
        )
    files = cfg.train.num_processes * cfg.train.files_per_process
    training = {
        "kind": settings.kind,
        **params,
        **train_params(settings),
        "sample_fraction": settings.sample_fraction,
        "holdout_last": settings.holdout_last,
        "num_processes": cfg.train.num_processes,
        "snapshot_files": files,
    }
    journeys = input_table(settings.kind) == JOURNEYS
    if journeys:
        from custembed.jobs.journeys_common import journey_model_name, training_journeys

        store = store or cfg.journeys.model.train_store
        sequences = training_journeys(
            lake, cfg.journeys.holdout, day=day, store=store, fraction=train_fraction, seed=settings.seed
        )
        read_files = journeys_files(sequences, day, store)
        registry_name = registry_name or journey_model_name(encoder_name, store)
        training.update(store=store, train_fraction=train_fraction, init_from=init_from or "")
        if init_from is not None:
            training.update(extend_vocabulary=extend_vocabulary)
    else:
        sequences = lake.read_partition("sequences", day, view=schemas.VIEW_TRAIN)
        read_files = sequences_files(sequences, run_date)
    # the registry (MLflow) name: the encoder's own in system A; per store (and transfer variant) in system B
    model_name = registry_name or encoder_name
    if params.get("backbone"):  # CPL4Rec's prompt stage: the backbone entry's registered version, keyed to it
        params["backbone_dir"] = training["backbone_dir"] = registered_backbone(cfg, lake, str(params["backbone"]))
    source = training_source(read_files, training)
    tracking = tracking_for(cfg.tracking, cfg.project.lake_dir)
    registered = registered_version(tracking, model_name, source["key"])
    if registered is not None:
        return already_registered(
            lake, tracking, cfg, model_name, registered, run_date=run_date, promote=promote, started=started
        )
    work = training_dir(lake.path("training", model_name, day), source)
    data_dir = lakefs.join(work, "data")
    missing = f"no training journeys of store {store} for {day}: run `custembed journeys-prepare`" if journeys else ""
    rows = write_snapshot(lake, sequences, run_date, settings, files, data_dir, missing=missing)
    cutoff = None if journeys else train_cutoff(sequences)
    if journeys and "tokenizer_dir" in params and (init_from is None or extend_vocabulary):
        # the vocabulary is learnt on this training's own journeys before the model exists; a
        # fine-tuning grows its model's vocabulary by this store's (the loop resizes the model)
        params["tokenizer_dir"] = fit_tokenizer(
            data_dir, lakefs.join(work, "tokenizer"), params, extend=init_from if extend_vocabulary else None
        )
    if "vocabulary_file" in params:  # CPL4Rec splits its ids by the run's vocabulary: written before training
        params["vocabulary_file"] = lakefs.join(work, VOCABULARY_FILE)
        lakefs.write_text(params["vocabulary_file"], vocabulary_json(catalogue))
    output_dir = lakefs.join(work, "encoder")
    # keyed to the source too: a changed sequences run or config never resumes another's MLflow run
    run_id, resumed = tracking.open_run(
        f"{model_name}/{day}/{source['key']}",
        {"encoder": model_name, "run_date": day, "sequences": rows, "training_key": source["key"], **training},
    )
    log.info(
        "train %s: %d sequences (key %s), %d processes, MLflow run %s%s",
        model_name,
        rows,
        source["key"],
        cfg.train.num_processes,
        run_id,
        " (resuming)" if resumed else "",
    )
    champion, champion_dir = _champion_dir(tracking, model_name, cfg.train.alias, work)
    spec = TrainSpec(
        data_path=data_dir,
        output_dir=output_dir,
        checkpoint_dir=lakefs.join(work, "checkpoints"),
        encoder_kind=settings.kind,
        encoder_params=params,
        init_dir=init_from,
        compare_dir=champion_dir,
        mlflow_tracking_uri=tracking.uri,
        mlflow_run_id=run_id,
        **train_params(settings),
    )
    # each process gets its share of the cores (torch would otherwise oversubscribe them)
    cores = max(1, (os.cpu_count() or 1) // max(1, cfg.train.num_processes))
    os.environ["OMP_NUM_THREADS"] = str(cores)
    try:
        metrics = dict(launch(cfg.train)(train, spec))
    except Exception:
        log.error("train %s failed; rerun the same command to resume from the last checkpoint", model_name)
        raise
    lineage = {
        TAG_RUN_DATE: day,
        TAG_CUTOFF: cutoff or "",
        TAG_INIT_CHECKPOINT: str(settings.model.get("checkpoint") or ""),
        TAG_TRAINING_KEY: source["key"],
        TAG_HOLDOUT_LAST: str(settings.holdout_last),
    }
    lakefs.write_text(lakefs.join(output_dir, LINEAGE_FILE), json.dumps(lineage, indent=2, sort_keys=True))
    if not journeys:
        # what each id stood for, kept with the weights: rank/recommend map items through it
        lakefs.write_text(lakefs.join(output_dir, VOCABULARY_FILE), vocabulary_json(catalogue))
    version = tracking.finish_run(run_id, metrics, output_dir, model_name, tags=lineage)
    promoted, why = promotion(promote or cfg.train.promote, metrics, champion, metric=settings.early_stopping_metric)
    tracking.record_promotion(model_name, version, cfg.train.alias, promoted=promoted, reason=why)
    log.info(
        "train %s: version %s %s alias %s: %s",
        model_name,
        version,
        "takes" if promoted else "does not take",
        cfg.train.alias,
        why,
    )
    alias_note = f"alias {cfg.train.alias}" if promoted else f"not {cfg.train.alias}: {why}"
    summary = {
        "encoder": encoder_name,
        "kind": settings.kind,
        "model": f"{tracking.model_name(model_name)} version {version} ({alias_note})",
        "sequences": rows,
        "seconds": round(time.monotonic() - t0, 1),
        **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items()},
    }
    record_run(
        lake,
        job=f"train:{model_name}",
        run_date=run_date,
        started=started,
        status="succeeded",
        details=json.dumps(summary, default=str),
    )
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--encoder", default="bert4rec", help="a name under train.encoders (default bert4rec)")
    parser.add_argument(
        "--promote",
        action="store_const",
        const="always",
        help="give the new version the alias even if its validation loss is worse (default: train.promote)",
    )
    parser.add_argument(
        "--store", default=None, help="journey encoders: the store trained on (default journeys.model.train_store)"
    )


def _run_from_cli(spark: SparkSession, cfg: Config, args: argparse.Namespace, run_date: dt.date) -> dict[str, Any]:
    if args.encoder in cfg.train.encoders:
        check_model_layers(args.conf, args.set, args.encoder)  # a bad `model:` key names its file
    return run(spark, cfg, run_date=run_date, encoder_name=args.encoder, promote=args.promote, store=args.store)


def main(argv: Sequence[str] | None = None) -> int:
    from custembed.jobs.common import job_main

    return job_main("train", argv, add_arguments, _run_from_cli)

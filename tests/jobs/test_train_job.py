"""The train job: training keyed to the sequences run and config it came from; the alias moves only if not worse."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from custembed import lakefs, schemas
from custembed.config import Config, load_config

RUN = dt.date(2031, 1, 31)
PREFIX = "trainjob"


def _sequences(spark: Any, seed: int, n: int = 120) -> Any:
    """``n`` customers of the train view of RUN (and a few of the current view), themed actions as in tests/training."""
    rng = random.Random(seed)
    rows = []
    for view, cutoff in ((schemas.VIEW_TRAIN, "2030-10-31"), ("current", RUN.isoformat())):
        for i in range(n if view == schemas.VIEW_TRAIN else 10):
            theme = rng.randrange(3)
            tokens = [4 + 10 * theme + rng.randrange(10) for _ in range(rng.randint(4, 12))]
            when = dt.datetime(2030, 1, 1)
            rows.append(
                (
                    f"c{seed}-{i:04d}",
                    cutoff,
                    tokens,
                    " ".join(f"a{t}" for t in tokens),
                    len(tokens),
                    len(tokens),
                    len(tokens),
                    0,
                    when,
                    when,
                    [0] + [1] * (len(tokens) - 1),  # gaps
                    [1 + t % 7 for t in tokens],  # amounts
                    RUN.isoformat(),
                    view,
                )
            )
    return spark.createDataFrame(rows, schemas.TABLE_SCHEMAS["sequences"])


def _config(lake_sets: list[str], *sets: str) -> Config:
    small = [
        "train.encoders.bert4rec.model.hidden_size=32",
        "train.encoders.bert4rec.model.num_layers=1",
        "train.encoders.bert4rec.model.num_heads=2",
        "train.encoders.bert4rec.epochs=2",
        "train.encoders.bert4rec.batch_size=16",
        "train.encoders.bert4rec.val_pct=20",
        "train.encoders.bert4rec.early_stopping_patience=null",
        "train.num_processes=1",
        f"tracking.model_prefix={PREFIX}",
        *sets,
    ]
    pairs = [lake_sets[i + 1] for i in range(0, len(lake_sets), 2)]
    return load_config(None, [*pairs, *small])


@pytest.fixture()
def in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Train in this process (the launcher seam), not in torchrun processes."""
    from custembed.jobs import train as train_job

    def launch(_cfg: Any) -> Callable[..., Any]:
        return lambda fn, spec: fn(spec)

    monkeypatch.setattr(train_job, "launch", launch)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.mark.slow
def test_a_rerun_of_sequences_or_a_new_config_trains_afresh(  # type: ignore[no-untyped-def]
    spark, lake_sets, in_process, caplog: pytest.LogCaptureFixture
) -> None:
    from custembed.jobs import train as train_job
    from custembed.jobs.common import lake_from

    cfg = _config(lake_sets)
    lake = lake_from(spark, cfg)
    lake.write_partitions(_sequences(spark, seed=1), "sequences")
    caplog.set_level(logging.INFO, logger="custembed")

    first = train_job.run(spark, cfg, run_date=RUN, encoder_name="bert4rec")
    assert first["start_step"] == 0 and first["steps"] > 0

    caplog.clear()
    again = train_job.run(spark, cfg, run_date=RUN, encoder_name="bert4rec")
    messages = [r.getMessage() for r in caplog.records]
    # the same sequences and config: the registered version stands, no duplicate is registered
    first_version = first["model"].split(" version ")[1].split(" ")[0]
    assert again["already_registered"] and f"version {first_version} " in again["model"]
    assert any("not training or registering it again" in m for m in messages)
    assert not any("resuming from step" in m for m in messages)

    lake.write_partitions(_sequences(spark, seed=2), "sequences")  # `sequences` rerun for the same date
    caplog.clear()
    rerun = train_job.run(spark, cfg, run_date=RUN, encoder_name="bert4rec")
    messages = [r.getMessage() for r in caplog.records]
    assert rerun["start_step"] == 0 and rerun["steps"] > 0
    assert not any("reusing the training snapshot" in m or "resuming from step" in m for m in messages)
    assert any("the sequences (rerun) changed" in m and "training afresh" in m for m in messages)

    caplog.clear()
    longer = train_job.run(
        spark, _config(lake_sets, "train.encoders.bert4rec.epochs=3"), run_date=RUN, encoder_name="bert4rec"
    )
    messages = [r.getMessage() for r in caplog.records]
    assert longer["start_step"] == 0 and longer["epochs_completed"] == 3
    assert any("the training config changed" in m for m in messages)

    training = lake.path("training", "bert4rec", RUN.isoformat())
    assert len(lakefs.glob(training, "*/source.json")) == 3


@pytest.mark.slow
def test_the_alias_moves_only_to_a_version_that_is_not_worse(  # type: ignore[no-untyped-def]
    spark, lake_sets, in_process, caplog: pytest.LogCaptureFixture
) -> None:
    from custembed.jobs import train as train_job
    from custembed.jobs.common import lake_from
    from custembed.tracking import TAG_CUTOFF, TAG_PROMOTION, TAG_RUN_DATE, tracking_for

    sets = ("tracking.model_prefix=promo", "train.encoders.bert4rec.epochs=3")
    cfg = _config(lake_sets, *sets)
    lake = lake_from(spark, cfg)
    lake.write_partitions(_sequences(spark, seed=3), "sequences")
    tracking = tracking_for(cfg.tracking, cfg.project.lake_dir)

    good = train_job.run(spark, cfg, run_date=RUN, encoder_name="bert4rec")
    first = tracking.alias_version("bert4rec", "champion")
    assert first is not None and "alias champion" in good["model"]
    # A barely trained model (one step at a tiny learning rate) validates worse on the same customers.
    worse_cfg = _config(lake_sets, *sets, "train.encoders.bert4rec.max_steps=1", "train.encoders.bert4rec.lr=0.000001")
    caplog.set_level(logging.INFO, logger="custembed")
    worse = train_job.run(spark, worse_cfg, run_date=RUN, encoder_name="bert4rec")
    assert worse["champion_val_loss"] < worse["val_loss"]
    assert tracking.alias_version("bert4rec", "champion") == first
    assert any("does not take alias champion" in r.getMessage() for r in caplog.records)
    versions = dict(tracking.versions("bert4rec"))
    newest = max(versions, key=int)
    assert versions[newest][TAG_PROMOTION].startswith("did not take alias champion: val_loss")
    assert versions[newest][TAG_RUN_DATE] == RUN.isoformat() and versions[newest][TAG_CUTOFF] == "2030-10-31"

    # asked to promote on a rerun of the same training: that version takes the alias, none is added
    forced = train_job.run(spark, worse_cfg, run_date=RUN, encoder_name="bert4rec", promote="always")
    assert forced["already_registered"] and "alias champion" in forced["model"]
    assert tracking.alias_version("bert4rec", "champion") == newest
    assert max(dict(tracking.versions("bert4rec")), key=int) == newest


@contextlib.contextmanager
def _default_fs_elsewhere(spark: Any, root: Path) -> Iterator[None]:
    """``fs.defaultFS`` on a file system rooted at ``root``, as HDFS is on YARN: Hadoop puts a scheme-less
    ``/a/b`` at ``root/a/b``, while pathlib and pyarrow read ``/a/b``.

    A ``file://`` defaultFS alone would not show the bug (Hadoop's local file system ignores the
    URI's path), so a view file system whose fallback mount is the ``file://`` root plays HDFS.
    The session is shared, so its Hadoop configuration is changed in place and restored after.
    """
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    settings = {"fs.defaultFS": "viewfs://elsewhere/", "fs.viewfs.mounttable.elsewhere.linkFallback": root.as_uri()}
    before = {key: conf.get(key) for key in settings}
    for key, value in settings.items():
        conf.set(key, value)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                conf.unset(key)
            else:
                conf.set(key, value)


@pytest.mark.slow
def test_the_snapshot_spark_writes_is_the_one_training_reads_whatever_the_default_fs(  # type: ignore[no-untyped-def]
    spark, lake_sets, in_process, tmp_path: Path
) -> None:
    from custembed.jobs import train as train_job
    from custembed.jobs.common import lake_from

    cfg = _config(lake_sets, "tracking.model_prefix=defaultfs", "train.encoders.bert4rec.epochs=1")
    lake = lake_from(spark, cfg)
    lake.write_partitions(_sequences(spark, seed=5, n=60), "sequences")
    root = tmp_path / "default-fs-root"
    root.mkdir()
    with _default_fs_elsewhere(spark, root):
        result = train_job.run(spark, cfg, run_date=RUN, encoder_name="bert4rec")
    assert result["sequences"] == 60 and result["steps"] > 0  # pyarrow read back every row Spark wrote
    assert not list(root.rglob("*.parquet"))  # nothing went to the default file system


@pytest.mark.slow
def test_a_lake_given_as_a_file_uri_trains_checkpoints_and_saves_there(  # type: ignore[no-untyped-def]
    spark, lake_sets, in_process, lake_dir: Path
) -> None:
    from custembed.encoders import load_encoder
    from custembed.jobs import train as train_job
    from custembed.jobs.common import lake_from

    uri = f"file://{lake_dir}/"
    cfg = _config(
        lake_sets, "tracking.model_prefix=fileuri", "train.encoders.bert4rec.epochs=1", f"project.lake_dir={uri}"
    )
    assert cfg.project.lake_dir == uri
    lake = lake_from(spark, cfg)
    lake.write_partitions(_sequences(spark, seed=6, n=60), "sequences")
    training = lake.path("training", "bert4rec", RUN.isoformat())
    earlier = set(lakefs.glob(training, "*/source.json"))  # the module's other tests share the lake
    result = train_job.run(spark, cfg, run_date=RUN, encoder_name="bert4rec")
    assert result["sequences"] == 60 and result["steps"] > 0

    (source,) = set(lakefs.glob(training, "*/source.json")) - earlier
    work = lakefs.parent(source)
    assert work.startswith(f"file://{lake_dir}/training/bert4rec/")
    assert lakefs.glob(lakefs.join(work, "checkpoints"), "step-*/state.pt")
    assert lakefs.exists(lakefs.join(work, "data", "_SUCCESS"))
    assert load_encoder(lakefs.join(work, "encoder")).kind == "bert4rec"
    assert train_job.run(spark, cfg, run_date=RUN, encoder_name="bert4rec")["already_registered"]
    # a registry that lacks this training (as after a kill before registering) resumes the same key directory
    unregistered = _config(
        lake_sets, "tracking.model_prefix=fileuri-resume", "train.encoders.bert4rec.epochs=1", f"project.lake_dir={uri}"
    )
    again = train_job.run(spark, unregistered, run_date=RUN, encoder_name="bert4rec")
    assert again["start_step"] == result["steps"]  # resumed through the URI

"""Incremental embedding: unchanged customers keep their vector, the table equals a full run's."""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import functions as F

from custembed import schemas
from custembed.config import Config, load_config

DAY1, DAY2 = dt.date(2023, 7, 30), dt.date(2023, 7, 31)
N = 60
CHANGED = {schemas.VIEW_TRAIN: range(0, 3), schemas.VIEW_CURRENT: range(0, 5)}  # new events on DAY2
GONE = range(5, 8)  # no sequence on DAY2
NEW = range(N, N + 4)  # first sequence on DAY2
COLUMNS = ("customer_id", "model_name", "model_version", "vector", "fingerprint", "dt", "view", "source")


def _tokens(customer: int, *, extra: bool) -> list[int]:
    """A customer's action ids (4..39: actions in both catalogues used here), one more when ``extra``."""
    rng = random.Random(customer)
    tokens = [rng.randrange(4, 40) for _ in range(rng.randint(2, 10))]
    return [*tokens, 4 + customer % 30] if extra else tokens


def _sequences(spark: Any, day: dt.date) -> Any:
    """Both views of ``day``: DAY1 has customers 0..N-1; DAY2 drops GONE, adds NEW and extends CHANGED."""
    customers = range(N) if day == DAY1 else [c for c in range(N + len(NEW)) if c not in GONE]
    rows = []
    for view, changed in CHANGED.items():
        for c in customers:
            tokens = _tokens(c, extra=day == DAY2 and c in changed)
            when = dt.datetime(2023, 1, 1)
            rows.append(
                (
                    f"c{c:03d}",
                    day.isoformat(),
                    tokens,
                    " ".join(f"a{t}" for t in tokens),
                    len(tokens),
                    len(tokens),
                    len(tokens),
                    0,
                    when,
                    when,
                    [0] + [3] * (len(tokens) - 1),
                    [20] * len(tokens),  # amounts
                    day.isoformat(),
                    view,
                )
            )
    return spark.createDataFrame(rows, schemas.TABLE_SCHEMAS["sequences"])


def _config(lake_dir: Path, database: str, *sets: str) -> Config:
    return load_config(None, [f"project.lake_dir={lake_dir}", f"project.database={database}", *sets])


def _lake(spark: Any, cfg: Config) -> Any:
    from custembed.jobs.common import lake_from
    from custembed.spark import ensure_database

    ensure_database(spark, cfg.project.database)
    lake = lake_from(spark, cfg)
    for day in (DAY1, DAY2):
        lake.write_partitions(_sequences(spark, day), "sequences")
    return lake


def _rows(lake: Any, day: dt.date, source: str) -> dict[tuple[str, str], tuple[Any, ...]]:
    rows = lake.read_partition("embeddings", day.isoformat(), source=source).select(*COLUMNS).collect()
    return {(r["view"], r["customer_id"]): tuple(r) for r in rows}


def _runs_details(lake: Any, day: dt.date, job: str) -> str:
    rows = lake.read_partition("runs", day.isoformat()).where(F.col("job") == job).orderBy("finished_at").collect()
    return str(rows[-1]["details"])


def test_an_incremental_run_carries_the_unchanged_and_writes_what_a_full_run_writes(spark: Any, lake_dir: Path) -> None:
    from custembed.jobs import embed

    incremental = _config(lake_dir, "t_embed_incremental")
    full = _config(lake_dir, "t_embed_incremental_full", "embed.incremental=false")
    lake, full_lake = _lake(spark, incremental), _lake(spark, full)

    first = embed.run(spark, incremental, run_date=DAY1, source="counts")
    assert first["carried_over"] == {"train": 0, "current": 0} and first["embedded"] == {"train": N, "current": N}

    summary = embed.run(spark, incremental, run_date=DAY2, source="counts")
    embed.run(spark, full, run_date=DAY2, source="counts")

    today = N - len(GONE) + len(NEW)
    unchanged = {view: N - len(GONE) - len(changed) for view, changed in CHANGED.items()}
    assert summary["customers"] == {"train": today, "current": today}
    assert summary["carried_over"] == unchanged
    assert summary["embedded"] == {view: today - n for view, n in unchanged.items()}
    assert summary["carried_from"] == {"train": DAY1.isoformat(), "current": DAY1.isoformat()}
    recorded = json.loads(_runs_details(lake, DAY2, "embed:counts"))
    assert recorded["carried_over"] == unchanged and recorded["embedded"] == summary["embedded"]

    got, expected = _rows(lake, DAY2, "counts"), _rows(full_lake, DAY2, "counts")
    assert got == expected  # same rows, vectors and fingerprints, exactly
    assert not any(customer == f"c{c:03d}" for _, customer in got for c in GONE)
    before = _rows(lake, DAY1, "counts")
    changed = {(view, f"c{c:03d}") for view, customers in CHANGED.items() for c in customers}
    for key, row in got.items():
        if key in before:
            # the fingerprint moves exactly when the customer's tokens do
            assert (row[4] == before[key][4]) == (key not in changed), key

    # another action catalogue is another counts model: nobody is carried
    other = _config(lake_dir, "t_embed_incremental", "sequences.catalogue=retail_actions.yaml")
    rerun = embed.run(spark, other, run_date=DAY2, source="counts")
    assert rerun["carried_over"] == {"train": 0, "current": 0}
    assert rerun["embedded"] == {"train": today, "current": today}


@pytest.mark.slow
def test_a_saved_encoder_is_carried_while_unchanged_and_a_new_one_embeds_everyone(
    spark: Any, lake_dir: Path, tmp_path: Path
) -> None:
    from custembed.encoders import build_encoder
    from custembed.jobs import embed

    models = {}
    for seed in (1, 2):
        import torch

        torch.manual_seed(seed)
        models[seed] = str(tmp_path / f"encoder-{seed}")
        build_encoder("bert4rec", vocab_size=40, hidden_size=16, num_layers=1, num_heads=2, max_len=16).save(
            models[seed]
        )
    cfg = _config(lake_dir, "t_embed_incremental_encoder", "embed.partitions=2", "embed.batch_size=16")
    full = _config(lake_dir, "t_embed_incremental_encoder_full", "embed.partitions=2", "embed.incremental=false")
    lake, full_lake = _lake(spark, cfg), _lake(spark, full)

    embed.run(spark, cfg, run_date=DAY1, source="bert4rec", model_path=models[1])
    same = embed.run(spark, cfg, run_date=DAY2, source="bert4rec", model_path=models[1])
    embed.run(spark, full, run_date=DAY2, source="bert4rec", model_path=models[1])
    assert same["carried_over"] == {view: N - len(GONE) - len(changed) for view, changed in CHANGED.items()}
    got, expected = _rows(lake, DAY2, "bert4rec"), _rows(full_lake, DAY2, "bert4rec")
    assert got.keys() == expected.keys()
    for key, row in got.items():
        assert row[:3] == expected[key][:3] and row[4:] == expected[key][4:]
        # batches of other lengths pad differently: equal up to float rounding
        assert row[3] == pytest.approx(expected[key][3], abs=1e-5), key

    other = embed.run(spark, cfg, run_date=DAY2, source="bert4rec", model_path=models[2])
    assert other["carried_over"] == {"train": 0, "current": 0}

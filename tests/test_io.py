"""Lake writes: a table written by an older version migrates by adding the columns registered since."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import functions as F

from custembed import schemas, tables
from custembed.errors import InputError
from custembed.io import Lake

WHEN = dt.datetime(2023, 1, 5, tzinfo=dt.timezone.utc)


def sequences_rows(spark: Any, customer: str, day: str, gaps: list[int] | None) -> Any:
    """One train-view sequences row with the registered columns, or (``gaps=None``) as the version
    before ``gaps`` wrote it: without ``gaps`` and ``amounts``, added after it."""
    row = {
        "customer_id": customer,
        "cutoff": "2023-01-31",
        "tokens": [4, 5],
        "text": "a -> b",
        "seq_len": 2,
        "full_len": 2,
        "n_events": 2,
        "n_no_action": 0,
        "first_event_time": WHEN,
        "last_event_time": WHEN,
        schemas.GAPS: gaps,
        schemas.AMOUNTS: None if gaps is None else [0, 12],
        schemas.DT: day,
        schemas.VIEW: schemas.VIEW_TRAIN,
    }
    frame = spark.createDataFrame([row], schemas.SEQUENCES)
    return frame.drop(schemas.GAPS, schemas.AMOUNTS) if gaps is None else frame


@pytest.fixture()
def lake(spark: Any, lake_dir: Path, database: str) -> Lake:
    from custembed.spark import ensure_database

    ensure_database(spark, database)
    lake = Lake(spark, database, str(lake_dir))
    spark.sql(f"DROP TABLE IF EXISTS {lake.table('sequences')}")
    return lake


def test_an_older_sequences_table_gets_the_gaps_column_before_its_partitions(
    spark: Any, lake: Lake, caplog: pytest.LogCaptureFixture
) -> None:
    name = lake.table("sequences")
    # the table as the version before `gaps` wrote it
    old = sequences_rows(spark, "old", "2023-06-30", gaps=None)
    old.write.format("parquet").partitionBy(schemas.DT, schemas.VIEW).saveAsTable(name)
    assert schemas.GAPS not in spark.table(name).columns

    caplog.set_level(logging.WARNING, logger="custembed.io")
    lake.write_partitions(sequences_rows(spark, "new", "2023-07-31", gaps=[0, 3]), "sequences")

    assert spark.table(name).columns == list(tables.table("sequences").column_names)
    assert any("added column(s) ['gaps', 'amounts']" in r.getMessage() for r in caplog.records)
    got = {r["customer_id"]: r[schemas.GAPS] for r in spark.table(name).select("customer_id", schemas.GAPS).collect()}
    assert got == {"old": None, "new": [0, 3]}  # the older partition reads null, the new one its values
    new = lake.read_partition("sequences", "2023-07-31").first()
    assert new is not None and (new[schemas.DT], new[schemas.VIEW], new["seq_len"]) == ("2023-07-31", "train", 2)

    # later writes find the registered columns: no migration again, and a rerun replaces its partition
    caplog.clear()
    lake.write_partitions(sequences_rows(spark, "new", "2023-07-31", gaps=[0, 4]), "sequences")
    assert not any("added column" in r.getMessage() for r in caplog.records)
    assert lake.read_partition("sequences", "2023-07-31").select(schemas.GAPS).collect()[0][0] == [0, 4]


def test_a_table_that_differs_other_than_by_added_columns_is_refused(spark: Any, lake: Lake) -> None:
    name = lake.table("sequences")
    renamed = sequences_rows(spark, "old", "2023-06-30", gaps=None).withColumnRenamed("text", "words")
    renamed.write.format("parquet").partitionBy(schemas.DT, schemas.VIEW).saveAsTable(name)
    with pytest.raises(InputError, match="migrate or drop it"):
        lake.write_partitions(sequences_rows(spark, "new", "2023-07-31", gaps=[0, 3]), "sequences")
    assert schemas.GAPS not in spark.table(name).columns  # nothing altered
    assert spark.table(name).where(F.col("customer_id") == "new").count() == 0

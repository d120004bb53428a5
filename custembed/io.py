"""The only place table names, formats and paths appear.

Per-run tables are partitioned by run date (``dt``, plus the partitions named
in ``schemas.PARTITIONS``) and written with dynamic partition overwrite: a
rerun for the same date replaces its partitions and never duplicates rows.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from custembed import schemas
from custembed.config import ConfigError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

SOURCE_TABLE = "raw_events"


@dataclass(frozen=True)
class Lake:
    """Tables of the project's catalogue database, and paths under the lake."""

    spark: SparkSession
    database: str
    lake_dir: str
    table_format: str = "parquet"
    overrides: Mapping[str, str] | None = None

    # -- names and paths -------------------------------------------------
    def table(self, logical: str) -> str:
        """Physical name of a logical table (``sequences`` → ``custembed.sequences``)."""
        physical = (self.overrides or {}).get(logical, logical)
        return physical if "." in physical else f"`{self.database}`.`{physical}`"

    def path(self, *parts: str) -> Path:
        """A directory under the lake (models, checkpoints, tracking, reports)."""
        return Path(self.lake_dir).resolve().joinpath(*parts)

    def exists(self, logical: str) -> bool:
        return bool(self.spark.catalog.tableExists(self.table(logical).replace("`", "")))

    # -- reads -------------------------------------------------------------
    def read(self, logical: str) -> DataFrame:
        if not self.exists(logical):
            raise ConfigError(f"table {self.table(logical)} does not exist: run the job that writes it first")
        return self.spark.table(self.table(logical))

    def read_partition(self, logical: str, dt: str, **partition: str) -> DataFrame:
        """Rows of one run date (and other partition values) of a per-run table."""
        from pyspark.sql import functions as F

        rows = self.read(logical).where(F.col(schemas.DT) == dt)
        for column, value in partition.items():
            rows = rows.where(F.col(column) == value)
        return rows

    def read_events(self, source: str | None) -> DataFrame:
        """Raw events from a catalogue table, a Parquet directory or a CSV file with a header."""
        source = source or SOURCE_TABLE
        path = Path(source)
        lowered = source.lower()
        if lowered.endswith((".csv", ".csv.gz")):
            if not path.exists():
                raise ConfigError(f"events file not found: {source}")
            # Every column as text: times and ids are validated by the sequences job.
            return self.spark.read.option("header", True).option("inferSchema", False).csv(str(path))
        if "/" in source or lowered.endswith(".parquet"):
            if not path.exists():
                raise ConfigError(f"events path not found: {source}")
            return self.spark.read.parquet(str(path))
        name = source if "." in source else self.table(source)
        if not self.spark.catalog.tableExists(name.replace("`", "")):
            raise ConfigError(f"events table {name} does not exist (run `custembed generate` or pass --events)")
        return self.spark.table(name)

    # -- writes ------------------------------------------------------------
    def write_partitions(self, rows: DataFrame, logical: str) -> None:
        """Replace the partitions present in ``rows`` (dynamic overwrite); create the table if needed."""
        schema = schemas.TABLE_SCHEMAS[logical]
        missing = [f.name for f in schema.fields if f.name not in rows.columns]
        if missing:
            raise ValueError(f"{logical}: rows lack columns {missing}")
        ordered = rows.select(*[rows[f.name].cast(f.dataType).alias(f.name) for f in schema.fields])
        name = self.table(logical)
        if self.exists(logical):
            existing = [f.name for f in self.spark.table(name).schema.fields]
            if existing != [f.name for f in schema.fields]:
                raise ConfigError(
                    f"table {name} has columns {existing}, this version writes {[f.name for f in schema.fields]}: "
                    "migrate or drop it"
                )
            ordered.write.insertInto(name, overwrite=True)
        else:
            (
                ordered.write.format(self.table_format)
                .partitionBy(*schemas.PARTITIONS[logical])
                .mode("overwrite")
                .saveAsTable(name)
            )
        log.info("wrote %s", name)

    def append(self, rows: DataFrame, logical: str) -> None:
        """Append rows (audit tables such as ``runs``)."""
        schema = schemas.TABLE_SCHEMAS[logical]
        ordered = rows.select(*[rows[f.name].cast(f.dataType).alias(f.name) for f in schema.fields])
        name = self.table(logical)
        if self.exists(logical):
            ordered.write.insertInto(name, overwrite=False)
        else:
            ordered.write.format(self.table_format).partitionBy(*schemas.PARTITIONS[logical]).saveAsTable(name)

    def overwrite(self, rows: DataFrame, logical: str) -> None:
        """Replace a whole table (sources such as the generated ``raw_events``)."""
        rows.write.format(self.table_format).mode("overwrite").saveAsTable(self.table(logical))
        log.info("wrote %s", self.table(logical))

    def overwrite_path(self, rows: DataFrame, path: str) -> None:
        rows.write.mode("overwrite").parquet(path)

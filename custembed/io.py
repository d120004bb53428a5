"""Reads and writes of the project's tables, through the registry (``custembed.tables``).

Per-run tables are partitioned by run date (``dt``, plus the partitions the
registry names) and written with dynamic partition overwrite: a rerun for the
same date replaces its partitions and never duplicates rows. Physical names
follow the registry's location rule (:func:`custembed.tables.physical_name`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from custembed import lakefs, schemas, tables
from custembed.errors import InputError, TableNotFoundError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

SOURCE_TABLE = "raw_events"


def _existing_input(path: str, what: str) -> str:
    """The qualified URI of an input outside the catalogue; ``InputError`` naming ``what`` when it is missing.

    The same URI serves the check and Spark: a plain path is on the local disk for both.
    """
    uri = lakefs.spark_uri(path)
    if not lakefs.exists(uri):
        raise InputError(f"{what} not found: {path}")
    return uri


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
        return tables.physical_name(logical, self.database, self.overrides)

    def path(self, *parts: str) -> str:
        """URI of a directory or file under the lake (models, checkpoints, tracking, reports):
        ``file:///…`` for a plain ``lake_dir``; Spark and :mod:`custembed.lakefs` both take it as is."""
        return lakefs.join(self.lake_dir, *parts)

    def exists(self, logical: str) -> bool:
        """Whether the catalogue holds the table (or view) of a logical name."""
        return bool(self.spark.catalog.tableExists(self.table(logical).replace("`", "")))

    # -- reads -------------------------------------------------------------
    def read(self, logical: str) -> DataFrame:
        """The whole table; ``TableNotFoundError`` naming the job to run when it was never written."""
        if not self.exists(logical):
            raise TableNotFoundError(f"table {self.table(logical)} does not exist: {tables.missing_hint(logical)}")
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
        lowered = source.lower()
        if lowered.endswith((".csv", ".csv.gz")):
            return self.read_csv(source, what="events file")
        if "/" in source or lowered.endswith(".parquet"):
            return self.read_path(source, what="events path")
        name = source if "." in source else self.table(source)
        if not self.spark.catalog.tableExists(name.replace("`", "")):
            raise TableNotFoundError(f"events table {name} does not exist (run `custembed generate` or pass --events)")
        return self.spark.table(name)

    def read_csv(self, path: str, *, what: str = "file", logical: str | None = None) -> DataFrame:
        """A CSV file with a header, every column as text; with ``logical``, its registered columns are checked."""
        uri = _existing_input(path, what)
        # Every column as text: times and ids are validated by the sequences job.
        rows = self.spark.read.option("header", True).option("inferSchema", False).csv(uri)
        if logical is not None:
            missing = [c for c in tables.table(logical).column_names if c not in rows.columns]
            if missing:
                raise InputError(f"{what} {path}: missing column '{missing[0]}' (has: {', '.join(rows.columns)})")
        return rows

    def read_text(self, path: str, *, what: str = "input file") -> DataFrame:
        """A text file (or directory of them) as ``value`` lines, compressed or not."""
        uri = _existing_input(path, what)
        return self.spark.read.text(uri)

    def read_path(self, path: str, *, what: str = "Parquet path") -> DataFrame:
        """A Parquet directory or file outside the catalogue."""
        uri = _existing_input(path, what)
        return self.spark.read.parquet(uri)

    # -- writes ------------------------------------------------------------
    def _ordered(self, rows: DataFrame, logical: str) -> DataFrame:
        """``rows`` with the registered columns of ``logical``, in order and cast to their types."""
        schema = schemas.struct_of(logical)
        missing = [f.name for f in schema.fields if f.name not in rows.columns]
        if missing:
            raise ValueError(f"{logical}: rows lack columns {missing}")
        return rows.select(*[rows[f.name].cast(f.dataType).alias(f.name) for f in schema.fields])

    def write_partitions(self, rows: DataFrame, logical: str) -> None:
        """Replace the partitions present in ``rows`` (dynamic overwrite); create the table if needed."""
        spec = tables.table(logical)
        ordered = self._ordered(rows, logical)
        name = self.table(logical)
        if self.exists(logical):
            existing = [f.name for f in self.spark.table(name).schema.fields]
            if existing != list(spec.column_names):
                self._add_missing_columns(logical, existing)
            ordered.write.insertInto(name, overwrite=True)
        else:
            (ordered.write.format(self.table_format).partitionBy(*spec.partitions).mode("overwrite").saveAsTable(name))
        log.info("wrote %s", name)

    def _add_missing_columns(self, logical: str, existing: list[str]) -> None:
        """Migrate a table written by an older version that lacks columns registered since.

        Only additive changes are migrated: the table's data columns must be the first of the
        registered ones and its partition columns the registered partitions. The missing data
        columns are added with ``ALTER TABLE ... ADD COLUMNS`` (Spark places them after the data
        columns, before the partitions; partitions written before read them as null). Anything
        else (a column removed, renamed or moved) is an ``InputError``; types are not compared.
        """
        spec = tables.table(logical)
        name = self.table(logical)
        registered = list(spec.column_names)
        partitions = list(spec.partitions)
        data, old_data = registered[: len(registered) - len(partitions)], existing[: len(existing) - len(partitions)]
        additive = (
            existing[len(old_data) :] == partitions and len(old_data) < len(data) and data[: len(old_data)] == old_data
        )
        if not additive:
            raise InputError(
                f"table {name} has columns {existing}, this version writes {registered}: migrate or drop it"
            )
        types = spec.types
        added = data[len(old_data) :]
        self.spark.sql(f"ALTER TABLE {name} ADD COLUMNS ({', '.join(f'`{c}` {types[c]}' for c in added)})")
        log.warning("migrated table %s: added column(s) %s (null in partitions written before)", name, added)
        now = [f.name for f in self.spark.table(name).schema.fields]
        if now != registered:
            raise InputError(f"table {name} has columns {now} after adding {added}, expected {registered}")

    def append(self, rows: DataFrame, logical: str) -> None:
        """Append rows (audit tables such as ``runs``)."""
        ordered = self._ordered(rows, logical)
        name = self.table(logical)
        if self.exists(logical):
            ordered.write.insertInto(name, overwrite=False)
        else:
            ordered.write.format(self.table_format).partitionBy(*tables.table(logical).partitions).saveAsTable(name)

    def overwrite(self, rows: DataFrame, logical: str) -> None:
        """Replace a whole table (sources such as the generated ``raw_events``)."""
        rows.write.format(self.table_format).mode("overwrite").saveAsTable(self.table(logical))
        log.info("wrote %s", self.table(logical))

    def overwrite_path(self, rows: DataFrame, path: str) -> None:
        """Replace a Parquet directory outside the catalogue with ``rows`` as they are."""
        rows.write.mode("overwrite").parquet(lakefs.spark_uri(path))

    def write_files(self, rows: DataFrame, logical: str, path: str) -> None:
        """Replace a Parquet directory with the registered columns of a :data:`~custembed.tables.FILES` table.

        Spark gets the qualified URI: a scheme-less path would go to ``fs.defaultFS`` (HDFS on YARN),
        not where Python reads the files back.
        """
        if tables.table(logical).kind != tables.FILES:
            raise ValueError(f"table {logical} is a catalogue table, not files under the lake")
        self._ordered(rows, logical).write.mode("overwrite").parquet(lakefs.spark_uri(path))
        log.info("wrote %s files to %s", logical, path)

    def refresh_view(self, logical: str) -> None:
        """Create or replace a registered view (``top_decile_customers``)."""
        self.spark.sql(tables.view_sql(logical, self.database, self.overrides))
        log.info("refreshed view %s", self.table(logical))

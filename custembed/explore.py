"""Read the project's tables with pandas/pyarrow, for notebooks and quick analysis.

The embedded catalogue's Derby metastore admits one JVM at a time, so a
notebook that started Spark would lock out the jobs (and vice versa). The
tables are plain Parquet in Hive-style partition directories::

    <lake_dir>/.../<database>.db/<table>/dt=2023-07-31/view=train/source=bert4rec/part-*.parquet

(the location rule, the columns and the partitions of every table come from
the registry, :mod:`custembed.tables`), so this module reads them directly
with ``pyarrow.dataset``: partition columns come back as text (``dt`` stays
``"2023-07-31"``), and filters on them only open the matching directories.
Spark's ``_SUCCESS`` and ``.crc`` files are skipped (pyarrow ignores names
starting with ``_`` or ``.``).

This module never imports pyspark. It reads what the jobs wrote on the
embedded default; on a cluster, point ``lake_dir`` at a copy or mount of the
tables, or use the Spark SQL queries of ``docs/tables.md``.

:func:`execute_notebook` runs a notebook of ``notebooks/`` end to end (tests
use it on a fake lake and on real tables).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from custembed import comparison, lakefs, projections, tables
from custembed.comparison import COMPARISON_METRICS, best_sources
from custembed.errors import InputError, TableNotFoundError
from custembed.tables import CUSTOMER_ID, DEFAULT_DATABASE, DT, VIEW_TRAIN

__all__ = [
    "COMPARISON_METRICS",
    "DEFAULT_CLASSIFIER",
    "DEFAULT_DATABASE",
    "LIFT_COLUMNS",
    "METRIC_COLUMNS",
    "best_sources",
    "classifier_comparison",
    "embedding_sample",
    "execute_notebook",
    "latest_run_date",
    "lift_table",
    "model_comparison",
    "read_table",
    "table_path",
]

DEFAULT_CLASSIFIER = "random_forest"
TEST_WINDOW = "test"

# Columns of the metric and lift tables, in display order (from the registry).
METRIC_COLUMNS: tuple[str, ...] = tables.select_columns("model_metrics", first=("product", "source"), without=(DT,))
LIFT_COLUMNS: tuple[str, ...] = tables.select_columns(
    "decile_lift", first=("source",), without=(DT, "product", "classifier")
)


# ---------------------------------------------------------------- tables


def table_path(lake_dir: str | os.PathLike[str], table: str, database: str = DEFAULT_DATABASE) -> str:
    """Directory of a table on the embedded default (:func:`custembed.tables.warehouse_path`).

    Args:
        lake_dir: the project's ``project.lake_dir``.
        table: logical table name (``embeddings``), or ``database.table`` for a
            table remapped to another database.
        database: catalogue database (``project.database``).

    Returns:
        The URI of the table's directory (not checked for existence); ``lake_dir`` may be a URI.
    """
    return tables.warehouse_path(lake_dir, table, database)


def _partition_keys(path: str) -> list[str]:
    """Partition column names, outermost first, from the ``key=value`` directory levels."""
    keys: list[str] = []
    level = path
    while True:
        children = [
            child
            for child in lakefs.ls(level)
            if "=" in lakefs.name(child) and not lakefs.name(child).startswith((".", "_")) and lakefs.isdir(child)
        ]
        if not children:
            return keys
        keys.append(lakefs.name(children[0]).split("=", 1)[0])
        level = children[0]


def _dataset(lake_dir: str | os.PathLike[str], table: str, database: str) -> ds.Dataset:
    path = table_path(lake_dir, table, database)
    name = table.split(".")[-1]
    if not lakefs.isdir(path):
        raise TableNotFoundError(f"table {database}.{name} not found at {path}: {tables.missing_hint(name)}")
    spec = tables.TABLES.get(name)
    # registered tables: the registry's partitions; a table of another version: what its directories say
    keys = list(spec.partitions) if spec is not None and "." not in table else _partition_keys(path)
    # An explicit all-text schema instead of partitioning="hive" with type inference: inference would turn a
    # value such as "007" into the integer 7; every partition column of the project is text.
    partitioning = ds.partitioning(pa.schema([pa.field(key, pa.string()) for key in keys]), flavor="hive")
    filesystem, fs_path = lakefs.pyarrow_filesystem(path)
    return ds.dataset(fs_path, filesystem=filesystem, format="parquet", partitioning=partitioning)


def read_table(
    lake_dir: str | os.PathLike[str],
    table: str,
    *,
    database: str = DEFAULT_DATABASE,
    filters: Mapping[str, str] | None = None,
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Rows of a table as a pandas DataFrame.

    Args:
        lake_dir: the project's ``project.lake_dir``.
        table: logical table name (``model_metrics``), see ``docs/tables.md``.
        database: catalogue database.
        filters: ``{column: value}``, all must hold. Filters on partition
            columns (``dt``, ``view``, ``source``) only open the matching
            directories; other columns are filtered while scanning (the value
            is cast to the column's type).
        columns: columns to read (default: all, partition columns last).

    Returns:
        The rows; partition columns as text. Array columns (``vector``,
        ``tokens``) hold one numpy array per row.

    Raises:
        TableNotFoundError: the table does not exist; the message names the job that writes it.
        InputError: a filter or a requested column is not a column of the table.
    """
    dataset = _dataset(lake_dir, table, database)
    available = dataset.schema.names
    unknown = [column for column in [*(filters or {}), *(columns or [])] if column not in available]
    if unknown:
        raise InputError(f"table {table} has no column(s) {unknown}; its columns: {available}")
    expression = None
    for column, value in (filters or {}).items():
        field_type = dataset.schema.field(column).type
        scalar = pa.scalar(str(value)) if pa.types.is_string(field_type) else pa.scalar(str(value)).cast(field_type)
        condition = pc.field(column) == scalar
        expression = condition if expression is None else expression & condition
    arrow = dataset.to_table(columns=list(columns) if columns is not None else None, filter=expression)
    return arrow.to_pandas()


def _values(
    lake_dir: str | os.PathLike[str],
    table: str,
    column: str,
    filters: Mapping[str, str] | None = None,
    database: str = DEFAULT_DATABASE,
) -> list[str]:
    """Distinct values of a column (partition columns are cheap: no data pages are read)."""
    frame = read_table(lake_dir, table, database=database, filters=filters, columns=[column])
    return sorted(str(value) for value in frame[column].dropna().unique())


def _require(value: str, available: Sequence[str], what: str, where: str) -> None:
    if value not in available:
        listed = ", ".join(available) if available else "none"
        raise InputError(f"unknown {what} {value!r} in {where}; available: {listed}")


def latest_run_date(lake_dir: str | os.PathLike[str], table: str = "model_metrics") -> str:
    """The greatest run date (``dt``, ``YYYY-MM-DD``) with rows in ``table``.

    Raises:
        TableNotFoundError: the table does not exist.
        InputError: the table has no ``dt`` column or no rows.
    """
    dates = _values(lake_dir, table, DT)
    if not dates:
        raise InputError(f"table {table} has no rows: no run date to show")
    return dates[-1]


def _check_run_date(
    lake_dir: str | os.PathLike[str], table: str, run_date: str, database: str = DEFAULT_DATABASE
) -> None:
    _require(run_date, _values(lake_dir, table, DT, database=database), "run date", table)


# ---------------------------------------------------------------- model metrics


def _metrics(lake_dir: str | os.PathLike[str], run_date: str) -> pd.DataFrame:
    _check_run_date(lake_dir, "model_metrics", run_date)
    metrics = read_table(lake_dir, "model_metrics", filters={DT: run_date})
    present = [column for column in METRIC_COLUMNS if column in metrics.columns]
    return metrics[present]


def model_comparison(
    lake_dir: str | os.PathLike[str], run_date: str, classifier: str = DEFAULT_CLASSIFIER
) -> pd.DataFrame:
    """AUC, F1 and top-10 % lift per product (rows) and embedding source, for one classifier.

    Metrics are on the held-out test label window (``model_metrics``).

    Returns:
        One row per product (sorted); columns a two-level index
        ``(metric, source)`` with metrics in the order of
        :data:`COMPARISON_METRICS` and sources sorted. NaN where a product has
        no value for a source (e.g. AUC when the test window has no buyers).

    Raises:
        InputError: unknown run date or classifier (the available ones are
            listed), or several rows for one product and source.
    """
    return comparison.model_comparison(
        _metrics(lake_dir, run_date), classifier=classifier, where=f"model_metrics of {run_date}"
    )


def classifier_comparison(lake_dir: str | os.PathLike[str], run_date: str) -> pd.DataFrame:
    """Metric rows of the (product, source) pairs that were scored with several classifiers.

    ``score.comparison`` runs extra classifiers on one product and one source
    (the paper's classifier table).

    Returns:
        The ``model_metrics`` columns of those rows, sorted by product, source
        and descending AUC; empty (same columns) when no pair has several
        classifiers.

    Raises:
        InputError: unknown run date.
    """
    metrics = _metrics(lake_dir, run_date)
    counts = metrics.groupby(["product", "source"])["classifier"].transform("nunique")
    rows = metrics[counts > 1]
    return rows.sort_values(
        ["product", "source", "auc"], ascending=[True, True, False], na_position="last"
    ).reset_index(drop=True)


def lift_table(
    lake_dir: str | os.PathLike[str], run_date: str, product: str, classifier: str = DEFAULT_CLASSIFIER
) -> pd.DataFrame:
    """Decile lift of one product and classifier, every source (``decile_lift``, test window).

    Returns:
        Columns :data:`LIFT_COLUMNS`, one row per source and decile (1 = the 10 %
        highest scores), sorted by source and decile.

    Raises:
        InputError: unknown run date, product or classifier (the available ones are listed).
    """
    _check_run_date(lake_dir, "decile_lift", run_date)
    lift = read_table(lake_dir, "decile_lift", filters={DT: run_date})
    where = f"decile_lift of {run_date}"
    _require(classifier, sorted(lift["classifier"].unique()), "classifier", where)
    lift = lift[lift["classifier"] == classifier]
    _require(product, sorted(lift["product"].unique()), "product", f"{where} for {classifier}")
    rows = lift.loc[lift["product"] == product, list(LIFT_COLUMNS)]
    return rows.sort_values(["source", "decile"]).reset_index(drop=True)


# ---------------------------------------------------------------- embeddings


def embedding_sample(
    lake_dir: str | os.PathLike[str],
    run_date: str,
    source: str,
    product: str,
    n: int = 1500,
    seed: int = 0,
    database: str = DEFAULT_DATABASE,
) -> tuple[np.ndarray, np.ndarray]:
    """Train-view embeddings of a bounded customer sample, with test-window buyers of ``product`` flagged.

    The customers are those with both a ``train``-view embedding of ``source``
    and a ``test``-window label of ``product`` on ``run_date``; the sample
    follows :mod:`custembed.projections`' rule (every buyer while they fit in
    half of ``n``, non-buyers fill the rest; seeded), the same rule the report
    job applies in Spark. Only the chosen customers' vectors are materialised.

    ``database`` is the catalogue database (``project.database``).

    Returns:
        ``(embeddings [m, H] float32, is_buyer [m] bool)``, ``m <= n``, rows in
        customer-id order; the same inputs and seed give the same sample.

    Raises:
        InputError: ``n < 1``, unknown run date, source or product (the available
            ones are listed), or vectors of different lengths.
    """
    if n < 1:
        raise InputError(f"n must be at least 1, got {n}")
    _check_run_date(lake_dir, "embeddings", run_date, database)
    train_view = {DT: run_date, "view": VIEW_TRAIN}
    _require(
        source,
        _values(lake_dir, "embeddings", "source", train_view, database),
        "source",
        f"embeddings of {run_date} (train view)",
    )
    _check_run_date(lake_dir, "labels", run_date, database)
    products = _values(lake_dir, "labels", "product", {DT: run_date, "label_window": TEST_WINDOW}, database)
    _require(product, products, "product", f"labels of {run_date} (test window)")

    partition = {**train_view, "source": source}
    customers = read_table(lake_dir, "embeddings", database=database, filters=partition, columns=[CUSTOMER_ID])
    labels = read_table(
        lake_dir,
        "labels",
        database=database,
        columns=[CUSTOMER_ID, "label"],
        filters={DT: run_date, "product": product, "label_window": TEST_WINDOW},
    )
    joined = (
        customers.drop_duplicates(CUSTOMER_ID)
        .merge(labels.drop_duplicates(CUSTOMER_ID), on=CUSTOMER_ID, how="inner")
        .sort_values(CUSTOMER_ID, kind="stable")
        .reset_index(drop=True)
    )
    buyer = (joined["label"] == 1).to_numpy()
    chosen_mask = projections.choose_sample(joined[CUSTOMER_ID].tolist(), buyer, n, seed)
    buyer_ids = {str(customer) for customer in joined.loc[chosen_mask & buyer, CUSTOMER_ID]}
    chosen = sorted(str(customer) for customer in joined.loc[chosen_mask, CUSTOMER_ID])
    ids, embeddings = _vectors(lake_dir, database, partition, chosen, f"embeddings of {run_date}/{source}")
    is_buyer = np.array([customer in buyer_ids for customer in ids], dtype=bool)
    return embeddings, is_buyer


def _vectors(
    lake_dir: str | os.PathLike[str], database: str, partition: Mapping[str, str], chosen: Sequence[str], where: str
) -> tuple[list[str], np.ndarray]:
    """(customer ids, ``[m, H]`` float32 vectors) of the ``chosen`` customers of one embeddings partition."""
    dataset = _dataset(lake_dir, "embeddings", database)
    expression = pc.field(CUSTOMER_ID).isin(pa.array(list(chosen), pa.string()))
    for column, value in partition.items():
        expression = expression & (pc.field(column) == value)
    vectors = dataset.to_table(columns=[CUSTOMER_ID, "vector"], filter=expression)
    order = pc.sort_indices(vectors, sort_keys=[(CUSTOMER_ID, "ascending")])
    vectors = vectors.take(order)
    ids = [str(customer) for customer in vectors.column(CUSTOMER_ID).to_pylist()]
    if len(set(ids)) != len(ids):
        raise InputError(f"{where} hold several vectors for one customer")
    lists = vectors.column("vector").combine_chunks()
    lengths = pc.list_value_length(lists)
    if len(lists) and (lists.null_count or pc.min(lengths).as_py() != pc.max(lengths).as_py()):
        raise InputError(f"{where} have missing vectors or vectors of different lengths")
    dims = pc.min(lengths).as_py() if len(lists) else 0
    return ids, lists.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(ids), dims)


# ---------------------------------------------------------------- notebooks


def execute_notebook(
    path: str | os.PathLike[str],
    env: Mapping[str, str],
    *,
    timeout: int = 300,
    output: str | os.PathLike[str] | None = None,
) -> None:
    """Run every cell of a notebook in a fresh ``python3`` kernel.

    The kernel's working directory is the notebook's folder and its
    environment is this process's plus ``env`` (e.g. ``CUSTEMBED_LAKE``,
    ``CUSTEMBED_PRODUCT``); the notebook file itself is not modified.

    Args:
        path: the ``.ipynb`` file.
        env: environment variables for the kernel, added to the current ones.
        timeout: seconds allowed per cell.
        output: where to write the executed notebook with its outputs (optional).

    Raises:
        FileNotFoundError: no such notebook.
        RuntimeError: a cell failed; the message holds the cell's source and traceback.
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    notebook_path = Path(path)
    if not notebook_path.is_file():
        raise FileNotFoundError(f"notebook not found: {notebook_path}")
    notebook = nbformat.read(notebook_path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(notebook_path.parent.resolve())}},
    )
    try:
        # jupyter_client replaces the kernel's environment with this mapping, so pass the current one along
        client.execute(env={**os.environ, **{key: str(value) for key, value in env.items()}})
    except CellExecutionError as e:
        raise RuntimeError(f"notebook {notebook_path.name} failed:\n{e}") from e
    finally:
        if output is not None:
            Path(output).parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(notebook, output)

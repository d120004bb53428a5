"""Read the project's tables with pandas/pyarrow, for notebooks and quick analysis.

The embedded catalogue's Derby metastore admits one JVM at a time, so a
notebook that started Spark would lock out the jobs (and vice versa). The
tables are plain Parquet in Hive-style partition directories::

    <lake_dir>/warehouse/<database>.db/<table>/dt=2023-07-31/view=train/source=bert4rec/part-*.parquet

so this module reads them directly with ``pyarrow.dataset``: partition
columns come back as text (``dt`` stays ``"2023-07-31"``), and filters on them
only open the matching directories. Spark's ``_SUCCESS`` and ``.crc`` files
are skipped (pyarrow ignores names starting with ``_`` or ``.``).

This module never imports pyspark. It reads what the jobs wrote on the
embedded default (a local warehouse); on a cluster, point ``lake_dir`` at a
copy or mount of the warehouse, or use the Spark SQL queries of
``docs/tables.md``.

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

DEFAULT_DATABASE = "custembed"
DEFAULT_CLASSIFIER = "random_forest"

CUSTOMER_ID = "customer_id"
DT = "dt"
VIEW_TRAIN = "train"
TEST_WINDOW = "test"

# The job that writes each table (docs/tables.md), named when a table is missing.
WRITTEN_BY: Mapping[str, str] = {
    "raw_events": "generate",
    "online_retail_events": "retail",
    "sequences": "sequences",
    "labels": "sequences",
    "rejects": "sequences",
    "runs": "any job",
    "embeddings": "embed",
    "propensity_scores": "score",
    "model_metrics": "score",
    "decile_lift": "score",
}

# Columns of the model comparison, in display order (higher is better for all three).
COMPARISON_METRICS: tuple[str, ...] = ("auc", "f1", "top10_lift")
METRIC_COLUMNS: tuple[str, ...] = (
    "product", "source", "classifier", "rows", "positives", "auc", "f1", "precision", "recall", "accuracy",
    "top10_lift", "train_rows", "train_seconds", "message",
)
LIFT_COLUMNS: tuple[str, ...] = (
    "source", "decile", "customers", "buyers", "buy_rate", "lift", "cumulative_lift",
)


# ---------------------------------------------------------------- tables


def table_path(lake_dir: str | os.PathLike[str], table: str, database: str = DEFAULT_DATABASE) -> Path:
    """Directory of a table in the embedded warehouse.

    Args:
        lake_dir: the project's ``project.lake_dir``.
        table: logical table name (``embeddings``), or ``database.table`` for a
            table remapped to another database.
        database: catalogue database (``project.database``). Spark keeps the
            tables of ``default`` directly under the warehouse directory.

    Returns:
        ``<lake_dir>/warehouse/<database>.db/<table>`` (not checked for existence).
    """
    if "." in table:
        database, table = table.split(".", 1)
    if not table or not database:
        raise ValueError(f"table and database must not be empty, got database={database!r} table={table!r}")
    warehouse = Path(lake_dir) / "warehouse"
    if database == "default":
        return warehouse / table
    return warehouse / f"{database}.db" / table


def _partition_keys(path: Path) -> list[str]:
    """Partition column names, outermost first, from the ``key=value`` directory levels."""
    keys: list[str] = []
    level = path
    while True:
        children = sorted(
            child for child in level.iterdir()
            if child.is_dir() and "=" in child.name and not child.name.startswith((".", "_"))
        )
        if not children:
            return keys
        keys.append(children[0].name.split("=", 1)[0])
        level = children[0]


def _dataset(lake_dir: str | os.PathLike[str], table: str, database: str) -> ds.Dataset:
    path = table_path(lake_dir, table, database)
    if not path.is_dir():
        name = table.split(".")[-1]
        job = WRITTEN_BY.get(name)
        hint = f"run `custembed {job}` first" if job and job != "any job" else "run the job that writes it first"
        raise FileNotFoundError(f"table {database}.{name} not found at {path}: {hint}")
    keys = _partition_keys(path)
    # An explicit all-text schema instead of partitioning="hive" with type inference: inference would turn a
    # value such as "007" into the integer 7; every partition column of the project is text.
    partitioning = ds.partitioning(pa.schema([pa.field(key, pa.string()) for key in keys]), flavor="hive")
    return ds.dataset(path, format="parquet", partitioning=partitioning)


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
        FileNotFoundError: the table does not exist; the message names the job that writes it.
        ValueError: a filter or a requested column is not a column of the table.
    """
    dataset = _dataset(lake_dir, table, database)
    available = dataset.schema.names
    unknown = [column for column in [*(filters or {}), *(columns or [])] if column not in available]
    if unknown:
        raise ValueError(f"table {table} has no column(s) {unknown}; its columns: {available}")
    expression = None
    for column, value in (filters or {}).items():
        field_type = dataset.schema.field(column).type
        scalar = pa.scalar(str(value)) if pa.types.is_string(field_type) else pa.scalar(str(value)).cast(field_type)
        condition = pc.field(column) == scalar
        expression = condition if expression is None else expression & condition
    arrow = dataset.to_table(columns=list(columns) if columns is not None else None, filter=expression)
    return arrow.to_pandas()


def _values(lake_dir: str | os.PathLike[str], table: str, column: str,
            filters: Mapping[str, str] | None = None) -> list[str]:
    """Distinct values of a column (partition columns are cheap: no data pages are read)."""
    frame = read_table(lake_dir, table, filters=filters, columns=[column])
    return sorted(str(value) for value in frame[column].dropna().unique())


def _require(value: str, available: Sequence[str], what: str, where: str) -> None:
    if value not in available:
        listed = ", ".join(available) if available else "none"
        raise ValueError(f"unknown {what} {value!r} in {where}; available: {listed}")


def latest_run_date(lake_dir: str | os.PathLike[str], table: str = "model_metrics") -> str:
    """The greatest run date (``dt``, ``YYYY-MM-DD``) with rows in ``table``.

    Raises:
        FileNotFoundError: the table does not exist.
        ValueError: the table has no ``dt`` column or no rows.
    """
    dates = _values(lake_dir, table, DT)
    if not dates:
        raise ValueError(f"table {table} has no rows: no run date to show")
    return dates[-1]


def _check_run_date(lake_dir: str | os.PathLike[str], table: str, run_date: str) -> None:
    _require(run_date, _values(lake_dir, table, DT), "run date", table)


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
        ValueError: unknown run date or classifier (the available ones are
            listed), or several rows for one product and source.
    """
    metrics = _metrics(lake_dir, run_date)
    _require(classifier, sorted(metrics["classifier"].unique()), "classifier", f"model_metrics of {run_date}")
    chosen = metrics[metrics["classifier"] == classifier]
    duplicated = chosen.duplicated(["product", "source"])
    if duplicated.any():
        pairs = chosen.loc[duplicated, ["product", "source"]].drop_duplicates().values.tolist()
        raise ValueError(f"model_metrics of {run_date} has several {classifier} rows for (product, source) {pairs}")
    table = chosen.pivot(index="product", columns="source", values=list(COMPARISON_METRICS))
    table = table.astype(float).sort_index(axis=0)
    table = table.reindex(columns=pd.MultiIndex.from_product(
        [list(COMPARISON_METRICS), sorted(chosen["source"].unique())]))
    table.columns.names = ["metric", "source"]
    return table


def best_sources(comparison: pd.DataFrame) -> pd.DataFrame:
    """Which source wins each metric per product, from :func:`model_comparison`'s table.

    Returns:
        Rows as ``comparison`` (products), one column per metric holding the
        source with the highest value; ``None`` where no source has a value.
        A tie goes to the source that sorts first.
    """
    winners: dict[str, list[str | None]] = {}
    for metric in comparison.columns.get_level_values(0).unique():
        values = comparison[metric]
        winners[str(metric)] = [
            None if row.isna().all() else str(row.idxmax()) for _, row in values.iterrows()
        ]
    return pd.DataFrame(winners, index=comparison.index)


def classifier_comparison(lake_dir: str | os.PathLike[str], run_date: str) -> pd.DataFrame:
    """Metric rows of the (product, source) pairs that were scored with several classifiers.

    ``score.comparison`` runs extra classifiers on one product and one source
    (the paper's classifier table).

    Returns:
        The ``model_metrics`` columns of those rows, sorted by product, source
        and descending AUC; empty (same columns) when no pair has several
        classifiers.

    Raises:
        ValueError: unknown run date.
    """
    metrics = _metrics(lake_dir, run_date)
    counts = metrics.groupby(["product", "source"])["classifier"].transform("nunique")
    rows = metrics[counts > 1]
    return rows.sort_values(["product", "source", "auc"], ascending=[True, True, False],
                            na_position="last").reset_index(drop=True)


def lift_table(
    lake_dir: str | os.PathLike[str], run_date: str, product: str, classifier: str = DEFAULT_CLASSIFIER
) -> pd.DataFrame:
    """Decile lift of one product and classifier, every source (``decile_lift``, test window).

    Returns:
        Columns :data:`LIFT_COLUMNS`, one row per source and decile (1 = the 10 %
        highest scores), sorted by source and decile.

    Raises:
        ValueError: unknown run date, product or classifier (the available ones are listed).
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
) -> tuple[np.ndarray, np.ndarray]:
    """Train-view embeddings of a bounded customer sample, with test-window buyers of ``product`` flagged.

    The customers are those with both a ``train``-view embedding of ``source``
    and a ``test``-window label of ``product`` on ``run_date``. Buyers are few,
    so all of them are kept and a seeded sample of non-buyers fills the rest up
    to ``n``; only when buyers would take more than half of ``n`` are both
    groups sampled (``n // 2`` buyers at least, or all non-buyers if fewer).
    Only the chosen customers' vectors are materialised.

    Returns:
        ``(embeddings [m, H] float32, is_buyer [m] bool)``, ``m <= n``, rows in
        customer-id order; the same inputs and seed give the same sample.

    Raises:
        ValueError: ``n < 1``, unknown run date, source or product (the available
            ones are listed), or vectors of different lengths.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    _check_run_date(lake_dir, "embeddings", run_date)
    train_view = {DT: run_date, "view": VIEW_TRAIN}
    _require(source, _values(lake_dir, "embeddings", "source", train_view), "source",
             f"embeddings of {run_date} (train view)")
    _check_run_date(lake_dir, "labels", run_date)
    products = _values(lake_dir, "labels", "product", {DT: run_date, "label_window": TEST_WINDOW})
    _require(product, products, "product", f"labels of {run_date} (test window)")

    partition = {**train_view, "source": source}
    customers = read_table(lake_dir, "embeddings", filters=partition, columns=[CUSTOMER_ID])
    labels = read_table(lake_dir, "labels", filters={DT: run_date, "product": product, "label_window": TEST_WINDOW},
                        columns=[CUSTOMER_ID, "label"])
    joined = (customers.drop_duplicates(CUSTOMER_ID)
              .merge(labels.drop_duplicates(CUSTOMER_ID), on=CUSTOMER_ID, how="inner")
              .sort_values(CUSTOMER_ID, kind="stable").reset_index(drop=True))
    buyers = joined.loc[joined["label"] == 1, CUSTOMER_ID].to_numpy()
    others = joined.loc[joined["label"] != 1, CUSTOMER_ID].to_numpy()
    keep_buyers = min(len(buyers), max(n // 2, n - len(others)))
    keep_others = min(len(others), n - keep_buyers)
    rng = np.random.default_rng(seed)
    chosen_buyers = buyers if keep_buyers == len(buyers) else rng.choice(buyers, keep_buyers, replace=False)
    chosen_others = others if keep_others == len(others) else rng.choice(others, keep_others, replace=False)
    buyer_ids = {str(customer) for customer in chosen_buyers}
    chosen = sorted(buyer_ids | {str(customer) for customer in chosen_others})

    dataset = _dataset(lake_dir, "embeddings", DEFAULT_DATABASE)
    expression = pc.field(CUSTOMER_ID).isin(pa.array(chosen, pa.string()))
    for column, value in partition.items():
        expression = expression & (pc.field(column) == value)
    vectors = dataset.to_table(columns=[CUSTOMER_ID, "vector"], filter=expression)
    order = pc.sort_indices(vectors, sort_keys=[(CUSTOMER_ID, "ascending")])
    vectors = vectors.take(order)
    ids = vectors.column(CUSTOMER_ID).to_pylist()
    if len(set(ids)) != len(ids):
        raise ValueError(f"embeddings of {run_date}/{source} hold several vectors for one customer")
    lists = vectors.column("vector").combine_chunks()
    lengths = pc.list_value_length(lists)
    if len(lists) and (lists.null_count or pc.min(lengths).as_py() != pc.max(lengths).as_py()):
        raise ValueError(f"embeddings of {run_date}/{source} have missing vectors or vectors of different lengths")
    dims = pc.min(lengths).as_py() if len(lists) else 0
    embeddings = lists.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(ids), dims)
    is_buyer = np.array([customer in buyer_ids for customer in ids], dtype=bool)
    return embeddings, is_buyer


# ---------------------------------------------------------------- notebooks


def execute_notebook(
    path: str | os.PathLike[str], env: Mapping[str, str], *, timeout: int = 300,
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
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(notebook_path.parent.resolve())}})
    try:
        # jupyter_client replaces the kernel's environment with this mapping, so pass the current one along
        client.execute(env={**os.environ, **{key: str(value) for key, value in env.items()}})
    except CellExecutionError as e:
        raise RuntimeError(f"notebook {notebook_path.name} failed:\n{e}") from e
    finally:
        if output is not None:
            Path(output).parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(notebook, output)

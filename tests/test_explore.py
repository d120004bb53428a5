"""custembed.explore on a tiny fake lake written with pyarrow, and the notebooks executed against it (no Spark)."""

from __future__ import annotations

import ast
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytest.importorskip("nbclient")
pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

import nbformat
from pyspark.sql import types as T  # schema objects only; no session is started

from custembed import explore, lakefs, schemas
from custembed.errors import TableNotFoundError

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOK_FILES = ("01_embeddings_and_lift.ipynb", "02_model_comparison.ipynb")

RUN_DATE = "2023-07-31"
OLD_RUN_DATE = "2023-06-30"
SOURCES = ("bert4rec", "counts")
DIMS = {"bert4rec": 4, "counts": 6}
PRODUCTS = ("water_purifier", "styler")
CUSTOMERS = [f"C{index:04d}" for index in range(40)]
LABELLED = range(0, 38)  # customers with labels
EMBEDDED = range(2, 40)  # customers with embeddings; both: 2..37
TEST_BUYERS = {"water_purifier": set(range(0, 10)), "styler": {10, 11, 12}}
TRAIN_BUYERS = {"water_purifier": set(range(30, 38)), "styler": set(range(20, 30))}  # a different window
BOTH = sorted(set(LABELLED) & set(EMBEDDED))
COMPARED = ("logistic_regression", "xgboost")  # extra classifiers on water_purifier / bert4rec
BUYERS_PER_DECILE = (3, 2, 1, 1, 0, 1, 0, 0, 1, 1)


# ---------------------------------------------------------------- the fake lake


def _arrow_type(spark_type: T.DataType) -> pa.DataType:
    if isinstance(spark_type, T.ArrayType):
        return pa.list_(_arrow_type(spark_type.elementType))
    return {
        T.StringType: pa.string(),
        T.IntegerType: pa.int32(),
        T.LongType: pa.int64(),
        T.DoubleType: pa.float64(),
        T.FloatType: pa.float32(),
        T.BooleanType: pa.bool_(),
    }[type(spark_type)]


def _write(lake: Path, table: str, rows: list[dict[str, object]], *, parts: int = 1) -> None:
    """Write rows the way Spark lays out a partitioned table: data columns in files, partitions as directories."""
    schema = schemas.TABLE_SCHEMAS[table]
    keys = schemas.PARTITIONS[table]
    data_fields = [field for field in schema.fields if field.name not in keys]
    arrow_schema = pa.schema([pa.field(field.name, _arrow_type(field.dataType)) for field in data_fields])
    root = Path(lakefs.local_path(explore.table_path(lake, table)) or "")
    root.mkdir(parents=True, exist_ok=True)
    (root / "_SUCCESS").write_bytes(b"")
    groups: dict[tuple[str, ...], list[dict[str, object]]] = {}
    for row in rows:
        groups.setdefault(tuple(str(row[key]) for key in keys), []).append(row)
    for values, group in groups.items():
        directory = root.joinpath(*(f"{key}={value}" for key, value in zip(keys, values, strict=True)))
        directory.mkdir(parents=True, exist_ok=True)
        for part in range(parts):
            chunk = group[part::parts]
            # columns a row leaves out (e.g. model_metrics' intervals) are null, as in older runs' files
            columns = {field.name: [row.get(field.name) for row in chunk] for field in data_fields}
            name = f"part-{part:05d}-fake.c000.snappy.parquet"
            pq.write_table(pa.table(columns, schema=arrow_schema), directory / name)
            (directory / f".{name}.crc").write_bytes(b"not parquet")  # Spark's checksum files


def _metric_values(product: str, source: str, run_date: str) -> dict[str, float]:
    p, s = PRODUCTS.index(product), SOURCES.index(source)
    shift = 0.0 if run_date == RUN_DATE else 0.2
    auc = math.nan if (product, source) == ("styler", "bert4rec") else 0.60 + 0.10 * s + 0.05 * p - shift
    return {"auc": auc, "f1": 0.10 + 0.01 * s + 0.02 * p, "top10_lift": 1.5 + s - 0.5 * p + shift}


def _metric_row(product: str, source: str, classifier: str, run_date: str, values: dict[str, float]):
    return {
        "product": product,
        "classifier": classifier,
        "rows": 36,
        "positives": 8,
        "precision": 0.2,
        "recall": 0.5,
        "accuracy": 0.7,
        "train_rows": 16,
        "train_seconds": 0.01,
        "message": "ok",
        "dt": run_date,
        "source": source,
        **values,
    }


def _lift_rows(product: str, source: str, classifier: str) -> list[dict[str, object]]:
    rows, total_buyers = [], sum(BUYERS_PER_DECILE)
    offset = PRODUCTS.index(product) + SOURCES.index(source) + (1 if classifier != "random_forest" else 0)
    buyers = BUYERS_PER_DECILE[offset:] + BUYERS_PER_DECILE[:offset]
    for decile in range(1, 11):
        rate = buyers[decile - 1] / 4
        cumulative = sum(buyers[:decile]) / (4 * decile)
        rows.append(
            {
                "product": product,
                "classifier": classifier,
                "decile": decile,
                "customers": 4,
                "buyers": buyers[decile - 1],
                "buy_rate": rate,
                "lift": rate / (total_buyers / 40),
                "cumulative_lift": cumulative / (total_buyers / 40),
                "dt": RUN_DATE,
                "source": source,
            }
        )
    return rows


def _vector(index: int, source: str, view: str) -> list[float]:
    # first value: the customer's index (to check the join); second: the view (+1 train, -1 current)
    sign = 1.0 if view == "train" else -1.0
    return [float(index), sign] + [float(np.sin(index * (k + 1))) for k in range(DIMS[source] - 2)]


@pytest.fixture(scope="module")
def fake_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    lake = tmp_path_factory.mktemp("fake_lake")
    metrics = [
        _metric_row(product, source, "random_forest", day, _metric_values(product, source, day))
        for day in (RUN_DATE, OLD_RUN_DATE)
        for product in PRODUCTS
        for source in SOURCES
    ]
    metrics += [
        _metric_row(
            "water_purifier",
            "bert4rec",
            classifier,
            RUN_DATE,
            {"auc": 0.55 + 0.2 * position, "f1": 0.05, "top10_lift": 1.1},
        )
        for position, classifier in enumerate(COMPARED)
    ]
    _write(lake, "model_metrics", metrics)
    lift = [row for product in PRODUCTS for source in SOURCES for row in _lift_rows(product, source, "random_forest")]
    lift += _lift_rows("water_purifier", "bert4rec", "logistic_regression")
    _write(lake, "decile_lift", lift)
    embeddings = [
        {
            "customer_id": CUSTOMERS[index],
            "model_name": f"custembed-{source}",
            "model_version": "1",
            "vector": _vector(index, source, view),
            "dt": RUN_DATE,
            "view": view,
            "source": source,
        }
        for source in SOURCES
        for view in ("train", "current")
        for index in EMBEDDED
    ]
    _write(lake, "embeddings", embeddings, parts=2)
    labels = [
        {
            "customer_id": CUSTOMERS[index],
            "product": product,
            "label_window": window,
            "window_start": "2023-02-01" if window == "train" else "2023-05-01",
            "window_end": "2023-04-30" if window == "train" else "2023-07-31",
            "label": int(index in (TEST_BUYERS if window == "test" else TRAIN_BUYERS)[product]),
            "dt": RUN_DATE,
        }
        for product in PRODUCTS
        for window in ("train", "test")
        for index in LABELLED
    ]
    _write(lake, "labels", labels, parts=3)
    return lake


# ---------------------------------------------------------------- tables


def test_table_path_follows_the_warehouse_layout(tmp_path: Path) -> None:
    lake = f"file://{tmp_path}"
    assert explore.table_path(tmp_path, "embeddings") == f"{lake}/warehouse/custembed.db/embeddings"
    assert explore.table_path(tmp_path, "runs", database="other") == f"{lake}/warehouse/other.db/runs"
    assert explore.table_path(tmp_path, "other_db.seq") == f"{lake}/warehouse/other_db.db/seq"
    assert explore.table_path(tmp_path, "raw_events", database="default") == f"{lake}/warehouse/raw_events"
    assert explore.table_path("s3a://bucket/lake/", "runs") == "s3a://bucket/lake/warehouse/custembed.db/runs"


def test_read_table_returns_text_partitions_and_prunes(fake_lake: Path) -> None:
    rows = explore.read_table(fake_lake, "embeddings", filters={"dt": RUN_DATE, "view": "train", "source": "counts"})
    assert list(rows.columns) == [field.name for field in schemas.EMBEDDINGS.fields]
    assert len(rows) == len(EMBEDDED)
    assert set(rows["dt"]) == {RUN_DATE} and set(rows["view"]) == {"train"} and set(rows["source"]) == {"counts"}
    assert all(isinstance(value, str) for value in rows["dt"])
    assert sorted(rows["customer_id"]) == [CUSTOMERS[index] for index in EMBEDDED]
    assert {len(vector) for vector in rows["vector"]} == {DIMS["counts"]}

    metrics = explore.read_table(fake_lake, "model_metrics", columns=["product", "dt"])
    assert list(metrics.columns) == ["product", "dt"]
    assert sorted(metrics["dt"].unique()) == [OLD_RUN_DATE, RUN_DATE]
    # a filter on a data column, the value cast to the column's type
    top = explore.read_table(fake_lake, "decile_lift", filters={"decile": "1", "classifier": "random_forest"})
    assert len(top) == len(PRODUCTS) * len(SOURCES) and set(top["decile"]) == {1}


def test_read_table_names_the_missing_table_and_its_job(fake_lake: Path) -> None:
    with pytest.raises(TableNotFoundError, match=r"propensity_scores.*custembed score"):
        explore.read_table(fake_lake, "propensity_scores")
    with pytest.raises(ValueError, match=r"no column\(s\) \['window'\].*label_window"):
        explore.read_table(fake_lake, "labels", filters={"window": "test"})


def test_latest_run_date(fake_lake: Path) -> None:
    assert explore.latest_run_date(fake_lake) == RUN_DATE
    assert explore.latest_run_date(fake_lake, "labels") == RUN_DATE
    with pytest.raises(TableNotFoundError, match="runs.*run the job that writes it"):
        explore.latest_run_date(fake_lake, "runs")


# ---------------------------------------------------------------- metrics and lift


@pytest.mark.parametrize("run_date", [RUN_DATE, OLD_RUN_DATE])
def test_model_comparison_pivots_the_default_classifier(fake_lake: Path, run_date: str) -> None:
    comparison = explore.model_comparison(fake_lake, run_date)
    assert list(comparison.index) == sorted(PRODUCTS)
    assert list(comparison.columns) == [
        (metric, source) for metric in ("auc", "f1", "top10_lift") for source in sorted(SOURCES)
    ]
    for product in PRODUCTS:
        for source in SOURCES:
            for metric, expected in _metric_values(product, source, run_date).items():
                actual = comparison.loc[product, (metric, source)]
                assert (math.isnan(actual) and math.isnan(expected)) or actual == pytest.approx(expected)


def test_model_comparison_rejects_unknown_values(fake_lake: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown classifier 'mlp'.*logistic_regression, random_forest, xgboost"):
        explore.model_comparison(fake_lake, RUN_DATE, classifier="mlp")
    with pytest.raises(ValueError, match=rf"unknown run date '2020-01-01'.*{OLD_RUN_DATE}, {RUN_DATE}"):
        explore.model_comparison(fake_lake, "2020-01-01")


def test_best_sources(fake_lake: Path) -> None:
    winners = explore.best_sources(explore.model_comparison(fake_lake, RUN_DATE))
    # counts is 0.10 AUC above bert4rec; styler's bert4rec AUC is NaN, so counts wins there as well
    assert winners.loc["water_purifier"].tolist() == ["counts", "counts", "counts"]
    assert winners.loc["styler"].tolist() == ["counts", "counts", "counts"]
    hand_made = pd.DataFrame(
        [[0.7, 0.6, math.nan, math.nan], [0.5, 0.5, 2.0, 3.0]],
        index=["a", "b"],
        columns=pd.MultiIndex.from_product([["auc", "top10_lift"], ["x", "y"]], names=["metric", "source"]),
    )
    assert explore.best_sources(hand_made).to_dict("index") == {
        "a": {"auc": "x", "top10_lift": None},
        "b": {"auc": "x", "top10_lift": "y"},  # a tie goes to "x"
    }


def test_classifier_comparison_keeps_pairs_with_several_classifiers(fake_lake: Path) -> None:
    rows = explore.classifier_comparison(fake_lake, RUN_DATE)
    assert set(zip(rows["product"], rows["source"], strict=True)) == {("water_purifier", "bert4rec")}
    assert rows["classifier"].tolist() == ["xgboost", "random_forest", "logistic_regression"]  # by AUC, descending
    assert rows["auc"].tolist() == pytest.approx([0.75, 0.60, 0.55])
    assert explore.classifier_comparison(fake_lake, OLD_RUN_DATE).empty


def test_lift_table(fake_lake: Path) -> None:
    table = explore.lift_table(fake_lake, RUN_DATE, "styler")
    assert list(table.columns) == list(explore.LIFT_COLUMNS)
    assert table["source"].tolist() == [source for source in sorted(SOURCES) for _ in range(10)]
    for source in SOURCES:
        expected = pd.DataFrame(_lift_rows("styler", source, "random_forest"))
        actual = table[table["source"] == source]
        assert actual["decile"].tolist() == list(range(1, 11))
        assert actual["buyers"].tolist() == expected["buyers"].tolist()
        np.testing.assert_allclose(actual["cumulative_lift"], expected["cumulative_lift"])
    other = explore.lift_table(fake_lake, RUN_DATE, "water_purifier", classifier="logistic_regression")
    assert set(other["source"]) == {"bert4rec"}
    assert (
        other["buyers"].tolist()
        == pd.DataFrame(_lift_rows("water_purifier", "bert4rec", "logistic_regression"))["buyers"].tolist()
    )
    with pytest.raises(ValueError, match="unknown product 'gram'.*styler, water_purifier"):
        explore.lift_table(fake_lake, RUN_DATE, "gram")
    with pytest.raises(ValueError, match="unknown product 'styler'.*water_purifier"):
        explore.lift_table(fake_lake, RUN_DATE, "styler", classifier="logistic_regression")


# ---------------------------------------------------------------- embeddings


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("product", PRODUCTS)
def test_embedding_sample_takes_everyone_when_small(fake_lake: Path, source: str, product: str) -> None:
    embeddings, is_buyer = explore.embedding_sample(fake_lake, RUN_DATE, source, product)
    assert embeddings.dtype == np.float32 and embeddings.shape == (len(BOTH), DIMS[source])
    assert is_buyer.dtype == bool
    indexes = embeddings[:, 0].astype(int)
    assert indexes.tolist() == BOTH  # joined on customer id, in customer order
    assert (embeddings[:, 1] == 1.0).all()  # the train view, not the current one
    np.testing.assert_array_equal(is_buyer, [index in TEST_BUYERS[product] for index in indexes])


def test_embedding_sample_keeps_buyers_and_samples_the_rest(fake_lake: Path) -> None:
    buyers = len(TEST_BUYERS["water_purifier"] & set(BOTH))  # 8
    embeddings, is_buyer = explore.embedding_sample(fake_lake, RUN_DATE, "bert4rec", "water_purifier", n=20)
    assert len(embeddings) == 20 and int(is_buyer.sum()) == buyers
    assert set(embeddings[is_buyer, 0].astype(int)) == TEST_BUYERS["water_purifier"] & set(BOTH)
    again, _ = explore.embedding_sample(fake_lake, RUN_DATE, "bert4rec", "water_purifier", n=20)
    np.testing.assert_array_equal(embeddings, again)
    others = [
        explore.embedding_sample(fake_lake, RUN_DATE, "bert4rec", "water_purifier", n=20, seed=seed)[0]
        for seed in range(1, 4)
    ]
    assert any(not np.array_equal(embeddings, other) for other in others)
    # buyers would take more than half: both groups are sampled
    small, small_buyer = explore.embedding_sample(fake_lake, RUN_DATE, "counts", "water_purifier", n=10)
    assert len(small) == 10 and int(small_buyer.sum()) == 5


def test_embedding_sample_rejects_unknown_values(fake_lake: Path) -> None:
    with pytest.raises(ValueError, match="unknown source 'electra'.*bert4rec, counts"):
        explore.embedding_sample(fake_lake, RUN_DATE, "electra", "styler")
    with pytest.raises(ValueError, match="unknown product 'gram'.*styler, water_purifier"):
        explore.embedding_sample(fake_lake, RUN_DATE, "counts", "gram")
    with pytest.raises(ValueError, match=f"unknown run date '{OLD_RUN_DATE}'.*{RUN_DATE}"):
        explore.embedding_sample(fake_lake, OLD_RUN_DATE, "counts", "styler")
    with pytest.raises(ValueError, match="n must be at least 1"):
        explore.embedding_sample(fake_lake, RUN_DATE, "counts", "styler", n=0)


# ---------------------------------------------------------------- notebooks


@pytest.fixture(scope="session")
def python3_kernel() -> None:
    from jupyter_client.kernelspec import KernelSpecManager

    if "python3" not in KernelSpecManager().find_kernel_specs():
        subprocess.run(
            [sys.executable, "-m", "ipykernel", "install", "--sys-prefix", "--name", "python3"],
            check=True,
            capture_output=True,
        )


@pytest.mark.parametrize("name", NOTEBOOK_FILES)
def test_notebook_is_clean_and_defines_nothing(name: str) -> None:
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)
    for cell in code:
        definitions = [
            node
            for node in ast.walk(ast.parse(cell.source))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda)
        ]
        assert not definitions, f"{name} defines something in:\n{cell.source}"
    assert "from custembed import explore" in "\n".join(cell.source for cell in code)


@pytest.mark.parametrize(("name", "figures"), [(NOTEBOOK_FILES[0], 2), (NOTEBOOK_FILES[1], 1)])
def test_notebook_runs_on_the_fake_lake(
    fake_lake: Path, python3_kernel: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, figures: int
) -> None:
    monkeypatch.delenv("CUSTEMBED_RUN_DATE", raising=False)
    executed = tmp_path / name
    explore.execute_notebook(
        NOTEBOOKS / name, {"CUSTEMBED_LAKE": str(fake_lake), "CUSTEMBED_PRODUCT": "styler"}, output=executed
    )
    outputs = [output for cell in nbformat.read(executed, as_version=4).cells for output in cell.get("outputs", [])]
    assert not [output for output in outputs if output.output_type == "error"]
    assert sum("image/png" in output.get("data", {}) for output in outputs) == figures
    text = "\n".join(output.get("text", "") for output in outputs)
    assert f"run date {RUN_DATE}" in text
    assert not nbformat.read(NOTEBOOKS / name, as_version=4).cells[1].outputs  # the source notebook is untouched


def test_execute_notebook_raises_with_the_failing_cell(python3_kernel: None, tmp_path: Path) -> None:
    notebook = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("import os\nvalue = os.environ['CUSTEMBED_PROBE']"),
            nbformat.v4.new_code_cell("raise ValueError(f'bad product {value}')"),
        ]
    )
    path = tmp_path / "failing.ipynb"
    nbformat.write(notebook, path)
    with pytest.raises(RuntimeError, match=r"failing.ipynb failed(.|\n)*bad product probe-42"):
        explore.execute_notebook(path, {"CUSTEMBED_PROBE": "probe-42"})
    with pytest.raises(FileNotFoundError, match="missing.ipynb"):
        explore.execute_notebook(tmp_path / "missing.ipynb", {})

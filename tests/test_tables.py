"""The table registry: one declaration per table, from which schemas, locations and column lists follow."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from pyspark.sql.types import _parse_datatype_string  # Spark's own parser, as the independent reference

from custembed import explore, schemas, tables

PACKAGE = Path(tables.__file__).resolve().parent


@pytest.mark.parametrize("name", list(tables.TABLES))
def test_every_schema_is_built_from_the_registry(name: str, spark) -> None:  # type: ignore[no-untyped-def]
    spec = tables.table(name)
    struct = schemas.struct_of(name)
    assert tuple(struct.fieldNames()) == spec.column_names
    assert struct == _parse_datatype_string(spec.ddl())  # every type string is one Spark reads the same way
    if spec.kind in (tables.PARTITIONS, tables.APPEND):
        assert schemas.TABLE_SCHEMAS[name] == struct
        assert schemas.PARTITIONS[name] == spec.partitions and spec.partitions[0] == tables.DT


def test_registry_module_imports_no_pyspark() -> None:
    tree = ast.parse((PACKAGE / "tables.py").read_text())
    imported = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    imported += [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert not [name for name in imported if name.startswith("pyspark")]


def test_location_rule(tmp_path: Path) -> None:
    assert tables.physical_name("sequences", "db") == "`db`.`sequences`"
    assert tables.physical_name("sequences", "db", {"sequences": "other.seq"}) == "other.seq"
    assert tables.physical_name("sequences", "db", {"sequences": "seq2"}) == "`db`.`seq2`"
    lake = f"file://{tmp_path}"
    assert tables.warehouse_path(tmp_path, "labels", "db") == f"{lake}/warehouse/db.db/labels"
    assert tables.warehouse_path(tmp_path, "labels", "db", {"labels": "x.l"}) == f"{lake}/warehouse/x.db/l"
    assert explore.table_path(tmp_path, "labels", "db") == tables.warehouse_path(tmp_path, "labels", "db")
    with pytest.raises(ValueError, match="must not be empty"):
        tables.warehouse_path(tmp_path, "db.", "db")


def test_view_ddl_names_the_registered_columns() -> None:
    sql = tables.view_sql("top_decile_customers", "db")
    assert sql.startswith("CREATE OR REPLACE VIEW `db`.`top_decile_customers` AS")
    assert "SELECT customer_id, product, source, classifier, score, dt" in sql
    assert "FROM `db`.`propensity_scores`" in sql and "max(dt) FROM `db`.`propensity_scores`" in sql
    with pytest.raises(ValueError, match="not a view"):
        tables.view_sql("labels", "db")


def test_display_columns_and_hints_come_from_the_registry() -> None:
    assert explore.LIFT_COLUMNS == ("source", "decile", "customers", "buyers", "buy_rate", "lift", "cumulative_lift")
    assert explore.METRIC_COLUMNS[:3] == ("product", "source", "classifier") and "dt" not in explore.METRIC_COLUMNS
    assert tables.missing_hint("model_metrics") == "run `custembed score` first"
    assert tables.missing_hint("runs") == "run the job that writes it first"
    with pytest.raises(KeyError, match="unknown table 'nope'"):
        tables.table("nope")
    with pytest.raises(ValueError, match="must be its last columns"):
        tables.Table(
            "t", (tables.Column("dt", "string"), tables.Column("a", "int")), ("dt",), "x", tables.PARTITIONS, "row"
        )


def test_only_the_registry_builds_table_locations() -> None:
    """Modules that read or write tables take names and paths from the registry, never their own."""
    readers = [
        "io.py",
        "explore.py",
        "schemas.py",
        "comparison.py",
        "projections.py",
        "jobs/score.py",
        "jobs/report.py",
        "jobs/ingest.py",
        "jobs/generate.py",
        "jobs/recommend.py",
        "jobs/evaluate_nextitem.py",
        "jobs/segment.py",
        "jobs/journeys_simulate.py",
        "jobs/journeys_prepare.py",
        "jobs/journeys_generate.py",
        "jobs/journeys_evaluate.py",
        "jobs/journeys_transfer.py",
        "training/data.py",
        *[str(path.relative_to(PACKAGE)) for path in (PACKAGE / "report").glob("*.py")],
    ]
    for module in readers:
        text = (PACKAGE / module).read_text()
        assert '"warehouse"' not in text and "'warehouse'" not in text and '.db"' not in text, module
        assert "spark.read." not in text and ".write.mode(" not in text or module == "io.py", module

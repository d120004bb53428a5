"""One session-scoped SparkSession for the whole suite (local[2], UTC, lake under pytest's temp dir)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def lake_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lake")


@pytest.fixture(scope="session")
def spark(lake_dir: Path) -> Iterator[object]:
    pytest.importorskip("pyspark")
    from custembed.config import ProjectConfig, SparkConfig
    from custembed.spark import build_session

    session = build_session(
        SparkConfig(
            master="local[2]",
            shuffle_partitions=4,
            ui=False,
            conf={"spark.default.parallelism": "4", "spark.sql.adaptive.enabled": "true"},
        ),
        ProjectConfig(database="custembed", lake_dir=str(lake_dir)),
    )
    yield session
    session.stop()


@pytest.fixture()
def database(request: pytest.FixtureRequest) -> str:
    """This test module's own catalogue database, so modules never see each other's tables.

    ``t_<module>`` unless the module names one in ``DATABASE`` (the pipeline test keeps
    ``custembed`` because the notebooks it runs read the default database).
    """
    module = request.module
    return str(getattr(module, "DATABASE", "t_" + module.__name__.rsplit(".", 1)[-1]))


@pytest.fixture()
def lake_sets(lake_dir: Path, database: str, spark: object) -> list[str]:
    """``--set`` arguments pointing a job's main() at the test lake and this module's database (made current)."""
    from custembed.spark import ensure_database

    ensure_database(spark, database)  # type: ignore[arg-type]
    spark.catalog.setCurrentDatabase(database)  # type: ignore[attr-defined]
    return ["--set", f"project.lake_dir={lake_dir}", "--set", f"project.database={database}"]

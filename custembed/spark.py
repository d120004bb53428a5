"""The one place a SparkSession is built.

Embedded default: local master, a warehouse directory and a Derby metastore
under ``lake_dir``. On a cluster (``spark.master: null``,
``spark.embedded_catalogue: false``) master and catalogue come from
spark-submit and the cluster's own configuration.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from custembed import lakefs, tables
from custembed.config import ProjectConfig, SparkConfig, conf_dir
from custembed.errors import ConfigError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)


def check_java() -> None:
    """Fail in one line when no Java runtime is reachable (Spark needs Java 17)."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and Path(java_home, "bin", "java").exists():
        return
    if shutil.which("java") is None:
        raise ConfigError("Java not found: install a Java 17 runtime (e.g. apt-get install openjdk-17-jre-headless)")


def build_session(spark_cfg: SparkConfig, project: ProjectConfig) -> SparkSession:
    """Build (or return the active) session with the project's catalogue."""
    from pyspark.sql import SparkSession

    check_java()
    # Executors run the same interpreter as the driver unless a cluster says otherwise.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(spark_cfg.app_name)
    # Under spark-submit the JVM (and its master) already exist: the submit command decides.
    submitted = "PYSPARK_GATEWAY_PORT" in os.environ
    if spark_cfg.master and not submitted:
        builder = builder.master(spark_cfg.master)
    settings: dict[str, str] = {
        "spark.sql.shuffle.partitions": str(spark_cfg.shuffle_partitions),
        "spark.sql.sources.partitionOverwriteMode": "dynamic",
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.enabled": str(spark_cfg.ui).lower(),
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        # The console stage bar only on a terminal: in a log (spark-submit, Airflow, CI) it is a flood of
        # carriage-return lines; jobs log their progress in lines of their own.
        "spark.ui.showConsoleProgress": str(sys.stderr.isatty()).lower(),
    }
    java_options = []
    log4j = conf_dir() / "log4j2.properties"
    if log4j.exists():
        java_options.append(f"-Dlog4j.configurationFile={log4j}")
    if spark_cfg.embedded_catalogue:
        # Derby keeps the metastore in a local directory: the embedded catalogue needs a lake on this disk
        local = lakefs.local_path(project.lake_dir)
        if local is None:
            raise ConfigError(
                f"spark.embedded_catalogue keeps a Derby metastore under project.lake_dir, which must then be "
                f"local, got {project.lake_dir}: set spark.embedded_catalogue: false and use the cluster's catalogue"
            )
        lake = Path(local)
        lake.mkdir(parents=True, exist_ok=True)
        settings.update(
            {
                # the qualified URI, so fs.defaultFS does not move the tables away from the lake
                "spark.sql.warehouse.dir": tables.warehouse_dir(lake),
                "spark.sql.catalogImplementation": "hive",
                # Without the spark.hadoop. prefix Spark ignores the metastore location.
                "spark.hadoop.javax.jdo.option.ConnectionURL": (
                    f"jdbc:derby:;databaseName={lake / 'metastore_db'};create=true"
                ),
            }
        )
        java_options.append(f"-Dderby.system.home={lake}")
    if java_options:
        settings["spark.driver.extraJavaOptions"] = " ".join(java_options)
    settings.update(spark_cfg.conf)
    for key, value in settings.items():
        builder = builder.config(key, value)
    if spark_cfg.embedded_catalogue:
        builder = builder.enableHiveSupport()
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    ensure_database(spark, project.database)
    return spark


def ensure_database(spark: SparkSession, database: str) -> None:
    if not spark.catalog.databaseExists(database):
        spark.sql(f"CREATE DATABASE IF NOT EXISTS `{database}`")

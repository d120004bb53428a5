"""A user mistake exits 2 in one line; a crash exits 1 with its stack trace in the log; nightly keeps the two apart."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from custembed.errors import ConfigError, InputError, QueryError, TableNotFoundError, UserError
from custembed.jobs.common import job_main


def test_error_types_say_what_happened() -> None:
    for kind in (ConfigError, InputError, TableNotFoundError, QueryError):
        assert issubclass(kind, UserError)
    assert not issubclass(RuntimeError, UserError)


def test_user_error_is_one_line_and_exit_two(capsys: pytest.CaptureFixture[str]) -> None:
    def fails(spark, cfg, args, run_date):  # type: ignore[no-untyped-def]
        raise InputError("events file not found: nowhere.csv")

    assert job_main("probe", [], None, fails, needs_spark=False) == 2
    err = capsys.readouterr().err
    assert err.strip() == "custembed probe: error: events file not found: nowhere.csv"
    assert "Traceback" not in err


def test_config_mistake_is_exit_two(capsys: pytest.CaptureFixture[str]) -> None:
    assert job_main("probe", ["--set", "sequences.max_lne=3"], None, lambda *a: None, needs_spark=False) == 2
    assert "max_lne" in capsys.readouterr().err


def test_crash_is_exit_one_with_stack_trace(capsys: pytest.CaptureFixture[str]) -> None:
    def crashes(spark, cfg, args, run_date):  # type: ignore[no-untyped-def]
        raise RuntimeError("division by zero in a transform")

    assert job_main("probe", [], None, crashes, needs_spark=False) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: division by zero in a transform" in err
    assert "crashed" in err


def _nightly_with(stage_fn, spark, lake_dir: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    from custembed.config import load_config
    from custembed.jobs import nightly

    cfg = load_config(sets=[f"project.lake_dir={lake_dir}", "project.database=test_errors"])
    spark.sql("create database if not exists test_errors")
    monkeypatch.setattr(nightly, "stages", lambda *a, **k: [("probe", stage_fn)])
    return cfg, nightly


def _last_probe_status(spark) -> str:  # type: ignore[no-untyped-def]
    rows = spark.sql(
        "select status from test_errors.runs where job = 'nightly:probe' order by finished_at desc limit 1"
    ).collect()
    return str(rows[0]["status"])


def test_nightly_stage_user_mistake_is_stage_failed(spark, lake_dir: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import datetime as dt

    def missing(_spark):  # type: ignore[no-untyped-def]
        raise TableNotFoundError("table sequences does not exist")

    cfg, nightly = _nightly_with(missing, spark, lake_dir, monkeypatch)
    with pytest.raises(nightly.StageFailed, match="stage probe failed: table sequences does not exist"):
        nightly.run(spark, cfg, run_date=dt.date(2023, 7, 31), sources=[], with_report=False)
    assert _last_probe_status(spark) == "failed"


def test_nightly_stage_crash_propagates_as_a_crash(spark, lake_dir: Path, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    import datetime as dt

    def crashes(_spark):  # type: ignore[no-untyped-def]
        raise ZeroDivisionError("a bug")

    cfg, nightly = _nightly_with(crashes, spark, lake_dir, monkeypatch)
    with caplog.at_level(logging.ERROR), pytest.raises(ZeroDivisionError):
        nightly.run(spark, cfg, run_date=dt.date(2023, 7, 31), sources=[], with_report=False)
    assert _last_probe_status(spark) == "failed"
    assert "crashed" in caplog.text


@pytest.mark.parametrize(
    "query",
    [
        "select * from runs",
        "  SELECT 1 -- drop table runs",
        "with x as (select 1 as a) select * from x",
        "show tables",
        "describe runs",
        "explain select 1",
        "select 'drop table runs' as text",
    ],
)
def test_sql_read_only_statements_pass(query: str) -> None:
    from custembed.jobs.sql import check_read_only

    check_read_only(query)


@pytest.mark.parametrize(
    "query",
    [
        "drop table rejects",
        "DROP TABLE IF EXISTS rejects",
        "insert overwrite table runs select * from runs",
        "with x as (select 1) insert into runs select * from x",
        "/* look */ truncate table labels",
        "alter table runs rename to old_runs",
        "create table t as select 1",
        "",
    ],
)
def test_sql_refuses_writes_without_write(query: str) -> None:
    from custembed.jobs.sql import check_read_only

    with pytest.raises(UserError):
        check_read_only(query)


def test_sql_drop_is_refused_with_exit_two_and_table_kept(spark, lake_dir: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from custembed.jobs import sql

    spark.sql("create database if not exists test_errors")
    spark.sql("create table if not exists test_errors.keep_me (a int) using parquet")
    sets = ["--set", f"project.lake_dir={lake_dir}", "--set", "project.database=test_errors"]
    assert sql.main([*sets, "drop table keep_me"]) == 2
    assert "refused: DROP" in capsys.readouterr().err
    assert spark.catalog.tableExists("test_errors.keep_me")
    assert sql.main([*sets, "drop table keep_me", "--write"]) == 0
    assert not spark.catalog.tableExists("test_errors.keep_me")


def test_demo_on_a_missing_input_file_names_it_and_generates_nothing(spark, lake_dir: Path) -> None:  # type: ignore[no-untyped-def]
    import datetime as dt

    from custembed.config import load_config
    from custembed.jobs import demo

    missing = lake_dir / "online_retail.csv.gz"
    cfg = load_config(
        "retail.yaml",
        sets=[f"project.lake_dir={lake_dir}", "project.database=test_errors", f"demo.input={missing}"],
    )
    spark.sql("create database if not exists test_errors")
    with pytest.raises(InputError, match="online_retail.csv.gz"):
        demo.run(spark, cfg, run_date=dt.date(2011, 12, 9), encoders=[])
    assert not spark.catalog.tableExists("test_errors.events")  # the ingest path never falls back to generate

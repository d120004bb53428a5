"""``custembed ingest``: UCI Online Retail (real data) through step 1, user-item and Taobao lines, rejects."""

from __future__ import annotations

from pathlib import Path

import pytest

from custembed.config import conf_dir

DATA = conf_dir().parent.parent / "shared" / "data" / "online_retail.csv.gz"


@pytest.mark.slow
@pytest.mark.skipif(not DATA.exists(), reason="shared/data/online_retail.csv.gz not beside the checkout")
def test_online_retail_runs_through_step_one(spark, lake_sets, database) -> None:  # type: ignore[no-untyped-def]
    from custembed.jobs import ingest, sequences

    assert ingest.main([*lake_sets, "--format", "online-retail", "--input", str(DATA)]) == 0
    assert sequences.main([*lake_sets, "--conf", "retail.yaml"]) == 0
    spark.catalog.setCurrentDatabase(database)
    run = spark.table("runs").where("job = 'sequences' and dt = '2011-12-09'").orderBy("finished_at").collect()[-1]
    assert run["rows_read"] == 541_909
    assert run["rows_read"] == run["rows_accepted"] + run["rows_rejected"]
    # 135,080 lines have no customer id; duplicates and non-goods codes are the other reasons
    assert run["rejected_by_reason"]["missing_customer_id"] == 135_080
    assert run["rejected_by_reason"]["duplicate"] > 0
    views = {
        r["view"]: r["n"]
        for r in spark.sql("select view, count(*) n from sequences where dt = '2011-12-09' group by view").collect()
    }
    # 4,372 customers have an id; 9 of them have only non-goods lines (rejected as unknown items)
    assert views == {"current": 4_363, "train": 3_182}
    labels = spark.sql("select label_window, sum(label) pos from labels where dt = '2011-12-09' group by 1").collect()
    assert all(r["pos"] > 0 for r in labels) and len(labels) == 2


def test_family_rules_first_match_wins(spark) -> None:  # type: ignore[no-untyped-def]
    from custembed.jobs.ingest import family_rules, to_events

    services, rules = family_rules()
    lines = spark.createDataFrame(
        [
            (
                "536365",
                "85123A",
                "WHITE HANGING HEART T-LIGHT HOLDER",
                "6",
                "2010-12-01 08:26:00",
                "2.55",
                "17850.0",
                "UK",
            ),
            ("C536379", "22556", "PLASTERS IN TIN CIRCUS PARADE", "-1", "2010-12-01 09:41:00", "1.65", "14527.0", "UK"),
            ("536370", "POST", "POSTAGE", "3", "2010-12-01 08:45:00", "18.0", "12583.0", "France"),
            ("536414", "M", "Manual", "1", "2010-12-01 11:52:00", "0.5", None, "UK"),
        ],
        "InvoiceNo string, StockCode string, Description string, Quantity string, InvoiceDate string, "
        "UnitPrice string, CustomerID string, Country string",
    )
    events = to_events(lines, services=services, rules=rules)
    got = [(r["customer_id"], r["event_type"], r["item"]) for r in events.collect()]
    assert got == [
        ("17850", "PURCHASE", "candles_lighting"),
        ("14527", "RETURN", "storage"),
        ("12583", "SERVICE", "postage"),
        (None, "PURCHASE", "M"),
    ]


def test_family_rules_are_read_strictly(tmp_path: Path) -> None:
    from custembed.config import ConfigError
    from custembed.jobs.ingest import family_rules

    services, rules = family_rules()
    assert services["POST"] == "postage" and rules[0][0] == "christmas"
    typo = tmp_path / "families.yaml"
    typo.write_text("services: {POST: postage}\nrules:\n  - {family: bags, patern: BAG}\n")
    with pytest.raises(ConfigError, match=r"families.yaml: unknown key 'rules\[0\].patern'"):
        family_rules(str(typo))
    twice = tmp_path / "twice.yaml"
    twice.write_text("services: {}\nservices: {}\n")
    with pytest.raises(ConfigError, match="appears twice"):
        family_rules(str(twice))


def _ingest(lake_sets, tmp_path, fmt: str, text: str, *extra: str) -> int:  # type: ignore[no-untyped-def]
    from custembed.jobs import ingest

    source = tmp_path / f"{fmt}.txt"
    source.write_text(text)
    return ingest.main([*lake_sets, "--run-date", "2024-01-31", "--format", fmt, "--input", str(source), *extra])


def test_user_item_lines_keep_each_users_order_and_reject_bad_lines(  # type: ignore[no-untyped-def]
    spark, lake_sets, database, tmp_path
) -> None:
    text = "u1 i9\nu2 i5\nu1 i3\n\nu1 i7 extra\nu2 i5\nu1 i1\n"
    assert _ingest(lake_sets, tmp_path, "user-item", text, "--step-seconds", "60") == 0
    spark.catalog.setCurrentDatabase(database)
    events = spark.sql("select * from user_item_events order by customer_id, event_time").collect()
    assert [(r["customer_id"], r["item"]) for r in events] == [
        ("u1", "i9"),
        ("u1", "i3"),
        ("u1", "i1"),
        ("u2", "i5"),
        ("u2", "i5"),
    ]
    assert [r["event_time"] for r in events if r["customer_id"] == "u1"] == [
        "2000-01-01T00:00:00Z",
        "2000-01-01T00:01:00Z",
        "2000-01-01T00:02:00Z",
    ]
    assert {r["event_type"] for r in events} == {"buying"}
    rejects = spark.sql("select reason, raw, format, dt from ingest_rejects where format = 'user-item'").collect()
    assert sorted((r["reason"], r["raw"]) for r in rejects) == [
        ("malformed_line", ""),
        ("malformed_line", "u1 i7 extra"),
    ]
    assert {(r["format"], r["dt"]) for r in rejects} == {("user-item", "2024-01-31")}
    run = spark.sql("select * from runs where job = 'ingest' and details like '%user-item%'").collect()[-1]
    assert (run["rows_read"], run["rows_accepted"], run["rows_rejected"]) == (7, 5, 2)


def test_taobao_lines_with_or_without_a_header(spark, lake_sets, database, tmp_path) -> None:  # type: ignore[no-untyped-def]
    text = (
        "user_id,item_id,category_id,behavior_type,timestamp\n"
        "1,2268318,2520377,pv,1511544070\n"
        "1,2333346,2520771,buy,1511561733\n"
        "2,,2520771,cart,1511561733\n"
        "3,17,4,fav,yesterday\n"
        "4,17,4,fav\n"
    )
    assert _ingest(lake_sets, tmp_path, "taobao", text) == 0
    spark.catalog.setCurrentDatabase(database)
    events = spark.sql("select * from taobao_events order by event_time").collect()
    assert [(r["customer_id"], r["item"], r["category"], r["event_type"], r["event_time"]) for r in events] == [
        ("1", "2268318", "2520377", "pv", "2017-11-24T17:21:10Z"),
        ("1", "2333346", "2520771", "buy", "2017-11-24T22:15:33Z"),
    ]
    taobao_rejects = "select reason from ingest_rejects where format = 'taobao'"
    reasons = sorted(r["reason"] for r in spark.sql(taobao_rejects).collect())
    assert reasons == ["malformed_line", "missing_id", "unparseable_time"]
    # a rerun of the same date replaces the rejects, never duplicates them
    assert _ingest(lake_sets, tmp_path, "taobao", text) == 0
    assert spark.sql(taobao_rejects).count() == 3 and spark.table("taobao_events").count() == 2


def test_a_missing_input_is_one_line_and_exit_2(lake_sets, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from custembed.jobs import ingest

    code = ingest.main([*lake_sets, "--format", "taobao", "--input", str(tmp_path / "nope.csv")])
    assert code == 2 and "input file not found" in capsys.readouterr().err

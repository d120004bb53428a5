"""UCI Online Retail (real data) through the adapter and step 1, unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest

from custembed.config import conf_dir

DATA = conf_dir().parent.parent / "shared" / "data" / "online_retail.csv.gz"


@pytest.mark.slow
@pytest.mark.skipif(not DATA.exists(), reason="shared/data/online_retail.csv.gz not beside the checkout")
def test_online_retail_runs_through_step_one(spark, lake_sets, database) -> None:  # type: ignore[no-untyped-def]
    from custembed.jobs import retail, sequences

    assert retail.main([*lake_sets, "--input", str(DATA)]) == 0
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
    from custembed.jobs.retail import family_rules, to_events

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


def test_default_input_path_points_at_shared_data() -> None:
    from custembed.jobs.retail import DEFAULT_INPUT

    assert Path(DEFAULT_INPUT).name == "online_retail.csv.gz"


def test_family_rules_are_read_strictly(tmp_path: Path) -> None:
    from custembed.config import ConfigError
    from custembed.jobs.retail import family_rules

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

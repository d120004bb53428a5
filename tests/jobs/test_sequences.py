"""Step 1 transforms on tiny inline DataFrames, the job's counts, reruns and input errors."""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import math
import os
import time
from collections.abc import Iterator

import pytest
from pyspark.sql import Row
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from custembed import schemas
from custembed.catalogue import parse_catalogue
from custembed.config import LabelWindow, SequencesConfig
from custembed.errors import InputError
from custembed.jobs import sequences as seq

CATALOGUE = parse_catalogue(
    {
        "name": "tiny",
        "groups": {"products": ["tv", "fridge"]},
        "behaviours": [
            {"name": "no action"},
            {"name": "buying", "items": "products"},
            {"name": "consulting", "items": "products"},
        ],
        "event_types": {"BUY": "buying", "ASK": "consulting"},
        "items": {"FRIDGE-01": "fridge"},
    },
    "tiny.yaml",
)
# ids: 0 pad, 1 mask, 2 unk, 3 no action, 4 buying tv, 5 buying fridge, 6 consulting tv, 7 consulting fridge
NO, BUY_TV, BUY_FRIDGE, ASK_TV, ASK_FRIDGE = 3, 4, 5, 6, 7
SCHEMA = "customer_id string, event_time timestamp, event_type string, item string"
RUN = dt.date(2023, 7, 31)


def ts(text: str) -> dt.datetime:
    """A UTC time (aware, so ``createDataFrame`` does not read it in the driver's local zone)."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc)


def timelines_of(spark, rows, schema=SCHEMA):  # type: ignore[no-untyped-def]
    events = spark.createDataFrame(rows, schema)
    mapped = seq.map_actions(events, catalogue=CATALOGUE, run_date=RUN)
    return seq.build_timelines(mapped, input_columns=events.columns, partitions=2)


def sequences_of(spark, rows, *, cutoff=dt.date(2023, 1, 31), max_len=200):  # type: ignore[no-untyped-def]
    return seq.build_sequences(
        timelines_of(spark, rows),
        cutoff=cutoff,
        max_len=max_len,
        no_action_id=NO,
        action_texts=CATALOGUE.id_to_text(),
    )


def test_catalogue_ids_are_stable_and_complete() -> None:
    assert CATALOGUE.vocab_size == 8
    assert CATALOGUE.no_action_id == NO
    assert CATALOGUE.buy_action_id("fridge") == BUY_FRIDGE
    assert CATALOGUE.id_to_text()[ASK_TV] == "consulting tv"


def test_gap_months_become_no_action_tokens(spark) -> None:
    rows = [
        ("c1", ts("2022-10-05 10:00:00"), "ASK", "tv"),
        ("c1", ts("2023-01-20 09:00:00"), "BUY", "TV"),
    ]
    out = sequences_of(spark, rows).select("customer_id", "tokens", "text", "n_events", "n_no_action", "full_len")
    expected = spark.createDataFrame(
        [("c1", [ASK_TV, NO, NO, BUY_TV], "consulting tv -> no action -> no action -> buying tv", 2, 2, 4)],
        "customer_id string, tokens array<int>, text string, n_events int, n_no_action int, full_len int",
    )
    assertDataFrameEqual(out, expected)


def test_truncation_keeps_the_most_recent_and_records_full_length(spark) -> None:
    rows = [("c1", ts(f"2023-01-{d:02d} 10:00:00"), "ASK" if d % 2 else "BUY", "tv") for d in range(1, 11)]
    out = sequences_of(spark, rows, max_len=3).select("tokens", "seq_len", "full_len").collect()
    assert out == [Row(tokens=[BUY_TV, ASK_TV, BUY_TV], seq_len=3, full_len=10)]  # days 8, 9, 10


def day_gaps(days: list[dt.date]) -> list[int]:
    """Days between consecutive dates, 0 first: the reference for the ``gaps`` column."""
    return [0, *((later - earlier).days for earlier, later in itertools.pairwise(days))]


def test_gaps_count_whole_days_since_the_previous_token_no_action_months_included(spark) -> None:
    rows = [
        ("c1", ts("2022-10-05 10:00:00"), "ASK", "tv"),
        ("c1", ts("2022-10-05 23:00:00"), "BUY", "tv"),  # same day: 0
        ("c1", ts("2022-10-06 00:30:00"), "ASK", "fridge"),  # 90 minutes later, the next day: 1
        ("c1", ts("2023-01-20 09:00:00"), "BUY", "TV"),  # after two empty months (Nov, Dec)
        ("c2", ts("2023-01-07 08:00:00"), "BUY", "fridge"),
    ]
    out = {r["customer_id"]: r for r in sequences_of(spark, rows).select("customer_id", "tokens", "gaps").collect()}
    assert out["c1"]["tokens"] == [ASK_TV, BUY_TV, ASK_FRIDGE, NO, NO, BUY_TV]
    # an empty month's token stands at its first day
    token_days = [dt.date(2022, 10, 5), dt.date(2022, 10, 5), dt.date(2022, 10, 6)]
    token_days += [dt.date(2022, 11, 1), dt.date(2022, 12, 1), dt.date(2023, 1, 20)]
    assert out["c1"]["gaps"] == day_gaps(token_days) == [0, 0, 1, 26, 30, 50]
    assert out["c2"]["tokens"] == [BUY_FRIDGE] and out["c2"]["gaps"] == [0]


def test_gaps_are_truncated_with_the_tokens(spark) -> None:
    days = [1, 2, 4, 7, 11, 16, 22, 29]
    rows = [("c1", ts(f"2023-01-{d:02d} 10:00:00"), "ASK" if d % 2 else "BUY", "tv") for d in days]
    full = sequences_of(spark, rows).select("tokens", "gaps").first()
    cut = sequences_of(spark, rows, max_len=3).select("tokens", "gaps", "seq_len").first()
    assert full is not None and cut is not None
    assert full["gaps"] == day_gaps([dt.date(2023, 1, d) for d in days])
    assert cut["seq_len"] == len(cut["tokens"]) == len(cut["gaps"]) == 3
    assert cut["tokens"] == full["tokens"][-3:]
    # the first kept token keeps its gap to the truncated one before it (day 11 -> 16), not 0
    assert cut["gaps"] == full["gaps"][-3:] == [5, 6, 7]


def test_amounts_are_log_buckets_aligned_with_the_tokens(spark) -> None:
    schema = f"{SCHEMA}, quantity int, unit_price double"
    rows = [
        ("c1", ts("2022-11-05 10:00:00"), "BUY", "tv", 2, 150.0),  # 300
        ("c1", ts("2022-11-05 10:00:00"), "ASK", "tv", None, None),  # no amount: 0
        ("c1", ts("2023-01-20 09:00:00"), "BUY", "fridge", -1, 9.5),  # a return's sign is dropped: 9.5
        ("c1", ts("2023-01-21 09:00:00"), "BUY", "fridge", 1000, 1e9),  # capped at 255
        ("c1", ts("2023-01-22 09:00:00"), "BUY", "fridge", 0, 3.0),  # zero: 0
    ]
    events = spark.createDataFrame(rows, schema)
    mapped = seq.map_actions(events, catalogue=CATALOGUE, run_date=RUN, amount="quantity * unit_price")
    timelines = seq.build_timelines(mapped, input_columns=events.columns, partitions=2)
    out = seq.build_sequences(
        timelines,
        cutoff=dt.date(2023, 1, 31),
        max_len=200,
        no_action_id=NO,
        action_texts=CATALOGUE.id_to_text(),
        with_amounts=True,
    ).first()
    assert out is not None
    # the order and the gaps are those of the events alone: the amount is packed below the action
    assert out["tokens"] == [BUY_TV, ASK_TV, NO, BUY_FRIDGE, BUY_FRIDGE, BUY_FRIDGE]
    assert out["gaps"] == [0, 0, 26, 50, 1, 1]
    bucket = [1 + math.floor(16 * math.log1p(a)) for a in (300.0, 9.5)]
    assert out["amounts"] == [bucket[0], 0, 0, bucket[1], 255, 0]
    # without sequences.amount every bucket is 0, and the tokens are the same
    plain = sequences_of(spark, [r[:4] for r in rows]).first()
    assert plain is not None and plain["tokens"] == out["tokens"] and plain["amounts"] == [0] * 6


def test_an_amount_expression_that_does_not_apply_fails_in_one_line(spark) -> None:
    events = spark.createDataFrame([("c1", ts("2023-01-10 10:00:00"), "BUY", "tv")], SCHEMA)
    for expression in ("quantity * unit_price", "amount +"):
        with pytest.raises(InputError, match="sequences.amount") as error:
            seq.map_actions(events, catalogue=CATALOGUE, run_date=RUN, amount=expression)
        assert "\n" not in str(error.value)


def test_ties_in_time_are_ordered_by_action_id(spark) -> None:
    same = ts("2023-01-10 10:00:00")
    rows = [("c1", same, "ASK", "fridge"), ("c1", same, "BUY", "tv"), ("c1", same, "ASK", "tv")]
    out = sequences_of(spark, rows).select("tokens").collect()
    assert out[0]["tokens"] == [BUY_TV, ASK_TV, ASK_FRIDGE]


def test_events_after_the_cutoff_are_not_in_the_train_view(spark) -> None:
    rows = [
        ("c1", ts("2023-01-10 10:00:00"), "ASK", "tv"),
        ("c1", ts("2023-03-01 10:00:00"), "BUY", "tv"),
        ("c2", ts("2023-03-01 10:00:00"), "BUY", "tv"),
    ]
    out = sequences_of(spark, rows).select("customer_id", "tokens")
    assertDataFrameEqual(out, spark.createDataFrame([("c1", [ASK_TV])], "customer_id string, tokens array<int>"))


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ((None, ts("2023-01-01 00:00:00"), "BUY", "tv"), seq.MISSING_CUSTOMER_ID),
        (("  ", ts("2023-01-01 00:00:00"), "BUY", "tv"), seq.MISSING_CUSTOMER_ID),
        (("c1", None, "BUY", "tv"), seq.MISSING_TIME),
        (("c1", ts("2023-01-01 00:00:00"), "RENT", "tv"), seq.UNKNOWN_EVENT_TYPE),
        (("c1", ts("2023-01-01 00:00:00"), "BUY", "toaster"), seq.UNKNOWN_ITEM),
        (("c1", ts("2023-08-01 00:00:00"), "BUY", "tv"), seq.FUTURE_TIME),
    ],
)
def test_each_reject_reason(spark, row, reason) -> None:  # type: ignore[no-untyped-def]
    events = spark.createDataFrame([row, ("ok", ts("2023-01-01 00:00:00"), "BUY", "FRIDGE-01")], SCHEMA)
    mapped = seq.map_actions(events, catalogue=CATALOGUE, run_date=RUN)
    timelines = seq.build_timelines(mapped, input_columns=events.columns, partitions=2)
    rejects = seq.rejected_rows(timelines, mapped, input_columns=events.columns, run_date=RUN)
    rejects = rejects.select("reason").collect()
    assert [r["reason"] for r in rejects] == [reason]
    accepted = mapped.where(F.col("_reject_reason").isNull()).select("_action_id").collect()
    assert [r["_action_id"] for r in accepted] == [BUY_FRIDGE]  # alias FRIDGE-01 -> fridge


def test_unparseable_and_blank_text_times(spark) -> None:
    events = spark.createDataFrame(
        [("c1", "2023-01-05 10:00:00", "BUY", "tv"), ("c2", "05/01/2023 xx", "BUY", "tv"), ("c3", " ", "BUY", "tv")],
        "customer_id string, event_time string, event_type string, item string",
    )
    mapped = seq.map_actions(events, catalogue=CATALOGUE, run_date=RUN)
    got = {r["customer_id"]: r["_reject_reason"] for r in mapped.collect()}
    assert got == {"c1": None, "c2": seq.UNPARSEABLE_TIME, "c3": seq.MISSING_TIME}


def test_exact_duplicates_are_rejected_once_per_surplus_copy(spark) -> None:
    row = ("c1", ts("2023-01-05 10:00:00"), "BUY", "tv")
    rows = [
        row,
        row,
        row,
        ("c1", ts("2023-01-06 10:00:00"), "BUY", "tv"),
        ("c1", ts("2023-01-05 10:00:00"), "BUY", "TV"),
    ]  # same action, other raw code: not a duplicate
    events = spark.createDataFrame(rows, SCHEMA)
    mapped = seq.map_actions(events, catalogue=CATALOGUE, run_date=RUN)
    timelines = seq.build_timelines(mapped, input_columns=events.columns, partitions=2)
    dups = seq.rejected_rows(timelines, mapped, input_columns=events.columns, run_date=RUN)
    assert (
        dups.select("reason", "customer_id", "item").collect()
        == [Row(reason="duplicate", customer_id="c1", item="tv")] * 2
    )
    sizes = timelines.select(F.size("_packed").alias("n")).collect()
    assert sizes == [Row(n=3)]


def test_rejected_rows_gives_every_reason_from_one_call(spark) -> None:  # type: ignore[no-untyped-def]
    at = ts("2023-01-05 10:00:00")
    rows = [
        ("c1", at, "BUY", "tv"),
        ("c1", at, "BUY", "tv"),  # a copy: the one duplicate
        ("c2", at, "BUY", "toaster"),
        ("c2", at, "BUY", "toaster"),  # copies of a rejected row keep their reason, both rejected
        (None, at, "BUY", "tv"),
        ("c3", at, "BUY", "fridge"),
    ]
    events = spark.createDataFrame(rows, SCHEMA)
    mapped = seq.map_actions(events, catalogue=CATALOGUE, run_date=RUN)
    timelines = seq.build_timelines(mapped, input_columns=events.columns, partitions=2)
    rejects = seq.rejected_rows(timelines, mapped, input_columns=events.columns, run_date=RUN)
    got = sorted((r["reason"], r["customer_id"]) for r in rejects.collect())
    assert got == [
        (seq.DUPLICATE, "c1"),
        (seq.MISSING_CUSTOMER_ID, None),
        (seq.UNKNOWN_ITEM, "c2"),
        (seq.UNKNOWN_ITEM, "c2"),
    ]
    accepted = timelines.select(F.sum(F.size("_packed")).alias("n")).first()
    assert accepted is not None and accepted["n"] + len(got) == len(rows)


def test_labels_count_purchases_inside_each_window_only(spark) -> None:
    rows = [
        ("c1", ts("2023-01-10 10:00:00"), "ASK", "tv"),
        ("c1", ts("2023-02-10 10:00:00"), "BUY", "tv"),  # train window
        ("c2", ts("2023-01-10 10:00:00"), "ASK", "fridge"),
        ("c2", ts("2023-05-02 10:00:00"), "BUY", "fridge"),  # test window
        ("c3", ts("2023-01-10 10:00:00"), "BUY", "tv"),  # before the cutoff: not a label
    ]
    cutoff = dt.date(2023, 1, 31)
    windows = seq.label_windows(SequencesConfig().label_windows, cutoff, RUN)
    labels = seq.build_labels(
        timelines_of(spark, rows), cutoff=cutoff, windows=windows, products=[("tv", BUY_TV), ("fridge", BUY_FRIDGE)]
    )
    positives = labels.where("label = 1").select("customer_id", "product", "label_window")
    assertDataFrameEqual(
        positives,
        spark.createDataFrame(
            [("c1", "tv", "train"), ("c2", "fridge", "test")], "customer_id string, product string, label_window string"
        ),
    )
    assert labels.count() == 3 * 2 * 2


def test_cutoff_and_windows_from_the_run_date() -> None:
    cfg = SequencesConfig()
    assert seq.resolve_cutoff(cfg, dt.date(2023, 7, 31)) == dt.date(2023, 1, 31)
    assert seq.resolve_cutoff(cfg, dt.date(2023, 7, 15)) == dt.date(2022, 12, 31)
    windows = seq.label_windows(cfg.label_windows, dt.date(2023, 1, 31), dt.date(2023, 7, 31))
    assert [(w.name, w.start, w.end) for w in windows] == [
        ("train", dt.date(2023, 2, 1), dt.date(2023, 4, 30)),
        ("test", dt.date(2023, 5, 1), dt.date(2023, 7, 31)),
    ]
    late = seq.label_windows((LabelWindow("x", 7, 1),), dt.date(2023, 1, 31), dt.date(2023, 7, 31))
    assert late == []


def test_missing_column_and_wrong_type_fail_at_start(spark) -> None:
    no_item = spark.createDataFrame(
        [("c1", ts("2023-01-01 00:00:00"), "BUY")], "customer_id string, event_time timestamp, event_type string"
    )
    with pytest.raises(InputError, match="missing required column 'item'"):
        seq.validate_events(no_item, "t")
    bad_time = spark.createDataFrame(
        [("c1", 5, "BUY", "tv")], "customer_id string, event_time int, event_type string, item string"
    )
    with pytest.raises(InputError, match="'event_time' has type int"):
        seq.validate_events(bad_time, "t")


def _run_job(lake_sets, *extra: str) -> int:  # type: ignore[no-untyped-def]
    from custembed.jobs import generate, sequences

    small = ["--set", "generate.customers=300", "--set", "generate.dirty_fraction=0.02", "--run-date", "2023-07-31"]
    assert generate.main([*lake_sets, *small]) == 0
    return sequences.main([*lake_sets, *small, *extra])


@pytest.mark.slow
def test_job_counts_add_up_and_rerun_replaces(spark, lake_sets, lake_dir, database) -> None:  # type: ignore[no-untyped-def]
    assert _run_job(lake_sets) == 0
    spark.catalog.setCurrentDatabase(database)
    first = {t: spark.table(t).where("dt = '2023-07-31'").count() for t in ("sequences", "labels", "rejects")}
    assert _run_job(lake_sets) == 0
    second = {t: spark.table(t).where("dt = '2023-07-31'").count() for t in ("sequences", "labels", "rejects")}
    assert first == second and first["sequences"] > 300  # two views
    runs = spark.table("runs").where("job = 'sequences'").orderBy("finished_at").collect()
    last = runs[-1]
    assert last["status"] == "succeeded"
    assert last["rows_read"] == last["rows_accepted"] + last["rows_rejected"]
    assert set(last["rejected_by_reason"]) >= {seq.MISSING_CUSTOMER_ID, seq.UNKNOWN_ITEM, seq.FUTURE_TIME}
    assert last["rows_rejected"] == first["rejects"]
    written = spark.table("sequences").schema
    assert [f.name for f in written.fields] == [f.name for f in schemas.SEQUENCES.fields]


def test_job_reports_bad_input_in_one_line(spark, lake_sets, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from custembed.jobs import sequences

    bad = tmp_path / "bad.csv"
    bad.write_text("customer_id,event_time,event_type\nc1,2023-01-01,BUY\n")
    assert sequences.main([*lake_sets, "--events", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("custembed sequences: error:") and "missing required column 'item'" in err[-1]
    assert sequences.main([*lake_sets, "--set", "sequences.max_lne=3"]) == 2
    assert "unknown key 'sequences.max_lne'" in capsys.readouterr().err


# -- time zones, incomplete months, null-aware fingerprints --------------------------
@contextlib.contextmanager
def driver_time_zone(zone: str) -> Iterator[None]:
    """The Python driver's local zone set to ``zone`` (what py4j and ``createDataFrame`` use for naive datetimes)."""
    saved = os.environ.get("TZ")
    os.environ["TZ"] = zone
    time.tzset()
    try:
        assert time.localtime(1690848000).tm_gmtoff != 0  # 2023-08-01 00:00 UTC: the zone really is not UTC
        yield
    finally:
        if saved is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = saved
        time.tzset()


NON_UTC_ZONES = ["Asia/Seoul", "America/Los_Angeles"]  # ahead of and behind UTC


@pytest.mark.parametrize("zone", NON_UTC_ZONES)
def test_run_date_cut_off_is_utc_whatever_the_driver_zone(spark, zone) -> None:  # type: ignore[no-untyped-def]
    events = spark.createDataFrame(
        [
            ("late", "2023-07-31 23:30:00", "BUY", "tv"),  # last half hour of the run date (UTC): accepted
            ("next", "2023-08-01 00:30:00", "BUY", "tv"),  # the next day (UTC): future
        ],
        "customer_id string, event_time string, event_type string, item string",
    )
    with driver_time_zone(zone):
        mapped = seq.map_actions(events, catalogue=CATALOGUE, run_date=RUN)
        got = {r["customer_id"]: r["_reject_reason"] for r in mapped.collect()}
    assert got == {"late": None, "next": seq.FUTURE_TIME}


@pytest.mark.parametrize("zone", NON_UTC_ZONES)
def test_runs_timestamps_are_utc_whatever_the_driver_zone(spark, lake_sets, lake_dir, database, zone) -> None:  # type: ignore[no-untyped-def]
    from custembed.io import Lake
    from custembed.jobs.common import record_run

    lake = Lake(spark, database, str(lake_dir))
    with driver_time_zone(zone):
        before = time.time()
        naive_utc = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)  # what most jobs pass as `started`
        aware = dt.datetime.now(dt.timezone.utc)
        ids = [
            record_run(lake, job="tz-check", run_date=RUN, started=started, status="succeeded")
            for started in (naive_utc, aware)
        ]
        after = time.time()
    rows = (
        lake.read("runs")
        .where(F.col("run_id").isin(ids))
        .select(F.unix_seconds("started_at").alias("started"), F.unix_seconds("finished_at").alias("finished"))
        .collect()
    )
    assert len(rows) == 2
    for row in rows:
        assert int(before) <= row["started"] <= row["finished"] <= after + 1


@pytest.mark.parametrize(
    ("end", "expected"),
    [
        # the 1st: July is not complete, so it gets no `no action` (its events still count)
        (dt.date(2023, 7, 1), {"c1": [ASK_TV, NO, BUY_TV], "c2": [ASK_FRIDGE], "c3": [BUY_TV, ASK_TV]}),
        # mid-month: the same rule
        (dt.date(2023, 7, 15), {"c1": [ASK_TV, NO, BUY_TV], "c2": [ASK_FRIDGE], "c3": [BUY_TV, ASK_TV]}),
        # the last day: July is complete; an empty July is one `no action`
        (dt.date(2023, 7, 31), {"c1": [ASK_TV, NO, BUY_TV, NO], "c2": [ASK_FRIDGE], "c3": [BUY_TV, ASK_TV]}),
    ],
)
def test_only_complete_months_get_no_action_tokens(spark, end, expected) -> None:  # type: ignore[no-untyped-def]
    rows = [
        ("c1", ts("2023-04-10 10:00:00"), "ASK", "tv"),
        ("c1", ts("2023-06-10 10:00:00"), "BUY", "tv"),  # May empty (complete): `no action`
        ("c2", ts("2023-07-01 08:00:00"), "ASK", "fridge"),  # first event in the run month
        ("c3", ts("2023-06-30 10:00:00"), "BUY", "tv"),
        ("c3", ts("2023-07-01 09:00:00"), "ASK", "tv"),
    ]
    out = sequences_of(spark, rows, cutoff=end).select("customer_id", "tokens", "n_no_action").collect()
    assert {r["customer_id"]: r["tokens"] for r in out} == expected
    assert {r["customer_id"]: r["n_no_action"] for r in out} == {c: t.count(NO) for c, t in expected.items()}


def test_rows_differing_only_in_which_column_is_null_are_not_duplicates(spark) -> None:
    schema = SCHEMA + ", channel string, note string"
    at = ts("2023-01-05 10:00:00")
    rows = [
        ("c1", at, "BUY", "tv", "x", None),
        ("c1", at, "BUY", "tv", None, "x"),
        ("c1", at, "BUY", "tv", None, None),
        ("c1", at, "BUY", "tv", None, None),  # an exact copy of the row above: the one duplicate
    ]
    events = spark.createDataFrame(rows, schema)
    mapped = seq.map_actions(events, catalogue=CATALOGUE, run_date=RUN)
    timelines = seq.build_timelines(mapped, input_columns=events.columns, partitions=2)
    dups = seq.rejected_rows(timelines, mapped, input_columns=events.columns, run_date=RUN)
    raw = [json.loads(r["raw"]) for r in dups.collect()]
    assert [(r.get("channel"), r.get("note")) for r in raw] == [(None, None)]
    assert timelines.select(F.size("_packed").alias("n")).collect() == [Row(n=3)]


DATA_CATALOGUE = parse_catalogue(
    {
        "name": "items-from-data",
        "groups": {"services": ["chat"]},
        "behaviours": [
            {"name": "no action"},
            {"name": "using", "items": "services"},
            {"name": "buying", "items": "data"},
            {"name": "viewing", "items": "data"},
        ],
        "event_types": {"BUY": "buying", "PV": "viewing", "USE": "using"},
        "vocabulary": {"min_count": 2},
    },
    "data.yaml",
)


def test_vocabulary_from_data_numbers_frequent_items_after_the_declared_actions(spark) -> None:  # type: ignore[no-untyped-def]
    rows = [
        ("u1", ts("2023-01-01 10:00:00"), "BUY", "A"),
        ("u1", ts("2023-01-02 10:00:00"), "BUY", " a "),  # same item once trimmed and lower-cased
        ("u2", ts("2023-01-03 10:00:00"), "PV", "b"),
        ("u2", ts("2023-01-04 10:00:00"), "PV", "b"),
        ("u2", ts("2023-01-05 10:00:00"), "PV", "b"),
        ("u3", ts("2023-01-05 10:00:00"), "BUY", "b"),
        ("u3", ts("2023-01-06 10:00:00"), "BUY", "b"),
        ("u3", ts("2023-01-07 10:00:00"), "BUY", "rare"),  # once: below min_count -> unknown id
        ("u3", ts("2023-01-07 11:00:00"), "USE", "chat"),
        (None, ts("2023-01-07 10:00:00"), "BUY", "rare"),  # rejected rows do not count
        ("u4", ts("2023-08-07 10:00:00"), "BUY", "rare"),  # after the run date
    ]
    events = spark.createDataFrame(rows, SCHEMA)
    vocabulary = seq.build_vocabulary(events, catalogue=DATA_CATALOGUE, run_date=RUN)
    assert DATA_CATALOGUE.first_data_id == 5  # pad, mask, unk, no action, using chat
    got = sorted((r["id"], r["behaviour"], r["item"], r["count"], r["text"]) for r in vocabulary.collect())
    # most frequent first; the tie of 'buying a' and 'buying b' goes to the behaviour order, then the item
    assert got == [
        (5, "viewing", "b", 3, "viewing b"),
        (6, "buying", "a", 2, "buying a"),
        (7, "buying", "b", 2, "buying b"),
    ]
    catalogue = DATA_CATALOGUE.with_data_actions((r["behaviour"], r["item"], r["id"]) for r in vocabulary.collect())
    assert catalogue.vocab_size == 8 and catalogue.action_id("buying", "b") == 7
    mapped = seq.map_actions(events, catalogue=DATA_CATALOGUE, run_date=RUN, vocabulary=vocabulary)
    by_item = {(r["customer_id"], r["item"]): (r[seq._ACTION], r[seq._REASON]) for r in mapped.collect()}
    assert by_item[("u3", "rare")] == (2, None)  # known behaviour, rare item: used, as unknown
    assert by_item[("u1", " a ")] == (6, None)
    assert by_item[("u3", "chat")] == (4, None)
    assert by_item[("u4", "rare")][1] == seq.FUTURE_TIME
    texts = seq.action_texts_frame(spark, DATA_CATALOGUE, vocabulary).first()["texts"]
    assert texts == catalogue.id_to_text()
    timelines = seq.build_timelines(mapped, input_columns=events.columns, partitions=2)
    built = seq.build_sequences(
        timelines,
        cutoff=dt.date(2023, 3, 31),
        max_len=10,
        no_action_id=3,
        action_texts=seq.action_texts_frame(spark, DATA_CATALOGUE, vocabulary),
        fill_empty_months=False,
    )
    u3 = built.where("customer_id = 'u3'").first()
    assert u3["tokens"] == [7, 7, 2, 4] and u3["n_no_action"] == 0  # no 'no action' for Feb and Mar
    assert u3["text"] == "buying b -> buying b -> [UNK] -> using chat"


def test_data_vocabulary_settings_are_checked() -> None:
    from custembed.config import ConfigError

    base = {"behaviours": [{"name": "no action"}, {"name": "buying", "items": "data"}], "event_types": {}}
    with pytest.raises(ConfigError, match="min_count"):
        parse_catalogue({**base, "vocabulary": {"min_count": 0}}, "bad.yaml")
    with pytest.raises(ConfigError, match="vocabulary.size"):
        parse_catalogue({**base, "vocabulary": {"size": 3}}, "bad.yaml")
    with pytest.raises(ConfigError, match="items: data"):
        parse_catalogue({**base, "behaviours": [{"name": "no action"}], "vocabulary": {"min_count": 2}}, "bad.yaml")
    catalogue = parse_catalogue(base, "ok.yaml")
    with pytest.raises(ValueError, match="id 9 where 4 was expected"):
        catalogue.with_data_actions([("buying", "x", 9)])

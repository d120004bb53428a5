"""Step 1: raw events → per-customer action sequences, labels and rejects.

Spark built-ins only (no Python UDF). One shuffle: events are hash-partitioned
by customer, exact duplicates are found and every customer's timeline is
aggregated inside those partitions. A timeline is an array of packed longs,
``(seconds + OFFSET) << TIME_SHIFT | action_id << AMOUNT_BITS | amount_bucket``, so
one primitive sort orders events by time and, on ties, by action id, then amount
(deterministic). Both views
(``train``: up to the feature cutoff; ``current``: up to the run date) and the
labels are slices of the same timeline.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import Window as SparkWindow
from pyspark.sql import functions as F

from custembed import schemas
from custembed.catalogue import ACTION_SEPARATOR, MAX_ACTIONS, UNK_ID, ActionCatalogue, load_catalogue
from custembed.config import Config, ConfigError, LabelWindow, SequencesConfig
from custembed.errors import InputError

log = logging.getLogger(__name__)

OFFSET = 1 << 33  # seconds added before packing so times before 1970 stay positive
ACTION_BITS = 20  # up to 1 M actions
AMOUNT_BITS = 8  # the event's amount bucket (amount_bucket), 0 when it has none
TIME_SHIFT = ACTION_BITS + AMOUNT_BITS  # (seconds + OFFSET) < 2**35 (years 1698-2786) fits in 63 bits
ACTION_MASK = (1 << ACTION_BITS) - 1
AMOUNT_MASK = (1 << AMOUNT_BITS) - 1
AMOUNT_SCALE = 16  # buckets per unit of ln(1 + |amount|): about 6 % apart, 255 reached near 8.4 million

# reject reasons, in the order they are tested (a row gets the first that applies)
MISSING_CUSTOMER_ID = "missing_customer_id"
MISSING_TIME = "missing_time"
UNPARSEABLE_TIME = "unparseable_time"
UNKNOWN_EVENT_TYPE = "unknown_event_type"
UNKNOWN_ITEM = "unknown_item"
FUTURE_TIME = "future_time"
DUPLICATE = "duplicate"
REJECT_REASONS = (
    MISSING_CUSTOMER_ID,
    MISSING_TIME,
    UNPARSEABLE_TIME,
    UNKNOWN_EVENT_TYPE,
    UNKNOWN_ITEM,
    FUTURE_TIME,
    DUPLICATE,
)

_TS = "_event_ts"
_ACTION = "_action_id"
_REASON = "_reject_reason"
_PACKED = "_packed"
_MONTH = "_month"
_AMOUNT = "_amount_bucket"


# -- dates --------------------------------------------------------------------
def month_index(day: dt.date) -> int:
    """Months since 0000-01: comparable integers for calendar months."""
    return day.year * 12 + day.month - 1


def month_start(index: int) -> dt.date:
    return dt.date(index // 12, index % 12 + 1, 1)


def month_end(index: int) -> dt.date:
    return month_start(index + 1) - dt.timedelta(days=1)


@dataclass(frozen=True)
class Window:
    name: str
    start: dt.date  # first day, inclusive
    end: dt.date  # last day, inclusive


def resolve_cutoff(cfg: SequencesConfig, run_date: dt.date) -> dt.date:
    """The feature cutoff (inclusive): configured, or the end of the month before the label windows.

    With no cutoff configured the label windows end with the last complete month
    up to the run date (2023-07-31 → cutoff 2023-01-31 with the default
    train = months 1-3 and test = months 4-6 after the cutoff).
    """
    if cfg.cutoff:
        cutoff = dt.date.fromisoformat(cfg.cutoff)
        if cutoff > run_date:
            raise ConfigError(f"sequences.cutoff {cutoff} is after the run date {run_date}")
        return cutoff
    last_complete = month_index(run_date + dt.timedelta(days=1)) - 1
    horizon = max((w.start_offset_months + w.months - 1 for w in cfg.label_windows), default=0)
    return month_end(last_complete - horizon)


def label_windows(windows: Sequence[LabelWindow], cutoff: dt.date, run_date: dt.date) -> list[Window]:
    """Calendar windows after the cutoff month; windows not complete by the run date are left out."""
    result = []
    for w in windows:
        if w.start_offset_months < 1 or w.months < 1:
            raise ConfigError(f"label window {w.name}: start_offset_months and months must be >= 1")
        first = month_index(cutoff) + w.start_offset_months
        window = Window(w.name, month_start(first), month_end(first + w.months - 1))
        if window.end > run_date:
            log.warning(
                "label window %s (%s..%s) ends after the run date: no labels for it", w.name, window.start, window.end
            )
            continue
        result.append(window)
    return result


def utc_seconds(day: dt.date) -> int:
    """Epoch seconds of 00:00 UTC of ``day``, whatever the driver's time zone."""
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc).timestamp())


def _packed_bound(day: dt.date) -> int:
    """Smallest packed value at or after 00:00 UTC of ``day``."""
    return (utc_seconds(day) + OFFSET) << TIME_SHIFT


def _seconds_of(packed: Column) -> Column:
    """Epoch seconds of a packed timeline entry."""
    return F.shiftright(packed, TIME_SHIFT) - F.lit(OFFSET)


def _action_of(packed: Column) -> Column:
    """Action id of a packed timeline entry (bigint)."""
    return F.shiftright(packed, AMOUNT_BITS).bitwiseAND(F.lit(ACTION_MASK))


def amount_bucket(amount: Column) -> Column:
    """An event's amount as a small int: 0 for none (null, zero, not a number), else
    ``1 + floor(AMOUNT_SCALE * ln(1 + |amount|))`` capped at 255.

    The magnitude is kept, the sign is not: a return's negative quantity is already said by
    its action. Buckets are log-spaced, so 10 and 11 differ as 1,000 and 1,100 do.
    """
    magnitude = F.abs(amount.try_cast("double"))  # text that is not a number: null, no amount
    scaled = F.floor(F.log1p(magnitude) * F.lit(AMOUNT_SCALE)) + F.lit(1)
    valid = magnitude.isNotNull() & ~F.isnan(magnitude) & (magnitude > 0)
    return F.when(valid, F.least(scaled, F.lit(AMOUNT_MASK))).otherwise(F.lit(0)).cast("int")


def event_amount(events: DataFrame, expression: str | None) -> Column:
    """The column of ``sequences.amount`` (a SQL expression over the event columns), checked on ``events``.

    ``None`` gives 0 buckets. An expression that does not parse or names a column the
    events lack is an :class:`InputError` naming the setting.
    """
    if not expression:
        return F.lit(0)
    from pyspark.errors import AnalysisException, ParseException

    try:
        column = F.expr(expression)
        kind = events.select(column).schema.fields[0].dataType  # analysed now: a bad expression fails at start
    except (AnalysisException, ParseException) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise InputError(f"sequences.amount {expression!r} does not apply to the events: {first}") from None
    if kind.typeName() not in ("byte", "short", "integer", "long", "float", "double", "decimal", "string"):
        raise InputError(f"sequences.amount {expression!r} gives {kind.simpleString()}, not a number")
    return amount_bucket(column)


# -- validation -----------------------------------------------------------------
_STRING_COLUMNS = (schemas.CUSTOMER_ID, schemas.EVENT_TYPE, schemas.ITEM)


def validate_events(events: DataFrame, source: str) -> None:
    """Fail at start, in one line, on a missing column or a column of the wrong type."""
    types = dict(events.dtypes)
    for column in schemas.RAW_EVENT_COLUMNS:
        if column not in types:
            raise InputError(f"events {source}: missing required column '{column}' (has: {', '.join(events.columns)})")
    for column in _STRING_COLUMNS:
        ok = types[column] == "string" or (column == schemas.CUSTOMER_ID and types[column] in ("int", "bigint"))
        if not ok:
            raise InputError(f"events {source}: column '{column}' has type {types[column]}, expected string")
    if types[schemas.EVENT_TIME] not in ("timestamp", "timestamp_ntz", "date", "string"):
        raise InputError(
            f"events {source}: column 'event_time' has type {types[schemas.EVENT_TIME]}, "
            "expected timestamp, date or ISO text"
        )


# -- transforms -------------------------------------------------------------------
def _parsed_time(events: DataFrame, time_format: str | None) -> Column:
    kind = dict(events.dtypes)[schemas.EVENT_TIME]
    raw = F.col(schemas.EVENT_TIME)
    if kind == "string":
        text = F.trim(raw)
        return F.try_to_timestamp(text, F.lit(time_format)) if time_format else F.try_to_timestamp(text)
    return raw.cast("timestamp")


def _keyed_events(events: DataFrame, *, catalogue: ActionCatalogue, time_format: str | None) -> DataFrame:
    """The input columns (``customer_id`` trimmed, as text) plus ``_event_ts``, ``_behaviour`` and ``_item_name``."""
    event_types = F.create_map(*[F.lit(x) for kv in catalogue.event_types.items() for x in kv])
    aliases = catalogue.item_aliases
    item_code = F.trim(F.col(schemas.ITEM))
    item_name = F.lower(item_code)
    if aliases:
        alias_map = F.create_map(*[F.lit(x) for kv in aliases.items() for x in kv])
        item_name = F.coalesce(F.try_element_at(alias_map, item_code), item_name)
    customer = F.trim(F.col(schemas.CUSTOMER_ID).cast("string"))
    return events.select(
        *[c for c in events.columns if c != schemas.CUSTOMER_ID],
        customer.alias(schemas.CUSTOMER_ID),
        _parsed_time(events, time_format).alias(_TS),
        F.try_element_at(event_types, F.trim(F.col(schemas.EVENT_TYPE))).alias("_behaviour"),
        item_name.alias("_item_name"),
    )


def _first_future(run_date: dt.date) -> Column:
    # Epoch seconds, not F.lit(datetime): py4j reads a naive datetime in the driver's local zone,
    # which would move the cut-off by the driver's UTC offset. Events are future from 00:00 UTC
    # of the day after the run date.
    return F.timestamp_seconds(F.lit(utc_seconds(run_date + dt.timedelta(days=1))))


def build_vocabulary(
    events: DataFrame,
    *,
    catalogue: ActionCatalogue,
    run_date: dt.date,
    time_format: str | None = None,
) -> DataFrame:
    """Raw events → the data actions of ``catalogue`` (its ``items: data`` behaviours) with their ids.

    Counts the usable events (customer, parseable time not after the run date) of each
    (behaviour, item) of a data behaviour, keeps those seen ``catalogue.min_count``
    times or more, at most ``catalogue.max_items`` of them, and numbers them from
    ``catalogue.first_data_id``: most frequent first, ties by the behaviour's order in the
    catalogue, then by item. Output: ``behaviour``, ``item``, ``id``, ``count``, ``text``
    (the ``vocabulary`` columns without ``dt``). The distinct pairs are numbered in one
    partition: a vocabulary, not the events.
    """
    if not catalogue.needs_data:
        raise ValueError(f"catalogue {catalogue.name} has no behaviour with items from data")
    keyed = _keyed_events(events, catalogue=catalogue, time_format=time_format)
    usable = (
        F.col(schemas.CUSTOMER_ID).isNotNull()
        & (F.col(schemas.CUSTOMER_ID) != "")
        & F.col(_TS).isNotNull()
        & (F.col(_TS) < _first_future(run_date))
        & F.col("_item_name").isNotNull()
        & (F.col("_item_name") != "")
        & F.col("_behaviour").isin(list(catalogue.data_behaviours))
    )
    order = F.create_map(*[x for i, b in enumerate(catalogue.data_behaviours) for x in (F.lit(b), F.lit(i))])
    counts = (
        keyed.where(usable)
        .groupBy(F.col("_behaviour").alias("behaviour"), F.col("_item_name").alias("item"))
        .agg(F.count(F.lit(1)).alias("count"))
        .where(F.col("count") >= catalogue.min_count)
    )
    rank = F.row_number().over(
        SparkWindow.orderBy(F.col("count").desc(), F.element_at(order, F.col("behaviour")), F.col("item"))
    )
    numbered = counts.select("*", (rank + F.lit(catalogue.first_data_id - 1)).alias("id"))
    limit = MAX_ACTIONS - catalogue.n_declared if catalogue.max_items is None else catalogue.max_items
    return numbered.where(F.col("id") < F.lit(catalogue.first_data_id + limit)).select(
        "behaviour",
        "item",
        F.col("id").cast("int").alias("id"),
        F.col("count").cast("bigint").alias("count"),
        F.concat_ws(" ", "behaviour", "item").alias("text"),
    )


def action_texts_frame(spark: SparkSession, catalogue: ActionCatalogue, vocabulary: DataFrame) -> DataFrame:
    """One row, column ``texts``: the text of every id (special, declared, then the run's data actions)."""
    declared = spark.createDataFrame(
        list(enumerate(catalogue.id_to_text()[: catalogue.first_data_id])), "id int, text string"
    )
    every = declared.unionByName(vocabulary.select("id", "text"))
    pairs = F.array_sort(F.collect_list(F.struct("id", "text")))
    return every.agg(F.transform(pairs, lambda p: p["text"]).alias("texts"))


def map_actions(
    events: DataFrame,
    *,
    catalogue: ActionCatalogue,
    run_date: dt.date,
    time_format: str | None = None,
    vocabulary: DataFrame | None = None,
    amount: str | None = None,
) -> DataFrame:
    """Raw events → events with ``_event_ts``, ``_action_id``, ``_amount_bucket`` and ``_reject_reason``.

    Input: the raw-event contract (``customer_id``, ``event_time``, ``event_type``,
    ``item``, any extra columns). Output: the input columns (``customer_id``
    trimmed, as text) plus the three columns above; ``_reject_reason`` is null
    for usable rows and otherwise the first reason of ``REJECT_REASONS`` that
    applies (duplicates are found later, by ``build_timelines``). A catalogue with
    ``items: data`` behaviours needs the run's ``vocabulary`` (:func:`build_vocabulary`);
    an item of such a behaviour that is not in it maps to the unknown id. ``amount`` is
    ``sequences.amount`` (:func:`event_amount`); without it every bucket is 0.
    """
    spark = events.sparkSession
    bucket = event_amount(events, amount)
    actions = spark.createDataFrame(
        catalogue.code_table(),
        "_behaviour string, _item_name string, _join_action_id int",
    )
    if catalogue.needs_data:
        if vocabulary is None:
            raise ValueError(f"catalogue {catalogue.name} takes items from data: pass the run's vocabulary")
        actions = actions.unionByName(
            vocabulary.select(
                F.col("behaviour").alias("_behaviour"),
                F.col("item").alias("_item_name"),
                F.col("id").alias("_join_action_id"),
            )
        )
    raw_time = F.col(schemas.EVENT_TIME)
    with_keys = _keyed_events(events, catalogue=catalogue, time_format=time_format)
    joined = with_keys.join(F.broadcast(actions), ["_behaviour", "_item_name"], "left")
    action = F.col("_join_action_id")
    if catalogue.needs_data:
        rare = F.col("_behaviour").isin(list(catalogue.data_behaviours)) & action.isNull()
        action = F.when(rare, F.lit(UNK_ID)).otherwise(action)
    raw_time_blank = raw_time.isNull() | (F.trim(raw_time.cast("string")) == "")
    reason = (
        F.when(F.col(schemas.CUSTOMER_ID).isNull() | (F.col(schemas.CUSTOMER_ID) == ""), MISSING_CUSTOMER_ID)
        .when(raw_time_blank, MISSING_TIME)
        .when(F.col(_TS).isNull(), UNPARSEABLE_TIME)
        .when(F.col("_behaviour").isNull(), UNKNOWN_EVENT_TYPE)
        .when(action.isNull(), UNKNOWN_ITEM)
        .when(F.col(_TS) >= _first_future(run_date), FUTURE_TIME)
    )
    return joined.select(
        *events.columns,
        F.col(_TS),
        action.alias(_ACTION),
        bucket.alias(_AMOUNT),
        reason.alias(_REASON),
    )


def _raw_json(columns: Sequence[str]) -> Column:
    return F.to_json(F.struct(*[F.col(c) for c in columns]))


def _fingerprints(input_columns: Sequence[str]) -> tuple[Column, Column]:
    """A 96-bit fingerprint of a whole row: (xxhash64, murmur3) over every column with a null marker.

    Spark's hashes skip null values, so ``(a, null)`` and ``(null, a)`` would hash
    alike; hashing ``isnull(c), c`` for each column makes where the nulls are part
    of the fingerprint (the marker is never null, so it is always hashed).
    """
    values = [part for c in input_columns for part in (F.isnull(F.col(c)), F.col(c))]
    return F.xxhash64(*values).alias("h1"), F.hash(*values).alias("h2")


def build_timelines(mapped: DataFrame, *, input_columns: Sequence[str], partitions: int | None = None) -> DataFrame:
    """Accepted events → one row per customer with the sorted packed timeline.

    Output: ``customer_id``, ``_packed`` (array<bigint>, ascending: time then
    action id) and ``_dups`` (array of (``h1``, ``h2``, ``n``): the fingerprint
    of an exact duplicate row and its surplus copies; see ``rejected_rows``).

    One narrow shuffle: each accepted row is reduced to (customer id, packed
    time/action, a 96-bit fingerprint of the whole row: xxhash64 and murmur3
    of every input column and where its nulls are) before it is hash-partitioned by customer; exact
    duplicates are the rows of one customer with the same packed value and
    fingerprint, found inside those partitions. Two different rows of one
    customer at the same second and action would have to collide on 96 bits
    to be taken for duplicates (about 1 in 10^28 per such pair). Shipping the
    fingerprint instead of every column measured faster than grouping on the
    raw columns.
    """
    packed = (
        F.shiftleft(F.unix_seconds(F.col(_TS)) + F.lit(OFFSET), TIME_SHIFT)
        .bitwiseOR(F.shiftleft(F.col(_ACTION).cast("bigint"), AMOUNT_BITS))
        .bitwiseOR(F.col(_AMOUNT).cast("bigint"))
    )
    fingerprints = mapped.where(F.col(_REASON).isNull()).select(
        schemas.CUSTOMER_ID, packed.alias("_p"), *_fingerprints(input_columns)
    )
    by_customer = (
        fingerprints.repartition(partitions, schemas.CUSTOMER_ID)
        if partitions
        else fingerprints.repartition(schemas.CUSTOMER_ID)
    )
    distinct_rows = by_customer.groupBy(schemas.CUSTOMER_ID, "_p", "h1", "h2").agg(F.count(F.lit(1)).alias("_copies"))
    surplus = F.when(F.col("_copies") > 1, F.struct("h1", "h2", (F.col("_copies") - 1).cast("int").alias("n")))
    return distinct_rows.groupBy(schemas.CUSTOMER_ID).agg(
        F.array_sort(F.collect_list("_p")).alias(_PACKED),
        F.collect_list(surplus).alias("_dups"),
    )


def rejected_rows(
    timelines: DataFrame, mapped: DataFrame, *, input_columns: Sequence[str], run_date: dt.date
) -> DataFrame:
    """Every rejected row, in the ``rejects`` schema, from one more scan of ``mapped``.

    The rows ``map_actions`` gave a reason, and the surplus copies of exact duplicates
    (every copy beyond the first): their fingerprints come from the timelines (``_dups``),
    few, and are joined to the scan (Spark broadcasts them when they are small); a duplicate's
    copies are ranked by their columns within their fingerprint and the first is left out.
    Only the rows kept (rejected or a copy of a duplicate) reach the ranking's shuffle.
    """
    keys = (
        timelines.where(F.size("_dups") > 0)
        .select(schemas.CUSTOMER_ID, F.explode("_dups").alias("_d"))
        .select(schemas.CUSTOMER_ID, F.col("_d.h1").alias("h1"), F.col("_d.h2").alias("h2"), F.lit(True).alias("_dup"))
    )
    rows = mapped.select(*input_columns, _REASON, *_fingerprints(input_columns))
    # a key matches accepted rows only: the reason is a function of the row, so copies share it
    flagged = rows.join(keys, [schemas.CUSTOMER_ID, "h1", "h2"], "left").where(
        F.col(_REASON).isNotNull() | F.col("_dup").isNotNull()
    )
    order = SparkWindow.partitionBy(schemas.CUSTOMER_ID, "h1", "h2").orderBy(*input_columns)
    copy = F.when(F.col("_dup").isNotNull(), F.row_number().over(order))
    kept = flagged.withColumn("_copy", copy).where(F.col("_copy").isNull() | (F.col("_copy") > 1))
    return kept.select(
        F.coalesce(F.col(_REASON), F.lit(DUPLICATE)).alias("reason"),
        F.col(schemas.CUSTOMER_ID),
        F.col(schemas.EVENT_TIME).cast("string").alias(schemas.EVENT_TIME),
        F.col(schemas.EVENT_TYPE),
        F.col(schemas.ITEM),
        _raw_json(input_columns).alias("raw"),
        F.lit(run_date.isoformat()).alias(schemas.DT),
    )


def _day_gaps(packed: Column) -> Column:
    """Whole UTC days between each packed time and the one before it (0 for the first), as array<int>.

    Days are counted between calendar days (``floor(seconds / 86400)``), so an event at 23:59
    and one at 00:01 the next day are 1 day apart, two events on one day 0 days.
    """
    days = F.transform(packed, lambda x: F.floor(_seconds_of(x) / 86400))
    # each day minus the day before it: the array shifted right by one, its first day repeated
    previous = F.concat(F.slice(days, 1, 1), F.slice(days, 1, F.size(days) - 1))
    return F.zip_with(days, previous, lambda day, before: (day - before).cast("int"))


def build_sequences(
    timelines: DataFrame,
    *,
    cutoff: dt.date,
    max_len: int,
    no_action_id: int,
    action_texts: Sequence[str] | DataFrame,
    fill_empty_months: bool = True,
    with_amounts: bool = False,
) -> DataFrame:
    """Timelines → one sequence per customer with an event up to ``cutoff`` (inclusive).

    Every *complete* calendar month from the customer's first event month up to
    the cutoff with no event becomes one ``no action`` token (at the month's
    start). A month is complete once the cutoff is on or after its last day: the
    cutoff's own month counts only when the cutoff is its last day, so a run on
    the 1st does not end every sequence with ``no action`` for a month that has
    just begun (events in that month are kept). The rule is the same for both
    views. The most recent ``max_len`` actions are kept; ``full_len`` is the
    length before truncation. ``gaps`` holds, per kept token, the whole UTC days
    since the token before it (``no action`` tokens included, at their month's
    first day; 0 for the customer's first token), computed before truncation and
    cut with the tokens. Output: the ``sequences`` columns without
    ``dt``/``view``.

    ``action_texts`` is the text of every id, as a list or as a one-row DataFrame with
    an array column ``texts`` (:func:`action_texts_frame`, for vocabularies built from data,
    too large for a literal in the plan). ``fill_empty_months=False`` adds no ``no action``
    tokens (next-item data, where a month without an event means nothing). ``amounts`` holds each
    kept token's amount bucket when ``with_amounts`` (``sequences.amount`` is set: the buckets
    were packed by :func:`map_actions`), else zeros, without reading the timeline again.
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    bound = _packed_bound(cutoff + dt.timedelta(days=1))
    last_complete_month = month_index(cutoff + dt.timedelta(days=1)) - 1
    kept = F.filter(F.col(_PACKED), lambda x: x < F.lit(bound))

    def month_of(packed: Column) -> Column:
        # whole UTC days as a date: year/month of a date need no time-zone conversion (cheaper per element)
        day = F.date_from_unix_date(F.floor(_seconds_of(packed) / 86400).cast("int"))
        return F.year(day) * 12 + F.month(day) - 1

    months = F.array_distinct(F.transform("_kept", month_of))

    def month_token(m: Column) -> Column:
        start = F.make_date(F.floor(m / 12).cast("int"), (m % 12 + 1).cast("int"), F.lit(1))
        seconds = F.unix_seconds(start.cast("timestamp"))
        return F.shiftleft(seconds + F.lit(OFFSET), TIME_SHIFT).bitwiseOR(
            F.lit(no_action_id << AMOUNT_BITS).cast("bigint")
        )

    if isinstance(action_texts, DataFrame):
        timelines = timelines.crossJoin(F.broadcast(action_texts.select(F.col("texts").alias("_texts"))))
        texts = F.col("_texts")
    else:
        texts = F.array(*[F.lit(t) for t in action_texts])
    # sequence(a, b) counts down when a > b: a customer whose first month is the incomplete one
    # gets sequence(a, a) = [a], an event month, so no empty month
    every_month = F.sequence(F.array_min("_m"), F.greatest(F.array_min("_m"), F.lit(last_complete_month)))
    empty = F.array_except(every_month if fill_empty_months else F.col("_m"), F.col("_m"))
    staged = (
        timelines.select(schemas.CUSTOMER_ID, kept.alias("_kept"), *[c for c in ("_texts",) if c in timelines.columns])
        .where(F.size("_kept") > 0)
        .select("*", months.alias("_m"))
        .select("*", empty.alias("_empty"))
        .select("*", F.array_sort(F.concat("_kept", F.transform("_empty", month_token))).alias("_all"))
        .select("*", F.size("_all").alias("_n"), _day_gaps(F.col("_all")).alias("_gaps"))
        .select(
            "*",
            F.slice("_all", F.greatest(F.col("_n") - F.lit(max_len) + 1, F.lit(1)), max_len).alias("_last"),
            # gaps are taken before truncation: the first kept token keeps its gap to the one cut before it
            F.slice("_gaps", F.greatest(F.col("_n") - F.lit(max_len) + 1, F.lit(1)), max_len).alias(schemas.GAPS),
        )
        .select("*", F.transform("_last", lambda x: _action_of(x).cast("int")).alias("tokens"))
    )
    amounts = (
        F.transform("_last", lambda x: x.bitwiseAND(F.lit(AMOUNT_MASK)).cast("int"))
        if with_amounts
        else F.array_repeat(F.lit(0), F.size("tokens"))
    )

    def to_time(packed: Column) -> Column:
        return F.timestamp_seconds(_seconds_of(packed))

    return staged.select(
        schemas.CUSTOMER_ID,
        F.lit(cutoff.isoformat()).alias("cutoff"),
        F.col("tokens"),
        F.array_join(F.transform("tokens", lambda t: F.element_at(texts, t + 1)), ACTION_SEPARATOR).alias("text"),
        F.size("tokens").alias("seq_len"),
        F.col("_n").cast("int").alias("full_len"),
        F.size("_kept").alias("n_events"),
        F.size("_empty").alias("n_no_action"),
        to_time(F.element_at("_kept", 1)).alias("first_event_time"),
        to_time(F.element_at("_kept", -1)).alias("last_event_time"),
        F.col(schemas.GAPS),
        amounts.alias(schemas.AMOUNTS),
    )


def build_labels(
    timelines: DataFrame,
    *,
    cutoff: dt.date,
    windows: Sequence[Window],
    products: Sequence[tuple[str, int]],
) -> DataFrame:
    """One row per customer (with an event up to the cutoff), product and window: 1 if they bought it then.

    ``products`` are (name, buying action id). Labels use only events strictly
    after the cutoff, inside each window.
    """
    bound = _packed_bound(cutoff + dt.timedelta(days=1))
    cases = F.array(
        *[
            F.struct(
                F.lit(name).alias("product"),
                F.lit(w.name).alias("label_window"),
                F.lit(w.start.isoformat()).alias("window_start"),
                F.lit(w.end.isoformat()).alias("window_end"),
                F.lit(_packed_bound(w.start)).alias("lo"),
                F.lit(_packed_bound(w.end + dt.timedelta(days=1))).alias("hi"),
                F.lit(action_id).alias("action"),
            )
            for w in windows
            for name, action_id in products
        ]
    )
    customers = timelines.where(F.exists(_PACKED, lambda x: x < F.lit(bound)))
    # the events inside any window, once: each case then looks at these few, not the whole timeline
    lo = F.lit(min((_packed_bound(w.start) for w in windows), default=0))
    hi = F.lit(max((_packed_bound(w.end + dt.timedelta(days=1)) for w in windows), default=0))
    inside = customers.select(schemas.CUSTOMER_ID, F.filter(_PACKED, lambda x: (x >= lo) & (x < hi)).alias("_in"))

    def labelled(case: Column) -> Column:
        bought = F.exists(
            "_in",
            lambda x: (x >= case["lo"]) & (x < case["hi"]) & (_action_of(x) == case["action"]),
        )
        return F.struct(
            case["product"].alias("product"),
            case["label_window"].alias("label_window"),
            case["window_start"].alias("window_start"),
            case["window_end"].alias("window_end"),
            bought.cast("int").alias("label"),
        )

    # each customer's labels are computed on its row and exploded after: exploding the cases first
    # would copy the whole timeline into every (product, window) row
    exploded = inside.select(schemas.CUSTOMER_ID, F.explode(F.transform(cases, labelled)).alias("_l"))
    return exploded.select(schemas.CUSTOMER_ID, "_l.*")


# -- job -----------------------------------------------------------------------------
def run(
    spark: SparkSession,
    cfg: Config,
    *,
    run_date: dt.date,
    events_source: str | None = None,
    products: Sequence[str] = (),
) -> dict[str, object]:
    """Read events, write ``sequences`` (both views), ``labels``, ``rejects``; record counts in ``runs``."""
    from custembed.jobs.common import lake_from, record_run

    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.monotonic()
    lake = lake_from(spark, cfg)
    catalogue = load_catalogue(cfg.sequences.catalogue)
    source = events_source or cfg.sources.get("events")
    events = lake.read_events(source)
    validate_events(events, source or "raw_events")
    cutoff = resolve_cutoff(cfg.sequences, run_date)
    windows = label_windows(cfg.sequences.label_windows, cutoff, run_date)
    product_ids = [(p, catalogue.buy_action_id(p)) for p in products]
    log.info(
        "sequences: run date %s, cutoff %s, windows %s",
        run_date,
        cutoff,
        ", ".join(f"{w.name} {w.start}..{w.end}" for w in windows) or "none",
    )

    input_columns = events.columns
    day = run_date.isoformat()
    vocabulary = None
    action_texts: Sequence[str] | DataFrame = catalogue.id_to_text()
    if catalogue.needs_data:
        built = build_vocabulary(events, catalogue=catalogue, run_date=run_date, time_format=cfg.sequences.time_format)
        lake.write_partitions(built.withColumn(schemas.DT, F.lit(day)), "vocabulary")
        vocabulary = lake.read_partition("vocabulary", day)  # the stored ids, the ones every later step reads
        action_texts = action_texts_frame(spark, catalogue, vocabulary)
        log.info("sequences: vocabulary of %s written (min_count %d)", catalogue.name, catalogue.min_count)
    mapped = map_actions(
        events,
        catalogue=catalogue,
        run_date=run_date,
        time_format=cfg.sequences.time_format,
        vocabulary=vocabulary,
        amount=cfg.sequences.amount,
    )
    timelines = build_timelines(mapped, input_columns=input_columns).persist()
    try:
        # both views through the same function: one rule for which months get `no action`
        sequences_up_to = functools.partial(
            build_sequences,
            timelines,
            max_len=cfg.sequences.max_len,
            no_action_id=catalogue.no_action_id,
            action_texts=action_texts,
            fill_empty_months=cfg.sequences.fill_empty_months,
            with_amounts=bool(cfg.sequences.amount),
        )
        train_view = sequences_up_to(cutoff=cutoff).withColumn(schemas.VIEW, F.lit(schemas.VIEW_TRAIN))
        current_view = sequences_up_to(cutoff=run_date).withColumn(schemas.VIEW, F.lit(schemas.VIEW_CURRENT))
        sequences = train_view.unionByName(current_view)
        lake.write_partitions(sequences.withColumn(schemas.DT, F.lit(run_date.isoformat())), "sequences")
        log.info("sequences: wrote both views in %.1f s", time.monotonic() - t0)
        if windows and product_ids:
            labels = build_labels(timelines, cutoff=cutoff, windows=windows, products=product_ids)
            lake.write_partitions(labels.withColumn(schemas.DT, F.lit(run_date.isoformat())), "labels")
        rejects = rejected_rows(timelines, mapped, input_columns=input_columns, run_date=run_date)
        lake.write_partitions(rejects, "rejects")
        accepted = timelines.select(F.sum(F.size(_PACKED)).alias("n")).first()
    finally:
        timelines.unpersist()
    rows_accepted = int(accepted["n"] or 0) if accepted else 0
    rejects_written = lake.read_partition("rejects", run_date.isoformat())
    reason_counts = rejects_written.groupBy("reason").agg(F.count("*").alias("n")).collect()
    by_reason = {r["reason"]: int(r["n"]) for r in reason_counts}
    rows_read = events.count()
    rows_rejected = sum(by_reason.values())
    counts = (
        lake.read_partition("sequences", run_date.isoformat())
        .groupBy(schemas.VIEW)
        .agg(F.count("*").alias("n"))
        .collect()
    )
    details = {
        "cutoff": cutoff.isoformat(),
        "windows": [[w.name, w.start.isoformat(), w.end.isoformat()] for w in windows],
        "sequences": {r[schemas.VIEW]: int(r["n"]) for r in counts},
        "source": source or "raw_events",
        "catalogue": catalogue.name,
        **({"vocabulary": lake.read_partition("vocabulary", day).count()} if catalogue.needs_data else {}),
        "seconds": round(time.monotonic() - t0, 1),
    }
    summary: dict[str, object] = {
        "rows_read": rows_read,
        "rows_accepted": rows_accepted,
        "rows_rejected": rows_rejected,
        "rejected_by_reason": by_reason,
        **details,
    }
    ok = rows_read == rows_accepted + rows_rejected
    record_run(
        lake,
        job="sequences",
        run_date=run_date,
        started=started,
        status="succeeded" if ok else "failed",
        rows_read=rows_read,
        rows_accepted=rows_accepted,
        rows_rejected=rows_rejected,
        rejected_by_reason=by_reason,
        details=json.dumps(details),
    )
    if not ok:
        raise RuntimeError(
            f"sequences: counts do not add up: read {rows_read} != accepted {rows_accepted} + rejected {rows_rejected}"
        )
    log.info("sequences: read %d = accepted %d + rejected %d %s", rows_read, rows_accepted, rows_rejected, by_reason)
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", help="events: catalogue table, Parquet directory or CSV file (default: raw_events)")
    parser.add_argument(
        "--products", nargs="*", default=None, help="products to label (default: score.products from config)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    from custembed.jobs.common import job_main

    return job_main(
        "sequences",
        argv,
        add_arguments,
        lambda spark, cfg, args, run_date: run(
            spark,
            cfg,
            run_date=run_date,
            events_source=args.events,
            products=args.products if args.products is not None else cfg.score.products,
        ),
    )

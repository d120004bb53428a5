"""A synthetic raw-event lake with real signal, deterministic for a seed.

Customers are drawn per Spark partition by a vectorised numpy core
(``simulate``) in ``mapInPandas``: each customer's random stream is seeded by
(seed, customer index), so the lake is the same whatever the partitioning.

What a model can learn from it:
* segments with different product affinities and behaviour mixes;
* purchases of the signal products (about ``purchase_rate`` per product per
  quarter) preceded, with some probability, by consultations of the product
  (1-4 months before), loyalty points and store visits (1-3 months before),
  repairs of an ageing unit of the same product (3-12 months before), and for
  rentable products a rental with a service cycle every 4 months;
* seasonality (air conditioners in summer, heaters in winter, visits in
  November-December);
* background noise: most consultations, visits and points lead to nothing.

A share ``dirty_fraction`` of rows is made dirty, spread over every kind
step 1 rejects: null and blank customer ids, missing time, unknown event
type, unknown item, time after the run date, exact duplicates. (A timestamp
column cannot hold unparseable text; that kind is covered by CSV inputs.)
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from custembed import schemas
from custembed.catalogue import ActionCatalogue, load_catalogue
from custembed.config import Config, ConfigError, GenerateConfig

log = logging.getLogger(__name__)

N_SEGMENTS = 6
BEHAVIOUR_CODES = {  # behaviour -> raw event code written to the lake
    "receiving": "BENEFIT",
    "repairing": "REPAIR",
    "buying": "PURCHASE",
    "renting": "RENTAL",
    "using": "SERVICE",
    "consulting": "CONSULT",
    "visiting": "VISIT",
}
SUMMER = {"air_conditioner": 3.0, "dehumidifier": 2.0, "ceiling_fan": 2.0}
WINTER = {"heater": 3.0, "humidifier": 2.0, "boiler": 2.0}


@dataclass(frozen=True)
class Universe:
    """Plain arrays the numpy core needs: shipped to executors in the closure."""

    behaviours: tuple[str, ...]  # behaviour of each action index
    items: tuple[str, ...]  # item of each action index
    signal_products: tuple[str, ...]
    months: int
    first_month: int  # month index (year * 12 + month - 1) of the first month
    events_per_customer: float
    purchase_rate: float
    dirty_fraction: float
    seed: int
    run_date: dt.date


def _month_seconds(first_month: int, months: int) -> np.ndarray:
    """Epoch seconds of the start of each month, one more than ``months`` (the end bound)."""
    starts = [
        dt.datetime(m // 12, m % 12 + 1, 1, tzinfo=dt.timezone.utc)
        for m in range(first_month, first_month + months + 1)
    ]
    return np.array([int(s.timestamp()) for s in starts], dtype=np.int64)


def _segment_tables(u: Universe) -> tuple[np.ndarray, np.ndarray]:
    """Per segment: weights over actions (background) and hazard multipliers per signal product."""
    rng = np.random.default_rng([u.seed, 10_000_019])
    behaviours = np.array(u.behaviours)
    base = {
        "receiving": 3.0,
        "repairing": 1.0,
        "buying": 1.0,
        "renting": 0.4,
        "using": 2.0,
        "consulting": 1.5,
        "visiting": 2.5,
        "no action": 0.0,
    }
    weights = np.zeros((N_SEGMENTS, len(behaviours)))
    for s in range(N_SEGMENTS):
        mix = {b: w * rng.uniform(0.4, 1.8) for b, w in base.items()}
        for b, w in mix.items():
            idx = np.flatnonzero(behaviours == b)
            if len(idx):
                affinity = rng.dirichlet(np.full(len(idx), 0.3))
                weights[s, idx] = w * affinity
    weights /= weights.sum(axis=1, keepdims=True)
    multipliers = rng.gamma(1.2, 1.0, size=(N_SEGMENTS, len(u.signal_products)))
    multipliers /= multipliers.mean(axis=0, keepdims=True)
    return weights, multipliers


def _purchase_with_precursors(
    rng: np.random.Generator, product: str, t: int, action_index: dict[tuple[str, str], int]
) -> list[tuple[str, str, int]]:
    """(behaviour, item, month) of a purchase in month ``t`` and the events that, by chance, led to it."""
    extra: list[tuple[str, str, int]] = [("buying", product, t)]
    if rng.random() < 0.55:
        extra.append(("consulting", product, t - int(rng.integers(1, 5))))
    if rng.random() < 0.35:
        extra.append(("receiving", "loyalty_points", t - int(rng.integers(1, 3))))
    if rng.random() < 0.3:
        place = "brand_shop" if rng.random() < 0.6 else "online_store"
        extra.append(("visiting", place, t - int(rng.integers(1, 4))))
    if rng.random() < 0.3:
        for _ in range(int(rng.integers(1, 3))):
            extra.append(("repairing", product, t - int(rng.integers(3, 13))))
    if ("renting", product) in action_index and rng.random() < 0.3:
        r0 = t - int(rng.integers(6, 19))
        extra.append(("renting", product, r0))
        extra.extend(("using", "care_service", m) for m in range(r0 + 4, t, 4))
    return extra


def simulate(customer_index: np.ndarray, u: Universe) -> pd.DataFrame:
    """Events of the given customers (``customer_index`` int64) in the raw-event contract."""
    weights, multipliers = _segment_tables(u)
    month_secs = _month_seconds(u.first_month, u.months)
    action_index = {(b, i): k for k, (b, i) in enumerate(zip(u.behaviours, u.items, strict=True))}
    cal_month = (np.arange(u.months) + u.first_month) % 12 + 1  # 1..12
    visit_season = np.where(np.isin(cal_month, (11, 12)), 1.6, 1.0)
    rows_cust: list[np.ndarray] = []
    rows_month: list[np.ndarray] = []
    rows_action: list[np.ndarray] = []
    for cust in customer_index:
        rng = np.random.default_rng([u.seed, int(cust)])
        segment = int(rng.integers(N_SEGMENTS))
        start = int(rng.integers(0, max(1, (u.months * 2) // 3)))
        active = u.months - start
        activity = rng.gamma(2.0, u.events_per_customer / 2.0) * active / u.months
        n = int(rng.poisson(activity))
        month_w = visit_season[start:] / visit_season[start:].sum()
        months = start + rng.choice(active, size=n, p=month_w)
        acts = rng.choice(len(u.behaviours), size=n, p=weights[segment])
        cust_months = [months]
        cust_acts = [acts]
        # signal purchases and their precursors
        for p, product in enumerate(u.signal_products):
            season = np.ones(active)
            factor = SUMMER.get(product) or WINTER.get(product)
            if factor:
                peak = (6, 7, 8) if product in SUMMER else (11, 12, 1)
                season = np.where(np.isin(cal_month[start:], peak), factor, 1.0)
            hazard = u.purchase_rate / 3.0 * multipliers[segment, p] * season / season.mean()
            bought = np.flatnonzero(rng.random(active) < hazard) + start
            for t in bought:
                for behaviour, item, m in _purchase_with_precursors(rng, product, int(t), action_index):
                    if start <= m < u.months and (behaviour, item) in action_index:
                        cust_months.append(np.array([m]))
                        cust_acts.append(np.array([action_index[(behaviour, item)]]))
        all_months = np.concatenate(cust_months)
        rows_cust.append(np.full(len(all_months), cust, dtype=np.int64))
        rows_month.append(all_months)
        rows_action.append(np.concatenate(cust_acts))
    cust = np.concatenate(rows_cust) if rows_cust else np.zeros(0, np.int64)
    month = np.concatenate(rows_month) if rows_month else np.zeros(0, np.int64)
    action = np.concatenate(rows_action) if rows_action else np.zeros(0, np.int64)
    rng = np.random.default_rng([u.seed, 77, int(customer_index[0]) if len(customer_index) else 0])
    span = month_secs[month + 1] - month_secs[month]
    seconds = month_secs[month] + (rng.random(len(month)) * span).astype(np.int64)
    behaviour = np.array(u.behaviours, dtype=object)[action]
    item = np.array(u.items, dtype=object)[action]
    event_type = np.array([BEHAVIOUR_CODES.get(b, "UNKNOWN") for b in behaviour], dtype=object)
    receiving_points = (behaviour == "receiving") & (item == "loyalty_points")
    event_type[receiving_points] = "POINTS"
    channel = np.array(["store", "online", "call"], dtype=object)[rng.integers(0, 3, len(month))]
    amount = np.where(behaviour == "buying", np.round(rng.lognormal(6.5, 0.8, len(month)), 2), np.nan)
    events = pd.DataFrame(
        {
            schemas.CUSTOMER_ID: pd.Series([f"C{c:09d}" for c in cust], dtype=object),
            schemas.EVENT_TIME: pd.to_datetime(seconds, unit="s"),
            schemas.EVENT_TYPE: event_type,
            schemas.ITEM: pd.Series([str(i).upper() for i in item], dtype=object),
            "channel": channel,
            "amount": amount,
        }
    )
    return _dirty(events, u, rng)


def _dirty(events: pd.DataFrame, u: Universe, rng: np.random.Generator) -> pd.DataFrame:
    """Make ``dirty_fraction`` of the rows dirty, one kind in seven each."""
    n = len(events)
    k = int(rng.binomial(n, u.dirty_fraction)) if n else 0
    if k == 0:
        return events
    picks = rng.choice(n, size=k, replace=False)
    kinds = rng.integers(0, 7, size=k)
    events = events.copy()
    duplicates = []
    future = pd.Timestamp(u.run_date) + pd.Timedelta(days=30)
    for row, kind in zip(picks, kinds, strict=True):
        if kind == 0:
            events.at[row, schemas.CUSTOMER_ID] = None
        elif kind == 1:
            events.at[row, schemas.CUSTOMER_ID] = "  "
        elif kind == 2:
            events.at[row, schemas.EVENT_TIME] = pd.NaT
        elif kind == 3:
            events.at[row, schemas.EVENT_TYPE] = "LEGACY_CODE_17"
        elif kind == 4:
            events.at[row, schemas.ITEM] = "SKU_UNMAPPED_9931"
        elif kind == 5:
            events.at[row, schemas.EVENT_TIME] = future + pd.Timedelta(seconds=int(row))
        else:
            duplicates.append(row)
    if duplicates:
        events = pd.concat([events, events.iloc[duplicates]], ignore_index=True)
    return events


def universe(cfg: GenerateConfig, catalogue: ActionCatalogue, products: Sequence[str], run_date: dt.date) -> Universe:
    try:
        year, month = (int(x) for x in cfg.end_month.split("-"))
    except ValueError as e:
        raise ConfigError(f"generate.end_month: expected YYYY-MM, got {cfg.end_month!r}") from e
    end_index = year * 12 + month - 1
    if cfg.customers < 1 or cfg.months < 1:
        raise ConfigError("generate.customers and generate.months must be >= 1")
    actions = [a for a in catalogue.actions if a.item is not None]
    unknown = [p for p in products if ("buying", p) not in {(a.behaviour, a.item) for a in actions}]
    if unknown:
        raise ConfigError(f"score.products: {unknown[0]!r} is not a buying action of catalogue {catalogue.name}")
    return Universe(
        behaviours=tuple(a.behaviour for a in actions),
        items=tuple(str(a.item) for a in actions),
        signal_products=tuple(products),
        months=cfg.months,
        first_month=end_index - cfg.months + 1,
        events_per_customer=cfg.events_per_customer,
        purchase_rate=cfg.purchase_rate,
        dirty_fraction=cfg.dirty_fraction,
        seed=cfg.seed,
        run_date=run_date,
    )


def generate_events(spark, u: Universe, *, customers: int, partitions: int):  # type: ignore[no-untyped-def]
    """A DataFrame of raw events for customers ``0 .. customers-1`` (lazy; computed on executors)."""
    from pyspark.sql import DataFrame

    def batches(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for frame in frames:
            ids = frame["id"].to_numpy(dtype=np.int64)
            for lo in range(0, len(ids), 2000):
                yield simulate(ids[lo : lo + 2000], u)

    ids: DataFrame = spark.range(0, customers, numPartitions=partitions)
    return ids.mapInPandas(batches, schema=schemas.RAW_EVENTS)


def run(spark, cfg: Config, *, run_date: dt.date, output: str | None = None) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """Reads nothing; writes generated events to raw_events (or --output / sources.events: a table or directory)."""
    from custembed.jobs.common import lake_from

    lake = lake_from(spark, cfg)
    catalogue = load_catalogue(cfg.sequences.catalogue)
    u = universe(cfg.generate, catalogue, cfg.score.products, run_date)
    events = generate_events(spark, u, customers=cfg.generate.customers, partitions=cfg.generate.partitions)
    target = output or cfg.sources.get("events") or "raw_events"
    if "/" in target:
        lake.overwrite_path(events, target)
    else:
        lake.overwrite(events, target)
    written = lake.read_path(target) if "/" in target else lake.read(target)
    return {"events": written.count(), "customers": cfg.generate.customers, "written_to": target}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", help="table name or Parquet directory (default: sources.events or raw_events)")


def main(argv: Sequence[str] | None = None) -> int:
    from custembed.jobs.common import job_main

    return job_main(
        "generate",
        argv,
        add_arguments,
        lambda spark, cfg, args, run_date: run(spark, cfg, run_date=run_date, output=args.output),
    )

"""``custembed journeys-simulate``: simulated store visits → ``store_positions`` and ``store_scans``.

The embedded default of system B (no public in-store trajectory data with
purchases exists). Visits are simulated on the executors by the numpy core
``custembed.journeys.simulate`` in ``mapInPandas``: visit ``k`` of store ``s`` is
row ``s * visits + k`` of a Spark range and is determined by (seed, store, run
date, k), so the tables are the same whatever the partitioning. Both tables are
partitioned by (``dt``, ``store``): a rerun for a date replaces its stores' rows.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import time
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd

from custembed import schemas
from custembed.config import Config
from custembed.errors import InputError
from custembed.journeys.layout import StoreLayout, load_layout
from custembed.journeys.simulate import POSITION_COLUMNS, SimulationSettings, simulate_rows
from custembed.tables import STORE, VISIT_ID

log = logging.getLogger(__name__)

KIND = "kind"  # position or scan: both come out of one simulation pass
POSITION = "position"
SCAN = "scan"
BATCH_VISITS = 200  # visits simulated per pandas frame handed back to Spark
_COMBINED = (
    "kind string, store string, visit_id string, seq bigint, t timestamp, x double, y double, "
    "zone string, product string"
)


def _combined(positions: pd.DataFrame, scans: pd.DataFrame) -> pd.DataFrame:
    """Positions and scans in one frame of the ``_COMBINED`` schema."""
    positions = positions.assign(**{KIND: POSITION, "zone": None, "product": None})
    scans = scans.assign(**{KIND: SCAN, "seq": pd.Series(dtype="Int64"), "x": np.nan, "y": np.nan})
    columns = [KIND, *POSITION_COLUMNS, "zone", "product"]
    both = pd.concat([positions[columns], scans[columns]], ignore_index=True)
    both["seq"] = both["seq"].astype("Int64")
    return both


def simulate_visits(
    spark, layouts: Sequence[StoreLayout], settings: SimulationSettings, *, visits: int, partitions: int
):  # type: ignore[no-untyped-def]
    """Position and scan rows of ``visits`` visits to each layout, in one DataFrame (lazy; computed on executors).

    Output columns: ``kind`` (``position`` or ``scan``), ``store``, ``visit_id``, ``seq``, ``t``, ``x``,
    ``y`` (positions), ``zone``, ``product`` (scans).
    """
    layouts = tuple(layouts)  # plain frozen dataclasses: what the closure ships

    def batches(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for frame in frames:
            ids = frame["id"].to_numpy(dtype=np.int64)
            for lo in range(0, len(ids), BATCH_VISITS):
                chunk = ids[lo : lo + BATCH_VISITS]
                yield _combined(*simulate_rows(layouts, settings, chunk // visits, chunk % visits))

    ids = spark.range(0, visits * len(layouts), numPartitions=partitions)
    return ids.mapInPandas(batches, schema=_COMBINED)


def split_rows(combined, run_date: dt.date):  # type: ignore[no-untyped-def]
    """``(positions, scans)`` of the combined rows, each with ``dt``, in the registered columns."""
    from pyspark.sql import functions as F

    day = F.lit(run_date.isoformat()).alias(schemas.DT)
    positions = combined.where(F.col(KIND) == POSITION).select(VISIT_ID, "seq", "t", "x", "y", day, STORE)
    scans = combined.where(F.col(KIND) == SCAN).select(VISIT_ID, "t", "zone", "product", day, STORE)
    return positions, scans


def run(
    spark,  # type: ignore[no-untyped-def]
    cfg: Config,
    *,
    run_date: dt.date,
    stores: Sequence[str] | None = None,
    visits: int | None = None,
) -> dict[str, object]:
    """Reads the layouts; writes ``store_positions`` and ``store_scans`` for the run date; records the run."""
    from pyspark.sql import functions as F

    from custembed.jobs.common import lake_from, record_run

    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.monotonic()
    sim = cfg.journeys.simulate
    visits = sim.visits if visits is None else visits
    if visits < 1:
        raise InputError(f"--visits must be >= 1, got {visits}")
    layouts = [load_layout(store) for store in (stores or cfg.journeys.stores)]
    names = [layout.name for layout in layouts]
    if len(set(names)) != len(names):
        raise InputError(f"stores named twice: {names}")
    settings = SimulationSettings(sim.sample_hz, sim.noise_m, sim.dirty_fraction, sim.seed, run_date)
    log.info("journeys-simulate: %d visits to each of %s on %s", visits, ", ".join(names), run_date)
    lake = lake_from(spark, cfg)
    combined = simulate_visits(spark, layouts, settings, visits=visits, partitions=sim.partitions).persist()
    try:
        positions, scans = split_rows(combined, run_date)
        lake.write_partitions(positions, "store_positions")
        lake.write_partitions(scans, "store_scans")
    finally:
        combined.unpersist()
    written = {
        logical: {
            r[STORE]: int(r["n"])
            for r in lake.read_partition(logical, run_date.isoformat())
            .where(F.col(STORE).isin(names))
            .groupBy(STORE)
            .agg(F.count("*").alias("n"))
            .collect()
        }
        for logical in ("store_positions", "store_scans")
    }
    details = {
        "stores": names,
        "visits_per_store": visits,
        "positions": written["store_positions"],
        "scans": written["store_scans"],
        "seconds": round(time.monotonic() - t0, 1),
    }
    record_run(
        lake,
        job="journeys-simulate",
        run_date=run_date,
        started=started,
        status="succeeded",
        details=json.dumps(details),
    )
    log.info(
        "journeys-simulate: wrote %s positions, %s scans in %.1f s",
        written["store_positions"],
        written["store_scans"],
        details["seconds"],
    )
    return details


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--stores", help="comma-separated layouts (names in conf/stores/ or paths); default: journeys.stores"
    )
    parser.add_argument("--visits", type=int, help="visits per store (default: journeys.simulate.visits)")


def main(argv: Sequence[str] | None = None) -> int:
    from custembed.jobs.common import job_main

    return job_main(
        "journeys-simulate",
        argv,
        add_arguments,
        lambda spark, cfg, args, run_date: run(
            spark,
            cfg,
            run_date=run_date,
            stores=[s.strip() for s in args.stores.split(",") if s.strip()] if args.stores else None,
            visits=args.visits,
        ),
    )

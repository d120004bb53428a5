"""``custembed journeys-prepare``: store positions and till scans → one journey text per visit.

1. Rows that cannot be used go to ``journey_rejects`` with a reason (the first that
   applies, in :data:`REJECT_REASONS` order): no store or visit id, a store with no
   layout among ``journeys.stores``, no time or position, a position further than
   ``journeys.prepare.outside_margin_m`` beyond the walls, a time earlier than a
   sample before it in the visit (by ``seq``). Positions within the margin are
   sensor noise: they are moved onto the wall.
2. Positions → 50 cm cells → six-character location codes, in Spark built-ins
   (:func:`location_code`, the scheme of ``custembed.journeys.codes``).
3. Per visit, in a cogrouped pandas UDF over the visit's positions and till scans
   (the only Python step): pauses by DBSCAN, their zones, purchase markers and the
   text (``custembed.journeys.pauses``, ``custembed.journeys.text``).

Counts add up or the job fails: positions read = positions used (the journeys'
``n_positions``) + rejected. ``journeys`` is partitioned by (``dt``, ``store``),
``journey_rejects`` by ``dt``; a rerun for a date replaces them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import time
from collections.abc import Mapping, Sequence

import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import Window as SparkWindow
from pyspark.sql import functions as F

from custembed import schemas
from custembed.config import Config, JourneyPrepareConfig
from custembed.errors import InputError
from custembed.journeys.codes import CELL_BITS, QUARTERS, TOP_LETTERS
from custembed.journeys.layout import CELL_SIZE, StoreLayout, load_layout
from custembed.journeys.pauses import find_pauses, pause_zones, purchase_markers
from custembed.journeys.text import format_journey
from custembed.tables import STORE, VISIT_ID

log = logging.getLogger(__name__)

# reject reasons, in the order they are tested
MISSING_ID = "missing_id"
UNKNOWN_STORE = "unknown_store"
MISSING_POSITION = "missing_position"
OUTSIDE_STORE = "outside_store"
TIME_BACKWARDS = "time_backwards"
REJECT_REASONS = (MISSING_ID, UNKNOWN_STORE, MISSING_POSITION, OUTSIDE_STORE, TIME_BACKWARDS)

CODE = "code"
_REASON = "_reason"
_T_S = "_t_s"
_STORE_COLUMNS = "store string, _width double, _height double, _nx int, _ny int"
_JOURNEY_COLUMNS = (
    "store string, visit_id string, text string, n_positions int, n_pauses int, n_purchases int, "
    "n_scans int, start_time timestamp, duration_s double"
)
REQUIRED_POSITION_COLUMNS = (STORE, VISIT_ID, "t", "x", "y")
REQUIRED_SCAN_COLUMNS = (STORE, VISIT_ID, "zone")


# -- transforms ------------------------------------------------------------------------
def store_frame(spark: SparkSession, layouts: Sequence[StoreLayout]) -> DataFrame:
    """One row per layout: ``store``, ``_width``, ``_height``, ``_nx``, ``_ny`` (its grid)."""
    rows = [(layout.name, layout.width, layout.height, *layout.grid_shape) for layout in layouts]
    return spark.createDataFrame(rows, _STORE_COLUMNS)


def classify_positions(positions: DataFrame, stores: DataFrame, *, outside_margin_m: float) -> DataFrame:
    """Position rows with ``_reason`` (null: usable, else one of :data:`REJECT_REASONS`).

    Input: ``store``, ``visit_id``, ``t`` (timestamp), ``x``, ``y`` and optionally ``seq``
    (null or absent: rows are ordered by ``t``). Output: those columns (``visit_id``
    trimmed, ``seq`` added as null when absent; usable ``x``, ``y`` moved onto the walls when
    within the margin), ``_t_s`` (epoch seconds), the store's ``_width``, ``_height``,
    ``_nx``, ``_ny``, and ``_reason``.
    """
    if "seq" not in positions.columns:
        positions = positions.withColumn("seq", F.lit(None).cast("bigint"))
    rows = positions.select(
        F.col(STORE),
        F.trim(F.col(VISIT_ID).cast("string")).alias(VISIT_ID),
        F.col("seq").cast("bigint").alias("seq"),
        F.col("t").cast("timestamp").alias("t"),
        F.col("x").cast("double").alias("x"),
        F.col("y").cast("double").alias("y"),
    ).join(F.broadcast(stores), STORE, "left")
    m = F.lit(outside_margin_m)
    x, y = F.col("x"), F.col("y")
    reason = (
        F.when(F.col(STORE).isNull() | F.col(VISIT_ID).isNull() | (F.col(VISIT_ID) == ""), MISSING_ID)
        .when(F.col("_width").isNull(), UNKNOWN_STORE)
        .when(F.col("t").isNull() | x.isNull() | y.isNull() | F.isnan(x) | F.isnan(y), MISSING_POSITION)
        .when((x < -m) | (y < -m) | (x > F.col("_width") + m) | (y > F.col("_height") + m), OUTSIDE_STORE)
    )
    staged = rows.select("*", reason.alias(_REASON))
    usable = staged.where(F.col(_REASON).isNull())
    # a time before the latest earlier sample of the visit: the clock went back
    earlier = (
        SparkWindow.partitionBy(STORE, VISIT_ID).orderBy("seq", "t").rowsBetween(SparkWindow.unboundedPreceding, -1)
    )
    checked = usable.select(
        STORE,
        VISIT_ID,
        "seq",
        "t",
        F.least(F.greatest(x, F.lit(0.0)), F.col("_width")).alias("x"),
        F.least(F.greatest(y, F.lit(0.0)), F.col("_height")).alias("y"),
        "_width",
        "_height",
        "_nx",
        "_ny",
        F.when(F.col("t") < F.max("t").over(earlier), F.lit(TIME_BACKWARDS)).alias(_REASON),
    )
    return (
        staged.where(F.col(_REASON).isNotNull())
        .unionByName(checked)
        .withColumn(_T_S, F.unix_micros(F.col("t")) / F.lit(1e6))
    )


def reject_rows(classified: DataFrame, *, run_date: dt.date) -> DataFrame:
    """Rejected rows of :func:`classify_positions` in the ``journey_rejects`` columns."""
    return classified.where(F.col(_REASON).isNotNull()).select(
        F.col(_REASON).alias("reason"),
        STORE,
        VISIT_ID,
        "seq",
        "t",
        "x",
        "y",
        F.lit(run_date.isoformat()).alias(schemas.DT),
    )


def location_code(x: Column, y: Column, nx: Column, ny: Column) -> Column:
    """The six-character code of the 50 cm cell of (x, y) in Spark built-ins (``custembed.journeys.codes``).

    Cells are clipped to the store's grid (``nx`` × ``ny`` cells), as ``StoreLayout.cell_of`` does.
    """
    ix = F.least(F.greatest(F.floor(x / F.lit(CELL_SIZE)), F.lit(0)), nx - 1).cast("int")
    iy = F.least(F.greatest(F.floor(y / F.lit(CELL_SIZE)), F.lit(0)), ny - 1).cast("int")
    top_bits = CELL_BITS - 2
    letters = F.array(*[F.lit(c) for c in TOP_LETTERS])
    top = F.element_at(letters, F.shiftright(ix, top_bits) + F.shiftright(iy, top_bits) * 4 + 1)
    quarters = F.array(*[F.lit(c) for c in QUARTERS])
    levels = [
        F.element_at(
            quarters,
            F.shiftright(ix, bit).bitwiseAND(F.lit(1)) + F.shiftright(iy, bit).bitwiseAND(F.lit(1)) * 2 + 1,
        )
        for bit in range(top_bits - 1, -1, -1)
    ]
    return F.concat(top, *levels)


def with_codes(classified: DataFrame) -> DataFrame:
    """Usable rows of :func:`classify_positions` with their ``code``: ``store``, ``visit_id``, ``seq``, ``t``,
    ``_t_s``, ``x``, ``y``, ``code``."""
    return classified.where(F.col(_REASON).isNull()).select(
        STORE,
        VISIT_ID,
        "seq",
        "t",
        _T_S,
        "x",
        "y",
        location_code(F.col("x"), F.col("y"), F.col("_nx"), F.col("_ny")).alias(CODE),
    )


_PANDAS_TYPES = {"string": "object", "int": "int32", "double": "float64", "timestamp": "datetime64[ns]"}


def _empty_journeys() -> pd.DataFrame:
    """No journey, in the UDF's output types (an empty float column would not cast to a timestamp)."""
    columns = (part.split() for part in _JOURNEY_COLUMNS.split(", "))
    return pd.DataFrame({name: pd.Series(dtype=_PANDAS_TYPES[kind]) for name, kind in columns})


def build_journeys(
    coded: DataFrame, scans: DataFrame, *, layouts: Mapping[str, StoreLayout], params: JourneyPrepareConfig
) -> DataFrame:
    """One journey per visit: codes in time order with purchase markers (see ``custembed.journeys.pauses``).

    Input: :func:`with_codes` rows; ``scans`` with ``store``, ``visit_id``, ``zone``. Output:
    ``store``, ``visit_id``, ``text``, ``n_positions``, ``n_pauses``, ``n_purchases``, ``n_scans``,
    ``start_time``, ``duration_s``. One cogrouped pandas call per visit (the DBSCAN step).
    """
    layouts = dict(layouts)  # plain values for the closure
    eps_m, time_scale_s = params.eps_m, params.time_scale_s
    min_samples, min_duration_s, reach = params.min_samples, params.min_duration_s, params.pause_reach_m

    def per_visit(positions: pd.DataFrame, visit_scans: pd.DataFrame) -> pd.DataFrame:
        if positions.empty:  # scans of a visit with no usable position
            return _empty_journeys()
        positions = positions.sort_values(["seq", _T_S], kind="stable", na_position="last")
        t = positions[_T_S].to_numpy(dtype=float)
        x, y = positions["x"].to_numpy(dtype=float), positions["y"].to_numpy(dtype=float)
        layout = layouts[str(positions[STORE].iloc[0])]
        pauses = find_pauses(
            t, x, y, eps_m=eps_m, time_scale_s=time_scale_s, min_samples=min_samples, min_duration_s=min_duration_s
        )
        zones = pause_zones(pauses, layout, reach)
        scan_zones = [str(z) for z in visit_scans["zone"] if isinstance(z, str)]
        markers = purchase_markers(pauses, zones, scan_zones)
        text = format_journey(positions[CODE].tolist(), markers)
        return pd.DataFrame(
            {
                STORE: [layout.name],
                VISIT_ID: [positions[VISIT_ID].iloc[0]],
                "text": [text],
                "n_positions": [len(positions)],
                "n_pauses": [len(pauses)],
                "n_purchases": [sum(len(z) for z in markers.values())],
                "n_scans": [len(visit_scans)],
                "start_time": [positions["t"].min()],
                "duration_s": [float(t.max() - t.min())],
            }
        )

    keys = [STORE, VISIT_ID]
    visit_scans = scans.select(STORE, F.trim(F.col(VISIT_ID).cast("string")).alias(VISIT_ID), "zone")
    return coded.groupBy(*keys).cogroup(visit_scans.groupBy(*keys)).applyInPandas(per_visit, schema=_JOURNEY_COLUMNS)


# -- job ---------------------------------------------------------------------------------
def _read_input(lake, logical: str, source: str | None, run_date: dt.date, required: Sequence[str]) -> DataFrame:  # type: ignore[no-untyped-def]
    """The run date's partition of a registered table, or a whole table/Parquet path the user names."""
    if source and "/" in source:
        rows = lake.read_path(source, what=f"{logical} path")
    elif source:
        rows = lake.spark.table(source if "." in source else lake.table(source))
    else:
        rows = lake.read_partition(logical, run_date.isoformat())
    missing = [c for c in required if c not in rows.columns]
    if missing:
        raise InputError(f"{logical} {source or ''}: missing column '{missing[0]}' (has: {', '.join(rows.columns)})")
    return rows


def _counts(journeys: DataFrame, rejects: DataFrame) -> tuple[int, dict[str, int], dict[str, int]]:
    """(positions used, rejected rows by reason, journeys by store) of what was written."""
    used = journeys.groupBy(STORE).agg(F.count("*").alias("n"), F.sum("n_positions").alias("used")).collect()
    by_reason = {r["reason"]: int(r["n"]) for r in rejects.groupBy("reason").agg(F.count("*").alias("n")).collect()}
    return sum(int(r["used"] or 0) for r in used), by_reason, {r[STORE]: int(r["n"]) for r in used}


def run(
    spark: SparkSession,
    cfg: Config,
    *,
    run_date: dt.date,
    positions_source: str | None = None,
    scans_source: str | None = None,
) -> dict[str, object]:
    """Reads ``store_positions`` and ``store_scans`` of the run date; writes ``journeys`` and ``journey_rejects``."""
    from custembed.jobs.common import lake_from, record_run

    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.monotonic()
    lake = lake_from(spark, cfg)
    layouts = {layout.name: layout for layout in (load_layout(s) for s in cfg.journeys.stores)}
    positions_source = positions_source or cfg.sources.get("store_positions")
    scans_source = scans_source or cfg.sources.get("store_scans")
    positions = _read_input(lake, "store_positions", positions_source, run_date, REQUIRED_POSITION_COLUMNS)
    scans = _read_input(lake, "store_scans", scans_source, run_date, REQUIRED_SCAN_COLUMNS)
    log.info("journeys-prepare: run date %s, stores %s", run_date, ", ".join(layouts))
    classified = classify_positions(
        positions, store_frame(spark, list(layouts.values())), outside_margin_m=cfg.journeys.prepare.outside_margin_m
    ).persist()
    try:
        lake.write_partitions(reject_rows(classified, run_date=run_date), "journey_rejects")
        journeys = build_journeys(
            with_codes(classified), scans, layouts=layouts, params=cfg.journeys.prepare
        ).withColumn(schemas.DT, F.lit(run_date.isoformat()))
        journeys = journeys.persist()
        try:
            lake.write_partitions(journeys, "journeys")
            rows_used, by_reason, by_store = _counts(
                journeys, lake.read_partition("journey_rejects", run_date.isoformat())
            )
        finally:
            journeys.unpersist()
        rows_read = classified.count()
    finally:
        classified.unpersist()
    rows_rejected = sum(by_reason.values())
    details = {
        "journeys": by_store,
        "positions_source": positions_source or "store_positions",
        "seconds": round(time.monotonic() - t0, 1),
    }
    ok = rows_read == rows_used + rows_rejected
    record_run(
        lake,
        job="journeys-prepare",
        run_date=run_date,
        started=started,
        status="succeeded" if ok else "failed",
        rows_read=rows_read,
        rows_accepted=rows_used,
        rows_rejected=rows_rejected,
        rejected_by_reason=by_reason,
        details=json.dumps(details),
    )
    if not ok:
        raise RuntimeError(
            f"journeys-prepare: counts do not add up: read {rows_read} != used {rows_used} + rejected {rows_rejected}"
        )
    log.info("journeys-prepare: read %d = used %d + rejected %d %s", rows_read, rows_used, rows_rejected, by_reason)
    return {
        "rows_read": rows_read,
        "rows_used": rows_used,
        "rows_rejected": rows_rejected,
        "rejected_by_reason": by_reason,
        **details,
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--positions", help="positions: table or Parquet path (default: store_positions of the date)")
    parser.add_argument("--scans", help="till scans: table or Parquet path (default: store_scans of the date)")


def main(argv: Sequence[str] | None = None) -> int:
    from custembed.jobs.common import job_main

    return job_main(
        "journeys-prepare",
        argv,
        add_arguments,
        lambda spark, cfg, args, run_date: run(
            spark, cfg, run_date=run_date, positions_source=args.positions, scans_source=args.scans
        ),
    )

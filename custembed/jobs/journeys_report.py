"""``custembed journeys-report``: the in-store journeys page (JS table, path rates, transfer curve, heat maps).

Reads ``journey_metrics`` and the cell counts of ``generated_journeys`` and of the held-out
journeys (Spark groupBy counts: one row per (store, model, cell)); the cells are decoded to
the layout's grid on the driver (``custembed.journeys.codes.decode``) for the heat maps.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from custembed.config import Config
from custembed.jobs import journeys_frames as frames

log = logging.getLogger(__name__)


def grid_counts(cells: Mapping[str, int], layout: Any) -> np.ndarray:
    """Positions per cell as a ``[ny, nx]`` array of the layout's grid (row = y from the south wall,
    column = x from the west wall), NaN where a shelf stands and nothing was placed (the figure
    draws those cells as shelves); codes that do not decode are left out."""
    from custembed.journeys.codes import decode
    from custembed.journeys.layout import CELL_SIZE

    cols, rows = layout.grid_shape  # (nx, ny)
    grid = np.zeros((rows, cols))
    for code, count in cells.items():
        try:
            x, y = decode(np.asarray([code]), layout)
        except ValueError:
            continue
        r, c = int(float(np.asarray(y)[0]) // CELL_SIZE), int(float(np.asarray(x)[0]) // CELL_SIZE)
        if 0 <= r < rows and 0 <= c < cols:
            grid[r, c] += count
    shelves = ~layout.free_cells().T  # [ny, nx]
    grid[shelves & (grid == 0)] = np.nan
    return grid


def heatmaps(spark: SparkSession, cfg: Config, day: str) -> dict[tuple[str, str], np.ndarray]:
    """(store, model) → cell grid, ``model = "real"`` for the held-out visits; transfer models left out."""
    from custembed.jobs.common import lake_from
    from custembed.jobs.journeys_common import test_journeys
    from custembed.jobs.journeys_transfer import FINETUNED, SCRATCH, SOURCE
    from custembed.journeys.layout import load_layout

    lake = lake_from(spark, cfg)
    generated = lake.read_partition("generated_journeys", day).where(
        (F.col("train_fraction") == 1.0)
        & ~F.col(frames.MODEL).endswith(f"-{FINETUNED}")
        & ~F.col(frames.MODEL).endswith(f"-{SCRATCH}")
        & ~F.col(frames.MODEL).endswith(f"-{SOURCE}")
    )
    real = test_journeys(lake, cfg.journeys.holdout, day=day).select(
        frames.STORE, F.lit("real").alias(frames.MODEL), frames.TEXT
    )
    both = generated.select(frames.STORE, frames.MODEL, frames.TEXT).unionByName(real)
    histogram = frames.token_histogram(both, keys=(frames.STORE, frames.MODEL), purchases=False)
    cells: dict[tuple[str, str], dict[str, int]] = {}
    for row in histogram.toLocalIterator():
        cells.setdefault((row[frames.STORE], row[frames.MODEL]), {})[row["category"]] = int(row["count"])
    layouts = {store: load_layout(store) for store in {store for store, _ in cells}}
    return {key: grid_counts(counts, layouts[key[0]]) for key, counts in cells.items()}


def run(spark: SparkSession, cfg: Config, *, run_date: dt.date, output: str | None = None) -> dict[str, Any]:
    """Write the journeys page for ``run_date``; returns its URI."""
    from custembed import lakefs, schemas
    from custembed.jobs.common import lake_from
    from custembed.report.journeys import HEADING, journeys_section
    from custembed.report.markup import render_page

    lake = lake_from(spark, cfg)
    day = run_date.isoformat()
    metrics = lake.read_partition("journey_metrics", day).drop(schemas.DT).toPandas()
    try:
        maps = heatmaps(spark, cfg, day)
    except (ImportError, ValueError) as e:
        log.warning("journeys-report: no heat maps (%s)", e)
        maps = {}
    page = render_page(
        title="custembed: in-store customer journeys",
        run_date=day,
        generated_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        nav=[("journeys", HEADING)],
        sections=[journeys_section(metrics, maps)],
    )
    target = output or lake.path("reports", f"journeys-{day}.html")
    lakefs.makedirs(lakefs.parent(target))
    lakefs.write_text(target, page)
    return {"report": target}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output", default=None, help="HTML file to write (default: <lake>/reports/journeys-<date>.html)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    from custembed.jobs.common import job_main

    def go(spark: SparkSession, cfg: Config, args: argparse.Namespace, run_date: dt.date) -> dict[str, Any]:
        return run(spark, cfg, run_date=run_date, output=args.output)

    return job_main("journeys-report", argv, add_arguments, go)

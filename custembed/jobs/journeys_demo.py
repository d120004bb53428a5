"""``custembed journeys-demo``: system B end to end on the embedded default, in one local Spark session.

simulate (two stores) → prepare (journey text) → train GPT-2, LSTM and the Markov chain on
each store → generate from the held-out visits' first 7 points → evaluate → transfer
(store A's GPT-2 fine-tuned on 1/1, 1/10, 1/100 of store B vs scratch) → the journeys
report; prints the JS table, the shelf-crossing rates, the transfer curve and the time of
each step. Small budgets come from ``conf/journeys_demo.yaml``. ``journeys-simulate`` and
``journeys-prepare`` (the data side) are called by module name.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import logging
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from pyspark.sql import SparkSession

from custembed.config import Config

log = logging.getLogger(__name__)

DEMO_CONF = "journeys_demo.yaml"
DATA_STEPS = ("journeys_simulate", "journeys_prepare")  # custembed.jobs.<module>.run(spark, cfg, run_date=...)


def run(
    spark: SparkSession, cfg: Config, *, run_date: dt.date, encoders: Sequence[str], stores: Sequence[str]
) -> dict[str, Any]:
    from custembed.jobs import journeys_evaluate, journeys_generate, journeys_report, journeys_transfer, train

    timings: dict[str, float] = {}
    t_all = time.monotonic()

    def step(name: str, fn: Callable[[], Any]) -> Any:
        print(f"== {name}", flush=True)
        t0 = time.monotonic()
        result = fn()
        timings[name] = round(time.monotonic() - t0, 1)
        print(f"   {name}: {timings[name]} s", flush=True)
        return result

    for module in DATA_STEPS:
        job = importlib.import_module(f"custembed.jobs.{module}")
        step(module.replace("_", "-"), lambda job=job: job.run(spark, cfg, run_date=run_date))
    for store in stores:
        for name in encoders:
            step(
                f"train {name} {store}",
                lambda n=name, s=store: train.run(spark, cfg, run_date=run_date, encoder_name=n, store=s),
            )
    step("generate", lambda: journeys_generate.run(spark, cfg, run_date=run_date, models=encoders))
    evaluation = step("evaluate", lambda: journeys_evaluate.run(spark, cfg, run_date=run_date))
    transfer = step("transfer", lambda: journeys_transfer.run(spark, cfg, run_date=run_date))
    report = step("report", lambda: journeys_report.run(spark, cfg, run_date=run_date))
    metrics = evaluation["metrics"]
    return {
        "run_date": run_date.isoformat(),
        "table": "\n" + summary_table(metrics),
        "js (bits)": {k: {m: v for m, v in ms.items() if m.startswith("js_")} for k, ms in metrics.items()},
        "shelf_crossing_rate": {k: ms.get("shelf_crossing_rate") for k, ms in metrics.items()},
        "out_of_store_rate": {k: ms.get("out_of_store_rate") for k, ms in metrics.items()},
        "transfer": transfer.get("curve", {}),
        "protocol": evaluation["protocol"],
        "timings_s": {**timings, "total": round(time.monotonic() - t_all, 1)},
        "report": report["report"],
    }


COLUMNS = ("js_cells", "js_purchase_zones", "js_length", "shelf_crossing_rate", "out_of_store_rate")


def summary_table(metrics: dict[str, dict[str, float]]) -> str:
    """The evaluation as aligned text: one line per model@store, one column per metric."""
    width = max([len("model@store"), *(len(k) for k in metrics)])
    lines = ["  " + "model@store".ljust(width) + "".join(f"{c:>21}" for c in COLUMNS)]
    for key in sorted(metrics):
        values = "".join(
            f"{metrics[key][c]:>21.5f}" if metrics[key].get(c) is not None else f"{'-':>21}" for c in COLUMNS
        )
        lines.append("  " + key.ljust(width) + values)
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--encoders",
        nargs="+",
        default=["journeys-gpt2", "journeys-lstm", "journeys-markov"],
        help="models to train on each store (names under train.encoders)",
    )
    parser.add_argument("--stores", nargs="+", default=["store_a", "store_b"], help="stores to train and evaluate on")


def main(argv: Sequence[str] | None = None) -> int:
    from custembed.jobs.common import job_main

    args = list(argv) if argv is not None else sys.argv[1:]
    if "--conf" not in args:
        args = ["--conf", DEMO_CONF, *args]
    return job_main(
        "journeys-demo",
        args,
        add_arguments,
        lambda spark, cfg, ns, run_date: run(spark, cfg, run_date=run_date, encoders=ns.encoders, stores=ns.stores),
    )

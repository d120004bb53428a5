"""``custembed demo``: the whole pipeline on the embedded default, in one local Spark session.

generate (or, with ``demo.input`` set as in ``conf/retail.yaml``, ingest a public file)
→ sequences → train BERT4Rec, CoLES and the fine-tuned LM (small budgets,
``conf/demo.yaml``) → embed (the encoders and the counts baseline) → score (with the
linear-probe and k-NN probes and the +counts hybrids) → segment (k-means on the first
encoder's embeddings) → report; prints the model
comparison and where the tables and the report are.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any

from pyspark.sql import SparkSession

from custembed import tables
from custembed.config import Config

log = logging.getLogger(__name__)

DEMO_CONF = "demo.yaml"


def run(spark: SparkSession, cfg: Config, *, run_date: dt.date, encoders: Sequence[str]) -> dict[str, Any]:
    """Writes every table of the pipeline from a generated lake, trains ``encoders`` and writes the report."""
    from custembed.jobs import embed, generate, ingest, report, score, segment, sequences, train

    timings: dict[str, float] = {}
    t_all = time.monotonic()

    def step(name: str, fn: Any) -> Any:
        print(f"== {name}", flush=True)
        t0 = time.monotonic()
        result = fn()
        timings[name] = round(time.monotonic() - t0, 1)
        print(f"   {name}: {timings[name]} s", flush=True)
        return result

    if cfg.demo.input is None:
        step("generate", lambda: generate.run(spark, cfg, run_date=run_date))
    else:
        source = cfg.demo.input
        step(
            f"ingest {cfg.demo.format}",
            lambda: ingest.run(spark, cfg, fmt=cfg.demo.format, input_path=source, run_date=run_date),
        )
    step_summary = step("sequences", lambda: sequences.run(spark, cfg, run_date=run_date, products=cfg.score.products))
    trained = {}
    for name in encoders:
        trained[name] = step(f"train {name}", lambda n=name: train.run(spark, cfg, run_date=run_date, encoder_name=n))
    for source in [*encoders, embed.BASELINE]:
        step(f"embed {source}", lambda s=source: embed.run(spark, cfg, run_date=run_date, source=s))
    step("score", lambda: score.run(spark, cfg, run_date=run_date))
    segmented = encoders[0] if encoders else embed.BASELINE  # marketing segments of the first learned source
    segments = step(f"segment {segmented}", lambda: segment.run(spark, cfg, run_date=run_date, source=segmented))
    report_summary = step("report", lambda: report.run(spark, cfg, run_date=run_date))
    total = round(time.monotonic() - t_all, 1)
    return {
        "run_date": run_date.isoformat(),
        "rows": {k: step_summary[k] for k in ("rows_read", "rows_accepted", "rows_rejected")},
        "rejected_by_reason": step_summary["rejected_by_reason"],
        "validation": {
            n: {k: v for k, v in t.items() if k.startswith(("val_", "hr", "ndcg", "no_action"))}
            for n, t in trained.items()
        },
        "ranking_protocol": ranking_protocol(),
        "segments": {"source": segmented, "k": segments["k"], "profiles": segments["profiles"]},
        "timings_s": {**timings, "total": total},
        "tables": f"database `{cfg.project.database}` in {tables.warehouse_dir(cfg.project.lake_dir)} "
        f'(try: custembed sql "show tables")',
        "report": report_summary["report"],
    }


def ranking_protocol() -> str:
    """How the validation HR@10 / NDCG@10 of the summary are measured (named next to them)."""
    from custembed.report.sections import RANKING_PROTOCOL

    return RANKING_PROTOCOL


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--encoders",
        nargs="+",
        default=None,
        help="encoders to train (names under train.encoders; default: demo.encoders)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    from custembed.jobs.common import job_main

    args = list(argv) if argv is not None else sys.argv[1:]
    if "--conf" not in args:
        args = ["--conf", DEMO_CONF, *args]
    return job_main(
        "demo",
        args,
        add_arguments,
        lambda spark, cfg, ns, run_date: run(spark, cfg, run_date=run_date, encoders=ns.encoders or cfg.demo.encoders),
    )

"""System B preparation throughput: positions/s (and per core) of ``custembed journeys-prepare``.

    python benchmarks/bench_journeys_prepare.py                     # 1000 visits per store, 2 cores
    python benchmarks/bench_journeys_prepare.py --visits 200 2000   # growth with size

For each size: ``journeys-simulate`` writes that many visits to each shipped store
(about 270 positions per visit at 1 Hz) into a scratch lake (timed too, as visits/s),
then ``journeys-prepare`` runs on them: rejects, cells and codes in Spark built-ins,
DBSCAN pauses, purchase matching and the text in a cogrouped pandas UDF per visit,
and the writes of ``journeys`` and ``journey_rejects`` (plus the count checks). Prints
the median of ``--repeat`` prepare runs after one warm-up run, and every run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from custembed.config import ProjectConfig, SparkConfig, load_config

RUN_DATE = dt.date(2024, 5, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visits", nargs="+", type=int, default=[1000], help="visits per store (default 1000)")
    parser.add_argument("--cores", type=int, default=2, help="Spark local[N]")
    parser.add_argument("--repeat", type=int, default=3, help="prepare runs per size; the median is reported")
    parser.add_argument("--workdir", default=None, help="scratch lake (default: a temp dir)")
    args = parser.parse_args(argv)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    logging.basicConfig(level=logging.WARNING)
    from custembed.jobs import journeys_prepare, journeys_simulate
    from custembed.spark import build_session

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_journeys_"))
    spark = build_session(
        SparkConfig(master=f"local[{args.cores}]", shuffle_partitions=2 * args.cores, ui=False),
        ProjectConfig(database="bench", lake_dir=str(work)),
    )
    spark.sparkContext.setLogLevel("ERROR")
    print(
        f"{'visits/store':>12} {'positions':>10} {'simulate s':>10} {'visits/s':>9} "
        f"{'prepare s':>9} {'positions/s':>12} {'per core':>9}  runs s"
    )
    warmed = False
    for visits in args.visits:
        cfg = load_config(
            None,
            [
                f"project.lake_dir={work}",
                "project.database=bench",
                f"journeys.simulate.visits={visits}",
                f"journeys.simulate.partitions={2 * args.cores}",
            ],
        )
        t0 = time.perf_counter()
        journeys_simulate.run(spark, cfg, run_date=RUN_DATE)
        simulate_s = time.perf_counter() - t0
        if not warmed:
            journeys_prepare.run(spark, cfg, run_date=RUN_DATE)  # class loading, Python workers, sklearn import
            warmed = True
        timings = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            summary = journeys_prepare.run(spark, cfg, run_date=RUN_DATE)
            timings.append(time.perf_counter() - t0)
        prepare_s = statistics.median(timings)
        positions = int(summary["rows_read"])  # type: ignore[call-overload]
        rate = positions / prepare_s
        print(
            f"{visits:>12,} {positions:>10,} {simulate_s:>10.1f} {2 * visits / simulate_s:>9,.0f} "
            f"{prepare_s:>9.1f} {rate:>12,.0f} {rate / args.cores:>9,.0f}  " + ", ".join(f"{t:.1f}" for t in timings)
        )
    spark.stop()
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Step 1 throughput: Spark (custembed's transform) vs DuckDB on the same Parquet, same run.

    python benchmarks/bench_sequences.py                      # 10 M events
    python benchmarks/bench_sequences.py --events 1e6 1e7 3e7 # growth with size

For each size: writes N raw events (about 80 per customer, the 309 actions of
conf/actions.yaml, 36 months) as Parquet with pyarrow, then times
* Spark: map codes to actions, find exact duplicates, build per-customer
  timelines, slice the train view (no-action month filling, truncation to
  200, token ids and text), write Parquet — ``custembed.jobs.sequences``;
* DuckDB: the same aggregation in SQL (join to the action table, DISTINCT
  rows, ordered lists of packed time/action values, month filling, truncation,
  text), written to Parquet;
and prints events/s for both and the ratio Spark / DuckDB (the median of ``--repeat``
runs each, after one Spark warm-up run; every run is printed). With several sizes it also
prints the per-event cost of the largest against the smallest, after subtracting a fixed
start-up cost estimated from the two smallest sizes (the intercept of time against events).

Beside the transform it times **the whole job users wait for**: ``custembed sequences`` as
a command (its own JVM, both views, labels, rejects, the count check and the ``runs`` row)
on a fresh lake, ``--job-repeat`` times (median reported). From Spark's event log of each
run it reports the bytes shuffled per event, the bytes spilled (memory and disk), failed
tasks and lost executors, and from the operating system the peak resident memory of the
largest process (the JVM). ``--job-only`` skips the transform and DuckDB (the 100 M run):

    python benchmarks/bench_sequences.py --events 1e8 --job-only --job-repeat 1 --conf conf/large.yaml
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from custembed.catalogue import load_catalogue
from custembed.jobs.generate import BEHAVIOUR_CODES

CUTOFF = dt.date(2023, 1, 31)
RUN_DATE = dt.date(2023, 7, 31)
MAX_LEN = 200


def write_events(path: Path, n_events: int, seed: int = 3) -> int:
    """N events over N/80 customers as Parquet files of 1 M rows; returns the customer count."""
    catalogue = load_catalogue("actions.yaml")
    actions = [a for a in catalogue.actions if a.item is not None]
    codes = np.array([BEHAVIOUR_CODES[a.behaviour] for a in actions], dtype=object)
    items = np.array([str(a.item).upper() for a in actions], dtype=object)
    customers = max(1, n_events // 80)
    start = int(dt.datetime(2020, 8, 1, tzinfo=dt.timezone.utc).timestamp())
    end = int(dt.datetime(2023, 7, 31, tzinfo=dt.timezone.utc).timestamp())
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    chunk = 1_000_000
    for part, lo in enumerate(range(0, n_events, chunk)):
        n = min(chunk, n_events - lo)
        cust = rng.integers(0, customers, n)
        act = rng.integers(0, len(actions), n)
        seconds = rng.integers(start, end, n)
        table = pa.table(
            {
                "customer_id": pa.array([f"C{c:09d}" for c in cust]),
                "event_time": pa.array(seconds * 1_000_000, pa.timestamp("us", tz="UTC")),
                "event_type": pa.array(codes[act]),
                "item": pa.array(items[act]),
                "channel": pa.array(np.array(["store", "online", "call"], dtype=object)[rng.integers(0, 3, n)]),
            }
        )
        pq.write_table(table, path / f"part-{part:05d}.parquet")
    return customers


def run_spark(spark, events_path: Path, out: Path) -> float:  # type: ignore[no-untyped-def]
    from custembed.jobs import sequences as seq

    catalogue = load_catalogue("actions.yaml")
    t0 = time.perf_counter()
    events = spark.read.parquet(str(events_path))
    mapped = seq.map_actions(events, catalogue=catalogue, run_date=RUN_DATE)
    timelines = seq.build_timelines(mapped, input_columns=events.columns)
    sequences = seq.build_sequences(
        timelines,
        cutoff=CUTOFF,
        max_len=MAX_LEN,
        no_action_id=catalogue.no_action_id,
        action_texts=catalogue.id_to_text(),
    )
    sequences.write.mode("overwrite").parquet(str(out))
    return time.perf_counter() - t0


def run_duckdb(events_path: Path, out: Path, threads: int) -> float:
    import duckdb

    catalogue = load_catalogue("actions.yaml")
    con = duckdb.connect()
    con.execute(f"SET threads = {threads}")
    con.execute("SET preserve_insertion_order = false")
    rows = [
        (
            BEHAVIOUR_CODES[a.behaviour] if a.behaviour != "receiving" or a.item != "loyalty_points" else "BENEFIT",
            str(a.item),
            a.id,
        )
        for a in catalogue.actions
        if a.item is not None
    ]
    con.execute("CREATE TABLE actions (code VARCHAR, item VARCHAR, action_id INTEGER)")
    con.executemany("INSERT INTO actions VALUES (?, ?, ?)", rows)
    texts = catalogue.id_to_text()
    con.execute("CREATE TABLE texts AS SELECT ?::VARCHAR[] AS t", [texts])
    cutoff_ts = f"TIMESTAMP '{CUTOFF + dt.timedelta(days=1)} 00:00:00'"
    cutoff_month = CUTOFF.year * 12 + CUTOFF.month - 1
    no_action = catalogue.no_action_id
    t0 = time.perf_counter()
    con.execute(
        f"""
        COPY (
          WITH ev AS (
            SELECT DISTINCT * FROM read_parquet('{events_path}/*.parquet')
          ), mapped AS (
            SELECT trim(e.customer_id) AS customer_id, e.event_time::TIMESTAMP AS ts, a.action_id
            FROM ev e JOIN actions a ON a.code = trim(e.event_type) AND a.item = lower(trim(e.item))
            WHERE e.customer_id IS NOT NULL AND trim(e.customer_id) <> '' AND e.event_time IS NOT NULL
              AND e.event_time::TIMESTAMP < {cutoff_ts}
          ), g AS (
            SELECT customer_id,
                   list_sort(list(epoch(ts)::BIGINT * 1048576 + action_id)) AS kept,
                   list_distinct(list(year(ts) * 12 + month(ts) - 1)) AS months
            FROM mapped GROUP BY customer_id
          ), filled AS (
            SELECT customer_id, kept,
                   list_sort(list_concat(kept, list_transform(
                       list_filter(range(list_min(months), {cutoff_month} + 1), lambda m: NOT list_contains(months, m)),
                       lambda m: epoch(make_date((m // 12)::BIGINT, (m % 12 + 1)::BIGINT, 1)::TIMESTAMP)::BIGINT
                                 * 1048576 + {no_action}))) AS all_
            FROM g
          ), cut AS (
            SELECT customer_id, len(kept) AS n_events, len(all_) AS full_len,
                   list_transform(list_slice(all_, greatest(len(all_) - {MAX_LEN} + 1, 1), len(all_)),
                                  lambda x: (x % 1048576)::INTEGER) AS tokens
            FROM filled
          )
          SELECT customer_id, tokens, array_to_string(list_transform(tokens, lambda t: texts.t[t + 1]), ' -> ') AS text,
                 len(tokens) AS seq_len, full_len, n_events
          FROM cut, texts
        ) TO '{out}' (FORMAT parquet)
        """
    )
    return time.perf_counter() - t0


def run_job(events_path: Path, lake: Path, conf: str | None) -> dict[str, float]:
    """``custembed sequences`` on ``events_path`` into a fresh ``lake``, in its own process.

    Returns the wall time, the event-log totals (shuffle written, spill, failed tasks,
    executors removed) and the peak RSS in bytes of the largest process of the run (the
    JVM), sampled from ``/proc`` every 0.5 s.
    """
    shutil.rmtree(lake, ignore_errors=True)
    events_log = lake / "_spark_events"
    events_log.mkdir(parents=True)
    command = [sys.executable, "-m", "custembed", "sequences", *(["--conf", conf] if conf else [])]
    settings = {
        "project.lake_dir": str(lake),
        "project.run_date": RUN_DATE.isoformat(),
        # merged into spark.conf: the event log gives the shuffle and spill totals
        "spark.conf": (
            f"{{spark.eventLog.enabled: 'true', spark.eventLog.compress: 'false', "
            f"spark.eventLog.dir: '{events_log.as_uri()}'}}"
        ),
    }
    for key, value in settings.items():
        command += ["--set", f"{key}={value}"]
    command += ["--events", str(events_path)]
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log_file:
        child = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, text=True, cwd=Path(__file__).resolve().parents[1]
        )
        peaks: dict[int, int] = {}
        while child.poll() is None:
            _sample_peaks(child.pid, peaks)
            time.sleep(0.5)
        wall = time.perf_counter() - t0
        log_file.seek(0)
        output = log_file.read()
    if child.returncode != 0:
        sys.stderr.write(output[-6000:])
        raise SystemExit(f"custembed sequences failed with rc {child.returncode}")
    figures = {"wall": wall, "peak_rss": float(max(peaks.values(), default=0)), **_event_log_totals(events_log)}
    for line in output.splitlines():
        if "sequences: read" in line or "sequences: wrote both views" in line:
            print(f"    {line.split(' - ')[-1].strip()}", flush=True)
    return figures


def _sample_peaks(root: int, peaks: dict[int, int]) -> None:
    """Record the peak resident memory (VmHWM, bytes) of ``root`` and every process below it."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        children = [c for c, p in parents.items() if p == pid]
        tree.update(children)
        frontier.extend(children)
    for pid in tree:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peaks[pid] = max(peaks.get(pid, 0), int(line.split()[1]) * 1024)


def _event_log_totals(directory: Path) -> dict[str, float]:
    """Totals over every task of the run's Spark event log."""
    totals = {"shuffle_bytes": 0.0, "memory_spilled": 0.0, "disk_spilled": 0.0, "failed_tasks": 0.0, "lost": 0.0}
    for path in directory.rglob("events_*"):  # Spark 4 writes a directory of rolling files per run
        with path.open() as lines:
            for line in lines:
                event = json.loads(line)
                kind = event.get("Event")
                if kind == "SparkListenerExecutorRemoved":
                    totals["lost"] += 1
                if kind != "SparkListenerTaskEnd":
                    continue
                if event.get("Task End Reason", {}).get("Reason") != "Success":
                    totals["failed_tasks"] += 1
                metrics = event.get("Task Metrics") or {}
                totals["shuffle_bytes"] += metrics.get("Shuffle Write Metrics", {}).get("Shuffle Bytes Written", 0)
                totals["memory_spilled"] += metrics.get("Memory Bytes Spilled", 0)
                totals["disk_spilled"] += metrics.get("Disk Bytes Spilled", 0)
    return totals


def report_jobs(n: int, runs: list[dict[str, float]]) -> float:
    """Print every run of the whole job and return the median wall time."""
    walls = [r["wall"] for r in runs]
    median = statistics.median(walls)
    last = runs[-1]
    print(
        f"  whole job at {n:,} events: {median:.1f} s median ({_seconds(walls)}), {n / median:,.0f} events/s; "
        f"shuffle written {last['shuffle_bytes'] / 2**20:,.0f} MiB ({last['shuffle_bytes'] / n:.1f} bytes/event), "
        f"spilled {last['memory_spilled'] / 2**20:,.0f} MiB in memory / {last['disk_spilled'] / 2**20:,.0f} MiB "
        f"on disk, {last['failed_tasks']:.0f} failed tasks, {last['lost']:.0f} executors lost; "
        f"peak RSS of the largest process {max(r['peak_rss'] for r in runs) / 2**30:.1f} GiB",
        flush=True,
    )
    return median


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", nargs="+", type=float, default=[1e7], help="event counts (default 1e7)")
    parser.add_argument("--cores", type=int, default=2, help="Spark local[N] and DuckDB threads")
    parser.add_argument("--shuffle-partitions", type=int, default=None, help="default: 8 per 10 M events")
    parser.add_argument("--repeat", type=int, default=3, help="runs per engine; the median is reported")
    parser.add_argument("--workdir", default=None, help="scratch directory (default: a temp dir)")
    parser.add_argument("--job-repeat", type=int, default=None, help="runs of the whole job (default: --repeat)")
    parser.add_argument("--job-only", action="store_true", help="time only the whole job (no transform, no DuckDB)")
    parser.add_argument("--conf", default=None, help="config file for the whole job (default: conf/base.yaml)")
    args = parser.parse_args(argv)
    job_repeat = args.repeat if args.job_repeat is None else args.job_repeat
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_sequences_"))
    spark = None if args.job_only else _transform_session(args.cores)
    if spark is not None:
        print(
            f"{'events':>12} {'customers':>10} {'spark s':>8} {'duckdb s':>9} {'spark ev/s':>12} "
            f"{'duckdb ev/s':>12} {'ratio':>6}"
        )
    results: list[tuple[int, float, float]] = []
    jobs: list[tuple[int, float, float]] = []
    for n_float in args.events:
        n = int(n_float)
        events = work / f"events_{n}"
        if not events.exists():
            print(f"writing {n:,} events to {events}", flush=True)
            customers = write_events(events, n)
        else:
            customers = max(1, n // 80)
        if spark is not None:
            results.append(measure_transform(spark, events, n, customers, work, args, warm_up=not results))
        if job_repeat > 0:
            runs = [run_job(events, work / f"lake_{n}", args.conf) for _ in range(job_repeat)]
            jobs.append((n, report_jobs(n, runs), runs[-1]["shuffle_bytes"] / n))
    print_jobs(jobs, results)
    print_growth(results)
    if spark is not None:
        spark.stop()
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def measure_transform(  # type: ignore[no-untyped-def]
    spark, events: Path, n: int, customers: int, work: Path, args, *, warm_up: bool
) -> tuple[int, float, float]:
    """The transform on Spark and on DuckDB, ``args.repeat`` runs each: (events, Spark median s, DuckDB median s)."""
    import duckdb

    partitions = args.shuffle_partitions or max(2, round(8 * n / 1e7))
    spark.conf.set("spark.sql.shuffle.partitions", str(partitions))
    if warm_up:
        run_spark(spark, events, work / "warmup")  # JIT and class loading once
    spark_runs = [run_spark(spark, events, work / f"spark_{n}") for _ in range(args.repeat)]
    duck_runs = [run_duckdb(events, work / f"duck_{n}.parquet", args.cores) for _ in range(args.repeat)]
    spark_s, duck_s = statistics.median(spark_runs), statistics.median(duck_runs)
    print(f"  runs at {n:,} events: spark {_seconds(spark_runs)} s, duckdb {_seconds(duck_runs)} s", flush=True)
    spark_rows = spark.read.parquet(str(work / f"spark_{n}")).count()
    duck_rows = duckdb.sql(f"select count(*) from '{work / f'duck_{n}.parquet'}'").fetchall()[0][0]
    if spark_rows != duck_rows:
        print(f"warning: spark wrote {spark_rows} sequences, duckdb {duck_rows}")
    print(
        f"{n:>12,} {customers:>10,} {spark_s:>8.1f} {duck_s:>9.1f} {n / spark_s:>12,.0f} "
        f"{n / duck_s:>12,.0f} {spark_s / duck_s:>6.2f}"
    )
    return n, spark_s, duck_s


def print_jobs(jobs: list[tuple[int, float, float]], results: list[tuple[int, float, float]]) -> None:
    """The whole job's table: (events, median s, shuffle bytes per event) beside the transform's median."""
    if not jobs:
        return
    print("\nwhole job (`custembed sequences`: both views, labels, rejects, runs), median s:")
    header = ("events", "job s", "job ev/s", "shuffle B/event", "transform s", "job/transform")
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, (12, 8, 10, 16, 12, 14), strict=True)))
    transform = {n: s for n, s, _ in results}
    for n, job_s, shuffle in jobs:
        t = transform.get(n)
        t_text, ratio = (f"{t:>12.1f}", f"{job_s / t:>14.2f}") if t else (f"{'-':>12}", f"{'-':>14}")
        print(f"{n:>12,} {job_s:>8.1f} {n / job_s:>10,.0f} {shuffle:>16.1f} {t_text} {ratio}")


def print_growth(results: list[tuple[int, float, float]]) -> None:
    """The transform's growth with size: per-event cost of the largest against the smallest, after a fixed cost."""
    if len(results) < 2:
        return
    (n0, s0, _), (n1, s1, _) = results[0], results[-1]
    print(f"spark time growth {n0:,} -> {n1:,} events: x{s1 / s0:.2f} for x{n1 / n0:.0f} data")
    # fixed start-up cost: the intercept of the line through the two smallest sizes
    (na, sa, _), (nb, sb, _) = results[0], results[1]
    fixed = max(0.0, sa - (sb - sa) / (nb - na) * na)
    per_small, per_large = (s0 - fixed) / n0, (s1 - fixed) / n1
    print(
        f"fixed cost {fixed:.1f} s; per-event cost {per_small * 1e9:.0f} ns at {n0:,}, "
        f"{per_large * 1e9:.0f} ns at {n1:,}: ratio {per_large / per_small:.2f}"
    )


def _transform_session(cores: int):  # type: ignore[no-untyped-def]
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master(f"local[{cores}]")
        .config("spark.driver.memory", "6g")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.adaptive.enabled", "true")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _seconds(runs: list[float]) -> str:
    return ", ".join(f"{r:.1f}" for r in runs)


if __name__ == "__main__":
    sys.exit(main())

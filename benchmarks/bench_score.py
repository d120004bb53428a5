"""Scoring with the model store vs broadcasting every model, in the same process.

    python benchmarks/bench_score.py
    python benchmarks/bench_score.py --customers 1000000 --train-rows 140000   # issue 10's size

Per-product classifiers (``score.classifier``: a 200-tree random forest by default) for
``--products`` products x ``--sources`` sources, fitted once with the job's
``fit_models`` (each Python worker writes its model to a store under a temporary lake),
then every customer x product x source row scored twice, each variant in a fresh
SparkSession (fresh Python workers, so their peak memory is their own):

* store (the job's path, ``jobs.score.apply_models``): rows repartitioned by model,
  each worker loads a model from the store once per run of its rows, one at a time;
  only the model paths are broadcast;
* broadcast (the peer, what the job did before): every model's bytes collected to the
  driver and broadcast to every worker, which unpickles each model it meets and keeps them.

Printed per variant, as soon as it is measured: rows/s, the median of 3 timed runs after one
warm-up run (all 3 shown; the warm-up starts the Python workers), the model bytes the driver
held, and the peak resident memory (VmHWM) of the driver's Python process and of the largest
Python worker. A variant that fails (the broadcast peer runs out of driver heap once the models
outgrow it: 16 forests on 140,000 rows, 748 MiB, at Spark's default 1 GiB) is reported as
failed with its error's first line, and the other still runs.

``--models DIR`` keeps the fitted models (and their manifest) in ``DIR`` and reuses them when
it already holds them: fitting 16 forests on 140,000 rows takes about 26 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

KEYS = ("source", "product", "classifier")


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def session(cores: int, driver_memory: str = "1g"):  # type: ignore[no-untyped-def]
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master(f"local[{cores}]")
        .config("spark.driver.memory", driver_memory)
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", str(cores * 4))
        .config("spark.python.worker.reuse", "true")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def worker_peak_mib(spark, cores: int) -> float:  # type: ignore[no-untyped-def]
    """The largest peak resident memory among the session's Python workers (reused workers report theirs)."""

    def probe(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for _ in frames:
            pass
        yield pd.DataFrame({"peak": [peak_rss_mib()]})

    rows = spark.range(cores * 8, numPartitions=cores * 8).mapInPandas(probe, "peak double").collect()
    return max(r["peak"] for r in rows)


def training_rows(spark, args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """Balanced training rows per (source, product): a weak linear signal in ``--dim`` dimensions."""
    from pyspark.sql import functions as F

    groups = spark.createDataFrame(
        [(f"s{s}", f"p{p}") for s in range(args.sources) for p in range(args.products)], "source string, product string"
    )
    base = spark.range(args.train_rows).select(F.col("id"), (F.rand(1) < 0.5).cast("int").alias("label"))
    vector = F.transform(
        F.sequence(F.lit(0), F.lit(args.dim - 1)),
        lambda i: F.randn(2) + F.when(i < 8, F.col("label") * 0.4).otherwise(0.0),
    )
    return base.crossJoin(groups).select(
        "source",
        "product",
        F.col("id").cast("string").alias("customer_id"),
        vector.cast("array<double>").alias("vector"),
        "label",
    )


def scoring_rows(spark, args: argparse.Namespace, classifier: str):  # type: ignore[no-untyped-def]
    from pyspark.sql import functions as F

    tasks = spark.createDataFrame(
        [(f"s{s}", f"p{p}", classifier) for s in range(args.sources) for p in range(args.products)],
        ", ".join(f"{k} string" for k in KEYS),
    )
    customers = spark.range(args.customers).select(
        F.col("id").cast("string").alias("customer_id"),
        F.transform(F.sequence(F.lit(0), F.lit(args.dim - 1)), lambda i: F.randn(3))
        .cast("array<double>")
        .alias("vector"),
    )
    return customers.crossJoin(F.broadcast(tasks)).cache()


def broadcast_scoring(rows, blobs: dict[tuple[str, ...], bytes]):  # type: ignore[no-untyped-def]
    """The peer: every model's bytes broadcast; each worker unpickles the models it meets and keeps them."""
    from custembed.udfs.classify import predict, stack

    shared = rows.sparkSession.sparkContext.broadcast(blobs)
    cache: dict[tuple[str, ...], Any] = {}

    def run(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for frame in frames:
            scores = np.full(len(frame), np.nan)
            keys = pd.Series(list(zip(*(frame[c] for c in KEYS), strict=True)), index=frame.index)
            for key in pd.unique(keys):
                if key not in cache:
                    cache[key] = pickle.loads(shared.value[key])
                at = np.flatnonzero((keys == key).to_numpy())
                scores[at] = predict(cache[key], stack(frame["vector"].iloc[at]))
            yield frame.drop(columns=["vector"]).assign(score=scores)

    schema = "customer_id string, source string, product string, classifier string, score double"
    return rows.mapInPandas(run, schema)


def timed_rates(scored, n: int, repeat: int = 3) -> list[float]:  # type: ignore[no-untyped-def]
    """rows/s of ``repeat`` timed runs, after one untimed warm-up run."""
    scored.write.mode("overwrite").format("noop").save()
    rates = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        scored.write.mode("overwrite").format("noop").save()
        rates.append(n / (time.perf_counter() - t0))
    return rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000, help="customers scored per (source, product)")
    parser.add_argument("--products", type=int, default=8)
    parser.add_argument("--sources", type=int, default=2)
    parser.add_argument("--dim", type=int, default=64, help="embedding size")
    parser.add_argument("--train-rows", type=int, default=20_000, help="balanced training rows per model")
    parser.add_argument("--classifier", default="random_forest")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--driver-memory", default="1g", help="the driver's JVM heap (Spark's default: 1g)")
    parser.add_argument("--models", help="directory to keep the fitted models in and reuse them from")
    args = parser.parse_args(argv)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

    models = args.products * args.sources
    n = args.customers * models
    results: dict[str, tuple[float, int, float, float] | str] = {}
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException

    with tempfile.TemporaryDirectory(prefix="bench_score_") as tmp:
        paths = fitted_models(args, Path(args.models) if args.models else Path(tmp, "models"))
        for variant in ("store", "broadcast"):
            spark = session(args.cores, args.driver_memory)
            try:
                results[variant] = score_variant(spark, variant, args, paths, n)
            except (Py4JJavaError, PySparkException) as e:  # the peer may fail (driver heap): report it
                first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                heap = "OutOfMemoryError" if "OutOfMemoryError" in str(e) else first[:160]
                results[variant] = heap
                print(f"{variant}: failed ({heap})", flush=True)
            finally:
                spark.stop()

    print(
        f"\nscoring {args.customers:,} customers x {args.products} products x {args.sources} sources = {n:,} rows, "
        f"{args.classifier} on {args.train_rows:,} rows, {args.cores} cores, driver heap {args.driver_memory}"
    )
    print(
        f"{'variant':<10} {'median rows/s':>13} {'driver-held model MiB':>22} "
        f"{'driver peak MiB':>16} {'worker peak MiB':>16}"
    )
    for variant, result in results.items():
        if isinstance(result, str):
            print(f"{variant:<10} failed: {result}")
            continue
        rate, held, driver, worker = result
        print(f"{variant:<10} {rate:>13,.0f} {held / 2**20:>22.1f} {driver:>16.0f} {worker:>16.0f}")
    store, peer = results["store"], results["broadcast"]
    if not isinstance(store, str) and not isinstance(peer, str):
        print(f"store/broadcast: rows/s {store[0] / peer[0]:.2f}x, worker peak {store[3] / peer[3]:.2f}x")
    return 0


def fitted_models(args: argparse.Namespace, store_dir: Path) -> dict[tuple[str, str, str], str]:
    """Fit every (source, product) model into ``store_dir`` with the job's ``fit_models``, or reuse
    the models a previous run of the same settings left there; returns their paths."""
    from custembed.jobs.score import fit_models, task_frame

    settings = {k: getattr(args, k) for k in ("products", "sources", "dim", "train_rows", "classifier")}
    store_dir.mkdir(parents=True, exist_ok=True)
    manifest_file = store_dir / "bench_manifest.json"
    if manifest_file.exists():
        saved = json.loads(manifest_file.read_text())
        if saved["settings"] == settings:
            print(f"reusing the {len(saved['models'])} models in {store_dir}", flush=True)
            return {tuple(m["key"]): m["path"] for m in saved["models"]}  # type: ignore[misc]
    spark = session(args.cores, args.driver_memory)
    tasks = [(f"s{s}", f"p{p}", args.classifier) for s in range(args.sources) for p in range(args.products)]
    t0 = time.perf_counter()
    manifest = fit_models(
        training_rows(spark, args),
        task_frame(spark, tasks),
        seed=0,
        class_weight=False,
        store=store_dir.as_uri(),
        day="bench",
    ).collect()
    fit_seconds = time.perf_counter() - t0
    spark.stop()
    sizes = [r["bytes"] for r in manifest]
    print(
        f"fitted {len(manifest)} {args.classifier} models on {args.train_rows:,} rows each in {fit_seconds:.0f} s;"
        f" stored {sum(sizes) / 2**20:.1f} MiB (largest {max(sizes) / 2**20:.1f} MiB)",
        flush=True,
    )
    models = [{"key": [r["source"], r["product"], r["classifier"]], "path": r["path"]} for r in manifest]
    manifest_file.write_text(json.dumps({"settings": settings, "models": models}))
    return {(r["source"], r["product"], r["classifier"]): r["path"] for r in manifest}


def score_variant(  # type: ignore[no-untyped-def]
    spark, variant: str, args: argparse.Namespace, paths: dict[tuple[str, str, str], str], n: int
) -> tuple[float, int, float, float]:
    """(median rows/s, model bytes the driver held, driver peak MiB, largest worker peak MiB) of one variant."""
    from custembed import lakefs
    from custembed.jobs.score import apply_models

    rows = scoring_rows(spark, args, args.classifier)
    rows.count()
    held = 0
    if variant == "store":
        scored = apply_models(rows, paths)
    else:
        blobs = {key: lakefs.open_input(path).read() for key, path in paths.items()}
        held = sum(len(b) for b in blobs.values())
        scored = broadcast_scoring(rows, blobs)
    rates = timed_rates(scored, n)
    rate = statistics.median(rates)
    result = (rate, held, peak_rss_mib(), worker_peak_mib(spark, args.cores))
    runs = ", ".join(f"{r:,.0f}" for r in rates)
    print(
        f"{variant}: median {rate:,.0f} rows/s of 3 runs ({runs}); driver held {held / 2**20:.1f} MiB of models, "
        f"driver peak {result[2]:.0f} MiB, largest worker peak {result[3]:.0f} MiB",
        flush=True,
    )
    return result


if __name__ == "__main__":
    sys.exit(main())

"""The nightly embed stage, incremental vs full, in the same process.

    python benchmarks/bench_nightly.py                        # 1,000,000 customers, 2 % changed
    python benchmarks/bench_nightly.py --customers 20000      # a quick look
    python benchmarks/bench_nightly.py --source bert4rec      # a small untrained BERT4Rec instead of counts

Two run dates of sequences (both views) for ``--customers`` customers, generated in Spark:
the second day appends one action to the sequences of ``--changed`` of them (the customers
with new events that day) and is otherwise the first day's. The first day is embedded once
(untimed); then the job ``custembed embed`` (``jobs.embed.run``: reads, fingerprints, embeds,
writes the partition, counts, records its ``runs`` row) embeds the second day:

* incremental (``embed.incremental: true``, the nightly default): unchanged customers'
  vectors copied from the first day, only the changed ones through the embedding UDF;
* full (the peer, ``embed.incremental: false``): every customer through the UDF.

Both write the same partition of the same table in turn. Printed per variant: seconds, the
median of 3 timed runs after one warm-up run of each (all 3 shown), then full / incremental.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DAY1, DAY2 = dt.date(2023, 7, 30), dt.date(2023, 7, 31)
DATABASE = "bench_nightly"


def sequences(spark: Any, *, customers: int, day: dt.date, changed: float) -> Any:
    """Both views of ``day`` for ``customers`` customers: 2 to 40 action ids each from the customer's id;
    on DAY2 a share ``changed`` of them (by a hash of the id) has one more action."""
    from pyspark.sql import functions as F

    from custembed import schemas

    ids = spark.range(customers)
    length = (F.abs(F.xxhash64("id")) % 39 + 2).cast("int")
    tokens = F.transform(F.sequence(F.lit(1), length), lambda i: (F.abs(F.xxhash64("id", i)) % 300 + 4).cast("int"))
    if day == DAY2:
        new_event = F.abs(F.xxhash64(F.lit("changed"), "id")) % 1_000_000 < int(changed * 1_000_000)
        tokens = F.when(new_event, F.concat(tokens, F.array(F.lit(5)))).otherwise(tokens)
    rows = ids.select(F.format_string("c%09d", "id").alias(schemas.CUSTOMER_ID), tokens.alias("tokens"))
    when = F.lit(dt.datetime(2023, 1, 1))
    views = F.explode(F.array(F.lit(schemas.VIEW_TRAIN), F.lit(schemas.VIEW_CURRENT))).alias(schemas.VIEW)
    return rows.select(
        schemas.CUSTOMER_ID,
        F.lit(day.isoformat()).alias("cutoff"),
        "tokens",
        F.concat_ws(" ", F.transform("tokens", lambda t: F.concat(F.lit("a"), t.cast("string")))).alias("text"),
        F.size("tokens").alias("seq_len"),
        F.size("tokens").alias("full_len"),
        F.size("tokens").alias("n_events"),
        F.lit(0).alias("n_no_action"),
        when.alias("first_event_time"),
        when.alias("last_event_time"),
        F.array_insert(F.array_repeat(F.lit(2), F.size("tokens") - 1), 1, F.lit(0)).alias(schemas.GAPS),
        F.array_repeat(F.lit(0), F.size("tokens")).alias(schemas.AMOUNTS),
        F.lit(day.isoformat()).alias(schemas.DT),
        views,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000, help="customers per view and run date")
    parser.add_argument("--changed", type=float, default=0.02, help="share of customers with new events on day 2")
    parser.add_argument("--source", choices=("counts", "bert4rec"), default="counts")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per variant")
    args = parser.parse_args(argv)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from custembed.config import load_config
    from custembed.jobs import embed
    from custembed.jobs.common import lake_from
    from custembed.spark import build_session, ensure_database

    with tempfile.TemporaryDirectory(prefix="bench_nightly_") as tmp:
        sets = [f"project.lake_dir={tmp}", f"project.database={DATABASE}", f"spark.master=local[{args.cores}]"]
        sets += [f"spark.shuffle_partitions={args.cores * 4}", f"embed.partitions={args.cores * 4}"]
        cfgs = {
            "incremental": load_config(None, [*sets, "embed.incremental=true"]),
            "full": load_config(None, [*sets, "embed.incremental=false"]),
        }
        cfg = cfgs["incremental"]
        spark = build_session(cfg.spark, cfg.project)
        spark.sparkContext.setLogLevel("ERROR")
        ensure_database(spark, DATABASE)
        lake = lake_from(spark, cfg)
        model_path = None
        if args.source == "bert4rec":
            from custembed.encoders import build_encoder

            model_path = str(Path(tmp, "bert4rec"))
            params = {"vocab_size": 312, "hidden_size": 64, "num_layers": 2, "num_heads": 2, "max_len": 64}
            build_encoder("bert4rec", **params).save(model_path)
        t0 = time.perf_counter()
        for day in (DAY1, DAY2):
            lake.write_partitions(
                sequences(spark, customers=args.customers, day=day, changed=args.changed), "sequences"
            )
        embed.run(spark, cfg, run_date=DAY1, source=args.source, model_path=model_path)
        print(f"setup: sequences of 2 days and the first day's embeddings in {time.perf_counter() - t0:.0f} s")

        seconds: dict[str, list[float]] = {name: [] for name in cfgs}
        last: dict[str, dict[str, Any]] = {}
        for timed in [False] + [True] * args.repeat:
            for name, variant in cfgs.items():
                t0 = time.perf_counter()
                last[name] = embed.run(spark, variant, run_date=DAY2, source=args.source, model_path=model_path)
                if timed:
                    seconds[name].append(time.perf_counter() - t0)
        spark.stop()

    print(
        f"\nembed stage ({args.source}), {args.customers:,} customers x 2 views, "
        f"{args.changed:.1%} with new events, {args.cores} cores"
    )
    print(f"{'variant':<12} {'median s':>9} {'carried over':>13} {'embedded':>10}  runs (s)")
    for name, runs in seconds.items():
        carried, embedded = sum(last[name]["carried_over"].values()), sum(last[name]["embedded"].values())
        shown = ", ".join(f"{s:.1f}" for s in runs)
        print(f"{name:<12} {statistics.median(runs):>9.1f} {carried:>13,} {embedded:>10,}  {shown}")
    ratio = statistics.median(seconds["full"]) / statistics.median(seconds["incremental"])
    print(f"full / incremental: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

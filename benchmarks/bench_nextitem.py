"""System C throughput: training sequences/s and ``rank`` candidates/s of the next-item models, per core.

    python benchmarks/bench_nextitem.py                              # Video Games, conf/nextitem.yaml sizes
    python benchmarks/bench_nextitem.py --data FILE --threads 1 2    # another user-item file

Data: a ``user item`` file in time order (``../shared/data/amazon_video_games.txt`` by
default), items numbered by frequency after the 3 special ids, each user's last two
items held out as ``holdout_last: 2`` does. Models: SASRec and BERT4Rec with the sizes
of ``conf/nextitem.yaml`` (hidden 64, 2 layers, max_len 50; BERT4Rec mask 0.4), plus
CPL4Rec when the encoder registry has it (its pre-training stage; behaviours: every
item is ``buying`` in this file). All in this one process, with ``--threads`` torch
threads each:

* **training**: AdamW steps of the encoder's own ``loss`` (its item head only at the
  labelled positions, full softmax) on batches of ``--batch`` sequences bucketed by
  length as ``length_buckets`` does; sequences/s, median of ``--repeat`` runs of
  ``--steps`` steps after a warm-up;
* **rank**: :func:`custembed.udfs.rank.candidate_scores` (the core ``custembed rank``
  runs in every Python worker) over ``--users`` users with 101 candidates each (the held
  -out item and 100 uniform negatives, the sampled protocol's shape); candidates/s.

Per core = figure / threads. No Spark: these are the cores the jobs run on executors.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "amazon_video_games.txt"
N_SPECIAL = 3
MODELS = {
    "sasrec": {"hidden_size": 64, "num_layers": 2, "num_heads": 1, "max_len": 50, "dropout": 0.5},
    "bert4rec": {
        "hidden_size": 64,
        "num_layers": 2,
        "num_heads": 2,
        "max_len": 50,
        "dropout": 0.1,
        "mask_prob": 0.4,
        "mask_last_prob": 0.1,
    },
}


def read_sequences(path: Path) -> tuple[list[list[int]], list[str]]:
    """Per-user id sequences (items by frequency after the special ids) and the items in id order."""
    users: dict[str, list[str]] = collections.defaultdict(list)
    with path.open() as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2:
                users[parts[0]].append(parts[1])
    counts = collections.Counter(item for items in users.values() for item in items)
    ids = {item: N_SPECIAL + i for i, (item, _) in enumerate(counts.most_common())}
    return [[ids[item] for item in items] for items in users.values()], list(ids)


def vocabulary_file(items: list[str], directory: Path) -> str:
    """The run vocabulary a cpl4rec encoder splits its ids by: every item bought (one behaviour here)."""
    import json

    path = directory / "vocabulary.json"
    actions = [["buying", item, f"buying {item}"] for item in items]
    path.write_text(json.dumps({"catalogue": "bench", "n_special": N_SPECIAL, "actions": actions}))
    return str(path)


def bucketed_batches(sequences: list[list[int]], batch: int, rng: np.random.Generator) -> list[list[list[int]]]:
    order = rng.permutation(len(sequences))
    window = batch * 20  # length_buckets: 20 batches sorted by length, then the batches shuffled
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: len(sequences[i]))
        batches.extend([sequences[i] for i in chunk[j : j + batch]] for j in range(0, len(chunk) - batch + 1, batch))
    rng.shuffle(batches)  # type: ignore[arg-type]
    return batches


def median_rate(runs: list[float], work: float) -> tuple[float, str]:
    return work / statistics.median(runs), ", ".join(f"{r:.2f}" for r in runs)


def bench_training(encoder: Any, batches: list[list[list[int]]], steps: int, repeat: int) -> tuple[float, str]:
    import torch

    optimizer = torch.optim.AdamW(encoder.model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    module = encoder.training_module()
    module.train()

    def step(i: int) -> None:  # every run takes the same batches: the same work
        rows = batches[i % len(batches)]
        loss = encoder.loss(encoder.mask(encoder.inputs(tokens=rows), generator), module)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for i in range(3):
        step(steps + i)
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for i in range(steps):
            step(i)
        runs.append(time.perf_counter() - t0)
    return median_rate(runs, steps * len(batches[0]))


def bench_rank(encoder: Any, histories: list[list[int]], vocab: int, repeat: int, batch: int) -> tuple[float, str]:
    import pandas as pd

    from custembed.udfs.rank import candidate_scores

    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        {
            "tokens": [h[:-1] for h in histories],
            "candidate_ids": [
                np.concatenate([[h[-1]], rng.integers(N_SPECIAL, vocab, 100)]).tolist() for h in histories
            ],
        }
    )
    encoder.model.eval()
    candidate_scores(encoder, frame.head(batch), batch)  # warm-up
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        candidate_scores(encoder, frame, batch)
        runs.append(time.perf_counter() - t0)
    return median_rate(runs, 101 * len(frame))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="user-item file (default: Video Games)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch threads (default: 1 2)")
    parser.add_argument("--batch", type=int, default=128, help="training batch (conf/nextitem.yaml: 128)")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per run")
    parser.add_argument("--users", type=int, default=2000, help="users ranked per run")
    parser.add_argument("--rank-batch", type=int, default=256, help="histories per forward (nextitem.batch_size)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs; the median is reported, all printed")
    args = parser.parse_args(argv)
    if not args.data.exists():
        raise SystemExit(f"no data file {args.data}: pass --data FILE (lines `user item`, in time order)")

    import torch

    from custembed.encoders import build_encoder
    from custembed.encoders.registry import ENCODERS

    sequences, items = read_sequences(args.data)
    vocab = N_SPECIAL + len(items)
    training = [s[:-2] for s in sequences if len(s) >= 4]  # holdout_last: 2
    histories = [s[:-1] for s in sequences if len(s) >= 3][: args.users]  # the validation target last
    print(
        f"{args.data.name}: {len(sequences):,} users, {vocab - N_SPECIAL:,} items, "
        f"{sum(map(len, sequences)):,} interactions; batch {args.batch}, max_len 50"
    )
    models = dict(MODELS)
    scratch = Path(tempfile.mkdtemp(prefix="bench_nextitem_"))
    if "cpl4rec" in ENCODERS:  # its pre-training stage, conf/cpl4rec.yaml's sizes
        models["cpl4rec"] = {
            "hidden_size": 64,
            "num_layers": 2,
            "num_heads": 2,
            "max_len": 50,
            "dropout": 0.1,
            "vocabulary_file": vocabulary_file(items, scratch),
        }
    head = ("model", "threads", "train seq/s", "per core", "train runs s", "rank cand/s", "per core", "rank runs s")
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    for threads in args.threads:
        torch.set_num_threads(threads)
        for kind, params in models.items():
            torch.manual_seed(0)
            try:
                encoder = build_encoder(kind, vocab_size=vocab, **params)
            except (TypeError, ValueError) as e:  # an encoder that needs more than a vocabulary size
                print(f"| {kind} | {threads} | not built here: {e} |")
                continue
            batches = bucketed_batches(
                [s[-params["max_len"] :] for s in training], args.batch, np.random.default_rng(0)
            )
            train_rate, train_runs = bench_training(encoder, batches, args.steps, args.repeat)
            rank_rate, rank_runs = bench_rank(encoder, histories, vocab, args.repeat, args.rank_batch)
            print(
                f"| {kind} | {threads} | {train_rate:,.0f} | {train_rate / threads:,.0f} | {train_runs} "
                f"| {rank_rate:,.0f} | {rank_rate / threads:,.0f} | {rank_runs} |"
            )
    shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

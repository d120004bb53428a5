"""Sweep next-item training schedules in parallel processes: custembed's loop, custembed's evaluation.

    python benchmarks/sweep_nextitem.py --jobs jobs.json --procs 8 --out results.jsonl \\
        --snapshot LAKE/training/sasrec/DAY/KEY/data \\
        --encoder sasrec=LAKE/training/sasrec/DAY/KEY/encoder \\
        --encoder bert4rec=LAKE/training/bert4rec/DAY/KEY/encoder \\
        --histories LAKE/warehouse/custembed.db/sequences/dt=DAY/view=current

What ``custembed train`` and ``custembed evaluate-nextitem`` do, without Spark or MLflow,
so that a machine with a GPU (and no Java) can try many schedules at once:

* each job trains with :func:`custembed.training.loop.train` on ``--snapshot`` (the
  training data a ``train`` run wrote: its ``holdout_last`` already cut the test and
  validation targets), starting from the model config of the ``--encoder`` of its kind,
  changed by the job's ``model`` entries and the schedule by its ``train`` entries;
* it is then ranked with :func:`custembed.udfs.rank.leave_one_out_ranks` (the core the
  ``evaluate-nextitem`` job runs on executors) on every history of ``--histories`` with
  two actions or more: each customer's last item among the items of ``--behaviour`` of
  the encoder's vocabulary, under the three protocols, seeded per customer, ties
  pessimistic; HR@10 and NDCG@10 with their 95 % normal intervals.

Jobs are a JSON list of ``{"name", "kind", "model": {...}, "train": {...}}``. Each result
line holds the validation figures the loop kept (held-out customers, full ranking) beside
the test figures: choose a schedule on the first, report the second. Training processes
share one GPU when there is one (``--device cuda``); each uses ``--threads`` torch threads.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

K = 10
NEGATIVES = 100
BASE_SCHEDULE = {"checkpoint_every": 1_000_000, "log_every": 1000}


def _rank_table(histories: str, encoder_dir: str, behaviour: str, limit: int | None) -> tuple[Any, Any, Any]:
    """The histories with a target, the candidate mask and the item popularity (as the job counts it)."""
    import numpy as np
    import pyarrow.dataset as ds

    from custembed import lakefs
    from custembed.catalogue import VOCABULARY_FILE, StoredVocabulary
    from custembed.encoders.base import META_FILE

    frame = ds.dataset(histories, format="parquet").to_table(columns=["customer_id", "tokens", "gaps"]).to_pandas()
    vocabulary = StoredVocabulary.from_json(lakefs.read_text(lakefs.join(encoder_dir, VOCABULARY_FILE)))
    meta = json.loads(Path(encoder_dir, META_FILE).read_text())
    vocab_size = int(meta["config"]["vocab_size"])
    candidates = np.zeros(vocab_size, dtype=bool)
    candidates[list(vocabulary.item_ids(behaviour).values())] = True
    popularity = np.zeros(vocab_size, dtype=np.float64)
    np.add.at(popularity, np.concatenate([np.asarray(t, dtype=np.int64) for t in frame["tokens"]]), 1.0)
    frame = frame[frame["tokens"].map(len) >= 2].reset_index(drop=True)
    return (frame if limit is None else frame.head(limit)), candidates, popularity


def _figures(ranks: Any) -> dict[str, dict[str, float]]:
    import numpy as np

    out: dict[str, dict[str, float]] = {}
    for protocol, group in ranks.groupby("protocol"):
        rank = group["rank"].to_numpy(dtype=np.float64)
        values = {"hr": (rank < K).astype(np.float64), "ndcg": np.where(rank < K, 1.0 / np.log2(rank + 2.0), 0.0)}
        figures: dict[str, float] = {"customers": len(rank)}
        for name, per_customer in values.items():
            figures[f"{name}@{K}"] = round(float(per_customer.mean()), 4)
            figures[f"{name}@{K}_half_width"] = round(1.96 * float(per_customer.std(ddof=1)) / math.sqrt(len(rank)), 4)
        out[str(protocol)] = figures
    return out


def run_job(job: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Train one schedule and rank its test targets; one result line."""
    import torch

    torch.set_num_threads(args.threads)
    from custembed.encoders.base import META_FILE
    from custembed.training.loop import train
    from custembed.training.spec import TrainSpec
    from custembed.udfs.embed import load_cached
    from custembed.udfs.rank import leave_one_out_ranks

    kind, encoder_dir = job["kind"], args.encoder[job["kind"]]
    params = json.loads(Path(encoder_dir, META_FILE).read_text())["config"]
    params.update(job.get("model", {}))
    schedule = {**BASE_SCHEDULE, **job.get("train", {})}
    work = Path(args.work) / job["name"]
    spec = TrainSpec(
        data_path=args.snapshot,
        output_dir=str(work / "encoder"),
        checkpoint_dir=str(work / "checkpoints"),
        encoder_kind=kind,
        encoder_params=params,
        **schedule,
    )
    started = time.perf_counter()
    metrics = train(spec)
    trained = time.perf_counter() - started
    frame, candidates, popularity = _rank_table(args.histories, encoder_dir, args.behaviour, args.limit)
    encoder = load_cached(str(work / "encoder"), args.threads, args.device)
    with torch.no_grad():
        ranks = leave_one_out_ranks(
            encoder,
            frame,
            candidates=candidates,
            popularity=popularity,
            negatives=NEGATIVES,
            seed=args.seed,
            batch_size=512,
        )
    return {
        "name": job["name"],
        "kind": kind,
        "model": job.get("model", {}),
        "train": schedule,
        "train_seconds": round(trained, 1),
        "epochs": metrics.get("epochs_completed"),
        "weights_step": metrics.get("weights_step"),
        "steps": metrics.get("steps"),
        "validation": {k: round(float(v), 4) for k, v in metrics.items() if k in ("val_loss", f"hr@{K}", f"ndcg@{K}")},
        "test": _figures(ranks),
    }


def _run_job(payload: tuple[dict[str, Any], argparse.Namespace]) -> dict[str, Any]:
    return run_job(*payload)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", required=True, help="JSON list of {name, kind, model, train}")
    parser.add_argument("--snapshot", required=True, help="training data a `custembed train` run wrote")
    parser.add_argument("--encoder", action="append", required=True, help="KIND=DIR of a saved encoder of that kind")
    parser.add_argument("--histories", required=True, help="the current view of the run date's sequences")
    parser.add_argument("--behaviour", default="buying")
    parser.add_argument("--procs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0, help="negatives' seed (nextitem.seed)")
    parser.add_argument("--limit", type=int, default=None, help="rank only the first N histories (a smoke test)")
    parser.add_argument("--work", default="/tmp/custembed-sweep")
    parser.add_argument("--out", default="sweep_results.jsonl")
    args = parser.parse_args(argv)
    args.encoder = dict(entry.split("=", 1) for entry in args.encoder)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    jobs = json.loads(Path(args.jobs).read_text())
    missing = sorted({job["kind"] for job in jobs} - set(args.encoder))
    if missing:
        print(f"error: no --encoder for kind(s) {', '.join(missing)}", file=sys.stderr)
        return 2
    os.makedirs(args.work, exist_ok=True)
    context = mp.get_context("spawn")  # CUDA and torch threads do not survive a fork
    with context.Pool(args.procs) as pool, open(args.out, "a") as out:
        for result in pool.imap_unordered(_run_job, [(job, args) for job in jobs]):
            line = json.dumps(result)
            print(line, flush=True)
            out.write(line + "\n")
            out.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``custembed <job> [options]``: one subcommand per spark-submit job."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

# subcommand -> module under custembed.jobs with a main(argv) -> int
JOBS: dict[str, str] = {
    "generate": "generate",
    "sequences": "sequences",
    "train": "train",
    "embed": "embed",
    "score": "score",
    "report": "report",
    "nightly": "nightly",
    "demo": "demo",
    "ingest": "ingest",
    "rank": "rank",
    "recommend": "recommend",
    "evaluate-nextitem": "evaluate_nextitem",
    "cpl4rec-ablations": "cpl4rec_ablations",
    "segment": "segment",
    "sql": "sql",
    # system B: in-store journeys
    "journeys-simulate": "journeys_simulate",
    "journeys-prepare": "journeys_prepare",
    "journeys-generate": "journeys_generate",
    "journeys-evaluate": "journeys_evaluate",
    "journeys-transfer": "journeys_transfer",
    "journeys-report": "journeys_report",
    "journeys-demo": "journeys_demo",
}

USAGE = """usage: custembed <job> [--conf FILE] [--set key=value ...] [--run-date YYYY-MM-DD] [job options]

jobs:
  generate   write a synthetic raw-event lake (embedded default)
  sequences  step 1: raw events -> customer action sequences, labels, rejects
  train      step 2: train an encoder (BERT4Rec, fine-tuned masked LM, causal LM) with TorchDistributor
  embed      step 3a: embeddings for every customer with a pandas UDF
  score      step 3b: per-product classifiers, propensity scores, metrics and lift tables
  report     an HTML report of the latest run
  nightly    sequences -> embed -> score for a run date, resumable
  demo       generate -> sequences -> train -> embed -> score -> report on the embedded default
  ingest     public data (online-retail CSV, user-item, taobao) -> the raw-event contract
  rank       a next-item model's scores of candidate items (user<TAB>item,item lines) into a file
  recommend  top-K next items per customer from a next-item model -> recommendations table
  evaluate-nextitem  HR@K / NDCG@K of a next-item model, leave-one-out, full and sampled protocols
  cpl4rec-ablations  CPL4Rec: pre-train the backbone, adapt full / no prompts / no PFG / no compactness /
                     full fine-tuning, evaluate each (nextitem_metrics) and record adaptation_stats
  segment    k-means segments of one source's embeddings (k by silhouette) and their profiles
  sql        print the result of a SQL query against the project's catalogue
  journeys-simulate  system B: simulated store visits -> store_positions, store_scans (embedded default)
  journeys-prepare   system B: positions + till scans -> location codes, pauses, one journey text per visit

in-store journeys (system B; `train --encoder journeys-gpt2|journeys-lstm|journeys-markov [--store S]`):
  journeys-generate  continue each held-out visit from its first 7 points with every trained model
  journeys-evaluate  JS divergences (cells, purchase zones, length) and shelf / out-of-store rates
  journeys-transfer  store A's GPT-2 fine-tuned on 1/1, 1/10, 1/100 of store B vs from scratch
  journeys-report    the journeys HTML page: JS table, rates, transfer curve, heat maps
  journeys-demo      the whole of system B on the embedded default, with a printed summary

`custembed <job> --help` lists a job's options."""


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if args else 2
    job = args[0]
    if job not in JOBS:
        print(f"custembed: error: unknown job {job!r} (jobs: {', '.join(JOBS)})", file=sys.stderr)
        return 2
    module = importlib.import_module(f"custembed.jobs.{JOBS[job]}")
    result: int = module.main(args[1:])
    return result


if __name__ == "__main__":
    sys.exit(main())

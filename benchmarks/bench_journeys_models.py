"""System B model throughput: training tokens/s and generation journeys/s of GPT-2, the LSTM and the Markov chain.

    python benchmarks/bench_journeys_models.py                  # demo sizes (conf/journeys_demo.yaml)
    python benchmarks/bench_journeys_models.py --lake /tmp/jd   # the journeys of an existing lake
    python benchmarks/bench_journeys_models.py --sizes base     # GPT-2 small and the base LSTM too

Journeys: the ``journeys`` table of ``--lake`` (run date ``--run-date``), or a scratch lake
where ``journeys-simulate`` and ``journeys-prepare`` write ``--visits`` visits of store_a
with the demo's settings. Then, in this one process, with ``--threads`` torch threads:

* **training**: optimizer steps (AdamW, batch ``--batch``, the encoder's own ``loss``) on
  batches of real journeys, after ``--warmup`` steps; tokens/s counts the real (not padding)
  tokens of each batch; median of ``--repeat`` timed runs of ``--steps`` steps;
* **generation**: ``generate_texts`` continuing ``--prompts`` held-out prompts (their first
  7 positions, as ``journeys-generate``) up to each model's context, sampling at
  temperature 1; journeys/s and generated positions/s, median of ``--repeat`` runs. The
  Markov chain (order 2, fitted here in Python from the same journeys) is the peer that
  needs no network at all.

The models are untrained: throughput does not depend on the weights, except through the
journey lengths they sample (an untrained network rarely closes a journey, so it runs to
its cap: the figure is the cost of a full-length journey; the Markov chain closes them at
the real rate). Prints one table; figures per core divide by ``--threads``.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RUN_DATE = dt.date(2024, 5, 1)
SIZES = {
    "demo": {
        "journeys_gpt2": {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "max_len": 320, "dropout": 0.1},
        "journeys_lstm": {"embedding_dim": 64, "hidden_size": 128, "num_layers": 2, "max_len": 320, "dropout": 0.1},
    },
    "base": {  # conf/base.yaml: GPT-2 small
        "journeys_gpt2": {"hidden_size": 768, "num_layers": 12, "num_heads": 12, "max_len": 1024, "dropout": 0.1},
        "journeys_lstm": {"embedding_dim": 256, "hidden_size": 512, "num_layers": 2, "max_len": 1024, "dropout": 0.1},
    },
}


def journey_texts(lake: str | None, run_date: dt.date, visits: int) -> list[str]:
    """Texts of the ``journeys`` table of ``lake``, or of a scratch lake simulated and prepared now."""
    import pyarrow.dataset as ds

    work = None
    if lake is None:
        from custembed.config import load_config
        from custembed.jobs import journeys_prepare, journeys_simulate
        from custembed.spark import build_session

        work = tempfile.mkdtemp(prefix="bench_journeys_models_")
        cfg = load_config(
            "journeys_demo.yaml",
            [f"project.lake_dir={work}", "project.database=bench", "journeys.stores=[store_a]"]
            + [f"journeys.simulate.visits={visits}"],
        )
        spark = build_session(cfg.spark, cfg.project)
        spark.sparkContext.setLogLevel("ERROR")
        journeys_simulate.run(spark, cfg, run_date=run_date)
        journeys_prepare.run(spark, cfg, run_date=run_date)
        spark.stop()
        lake = work
    files = sorted(str(p) for p in Path(lake).rglob("*.parquet") if "/journeys/" in str(p) and "dt=" in str(p))
    files = [f for f in files if f"dt={run_date.isoformat()}" in f] or files
    if not files:
        raise SystemExit(f"no journeys table under {lake}: run `custembed journeys-prepare` (or leave out --lake)")
    texts = [t for t in ds.dataset(files, format="parquet").to_table(columns=["text"]).column(0).to_pylist() if t]
    if work is not None:
        shutil.rmtree(work, ignore_errors=True)
    return texts


def timed(fn: Any, repeat: int) -> list[float]:
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return runs


def bench_training(encoder: Any, texts: list[str], *, batch: int, steps: int, warmup: int, repeat: int) -> dict:
    import torch

    optimizer = torch.optim.AdamW(encoder.model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    batches = [texts[i : i + batch] for i in range(0, len(texts) - batch + 1, batch)]
    prepared = [encoder.mask(encoder.inputs(texts=b), generator) for b in batches]
    counted: list[int] = []

    def step(i: int) -> None:  # every run takes the same batches: the same work
        inputs = prepared[i % len(prepared)]
        loss = encoder.loss(inputs)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        counted.append(int(inputs["attention_mask"].sum()))

    encoder.model.train()
    for i in range(warmup):
        step(steps + i)
    counted.clear()
    runs = timed(lambda: [step(i) for i in range(steps)], repeat)
    tokens_per_run = sum(counted) / repeat
    return {"runs": runs, "tokens_per_run": tokens_per_run, "sequences_per_run": steps * batch}


def bench_generation(model: Any, prompts: list[str], *, max_new_tokens: int, batch: int, repeat: int) -> dict:
    from custembed.journeys.text import parse_journey

    produced: list[int] = []

    def run() -> None:
        produced.clear()
        for i in range(0, len(prompts), batch):
            out = model.generate_texts(prompts[i : i + batch], max_new_tokens=max_new_tokens, seed=i)
            produced.extend(len(parse_journey(t).codes) for t in out)

    runs = timed(run, repeat)
    return {"runs": runs, "journeys": len(prompts), "positions": sum(produced)}


def markov_chain(texts: list[str], order: int = 2) -> Any:
    from custembed.journeys.markov import END, START, MarkovChain, state_key

    counts: collections.Counter[tuple[int, str, str]] = collections.Counter()
    for text in texts:
        padded = [START] * order + text.split() + [END]
        for i in range(order, len(padded)):
            for k in range(order + 1):
                counts[(k, state_key(padded[i - k : i]) if k else "", padded[i])] += 1
    return MarkovChain.from_counts(order, ((k, s, n, c) for (k, s, n), c in counts.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lake", default=None, help="a lake holding a journeys table (default: simulate one)")
    parser.add_argument("--run-date", type=dt.date.fromisoformat, default=RUN_DATE)
    parser.add_argument("--visits", type=int, default=600, help="visits simulated when no --lake (default 600)")
    parser.add_argument("--sizes", choices=sorted(SIZES), nargs="+", default=["demo"])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2: this machine's cores)")
    parser.add_argument("--batch", type=int, default=16, help="training batch (journeys), as the demo's")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per run")
    parser.add_argument("--warmup", type=int, default=3, help="untimed training steps first")
    parser.add_argument("--prompts", type=int, default=32, help="prompts generated per run")
    parser.add_argument("--gen-batch", type=int, default=32, help="prompts per sampling call (demo: 32)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs; the median is reported, all printed")
    args = parser.parse_args(argv)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    logging.basicConfig(level=logging.WARNING)

    import torch

    from custembed.encoders import build_encoder
    from custembed.journeys.text import parse_journey
    from custembed.journeys.tokenizer import save_tokenizer, train_tokenizer

    torch.set_num_threads(args.threads)
    texts = journey_texts(args.lake, args.run_date, args.visits)
    split = max(args.prompts, len(texts) // 5)
    train_texts, held_out = texts[split:], texts[:split]
    prompts = [" ".join(parse_journey(t).codes[:7]) for t in held_out[: args.prompts]]
    positions = [len(parse_journey(t).codes) for t in texts]
    print(
        f"journeys: {len(texts):,} ({len(train_texts):,} to train on), "
        f"positions per journey median {statistics.median(positions):.0f}, torch threads {args.threads}"
    )
    scratch = Path(tempfile.mkdtemp(prefix="bench_bpe_"))
    save_tokenizer(train_tokenizer(train_texts, vocab_size=2000), scratch)
    rows = []
    for size in args.sizes:
        for kind, params in SIZES[size].items():
            torch.manual_seed(0)
            encoder = build_encoder(kind, tokenizer_dir=str(scratch), **params)
            n_params = sum(p.numel() for p in encoder.model.parameters())
            steps = args.steps if size == "demo" else max(2, args.steps // 10)
            tr = bench_training(
                encoder, train_texts, batch=args.batch, steps=steps, warmup=args.warmup, repeat=args.repeat
            )
            train_s = statistics.median(tr["runs"])
            gen = bench_generation(
                encoder, prompts, max_new_tokens=params["max_len"], batch=args.gen_batch, repeat=args.repeat
            )
            gen_s = statistics.median(gen["runs"])
            rows.append(
                (
                    f"{kind} ({size}, {n_params / 1e6:.2f} M)",
                    f"{tr['tokens_per_run'] / train_s:,.0f}",
                    f"{tr['tokens_per_run'] / train_s / args.threads:,.0f}",
                    f"{tr['sequences_per_run'] / train_s:,.1f}",
                    ", ".join(f"{r:.2f}" for r in tr["runs"]),
                    f"{gen['journeys'] / gen_s:,.2f}",
                    f"{gen['positions'] / gen_s:,.0f}",
                    ", ".join(f"{r:.2f}" for r in gen["runs"]),
                )
            )
    chain = markov_chain(train_texts)
    gen = bench_generation(chain, prompts, max_new_tokens=2000, batch=args.gen_batch, repeat=args.repeat)
    gen_s = statistics.median(gen["runs"])
    rows.append(
        (
            "journeys_markov (order 2)",
            "-",
            "-",
            "-",
            "counted by Spark",
            f"{gen['journeys'] / gen_s:,.2f}",
            f"{gen['positions'] / gen_s:,.0f}",
            ", ".join(f"{r:.2f}" for r in gen["runs"]),
        )
    )
    head = (
        "model",
        "train tokens/s",
        "per core",
        "train journeys/s",
        "train runs s",
        "gen journeys/s",
        "gen positions/s",
        "gen runs s",
    )
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

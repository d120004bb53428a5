"""Item heads on large catalogues: one BERT4Rec / SASRec training step, full logits vs labelled positions only.

    python benchmarks/bench_item_head.py
    python benchmarks/bench_item_head.py --vocab 54500 --batch 128 --length 50 --mask 0.6

The peer is Hugging Face's own path (``model(..., labels=...)``: logits over the whole
vocabulary at every position); ours evaluates the head at the labelled positions only
(:class:`custembed.encoders.item_head.LabelledPositionsLM`), and optionally with sampled
softmax. Same model, same batch, same process; prints the median of ``--repeat`` timed
steps (forward + backward + optimiser) after a warm-up, every run, and the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from custembed.encoders import build_encoder


def _time_steps(step: Callable[[], torch.Tensor], repeat: int) -> list[float]:
    step()  # warm-up
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return times


def bench(kind: str, args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    params = {
        "vocab_size": args.vocab,
        "hidden_size": args.hidden,
        "num_layers": 2,
        "num_heads": 2,
        "max_len": args.length,
    }
    if kind == "bert4rec":
        params["mask_prob"] = args.mask
    rows = torch.randint(3, args.vocab, (args.batch, args.length)).tolist()
    generator = torch.Generator().manual_seed(0)
    results: dict[str, list[float]] = {}
    for variant, negatives in (
        ("hf full logits", None),
        ("labelled positions", 0),
        ("sampled softmax", args.negatives),
    ):
        encoder = build_encoder(kind, **params, sampled_negatives=negatives or 0)
        batch = encoder.mask(encoder.inputs(tokens=rows), generator)
        optimizer = torch.optim.AdamW(encoder.model.parameters(), lr=1e-3)
        module = encoder.model if negatives is None else encoder.training_module()

        def step(encoder=encoder, batch=batch, optimizer=optimizer, module=module) -> torch.Tensor:
            loss = module(**encoder._model_inputs(batch), labels=batch["labels"]).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return loss

        results[variant] = _time_steps(step, args.repeat)
        label = f"{variant} (K={negatives})" if negatives else variant
        runs = ", ".join(f"{t:.3f}" for t in results[variant])
        print(f"{kind:9s} {label:28s} median {statistics.median(results[variant]):7.3f} s/step  runs: {runs}")
    base = statistics.median(results["hf full logits"])
    for variant in ("labelled positions", "sampled softmax"):
        print(f"{kind:9s} speed-up of {variant} over hf full logits: {base / statistics.median(results[variant]):.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=54_500)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--length", type=int, default=50)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--mask", type=float, default=0.6, help="BERT4Rec mask probability")
    parser.add_argument("--negatives", type=int, default=1024, help="sampled softmax negatives")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"vocab {args.vocab}, batch {args.batch}, length {args.length}, hidden {args.hidden}, "
        f"{args.threads} torch threads, median of {args.repeat} after a warm-up"
    )
    for kind in ("bert4rec", "sasrec"):
        bench(kind, args)


if __name__ == "__main__":
    main()

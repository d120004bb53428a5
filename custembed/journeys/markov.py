"""The classical baseline: a Markov chain of order k over journey tokens (cells and purchase markers).

The state is the last ``order`` tokens (padded with :data:`START` at a journey's start);
the next token is drawn in proportion to how often it followed that state in the training
journeys, :data:`END` closing a journey. Counts are computed by Spark
(:func:`custembed.jobs.journeys_frames.markov_counts`); this module holds the fitted chain, its
file (JSON, a few MB at most: one entry per state seen) and sampling. A state never seen
backs off to the chain of the last token alone, then to the token frequencies (the
prompt of a held-out visit may hold a pair never seen in training).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

KIND = "journeys_markov"
MODEL_FILE = "markov.json"
START = "<s>"
END = "</s>"
SEPARATOR = " "  # between the tokens of a state


def state_key(tokens: Sequence[str]) -> str:
    return SEPARATOR.join(tokens)


@dataclass(frozen=True)
class MarkovChain:
    """Next-token counts per state, for every order from ``order`` down to 0 (the back-off)."""

    order: int
    # order -> state (tokens joined by a space; "" for order 0) -> (next tokens, counts)
    transitions: Mapping[int, Mapping[str, tuple[tuple[str, ...], tuple[int, ...]]]]

    @classmethod
    def from_counts(cls, order: int, counts: Iterable[tuple[int, str, str, int]]) -> MarkovChain:
        """From ``(order, state, next, count)`` rows (every order 0..``order``)."""
        if order < 1:
            raise ValueError(f"order must be at least 1, got {order}")
        table: dict[int, dict[str, dict[str, int]]] = {k: {} for k in range(order + 1)}
        for k, state, nxt, count in counts:
            if k not in table:
                raise ValueError(f"counts of order {k} for a chain of order {order}")
            table[k].setdefault(state, {})[nxt] = table[k].get(state, {}).get(nxt, 0) + int(count)
        transitions = {k: {state: _sorted(nexts) for state, nexts in states.items()} for k, states in table.items()}
        return cls(order, transitions)

    def distribution(self, history: Sequence[str]) -> tuple[tuple[str, ...], np.ndarray]:
        """Next tokens and their probabilities after ``history`` (with back-off to shorter states)."""
        padded = [START] * self.order + list(history)
        for k in range(self.order, -1, -1):
            state = state_key(padded[len(padded) - k :]) if k else ""
            found = self.transitions.get(k, {}).get(state)
            if found:
                nexts, counts = found
                weights = np.asarray(counts, dtype=np.float64)
                return nexts, weights / weights.sum()
        return (END,), np.ones(1)

    def generate(self, prompt: Sequence[str], *, max_new_tokens: int, rng: np.random.Generator) -> list[str]:
        """``prompt`` followed by sampled tokens, until :data:`END` or ``max_new_tokens``."""
        tokens = list(prompt)
        for _ in range(max_new_tokens):
            nexts, probs = self.distribution(tokens)
            token = nexts[int(rng.choice(len(nexts), p=probs))]
            if token == END:
                break
            tokens.append(token)
        return tokens

    def generate_texts(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int = 0,
    ) -> list[str]:
        """Journey texts continuing ``prompts`` (the language models' signature; sampling filters do not apply)."""
        rng = np.random.default_rng(seed)
        return [" ".join(self.generate(p.split(), max_new_tokens=max_new_tokens, rng=rng)) for p in prompts]

    # -- file ----------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / MODEL_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "order": self.order,
            "transitions": {
                str(k): {state: [list(n), list(c)] for state, (n, c) in states.items()}
                for k, states in self.transitions.items()
            },
        }
        path.write_text(json.dumps(data, sort_keys=True))
        return path

    @classmethod
    def load(cls, directory: str | Path) -> MarkovChain:
        data = json.loads((Path(directory) / MODEL_FILE).read_text())
        transitions = {
            int(k): {state: (tuple(n), tuple(int(x) for x in c)) for state, (n, c) in states.items()}
            for k, states in data["transitions"].items()
        }
        return cls(int(data["order"]), transitions)


def _sorted(nexts: Mapping[str, int]) -> tuple[tuple[str, ...], tuple[int, ...]]:
    names = tuple(sorted(nexts))
    return names, tuple(nexts[n] for n in names)

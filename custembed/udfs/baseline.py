"""The non-neural baseline users try first: action counts and recency, as a vector per customer."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import pandas as pd

from custembed.tables import CUSTOMER_ID, VECTOR


def count_features(
    tokens: Sequence[Sequence[int]], *, vocab_size: int, n_special: int, no_action_id: int
) -> np.ndarray:
    """``[n, vocab_size - n_special + 3]`` float32: log(1 + count) of each action, then
    log(1 + sequence length), log(1 + real events), months since the last real event (trailing
    ``no action`` tokens, each an empty month)."""
    n_actions = vocab_size - n_special
    out = np.zeros((len(tokens), n_actions + 3), dtype=np.float32)
    for row, seq in enumerate(tokens):
        ids = np.asarray(seq, dtype=np.int64)
        counts = np.bincount(ids, minlength=vocab_size)[n_special:vocab_size]
        out[row, :n_actions] = np.log1p(counts)
        real = ids != no_action_id
        out[row, n_actions] = np.log1p(len(ids))
        out[row, n_actions + 1] = np.log1p(real.sum())
        last_real = np.flatnonzero(real)
        out[row, n_actions + 2] = len(ids) - 1 - last_real[-1] if len(last_real) else len(ids)
    return out


def count_partitions(
    *, vocab_size: int, n_special: int, no_action_id: int
) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """A ``mapInPandas`` function: (customer_id, tokens) → (customer_id, vector array<float>)."""

    def run(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for frame in frames:
            vectors = count_features(
                frame["tokens"].tolist(), vocab_size=vocab_size, n_special=n_special, no_action_id=no_action_id
            )
            yield pd.DataFrame({CUSTOMER_ID: frame[CUSTOMER_ID].to_numpy(), VECTOR: list(vectors)})

    return run

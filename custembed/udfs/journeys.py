"""Journey generation and path checks on executors: numpy/pandas cores and the ``mapInPandas`` functions.

A journey model (GPT-2 or LSTM encoder, or the Markov chain file) is loaded once per
Python worker (``load_journey_model``, cached: Spark reuses Python workers across tasks).
Prompts are sampled in batches of ``batch_size``; each batch's seed is the configured seed
mixed with its first visit key, so a rerun over the same partitioning gives the same texts.
The layout-dependent parts (decoding codes to positions, shelves) come from
:mod:`custembed.journeys.codes`, :mod:`~custembed.journeys.layout` and
:mod:`~custembed.journeys.text`, imported inside the workers.
"""

from __future__ import annotations

import functools
import json
import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import pandas as pd

from custembed import lakefs


class JourneyModel(Protocol):
    """What generation needs of a model: continuations of journey-text prompts."""

    def generate_texts(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int = 0,
    ) -> list[str]: ...


@functools.lru_cache(maxsize=4)
def load_journey_model(model_dir: str, threads: int = 1) -> JourneyModel:
    """The journey model saved in ``model_dir`` (path or lake URI), loaded once per process."""
    from custembed.encoders.base import META_FILE
    from custembed.journeys.markov import KIND as MARKOV_KIND
    from custembed.journeys.markov import MarkovChain

    meta = json.loads(lakefs.read_text(lakefs.join(model_dir, META_FILE)))
    if meta.get("kind") == MARKOV_KIND:
        return MarkovChain.load(lakefs.get_dir(model_dir))
    import torch

    from custembed.encoders import load_encoder

    if threads > 0:
        torch.set_num_threads(threads)
    encoder = load_encoder(model_dir)
    if not hasattr(encoder, "generate_texts"):
        raise ValueError(f"{model_dir} holds a {meta.get('kind')} encoder, which does not generate journeys")
    encoder.model.eval()
    model: JourneyModel = encoder
    return model


def batch_seed(seed: int, first_key: str) -> int:
    return zlib.crc32(f"{seed}:{first_key}".encode()) & 0x7FFFFFFF


def generate_frame(model: JourneyModel, frame: pd.DataFrame, sampling: dict[str, Any], batch_size: int) -> list[str]:
    """Texts continuing ``frame.prompt`` in row order (batches of ``batch_size``)."""
    prompts = frame["prompt"].tolist()
    keys = (frame["store"].astype(str) + ":" + frame["visit_id"].astype(str)).tolist()
    texts: list[str] = []
    for start in range(0, len(prompts), batch_size):
        seed = batch_seed(int(sampling["seed"]), keys[start])
        texts += model.generate_texts(
            prompts[start : start + batch_size],
            max_new_tokens=int(sampling["max_new_tokens"]),
            temperature=float(sampling["temperature"]),
            top_k=int(sampling["top_k"]),
            top_p=float(sampling["top_p"]),
            seed=seed,
        )
    return texts


def journey_counts(texts: Sequence[str]) -> pd.DataFrame:
    """``n_positions, n_purchases, bad_tokens`` of each journey text (``text.parse_journey``)."""
    from custembed.journeys.text import parse_journey

    parsed = [parse_journey(text) for text in texts]
    return pd.DataFrame(
        {
            "n_positions": np.array([len(p.codes) for p in parsed], dtype=np.int32),
            "n_purchases": np.array([len(p.purchases) for p in parsed], dtype=np.int32),
            "bad_tokens": np.array([p.bad_tokens for p in parsed], dtype=np.int32),
        }
    )


def generate_fn(
    model_dir: str, *, sampling: dict[str, Any], batch_size: int, threads: int
) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """``mapInPandas`` function: ``store, visit_id, prompt`` → ``store, visit_id, text`` and its counts.

    Captures plain values only; the model loads in the worker.
    """

    def generate(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        model = load_journey_model(model_dir, threads)
        for frame in frames:
            texts = generate_frame(model, frame, sampling, batch_size)
            counts = journey_counts(texts)
            yield pd.concat(
                [frame[["store", "visit_id"]].reset_index(drop=True), pd.DataFrame({"text": texts}), counts], axis=1
            )

    return generate


# -- path checks ----------------------------------------------------------------------


def path_stats(codes: Sequence[str], layout: Any) -> tuple[int, int, int, int]:
    """``(positions, outside, steps, crossings)`` of one journey's location codes.

    A code that does not decode is a position outside the store; a step is a pair of
    consecutive positions that both decode, and it crosses when its segment passes through
    a shelf (``layout.crosses_shelf``).
    """
    from custembed.journeys.codes import decode

    if not codes:
        return 0, 0, 0, 0
    xs = np.full(len(codes), np.nan)
    ys = np.full(len(codes), np.nan)
    try:
        xs[:], ys[:] = decode(np.asarray(codes), layout)
    except ValueError:
        for i, code in enumerate(codes):  # one bad code: decode the others one by one
            try:
                x, y = decode(np.asarray([code]), layout)
            except ValueError:
                continue
            xs[i], ys[i] = float(np.asarray(x)[0]), float(np.asarray(y)[0])
    valid = ~np.isnan(xs)
    inside = np.zeros(len(codes), dtype=bool)
    inside[valid] = np.asarray(layout.inside(xs[valid], ys[valid]), dtype=bool)
    pairs = valid[:-1] & valid[1:]
    crossings = 0
    if pairs.any():
        crossed = np.asarray(
            layout.crosses_shelf(xs[:-1][pairs], ys[:-1][pairs], xs[1:][pairs], ys[1:][pairs]), dtype=bool
        )
        crossings = int(crossed.sum())
    return len(codes), int((~inside).sum()), int(pairs.sum()), crossings


def path_stats_fn() -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """``mapInPandas`` function: ``store, model, train_fraction, text`` → those keys and
    ``positions, outside, steps, crossings`` per journey (:func:`path_stats`)."""

    def stats(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from custembed.journeys.layout import load_layout
        from custembed.journeys.text import parse_journey

        layouts: dict[str, Any] = {}
        for frame in frames:
            rows = []
            for store, text in zip(frame["store"], frame["text"], strict=True):
                if store not in layouts:
                    layouts[store] = load_layout(store)
                rows.append(path_stats(parse_journey(text).codes, layouts[store]))
            out = pd.DataFrame(rows, columns=["positions", "outside", "steps", "crossings"], dtype=np.int64)
            yield pd.concat([frame[["store", "model", "train_fraction"]].reset_index(drop=True), out], axis=1)

    return stats

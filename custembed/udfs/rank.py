"""Next-item scoring on executors: candidate scores (``rank``) and top-K lists (``recommend``).

Numpy cores over a loaded :class:`~custembed.encoders.action_ids.ActionIdEncoder`
(:func:`candidate_scores`, :func:`top_k`) and the ``mapInPandas`` functions that run
them: the encoder loads once per Python worker (:func:`custembed.udfs.embed.load_cached`),
rows are scored in batches of ``batch_size`` sorted by length, so padding stays small.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd

from custembed.udfs.embed import load_cached, task_device

UNSCORED = float("-inf")  # a candidate the model cannot score: not in its vocabulary, or a user without history


def _ranking_encoder(model_dir: str, threads: int) -> Any:
    encoder = load_cached(model_dir, threads, task_device())
    if not hasattr(encoder, "score_next"):
        raise ValueError(f"the {encoder.kind} encoder in {model_dir} does not rank items (BERT4Rec and SASRec do)")
    return encoder


def _batches(lengths: Sequence[int], batch_size: int) -> Iterator[np.ndarray]:
    order = np.argsort(np.asarray(lengths, dtype=np.int64), kind="stable")
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def _gaps_of(frame: pd.DataFrame, rows: Sequence[int] | np.ndarray) -> list[Any] | None:
    if "gaps" not in frame.columns:
        return None
    gaps: list[Any] = frame["gaps"].tolist()
    return [list(gaps[i]) for i in rows]


def candidate_scores(encoder: Any, frame: pd.DataFrame, batch_size: int) -> list[np.ndarray]:
    """Score of each candidate id (``candidate_ids``, -1 = unknown item) after each row's ``tokens``.

    Rows without tokens and unknown candidates get :data:`UNSCORED`. Returns one float64 array per row.
    """
    candidate_ids: list[Any] = frame["candidate_ids"].tolist()
    tokens: list[Any] = frame["tokens"].tolist()
    out: list[np.ndarray] = [np.full(len(ids), UNSCORED) for ids in candidate_ids]
    has_history = [i for i, t in enumerate(tokens) if t is not None and len(t) > 0]
    lengths = [len(tokens[i]) for i in has_history]
    for chunk in _batches(lengths, batch_size):
        rows = [has_history[c] for c in chunk]
        scores = encoder.score_next([list(tokens[i]) for i in rows], _gaps_of(frame, rows)).cpu().numpy()
        for k, i in enumerate(rows):
            ids = np.asarray(candidate_ids[i], dtype=np.int64)
            known = ids >= 0
            out[i][known] = scores[k, ids[known]]
    return out


def top_k(
    encoder: Any, frame: pd.DataFrame, *, item_ids: np.ndarray, k: int, exclude_seen: bool, batch_size: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The ``k`` best of ``item_ids`` after each row's ``tokens`` (ids and scores, best first).

    ``exclude_seen`` leaves out the ids already in the row's history. Ties keep the lower id.
    """
    tokens: list[Any] = frame["tokens"].tolist()
    ids_out: list[np.ndarray] = [np.empty(0, np.int64)] * len(frame)
    scores_out: list[np.ndarray] = [np.empty(0, np.float64)] * len(frame)
    lengths = [len(t) for t in tokens]
    for chunk in _batches(lengths, batch_size):
        scores = encoder.score_next([list(tokens[i]) for i in chunk], _gaps_of(frame, chunk))
        candidate = scores.cpu().numpy()[:, item_ids].astype(np.float64)  # [B, I]
        for row, i in enumerate(chunk):
            row_scores = candidate[row]
            if exclude_seen:
                row_scores = np.where(np.isin(item_ids, np.asarray(tokens[i])), -np.inf, row_scores)
            n = min(k, int(np.isfinite(row_scores).sum()))
            best = np.argsort(-row_scores, kind="stable")[:n]
            ids_out[i], scores_out[i] = item_ids[best], row_scores[best]
    return ids_out, scores_out


def rank_partitions(model_dir: str, *, batch_size: int, threads: int) -> Callable[[Iterator[pd.DataFrame]], Any]:
    """``mapInPandas`` function: (customer_id, tokens[, gaps], candidates, candidate_ids, other columns) →
    the other columns (customer_id, candidates, ...) plus ``scores``."""

    def run(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        encoder = _ranking_encoder(model_dir, threads)
        for frame in frames:
            frame = frame.reset_index(drop=True)
            passed = [c for c in frame.columns if c not in ("tokens", "gaps", "candidate_ids")]
            result = frame[passed].copy()
            result["scores"] = pd.Series(candidate_scores(encoder, frame, batch_size), index=frame.index, dtype=object)
            yield result

    return run


def recommend_partitions(
    model_dir: str, *, item_ids: np.ndarray, k: int, exclude_seen: bool, batch_size: int, threads: int
) -> Callable[[Iterator[pd.DataFrame]], Any]:
    """``mapInPandas`` function: (customer_id, tokens[, gaps]) → (customer_id, ids, scores) best first."""

    def run(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        encoder = _ranking_encoder(model_dir, threads)
        for frame in frames:
            frame = frame.reset_index(drop=True)
            ids, scores = top_k(
                encoder, frame, item_ids=item_ids, k=k, exclude_seen=exclude_seen, batch_size=batch_size
            )
            yield pd.DataFrame({"customer_id": frame["customer_id"], "ids": ids, "scores": scores})

    return run


def _customer_seed(seed: int, customer_id: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(str(customer_id).encode("utf-8"))) % (2**63 - 1)


def leave_one_out_ranks(
    encoder: Any,
    frame: pd.DataFrame,
    *,
    candidates: np.ndarray,
    popularity: np.ndarray,
    negatives: int,
    seed: int,
    batch_size: int,
) -> pd.DataFrame:
    """0-based ranks of each row's last action from the ones before it, under every protocol.

    ``candidates [V]`` (bool) marks the item ids a target ranks among (the behaviour's items);
    ``popularity [V]`` their counts, for the popularity-weighted negatives. Rows whose
    target is not a candidate are left out. Negatives are drawn per customer from the
    candidates it never interacted with, seeded by (``seed``, customer id), so a customer's
    negatives do not depend on the batch or the partition it lands in. Ties are pessimistic
    (:mod:`custembed.nextitem`). Returns ``customer_id``, ``protocol``, ``rank``.
    """
    import torch

    from custembed.nextitem import FULL, SAMPLED_POPULARITY, SAMPLED_UNIFORM, sample_negatives, sampled_ranks

    tokens = [list(t) for t in frame["tokens"].tolist()]
    customers: list[Any] = frame["customer_id"].tolist()
    usable = [i for i, t in enumerate(tokens) if len(t) >= 2 and bool(candidates[t[-1]])]
    weights = {
        SAMPLED_UNIFORM: torch.as_tensor(candidates.astype(np.float64)),
        SAMPLED_POPULARITY: torch.as_tensor(np.where(candidates, popularity, 0.0).astype(np.float64)),
    }
    out: dict[str, list[Any]] = {"customer_id": [], "protocol": [], "rank": []}
    for chunk in _batches([len(tokens[i]) for i in usable], batch_size):
        rows = [usable[c] for c in chunk]
        gaps = _gaps_of(frame, rows)
        scores = (
            encoder.score_next([tokens[i][:-1] for i in rows], None if gaps is None else [g[:-1] for g in gaps])
            .float()
            .cpu()
        )  # [B, V]; the ranks are counted on the CPU, whatever device scored
        targets = torch.as_tensor([tokens[i][-1] for i in rows], dtype=torch.long)  # [B]
        masked = scores.masked_fill(~torch.as_tensor(candidates), float("-inf"))
        target_scores = masked.gather(1, targets.unsqueeze(1))  # [B, 1]
        ranks = {FULL: ((masked >= target_scores).sum(dim=1) - 1).tolist()}
        for protocol, weight in weights.items():
            drawn = [
                sample_negatives(
                    [tokens[i]],
                    n=negatives,
                    first_item=0,
                    vocab_size=len(candidates),
                    generator=torch.Generator().manual_seed(_customer_seed(seed, str(customers[i]))),
                    popularity=weight,
                )
                for i in rows
            ]
            ranks[protocol] = sampled_ranks(scores, targets, torch.cat(drawn)).tolist()
        for protocol, values in ranks.items():
            out["customer_id"] += [customers[i] for i in rows]
            out["protocol"] += [protocol] * len(rows)
            out["rank"] += values
    return pd.DataFrame(out)


def evaluate_partitions(
    model_dir: str,
    *,
    candidates: np.ndarray,
    popularity: np.ndarray,
    negatives: int,
    seed: int,
    batch_size: int,
    threads: int,
) -> Callable[[Iterator[pd.DataFrame]], Any]:
    """``mapInPandas`` function: (customer_id, tokens[, gaps]) → (customer_id, protocol, rank)."""

    def run(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        encoder = _ranking_encoder(model_dir, threads)
        for frame in frames:
            yield leave_one_out_ranks(
                encoder,
                frame.reset_index(drop=True),
                candidates=candidates,
                popularity=popularity,
                negatives=negatives,
                seed=seed,
                batch_size=batch_size,
            )

    return run

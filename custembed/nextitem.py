"""The next-item harness: leave-one-out splits, ranks and HR@K / NDCG@K under a named protocol.

Shared by every encoder that predicts a customer's next item (BERT4Rec, and the
next-item models of system C). Pure torch, no pyspark.

Protocols (the name travels with every figure):

* ``full``: the target ranks among every item (ids ``>= first_item``);
* ``sampled-uniform`` / ``sampled-popularity``: the target ranks among ``n``
  negatives drawn (seeded, without replacement) from the items the customer never
  interacted with, uniformly or in proportion to item popularity (the BERT4Rec
  paper's choice).

Ties are broken pessimistically: a candidate scoring exactly as the target ranks
above it, so a model that scores everything alike gets the worst rank, not the best.
Splits are time-ordered leave-one-out: each sequence's last item is the test
target, the one before the validation target, the rest is for training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

FULL = "full"
SAMPLED_UNIFORM = "sampled-uniform"
SAMPLED_POPULARITY = "sampled-popularity"
PROTOCOLS = (FULL, SAMPLED_UNIFORM, SAMPLED_POPULARITY)


def protocol_name(protocol: str, negatives: int = 100) -> str:
    """How a protocol reads next to its figures."""
    if protocol == FULL:
        return "full ranking over all items, leave-one-out, pessimistic ties"
    if protocol in (SAMPLED_UNIFORM, SAMPLED_POPULARITY):
        how = "uniform" if protocol == SAMPLED_UNIFORM else "popularity-weighted"
        return f"{negatives} {how} sampled negatives, leave-one-out, pessimistic ties"
    raise ValueError(f"unknown next-item protocol {protocol!r} (known: {', '.join(PROTOCOLS)})")


@dataclass(frozen=True)
class Split:
    """Time-ordered leave-one-out of one sequence: training prefix, validation and test cases."""

    train: list[int]  # every item but the last two
    validation: tuple[list[int], int] | None  # (history, target): the second-to-last item
    test: tuple[list[int], int] | None  # (history, target): the last item


def leave_one_out(sequence: Sequence[int]) -> Split:
    """Split one time-ordered sequence; too short a sequence gives no validation or test case."""
    items = list(sequence)
    if len(items) < 2:
        return Split(train=items, validation=None, test=None)
    test = (items[:-1], items[-1])
    if len(items) < 3:
        return Split(train=items[:-1], validation=None, test=test)
    return Split(train=items[:-2], validation=(items[:-2], items[-2]), test=test)


def full_ranks(scores: torch.Tensor, targets: torch.Tensor, *, first_item: int = 0) -> torch.Tensor:
    """``[B]`` 0-based ranks of ``targets`` among every item id ``>= first_item`` of ``scores [B, V]``.

    Pessimistic: every other item scoring at least the target's score ranks above it.
    """
    scores = scores[:, first_item:].float()
    shifted = (targets - first_item).unsqueeze(1)  # [B, 1]
    if bool((shifted < 0).any()) or bool((shifted >= scores.size(1)).any()):
        raise ValueError("a target is not an item id")
    target_scores = scores.gather(1, shifted)  # [B, 1]
    return (scores >= target_scores).sum(dim=1) - 1  # the target itself is not above itself


def sampled_ranks(scores: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """``[B]`` 0-based ranks of ``targets`` among their own ``negatives [B, N]`` (pessimistic ties)."""
    target_scores = scores.gather(1, targets.unsqueeze(1)).float()  # [B, 1]
    negative_scores = scores.gather(1, negatives).float()  # [B, N]
    return (negative_scores >= target_scores).sum(dim=1)


def sample_negatives(
    histories: Sequence[Sequence[int]],
    *,
    n: int,
    first_item: int,
    vocab_size: int,
    generator: torch.Generator,
    popularity: torch.Tensor | None = None,
) -> torch.Tensor:
    """``[B, n]`` negatives per customer: items it never interacted with (``histories`` include the target).

    Drawn without replacement, uniformly or with probability proportional to ``popularity``
    (``[vocab_size]`` counts; ids below ``first_item`` never drawn). Raises ``ValueError``
    when a customer has fewer than ``n`` items left to draw from.
    """
    weights = torch.ones(vocab_size, dtype=torch.float64) if popularity is None else popularity.double().clone()
    if weights.shape != (vocab_size,):
        raise ValueError(f"popularity must have {vocab_size} entries, got {tuple(weights.shape)}")
    weights[:first_item] = 0.0
    rows = []
    for history in histories:
        allowed = weights.clone()
        allowed[torch.as_tensor(list(history), dtype=torch.long)] = 0.0
        if int((allowed > 0).sum()) < n:
            raise ValueError(f"a customer has fewer than {n} items it never interacted with to draw negatives from")
        rows.append(torch.multinomial(allowed, n, replacement=False, generator=generator))
    return torch.stack(rows) if rows else torch.zeros((0, n), dtype=torch.long)


@dataclass(frozen=True)
class RankSummary:
    """HR@k and NDCG@k over ``count`` cases, under ``protocol``."""

    protocol: str
    k: int
    hit_rate: float
    ndcg: float
    count: int


def summarise(ranks: torch.Tensor, *, k: int, protocol: str) -> RankSummary:
    """HR@k (rank < k) and NDCG@k (1 / log2(rank + 2) within the top k) of 0-based ``ranks``."""
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown next-item protocol {protocol!r} (known: {', '.join(PROTOCOLS)})")
    if ranks.numel() == 0:
        return RankSummary(protocol, k, 0.0, 0.0, 0)
    ranks = ranks.double()
    hit = ranks < k
    gain = torch.where(hit, 1.0 / torch.log2(ranks + 2.0), torch.zeros_like(ranks))
    return RankSummary(protocol, k, float(hit.double().mean()), float(gain.mean()), int(ranks.numel()))


def last_action_metrics(
    scores: torch.Tensor,
    targets: torch.Tensor,
    real: torch.Tensor,
    *,
    first_item: int,
    no_action_id: int | None,
    k: int,
) -> dict[str, float]:
    """HR@k and NDCG@k (full ranking) of each sequence's held-out last action, over action targets.

    ``scores [B, V]`` are the model's scores for the held-out position, ``targets [B]`` the
    held-out ids, ``real [B]`` which rows have a real target. Targets equal to
    ``no_action_id`` are left out of the means and counted in ``no_action_share``. Returns
    ``hr@k``, ``ndcg@k``, ``count`` (rows ranked), ``no_action_share`` and ``targets`` (rows
    with a real target).
    """
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    no_action = real & (targets == no_action_id) if no_action_id is not None else None
    valid = real if no_action is None else real & ~no_action  # [B] action targets only
    rank = full_ranks(scores, targets.clamp(min=first_item), first_item=first_item)  # rows not valid: ignored
    hit = rank < k
    gain = torch.where(hit, 1.0 / torch.log2(rank.double() + 2.0), 0.0)
    count, n_targets = int(valid.sum()), int(real.sum())
    share = float(no_action.sum()) / n_targets if no_action is not None and n_targets else 0.0
    extra = {"no_action_share": share, "targets": float(n_targets)}
    if count == 0:
        return {f"hr@{k}": 0.0, f"ndcg@{k}": 0.0, "count": 0.0, **extra}
    return {
        f"hr@{k}": float(hit[valid].double().mean()),
        f"ndcg@{k}": float(gain[valid].mean()),
        "count": float(count),
        **extra,
    }

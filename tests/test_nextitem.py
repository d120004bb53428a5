"""The next-item harness: splits, pessimistic ranks, seeded negatives, HR/NDCG."""

from __future__ import annotations

import math

import pytest
import torch

from custembed.nextitem import (
    FULL,
    SAMPLED_POPULARITY,
    SAMPLED_UNIFORM,
    full_ranks,
    leave_one_out,
    protocol_name,
    sample_negatives,
    sampled_ranks,
    summarise,
)


def test_leave_one_out_holds_out_the_last_two_in_time_order() -> None:
    split = leave_one_out([5, 6, 7, 8])
    assert split.train == [5, 6] and split.validation == ([5, 6], 7) and split.test == ([5, 6, 7], 8)
    assert leave_one_out([5, 6]).validation is None and leave_one_out([5, 6]).test == ([5], 6)
    assert leave_one_out([5]).test is None


def test_ties_rank_the_target_last_among_equals() -> None:
    scores = torch.tensor([[9.0, 1.0, 1.0, 1.0, 0.5], [9.0, 0.1, 3.0, 2.0, 1.0]])
    # ids 0 is not an item (first_item=1); row 0: all items score alike -> the target ranks after both others
    ranks = full_ranks(scores, torch.tensor([2, 3]), first_item=1)
    assert ranks.tolist() == [2, 1]
    negatives = torch.tensor([[1, 3], [1, 4]])
    assert sampled_ranks(scores, torch.tensor([2, 3]), negatives).tolist() == [2, 0]
    with pytest.raises(ValueError, match="not an item id"):
        full_ranks(scores, torch.tensor([0, 3]), first_item=1)


def test_constant_scores_get_the_worst_rank_not_the_best() -> None:
    scores = torch.zeros(3, 50)
    assert summarise(full_ranks(scores, torch.tensor([3, 4, 5]), first_item=3), k=10, protocol=FULL).hit_rate == 0.0


def test_negatives_avoid_the_history_and_follow_popularity_seeded() -> None:
    histories = [[3, 4, 5], [6]]
    drawn = sample_negatives(histories, n=20, first_item=3, vocab_size=40, generator=torch.Generator().manual_seed(1))
    assert drawn.shape == (2, 20)
    for row, history in zip(drawn.tolist(), histories, strict=True):
        assert len(set(row)) == 20 and not set(row) & set(history) and min(row) >= 3
    again = sample_negatives(histories, n=20, first_item=3, vocab_size=40, generator=torch.Generator().manual_seed(1))
    assert torch.equal(drawn, again)
    popularity = torch.ones(40)
    popularity[10] = 1e6  # one very popular item: drawn first for everyone
    popular = sample_negatives(
        histories, n=1, first_item=3, vocab_size=40, generator=torch.Generator().manual_seed(2), popularity=popularity
    )
    assert popular.flatten().tolist() == [10, 10]
    with pytest.raises(ValueError, match="fewer than 40"):
        sample_negatives(histories, n=40, first_item=3, vocab_size=40, generator=torch.Generator())


def test_summary_matches_the_definitions() -> None:
    ranks = torch.tensor([0, 1, 9, 10, 50])
    summary = summarise(ranks, k=10, protocol=SAMPLED_UNIFORM)
    assert summary.hit_rate == pytest.approx(3 / 5)
    assert summary.ndcg == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(11)) / 5)
    assert summary.count == 5 and summary.protocol == SAMPLED_UNIFORM
    assert "popularity-weighted" in protocol_name(SAMPLED_POPULARITY) and "full ranking" in protocol_name(FULL)
    with pytest.raises(ValueError, match="unknown next-item protocol"):
        summarise(ranks, k=10, protocol="sampled")

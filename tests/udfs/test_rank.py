"""Next-item scoring cores: candidate scores, top-K, and leave-one-out ranks under each protocol."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from custembed.encoders import build_encoder
from custembed.nextitem import full_ranks
from custembed.udfs.rank import UNSCORED, candidate_scores, leave_one_out_ranks, top_k

VOCAB = 20  # ids 0-2 special, 3-19 items


@pytest.fixture(params=["sasrec", "bert4rec"])
def encoder(request: pytest.FixtureRequest) -> Any:
    torch.manual_seed(0)
    model = build_encoder(request.param, vocab_size=VOCAB, hidden_size=16, num_layers=1, num_heads=1, max_len=8)
    model.model.eval()
    return model


def frame(**columns: list[Any]) -> pd.DataFrame:
    return pd.DataFrame(columns)


def test_candidate_scores_are_the_next_action_scores(encoder: Any) -> None:
    rows = frame(
        customer_id=["a", "b", "c"],
        tokens=[[3, 4, 5], [6], []],
        candidate_ids=[[7, -1, 3], [4], [5]],
    )
    scores = candidate_scores(encoder, rows, batch_size=2)
    expected = encoder.score_next([[3, 4, 5], [6]]).numpy()
    np.testing.assert_allclose(scores[0][[0, 2]], expected[0, [7, 3]], rtol=1e-5)
    assert scores[0][1] == UNSCORED  # outside the vocabulary
    np.testing.assert_allclose(scores[1], expected[1, [4]], rtol=1e-5)
    assert scores[2].tolist() == [UNSCORED]  # no history


def test_top_k_is_sorted_and_leaves_out_the_history(encoder: Any) -> None:
    items = np.arange(3, VOCAB)
    rows = frame(customer_id=["a", "b"], tokens=[[3, 4, 5, 6], [9]])
    ids, scores = top_k(encoder, rows, item_ids=items, k=5, exclude_seen=True, batch_size=8)
    assert all(len(i) == 5 for i in ids)
    assert not set(ids[0]) & {3, 4, 5, 6} and 9 not in ids[1]
    assert all(np.all(np.diff(s) <= 0) for s in scores)
    full = encoder.score_next([[3, 4, 5, 6]]).numpy()[0]
    allowed = [i for i in items if i not in (3, 4, 5, 6)]
    assert ids[0].tolist() == sorted(allowed, key=lambda i: -full[i])[:5]


def test_leave_one_out_full_rank_matches_the_harness_and_negatives_are_per_customer(encoder: Any) -> None:
    candidates = np.zeros(VOCAB, dtype=bool)
    candidates[3:] = True
    popularity = np.arange(VOCAB, dtype=np.float64)
    histories = [[3, 4, 5, 6], [7, 8], [9, 10, 11], [12]]  # the last has no history: left out
    rows = frame(customer_id=["a", "b", "c", "d"], tokens=histories)
    ranks = leave_one_out_ranks(
        encoder, rows, candidates=candidates, popularity=popularity, negatives=5, seed=1, batch_size=2
    )
    assert set(ranks["protocol"]) == {"full", "sampled-uniform", "sampled-popularity"}
    assert set(ranks["customer_id"]) == {"a", "b", "c"}
    full = ranks[ranks["protocol"] == "full"].set_index("customer_id")["rank"]
    scores = encoder.score_next([h[:-1] for h in histories[:3]])
    expected = full_ranks(scores, torch.tensor([h[-1] for h in histories[:3]]), first_item=3)
    assert [full[c] for c in "abc"] == expected.tolist()
    # a customer's negatives (so its sampled rank) do not depend on who shares its batch
    alone = leave_one_out_ranks(
        encoder,
        rows.iloc[[1]].reset_index(drop=True),
        candidates=candidates,
        popularity=popularity,
        negatives=5,
        seed=1,
        batch_size=2,
    )
    for protocol in ("sampled-uniform", "sampled-popularity"):
        together = ranks[(ranks["protocol"] == protocol) & (ranks["customer_id"] == "b")]["rank"].tolist()
        assert together == alone[alone["protocol"] == protocol]["rank"].tolist()
        assert all(0 <= r <= 5 for r in ranks[ranks["protocol"] == protocol]["rank"])


def test_targets_outside_the_candidates_are_left_out(encoder: Any) -> None:
    candidates = np.zeros(VOCAB, dtype=bool)
    candidates[10:] = True  # e.g. the items of another behaviour
    rows = frame(customer_id=["a", "b"], tokens=[[3, 4], [3, 12]])
    ranks = leave_one_out_ranks(
        encoder, rows, candidates=candidates, popularity=np.ones(VOCAB), negatives=3, seed=0, batch_size=4
    )
    assert set(ranks["customer_id"]) == {"b"}
    assert ranks[ranks["protocol"] == "full"]["rank"].iloc[0] < 10  # among the 10 candidates only

"""BERT4Rec specifics: config checks, the paper's masking, ranking metrics."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from custembed.encoders import Bert4RecConfig, Bert4RecEncoder, SequenceEncoder, load_encoder
from custembed.encoders.masking import IGNORE_INDEX

MakeEncoder = Callable[..., SequenceEncoder[Any]]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"vocab_size": 3}, "vocab_size"),
        ({"vocab_size": 40, "hidden_size": 30, "num_heads": 4}, "hidden_size=30"),
        ({"vocab_size": 40, "mask_prob": 0.0}, "mask_prob"),
        ({"vocab_size": 40, "mask_id": 5}, "mask_id"),
        ({"vocab_size": 40, "pooling": "max"}, "'max'"),
    ],
)
def test_config_rejects_bad_values(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Bert4RecConfig(**params)


def test_inputs_reject_unknown_ids_and_empty_sequences(make_encoder: MakeEncoder) -> None:
    encoder = make_encoder("bert4rec")
    with pytest.raises(ValueError, match="id 33 outside"):
        encoder.inputs(tokens=[[3, 4], [5, 33]])
    with pytest.raises(ValueError, match="sequence 1 is empty"):
        encoder.inputs(tokens=[[3], []])
    with pytest.raises(ValueError, match="tokens=None"):
        encoder.inputs(texts=["a0 a1"])


def test_output_layer_is_tied_to_the_action_embeddings(make_encoder: MakeEncoder) -> None:
    model = make_encoder("bert4rec").model
    decoder = model.cls.predictions.decoder.weight
    assert decoder.data_ptr() == model.bert.embeddings.word_embeddings.weight.data_ptr()


def test_every_masked_position_becomes_the_mask_token(make_encoder: MakeEncoder) -> None:
    encoder = make_encoder("bert4rec", mask_prob=0.5)
    inputs = encoder.inputs(tokens=[[3 + (i * 7 + j) % 30 for j in range(12)] for i in range(16)])
    masked = encoder.mask(inputs, torch.Generator().manual_seed(0))
    labelled = masked["labels"] != IGNORE_INDEX
    assert labelled.sum() > 40
    assert (masked["input_ids"][labelled] == encoder.config.mask_id).all()  # no 80/10/10


def test_unknown_actions_are_never_targets(make_encoder: MakeEncoder) -> None:
    encoder = make_encoder("bert4rec", mask_prob=1.0)
    inputs = encoder.inputs(tokens=[[2, 5, 2, 6], [2, 7]])
    labels = encoder.mask(inputs, torch.Generator().manual_seed(0))["labels"]
    assert labels.tolist() == [[IGNORE_INDEX, 5, IGNORE_INDEX, 6], [IGNORE_INDEX, 7, IGNORE_INDEX, IGNORE_INDEX]]


def test_mask_last_prob_one_masks_only_the_last_action(make_encoder: MakeEncoder) -> None:
    encoder = make_encoder("bert4rec", mask_last_prob=1.0)
    sequences = [[3, 4, 5, 6, 7], [8, 9], [10, 11, 12]]
    inputs = encoder.inputs(tokens=sequences)
    labels = encoder.mask(inputs, torch.Generator().manual_seed(0))["labels"]
    for row, sequence in enumerate(sequences):
        expected = [IGNORE_INDEX] * labels.size(1)
        expected[len(sequence) - 1] = sequence[-1]
        assert labels[row].tolist() == expected


def reference_ranking(scores: np.ndarray, targets: np.ndarray, n_special: int, k: int) -> tuple[float, float]:
    """HR@k and NDCG@k by sorting each row, the textbook way."""
    hits, gains = [], []
    for row_scores, target in zip(scores, targets, strict=True):
        actions = np.arange(n_special, row_scores.size)
        ranked = actions[np.argsort(-row_scores[n_special:], kind="stable")]
        rank = int(np.flatnonzero(ranked == target)[0])
        hits.append(rank < k)
        gains.append(1.0 / math.log2(rank + 2) if rank < k else 0.0)
    return float(np.mean(hits)), float(np.mean(gains))


def test_next_action_metrics_match_a_sorting_reference(make_encoder: MakeEncoder) -> None:
    encoder = make_encoder("bert4rec")
    assert isinstance(encoder, Bert4RecEncoder)
    generator = np.random.default_rng(0)
    sequences = [list(3 + generator.integers(0, 30, size=n)) for n in generator.integers(2, 14, size=40)]
    inputs = encoder.inputs(tokens=sequences)
    k = 5
    metrics = encoder.next_action_metrics(inputs, k=k)

    # Reference: hide the last action by hand, score with the full MLM forward pass.
    masked_ids = [list(s[:-1]) + [encoder.config.mask_id] for s in sequences]
    masked = encoder.inputs(tokens=masked_ids)
    encoder.model.eval()
    with torch.no_grad():
        logits = encoder.model(**masked).logits.numpy()  # [B, L, V]
    last = np.array([len(s) - 1 for s in sequences])
    scores = logits[np.arange(len(sequences)), last]
    hr, ndcg = reference_ranking(scores, np.array([s[-1] for s in sequences]), 3, k)

    assert metrics["count"] == len(sequences)
    assert metrics[f"hr@{k}"] == pytest.approx(hr, abs=1e-9)
    assert metrics[f"ndcg@{k}"] == pytest.approx(ndcg, abs=1e-6)
    assert 0.0 < metrics[f"hr@{k}"] < 1.0  # a random model: neither all hits nor none


def test_ranking_metrics_count_action_targets_only(make_encoder: MakeEncoder) -> None:
    from custembed.catalogue import load_catalogue
    from custembed.encoders.bert4rec import RANKING_PROTOCOL

    no_action = load_catalogue("actions.yaml").no_action_id  # the demo catalogue's id, not a literal
    from custembed.report.sections import RANKING_PROTOCOL as SHOWN

    assert "action targets" in RANKING_PROTOCOL and SHOWN == RANKING_PROTOCOL  # the report names the same protocol
    with pytest.raises(ValueError, match="no_action_id"):
        Bert4RecConfig(vocab_size=40, no_action_id=1)
    encoder = make_encoder("bert4rec", no_action_id=no_action)
    plain = make_encoder("bert4rec")
    generator = np.random.default_rng(1)
    sequences = [list(4 + generator.integers(0, 29, size=n)) for n in generator.integers(2, 14, size=40)]
    for row in range(0, 40, 3):  # every third sequence ends in an empty month
        sequences[row][-1] = no_action
    inputs = encoder.inputs(tokens=sequences)
    metrics = encoder.next_action_metrics(inputs, k=5)
    ends_in_action = [i for i, s in enumerate(sequences) if s[-1] != no_action]
    reference = plain.next_action_metrics(plain.inputs(tokens=[sequences[i] for i in ends_in_action]), k=5)
    assert metrics["count"] == len(ends_in_action) and metrics["targets"] == 40
    assert metrics["no_action_share"] == pytest.approx(14 / 40)
    assert metrics["hr@5"] == pytest.approx(reference["hr@5"]) and metrics["ndcg@5"] == pytest.approx(
        reference["ndcg@5"]
    )
    ranking = encoder.ranking_metrics(inputs, 5)
    assert (ranking.count, ranking.targets, ranking.no_action_share) == (26, 40, pytest.approx(14 / 40))
    # without the id every real target counts, the no-action ones included
    assert plain.next_action_metrics(plain.inputs(tokens=sequences), k=5)["count"] == 40


def test_next_action_metrics_reach_one_on_a_memorised_pattern(make_encoder: MakeEncoder) -> None:
    encoder = make_encoder("bert4rec", mask_last_prob=0.5, dropout=0.0)
    assert isinstance(encoder, Bert4RecEncoder)
    # Two fixed journeys, each ending with its own action.
    journeys = [[3, 4, 5, 6, 7], [8, 9, 10, 11, 12]]
    optimizer = torch.optim.AdamW(encoder.model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(60):
        loss = encoder.loss(encoder.mask(encoder.inputs(tokens=journeys * 8), generator))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    metrics = encoder.next_action_metrics(encoder.inputs(tokens=journeys), k=1)
    assert metrics["hr@1"] == 1.0 and metrics["ndcg@1"] == 1.0


def test_action_names_are_saved_with_the_weights(make_encoder: MakeEncoder, tmp_path: Path) -> None:
    names = [f"view:item{i}" for i in range(30)]
    encoder = Bert4RecEncoder.create(vocab_size=33, hidden_size=32, num_heads=2, max_len=8, actions=names)
    encoder.save(tmp_path)
    loaded = load_encoder(tmp_path)
    assert isinstance(loaded, Bert4RecEncoder) and loaded.actions == tuple(names)
    with pytest.raises(ValueError, match="31 action names"):
        Bert4RecEncoder.create(vocab_size=33, actions=[*names, "extra"])


def test_time_gaps_are_off_by_default_and_ride_on_the_token_type_embedding(
    make_encoder: MakeEncoder, tmp_path: Path
) -> None:
    tokens, gaps = [[3, 4, 5, 6, 7], [8, 9]], [[0, 1, 3, 100, 5000], [0, 7]]
    plain = make_encoder("bert4rec")
    assert not plain.uses_time_gaps and plain.input_columns == ("tokens",)
    assert "token_type_ids" not in plain.inputs(tokens=tokens, gaps=gaps)
    assert plain.model.config.type_vocab_size == 1  # the network of earlier results, unchanged

    timed = make_encoder("bert4rec", use_time_gaps=True, gap_buckets=12)
    assert timed.input_columns == ("tokens", "gaps") and timed.model.config.type_vocab_size == 12
    inputs = timed.inputs(tokens=tokens, gaps=gaps)
    # floor(log2(1 + days)), the last bucket open-ended; padding in bucket 0
    expected = [[min(11, int(math.log2(1 + d))) for d in row] for row in gaps]
    assert inputs["token_type_ids"].tolist() == [expected[0], [*expected[1], 0, 0, 0]]
    assert expected[0] == [0, 1, 2, 6, 11]
    with pytest.raises(ValueError, match="gaps=None"):
        timed.inputs(tokens=tokens)

    later = timed.inputs(tokens=tokens, gaps=[[0, 1, 3, 100, 9], [0, 7]])
    assert not torch.allclose(timed.embed(inputs)[0], timed.embed(later)[0])
    masked = timed.mask(inputs, torch.Generator().manual_seed(0))
    assert torch.equal(masked["token_type_ids"], inputs["token_type_ids"])  # masked actions keep their gap
    assert torch.isfinite(timed.loss(masked)) and timed.ranking_metrics(inputs, 5) is not None
    timed.save(tmp_path / "timed")
    loaded = load_encoder(tmp_path / "timed")
    assert torch.equal(loaded.embed(loaded.inputs(tokens=tokens, gaps=gaps)), timed.embed(inputs))


def test_sasrec_learns_a_deterministic_next_action_and_ranks_it_first(make_encoder, to_inputs) -> None:  # type: ignore[no-untyped-def]
    # every sequence walks 3 -> 4 -> ... in order: the next action is always the previous + 1
    encoder = make_encoder("sasrec", dropout=0.0)
    sequences = [list(range(3 + s, 3 + s + 6)) for s in range(8)]
    inputs = to_inputs(encoder, sequences)
    optimiser = torch.optim.Adam(encoder.model.parameters(), lr=0.01)
    before = encoder.next_action_metrics(inputs, k=1)["hr@1"]
    for _ in range(150):
        optimiser.zero_grad()
        encoder.loss(encoder.mask(inputs, torch.Generator())).backward()
        optimiser.step()
    after = encoder.next_action_metrics(inputs, k=1)
    assert after["count"] == 8 and after["hr@1"] == 1.0 > before
    # the embedding is the state after the last action; the held-out action never leaks into its own ranking
    assert encoder.embed(inputs).shape == (8, 32)

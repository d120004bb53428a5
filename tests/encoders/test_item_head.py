"""The item head at labelled positions only: the same loss as Hugging Face's full-logits path, and sampled softmax."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from custembed.encoders import SequenceEncoder
from custembed.encoders.item_head import LabelledPositionsLM
from custembed.encoders.masking import IGNORE_INDEX

SEQUENCES = [[0, 1, 2, 3, 4, 5, 6], [7, 8, 9], [10, 11, 12, 13, 14], [3, 3, 3, 3]]
ITEM_KINDS = ["bert4rec", "sasrec"]


def _masked(
    encoder: SequenceEncoder[Any], to_inputs: Callable[..., dict[str, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    return encoder.mask(to_inputs(encoder, SEQUENCES), torch.Generator().manual_seed(3))


@pytest.mark.parametrize("kind", ITEM_KINDS)
def test_labelled_positions_loss_equals_the_full_logits_loss(
    kind: str, make_encoder: Callable[..., SequenceEncoder[Any]], to_inputs: Callable[..., dict[str, torch.Tensor]]
) -> None:
    encoder = make_encoder(kind, dropout=0.0)
    batch = _masked(encoder, to_inputs)
    assert isinstance(encoder.training_module(), LabelledPositionsLM)
    reference = encoder.model(**encoder._model_inputs(batch), labels=batch["labels"]).loss
    ours = encoder.loss(batch)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)
    # the gradients flow to the same parameters, the tied item embeddings included
    ours.backward()
    assert encoder.model.get_input_embeddings().weight.grad is not None


@pytest.mark.parametrize("kind", ITEM_KINDS)
def test_stats_match_the_full_logits_at_the_labelled_positions(
    kind: str, make_encoder: Callable[..., SequenceEncoder[Any]], to_inputs: Callable[..., dict[str, torch.Tensor]]
) -> None:
    encoder = make_encoder(kind)
    batch = _masked(encoder, to_inputs)
    stats = encoder.masked_token_stats(batch)
    encoder.model.eval()
    with torch.no_grad():
        logits = encoder.model(**encoder._model_inputs(batch)).logits
    labels = batch["labels"]
    if encoder.causal:
        logits, labels = logits[:, :-1], labels[:, 1:]
    keep = labels != IGNORE_INDEX
    assert stats.count == int(keep.sum()) > 0
    assert stats.loss_sum == pytest.approx(
        float(F.cross_entropy(logits[keep], labels[keep], reduction="sum")), rel=1e-5
    )
    assert stats.correct == int((logits[keep].argmax(-1) == labels[keep]).sum())


@pytest.mark.parametrize("kind", ITEM_KINDS)
def test_sampled_softmax_trains(
    kind: str, make_encoder: Callable[..., SequenceEncoder[Any]], to_inputs: Callable[..., dict[str, torch.Tensor]]
) -> None:
    encoder = make_encoder(kind, sampled_negatives=8, dropout=0.0)
    assert encoder.training_module().negatives == 8
    optimizer = torch.optim.Adam(encoder.model.parameters(), lr=1e-2)
    torch.manual_seed(0)
    batch = _masked(encoder, to_inputs)
    full_before = encoder.masked_token_stats(batch).loss_sum
    for _ in range(30):
        loss = encoder.loss(batch)
        assert torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    # sampled training lowers the full-softmax loss that evaluation reports
    assert encoder.masked_token_stats(batch).loss_sum < full_before


def test_negative_sample_count_is_checked(make_encoder: Callable[..., SequenceEncoder[Any]]) -> None:
    with pytest.raises(ValueError, match="sampled_negatives"):
        make_encoder("bert4rec", sampled_negatives=-1)

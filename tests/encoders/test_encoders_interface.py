"""The shared interface, checked on a tiny model of every registered kind."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from custembed.encoders import (
    POOLINGS,
    SequenceEncoder,
    build_encoder,
    encoder_classes,
    load_encoder,
)
from custembed.encoders.masking import IGNORE_INDEX

KINDS = sorted(encoder_classes())
# kinds whose `mask` labels positions (masked or causal LM); contrastive kinds label views (test_coles.py)
TOKEN_KINDS = [kind for kind, cls in sorted(encoder_classes().items()) if cls.objective == "tokens"]
MakeEncoder = Callable[..., SequenceEncoder[Any]]
ToInputs = Callable[[SequenceEncoder[Any], list[list[int]]], dict[str, torch.Tensor]]


def cyclic_sequences(n: int, seed: int) -> list[list[int]]:
    """Runs a, a+1, a+2, ... (mod 10): every action is predictable from its neighbours."""
    rng = random.Random(seed)
    return [[(start + j) % 10 for j in range(rng.randint(6, 12))] for start in (rng.randrange(10) for _ in range(n))]


def themed_sequences(n: int, seed: int) -> list[list[int]]:
    """Each sequence draws from one of three themes of ten actions (0-9, 10-19, 20-29).

    All actions are equally frequent, so predicting a masked action better than 1 in 30
    needs the context: the other actions give the theme away (1 in 10).
    """
    rng = random.Random(seed)
    sequences = []
    for _ in range(n):
        theme = rng.randrange(3)
        sequences.append([10 * theme + rng.randrange(10) for _ in range(rng.randint(6, 12))])
    return sequences


def special_ids(encoder: SequenceEncoder[Any]) -> set[int]:
    if encoder.input_column == "tokens":
        return set(range(encoder.config.n_special))
    return set(encoder.tokenizer.all_special_ids)


def test_registry_holds_the_eight_kinds() -> None:
    assert KINDS == ["bert4rec", "causal_lm", "coles", "cpl4rec", "journeys_gpt2", "journeys_lstm", "mlm", "sasrec"]
    assert TOKEN_KINDS == ["bert4rec", "causal_lm", "cpl4rec", "journeys_gpt2", "journeys_lstm", "mlm", "sasrec"]
    assert all(cls.kind == kind for kind, cls in encoder_classes().items())


def test_unknown_kind_and_bad_parameters_are_value_errors() -> None:
    with pytest.raises(ValueError, match="'word2vec'"):
        build_encoder("word2vec")
    with pytest.raises(ValueError, match="bert4rec.*n_layers"):
        build_encoder("bert4rec", vocab_size=10, n_layers=3)
    with pytest.raises(ValueError, match="num_heads=3"):
        build_encoder("bert4rec", vocab_size=10, hidden_size=32, num_heads=3)


def test_load_encoder_rejects_a_directory_without_metadata(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="custembed_encoder.json"):
        load_encoder(tmp_path)


@pytest.mark.parametrize("kind", KINDS)
def test_output_shapes(kind: str, make_encoder: MakeEncoder, to_inputs: ToInputs) -> None:
    encoder = make_encoder(kind)
    inputs = to_inputs(encoder, [[1, 2, 3, 4, 5, 6], [7, 8]])
    input_ids, attention_mask = inputs["input_ids"], inputs["attention_mask"]
    batch, length = input_ids.shape
    assert batch == 2 and attention_mask.shape == (2, length)
    assert attention_mask[:, 0].all() and attention_mask[1].sum() < attention_mask[0].sum()

    for pooling in POOLINGS:
        assert encoder.embed(inputs, pooling=pooling).shape == (2, encoder.hidden_size)
    assert encoder.hidden_size == 32

    if encoder.objective == "contrastive":
        with pytest.raises(NotImplementedError, match="no attention"):
            encoder.attentions(inputs)
        masked = encoder.mask(inputs, torch.Generator().manual_seed(0))
        assert masked["labels"].shape == (2 * encoder.config.views,)  # one label per view
        loss = encoder.loss(masked)
        assert loss.ndim == 0 and torch.isfinite(loss)
        loss.backward()
        return
    if kind in ("journeys_lstm", "cpl4rec"):  # a recurrent language model; torch's fused encoder layers
        with pytest.raises(NotImplementedError, match="no attention"):
            encoder.attentions(inputs)
        layers: tuple[torch.Tensor, ...] = ()
    else:
        layers = encoder.attentions(inputs)
        assert len(layers) == 2
    real = attention_mask.bool()
    for weights in layers:
        assert weights.shape == (2, 2, length, length)  # [B, heads, L, L]
        # Each real query spreads all its attention over real keys only.
        sums = weights.sum(dim=-1)  # [B, heads, L]
        assert torch.allclose(sums[real.unsqueeze(1).expand_as(sums)], torch.tensor(1.0), atol=1e-5)
        assert weights[1][:, real[1]][:, :, ~real[1]].abs().max() < 1e-6
        if encoder.causal:
            assert torch.triu(weights, diagonal=1).abs().max() < 1e-6

    masked = encoder.mask(inputs, torch.Generator().manual_seed(0))
    assert masked["labels"].shape == (2, length)
    loss = encoder.loss(masked)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()  # the loss is trainable


@pytest.mark.parametrize("kind", KINDS)
def test_truncation_keeps_the_most_recent_actions(kind: str, make_encoder: MakeEncoder, to_inputs: ToInputs) -> None:
    encoder = make_encoder(kind, max_len=6)
    sequence = list(range(20))
    inputs = to_inputs(encoder, [sequence])
    assert inputs["input_ids"].shape == (1, 6)
    kept = [i for i in inputs["input_ids"][0].tolist() if i not in special_ids(encoder)]
    if encoder.input_column == "tokens":
        assert kept == [3 + a for a in sequence[-len(kept) :]]
    elif kind.startswith("journeys_"):  # a journey keeps its start: generation is conditioned on it
        words = [
            encoder.tokenizer.convert_tokens_to_string([t]).strip()
            for t in encoder.tokenizer.convert_ids_to_tokens(kept)
        ]
        assert words == [f"a{a}" for a in sequence[: len(kept)]]
    else:
        words = encoder.tokenizer.convert_ids_to_tokens(kept)
        assert words == [f"a{a}" for a in sequence[-len(kept) :]]
    assert len(kept) >= 4


@pytest.mark.parametrize("kind", TOKEN_KINDS)
def test_mask_never_touches_padding_and_labels_each_sequence(
    kind: str, make_encoder: MakeEncoder, to_inputs: ToInputs
) -> None:
    encoder = make_encoder(kind)
    rng = random.Random(1)
    sequences = [[rng.randrange(30) for _ in range(rng.randint(1, 12))] for _ in range(32)]
    inputs = to_inputs(encoder, sequences)
    input_ids, attention_mask = inputs["input_ids"], inputs["attention_mask"]
    specials = torch.tensor(sorted(special_ids(encoder)))
    labelled_total = 0
    for seed in range(20):
        masked = encoder.mask(inputs, torch.Generator().manual_seed(seed))
        labels = masked["labels"]
        labelled = labels != IGNORE_INDEX
        assert not (labelled & (attention_mask == 0)).any()
        assert torch.equal(masked["attention_mask"], attention_mask)
        if encoder.causal:
            assert torch.equal(labels, input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX))
            continue
        assert labelled.any(dim=1).all()  # at least one masked position per sequence
        assert not torch.isin(input_ids[labelled], specials).any()  # never special tokens
        assert torch.equal(labels[labelled], input_ids[labelled])
        assert torch.equal(masked["input_ids"][~labelled], input_ids[~labelled])
        labelled_total += int(labelled.sum())
    if not encoder.causal:
        candidates = int((attention_mask.bool() & ~torch.isin(input_ids, specials)).sum())
        share = labelled_total / (20 * candidates)
        assert 0.12 < share < 0.35  # 15 % plus the forced one in short sequences


@pytest.mark.parametrize("kind", KINDS)
def test_masking_is_reproducible_from_the_generator(kind: str, make_encoder: MakeEncoder, to_inputs: ToInputs) -> None:
    encoder = make_encoder(kind)
    inputs = to_inputs(encoder, cyclic_sequences(8, seed=3))
    first = encoder.mask(inputs, torch.Generator().manual_seed(5))
    second = encoder.mask(inputs, torch.Generator().manual_seed(5))
    assert all(torch.equal(first[name], second[name]) for name in first)


@pytest.mark.parametrize("kind", KINDS)
def test_padding_does_not_change_embeddings(kind: str, make_encoder: MakeEncoder, to_inputs: ToInputs) -> None:
    encoder = make_encoder(kind)
    short, long = [4, 5, 6], list(range(12))
    alone = encoder.embed(to_inputs(encoder, [short]))
    padded = encoder.embed(to_inputs(encoder, [short, long]))[:1]
    assert torch.allclose(alone, padded, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_save_then_load_gives_identical_vectors(
    kind: str, make_encoder: MakeEncoder, to_inputs: ToInputs, tmp_path: Path
) -> None:
    encoder = make_encoder(kind)
    # Move the weights away from their initial values so that loading must restore them.
    with torch.no_grad():
        for parameter in encoder.model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    sequences = cyclic_sequences(5, seed=7)
    encoder.save(tmp_path / "saved")
    loaded = load_encoder(tmp_path / "saved")
    assert type(loaded) is type(encoder) and loaded.kind == kind
    assert loaded.config.max_len == encoder.config.max_len and loaded.pooling == encoder.pooling
    inputs = to_inputs(encoder, sequences)
    reloaded_inputs = to_inputs(loaded, sequences)
    assert all(torch.equal(inputs[name], reloaded_inputs[name]) for name in inputs)
    assert torch.equal(encoder.embed(inputs), loaded.embed(reloaded_inputs))
    assert (tmp_path / "saved" / "model.safetensors").is_file()


@pytest.mark.parametrize("kind", TOKEN_KINDS)
def test_loss_falls_on_a_learnable_pattern(kind: str, make_encoder: MakeEncoder, to_inputs: ToInputs) -> None:
    encoder = make_encoder(kind)
    train, held_out = themed_sequences(256, seed=0), themed_sequences(32, seed=1)
    held_out_batch = encoder.mask(to_inputs(encoder, held_out), torch.Generator().manual_seed(0))

    def held_out_loss() -> float:
        stats = encoder.masked_token_stats(held_out_batch)
        return stats.loss_sum / stats.count

    before = held_out_loss()
    # the LSTM takes a larger step than the transformers
    optimizer = torch.optim.AdamW(encoder.model.parameters(), lr=1e-2 if kind == "journeys_lstm" else 3e-3)
    # Post-LN BERTs need a warm-up to leave the uniform-attention plateau reliably.
    warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 20))
    generator, rng = torch.Generator().manual_seed(1), random.Random(2)
    encoder.model.train()
    # the LSTM idles near the unigram loss for its first ~150 steps before it carries the theme
    for _ in range(400 if kind == "journeys_lstm" else 150):
        batch = encoder.mask(to_inputs(encoder, rng.sample(train, 32)), generator)
        loss = encoder.loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        warmup.step()
    after = held_out_loss()
    # Chance is ln 30 = 3.4 and knowing the theme gives ln 10 = 2.3.
    assert after < 0.8 * before and after < 2.8, (before, after)

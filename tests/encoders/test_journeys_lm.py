"""GPT-2 and LSTM journey language models: tiny configs, shapes, a falling loss, sampling."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from custembed.encoders import build_encoder, load_encoder
from custembed.journeys.tokenizer import (
    BOUNDARY,
    clean_text,
    extend_tokenizer,
    journey_input,
    save_tokenizer,
    train_tokenizer,
)
from tests.journeys.conftest import journey_texts

TINY = {
    "journeys_gpt2": {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "max_len": 64, "dropout": 0.0},
    "journeys_lstm": {"embedding_dim": 32, "hidden_size": 32, "num_layers": 2, "max_len": 64, "dropout": 0.0},
}


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("bpe")
    save_tokenizer(train_tokenizer(journey_texts(64), vocab_size=300), path)
    return str(path)


def test_tokenizer_round_trip_and_codes_stay_whole() -> None:
    texts = journey_texts(64)
    tokenizer = train_tokenizer(texts, vocab_size=400)
    ids = tokenizer(journey_input(texts[0]))["input_ids"]
    assert ids[0] == ids[-1] == tokenizer.convert_tokens_to_ids(BOUNDARY)
    assert clean_text(tokenizer.decode(ids)) == texts[0]
    # whitespace pre-tokenisation: no token spans two codes
    assert all(" " not in tokenizer.convert_tokens_to_string([t]).strip() for t in tokenizer.convert_ids_to_tokens(ids))
    assert len(tokenizer) <= 400


@pytest.mark.parametrize("kind", sorted(TINY))
def test_shapes_falling_loss_sampling_and_save(kind: str, tokenizer_dir: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    encoder: Any = build_encoder(kind, tokenizer_dir=tokenizer_dir, **TINY[kind])
    texts = journey_texts(16, seed=1)
    batch = encoder.mask(encoder.inputs(texts=texts), torch.Generator().manual_seed(0))
    batch_size, length = batch["input_ids"].shape
    assert batch_size == 16 and length <= 64
    assert encoder.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.shape == (
        16,
        length,
        len(encoder.tokenizer),
    )
    optimizer = torch.optim.AdamW(encoder.model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = encoder.loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0]

    prompts = [" ".join(text.split()[:7]) for text in texts[:3]]
    sampled = encoder.generate_texts(prompts, max_new_tokens=20, temperature=1.0, top_k=50, seed=3)
    assert len(sampled) == 3
    assert all(text.startswith(prompt) for text, prompt in zip(sampled, prompts, strict=True))
    assert sampled == encoder.generate_texts(prompts, max_new_tokens=20, temperature=1.0, top_k=50, seed=3)

    encoder.save(tmp_path / "enc")
    loaded: Any = load_encoder(tmp_path / "enc")
    assert loaded.kind == kind and loaded.tokenizer.get_vocab() == encoder.tokenizer.get_vocab()
    assert torch.allclose(loaded.loss(batch), encoder.loss(batch))


def other_store_texts(n: int) -> list[str]:
    """Journeys over codes the first store's texts never use (another block of the code square)."""
    return [text.replace("A", "G") for text in journey_texts(n, seed=5)]


def test_extended_tokenizer_keeps_ids_and_cuts_new_codes_whole() -> None:
    source = train_tokenizer(journey_texts(64), vocab_size=300)
    target = train_tokenizer(other_store_texts(64), vocab_size=300)
    grown = extend_tokenizer(source, target)
    old = source.get_vocab()
    assert all(grown.get_vocab()[token] == i for token, i in old.items())
    assert len(grown) > len(source)
    text = other_store_texts(1)[0]
    # cut at least as finely as the target store's own BPE cuts it, far coarser than bytes
    assert len(grown(text)["input_ids"]) <= len(target(text)["input_ids"]) < len(source(text)["input_ids"])
    assert clean_text(grown.decode(grown(journey_input(text))["input_ids"])) == text
    first = journey_texts(1)[0]  # the first store's texts still round-trip
    assert clean_text(grown.decode(grown(journey_input(first))["input_ids"])) == first


@pytest.mark.parametrize("kind", sorted(TINY))
def test_fine_tuning_grows_the_model_with_the_tokenizer(kind: str, tokenizer_dir: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    encoder: Any = build_encoder(kind, tokenizer_dir=tokenizer_dir, **TINY[kind])
    source = encoder.tokenizer
    grown_dir = tmp_path / "grown"
    save_tokenizer(extend_tokenizer(source, train_tokenizer(other_store_texts(64), vocab_size=300)), grown_dir)
    before = encoder.model.get_input_embeddings().weight.detach().clone()
    assert encoder.for_fine_tuning({"tokenizer_dir": ""}) is encoder  # no grown tokenizer: unchanged
    tuned: Any = encoder.for_fine_tuning({"tokenizer_dir": str(grown_dir)})
    n = len(tuned.tokenizer)
    assert n > len(source)
    rows = tuned.model.get_input_embeddings().weight
    assert rows.shape[0] == n and torch.equal(rows[: len(source)], before)
    assert tuned.model.get_output_embeddings().weight.shape[0] == n
    # a new token starts at the mean of the rows of the pieces the old tokenizer cut it into
    token = tuned.tokenizer.convert_ids_to_tokens(n - 1)
    pieces = source(tuned.tokenizer.convert_tokens_to_string([token]), add_special_tokens=False)["input_ids"]
    assert torch.allclose(rows[n - 1], before[pieces].mean(dim=0))
    batch = tuned.mask(tuned.inputs(texts=other_store_texts(8)), torch.Generator().manual_seed(0))
    assert int(batch["input_ids"].max()) >= len(source)  # the new store's codes use the new ids
    assert torch.isfinite(tuned.loss(batch))
    tuned.save(tmp_path / "saved")
    again: Any = load_encoder(tmp_path / "saved")
    assert len(again.tokenizer) == n and again.model.get_input_embeddings().weight.shape[0] == n

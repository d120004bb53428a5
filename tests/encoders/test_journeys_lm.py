"""GPT-2 and LSTM journey language models: tiny configs, shapes, a falling loss, sampling."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from custembed.encoders import build_encoder, load_encoder
from custembed.journeys.tokenizer import BOUNDARY, clean_text, journey_input, save_tokenizer, train_tokenizer
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

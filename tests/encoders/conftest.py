"""Tiny offline checkpoints for every encoder kind (no hub access)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    BertTokenizerFast,
    ElectraConfig,
    ElectraForMaskedLM,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from custembed.encoders import SequenceEncoder, build_encoder

ACTION_WORDS = [f"a{i}" for i in range(30)]
N_ACTIONS = 30
BERT4REC_VOCAB = 3 + N_ACTIONS  # pad, mask, unk + actions


@pytest.fixture(autouse=True)
def _small_torch(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_electra_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer ELECTRA generator with a WordPiece tokenizer over the action words."""
    directory = tmp_path_factory.mktemp("tiny_electra")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *ACTION_WORDS]
    # transformers 5 ignores `vocab_file=`: the vocabulary goes in as `vocab`.
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(words)})
    tokenizer.save_pretrained(directory)
    config = ElectraConfig(
        vocab_size=len(words),
        embedding_size=16,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    ElectraForMaskedLM(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Llama with a word-level tokenizer that has no pad token."""
    directory = tmp_path_factory.mktemp("tiny_llama")
    words = ["<unk>", "<s>", "</s>", *ACTION_WORDS]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    tokenizer.save_pretrained(directory)
    config = LlamaConfig(
        vocab_size=len(words),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_journeys_bpe_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A byte-level BPE learnt on action text, for the journey language models."""
    from custembed.journeys.tokenizer import save_tokenizer, train_tokenizer

    directory = tmp_path_factory.mktemp("tiny_journeys_bpe")
    texts = [" ".join(ACTION_WORDS[(start + j) % N_ACTIONS] for j in range(12)) for start in range(N_ACTIONS)]
    save_tokenizer(train_tokenizer(texts, vocab_size=300, min_frequency=1), directory)
    return directory


@pytest.fixture(scope="session")
def tiny_vocabulary_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run vocabulary of the 30 test actions, each buying its own item (CPL4Rec's id split comes from it)."""
    from custembed.catalogue import N_SPECIAL

    path = tmp_path_factory.mktemp("vocabulary") / "vocabulary.json"
    actions = [["buying", word, f"buying {word}"] for word in ACTION_WORDS]
    path.write_text(json.dumps({"catalogue": "tiny", "n_special": N_SPECIAL, "actions": actions}))
    return path


@pytest.fixture
def make_encoder(
    tiny_electra_dir: Path, tiny_llama_dir: Path, tiny_journeys_bpe_dir: Path, tiny_vocabulary_file: Path
) -> Callable[..., SequenceEncoder[Any]]:
    """Build a tiny encoder of any registered kind: ``make_encoder(kind, **overrides)``."""

    def make(kind: str, **overrides: Any) -> SequenceEncoder[Any]:
        torch.manual_seed(0)
        defaults: dict[str, dict[str, Any]] = {
            "bert4rec": {
                "vocab_size": BERT4REC_VOCAB,
                "hidden_size": 32,
                "num_layers": 2,
                "num_heads": 2,
                "max_len": 16,
            },
            "coles": {
                "vocab_size": BERT4REC_VOCAB,
                "hidden_size": 32,
                "embedding_dim": 16,
                "max_len": 16,
                "min_view_len": 2,
                "max_view_len": 8,
            },
            "cpl4rec": {
                "vocab_size": BERT4REC_VOCAB,
                "vocabulary_file": str(tiny_vocabulary_file),
                "hidden_size": 32,
                "num_layers": 2,
                "num_heads": 2,
                "max_len": 16,
                "mask_prob": 0.15,
                "num_prompts": 2,
                "prompt_hidden": 32,
            },
            "sasrec": {"vocab_size": BERT4REC_VOCAB, "hidden_size": 32, "num_layers": 2, "num_heads": 2, "max_len": 16},
            "mlm": {"checkpoint": str(tiny_electra_dir), "max_len": 16},
            "causal_lm": {"checkpoint": str(tiny_llama_dir), "max_len": 16},
            "journeys_gpt2": {
                "tokenizer_dir": str(tiny_journeys_bpe_dir),
                "hidden_size": 32,
                "num_layers": 2,
                "num_heads": 2,
                "max_len": 16,
            },
            "journeys_lstm": {
                "tokenizer_dir": str(tiny_journeys_bpe_dir),
                "embedding_dim": 16,
                "hidden_size": 32,
                "num_layers": 2,
                "max_len": 16,
                "dropout": 0.0,
            },
        }
        if kind not in defaults:
            raise ValueError(f"no tiny configuration for kind {kind!r}")
        return build_encoder(kind, **{**defaults[kind], **overrides})

    return make


def action_ids(sequence: list[int]) -> list[int]:
    """Action numbers 0..29 as BERT4Rec ids."""
    return [3 + a for a in sequence]


def action_text(sequence: list[int]) -> str:
    return " ".join(ACTION_WORDS[a] for a in sequence)


def action_gaps(sequence: list[int]) -> list[int]:
    """Days since the previous action, made up from the actions (0 for the first)."""
    return [0, *((a * 7) % 40 for a in sequence[1:])]


@pytest.fixture
def to_inputs() -> Callable[[SequenceEncoder[Any], list[list[int]]], dict[str, torch.Tensor]]:
    """``to_inputs(encoder, sequences)``: inputs of action numbers in the form ``encoder`` reads
    (with made-up time gaps, which the encoders that do not use them ignore)."""

    def convert(encoder: SequenceEncoder[Any], sequences: list[list[int]]) -> dict[str, torch.Tensor]:
        gaps = [action_gaps(s) for s in sequences]
        if encoder.input_column == "tokens":
            return encoder.inputs(tokens=[action_ids(s) for s in sequences], gaps=gaps)
        return encoder.inputs(texts=[action_text(s) for s in sequences], gaps=gaps)

    return convert

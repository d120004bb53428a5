"""Fine-tuning a Hugging Face masked-LM checkpoint on the customers' action text.

Any checkpoint ``AutoModelForMaskedLM`` accepts works (a hub name or a local
directory); a checkpoint saved without an MLM head (e.g. a sentence encoder) gets a
freshly initialised one. The text is cut to the checkpoint's own tokenizer with the
oldest part dropped (``truncation_side="left"``).

Masking follows ``transformers.DataCollatorForLanguageModeling`` (15 % of the real,
non-special tokens; of those 80 % ``[MASK]``, 10 % a random token, 10 % unchanged),
vectorised, and in addition masks at least one token per sequence. Embeddings pool
the base model's last hidden state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from transformers import AutoModelForMaskedLM

from custembed.encoders.base import HfTextEncoder
from custembed.encoders.masking import Inputs, check_fraction, check_pooling, choose_positions, corrupt


@dataclass(frozen=True)
class MlmConfig:
    """Which masked-LM checkpoint to fine-tune, and how."""

    checkpoint: str = field(
        default="google/electra-small-generator",
        metadata={"help": "Hub name or local directory of a masked-LM checkpoint."},
    )
    max_len: int = field(default=512, metadata={"help": "Most recent tokens kept per text."})
    mask_prob: float = field(default=0.15, metadata={"help": "Probability of masking a token."})
    pooling: str = field(default="mean", metadata={"help": "Default pooling: mean, first or last."})

    def __post_init__(self) -> None:
        if not self.checkpoint:
            raise ValueError("checkpoint must name a model, got an empty string")
        if self.max_len < 2:
            raise ValueError(f"max_len must be at least 2, got {self.max_len!r}")
        check_fraction("mask_prob", self.mask_prob, open_low=True)
        check_pooling(self.pooling)


class MlmEncoder(HfTextEncoder[MlmConfig]):
    """A Hugging Face masked LM over action text."""

    kind: ClassVar[str] = "mlm"
    config_class: ClassVar[type[Any]] = MlmConfig

    @classmethod
    def from_config(cls, config: Any) -> MlmEncoder:
        tokenizer = cls.load_tokenizer(config.checkpoint)
        if tokenizer.mask_token_id is None:
            raise ValueError(f"tokenizer of {config.checkpoint!r} has no mask token")
        model = AutoModelForMaskedLM.from_pretrained(config.checkpoint)
        return cls(config, model, tokenizer)

    def mask(self, inputs: Inputs, generator: torch.Generator) -> Inputs:
        # Never special tokens ([CLS], [SEP], padding); at least one token per sequence.
        chosen = choose_positions(self.candidates(inputs), self.config.mask_prob, generator)
        # Random replacements come from the ids both tokenizer and embeddings know.
        random_high = min(len(self.tokenizer), int(self.model.config.vocab_size))
        corrupted = corrupt(
            inputs["input_ids"],
            chosen,
            mask_id=int(self.tokenizer.mask_token_id),
            generator=generator,
            mask_frac=0.8,
            random_frac=0.1,
            random_high=random_high,
        )
        return {**inputs, **corrupted}

"""Fine-tuning a Hugging Face causal-LM checkpoint on the customers' action text.

Any checkpoint ``AutoModelForCausalLM`` accepts works. The objective is next-token
prediction over the real tokens (labels are the inputs, padding set to -100; the model
shifts them). A tokenizer without a padding token pads with its end-of-sequence token.
Embeddings default to the last real token's hidden state, the only one that has seen
the whole sequence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from transformers import AutoModelForCausalLM

from custembed.encoders.base import HfTextEncoder
from custembed.encoders.masking import IGNORE_INDEX, Inputs, check_pooling


@dataclass(frozen=True)
class CausalLmConfig:
    """Which causal-LM checkpoint to fine-tune, and how."""

    checkpoint: str = field(metadata={"help": "Hub name or local directory of a causal-LM checkpoint."})
    max_len: int = field(default=512, metadata={"help": "Most recent tokens kept per text."})
    pooling: str = field(default="last", metadata={"help": "Default pooling: last, mean or first."})

    def __post_init__(self) -> None:
        if not self.checkpoint:
            raise ValueError("checkpoint must name a model, got an empty string")
        if self.max_len < 2:
            raise ValueError(f"max_len must be at least 2, got {self.max_len!r}")
        check_pooling(self.pooling)


class CausalLmEncoder(HfTextEncoder[CausalLmConfig]):
    """A Hugging Face causal LM over action text."""

    kind: ClassVar[str] = "causal_lm"
    config_class: ClassVar[type[Any]] = CausalLmConfig
    causal: ClassVar[bool] = True

    @classmethod
    def from_config(cls, config: Any) -> CausalLmEncoder:
        tokenizer = cls.load_tokenizer(config.checkpoint)
        if tokenizer.pad_token is None:
            if tokenizer.eos_token is None:
                raise ValueError(f"tokenizer of {config.checkpoint!r} has neither a pad nor an eos token")
            tokenizer.pad_token = tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(config.checkpoint)
        # Training and embedding never decode step by step: no key/value cache.
        model.config.use_cache = False
        return cls(config, model, tokenizer)

    def mask(self, inputs: Inputs, generator: torch.Generator) -> Inputs:
        # Every real token is a target; only padding is ignored. No randomness needed.
        labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, IGNORE_INDEX)
        return {**inputs, "labels": labels}

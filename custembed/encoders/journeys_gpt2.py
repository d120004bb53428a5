"""GPT-2 trained from scratch on in-store journey text (system B; arXiv 2407.11081).

The network is Hugging Face's ``GPT2LMHeadModel`` with fresh weights; its size is the
config's (GPT-2 small: 12 layers, 12 heads, 768 wide, for real runs; a few layers of 32
in tests). Its vocabulary is a byte-level BPE learnt on the training journeys by the
train job (:mod:`custembed.journeys.tokenizer`) before the model is built: the config's
``tokenizer_dir`` is a data field the job fills in. Both are saved together.

Objective: next-token prediction over every real token of ``<|endoftext|> journey
<|endoftext|>`` (padding ignored); the closing token teaches the model where journeys end.
Generation (:meth:`JourneyLmEncoder.generate_texts`) samples continuations of prompts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedModel

from custembed.encoders.journey_lm import JourneyLmEncoder
from custembed.encoders.masking import check_fraction, check_pooling
from custembed.journeys.tokenizer import load_tokenizer


@dataclass(frozen=True)
class JourneysGpt2Config:
    """GPT-2's size and its BPE vocabulary (``tokenizer_dir`` is filled in by the train job)."""

    tokenizer_dir: str = field(default="", metadata={"help": "Saved BPE tokenizer (set by the train job)."})
    bpe_vocab_size: int = field(default=4000, metadata={"help": "BPE vocabulary learnt on the corpus (paper: 50k)."})
    bpe_min_frequency: int = field(default=2, metadata={"help": "Fewest occurrences of a pair merged by BPE."})
    hidden_size: int = field(default=768, metadata={"help": "Width (n_embd); GPT-2 small: 768."})
    num_layers: int = field(default=12, metadata={"help": "Transformer blocks; GPT-2 small: 12."})
    num_heads: int = field(default=12, metadata={"help": "Attention heads; GPT-2 small: 12."})
    max_len: int = field(default=512, metadata={"help": "Longest journey in tokens (n_positions); longer are cut."})
    dropout: float = field(default=0.1, metadata={"help": "Residual, embedding and attention dropout."})
    pooling: str = field(default="last", metadata={"help": "Default pooling of embed(): last, mean or first."})

    def __post_init__(self) -> None:
        if self.bpe_vocab_size < 258:
            raise ValueError(f"bpe_vocab_size must be at least 258 (bytes + boundary), got {self.bpe_vocab_size}")
        if self.bpe_min_frequency < 1:
            raise ValueError(f"bpe_min_frequency must be positive, got {self.bpe_min_frequency}")
        for name in ("hidden_size", "num_layers", "num_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}")
        if self.max_len < 2:
            raise ValueError(f"max_len must be at least 2, got {self.max_len}")
        check_fraction("dropout", self.dropout)
        check_pooling(self.pooling)


class JourneysGpt2Encoder(JourneyLmEncoder):
    """GPT-2 from scratch over journey BPE tokens."""

    kind: ClassVar[str] = "journeys_gpt2"
    config_class: ClassVar[type[Any]] = JourneysGpt2Config

    @classmethod
    def model_class(cls) -> type[PreTrainedModel]:
        return GPT2LMHeadModel

    @classmethod
    def from_config(cls, config: Any) -> JourneysGpt2Encoder:
        if not config.tokenizer_dir:
            raise ValueError("journeys_gpt2 needs tokenizer_dir: the train job learns the BPE before building it")
        tokenizer = load_tokenizer(config.tokenizer_dir)
        model = GPT2LMHeadModel(
            GPT2Config(
                vocab_size=len(tokenizer),
                n_positions=config.max_len,
                n_embd=config.hidden_size,
                n_layer=config.num_layers,
                n_head=config.num_heads,
                resid_pdrop=config.dropout,
                embd_pdrop=config.dropout,
                attn_pdrop=config.dropout,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
                use_cache=False,  # training never decodes step by step
            )
        )
        return cls(config, model, tokenizer)

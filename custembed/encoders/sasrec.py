"""SASRec (Kang & McAuley, ICDM 2018): a causal self-attention model over action ids, from scratch.

Each position predicts the next action from the ones before it (left-to-right
attention), trained with the cross-entropy of every next action of a sequence over
the whole vocabulary, the objective of the next-item literature's strong SASRec
baselines (the paper sampled one negative per position; full softmax is what recent
reproductions found stronger). The network is a GPT-2 (``GPT2LMHeadModel``): learned
positions, pre-norm blocks, item embeddings tied to the output layer, as SASRec has;
sizes follow the paper (hidden 50-64, 2 blocks, 1 head, dropout 0.2 on sparse data).

Ids are system A's: 0 padding, 1 mask (unused here), 2 unknown, actions from
``n_special`` on. The embedding of a customer is the hidden state after its last
action (``pooling: last``): the state that predicts what comes next.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedModel

from custembed.encoders.action_ids import ActionIdEncoder, check_id_layout
from custembed.encoders.masking import (
    IGNORE_INDEX,
    Inputs,
    check_action_ids,
    check_fraction,
    check_pooling,
    pad_right_keep_recent,
)
from custembed.nextitem import last_action_metrics


@dataclass(frozen=True)
class SasRecConfig:
    """Size of a SASRec model."""

    vocab_size: int = field(metadata={"help": "Number of ids: special ids plus actions."})
    hidden_size: int = field(default=64, metadata={"help": "Width of embeddings and blocks."})
    num_layers: int = field(default=2, metadata={"help": "Self-attention blocks."})
    num_heads: int = field(default=1, metadata={"help": "Attention heads per block."})
    max_len: int = field(default=200, metadata={"help": "Most recent actions kept per sequence."})
    dropout: float = field(default=0.2, metadata={"help": "Embedding, attention and residual dropout."})
    pad_id: int = field(default=0, metadata={"help": "Padding id."})
    n_special: int = field(default=3, metadata={"help": "Ids below this are special; actions start here."})
    pooling: str = field(default="last", metadata={"help": "Default pooling: last, mean or first."})
    sampled_negatives: int = field(
        default=0,
        metadata={"help": "0: full softmax over the items; K > 0: sampled softmax with K uniform negatives."},
    )
    no_action_id: int | None = field(
        default=None,
        metadata={"help": "Id of the catalogue's 'no action' token: left out of HR/NDCG (no_action_share)."},
    )

    def __post_init__(self) -> None:
        check_id_layout(
            vocab_size=self.vocab_size, n_special=self.n_special, no_action_id=self.no_action_id, pad_id=self.pad_id
        )
        for name in ("hidden_size", "num_layers", "num_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if self.max_len < 2:
            raise ValueError(f"max_len must be at least 2 (one action predicts the next), got {self.max_len!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size={self.hidden_size} is not a multiple of num_heads={self.num_heads}")
        check_fraction("dropout", self.dropout)
        check_pooling(self.pooling)
        if self.sampled_negatives < 0:
            raise ValueError(f"sampled_negatives must be 0 or positive, got {self.sampled_negatives}")


def gpt2_config(config: SasRecConfig) -> GPT2Config:
    """The ``GPT2Config`` of the network behind ``config``."""
    return GPT2Config(
        vocab_size=config.vocab_size,
        n_positions=config.max_len,
        n_embd=config.hidden_size,
        n_layer=config.num_layers,
        n_head=config.num_heads,
        n_inner=config.hidden_size * 4,
        resid_pdrop=config.dropout,
        embd_pdrop=config.dropout,
        attn_pdrop=config.dropout,
        bos_token_id=config.pad_id,
        eos_token_id=config.pad_id,
        pad_token_id=config.pad_id,
        tie_word_embeddings=True,
        use_cache=False,  # training and embedding never decode step by step
    )


class SasRecEncoder(ActionIdEncoder[SasRecConfig]):
    """SASRec over action ids; ``actions`` optionally names the ids from ``n_special`` on."""

    kind: ClassVar[str] = "sasrec"
    config_class: ClassVar[type[Any]] = SasRecConfig
    model_class: ClassVar[type[PreTrainedModel]] = GPT2LMHeadModel
    causal: ClassVar[bool] = True
    model: GPT2LMHeadModel

    @classmethod
    def build_model(cls, config: Any) -> PreTrainedModel:
        return GPT2LMHeadModel(gpt2_config(config))

    def inputs(
        self,
        tokens: Sequence[Sequence[int]] | None = None,
        texts: Sequence[str] | None = None,
        gaps: Sequence[Sequence[int]] | None = None,
        amounts: Sequence[Sequence[int]] | None = None,
    ) -> Inputs:
        tokens = check_action_ids(tokens, vocab_size=self.config.vocab_size, kind=self.kind)
        return pad_right_keep_recent(tokens, max_len=self.max_len, pad_id=self.config.pad_id)

    def mask(self, inputs: Inputs, generator: torch.Generator) -> Inputs:
        # Every real action is a target of the position before it (the model shifts the labels);
        # padding and special ids are never predicted. No randomness needed.
        input_ids = inputs["input_ids"]
        predicted = inputs["attention_mask"].bool() & (input_ids >= self.config.n_special)
        return {**inputs, "labels": input_ids.masked_fill(~predicted, IGNORE_INDEX)}

    @torch.no_grad()
    def next_action_scores(self, inputs: Inputs) -> torch.Tensor:
        """``[B, V]`` scores of every id as each sequence's next action, after all of its actions."""
        inputs = self._on_device(inputs)
        attention_mask = inputs["attention_mask"]
        rows = torch.arange(attention_mask.size(0), device=attention_mask.device)
        last = (attention_mask.sum(dim=1) - 1).clamp(min=0)  # [B]
        with self._eval_mode():
            # the head only at each sequence's last state: [B, V], not the [B, L, V] of every position
            hidden = self.model.transformer(input_ids=inputs["input_ids"], attention_mask=attention_mask)
            return self.model.lm_head(hidden.last_hidden_state[rows, last]).float()

    @torch.no_grad()
    def score_next(self, tokens: Sequence[Sequence[int]], gaps: Sequence[Sequence[int]] | None = None) -> torch.Tensor:
        return self.next_action_scores(self.inputs(tokens=tokens))

    @torch.no_grad()
    def next_action_metrics(self, inputs: Inputs, k: int = 10) -> dict[str, float]:
        """HR@k / NDCG@k of the last action of each sequence from its prefix (:func:`last_action_metrics`).

        Sequences of one action have no prefix and are left out.
        """
        inputs = self._on_device(inputs)
        attention_mask = inputs["attention_mask"]  # [B, L]
        lengths = attention_mask.sum(dim=1)  # [B]
        rows = torch.arange(attention_mask.size(0), device=attention_mask.device)
        targets = inputs["input_ids"][rows, (lengths - 1).clamp(min=0)]  # [B]
        prefix = {"input_ids": inputs["input_ids"].clone(), "attention_mask": attention_mask.clone()}
        prefix["attention_mask"][rows, (lengths - 1).clamp(min=0)] = 0  # hide the held-out action
        prefix["input_ids"][rows, (lengths - 1).clamp(min=0)] = self.config.pad_id
        real = (lengths > 1) & (targets >= self.config.n_special)
        scores = self.next_action_scores(prefix)
        return last_action_metrics(
            scores, targets, real, first_item=self.config.n_special, no_action_id=self.config.no_action_id, k=k
        )

"""BERT4Rec (Sun et al., 2019) trained from scratch over our action vocabulary.

The network is ``transformers.BertForMaskedLM`` built from a ``BertConfig``; we wrap it
rather than fork it because it gives us, kept up by others: attention with the SDPA
kernels (and an eager path for attention maps), learned position embeddings, an output
layer tied to the item (action) embeddings through ``tie_word_embeddings`` as in the
paper, and safetensors save/load through ``save_pretrained``/``from_pretrained``.

Token ids: 0 is padding, 1 the ``[mask]`` token, 2 an unknown action, actions start at 3.

Training objective (the paper's Cloze task): each real action is chosen with
probability ``mask_prob`` and *every* chosen position is replaced by ``[mask]`` (no
80/10/10 split as in BERT), with at least one chosen position per sequence. Optionally
(``mask_last_prob``) a fraction of the sequences has only its last action masked, which
matches the next-action use at inference.

Time gaps (``use_time_gaps``, off by default so that earlier results stay put): the days
since the previous token are bucketed as ``floor(log2(1 + days))`` (``gap_buckets``, the
last open-ended) and embedded through BERT's token-type embedding, added to the action and
position embeddings. A masked action keeps its gap: the model learns what happens *when*,
and in the ranking below the held-out action's gap is known (the time of the next event,
as in time-aware recommenders).

Evaluation (:meth:`Bert4RecEncoder.next_action_metrics`): time-ordered leave-one-out.
Each sequence's last action is held out, the input is the sequence without it followed
by ``[mask]`` and the model ranks *all* actions (special ids excluded, no sampled
negatives, already-seen actions kept since actions repeat) at that position; HR@k and
NDCG@k follow from the held-out action's rank. The protocol is named
:data:`RANKING_PROTOCOL`: full ranking, leave-last-out, action targets, pessimistic ties. A held-out
``no action`` (an empty month, ``no_action_id``) is easy to rank and says nothing about
the next purchase, so such sequences are left out of HR/NDCG; their share of the
targets is reported separately (``no_action_share``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from transformers import BertConfig, BertForMaskedLM, PreTrainedModel

from custembed.encoders.action_ids import ActionIdEncoder, check_id_layout
from custembed.encoders.masking import (
    Inputs,
    check_action_ids,
    check_fraction,
    check_gaps,
    check_pooling,
    choose_positions,
    corrupt,
    gap_buckets,
    pad_right_keep_recent,
)
from custembed.nextitem import last_action_metrics

RANKING_PROTOCOL = "full ranking, leave-last-out, action targets, pessimistic ties"


@dataclass(frozen=True)
class Bert4RecConfig:
    """Size and objective of a BERT4Rec model."""

    vocab_size: int = field(metadata={"help": "Number of ids: special ids plus actions."})
    hidden_size: int = field(default=64, metadata={"help": "Width of embeddings and layers."})
    num_layers: int = field(default=2, metadata={"help": "Transformer layers."})
    num_heads: int = field(default=2, metadata={"help": "Attention heads per layer."})
    max_len: int = field(default=200, metadata={"help": "Most recent actions kept per sequence."})
    dropout: float = field(default=0.1, metadata={"help": "Hidden and attention dropout."})
    mask_prob: float = field(default=0.15, metadata={"help": "Probability of masking an action."})
    pad_id: int = field(default=0, metadata={"help": "Padding id."})
    mask_id: int = field(default=1, metadata={"help": "[mask] id."})
    unk_id: int = field(default=2, metadata={"help": "Id of actions outside the vocabulary."})
    n_special: int = field(default=3, metadata={"help": "Ids below this are special; actions start here."})
    mask_last_prob: float = field(
        default=0.0,
        metadata={"help": "Fraction of sequences whose only masked action is the last one."},
    )
    pooling: str = field(default="mean", metadata={"help": "Default pooling: mean, first or last."})
    use_time_gaps: bool = field(
        default=False,
        metadata={"help": "Add an embedding of the bucketed days since the previous token (sequences.gaps)."},
    )
    gap_buckets: int = field(
        default=12, metadata={"help": "Gap buckets: floor(log2(1 + days)), the last one open-ended."}
    )
    sampled_negatives: int = field(
        default=0,
        metadata={
            "help": "0: full softmax over the items at the masked positions; K > 0: sampled softmax with K "
            "uniform negatives shared by the batch (for catalogues of 100 k+ items)."
        },
    )
    no_action_id: int | None = field(
        default=None,
        metadata={
            "help": "Id of the catalogue's 'no action' token (ActionCatalogue.no_action_id): held-out targets "
            "with it are left out of HR/NDCG and counted in no_action_share. None: every action target counts."
        },
    )

    def __post_init__(self) -> None:
        check_id_layout(
            vocab_size=self.vocab_size,
            n_special=self.n_special,
            no_action_id=self.no_action_id,
            pad_id=self.pad_id,
            mask_id=self.mask_id,
            unk_id=self.unk_id,
        )
        for name in ("hidden_size", "num_layers", "num_heads", "max_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size={self.hidden_size} is not a multiple of num_heads={self.num_heads}")
        check_fraction("mask_prob", self.mask_prob, open_low=True)
        check_fraction("dropout", self.dropout)
        check_fraction("mask_last_prob", self.mask_last_prob)
        check_pooling(self.pooling)
        if self.sampled_negatives < 0:
            raise ValueError(f"sampled_negatives must be 0 or positive, got {self.sampled_negatives}")
        if self.gap_buckets < 2:
            raise ValueError(f"gap_buckets must be at least 2, got {self.gap_buckets}")


def bert_config(config: Bert4RecConfig) -> BertConfig:
    """The ``BertConfig`` of the network behind ``config``."""
    return BertConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        intermediate_size=4 * config.hidden_size,
        hidden_dropout_prob=config.dropout,
        attention_probs_dropout_prob=config.dropout,
        max_position_embeddings=config.max_len,
        # the token-type embedding carries the gap bucket when time gaps are used
        type_vocab_size=config.gap_buckets if config.use_time_gaps else 1,
        pad_token_id=config.pad_id,
        tie_word_embeddings=True,
    )


class Bert4RecEncoder(ActionIdEncoder[Bert4RecConfig]):
    """BERT4Rec over action ids; ``actions`` optionally names the ids from ``n_special`` on."""

    kind: ClassVar[str] = "bert4rec"
    config_class: ClassVar[type[Any]] = Bert4RecConfig
    model_class: ClassVar[type[PreTrainedModel]] = BertForMaskedLM
    model: BertForMaskedLM

    @classmethod
    def build_model(cls, config: Any) -> PreTrainedModel:
        return BertForMaskedLM(bert_config(config))

    def head_transform(self) -> torch.nn.Module:
        transform: torch.nn.Module = self.model.cls.predictions.transform  # dense + activation + norm
        return transform

    def inputs(
        self,
        tokens: Sequence[Sequence[int]] | None = None,
        texts: Sequence[str] | None = None,
        gaps: Sequence[Sequence[int]] | None = None,
        amounts: Sequence[Sequence[int]] | None = None,
    ) -> Inputs:
        tokens = check_action_ids(tokens, vocab_size=self.config.vocab_size, kind=self.kind)
        batch = pad_right_keep_recent(tokens, max_len=self.max_len, pad_id=self.config.pad_id)
        if self.config.use_time_gaps:
            batch["token_type_ids"] = gap_buckets(
                check_gaps(tokens, gaps, self.kind), max_len=self.max_len, buckets=self.config.gap_buckets
            )
        return batch

    def mask(self, inputs: Inputs, generator: torch.Generator) -> Inputs:
        input_ids = inputs["input_ids"]  # [B, L]
        attention_mask = inputs["attention_mask"]  # [B, L]
        # Only real actions are predicted: never padding, [mask] or unknown actions.
        candidates = attention_mask.bool() & (input_ids >= self.config.n_special)  # [B, L]
        chosen = choose_positions(candidates, self.config.mask_prob, generator)  # [B, L]
        if self.config.mask_last_prob > 0.0:
            # Some sequences are trained on the next-action task alone: only the last
            # action masked, provided it is a real action.
            rows = torch.arange(input_ids.size(0), device=input_ids.device)
            last = (attention_mask.sum(dim=1) - 1).clamp(min=0)  # [B]
            draws = torch.rand(input_ids.size(0), generator=generator, device=generator.device)
            last_only = (draws.to(input_ids.device) < self.config.mask_last_prob) & candidates[rows, last]
            chosen[last_only] = False
            chosen[rows[last_only], last[last_only]] = True
        # All chosen positions become [mask] (the paper's variant: no 80/10/10).
        corrupted = corrupt(
            input_ids,
            chosen,
            mask_id=self.config.mask_id,
            generator=generator,
            mask_frac=1.0,
            random_frac=0.0,
        )
        return {**inputs, **corrupted}

    @torch.no_grad()
    def score_next(self, tokens: Sequence[Sequence[int]], gaps: Sequence[Sequence[int]] | None = None) -> torch.Tensor:
        """Scores at a ``[mask]`` appended after each sequence (its gap unknown: 0 days), as at training."""
        tokens = check_action_ids(tokens, vocab_size=self.config.vocab_size, kind=self.kind)
        keep = self.max_len - 1  # room for the [mask]
        extended = [[*list(seq)[-keep:], self.config.mask_id] for seq in tokens]
        batch = pad_right_keep_recent(extended, max_len=self.max_len, pad_id=self.config.pad_id)
        if self.config.use_time_gaps:
            gaps = check_gaps(tokens, gaps, self.kind)
            batch["token_type_ids"] = gap_buckets(
                [[*list(g)[-keep:], 0] for g in gaps], max_len=self.max_len, buckets=self.config.gap_buckets
            )
        batch = self._on_device(batch)
        rows = torch.arange(len(extended), device=batch["input_ids"].device)
        last = batch["attention_mask"].sum(dim=1) - 1  # [B]: the [mask]
        with self._eval_mode():
            hidden = self.model.bert(**self._model_inputs(batch)).last_hidden_state  # [B, L, H]
            return self.model.cls(hidden[rows, last]).float()  # [B, V]

    @torch.no_grad()
    def next_action_metrics(self, inputs: Inputs, k: int = 10) -> dict[str, float]:
        """HR@k and NDCG@k of predicting each sequence's last action from the ones before.

        ``inputs`` come from :meth:`inputs` on the full sequences; the last real action of
        each becomes the target and is replaced by ``[mask]``. Ranking is over all
        actions (ids >= ``n_special``), ties pessimistic (:func:`custembed.nextitem.full_ranks`).
        Sequences whose last id is special are skipped, and so are those whose last id is
        ``no_action_id`` (counted in ``no_action_share``).
        Returns ``hr@k``, ``ndcg@k`` (means over action targets), ``count`` (sequences
        scored), ``no_action_share`` (share of ``no action`` among the real targets) and
        ``targets`` (sequences with a real target).
        """
        inputs = self._on_device(inputs)
        input_ids = inputs["input_ids"].clone()  # [B, L]
        attention_mask = inputs["attention_mask"]  # [B, L]
        rows = torch.arange(input_ids.size(0), device=input_ids.device)
        last = (attention_mask.sum(dim=1) - 1).clamp(min=0)  # [B]
        targets = input_ids[rows, last]  # [B]
        real = (attention_mask.sum(dim=1) > 0) & (targets >= self.config.n_special)  # [B]
        input_ids[rows, last] = self.config.mask_id
        model_inputs = {**self._model_inputs(inputs), "input_ids": input_ids}
        with self._eval_mode():
            hidden = self.model.bert(**model_inputs).last_hidden_state
            scores = self.model.cls(hidden[rows, last]).float()  # [B, V]
        return last_action_metrics(
            scores, targets, real, first_item=self.config.n_special, no_action_id=self.config.no_action_id, k=k
        )

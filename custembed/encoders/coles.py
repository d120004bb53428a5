"""CoLES (Babaev et al., "Contrastive Learning for Event Sequences with Self-Supervision", SIGMOD 2022).

A GRU reads a customer's actions (our action ids, ``tokens``) and, optionally, the time
gap before each action (``gaps``: whole days since the previous token, log1p-scaled and
appended to the action embedding) and its amount (``amounts``, ``use_amounts``: the
log-spaced bucket ``sequences.amount`` gives each event, scaled and appended the same
way; 0 for a token without one); the customer's embedding is the GRU state after the
last real action (``pooling="last"``), over the most recent ``max_len`` actions.

Training objective (the paper's, self-supervised): each customer of a batch yields
``views`` random *contiguous* sub-sequences (lengths uniform in
``[min_view_len, max_view_len]``, capped at the sequence's length; start uniform over
the positions where the slice fits). Views of the same customer are positives, views of
the other customers of the batch negatives. The view sampling lives in :meth:`mask`,
drawn from the generator the training loop passes, so a resumed run draws the same
views, and validation (a fixed generator) sees the same views every epoch.

Loss: the margin contrastive loss with hard-negative mining that the paper retains and
pytorch-lifestream's CoLES uses by default, not a temperature (InfoNCE) loss. Why: it is
the loss the paper reports its results with (it compared contrastive, binomial
deviance, histogram, margin and triplet losses and kept this one), it needs no
temperature to tune, and it stays meaningful with the small batches a CPU budget
allows. On L2-normalised embeddings, each view's loss averages ``d^2`` over its
positives and ``max(0, margin - d)^2`` over its ``neg_count`` nearest negatives
(``d`` the Euclidean distance, at most 2). Averaging per view (not summing over pairs
as pytorch-lifestream does) keeps the scale independent of batch size and views, so a
learning rate and gradient clipping mean the same at any batch size, and validation
losses compare. ``val_accuracy`` in the training loop is the share of views whose
nearest other view is a view of the same customer (recall@1 inside the batch).

The network is :class:`ColesGruModel`, a small ``PreTrainedModel`` with its own
``PretrainedConfig``, so saving and loading go through ``save_pretrained`` /
``from_pretrained`` (safetensors) like the other encoders.

Token ids: 0 is padding, 1 the (unused here) ``[mask]`` id, 2 an unknown action, actions
start at 3, as for BERT4Rec: both read the same ``tokens`` column.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput

from custembed.encoders.base import MaskedTokenStats, SequenceEncoder
from custembed.encoders.masking import (
    Inputs,
    check_action_ids,
    check_amounts,
    check_fraction,
    check_gaps,
    check_pooling,
    pad_right_keep_recent,
)

GAPS = "gaps"  # the batch entry (and Parquet column) holding days since the previous token
GAP_SCALE = math.log1p(365.0)  # log1p(days) / GAP_SCALE: a year apart is 1.0
AMOUNTS = "amounts"  # the batch entry (and Parquet column) holding each token's amount bucket
AMOUNT_SCALE = 160.0  # bucket / AMOUNT_SCALE: bucket 160 is an amount near 22,000 (16 buckets per ln unit)


@dataclass(frozen=True)
class ColesConfig:
    """Size, views and loss of a CoLES model."""

    vocab_size: int = field(metadata={"help": "Number of ids: special ids plus actions."})
    embedding_dim: int = field(default=32, metadata={"help": "Width of the action embedding fed to the GRU."})
    hidden_size: int = field(default=256, metadata={"help": "GRU state width: the customer embedding's width."})
    num_layers: int = field(default=1, metadata={"help": "Stacked GRU layers (CoLES: 1)."})
    max_len: int = field(default=200, metadata={"help": "Most recent actions kept per sequence."})
    views: int = field(default=5, metadata={"help": "Sub-sequences sampled per customer and batch (>= 2)."})
    min_view_len: int = field(default=10, metadata={"help": "Shortest sub-sequence (shorter customers: whole)."})
    max_view_len: int = field(default=60, metadata={"help": "Longest sub-sequence."})
    recent_view_share: float = field(
        default=0.0,
        metadata={"help": "Share of views that end at the sequence's last token (recency-biased CoLES); 0: none."},
    )
    margin: float = field(default=0.5, metadata={"help": "Distance beyond which negatives cost nothing (0, 2]."})
    neg_count: int = field(default=5, metadata={"help": "Hardest negatives per view in the loss."})
    dropout: float = field(default=0.1, metadata={"help": "Dropout on the GRU input (and between layers)."})
    use_time_gaps: bool = field(
        default=True, metadata={"help": "Feed log1p(days since the previous token) with each action."}
    )
    use_amounts: bool = field(
        default=False,
        metadata={"help": "Feed each action's amount bucket (sequences.amounts, from sequences.amount) with it."},
    )
    pooling: str = field(default="last", metadata={"help": "Default pooling: last (CoLES), mean or first."})
    pad_id: int = field(default=0, metadata={"help": "Padding id."})
    n_special: int = field(default=3, metadata={"help": "Ids below this are special; actions start here."})

    def __post_init__(self) -> None:
        if self.vocab_size <= self.n_special:
            raise ValueError(f"vocab_size must exceed n_special={self.n_special}, got {self.vocab_size}")
        for name in ("embedding_dim", "hidden_size", "num_layers", "max_len", "min_view_len", "max_view_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if self.views < 2:
            raise ValueError(f"views must be at least 2 (positives need two views), got {self.views}")
        if self.min_view_len > self.max_view_len:
            raise ValueError(f"min_view_len={self.min_view_len} exceeds max_view_len={self.max_view_len}")
        if not 0.0 < self.margin <= 2.0:
            raise ValueError(f"margin must be in (0, 2] (distances of unit vectors), got {self.margin!r}")
        if self.neg_count < 0:
            raise ValueError(f"neg_count must be >= 0, got {self.neg_count}")
        if not 0 <= self.pad_id < self.n_special:
            raise ValueError(f"pad_id must be a special id below n_special={self.n_special}, got {self.pad_id!r}")
        check_fraction("dropout", self.dropout)
        check_fraction("recent_view_share", self.recent_view_share)
        check_pooling(self.pooling)


class ColesGruConfig(PreTrainedConfig):
    """The network's Hugging Face config (``config.json`` of a saved encoder)."""

    model_type = "custembed_coles_gru"

    vocab_size: int = 4
    embedding_dim: int = 32
    hidden_size: int = 256
    num_layers: int = 1
    dropout: float = 0.1
    use_time_gaps: bool = True
    use_amounts: bool = False
    pad_token_id: int | None = 0


@dataclass
class ColesOutput(ModelOutput):
    """GRU states of every position, and the state after each sequence's last real token."""

    last_hidden_state: torch.Tensor | None = None  # [B, L, H]
    embeddings: torch.Tensor | None = None  # [B, H]


class ColesGruModel(PreTrainedModel):
    """Action embedding (+ scaled time gap, + scaled amount) → dropout → GRU."""

    config_class = ColesGruConfig
    base_model_prefix = "coles"
    main_input_name = "input_ids"
    config: ColesGruConfig

    def __init__(self, config: ColesGruConfig) -> None:
        super().__init__(config)
        self.actions = nn.Embedding(config.vocab_size, config.embedding_dim, padding_idx=config.pad_token_id)
        self.input_dropout = nn.Dropout(config.dropout)
        width = config.embedding_dim + int(config.use_time_gaps) + int(config.use_amounts)
        self.gru = nn.GRU(
            width,
            config.hidden_size,
            num_layers=config.num_layers,
            batch_first=True,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
        )
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        # The GRU keeps torch's own initialisation (uniform in +-1/sqrt(H)).
        if isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        gaps: torch.Tensor | None = None,
        amounts: torch.Tensor | None = None,
    ) -> ColesOutput:
        steps = self.actions(input_ids)  # [B, L, E]
        features = [steps]
        if self.config.use_time_gaps:
            if gaps is None:
                raise ValueError("this CoLES model reads time gaps; got gaps=None")
            features.append((torch.log1p(gaps.clamp(min=0).to(steps.dtype)) / GAP_SCALE).unsqueeze(-1))  # [B, L, 1]
        if self.config.use_amounts:
            if amounts is None:
                raise ValueError("this CoLES model reads amounts; got amounts=None")
            features.append((amounts.clamp(min=0).to(steps.dtype) / AMOUNT_SCALE).unsqueeze(-1))  # [B, L, 1]
        if len(features) > 1:
            steps = torch.cat(features, dim=-1)  # [B, L, E + extras]
        # Inputs are right-padded and the GRU reads left to right, so padding never reaches
        # the state of a real position: no packing needed.
        hidden, _ = self.gru(self.input_dropout(steps))  # [B, L, H]
        last = (attention_mask.long().sum(dim=1) - 1).clamp(min=0)  # [B]
        rows = torch.arange(hidden.size(0), device=hidden.device)
        return ColesOutput(last_hidden_state=hidden, embeddings=hidden[rows, last])


def gru_config(config: ColesConfig) -> ColesGruConfig:
    """The ``ColesGruConfig`` of the network behind ``config``."""
    return ColesGruConfig(
        vocab_size=config.vocab_size,
        embedding_dim=config.embedding_dim,
        hidden_size=config.hidden_size,
        num_layers=config.num_layers,
        dropout=config.dropout,
        use_time_gaps=config.use_time_gaps,
        use_amounts=config.use_amounts,
        pad_token_id=config.pad_id,
    )


# -- views ---------------------------------------------------------------------------
def sample_views(
    lengths: torch.Tensor,
    *,
    views: int,
    min_len: int,
    max_len: int,
    generator: torch.Generator,
    recent_share: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random contiguous slices: ``(starts, sizes)``, both ``[B, views]`` int64.

    A slice's size is uniform in ``[min_len, max_len]``, capped at the sequence's length
    (a sequence shorter than ``min_len`` gives itself whole); its start is uniform over
    ``[0, length - size]``, except that each view is, with probability ``recent_share``, a
    suffix (it ends at the last token). Suffix views pull a customer's embedding, the state
    after the last token, towards what the customer did lately. ``lengths`` is ``[B]``,
    every entry >= 1.
    """
    draws = torch.rand((lengths.size(0), views, 2), generator=generator, device=generator.device)
    draws = draws.to(lengths.device)  # [B, V, 2]
    span = max_len - min_len + 1
    wanted = min_len + (draws[..., 0] * span).long().clamp(max=span - 1)  # [B, V]
    sizes = torch.minimum(wanted, lengths.unsqueeze(1))  # [B, V]
    room = lengths.unsqueeze(1) - sizes + 1  # [B, V] possible starts
    starts = (draws[..., 1] * room).long().clamp(max=room - 1)  # [B, V]
    if recent_share > 0.0:  # drawn only when asked, so the stream of the plain views is unchanged
        recent = torch.rand((lengths.size(0), views), generator=generator, device=generator.device)
        starts = torch.where(recent.to(lengths.device) < recent_share, room - 1, starts)
    return starts, sizes


def gather_views(values: torch.Tensor, starts: torch.Tensor, sizes: torch.Tensor, pad: int) -> torch.Tensor:
    """The slices of ``values`` ``[B, L]`` as right-padded rows ``[B * V, W]``, customer-major."""
    batch, length = values.shape
    views = starts.size(1)
    width = int(sizes.max())
    offsets = torch.arange(width, device=values.device)  # [W]
    positions = (starts.unsqueeze(-1) + offsets).clamp(max=length - 1)  # [B, V, W]
    picked = values.unsqueeze(1).expand(batch, views, length).gather(2, positions)  # [B, V, W]
    inside = offsets < sizes.unsqueeze(-1)  # [B, V, W]
    return picked.masked_fill(~inside, pad).reshape(batch * views, width)


# -- loss -------------------------------------------------------------------------------
def contrastive_terms(
    embeddings: torch.Tensor, labels: torch.Tensor, *, margin: float, neg_count: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-view contrastive loss ``[N]`` and whether each view's nearest other view is a positive ``[N]``.

    ``embeddings`` ``[N, H]`` (normalised here), ``labels`` ``[N]`` (views of one customer
    share a label). See the module doc for the loss.
    """
    unit = F.normalize(embeddings.float(), dim=-1)  # [N, H]
    squared = (2.0 - 2.0 * unit @ unit.T).clamp(min=0.0)  # [N, N] squared distances of unit vectors
    n = labels.size(0)
    same = labels.unsqueeze(0) == labels.unsqueeze(1)  # [N, N]
    itself = torch.eye(n, dtype=torch.bool, device=labels.device)
    positive = same & ~itself  # [N, N]
    summed = (squared * positive).sum(dim=1)  # [N] positives pulled together
    terms = positive.sum(dim=1)  # [N]
    # Hard negatives: the closest views of other customers (chosen without gradient).
    k = min(neg_count, int((~same).sum(dim=1).min()))
    if k > 0:
        closest = squared.detach().masked_fill(same, math.inf).topk(k, dim=1, largest=False).indices  # [N, k]
        distance = squared.gather(1, closest).clamp(min=1e-12).sqrt()  # [N, k]
        summed = summed + F.relu(margin - distance).pow(2).sum(dim=1)  # [N] negatives pushed past the margin
        terms = terms + k
    per_view = summed / terms.clamp(min=1)  # [N]
    if n < 2:  # a lone view has no other view to find
        return per_view, torch.zeros(n, dtype=torch.bool, device=labels.device)
    nearest = squared.detach().masked_fill(itself, math.inf).argmin(dim=1)  # [N]
    hit = same[torch.arange(n, device=labels.device), nearest]  # [N]
    return per_view, hit


class ColesEncoder(SequenceEncoder[ColesConfig]):
    """CoLES over action ids (and time gaps); see the module doc."""

    kind: ClassVar[str] = "coles"
    input_column: ClassVar[str] = "tokens"
    config_class: ClassVar[type[Any]] = ColesConfig
    objective: ClassVar[str] = "contrastive"
    data_fields: ClassVar[tuple[str, ...]] = ("vocab_size",)  # from the action catalogue
    model: ColesGruModel

    def __init__(self, config: ColesConfig, model: ColesGruModel | None = None) -> None:
        super().__init__(config, ColesGruModel(gru_config(config)) if model is None else model)

    @classmethod
    def from_config(cls, config: Any) -> ColesEncoder:
        return cls(config)

    @classmethod
    def load(cls, path: Path, meta: Mapping[str, Any]) -> ColesEncoder:
        config = ColesConfig(**meta["config"])
        return cls(config, ColesGruModel.from_pretrained(path))

    def _save_vocabulary(self, path: Path) -> None:
        """Nothing beyond the model: ids are the action catalogue's."""

    # -- batches ------------------------------------------------------------------------
    def inputs(
        self,
        tokens: Sequence[Sequence[int]] | None = None,
        texts: Sequence[str] | None = None,
        gaps: Sequence[Sequence[int]] | None = None,
        amounts: Sequence[Sequence[int]] | None = None,
    ) -> Inputs:
        """``input_ids``, ``attention_mask``, and ``gaps`` (``use_time_gaps``) and ``amounts``
        (``use_amounts``), all ``[B, L]``."""
        tokens = check_action_ids(tokens, vocab_size=self.config.vocab_size, kind=self.kind)
        batch = pad_right_keep_recent(tokens, max_len=self.max_len, pad_id=self.config.pad_id)
        if self.config.use_time_gaps:
            checked = check_gaps(tokens, gaps, self.kind)
            batch[GAPS] = pad_right_keep_recent(checked, max_len=self.max_len, pad_id=0)["input_ids"]  # [B, L]
        if self.config.use_amounts:
            checked = check_amounts(tokens, amounts, self.kind)
            batch[AMOUNTS] = pad_right_keep_recent(checked, max_len=self.max_len, pad_id=0)["input_ids"]  # [B, L]
        return batch

    def mask(self, inputs: Inputs, generator: torch.Generator) -> Inputs:
        """``views`` random contiguous slices of each sequence, ``[B * views, W]``, with ``labels`` ``[B * views]``.

        ``labels`` hold the customer's row in the batch: views with equal labels are positives.
        """
        input_ids = inputs["input_ids"]  # [B, L]
        lengths = inputs["attention_mask"].sum(dim=1).clamp(min=1)  # [B]
        config = self.config
        starts, sizes = sample_views(
            lengths,
            views=config.views,
            min_len=min(config.min_view_len, self.max_len),
            max_len=min(config.max_view_len, self.max_len),
            generator=generator,
            recent_share=config.recent_view_share,
        )
        views: Inputs = {
            "input_ids": gather_views(input_ids, starts, sizes, config.pad_id),
            "attention_mask": gather_views(inputs["attention_mask"], starts, sizes, 0),
        }
        for extra in (GAPS, AMOUNTS):
            if extra in inputs:
                views[extra] = gather_views(inputs[extra], starts, sizes, 0)
        rows = torch.arange(input_ids.size(0), device=input_ids.device)
        views["labels"] = rows.repeat_interleave(config.views)  # [B * V]
        return views

    # -- forward passes -----------------------------------------------------------------
    def _forward(self, batch: Inputs, model: torch.nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(GRU states ``[B, L, H]``, embeddings ``[B, H]``) of a batch already on the device."""
        module = self.model if model is None else model
        output = module(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            gaps=batch.get(GAPS),
            amounts=batch.get(AMOUNTS),
        )
        return output.last_hidden_state, output.embeddings

    def loss(self, batch: Inputs, model: torch.nn.Module | None = None) -> torch.Tensor:
        """Mean per-view contrastive loss over the views of ``batch`` (from :meth:`mask`)."""
        batch = self._on_device(batch)
        _, embeddings = self._forward(batch, model)  # [N, H]
        per_view, _ = contrastive_terms(
            embeddings, batch["labels"], margin=self.config.margin, neg_count=self.config.neg_count
        )
        return per_view.mean()

    @torch.no_grad()
    def masked_token_stats(self, batch: Inputs) -> MaskedTokenStats:
        """Per-view loss summed, views whose nearest other view is the same customer's, and views (no grad)."""
        batch = self._on_device(batch)
        with self._eval_mode():
            _, embeddings = self._forward(batch)  # [N, H]
        per_view, hit = contrastive_terms(
            embeddings, batch["labels"], margin=self.config.margin, neg_count=self.config.neg_count
        )
        return MaskedTokenStats(loss_sum=float(per_view.sum()), correct=int(hit.sum()), count=int(per_view.numel()))

    def hidden_states(self, inputs: Inputs) -> torch.Tensor:
        """GRU states of every position, ``[B, L, H]``; ``last`` pooling gives the CoLES embedding."""
        inputs = self._on_device(inputs)
        hidden, _ = self._forward(inputs)  # [B, L, H]
        return hidden

    def attentions(self, inputs: Inputs) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError("a CoLES GRU has no attention to show")

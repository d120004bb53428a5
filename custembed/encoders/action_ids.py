"""What the encoders over the catalogue's action ids share (BERT4Rec, SASRec).

Ids: ``pad_id`` and the other special ids below ``n_special``, then the actions.
An encoder may keep the actions' names (``actions.json`` beside the weights), so a
saved model says which action each id was when it was trained. Models that rank
the next action report HR/NDCG through the shared next-item harness.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from custembed.encoders.base import EncoderConfig, MaskedTokenStats, RankingMetrics, SequenceEncoder
from custembed.encoders.item_head import LabelledPositionsLM
from custembed.encoders.masking import Inputs

ACTIONS_FILE = "actions.json"


class ActionIdConfig(EncoderConfig, Protocol):
    """The id layout every action-id config carries."""

    @property
    def vocab_size(self) -> int: ...

    @property
    def n_special(self) -> int: ...

    @property
    def pad_id(self) -> int: ...

    @property
    def no_action_id(self) -> int | None: ...


A = TypeVar("A", bound=ActionIdConfig)


def check_id_layout(*, vocab_size: int, n_special: int, no_action_id: int | None, **special: int) -> None:
    """``ValueError`` naming the first field of an impossible id layout (configs' ``__post_init__``)."""
    if vocab_size <= n_special:
        raise ValueError(f"vocab_size must exceed n_special={n_special}, got {vocab_size}")
    for name, value in special.items():
        if not 0 <= value < n_special:
            raise ValueError(f"{name} must be a special id below n_special={n_special}, got {value!r}")
    if no_action_id is not None and not n_special <= no_action_id < vocab_size:
        raise ValueError(f"no_action_id must be an action id in [{n_special}, {vocab_size}), got {no_action_id!r}")


class ActionIdEncoder(SequenceEncoder[A]):
    """An encoder over action ids that keeps optional action names and ranks the next action."""

    input_column: ClassVar[str] = "tokens"
    data_fields: ClassVar[tuple[str, ...]] = ("vocab_size", "no_action_id")  # from the action catalogue
    model_class: ClassVar[type[PreTrainedModel]]

    def __init__(self, config: A, model: PreTrainedModel | None = None, actions: Sequence[str] | None = None) -> None:
        super().__init__(config, self.build_model(config) if model is None else model)
        if actions is not None and len(actions) > config.vocab_size - config.n_special:
            raise ValueError(
                f"{len(actions)} action names do not fit vocab_size={config.vocab_size} "
                f"with n_special={config.n_special}"
            )
        self.actions = None if actions is None else tuple(actions)
        self._head: LabelledPositionsLM | None = None

    @classmethod
    @abc.abstractmethod
    def build_model(cls, config: Any) -> PreTrainedModel:
        """A freshly initialised network for ``config``."""

    @classmethod
    def from_config(cls, config: Any) -> SequenceEncoder[Any]:
        return cls(config)

    def head_transform(self) -> torch.nn.Module | None:
        """The part of the item head before the output layer, ``None`` when the head is that layer alone."""
        return None

    def training_module(self) -> torch.nn.Module:
        """The network with its item head evaluated at the labelled positions only (:mod:`.item_head`)."""
        if self._head is None or self._head.model is not self.model:
            self._head = LabelledPositionsLM(
                self.model,
                transform=self.head_transform(),
                causal=self.causal,
                first_item=self.config.n_special,
                negatives=int(getattr(self.config, "sampled_negatives", 0)),
            )
        return self._head

    @torch.no_grad()
    def masked_token_stats(self, batch: Inputs) -> MaskedTokenStats:
        """Full-softmax loss sum, correct predictions and count over the labelled positions (no grad)."""
        batch = self._on_device(batch)
        module = self.training_module()
        with self._eval_mode():
            output = module(**self._model_inputs(batch), labels=batch["labels"])
        logits, targets = output.logits, output.labels  # [N, V], [N]
        return MaskedTokenStats(
            loss_sum=float(F.cross_entropy(logits, targets, reduction="sum")),
            correct=int((logits.argmax(dim=-1) == targets).sum()),
            count=int(targets.numel()),
        )

    @classmethod
    def create(cls, **params: Any) -> SequenceEncoder[Any]:
        """Build from the config's fields plus an optional ``actions`` list of names."""
        actions = params.pop("actions", None)
        try:
            config = cls.config_class(**params)
        except TypeError as e:
            raise ValueError(f"bad parameters for encoder kind {cls.kind!r}: {e}") from e
        return cls(config, actions=actions)

    @classmethod
    def load(cls, path: Path, meta: Mapping[str, Any]) -> SequenceEncoder[Any]:
        config = cls.config_class(**meta["config"])
        actions_path = path / ACTIONS_FILE
        actions = json.loads(actions_path.read_text()) if actions_path.is_file() else None
        return cls(config, cls.model_class.from_pretrained(path), actions)

    def _save_vocabulary(self, path: Path) -> None:
        if self.actions is not None:
            (path / ACTIONS_FILE).write_text(json.dumps(list(self.actions)))

    @abc.abstractmethod
    def score_next(self, tokens: Sequence[Sequence[int]], gaps: Sequence[Sequence[int]] | None = None) -> torch.Tensor:
        """``[B, V]`` scores of every id as the next action of each sequence, after all of its actions
        (eval mode, no grad). Higher is more likely; only the order within a row is meaningful."""

    @abc.abstractmethod
    def next_action_metrics(self, inputs: Inputs, k: int = 10) -> dict[str, float]:
        """``hr@k``, ``ndcg@k``, ``count``, ``no_action_share``, ``targets`` of the held-out last actions."""

    def ranking_metrics(self, inputs: Inputs, k: int) -> RankingMetrics:
        """HR@k and NDCG@k of the held-out last action over action targets (:meth:`next_action_metrics`)."""
        return RankingMetrics.from_metrics(self.next_action_metrics(inputs, k=k), k)

"""The interface every sequence encoder shares, and the helpers the models reuse.

An encoder turns a customer's action history into one vector. Four kinds exist:

* ``bert4rec``: a BERT trained from scratch over our own action ids (``tokens``),
* ``mlm``: any Hugging Face masked-LM checkpoint fine-tuned on the actions as text,
* ``causal_lm``: any Hugging Face causal-LM checkpoint fine-tuned on the same text,
* ``coles``: a GRU trained from scratch, contrastively, on sub-sequences of the action
  ids and the time gaps between them (``gaps``).

They all wrap a Hugging Face ``PreTrainedModel`` (``encoder.model``), so that a
``DistributedDataParallel`` wrapper can wrap that module while the encoder keeps
building inputs, masking and pooling. Inputs are padded on the right and
truncated on the left: the most recent actions are the ones kept.

A saved encoder is a directory holding the model (``model.safetensors`` +
``config.json``), its tokenizer or action vocabulary, and
``custembed_encoder.json`` (kind, pooling, max_len, encoder config), which
:func:`custembed.encoders.registry.load_encoder` dispatches on.

Imports run one way: :mod:`.masking` <- this module <- the concrete encoders <-
:mod:`.registry`; nothing here knows which encoders exist.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import json
import logging
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from custembed import lakefs
from custembed.encoders.masking import IGNORE_INDEX, Inputs, pool
from custembed.tables import AMOUNTS, GAPS

log = logging.getLogger(__name__)

META_FILE = "custembed_encoder.json"
# Optional network inputs passed on when an encoder's `inputs` builds them: BERT4Rec's
# bucketed time gaps ride on BERT's token-type embeddings.
MODEL_EXTRA_INPUTS = ("token_type_ids",)
FORMAT_VERSION = 1


class EncoderConfig(Protocol):
    """What every encoder config carries (they are frozen dataclasses)."""

    @property
    def max_len(self) -> int: ...

    @property
    def pooling(self) -> str: ...


C = TypeVar("C", bound=EncoderConfig)


@dataclass(frozen=True)
class MaskedTokenStats:
    """Sums over the predicted positions of a batch, ready to be all-reduced across ranks."""

    loss_sum: float  # summed cross-entropy over predicted positions
    correct: int  # predicted positions whose arg-max is the label
    count: int  # predicted positions


@dataclass(frozen=True)
class RankingMetrics:
    """Next-item ranking quality over the sequences of a batch: means, and how many were ranked."""

    hit_rate: float  # HR@k: share of sequences whose held-out item ranks in the top k
    ndcg: float  # NDCG@k, mean over the ranked sequences
    count: int  # sequences ranked (the weight of these means when batches are combined)
    # Share of held-out targets that are the ``no action`` token (left out of the means above),
    # over ``targets`` sequences with a real target: the weight of this share when batches combine.
    no_action_share: float = 0.0
    targets: int = 0

    @classmethod
    def from_metrics(cls, metrics: Mapping[str, float], k: int) -> RankingMetrics:
        """From the ``hr@k`` / ``ndcg@k`` / ``count`` / ``no_action_share`` / ``targets`` dict of
        :func:`custembed.nextitem.last_action_metrics`."""
        return cls(
            hit_rate=metrics[f"hr@{k}"],
            ndcg=metrics[f"ndcg@{k}"],
            count=int(metrics["count"]),
            no_action_share=metrics["no_action_share"],
            targets=int(metrics["targets"]),
        )


class SequenceEncoder(abc.ABC, Generic[C]):
    """A trainable sequence model with the interface the training loop and the UDFs use.

    Subclasses define ``kind``, ``input_column`` (the Parquet column they read),
    ``config_class``, and implement ``from_config``, ``load``, ``inputs``, ``mask`` and
    ``_save_vocabulary``.
    """

    kind: ClassVar[str]
    input_column: ClassVar[str]  # "tokens" (action ids) or "text"
    # The table the train job snapshots: "sequences" (system A, its train view) or
    # "journeys" (system B: the visits outside the held-out test share).
    input_table: ClassVar[str] = "sequences"
    config_class: ClassVar[type[Any]]
    causal: ClassVar[bool] = False  # labels are the inputs themselves, shifted by the model
    # What `mask` labels: "tokens", a label per position ([B, L], masked or causal LM), or
    # "contrastive", one label per sampled view naming its sequence ([N]).
    objective: ClassVar[str] = "tokens"
    # Config fields that are facts of the training data (e.g. the vocabulary size), filled
    # in by the training job rather than written under `model:` in conf/.
    data_fields: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: C, model: PreTrainedModel) -> None:
        self.config = config
        self.model = model

    # -- construction -------------------------------------------------------------

    @classmethod
    @abc.abstractmethod
    def from_config(cls, config: Any) -> SequenceEncoder[Any]:
        """Build the encoder described by ``config`` (fresh weights or a checkpoint's)."""

    @classmethod
    def create(cls, **params: Any) -> SequenceEncoder[Any]:
        """Build from plain keyword parameters (the config's fields)."""
        try:
            config = cls.config_class(**params)
        except TypeError as e:
            raise ValueError(f"bad parameters for encoder kind {cls.kind!r}: {e}") from e
        return cls.from_config(config)

    @classmethod
    @abc.abstractmethod
    def load(cls, path: Path, meta: Mapping[str, Any]) -> SequenceEncoder[Any]:
        """Load from a directory written by :meth:`save`; ``meta`` is its ``custembed_encoder.json``."""

    def for_fine_tuning(self, params: Mapping[str, Any]) -> SequenceEncoder[C]:
        """This saved encoder, ready to train further with the data fields of ``params``
        (the new training's encoder params); most encoders need nothing: themselves."""
        return self

    # -- batches --------------------------------------------------------------------

    @abc.abstractmethod
    def inputs(
        self,
        tokens: Sequence[Sequence[int]] | None = None,
        texts: Sequence[str] | None = None,
        gaps: Sequence[Sequence[int]] | None = None,
        amounts: Sequence[Sequence[int]] | None = None,
    ) -> Inputs:
        """Build ``input_ids`` and ``attention_mask`` ``[B, L]`` (right-padded, left-truncated).

        ``gaps`` (days since the previous token, aligned with ``tokens``) is read by the
        encoders whose config sets ``use_time_gaps`` and ignored by the others; ``amounts``
        (each token's amount bucket, ``sequences.amounts``) likewise with ``use_amounts``.
        """

    @abc.abstractmethod
    def mask(self, inputs: Inputs, generator: torch.Generator) -> Inputs:
        """Return a copy of ``inputs`` corrupted for the training objective, with ``labels``."""

    # -- properties -----------------------------------------------------------------

    @property
    def max_len(self) -> int:
        """Longest input kept, in tokens (older tokens are cut)."""
        return int(self.config.max_len)

    @property
    def uses_time_gaps(self) -> bool:
        """Whether :meth:`inputs` needs ``gaps`` (the config's ``use_time_gaps``, off when absent)."""
        return bool(getattr(self.config, "use_time_gaps", False))

    @property
    def uses_amounts(self) -> bool:
        """Whether :meth:`inputs` needs ``amounts`` (the config's ``use_amounts``, off when absent)."""
        return bool(getattr(self.config, "use_amounts", False))

    @property
    def input_columns(self) -> tuple[str, ...]:
        """The sequence columns a batch reads: ``input_column``, plus ``gaps`` and ``amounts`` when used."""
        return self.columns_read(self.uses_time_gaps, self.uses_amounts)

    @classmethod
    def columns_read(cls, use_time_gaps: bool, use_amounts: bool = False) -> tuple[str, ...]:
        """:attr:`input_columns` of an encoder of this class with or without time gaps and amounts
        (no model needed)."""
        return (cls.input_column, *((GAPS,) if use_time_gaps else ()), *((AMOUNTS,) if use_amounts else ()))

    @property
    def pooling(self) -> str:
        """Default pooling of :meth:`embed`."""
        return str(self.config.pooling)

    @property
    def hidden_size(self) -> int:
        """Width of the embeddings :meth:`embed` returns."""
        return int(self.model.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: torch.device | str) -> SequenceEncoder[C]:
        """Move the model to ``device``; returns ``self``."""
        torch.nn.Module.to(self.model, torch.device(device))
        return self

    # -- forward passes -------------------------------------------------------------

    def _on_device(self, batch: Inputs) -> Inputs:
        device = self.device
        return {name: value.to(device) for name, value in batch.items()}

    @staticmethod
    def _model_inputs(batch: Inputs) -> Inputs:
        """The entries of ``batch`` the network reads: ids, mask and the optional extras :meth:`inputs` built."""
        extras = {name: batch[name] for name in MODEL_EXTRA_INPUTS if name in batch}
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], **extras}

    def loss(self, batch: Inputs, model: torch.nn.Module | None = None) -> torch.Tensor:
        """Mean training loss over the labelled positions of ``batch`` (a scalar).

        ``model`` is the module to call, e.g. the ``DistributedDataParallel`` wrapper of
        ``self.model``; by default ``self.model``.
        """
        module = self.training_module() if model is None else model
        batch = self._on_device(batch)
        output = module(**self._model_inputs(batch), labels=batch["labels"])
        loss: torch.Tensor = output.loss
        return loss

    def training_module(self) -> torch.nn.Module:
        """The module a training step calls (and ``DistributedDataParallel`` wraps): by default the network.

        Its forward takes the network's inputs plus ``labels`` and returns an object with ``loss``.
        Encoders whose head should run on the labelled positions only return a wrapper
        (:class:`custembed.encoders.item_head.LabelledPositionsLM`) holding the same parameters.
        """
        return self.model

    @torch.no_grad()
    def masked_token_stats(self, batch: Inputs) -> MaskedTokenStats:
        """Loss sum, correct predictions and count over the labelled positions (no grad)."""
        batch = self._on_device(batch)
        with self._eval_mode():
            logits = self.model(**self._model_inputs(batch)).logits  # [B, L, V]
        labels = batch["labels"]  # [B, L]
        if self.causal:
            # Position t predicts token t + 1.
            logits, labels = logits[:, :-1], labels[:, 1:]
        selected = labels != IGNORE_INDEX  # [B, L]
        picked = logits[selected].float()  # [N, V]
        targets = labels[selected]  # [N]
        return MaskedTokenStats(
            loss_sum=float(F.cross_entropy(picked, targets, reduction="sum")),
            correct=int((picked.argmax(dim=-1) == targets).sum()),
            count=int(targets.numel()),
        )

    def ranking_metrics(self, inputs: Inputs, k: int) -> RankingMetrics | None:
        """HR@k and NDCG@k of predicting each sequence's last item, for encoders that rank items.

        ``inputs`` come from :meth:`inputs` on the full held-out sequences. The default is
        ``None``: models over free text have no item catalogue to rank.
        """
        return None

    @contextlib.contextmanager
    def _eval_mode(self) -> Iterator[None]:
        was_training = self.model.training
        self.model.train(False)
        try:
            yield
        finally:
            self.model.train(was_training)

    def hidden_states(self, inputs: Inputs) -> torch.Tensor:
        """Last hidden states of the base model (no task head), ``[B, L, H]``."""
        inputs = self._on_device(inputs)
        output = self.model.base_model(**self._model_inputs(inputs))
        hidden: torch.Tensor = output.last_hidden_state  # [B, L, H]
        return hidden

    @torch.no_grad()
    def embed(self, inputs: Inputs, pooling: str | None = None) -> torch.Tensor:
        """One vector per sequence, ``[B, H]``, in eval mode (no dropout, no grad)."""
        with self._eval_mode():
            hidden = self.hidden_states(inputs)  # [B, L, H]
        attention_mask = inputs["attention_mask"].to(hidden.device)
        return pool(hidden, attention_mask, self.pooling if pooling is None else pooling)

    @torch.no_grad()
    def attentions(self, inputs: Inputs) -> tuple[torch.Tensor, ...]:
        """Attention probabilities per layer, each ``[B, heads, L, L]`` (eval mode).

        SDPA kernels do not return probabilities, so the eager implementation is switched
        on for this call and the previous one restored afterwards.
        """
        inputs = self._on_device(inputs)
        previous = self.model.config._attn_implementation
        if previous != "eager":
            self.model.set_attn_implementation("eager")
        try:
            with self._eval_mode():
                output = self.model.base_model(**self._model_inputs(inputs), output_attentions=True)
        finally:
            if previous != "eager":
                self.model.set_attn_implementation(previous)
        return tuple(output.attentions)

    # -- persistence ----------------------------------------------------------------

    @abc.abstractmethod
    def _save_vocabulary(self, path: Path) -> None:
        """Write the tokenizer or action vocabulary into ``path``."""

    def save(self, path: str | Path) -> str:
        """Write weights (safetensors), model config, vocabulary and ``custembed_encoder.json``; returns the URI.

        ``path`` is a local path or a lake URI (:mod:`custembed.lakefs`). Hugging Face writes
        to local directories only, so a remote encoder is written to a temporary directory
        and uploaded. The json is written last either way, so a directory holding it is complete.
        """
        target = lakefs.qualify(path)
        local = lakefs.local_path(target)
        if local is not None:
            self._save_local(Path(local))
        else:
            with tempfile.TemporaryDirectory(prefix="custembed-encoder-") as scratch:
                meta_file = self._save_local(Path(scratch))
                meta = meta_file.read_text()
                meta_file.unlink()
                lakefs.put_dir(scratch, target)
                lakefs.write_text(lakefs.join(target, META_FILE), meta)
        log.info("saved %s encoder to %s", self.kind, target)
        return target

    def _save_local(self, target: Path) -> Path:
        """Write the encoder into the local directory ``target``; returns its ``custembed_encoder.json``."""
        target.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(target)
        self._save_vocabulary(target)
        meta = {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "pooling": self.pooling,
            "max_len": self.max_len,
            "config": dataclasses.asdict(self.config),  # type: ignore[call-overload]
        }
        meta_file = target / META_FILE
        meta_file.write_text(json.dumps(meta, indent=2, sort_keys=True))
        return meta_file


class HfTextEncoder(SequenceEncoder[C]):
    """Shared part of the encoders that read ``text`` with a checkpoint's own tokenizer."""

    input_column: ClassVar[str] = "text"

    def __init__(self, config: C, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
        super().__init__(config, model)
        self.tokenizer = tokenizer

    @staticmethod
    def load_tokenizer(checkpoint: str) -> PreTrainedTokenizerBase:
        """The checkpoint's tokenizer, cutting the oldest text and padding on the right."""
        return AutoTokenizer.from_pretrained(checkpoint, truncation_side="left", padding_side="right")

    @classmethod
    def load(cls, path: Path, meta: Mapping[str, Any]) -> SequenceEncoder[Any]:
        params = dict(meta["config"])
        params["checkpoint"] = str(path)  # the saved directory replaces the original checkpoint
        return cls.from_config(cls.config_class(**params))

    @property
    def max_len(self) -> int:
        limits = [int(self.config.max_len)]
        positions = getattr(self.model.config, "max_position_embeddings", None)
        if isinstance(positions, int):
            limits.append(positions)
        if 0 < self.tokenizer.model_max_length < 1_000_000:  # "no limit" is a huge sentinel
            limits.append(int(self.tokenizer.model_max_length))
        return min(limits)

    @property
    def special_ids(self) -> torch.Tensor:
        return torch.tensor(sorted(set(self.tokenizer.all_special_ids)), dtype=torch.long)

    def inputs(
        self,
        tokens: Sequence[Sequence[int]] | None = None,
        texts: Sequence[str] | None = None,
        gaps: Sequence[Sequence[int]] | None = None,
        amounts: Sequence[Sequence[int]] | None = None,
    ) -> Inputs:
        if texts is None:
            raise ValueError(f"{self.kind} encoder reads texts, got texts=None")
        if isinstance(texts, str):
            raise TypeError(f"texts must be a sequence of strings, got one string {texts[:40]!r}")
        encoded = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_len,
            return_tensors="pt",
        )
        return {
            "input_ids": encoded["input_ids"].long(),  # [B, L]
            "attention_mask": encoded["attention_mask"].long(),  # [B, L]
        }

    def candidates(self, inputs: Inputs) -> torch.Tensor:
        """Positions that may be predicted: real tokens that are not special, ``[B, L]`` bool."""
        input_ids = inputs["input_ids"]
        special = torch.isin(input_ids, self.special_ids.to(input_ids.device))
        return inputs["attention_mask"].bool() & ~special

    def _save_vocabulary(self, path: Path) -> None:
        self.tokenizer.save_pretrained(path)

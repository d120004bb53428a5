"""The interface every sequence encoder shares, and the helpers the models reuse.

An encoder turns a customer's action history into one vector. Three kinds exist:

* ``bert4rec``: a BERT trained from scratch over our own action ids (``tokens``),
* ``mlm``: any Hugging Face masked-LM checkpoint fine-tuned on the actions as text,
* ``causal_lm``: any Hugging Face causal-LM checkpoint fine-tuned on the same text.

They all wrap a Hugging Face ``PreTrainedModel`` (``encoder.model``), so that a
``DistributedDataParallel`` wrapper can wrap that module while the encoder keeps
building inputs, masking and pooling. Inputs are padded on the right and
truncated on the left: the most recent actions are the ones kept.

A saved encoder is a directory holding the model (``model.safetensors`` +
``config.json``), its tokenizer or action vocabulary, and
``custembed_encoder.json`` (kind, pooling, max_len, encoder config), which
:func:`load_encoder` dispatches on.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

META_FILE = "custembed_encoder.json"
FORMAT_VERSION = 1
POOLINGS = ("mean", "first", "last")
IGNORE_INDEX = -100  # label value the Hugging Face losses skip

Inputs = dict[str, torch.Tensor]


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


def check_pooling(pooling: str) -> str:
    """Return ``pooling`` if it is known, else raise ``ValueError`` naming it."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    return pooling


def check_fraction(name: str, value: float, *, open_low: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` lies in [0, 1] (or (0, 1] with ``open_low``)."""
    if not (0.0 < value <= 1.0 if open_low else 0.0 <= value <= 1.0):
        bounds = "(0, 1]" if open_low else "[0, 1]"
        raise ValueError(f"{name} must be in {bounds}, got {value!r}")


def pad_right_keep_recent(
    sequences: Sequence[Sequence[int]], *, max_len: int, pad_id: int
) -> Inputs:
    """Pad id sequences to the longest one, keeping each one's last ``max_len`` ids.

    Returns ``input_ids`` and ``attention_mask``, both ``[B, L]`` int64 with ``L <= max_len``.
    """
    kept = [list(seq)[-max_len:] for seq in sequences]
    width = max((len(seq) for seq in kept), default=0)
    input_ids = torch.full((len(kept), width), pad_id, dtype=torch.long)  # [B, L]
    attention_mask = torch.zeros((len(kept), width), dtype=torch.long)  # [B, L]
    for row, seq in enumerate(kept):
        input_ids[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
        attention_mask[row, : len(seq)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def _uniform(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    # Draw on the generator's device (CPU normally) so that runs are reproducible everywhere.
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def choose_positions(
    candidates: torch.Tensor, prob: float, generator: torch.Generator
) -> torch.Tensor:
    """Pick each candidate position with probability ``prob``; at least one per sequence.

    ``candidates`` is a ``[B, L]`` bool tensor (real, non-special tokens). Rows without a
    candidate stay empty. Returns a ``[B, L]`` bool tensor.
    """
    draws = _uniform(tuple(candidates.shape), generator, candidates.device)  # [B, L]
    chosen = (draws < prob) & candidates  # [B, L]
    # Mask at least one item per sequence: a row that drew nothing gets the candidate with
    # the highest draw, which is a uniformly random candidate.
    missing = candidates.any(dim=1) & ~chosen.any(dim=1)  # [B]
    forced = torch.where(candidates, draws, -1.0).argmax(dim=1)  # [B]
    rows = missing.nonzero(as_tuple=True)[0]
    chosen[rows, forced[rows]] = True
    return chosen


def corrupt(
    input_ids: torch.Tensor,
    chosen: torch.Tensor,
    *,
    mask_id: int,
    generator: torch.Generator,
    mask_frac: float = 0.8,
    random_frac: float = 0.1,
    random_high: int = 0,
) -> Inputs:
    """Replace the chosen positions as BERT does; returns new ``input_ids`` and ``labels``.

    Of the chosen positions, ``mask_frac`` become ``mask_id``, ``random_frac`` become a
    random id in ``[0, random_high)`` and the rest keep their token. Labels hold the
    original id at chosen positions and ``IGNORE_INDEX`` elsewhere. ``[B, L]`` in and out.
    """
    if random_frac > 0.0 and random_high < 1:
        raise ValueError(f"random replacements need random_high >= 1, got {random_high}")
    labels = torch.where(chosen, input_ids, IGNORE_INDEX)  # [B, L]
    draws = _uniform(tuple(input_ids.shape), generator, input_ids.device)  # [B, L]
    to_mask = chosen & (draws < mask_frac)
    corrupted = input_ids.masked_fill(to_mask, mask_id)
    if random_frac > 0.0:
        # The next `random_frac` of the draws gets a random token (BERT's 10 %).
        to_random = chosen & (draws >= mask_frac) & (draws < mask_frac + random_frac)
        random_ids = torch.randint(
            random_high, tuple(input_ids.shape), generator=generator, device=generator.device
        ).to(input_ids.device)
        corrupted = torch.where(to_random, random_ids, corrupted)
    return {"input_ids": corrupted, "labels": labels}


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Pool ``[B, L, H]`` hidden states into ``[B, H]`` over the real (unpadded) tokens.

    ``mean`` averages real tokens, ``first`` takes position 0, ``last`` the last real token
    (inputs are right-padded).
    """
    check_pooling(pooling)
    if pooling == "first":
        return hidden[:, 0]
    mask = attention_mask.to(hidden.dtype)  # [B, L]
    if pooling == "mean":
        summed = (hidden * mask.unsqueeze(-1)).sum(dim=1)  # [B, H]
        return summed / mask.sum(dim=1, keepdim=True).clamp(min=1.0)
    last = (attention_mask.sum(dim=1) - 1).clamp(min=0)  # [B]
    return hidden[torch.arange(hidden.size(0), device=hidden.device), last]  # [B, H]


class SequenceEncoder(abc.ABC, Generic[C]):
    """A trainable sequence model with the interface the training loop and the UDFs use.

    Subclasses define ``kind``, ``input_column`` (the Parquet column they read),
    ``config_class``, and implement ``from_config``, ``load``, ``inputs``, ``mask`` and
    ``_save_vocabulary``.
    """

    kind: ClassVar[str]
    input_column: ClassVar[str]  # "tokens" (action ids) or "text"
    config_class: ClassVar[type[Any]]
    causal: ClassVar[bool] = False  # labels are the inputs themselves, shifted by the model

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

    # -- batches --------------------------------------------------------------------

    @abc.abstractmethod
    def inputs(
        self,
        tokens: Sequence[Sequence[int]] | None = None,
        texts: Sequence[str] | None = None,
    ) -> Inputs:
        """Build ``input_ids`` and ``attention_mask`` ``[B, L]`` (right-padded, left-truncated)."""

    @abc.abstractmethod
    def mask(self, inputs: Inputs, generator: torch.Generator) -> Inputs:
        """Return a copy of ``inputs`` corrupted for the training objective, with ``labels``."""

    # -- properties -----------------------------------------------------------------

    @property
    def max_len(self) -> int:
        """Longest input kept, in tokens (older tokens are cut)."""
        return int(self.config.max_len)

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

    def loss(self, batch: Inputs, model: torch.nn.Module | None = None) -> torch.Tensor:
        """Mean training loss over the labelled positions of ``batch`` (a scalar).

        ``model`` is the module to call, e.g. the ``DistributedDataParallel`` wrapper of
        ``self.model``; by default ``self.model``.
        """
        module = self.model if model is None else model
        batch = self._on_device(batch)
        output = module(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            labels=batch["labels"],
        )
        loss: torch.Tensor = output.loss
        return loss

    @torch.no_grad()
    def masked_token_stats(self, batch: Inputs) -> MaskedTokenStats:
        """Loss sum, correct predictions and count over the labelled positions (no grad)."""
        batch = self._on_device(batch)
        with self._eval_mode():
            logits = self.model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits  # [B, L, V]
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
        output = self.model.base_model(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
        )
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
                output = self.model.base_model(
                    input_ids=inputs["input_ids"],
                    attention_mask=inputs["attention_mask"],
                    output_attentions=True,
                )
        finally:
            if previous != "eager":
                self.model.set_attn_implementation(previous)
        return tuple(output.attentions)

    # -- persistence ----------------------------------------------------------------

    @abc.abstractmethod
    def _save_vocabulary(self, path: Path) -> None:
        """Write the tokenizer or action vocabulary into ``path``."""

    def save(self, path: str | Path) -> Path:
        """Write weights (safetensors), model config, vocabulary and ``custembed_encoder.json``.

        The json is written last, so a directory holding it is complete.
        """
        target = Path(path)
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
        (target / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
        log.info("saved %s encoder to %s", self.kind, target)
        return target


class HfTextEncoder(SequenceEncoder[C]):
    """Shared part of the encoders that read ``text`` with a checkpoint's own tokenizer."""

    input_column: ClassVar[str] = "text"

    def __init__(self, config: C, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
        super().__init__(config, model)
        self.tokenizer = tokenizer

    @staticmethod
    def load_tokenizer(checkpoint: str) -> PreTrainedTokenizerBase:
        """The checkpoint's tokenizer, cutting the oldest text and padding on the right."""
        return AutoTokenizer.from_pretrained(
            checkpoint, truncation_side="left", padding_side="right"
        )

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


def encoder_classes() -> Mapping[str, type[SequenceEncoder[Any]]]:
    """The registered encoder classes by kind."""
    # Imported here: the model modules import this one.
    from custembed.encoders.bert4rec import Bert4RecEncoder
    from custembed.encoders.causal_lm import CausalLmEncoder
    from custembed.encoders.hf_mlm import MlmEncoder

    classes: tuple[type[SequenceEncoder[Any]], ...] = (Bert4RecEncoder, MlmEncoder, CausalLmEncoder)
    return MappingProxyType({cls.kind: cls for cls in classes})


def encoder_class(kind: str) -> type[SequenceEncoder[Any]]:
    """The encoder class registered as ``kind``; ``ValueError`` naming it if unknown."""
    classes = encoder_classes()
    if kind not in classes:
        raise ValueError(f"unknown encoder kind {kind!r}; known kinds: {sorted(classes)}")
    return classes[kind]


def build_encoder(kind: str, **params: Any) -> SequenceEncoder[Any]:
    """Build an encoder of ``kind`` from its config's fields, e.g.
    ``build_encoder("bert4rec", vocab_size=1000)`` or ``build_encoder("mlm", checkpoint=...)``.
    """
    return encoder_class(kind).create(**params)


def load_encoder(path: str | Path) -> SequenceEncoder[Any]:
    """Load an encoder saved by :meth:`SequenceEncoder.save`, whatever its kind."""
    directory = Path(path)
    meta_path = directory / META_FILE
    if not meta_path.is_file():
        raise ValueError(f"{directory} is not a saved encoder: {META_FILE} is missing")
    meta = json.loads(meta_path.read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{meta_path} has format_version {meta.get('format_version')!r}, expected {FORMAT_VERSION}"
        )
    return encoder_class(meta["kind"]).load(directory, meta)

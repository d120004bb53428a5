"""CPL4Rec: multi-behaviour pre-training, then customised prompt learning for a target behaviour.

No public code exists; this is our reading of the seed (``shared/seeds/002``) and of its
closest published relative, DPCPL (arXiv 2408.11372). Where they are vague, the choices
are ours and are named here (and in ``docs/nextitem.md``):

* **Steps are (item, behaviour).** An action id of our vocabulary is split by two lookup
  tables (``action_item``, ``action_behaviour``, buffers saved with the weights) into an
  item index and a behaviour index; the input of a step is item embedding + behaviour
  embedding + position embedding.
* **Pre-training (stage ``pretrain``)**: a bidirectional Transformer over all behaviours
  with a masked-item objective: a masked step keeps its behaviour embedding and the model
  predicts its item (tied item embeddings, head at the masked steps only). Optional
  **denoising** (``denoise``): a learnable filter in the frequency domain along the
  sequence before the Transformer (FMLP-Rec style: rFFT, multiply by learned complex
  weights, inverse rFFT, residual + norm), DPCPL's idea of removing noisy interactions at
  several time scales reduced to one learned spectrum.
* **Customised prompt learning (stage ``prompt``)**: the backbone is frozen. A prompt
  generator (an MLP) maps the user's behaviour statistics (share of each behaviour in
  the history, log length), optional user attributes and the frozen backbone's mean
  state of the user to ``num_prompts`` soft prompts of width H, prepended to the step
  embeddings. A ``[mask]`` step with the target behaviour is appended; its representation
  predicts the next target-behaviour item. Only the generator, the PFG gate and a small
  head (dense + norm before the tied item embeddings) train.
* **Progressive feature generation (PFG)**: a learned softmax gate over the outputs of
  every backbone layer at the ``[mask]`` step, instead of the last layer alone.
* **Compactness**: ``compactness`` x (mean squared distance of the batch's prompts to
  their centroid + the squared excess of each prompt's norm over ``prompt_norm``).

Ablations are switches: ``use_prompts=False`` (head only, on the frozen backbone),
``use_pfg=False`` (last layer), ``compactness=0``. Each changes the trainable parameter
count as :meth:`Cpl4RecModel.trainable_parameters` reports.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, cast

import torch
import torch.nn.functional as F
from torch import nn

from custembed.encoders.base import FORMAT_VERSION, META_FILE, MaskedTokenStats, RankingMetrics, SequenceEncoder
from custembed.encoders.masking import (
    IGNORE_INDEX,
    Inputs,
    check_action_ids,
    check_fraction,
    check_pooling,
    choose_positions,
    pad_right_keep_recent,
)
from custembed.nextitem import last_action_metrics

PRETRAIN = "pretrain"
PROMPT = "prompt"
STAGES = (PRETRAIN, PROMPT)
PROMPT_PARTS = ("generator", "gate", "task_head")  # what the prompt stage trains; the rest is the backbone


@dataclass(frozen=True)
class Cpl4RecConfig:
    """Sizes, the id split and the switches of a CPL4Rec model."""

    action_item: tuple[int, ...]  # item index of every action id (0 = none: padding, special, no item)
    action_behaviour: tuple[int, ...]  # behaviour index of every action id (0 = none)
    n_items: int  # item indices 1..n_items-1 (0 reserved)
    n_behaviours: int  # behaviour indices 1..n_behaviours-1 (0 reserved)
    target_behaviour: int = 1  # the behaviour the prompt stage predicts
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 2
    max_len: int = 50
    dropout: float = 0.1
    mask_prob: float = 0.3
    denoise: bool = False
    num_prompts: int = 4
    prompt_hidden: int = 128
    n_attributes: int = 0  # width of the optional user-attribute vector the generator reads
    use_prompts: bool = True
    use_pfg: bool = True
    compactness: float = 0.1
    prompt_norm: float = 1.0
    stage: str = PRETRAIN

    def __post_init__(self) -> None:
        if len(self.action_item) != len(self.action_behaviour):
            raise ValueError("action_item and action_behaviour must give one entry per action id")
        if max(self.action_item, default=0) >= self.n_items or min(self.action_item, default=0) < 0:
            raise ValueError(f"action_item holds an index outside [0, {self.n_items})")
        if max(self.action_behaviour, default=0) >= self.n_behaviours or min(self.action_behaviour, default=0) < 0:
            raise ValueError(f"action_behaviour holds an index outside [0, {self.n_behaviours})")
        if not 1 <= self.target_behaviour < self.n_behaviours:
            raise ValueError(f"target_behaviour must be in [1, {self.n_behaviours}), got {self.target_behaviour}")
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {self.stage!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size={self.hidden_size} is not a multiple of num_heads={self.num_heads}")
        if self.compactness < 0 or self.num_prompts < 1 or self.prompt_norm <= 0:
            raise ValueError("need compactness >= 0, num_prompts >= 1 and prompt_norm > 0")
        if not 0.0 < self.mask_prob <= 1.0:
            raise ValueError(f"mask_prob must be in (0, 1], got {self.mask_prob}")


@dataclass
class Cpl4RecOutput:
    loss: torch.Tensor | None  # scalar
    logits: torch.Tensor | None  # [N, n_items] at the predicted steps
    labels: torch.Tensor | None  # [N] item indices
    user: torch.Tensor  # [B, H] the user representation (mean state, or the [mask] step's in the prompt stage)


def mean_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the labels that are not ``IGNORE_INDEX`` (-100); 0, still in the graph, without any.

    A batch in which no row has a target (no target-behaviour step to predict) must not give NaN.
    """
    total = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (labels != IGNORE_INDEX).sum().clamp(min=1)


class FrequencyFilter(nn.Module):
    """Learned filter along the sequence in the frequency domain (rFFT → complex weights → inverse), residual."""

    def __init__(self, max_len: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(max_len // 2 + 1, hidden, 2) * 0.02)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, L, H]
        length = x.size(1)
        spectrum = torch.fft.rfft(x.float(), n=length, dim=1)  # [B, L//2+1, H]
        weight = torch.view_as_complex(self.weight[: spectrum.size(1)].float().contiguous())  # [L//2+1, H]
        filtered = torch.fft.irfft(spectrum * weight, n=length, dim=1).to(x.dtype)  # [B, L, H]
        return self.norm(x + self.dropout(filtered))


class Cpl4RecModel(nn.Module):
    """Backbone (item + behaviour + position embeddings, optional filter, Transformer) and the prompt stage."""

    action_item: torch.Tensor  # [V] buffer
    action_behaviour: torch.Tensor  # [V] buffer

    def __init__(self, config: Cpl4RecConfig) -> None:
        super().__init__()
        self.config = config
        h = config.hidden_size
        self.register_buffer("action_item", torch.tensor(config.action_item, dtype=torch.long))
        self.register_buffer("action_behaviour", torch.tensor(config.action_behaviour, dtype=torch.long))
        # backbone
        self.items = nn.Embedding(config.n_items + 1, h, padding_idx=0)  # the last index is [mask]
        self.behaviours = nn.Embedding(config.n_behaviours, h, padding_idx=0)
        self.positions = nn.Embedding(config.max_len + config.num_prompts + 1, h)
        self.input_norm = nn.LayerNorm(h)
        self.input_dropout = nn.Dropout(config.dropout)
        length = config.max_len + config.num_prompts + 1  # the longest input: prompts, steps, query
        self.filter = FrequencyFilter(length, h, config.dropout) if config.denoise else None
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(h, config.num_heads, 4 * h, config.dropout, activation="gelu", batch_first=True)
            for _ in range(config.num_layers)
        )
        self.mlm_head = nn.Sequential(nn.Linear(h, h), nn.GELU(), nn.LayerNorm(h))
        # prompt stage
        stats = config.n_behaviours + 1 + config.n_attributes  # behaviour shares, log length, attributes
        self.generator = nn.Sequential(
            nn.Linear(stats + h, config.prompt_hidden),
            nn.GELU(),
            nn.Linear(config.prompt_hidden, config.num_prompts * h),
        )
        self.gate = nn.Parameter(torch.zeros(config.num_layers + 1))
        self.task_head = nn.Sequential(nn.Linear(h, h), nn.GELU(), nn.LayerNorm(h))
        self.apply(self._init_weights)
        self.set_stage(config.stage)

    def _init_weights(self, module: nn.Module) -> None:
        # torch's N(0, 1) embeddings make the tied item logits huge at the start (a loss of 12 over 30
        # items); BERT's 0.02 makes them so small that a head on a frozen backbone can hardly move them.
        # Unit-norm rows (std 1/sqrt(H)) sit between.
        if isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=self.config.hidden_size**-0.5)
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            nn.init.zeros_(module.weight[module.padding_idx])

    @property
    def mask_item(self) -> int:
        return self.config.n_items

    # -- stages -------------------------------------------------------------------------
    def set_stage(self, stage: str) -> None:
        """``pretrain``: everything but the prompt parts trains; ``prompt``: the backbone is frozen."""
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        self.stage = stage
        for name, parameter in self.named_parameters():
            top = name.split(".")[0]
            if stage == PRETRAIN:
                parameter.requires_grad = top not in PROMPT_PARTS
            else:
                parameter.requires_grad = top in PROMPT_PARTS and self._switched_on(top)

    def _switched_on(self, part: str) -> bool:
        if part == "generator":
            return self.config.use_prompts
        if part == "gate":
            return self.config.use_pfg
        return True

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # -- the backbone ---------------------------------------------------------------------
    def _embed(self, items: torch.Tensor, behaviours: torch.Tensor, offset: int = 0) -> torch.Tensor:
        positions = torch.arange(offset, offset + items.size(1), device=items.device)
        steps = self.items(items) + self.behaviours(behaviours) + self.positions(positions)  # [B, L, H]
        return steps

    def _encode(self, steps: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
        """Hidden states after the input block and after every layer: ``num_layers + 1`` of ``[B, L, H]``."""
        x = self.input_dropout(self.input_norm(steps))
        if self.filter is not None:
            x = self.filter(x)
        states = [x]
        padding = attention_mask == 0  # [B, L] True where padded
        for layer in self.layers:
            x = layer(x, src_key_padding_mask=padding)
            states.append(x)
        return states

    def split(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Action ids ``[B, L]`` → (item indices, behaviour indices), both ``[B, L]``."""
        return self.action_item[input_ids], self.action_behaviour[input_ids]

    def user_state(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The backbone's mean last-layer state over the real steps, ``[B, H]``."""
        items, behaviours = self.split(input_ids)
        hidden = self._encode(self._embed(items, behaviours), attention_mask)[-1]
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)

    def _item_logits(self, states: torch.Tensor, head: nn.Module) -> torch.Tensor:
        return head(states) @ self.items.weight[: self.config.n_items].T  # [N, n_items]; index 0 never a target

    # -- forward ---------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor | None = None,
        masked: torch.Tensor | None = None,
        attributes: torch.Tensor | None = None,
    ) -> Cpl4RecOutput:
        """``pretrain``: ``masked [B, L]`` marks steps whose item is hidden, ``labels [B, L]`` their item index
        (ignored elsewhere). ``prompt``: ``labels [B]`` the next target-behaviour item index."""
        if self.stage == PRETRAIN:
            return self._pretrain(input_ids, attention_mask, labels, masked)
        return self._prompt(input_ids, attention_mask, labels, attributes)

    def _pretrain(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor | None,
        masked: torch.Tensor | None,
    ) -> Cpl4RecOutput:
        items, behaviours = self.split(input_ids)
        if masked is not None:
            items = items.masked_fill(masked, self.mask_item)  # the behaviour stays visible
        hidden = self._encode(self._embed(items, behaviours), attention_mask)[-1]  # [B, L, H]
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        user = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        if masked is None or labels is None:
            return Cpl4RecOutput(None, None, None, user)
        logits = self._item_logits(hidden[masked], self.mlm_head)  # [N, n_items]
        targets = labels[masked]
        return Cpl4RecOutput(mean_cross_entropy(logits, targets), logits, targets, user)

    def behaviour_stats(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Share of each behaviour among the real steps and log(1 + length): ``[B, n_behaviours + 1]``."""
        _, behaviours = self.split(input_ids)
        counts = F.one_hot(behaviours, self.config.n_behaviours).to(torch.float32)  # [B, L, nB]
        counts = (counts * attention_mask.unsqueeze(-1)).sum(dim=1)  # [B, nB]
        length = attention_mask.sum(dim=1, keepdim=True).to(torch.float32)
        return torch.cat([counts / length.clamp(min=1.0), torch.log1p(length)], dim=1)

    def prompts(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, attributes: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The user's soft prompts, ``[B, P, H]``, from its statistics, attributes and frozen backbone state."""
        with torch.no_grad():
            user = self.user_state(input_ids, attention_mask)  # the frozen backbone's view of the user
        features = [self.behaviour_stats(input_ids, attention_mask)]
        if self.config.n_attributes:
            if attributes is None:
                raise ValueError(f"this model reads {self.config.n_attributes} user attributes; got none")
            features.append(attributes.to(torch.float32))
        features.append(user)
        flat = self.generator(torch.cat(features, dim=1))  # [B, P * H]
        return flat.view(input_ids.size(0), self.config.num_prompts, self.config.hidden_size)

    def _prompt(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor | None,
        attributes: torch.Tensor | None,
    ) -> Cpl4RecOutput:
        b = input_ids.size(0)
        items, behaviours = self.split(input_ids)
        # append the query step: [mask] item with the target behaviour, right after each sequence
        lengths = attention_mask.sum(dim=1)  # [B]
        items = torch.cat([items, items.new_zeros(b, 1)], dim=1)
        behaviours = torch.cat([behaviours, behaviours.new_zeros(b, 1)], dim=1)
        mask = torch.cat([attention_mask, attention_mask.new_zeros(b, 1)], dim=1)
        rows = torch.arange(b, device=input_ids.device)
        items[rows, lengths] = self.mask_item
        behaviours[rows, lengths] = self.config.target_behaviour
        mask[rows, lengths] = 1
        n_prompts = self.config.num_prompts if self.config.use_prompts else 0
        steps = self._embed(items, behaviours, offset=n_prompts)  # [B, L+1, H]
        penalty = steps.new_zeros(())
        if n_prompts:
            prompts = self.prompts(input_ids, attention_mask, attributes)  # [B, P, H]
            steps = torch.cat([prompts, steps], dim=1)
            mask = torch.cat([mask.new_ones(b, n_prompts), mask], dim=1)
            penalty = self.compactness_penalty(prompts)
        states = self._encode(steps, mask)  # num_layers + 1 of [B, P + L + 1, H]
        query = n_prompts + lengths  # [B]
        if self.config.use_pfg:
            gate = torch.softmax(self.gate, dim=0)
            fused = sum(g * s[rows, query] for g, s in zip(gate, states, strict=True))  # [B, H]
        else:
            fused = states[-1][rows, query]
        user = torch.as_tensor(fused)
        logits = self._item_logits(user, self.task_head)  # [B, n_items]
        if labels is None:
            return Cpl4RecOutput(None, logits, None, user)
        loss = mean_cross_entropy(logits, labels) + self.config.compactness * penalty
        return Cpl4RecOutput(loss, logits, labels, user)

    def compactness_penalty(self, prompts: torch.Tensor) -> torch.Tensor:
        """Mean squared distance of the prompts to their batch centroid + squared norm excess over ``prompt_norm``."""
        flat = prompts.reshape(prompts.size(0), -1)  # [B, P * H]
        spread = ((flat - flat.mean(dim=0, keepdim=True)) ** 2).sum(dim=1).mean()
        excess = F.relu(prompts.norm(dim=-1) - self.config.prompt_norm).pow(2).mean()
        return spread / prompts.size(1) + excess


def split_tables(behaviour_item: Sequence[tuple[str, str | None]], n_special: int) -> dict[str, object]:
    """Lookup tables of a vocabulary: (behaviour, item) of each action id from ``n_special`` on →
    ``action_item``, ``action_behaviour``, ``n_items``, ``n_behaviours`` and the behaviour names.

    Items are shared across behaviours (``buying tv`` and ``viewing tv`` are item ``tv``);
    actions without an item (``no action``) get item 0; index 0 is also every special id.
    """
    behaviour_names: list[str] = []
    item_names: list[str] = []
    items, behaviours = [0] * n_special, [0] * n_special
    behaviour_index: dict[str, int] = {}
    item_index: dict[str, int] = {}
    for behaviour, item in behaviour_item:
        if behaviour not in behaviour_index:
            behaviour_index[behaviour] = len(behaviour_index) + 1
            behaviour_names.append(behaviour)
        behaviours.append(behaviour_index[behaviour])
        if item is None:
            items.append(0)
            continue
        if item not in item_index:
            item_index[item] = len(item_index) + 1
            item_names.append(item)
        items.append(item_index[item])
    return {
        "action_item": tuple(items),
        "action_behaviour": tuple(behaviours),
        "n_items": len(item_index) + 1,
        "n_behaviours": len(behaviour_index) + 1,
        "behaviours": tuple(behaviour_names),
        "items": tuple(item_names),
    }


# -- the encoder: CPL4Rec as a registered SequenceEncoder (kind ``cpl4rec``) ------------------------------

MODEL_FILE = "model.safetensors"  # weights and the id split (buffers)
MODEL_CONFIG_FILE = "cpl4rec.json"  # sizes and switches of the network (the split is in the weights)


@dataclass(frozen=True)
class Cpl4RecEncoderConfig:
    """Fields of ``train.encoders.<name>.model`` for kind ``cpl4rec``.

    The id split is not a field: the train job writes the run's vocabulary and names it in
    ``vocabulary_file``; the encoder derives ``action_item`` / ``action_behaviour`` from it and
    keeps them as buffers beside the weights (MLflow params could not hold them).
    """

    vocab_size: int = field(metadata={"help": "Number of ids: special ids plus actions (set by train)."})
    no_action_id: int | None = field(
        default=None, metadata={"help": "Id of 'no action' (set by train): left out of HR/NDCG."}
    )
    vocabulary_file: str = field(
        default="", metadata={"help": "Set by train: the run's vocabulary (JSON) the id split comes from."}
    )
    backbone_dir: str = field(
        default="", metadata={"help": "Set by train (stage prompt): the registered backbone named by `backbone`."}
    )
    stage: str = field(default=PRETRAIN, metadata={"help": "pretrain (backbone, all behaviours) or prompt."})
    backbone: str = field(
        default="", metadata={"help": "Stage prompt: the name under train.encoders of the pretrain-stage encoder."}
    )
    target_behaviour: str = field(default="buying", metadata={"help": "Behaviour the prompt stage predicts."})
    finetune_backbone: bool = field(
        default=False, metadata={"help": "Stage prompt: train the backbone too (full fine-tuning, for comparison)."}
    )
    hidden_size: int = field(default=64, metadata={"help": "Width of embeddings and layers."})
    num_layers: int = field(default=2, metadata={"help": "Transformer layers of the backbone."})
    num_heads: int = field(default=2, metadata={"help": "Attention heads per layer."})
    max_len: int = field(default=50, metadata={"help": "Most recent actions kept per sequence."})
    dropout: float = field(default=0.1, metadata={"help": "Dropout of embeddings and layers."})
    mask_prob: float = field(default=0.3, metadata={"help": "Stage pretrain: share of items masked."})
    denoise: bool = field(default=False, metadata={"help": "Learned frequency-domain filter before the layers."})
    num_prompts: int = field(default=4, metadata={"help": "Soft prompts per user."})
    prompt_hidden: int = field(default=128, metadata={"help": "Hidden width of the prompt generator."})
    use_prompts: bool = field(default=True, metadata={"help": "Ablation: false = head only on the frozen backbone."})
    use_pfg: bool = field(default=True, metadata={"help": "Ablation: false = last layer instead of the PFG gate."})
    compactness: float = field(default=0.1, metadata={"help": "Weight of the prompt compactness term; 0 = off."})
    prompt_norm: float = field(default=1.0, metadata={"help": "Norm a prompt may reach before it is penalised."})
    pooling: str = field(default="mean", metadata={"help": "Stage pretrain embed pooling: mean, first or last."})
    pad_id: int = field(default=0, metadata={"help": "Padding id."})
    n_special: int = field(default=3, metadata={"help": "Ids below this are special; actions start here."})

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {self.stage!r}")
        if self.stage == PROMPT and not self.backbone:
            raise ValueError("stage prompt needs backbone: the name of the pretrain-stage encoder under train.encoders")
        if self.stage == PRETRAIN and (self.backbone or self.finetune_backbone):
            raise ValueError("backbone and finetune_backbone belong to stage prompt; this encoder is stage pretrain")
        if self.vocab_size <= self.n_special:
            raise ValueError(f"vocab_size must exceed n_special={self.n_special}, got {self.vocab_size}")
        for name in ("hidden_size", "num_layers", "num_heads", "max_len", "num_prompts", "prompt_hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size={self.hidden_size} is not a multiple of num_heads={self.num_heads}")
        check_fraction("dropout", self.dropout)
        check_fraction("mask_prob", self.mask_prob, open_low=True)
        check_pooling(self.pooling)
        if self.compactness < 0 or self.prompt_norm <= 0:
            raise ValueError(f"need compactness >= 0 and prompt_norm > 0, got {self.compactness}, {self.prompt_norm}")


ARCHITECTURE = ("hidden_size", "num_layers", "num_heads", "max_len", "denoise", "num_prompts")  # the backbone's


class Cpl4RecStep(nn.Module):
    """What a training step calls (and DDP wraps): ids, mask and ``labels`` in, :class:`Cpl4RecOutput` out.

    ``labels`` are action ids, as for the other encoders: ``[B, L]`` at the masked steps (stage pretrain,
    ``IGNORE_INDEX`` elsewhere) or ``[B]`` the next target-behaviour action (stage prompt, ``IGNORE_INDEX``
    for rows without one). The network predicts their items.
    """

    def __init__(self, model: Cpl4RecModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> Cpl4RecOutput:
        labelled = labels != IGNORE_INDEX
        items = self.model.action_item[labels.clamp(min=0)]  # action ids -> item indices
        if self.model.stage == PRETRAIN:
            output: Cpl4RecOutput = self.model(input_ids, attention_mask, labels=items, masked=labelled)
            return output
        targets = items.masked_fill(~labelled, IGNORE_INDEX)  # [B]
        prompt_output: Cpl4RecOutput = self.model(input_ids, attention_mask, labels=targets)
        return prompt_output


class Cpl4RecEncoder(SequenceEncoder[Cpl4RecEncoderConfig]):
    """CPL4Rec over action ids: stage ``pretrain`` (the backbone) or ``prompt`` (adapted to a target behaviour)."""

    kind: ClassVar[str] = "cpl4rec"
    input_column: ClassVar[str] = "tokens"
    config_class: ClassVar[type[Any]] = Cpl4RecEncoderConfig
    data_fields: ClassVar[tuple[str, ...]] = ("vocab_size", "no_action_id", "vocabulary_file", "backbone_dir")

    def __init__(self, config: Cpl4RecEncoderConfig, model: Cpl4RecModel, behaviours: Sequence[str]) -> None:
        super().__init__(config, cast(Any, model))  # not a Hugging Face model: save/load are this class's
        if len(model.action_item) != config.vocab_size:
            raise ValueError(f"the id split covers {len(model.action_item)} ids, vocab_size is {config.vocab_size}")
        self.behaviours = tuple(behaviours)
        self._step: Cpl4RecStep | None = None
        model.set_stage(config.stage)
        if config.finetune_backbone:
            for name, parameter in model.named_parameters():
                if name.split(".")[0] not in (*PROMPT_PARTS, "mlm_head"):  # the MLM head is unused in this stage
                    parameter.requires_grad = True

    @property
    def network(self) -> Cpl4RecModel:
        return cast(Cpl4RecModel, self.model)

    @property
    def hidden_size(self) -> int:
        return int(self.config.hidden_size)

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: Any) -> Cpl4RecEncoder:
        """Stage pretrain: fresh weights over the split of ``vocabulary_file``. Stage prompt: the backbone
        in ``backbone_dir`` (same split and architecture) with fresh prompt parts."""
        from custembed import lakefs
        from custembed.catalogue import StoredVocabulary

        if not config.vocabulary_file:
            raise ValueError("a cpl4rec encoder needs vocabulary_file (the train job sets it from the run's catalogue)")
        vocabulary = StoredVocabulary.from_json(lakefs.read_text(config.vocabulary_file))
        if vocabulary.vocab_size != config.vocab_size:
            raise ValueError(
                f"{config.vocabulary_file} has {vocabulary.vocab_size} ids, vocab_size is {config.vocab_size}"
            )
        tables = split_tables([(b, i) for b, i, _ in vocabulary.actions], config.n_special)
        behaviours = cast(tuple[str, ...], tables["behaviours"])
        if config.target_behaviour not in behaviours:
            raise ValueError(f"target_behaviour {config.target_behaviour!r} is not a behaviour of {behaviours}")
        model_config = Cpl4RecConfig(
            action_item=cast(tuple[int, ...], tables["action_item"]),
            action_behaviour=cast(tuple[int, ...], tables["action_behaviour"]),
            n_items=cast(int, tables["n_items"]),
            n_behaviours=cast(int, tables["n_behaviours"]),
            target_behaviour=behaviours.index(config.target_behaviour) + 1,
            **{name: getattr(config, name) for name in MODEL_FIELDS},
        )
        model = Cpl4RecModel(model_config)
        if config.stage == PROMPT:
            _load_backbone(model, config)
        return cls(config, model, behaviours)

    @classmethod
    def load(cls, path: Path, meta: Mapping[str, Any]) -> Cpl4RecEncoder:
        from safetensors.torch import load_file

        config = Cpl4RecEncoderConfig(**meta["config"])
        saved = json.loads((path / MODEL_CONFIG_FILE).read_text())
        state = load_file(str(path / MODEL_FILE))
        model_config = Cpl4RecConfig(
            action_item=tuple(int(v) for v in state["action_item"].tolist()),
            action_behaviour=tuple(int(v) for v in state["action_behaviour"].tolist()),
            **saved["model"],
        )
        model = Cpl4RecModel(model_config)
        model.load_state_dict(state)
        return cls(config, model, saved["behaviours"])

    def _save_vocabulary(self, path: Path) -> None:
        """Nothing more: the split is in the weights; the train job writes ``vocabulary.json`` beside them."""

    def _save_local(self, target: Path) -> Path:
        from safetensors.torch import save_file

        target.mkdir(parents=True, exist_ok=True)
        state = {name: tensor.detach().cpu().contiguous() for name, tensor in self.network.state_dict().items()}
        save_file(state, str(target / MODEL_FILE))
        network_config = {k: v for k, v in dataclasses.asdict(self.network.config).items() if k not in SPLIT_FIELDS}
        saved = {"model": network_config, "behaviours": list(self.behaviours)}
        (target / MODEL_CONFIG_FILE).write_text(json.dumps(saved, indent=2, sort_keys=True))
        meta = {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "pooling": self.pooling,
            "max_len": self.max_len,
            "config": dataclasses.asdict(self.config),
        }
        meta_file = target / META_FILE
        meta_file.write_text(json.dumps(meta, indent=2, sort_keys=True))
        return meta_file

    def to(self, device: torch.device | str) -> Cpl4RecEncoder:
        self.network.to(torch.device(device))
        return self

    # -- parameter counts (the parameter-efficiency comparison) -----------------------------------
    def trainable_parameters(self) -> int:
        """Parameters this stage and these switches train."""
        return self.network.trainable_parameters()

    def total_parameters(self) -> int:
        """Every parameter of the network (backbone, MLM head and prompt parts alike)."""
        return sum(p.numel() for p in self.network.parameters())

    # -- batches -----------------------------------------------------------------------------
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
        """Stage pretrain: items hidden at random steps (labels ``[B, L]``: their action ids; the network hides
        the items itself and keeps the behaviours). Stage prompt: each sequence cut before one of its
        target-behaviour steps drawn at random (labels ``[B]``: that step's action id)."""
        input_ids, attention_mask = inputs["input_ids"], inputs["attention_mask"]  # [B, L]
        items = self.network.action_item.to(input_ids.device)[input_ids]  # [B, L]
        if self.config.stage == PRETRAIN:
            # only steps with an item are predicted: never padding, special ids or 'no action'
            candidates = attention_mask.bool() & (items > 0)
            chosen = choose_positions(candidates, self.config.mask_prob, generator)  # at least one per sequence
            return {**inputs, "labels": input_ids.masked_fill(~chosen, IGNORE_INDEX)}
        behaviours = self.network.action_behaviour.to(input_ids.device)[input_ids]  # [B, L]
        positions = torch.arange(input_ids.size(1), device=input_ids.device).unsqueeze(0)  # [1, L]
        # a target needs a history before it: steps from position 1 on
        candidates = attention_mask.bool() & (items > 0) & (behaviours == self.network.config.target_behaviour)
        candidates &= positions >= 1
        draws = torch.rand(tuple(input_ids.shape), generator=generator, device=generator.device).to(input_ids.device)
        cut = torch.where(candidates, draws, -1.0).argmax(dim=1)  # [B] a uniformly drawn candidate
        has_target = candidates.any(dim=1)  # [B]
        cut = torch.where(has_target, cut, attention_mask.sum(dim=1))  # rows without one keep everything
        keep = positions < cut.unsqueeze(1)  # [B, L]
        rows = torch.arange(input_ids.size(0), device=input_ids.device)
        labels = torch.where(has_target, input_ids[rows, cut.clamp(max=input_ids.size(1) - 1)], IGNORE_INDEX)  # [B]
        return {
            "input_ids": input_ids.masked_fill(~keep, self.config.pad_id),
            "attention_mask": attention_mask * keep.to(attention_mask.dtype),
            "labels": labels,
        }

    # -- forward passes ----------------------------------------------------------------------
    def training_module(self) -> torch.nn.Module:
        if self._step is None or self._step.model is not self.network:
            self._step = Cpl4RecStep(self.network)
        return self._step

    @torch.no_grad()
    def masked_token_stats(self, batch: Inputs) -> MaskedTokenStats:
        """Cross-entropy sum (no compactness term), correct arg-max and count over the labelled steps or rows."""
        batch = self._on_device(batch)
        with self._eval_mode():
            output = self.training_module()(batch["input_ids"], batch["attention_mask"], batch["labels"])
        logits, labels = output.logits, output.labels
        if logits is None or labels is None:
            return MaskedTokenStats(0.0, 0, 0)
        valid = labels != IGNORE_INDEX
        logits, labels = logits[valid].float(), labels[valid]
        return MaskedTokenStats(
            loss_sum=float(F.cross_entropy(logits, labels, reduction="sum")) if labels.numel() else 0.0,
            correct=int((logits.argmax(dim=-1) == labels).sum()),
            count=int(labels.numel()),
        )

    def _item_scores(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``[B, n_items]`` scores of each item as the next target-behaviour item after the real steps."""
        network = self.network
        if network.stage == PROMPT:
            logits = network(input_ids, attention_mask).logits
            return cast(torch.Tensor, logits).float()
        # the backbone alone: a [mask] step of the target behaviour appended, read by the MLM head
        b = input_ids.size(0)
        items, behaviours = network.split(input_ids)
        lengths = attention_mask.sum(dim=1)  # [B]
        rows = torch.arange(b, device=input_ids.device)
        items = torch.cat([items, items.new_zeros(b, 1)], dim=1)
        behaviours = torch.cat([behaviours, behaviours.new_zeros(b, 1)], dim=1)
        mask = torch.cat([attention_mask, attention_mask.new_zeros(b, 1)], dim=1)
        items[rows, lengths] = network.mask_item
        behaviours[rows, lengths] = network.config.target_behaviour
        mask[rows, lengths] = 1
        hidden = network._encode(network._embed(items, behaviours), mask)[-1]  # [B, L + 1, H]
        return network._item_logits(hidden[rows, lengths], network.mlm_head).float()

    def _action_scores(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``[B, V]``: an action of the target behaviour scores as its item; every other id ``-inf``."""
        network = self.network
        with self._eval_mode():
            item_scores = self._item_scores(input_ids, attention_mask)  # [B, n_items]
        scorable = (network.action_item > 0) & (network.action_behaviour == network.config.target_behaviour)  # [V]
        scores = item_scores[:, network.action_item]  # [B, V]
        return scores.masked_fill(~scorable.unsqueeze(0), float("-inf"))

    @torch.no_grad()
    def score_next(self, tokens: Sequence[Sequence[int]], gaps: Sequence[Sequence[int]] | None = None) -> torch.Tensor:
        """``[B, V]`` scores of every id as each sequence's next action (only target-behaviour actions score)."""
        batch = self._on_device(self.inputs(tokens=tokens))
        return self._action_scores(batch["input_ids"], batch["attention_mask"])

    @torch.no_grad()
    def next_action_metrics(self, inputs: Inputs, k: int = 10) -> dict[str, float]:
        """HR@k / NDCG@k of each sequence's last action from the ones before it, over target-behaviour targets."""
        inputs = self._on_device(inputs)
        input_ids, attention_mask = inputs["input_ids"].clone(), inputs["attention_mask"].clone()  # [B, L]
        lengths = attention_mask.sum(dim=1)
        rows = torch.arange(input_ids.size(0), device=input_ids.device)
        last = (lengths - 1).clamp(min=0)
        targets = input_ids[rows, last]  # [B]
        network = self.network
        on_target = (network.action_behaviour[targets] == network.config.target_behaviour) & (
            network.action_item[targets] > 0
        )
        real = (lengths > 1) & on_target
        input_ids[rows, last] = self.config.pad_id
        attention_mask[rows, last] = 0
        scores = self._action_scores(input_ids, attention_mask)
        return last_action_metrics(
            scores, targets, real, first_item=self.config.n_special, no_action_id=self.config.no_action_id, k=k
        )

    def ranking_metrics(self, inputs: Inputs, k: int) -> RankingMetrics:
        return RankingMetrics.from_metrics(self.next_action_metrics(inputs, k=k), k)

    def hidden_states(self, inputs: Inputs) -> torch.Tensor:
        """The backbone's last-layer states of the real steps, ``[B, L, H]``."""
        inputs = self._on_device(inputs)
        network = self.network
        items, behaviours = network.split(inputs["input_ids"])
        return network._encode(network._embed(items, behaviours), inputs["attention_mask"])[-1]

    @torch.no_grad()
    def embed(self, inputs: Inputs, pooling: str | None = None) -> torch.Tensor:
        """Stage pretrain: pooled backbone states. Stage prompt: the user representation at the query step."""
        if self.network.stage == PRETRAIN:
            return super().embed(inputs, pooling)
        inputs = self._on_device(inputs)
        with self._eval_mode():
            return self.network(inputs["input_ids"], inputs["attention_mask"]).user

    def attentions(self, inputs: Inputs) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError("cpl4rec uses torch's fused encoder layers, which return no attention maps")


SPLIT_FIELDS = ("action_item", "action_behaviour")
MODEL_FIELDS = tuple(
    f.name
    for f in dataclasses.fields(Cpl4RecConfig)
    if f.name not in (*SPLIT_FIELDS, "n_items", "n_behaviours", "target_behaviour", "n_attributes")
)


def _load_backbone(model: Cpl4RecModel, config: Cpl4RecEncoderConfig) -> None:
    """Copy the backbone of the pretrain-stage encoder in ``config.backbone_dir`` into ``model`` (same split, sizes)."""
    from custembed.encoders.registry import load_encoder

    if not config.backbone_dir:
        raise ValueError(
            f"stage prompt needs backbone_dir (the train job sets it from the registered {config.backbone!r})"
        )
    backbone = load_encoder(config.backbone_dir)
    if not isinstance(backbone, Cpl4RecEncoder) or backbone.config.stage != PRETRAIN:
        raise ValueError(f"{config.backbone_dir} is not a pretrain-stage cpl4rec encoder")
    for name in ARCHITECTURE:
        if getattr(backbone.config, name) != getattr(config, name):
            raise ValueError(
                f"{name}={getattr(config, name)!r} differs from the backbone's {getattr(backbone.config, name)!r}"
            )
    source = backbone.network
    if not (
        torch.equal(source.action_item, model.action_item)
        and torch.equal(source.action_behaviour, model.action_behaviour)
    ):
        raise ValueError(f"the backbone in {config.backbone_dir} was trained over another vocabulary")
    weights = {k: v for k, v in source.state_dict().items() if k.split(".")[0] not in PROMPT_PARTS}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected or any(k.split(".")[0] not in PROMPT_PARTS for k in missing):
        raise ValueError(f"backbone weights do not fit: missing {missing}, unexpected {unexpected}")

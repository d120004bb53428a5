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

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

PRETRAIN = "pretrain"
PROMPT = "prompt"
STAGES = (PRETRAIN, PROMPT)


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
        self.set_stage(config.stage)

    @property
    def mask_item(self) -> int:
        return self.config.n_items

    # -- stages -------------------------------------------------------------------------
    def set_stage(self, stage: str) -> None:
        """``pretrain``: everything but the prompt parts trains; ``prompt``: the backbone is frozen."""
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        self.stage = stage
        prompt_parts = {"generator", "gate", "task_head"}
        for name, parameter in self.named_parameters():
            top = name.split(".")[0]
            if stage == PRETRAIN:
                parameter.requires_grad = top not in prompt_parts
            else:
                parameter.requires_grad = top in prompt_parts and self._switched_on(top)

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
        return Cpl4RecOutput(F.cross_entropy(logits.float(), targets), logits, targets, user)

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
        loss = F.cross_entropy(logits.float(), labels) + self.config.compactness * penalty
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

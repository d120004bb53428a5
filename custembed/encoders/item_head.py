"""Item heads evaluated only where there is a label, with optional sampled softmax.

Hugging Face's ``BertForMaskedLM(labels=...)`` and ``GPT2LMHeadModel(labels=...)``
compute logits over the whole vocabulary at *every* position, then keep the few
that carry a label. With an item catalogue of tens of thousands of ids that
matmul dominates a training step: on 2 cores, a 54.5 k-item vocabulary, batch
128, length 50 and mask 0.6, 5.1 s per step against 0.52 s when the head sees the
masked positions only (issue 11's measurement; ``benchmarks/bench_item_head.py``
measures it again). :class:`LabelledPositionsLM` is that second path.

It is an ``nn.Module`` around the Hugging Face network, so the training loop can
wrap it in ``DistributedDataParallel`` (its parameters are the network's, and the
gradient hooks see every one of them): calling the network's submodules from
outside a DDP wrapper would skip the gradient all-reduce.

Sampled softmax (``negatives > 0``): each labelled position is scored against its
target and ``negatives`` ids drawn uniformly from the items, shared by the batch,
with the logQ correction (a constant under uniform draws, so it drops out) and
accidental hits of the target masked out. It trains towards the full softmax for
large catalogues at a fraction of the head's cost; evaluation always uses the
full softmax, so validation losses stay comparable between settings.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from custembed.encoders.masking import IGNORE_INDEX


@dataclass
class HeadOutput:
    """What one forward pass over the labelled positions gives back."""

    loss: torch.Tensor  # scalar: mean cross-entropy over the labelled positions
    logits: torch.Tensor | None  # [N, V] full-vocabulary logits, or None under sampled softmax
    labels: torch.Tensor  # [N] target ids


class LabelledPositionsLM(torch.nn.Module):
    """Base network once, then the item head only at positions whose label is not ``IGNORE_INDEX``.

    Args:
        model: the Hugging Face network; ``model.base_model`` gives the hidden states.
        transform: the part of the head before the output layer (BERT's dense + norm),
            or ``None`` (GPT-2's head is the output layer alone).
        causal: position t predicts the label of t + 1 (labels are not shifted by the caller).
        first_item: lowest id a sampled negative may take (ids below are special).
        negatives: 0 for the full softmax; otherwise the number of uniformly sampled negatives.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        *,
        transform: torch.nn.Module | None,
        causal: bool,
        first_item: int,
        negatives: int = 0,
    ) -> None:
        super().__init__()
        if negatives < 0:
            raise ValueError(f"negatives must be 0 (full softmax) or positive, got {negatives}")
        self.model = model
        self.transform = transform
        self.causal = causal
        self.first_item = first_item
        self.negatives = negatives

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor, **extra: torch.Tensor
    ) -> HeadOutput:
        hidden = self.model.base_model(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        if self.causal:
            # position t predicts token t + 1
            hidden, labels = hidden[:, :-1], labels[:, 1:]  # [B, L-1, H], [B, L-1]
        selected = labels != IGNORE_INDEX  # [B, L]
        states = hidden[selected]  # [N, H]
        targets = labels[selected]  # [N]
        if self.transform is not None:
            states = self.transform(states)
        output = self.model.get_output_embeddings()
        weight = output.weight  # [V, H]
        bias = output.bias if getattr(output, "bias", None) is not None else None
        if self.negatives == 0 or not self.model.training:  # evaluation: always the full softmax
            logits = F.linear(states, weight, bias).float()  # [N, V]
            return HeadOutput(loss=F.cross_entropy(logits, targets), logits=logits, labels=targets)
        return HeadOutput(loss=self._sampled_loss(states, targets, weight, bias), logits=None, labels=targets)

    def _sampled_loss(
        self, states: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        n_items = weight.size(0) - self.first_item
        negatives = torch.randint(
            self.first_item, weight.size(0), (min(self.negatives, n_items),), device=states.device
        )
        positive = (states * weight[targets]).sum(dim=-1, keepdim=True)  # [N, 1]
        negative = states @ weight[negatives].T  # [N, K]
        if bias is not None:
            positive = positive + bias[targets].unsqueeze(1)
            negative = negative + bias[negatives]
        # a sampled negative equal to the target is not a negative
        negative = negative.masked_fill(negatives.unsqueeze(0) == targets.unsqueeze(1), float("-inf"))
        logits = torch.cat([positive, negative], dim=1).float()  # [N, 1 + K]
        return F.cross_entropy(logits, torch.zeros_like(targets))

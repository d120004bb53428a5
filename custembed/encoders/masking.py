"""Masking, padding and pooling helpers the encoders share: plain torch, no model.

Kept apart from the base classes so that imports run one way:
``masking`` <- ``base`` <- the concrete encoders <- ``registry``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

POOLINGS = ("mean", "first", "last")
IGNORE_INDEX = -100  # label value the Hugging Face losses skip

Inputs = dict[str, torch.Tensor]


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


def pad_right_keep_recent(sequences: Sequence[Sequence[int]], *, max_len: int, pad_id: int) -> Inputs:
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


def check_action_ids(tokens: Sequence[Sequence[int]] | None, *, vocab_size: int, kind: str) -> Sequence[Sequence[int]]:
    """``tokens`` when every sequence is non-empty and in ``[0, vocab_size)``; else ``ValueError`` naming the row."""
    if tokens is None:
        raise ValueError(f"{kind} encoder reads action ids, got tokens=None")
    for row, seq in enumerate(tokens):
        if len(seq) == 0:
            raise ValueError(f"sequence {row} is empty; drop customers without actions first")
        low, high = min(seq), max(seq)
        if low < 0 or high >= vocab_size:
            bad = low if low < 0 else high
            raise ValueError(f"sequence {row} holds id {bad} outside [0, {vocab_size})")
    return tokens


def check_gaps(
    tokens: Sequence[Sequence[int]], gaps: Sequence[Sequence[int]] | None, kind: str
) -> Sequence[Sequence[int]]:
    """``gaps`` when it has one entry per token of each sequence; else ``ValueError`` naming the row."""
    return check_aligned(tokens, gaps, kind, column="gaps", setting="use_time_gaps")


def check_amounts(
    tokens: Sequence[Sequence[int]], amounts: Sequence[Sequence[int]] | None, kind: str
) -> Sequence[Sequence[int]]:
    """``amounts`` when it has one entry per token of each sequence; else ``ValueError`` naming the row."""
    return check_aligned(tokens, amounts, kind, column="amounts", setting="use_amounts")


def check_aligned(
    tokens: Sequence[Sequence[int]], values: Sequence[Sequence[int]] | None, kind: str, *, column: str, setting: str
) -> Sequence[Sequence[int]]:
    """``values`` (a per-token sequence column) when it has one entry per token of each sequence."""
    if values is None:
        raise ValueError(
            f"this {kind} encoder reads {column} ({setting}) but got {column}=None: the sequences "
            f"predate the {column} column; rerun `custembed sequences` for that date"
        )
    if len(values) != len(tokens):
        raise ValueError(f"{len(tokens)} sequences but {len(values)} {column} lists")
    for row, (seq, row_values) in enumerate(zip(tokens, values, strict=True)):
        if row_values is None or len(row_values) != len(seq):
            got = None if row_values is None else len(row_values)
            raise ValueError(f"sequence {row}: {len(seq)} tokens but {column} of length {got}")
    return values


def gap_buckets(gaps: Sequence[Sequence[int]], *, max_len: int, buckets: int) -> torch.Tensor:
    """``floor(log2(1 + days))`` capped at ``buckets - 1``, padded like the tokens: ``[B, L]`` int64."""
    days = pad_right_keep_recent(gaps, max_len=max_len, pad_id=0)["input_ids"].clamp(min=0)  # [B, L]
    return torch.log2(days.double() + 1.0).floor().long().clamp(max=buckets - 1)


def _uniform(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    # Draw on the generator's device (CPU normally) so that runs are reproducible everywhere.
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def choose_positions(candidates: torch.Tensor, prob: float, generator: torch.Generator) -> torch.Tensor:
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

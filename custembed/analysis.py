"""Attention between behaviour types (the paper's AttentionViz analysis), without Spark.

Every token of a sequence belongs to one action, and every action to one
behaviour (buying, consulting, repairing, ...). For each layer and head, the
matrix ``[K, K]`` holds, for query tokens of behaviour *a*, the mean total
attention they pay to key tokens of behaviour *b* (rows sum to at most 1).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from custembed.catalogue import ACTION_SEPARATOR
from custembed.encoders import SequenceEncoder


def _behaviour_of(segment: str, behaviours: Sequence[str]) -> int:
    for k, name in sorted(enumerate(behaviours), key=lambda kv: -len(kv[1])):
        if segment.startswith(name):
            return k
    return -1


def token_behaviours_from_text(texts: Sequence[str], offsets: np.ndarray, behaviours: Sequence[str]) -> np.ndarray:
    """``[B, L]`` behaviour index of each token (-1: special or padding) from character offsets."""
    out = np.full(offsets.shape[:2], -1, dtype=np.int64)
    for b, text in enumerate(texts):
        starts, kinds, pos = [], [], 0
        for segment in text.split(ACTION_SEPARATOR):
            starts.append(pos)
            kinds.append(_behaviour_of(segment, behaviours))
            pos += len(segment) + len(ACTION_SEPARATOR)
        starts_arr = np.array(starts)
        for t, (lo, hi) in enumerate(offsets[b]):
            if hi > lo:
                out[b, t] = kinds[int(np.searchsorted(starts_arr, lo, side="right")) - 1]
    return out


def behaviour_attention(
    attentions: Sequence[np.ndarray], token_behaviour: np.ndarray, n_behaviours: int
) -> dict[str, np.ndarray]:
    """Per ``"layer L head H"``: ``[K, K]`` mean attention from behaviour a (rows) to behaviour b (columns)."""
    onehot = np.zeros(token_behaviour.shape + (n_behaviours,), dtype=np.float64)  # [B, L, K]
    valid = token_behaviour >= 0
    onehot[valid, token_behaviour[valid]] = 1.0
    queries = onehot.sum(axis=(0, 1))  # [K]
    result = {}
    for layer, att in enumerate(attentions):  # [B, heads, L, L]
        att = np.asarray(att, dtype=np.float64)
        to_kind = np.einsum("bhqk,bkc->bhqc", att, onehot)  # attention of each query to each kind
        summed = np.einsum("bqa,bhqc->hac", onehot, to_kind)  # [heads, K, K]
        for head in range(att.shape[1]):
            result[f"layer {layer} head {head}"] = summed[head] / np.maximum(queries[:, None], 1.0)
    return result


def encoder_behaviour_attention(
    encoder: SequenceEncoder,
    texts: Sequence[str],
    tokens: Sequence[Sequence[int]],  # type: ignore[type-arg]
    behaviours: Sequence[str],
    id_behaviour: Sequence[str],
) -> dict[str, np.ndarray]:
    """Behaviour-attention matrices of an encoder on a sample of sequences (texts for LMs, ids for BERT4Rec)."""
    import torch

    column = getattr(encoder, "input_column", "text")
    if column == "tokens":
        inputs = encoder.inputs(tokens=[list(map(int, t)) for t in tokens])
        ids = inputs["input_ids"].numpy()
        names = {b: k for k, b in enumerate(behaviours)}
        kinds = np.vectorize(lambda i: names.get(id_behaviour[i], -1) if i < len(id_behaviour) else -1)(ids)
        kinds = np.where(inputs["attention_mask"].numpy() > 0, kinds, -1)
    else:
        tokenizer = encoder.tokenizer  # type: ignore[attr-defined]
        encoded = tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=encoder.max_len,
            return_offsets_mapping=True,
            return_tensors="np",
        )
        inputs = {
            "input_ids": torch.as_tensor(encoded["input_ids"]).long(),
            "attention_mask": torch.as_tensor(encoded["attention_mask"]).long(),
        }
        kinds = token_behaviours_from_text(texts, encoded["offset_mapping"], behaviours)
    with torch.inference_mode():
        attentions = [a.float().cpu().numpy() for a in encoder.attentions(inputs)]
    return behaviour_attention(attentions, kinds, len(behaviours))

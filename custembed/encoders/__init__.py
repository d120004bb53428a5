"""Sequence encoders: one model per file, a shared interface in :mod:`.base`.

Layout (imports run one way): :mod:`.masking` (padding, masking, pooling) <- :mod:`.base`
(the interface) <- one module per model <- :mod:`.registry` (kind -> class).

The names below are imported on first use, so that ``import custembed.encoders.bert4rec``
loads BERT4Rec alone and not its siblings. No pyspark here: these modules run inside
Spark's Python workers and torchrun processes.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from custembed.encoders.base import MaskedTokenStats, RankingMetrics, SequenceEncoder
    from custembed.encoders.bert4rec import Bert4RecConfig, Bert4RecEncoder
    from custembed.encoders.causal_lm import CausalLmConfig, CausalLmEncoder
    from custembed.encoders.coles import ColesConfig, ColesEncoder
    from custembed.encoders.hf_mlm import MlmConfig, MlmEncoder
    from custembed.encoders.masking import POOLINGS
    from custembed.encoders.registry import (
        build_encoder,
        encoder_class,
        encoder_classes,
        load_encoder,
        saved_input_columns,
    )

_EXPORTS = {
    "POOLINGS": "custembed.encoders.masking",
    "MaskedTokenStats": "custembed.encoders.base",
    "RankingMetrics": "custembed.encoders.base",
    "SequenceEncoder": "custembed.encoders.base",
    "Bert4RecConfig": "custembed.encoders.bert4rec",
    "Bert4RecEncoder": "custembed.encoders.bert4rec",
    "CausalLmConfig": "custembed.encoders.causal_lm",
    "CausalLmEncoder": "custembed.encoders.causal_lm",
    "ColesConfig": "custembed.encoders.coles",
    "ColesEncoder": "custembed.encoders.coles",
    "MlmConfig": "custembed.encoders.hf_mlm",
    "MlmEncoder": "custembed.encoders.hf_mlm",
    "build_encoder": "custembed.encoders.registry",
    "encoder_class": "custembed.encoders.registry",
    "encoder_classes": "custembed.encoders.registry",
    "load_encoder": "custembed.encoders.registry",
    "saved_input_columns": "custembed.encoders.registry",
}

__all__ = [
    "POOLINGS",
    "Bert4RecConfig",
    "Bert4RecEncoder",
    "CausalLmConfig",
    "CausalLmEncoder",
    "ColesConfig",
    "ColesEncoder",
    "MaskedTokenStats",
    "MlmConfig",
    "MlmEncoder",
    "RankingMetrics",
    "SequenceEncoder",
    "build_encoder",
    "encoder_class",
    "encoder_classes",
    "load_encoder",
    "saved_input_columns",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)

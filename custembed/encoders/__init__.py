"""Sequence encoders: one model per file, a shared interface in :mod:`.base`.

No pyspark here: these modules run inside Spark's Python workers and torchrun processes.
"""

from custembed.encoders.base import (
    POOLINGS,
    MaskedTokenStats,
    SequenceEncoder,
    build_encoder,
    encoder_class,
    encoder_classes,
    load_encoder,
)
from custembed.encoders.bert4rec import Bert4RecConfig, Bert4RecEncoder
from custembed.encoders.causal_lm import CausalLmConfig, CausalLmEncoder
from custembed.encoders.hf_mlm import MlmConfig, MlmEncoder

__all__ = [
    "POOLINGS",
    "Bert4RecConfig",
    "Bert4RecEncoder",
    "CausalLmConfig",
    "CausalLmEncoder",
    "MaskedTokenStats",
    "MlmConfig",
    "MlmEncoder",
    "SequenceEncoder",
    "build_encoder",
    "encoder_class",
    "encoder_classes",
    "load_encoder",
]

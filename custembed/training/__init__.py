"""Distributed training of the encoders: pure torch and pyarrow, no pyspark.

:func:`train` runs in every torchrun process that Spark's ``TorchDistributor`` starts
(or alone in one process); :class:`ParquetShardLoader` feeds each rank its share.

Modules: :mod:`.spec` (what a run needs, plain values; no torch, so the configuration
can import it), :mod:`.distributed`, :mod:`.checkpoint`, :mod:`.mlflow_sink`, :mod:`.data`
and :mod:`.loop`. The names below are imported on first use, so that importing
``custembed.training.spec`` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from custembed.training.data import ParquetShardLoader, val_bucket
    from custembed.training.loop import train, weights_digest
    from custembed.training.spec import TrainParams, TrainSpec

_EXPORTS = {
    "ParquetShardLoader": "custembed.training.data",
    "val_bucket": "custembed.training.data",
    "TrainParams": "custembed.training.spec",
    "TrainSpec": "custembed.training.spec",
    "train": "custembed.training.loop",
    "weights_digest": "custembed.training.loop",
}

__all__ = ["ParquetShardLoader", "TrainParams", "TrainSpec", "train", "val_bucket", "weights_digest"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)

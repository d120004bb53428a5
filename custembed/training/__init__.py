"""Distributed training of the encoders: pure torch and pyarrow, no pyspark.

:func:`train` runs in every torchrun process that Spark's ``TorchDistributor`` starts
(or alone in one process); :class:`ParquetShardLoader` feeds each rank its share.
"""

from custembed.training.data import ParquetShardLoader, val_bucket
from custembed.training.loop import TrainSpec, train, weights_digest

__all__ = ["ParquetShardLoader", "TrainSpec", "train", "val_bucket", "weights_digest"]

"""Embedding inference: a numpy core and the ``mapInPandas`` function that runs it on executors.

The encoder is loaded once per Python worker (``load_cached``: Spark reuses
Python workers across tasks) and runs in ``torch.inference_mode`` on Arrow
batches of ``batch_size`` sequences, sorted by length inside each Arrow batch
so padding stays small.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd

from custembed.encoders import SequenceEncoder, load_encoder


def task_device() -> str:
    """The device of the running Spark task: the GPU Spark assigned to it, else ``cuda:0`` or ``cpu``.

    With ``spark.task.resource.gpu.amount`` set, ``TaskContext.resources()["gpu"]`` holds
    the addresses of this task's GPUs (as the discovery script names them); several
    tasks of one executor then use different GPUs instead of all sharing ``cuda:0``.
    Under ``CUDA_VISIBLE_DEVICES`` an address is mapped to its index among the visible ones.
    """
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    from pyspark import TaskContext

    context = TaskContext.get()
    gpus = context.resources().get("gpu") if context is not None else None
    if gpus is None or not gpus.addresses:
        return "cuda:0"
    address = str(gpus.addresses[0])
    visible = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    index = visible.index(address) if address in visible else int(address)
    return f"cuda:{index}"


@functools.lru_cache(maxsize=4)
def load_cached(model_dir: str, threads: int, device: str = "cpu") -> SequenceEncoder[Any]:
    """The encoder saved in ``model_dir`` (a path or lake URI every executor reads) on ``device``, loaded once
    per process (and device)."""
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    encoder = load_encoder(model_dir)
    if device != "cpu":
        encoder = encoder.to(device)
    encoder.model.eval()
    return encoder


def _steps(encoder: SequenceEncoder[Any], frame: pd.DataFrame, column: str, uses: str) -> list[Any] | None:
    """``frame[column]`` as a list when the encoder reads it (its ``uses`` property), else None."""
    if not getattr(encoder, uses, False):
        return None
    values: list[Any] = frame[column].tolist()
    if any(v is None for v in values):
        raise ValueError(
            f"the {encoder.kind} encoder reads {column}, and some sequences have none: they were "
            f"written before the {column} column existed; rerun `custembed sequences` for that date"
        )
    return values


def embed_frame(
    encoder: SequenceEncoder[Any], frame: pd.DataFrame, *, batch_size: int, pooling: str | None = None
) -> np.ndarray:
    """Vectors ``[n, H]`` float32 of the sequences in ``frame`` (``tokens`` or ``text`` column, and
    ``gaps`` and ``amounts`` for encoders that use them), in row order."""
    import torch

    n = len(frame)
    out = np.zeros((n, encoder.hidden_size), dtype=np.float32)
    if n == 0:
        return out
    column = getattr(encoder, "input_column", "text")
    values = frame[column].tolist()
    gaps = _steps(encoder, frame, "gaps", "uses_time_gaps")
    amounts = _steps(encoder, frame, "amounts", "uses_amounts")
    lengths = np.array([len(v) for v in values])
    order = np.argsort(lengths, kind="stable")
    with torch.inference_mode():
        for lo in range(0, n, batch_size):
            idx = order[lo : lo + batch_size]
            batch = [values[i] for i in idx]
            batch_gaps = None if gaps is None else [list(map(int, gaps[i])) for i in idx]
            batch_amounts = None if amounts is None else [list(map(int, amounts[i])) for i in idx]
            if column == "tokens":
                inputs = encoder.inputs(
                    tokens=[list(map(int, b)) for b in batch], gaps=batch_gaps, amounts=batch_amounts
                )
            else:
                inputs = encoder.inputs(texts=batch, gaps=batch_gaps, amounts=batch_amounts)
            out[idx] = encoder.embed(inputs, pooling).float().cpu().numpy()  # [B, H]
    return out


def embed_partitions(
    model_dir: str, *, batch_size: int, pooling: str | None, threads: int
) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """A ``mapInPandas`` function: (customer_id, tokens, text, gaps) → (customer_id, vector array<float>)."""

    def run(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        encoder = load_cached(model_dir, threads, task_device())
        for frame in frames:
            vectors = embed_frame(encoder, frame, batch_size=batch_size, pooling=pooling)
            yield pd.DataFrame({"customer_id": frame["customer_id"].to_numpy(), "vector": list(vectors)})

    return run

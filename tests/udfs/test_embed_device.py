"""The embedding UDF runs on the GPU Spark assigned to the task, not on cuda:0 everywhere."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest
import torch
from pyspark import TaskContext
from pyspark.resource import ResourceInformation

from custembed.udfs import embed as embed_udf


class _Task:
    def __init__(self, gpus: list[str]) -> None:
        self._gpus = gpus

    def resources(self) -> dict[str, ResourceInformation]:
        return {"gpu": ResourceInformation("gpu", self._gpus)} if self._gpus else {}


@pytest.fixture()
def cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def test_the_task_gets_the_gpu_spark_assigned(cuda: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(TaskContext, "get", staticmethod(lambda: _Task(["2"])))
    assert embed_udf.task_device() == "cuda:2"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")  # the address among the visible devices
    assert embed_udf.task_device() == "cuda:0"


def test_without_an_assigned_gpu_cuda_0_or_the_cpu(cuda: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(TaskContext, "get", staticmethod(lambda: None))
    assert embed_udf.task_device() == "cuda:0"
    monkeypatch.setattr(TaskContext, "get", staticmethod(lambda: _Task([])))
    assert embed_udf.task_device() == "cuda:0"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert embed_udf.task_device() == "cpu"


def test_the_partition_function_loads_the_encoder_on_the_task_device(
    cuda: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded: list[tuple[Any, ...]] = []

    def load(model_dir: str, threads: int, device: str = "cpu") -> Any:
        loaded.append((model_dir, threads, device))
        raise StopIteration  # enough: the device it was asked for is recorded

    monkeypatch.setattr(TaskContext, "get", staticmethod(lambda: _Task(["1"])))
    monkeypatch.setattr(embed_udf, "load_cached", load)
    fn = embed_udf.embed_partitions("/models/x", batch_size=8, pooling=None, threads=1)
    with pytest.raises((StopIteration, RuntimeError)):
        next(fn(iter([pd.DataFrame({"customer_id": ["c1"], "tokens": [[3]], "text": ["a"]})])))
    assert loaded == [("/models/x", 1, "cuda:1")]

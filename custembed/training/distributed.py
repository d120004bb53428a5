"""The process group of one training run, and the collectives the loop needs.

Set up from the variables torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``): gloo on CPU, NCCL on CUDA. In a single process
every collective is the identity and no process group is created.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """This process's place in the run."""

    rank: int
    world_size: int
    device: torch.device
    owns_group: bool  # this call initialised the process group and must destroy it

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> DistContext:
    """Join (or create) the process group torchrun describes; pick this rank's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    owns_group = False
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://", timeout=timedelta(minutes=30))
        owns_group = True
        log.debug("rank %d/%d joined a %s process group", rank, world_size, backend)
    if dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
    return DistContext(rank=rank, world_size=world_size, device=device, owns_group=owns_group)


def all_reduce(values: Sequence[float], ctx: DistContext, op: str = "sum") -> list[float]:
    """Sum (or "min", "max") plain numbers over ranks; identity in a single process."""
    if ctx.world_size == 1:
        return [float(v) for v in values]
    ops = {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}
    tensor = torch.tensor(list(values), dtype=torch.float64, device=ctx.device)
    dist.all_reduce(tensor, op=ops[op])
    result: list[float] = tensor.tolist()
    return result


def all_gather(value: Any, ctx: DistContext) -> list[Any]:
    """Every rank's ``value`` (any picklable object), in rank order."""
    if ctx.world_size == 1:
        return [value]
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, value)
    return gathered

"""Checkpoints of a training run: what they hold, how they are written and resumed.

Rank 0 writes ``checkpoint_dir/step-<n>/state.pt`` with model, optimiser, scheduler,
:class:`Position`, the best epoch's weights so far and every rank's RNG states, to a temporary directory that is then
renamed, so a directory holding ``state.pt`` is complete. A run finding checkpoints
resumes from the newest. ``checkpoint_dir`` is a path or URI (:mod:`custembed.lakefs`) on
storage every rank sees (HDFS, an object store, DBFS, a Volume, NFS). On object stores the
rename is a copy and a delete, not atomic; but each object appears whole, so a step
directory holding ``state.pt`` holds all of it, and one without it is never resumed from.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import uuid
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR

from custembed import lakefs
from custembed.encoders.base import SequenceEncoder
from custembed.training.distributed import DistContext, all_gather
from custembed.training.spec import TrainSpec

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"
CHECKPOINT_PREFIX = "step-"


@dataclass
class Position:
    """Where training stands; what a checkpoint restores."""

    step: int = 0
    epoch: int = 0
    batch_offset: int = 0  # next batch of `epoch` to train on
    best_monitored: float = math.inf  # early stopping's reference, as a loss (moves by more than min_delta only)
    bad_epochs: int = 0
    kept_step: int = -1  # step of the epoch whose weights are kept (best monitored figure), -1: none yet
    kept_metrics: dict[str, float] = field(default_factory=dict)  # that epoch's validation figures


@dataclass
class TrainState:
    """Everything a checkpoint saves and restores (the RNG states of torch come along)."""

    encoder: SequenceEncoder[Any]
    optimizer: torch.optim.Optimizer
    scheduler: LambdaLR
    generator: torch.Generator  # the masking stream
    position: Position = field(default_factory=Position)
    kept_weights: dict[str, torch.Tensor] | None = None  # CPU copy of the weights at position.kept_step


def rng_state(generator: torch.Generator) -> dict[str, torch.Tensor]:
    """This rank's random streams: torch's global one, the masking generator, CUDA's."""
    state = {"torch": torch.get_rng_state(), "mask": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def checkpoints(directory: str) -> list[tuple[int, str]]:
    """Complete checkpoints in ``directory`` (a path or URI), oldest first, as (step, URI)."""
    found = []
    for state_file in lakefs.glob(directory, f"{CHECKPOINT_PREFIX}*/{STATE_FILE}"):
        child = lakefs.parent(state_file)
        found.append((int(lakefs.name(child)[len(CHECKPOINT_PREFIX) :]), child))
    return sorted(found)


def save_checkpoint(spec: TrainSpec, ctx: DistContext, state: TrainState) -> None:
    """Collective: every rank contributes its RNG states, rank 0 writes."""
    rng_states = all_gather(rng_state(state.generator), ctx)
    if not ctx.is_main:
        return
    directory = spec.checkpoint_dir
    step_name = f"{CHECKPOINT_PREFIX}{state.position.step:09d}"
    target = lakefs.join(directory, step_name)
    if lakefs.exists(target):
        return  # the checkpoint this run resumed from, or one just written at this step
    staging = lakefs.join(directory, f".tmp-{step_name}-{uuid.uuid4().hex[:8]}")
    lakefs.makedirs(staging)
    saved = {
        "model": state.encoder.model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "position": dataclasses.asdict(state.position),
        "kept_weights": state.kept_weights,
        "world_size": ctx.world_size,
        "rng": rng_states,
    }
    lakefs.write_text(lakefs.join(staging, "spec.json"), json.dumps(dataclasses.asdict(spec), indent=2, default=str))
    with lakefs.open_output(lakefs.join(staging, STATE_FILE)) as stream:
        torch.save(saved, stream)
    lakefs.move(staging, target)  # atomic on POSIX file systems and HDFS: readers see all or nothing
    for _, old in checkpoints(directory)[: -spec.keep_checkpoints]:
        lakefs.rm(old, recursive=True)
    log.info("checkpoint at step %d written to %s", state.position.step, target)


def resume(spec: TrainSpec, ctx: DistContext, state: TrainState) -> None:
    """Collective: restore ``state`` from the newest checkpoint, if any (else leave it as is)."""
    directory = spec.checkpoint_dir
    if ctx.is_main:
        for stale in lakefs.glob(directory, ".tmp-*"):  # left by a run killed while writing
            lakefs.rm(stale, recursive=True)
    found = checkpoints(directory)
    steps = all_gather(found[-1][0] if found else None, ctx)
    if len(set(steps)) > 1:
        raise ValueError(
            f"ranks see different latest checkpoints {steps} in {spec.checkpoint_dir}; "
            "it must be on storage shared by all ranks"
        )
    if not found:
        return
    step, path = found[-1]
    with lakefs.open_input(lakefs.join(path, STATE_FILE)) as stream:
        saved = torch.load(stream, map_location="cpu", weights_only=True)
    state.encoder.model.load_state_dict(saved["model"])
    state.optimizer.load_state_dict(saved["optimizer"])
    state.scheduler.load_state_dict(saved["scheduler"])
    if saved["world_size"] == ctx.world_size:
        rng = saved["rng"][ctx.rank]
        torch.set_rng_state(rng["torch"])
        state.generator.set_state(rng["mask"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
    else:
        log.warning(
            "checkpoint was written by %d ranks, now %d: data shares and random streams differ",
            saved["world_size"],
            ctx.world_size,
        )
    position = dict(saved["position"])
    if "best_val_loss" in position:  # checkpoints written before early stopping could follow other figures
        position["best_monitored"] = position.pop("best_val_loss")
    state.position = Position(**position)
    state.kept_weights = saved.get("kept_weights")
    log.info(
        "resuming from step %d (epoch %d, batch %d) of %s",
        step,
        state.position.epoch,
        state.position.batch_offset,
        path,
    )

"""Checkpoints of a training run: what they hold, how they are written and resumed.

Rank 0 writes ``checkpoint_dir/step-<n>/state.pt`` with model, optimiser, scheduler,
:class:`Position`, the best epoch's weights so far and every rank's RNG states, to a temporary directory that is then
renamed, so a directory holding ``state.pt`` is complete. A run finding checkpoints
resumes from the newest. ``checkpoint_dir`` must be storage every rank sees (DBFS, a
Volume, NFS).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR

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
    best_val_loss: float = math.inf  # early stopping's reference (moves by more than min_delta only)
    bad_epochs: int = 0
    kept_step: int = -1  # step of the epoch whose weights are kept (lowest validation loss), -1: none yet
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


def checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints in ``directory``, oldest first."""
    found = []
    if directory.is_dir():
        for child in directory.iterdir():
            if child.name.startswith(CHECKPOINT_PREFIX) and (child / STATE_FILE).is_file():
                found.append((int(child.name[len(CHECKPOINT_PREFIX) :]), child))
    return sorted(found)


def save_checkpoint(spec: TrainSpec, ctx: DistContext, state: TrainState) -> None:
    """Collective: every rank contributes its RNG states, rank 0 writes."""
    rng_states = all_gather(rng_state(state.generator), ctx)
    if not ctx.is_main:
        return
    directory = Path(spec.checkpoint_dir)
    target = directory / f"{CHECKPOINT_PREFIX}{state.position.step:09d}"
    if target.exists():
        return  # the checkpoint this run resumed from, or one just written at this step
    directory.mkdir(parents=True, exist_ok=True)
    staging = directory / f".tmp-{target.name}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    saved = {
        "model": state.encoder.model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "position": dataclasses.asdict(state.position),
        "kept_weights": state.kept_weights,
        "world_size": ctx.world_size,
        "rng": rng_states,
    }
    torch.save(saved, staging / STATE_FILE)
    (staging / "spec.json").write_text(json.dumps(dataclasses.asdict(spec), indent=2, default=str))
    os.replace(staging, target)  # atomic on POSIX file systems: readers see all or nothing
    for _, old in checkpoints(directory)[: -spec.keep_checkpoints]:
        shutil.rmtree(old, ignore_errors=True)
    log.info("checkpoint at step %d written to %s", state.position.step, target)


def resume(spec: TrainSpec, ctx: DistContext, state: TrainState) -> None:
    """Collective: restore ``state`` from the newest checkpoint, if any (else leave it as is)."""
    directory = Path(spec.checkpoint_dir)
    if ctx.is_main and directory.is_dir():
        for stale in directory.glob(".tmp-*"):  # left by a run killed while writing
            shutil.rmtree(stale, ignore_errors=True)
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
    saved = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
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
    state.position = Position(**saved["position"])
    state.kept_weights = saved.get("kept_weights")
    log.info(
        "resuming from step %d (epoch %d, batch %d) of %s",
        step,
        state.position.epoch,
        state.position.batch_offset,
        path,
    )

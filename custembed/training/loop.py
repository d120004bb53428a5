"""The training loop every rank runs, under torchrun or as a single process.

Spark's ``TorchDistributor`` pickles :func:`train` with a :class:`TrainSpec` (plain
values only) and runs it in torchrun processes; the same call works in one process.

* Distributed set-up from the variables torchrun sets (``RANK``, ``WORLD_SIZE``,
  ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``): gloo on CPU, NCCL on CUDA; the model
  is wrapped in ``DistributedDataParallel``.
* AdamW (no decay on biases and norms), linear warm-up then linear decay to zero at the
  end of the last epoch. ``max_steps`` only stops early; it does not change the
  schedule, so a run stopped at ``max_steps`` and resumed follows the same path as one
  that was never stopped.
* Rank 0 checkpoints every ``checkpoint_every`` steps, at the end of each epoch and at
  the end: ``checkpoint_dir/step-<n>/state.pt`` with model, optimiser, scheduler, step,
  epoch, batch offset, early-stopping state and every rank's RNG states, written to a
  temporary directory and renamed. A run finding a checkpoint resumes from the newest.
  ``checkpoint_dir`` must be storage every rank sees (DBFS, a Volume, NFS).
* After each epoch: masked-token loss and accuracy on the held-out customers (and, for
  BERT4Rec, HR@k / NDCG@k on their last action), summed over ranks. Early stopping
  watches that loss and keeps the last weights (at most ``patience`` epochs past the best).
* Rank 0 sends every step's loss to MLflow (an existing run, by id; sent in batches at
  each log interval; ``@`` in names becomes ``_at_``) and saves the final encoder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LambdaLR

from custembed.encoders.base import SequenceEncoder, build_encoder, load_encoder
from custembed.encoders.bert4rec import Bert4RecEncoder
from custembed.training.data import TOKENS, ParquetShardLoader

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"
CHECKPOINT_PREFIX = "step-"
VAL_SEED_OFFSET = 1_000_003  # validation masks use their own, fixed, generator


@dataclass(frozen=True)
class TrainSpec:
    """Everything one training run needs; plain values only, so that it pickles."""

    data_path: str = field(metadata={"help": "Directory of Parquet sequences written by Spark."})
    output_dir: str = field(metadata={"help": "Where rank 0 saves the final encoder."})
    checkpoint_dir: str = field(metadata={"help": "Checkpoints; resumed from when not empty."})
    encoder_kind: str = field(default="bert4rec", metadata={"help": "bert4rec, mlm or causal_lm."})
    encoder_params: Mapping[str, Any] = field(
        default_factory=dict, metadata={"help": "Fields of the encoder's config (build_encoder)."}
    )
    init_dir: str | None = field(
        default=None,
        metadata={"help": "Saved encoder to start from; overrides encoder_kind/encoder_params."},
    )
    data_filter: tuple[tuple[str, str, Any], ...] = field(
        default=(), metadata={"help": "Row filter as (column, op, value) triples, ANDed."}
    )
    epochs: int = field(default=1, metadata={"help": "Passes over the training customers."})
    max_steps: int | None = field(default=None, metadata={"help": "Stop after this many steps."})
    batch_size: int = field(default=64, metadata={"help": "Sequences per rank per step."})
    lr: float = field(default=1e-3, metadata={"help": "Peak learning rate."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    warmup_steps: int = field(default=0, metadata={"help": "Linear warm-up steps."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm; 0 = off."})
    checkpoint_every: int = field(default=500, metadata={"help": "Steps between checkpoints."})
    keep_checkpoints: int = field(default=2, metadata={"help": "Newest checkpoints kept."})
    log_every: int = field(default=50, metadata={"help": "Steps between progress lines."})
    val_pct: int = field(default=5, metadata={"help": "Percent of customers held out."})
    seed: int = field(default=0, metadata={"help": "Seed of weights, data order and masks."})
    mlflow_tracking_uri: str | None = field(default=None, metadata={"help": "MLflow server."})
    mlflow_run_id: str | None = field(default=None, metadata={"help": "Existing run to log to."})
    early_stopping_patience: int | None = field(
        default=None, metadata={"help": "Epochs without a better validation loss before stopping."}
    )
    early_stopping_min_delta: float = field(
        default=0.0, metadata={"help": "Decrease of validation loss that counts as better."}
    )
    metrics_k: int = field(default=10, metadata={"help": "Cut-off k of HR@k and NDCG@k."})

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "checkpoint_every", "keep_checkpoints", "log_every", "metrics_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        for name in ("max_steps", "early_stopping_patience"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be positive or None, got {value!r}")
        if self.lr <= 0 or self.weight_decay < 0 or self.warmup_steps < 0 or self.max_grad_norm < 0:
            raise ValueError(
                f"need lr > 0, weight_decay >= 0, warmup_steps >= 0, max_grad_norm >= 0; got "
                f"{self.lr}, {self.weight_decay}, {self.warmup_steps}, {self.max_grad_norm}"
            )
        if not 0 <= self.val_pct < 100:
            raise ValueError(f"val_pct must be in [0, 100), got {self.val_pct}")
        if (self.mlflow_tracking_uri is None) != (self.mlflow_run_id is None):
            raise ValueError("mlflow_tracking_uri and mlflow_run_id go together; got only one")
        for triple in self.data_filter:
            if len(triple) != 3:
                raise ValueError(f"data_filter entries are (column, op, value), got {triple!r}")


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    device: torch.device
    owns_group: bool  # this call initialised the process group and must destroy it

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@dataclass
class Position:
    """Where training stands; what a checkpoint restores."""

    step: int = 0
    epoch: int = 0
    batch_offset: int = 0  # next batch of `epoch` to train on
    best_val_loss: float = math.inf
    bad_epochs: int = 0


def _ensure_logging() -> None:
    # torchrun workers start with an unconfigured root logger and `train` is their entry
    # point; in a process that configured logging already this does nothing.
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _init_distributed() -> DistContext:
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
    if dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
    return DistContext(rank=rank, world_size=world_size, device=device, owns_group=owns_group)


def _all_reduce(values: Sequence[float], ctx: DistContext, op: str = "sum") -> list[float]:
    """Sum (or "min", "max") plain numbers over ranks; identity in a single process."""
    if ctx.world_size == 1:
        return [float(v) for v in values]
    ops = {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}
    tensor = torch.tensor(list(values), dtype=torch.float64, device=ctx.device)
    dist.all_reduce(tensor, op=ops[op])
    return tensor.tolist()


def _all_gather(value: Any, ctx: DistContext) -> list[Any]:
    if ctx.world_size == 1:
        return [value]
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def _optimizer(model: torch.nn.Module, spec: TrainSpec) -> torch.optim.AdamW:
    # Biases and norm weights (1-d) are not decayed.
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": spec.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=spec.lr,
    )


def _schedule(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> LambdaLR:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return LambdaLR(optimizer, factor)


def _rng_state(generator: torch.Generator) -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state(), "mask": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints in ``directory``, oldest first."""
    found = []
    if directory.is_dir():
        for child in directory.iterdir():
            if child.name.startswith(CHECKPOINT_PREFIX) and (child / STATE_FILE).is_file():
                found.append((int(child.name[len(CHECKPOINT_PREFIX) :]), child))
    return sorted(found)


def _save_checkpoint(
    spec: TrainSpec,
    ctx: DistContext,
    encoder: SequenceEncoder[Any],
    optimizer: torch.optim.Optimizer,
    scheduler: LambdaLR,
    position: Position,
    generator: torch.Generator,
) -> None:
    """Collective: every rank contributes its RNG states, rank 0 writes."""
    rng_states = _all_gather(_rng_state(generator), ctx)
    if not ctx.is_main:
        return
    directory = Path(spec.checkpoint_dir)
    target = directory / f"{CHECKPOINT_PREFIX}{position.step:09d}"
    if target.exists():
        return  # the checkpoint this run resumed from, or one just written at this step
    directory.mkdir(parents=True, exist_ok=True)
    staging = directory / f".tmp-{target.name}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    state = {
        "model": encoder.model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "position": dataclasses.asdict(position),
        "world_size": ctx.world_size,
        "rng": rng_states,
    }
    torch.save(state, staging / STATE_FILE)
    (staging / "spec.json").write_text(json.dumps(dataclasses.asdict(spec), indent=2, default=str))
    os.replace(staging, target)  # atomic on POSIX file systems: readers see all or nothing
    for _, old in _checkpoints(directory)[: -spec.keep_checkpoints]:
        shutil.rmtree(old, ignore_errors=True)
    log.info("checkpoint at step %d written to %s", position.step, target)


def _resume(
    spec: TrainSpec,
    ctx: DistContext,
    encoder: SequenceEncoder[Any],
    optimizer: torch.optim.Optimizer,
    scheduler: LambdaLR,
    generator: torch.Generator,
) -> Position:
    directory = Path(spec.checkpoint_dir)
    if ctx.is_main and directory.is_dir():
        for stale in directory.glob(".tmp-*"):  # left by a run killed while writing
            shutil.rmtree(stale, ignore_errors=True)
    found = _checkpoints(directory)
    steps = _all_gather(found[-1][0] if found else None, ctx)
    if len(set(steps)) > 1:
        raise ValueError(
            f"ranks see different latest checkpoints {steps} in {spec.checkpoint_dir}; "
            "it must be on storage shared by all ranks"
        )
    if not found:
        return Position()
    step, path = found[-1]
    state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    encoder.model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if state["world_size"] == ctx.world_size:
        rng = state["rng"][ctx.rank]
        torch.set_rng_state(rng["torch"])
        generator.set_state(rng["mask"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
    else:
        log.warning(
            "checkpoint was written by %d ranks, now %d: data shares and random streams differ",
            state["world_size"], ctx.world_size,
        )
    position = Position(**state["position"])
    log.info("resuming from step %d (epoch %d, batch %d) of %s", step, position.epoch, position.batch_offset, path)
    return position


def _batch_inputs(encoder: SequenceEncoder[Any], rows: Mapping[str, list[Any]]) -> dict[str, torch.Tensor]:
    if encoder.input_column == TOKENS:
        return encoder.inputs(tokens=rows[TOKENS])
    return encoder.inputs(texts=rows[encoder.input_column])


def _validate(
    spec: TrainSpec, ctx: DistContext, encoder: SequenceEncoder[Any], loader: ParquetShardLoader | None
) -> dict[str, float]:
    """Held-out metrics summed over ranks; empty when no rank holds validation customers."""
    # Same masks every epoch, so that the losses of successive epochs compare.
    generator = torch.Generator().manual_seed(spec.seed + VAL_SEED_OFFSET + ctx.rank)
    k = spec.metrics_k
    loss_sum = correct = count = hits = gains = scored = 0.0
    for rows in (loader.batches(0) if loader is not None else ()):
        inputs = _batch_inputs(encoder, rows)
        stats = encoder.masked_token_stats(encoder.mask(inputs, generator))
        loss_sum, correct, count = loss_sum + stats.loss_sum, correct + stats.correct, count + stats.count
        if isinstance(encoder, Bert4RecEncoder):
            ranking = encoder.next_action_metrics(inputs, k=k)
            hits += ranking[f"hr@{k}"] * ranking["count"]
            gains += ranking[f"ndcg@{k}"] * ranking["count"]
            scored += ranking["count"]
    loss_sum, correct, count, hits, gains, scored = _all_reduce(
        [loss_sum, correct, count, hits, gains, scored], ctx
    )
    metrics: dict[str, float] = {}
    if count > 0:
        metrics.update(val_loss=loss_sum / count, val_accuracy=correct / count)
    if scored > 0:
        metrics.update({f"hr@{k}": hits / scored, f"ndcg@{k}": gains / scored, "val_sequences": scored})
    return metrics


class _MlflowSink:
    """Rank 0's link to an existing MLflow run; does nothing when no run is configured."""

    def __init__(self, spec: TrainSpec, ctx: DistContext) -> None:
        self.client = None
        self.run_id = spec.mlflow_run_id
        if ctx.is_main and spec.mlflow_tracking_uri is not None:
            from mlflow.tracking import MlflowClient  # optional dependency, rank 0 only

            self.client = MlflowClient(spec.mlflow_tracking_uri)

    @staticmethod
    def _key(name: str) -> str:
        return name.replace("@", "_at_")  # MLflow keys allow no '@'

    def params(self, values: Mapping[str, Any]) -> None:
        if self.client is None or self.run_id is None:
            return
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException

        params = [Param(self._key(k), str(v)[:500]) for k, v in sorted(values.items())]
        try:
            for start in range(0, len(params), 100):
                self.client.log_batch(self.run_id, params=params[start : start + 100])
        except MlflowException as e:
            log.warning("could not log parameters to MLflow run %s: %s", self.run_id, e)

    def metrics(self, rows: Sequence[tuple[int, Mapping[str, float]]]) -> None:
        """Log ``(step, {name: value})`` rows in as few requests as possible."""
        if self.client is None or self.run_id is None:
            return
        from mlflow.entities import Metric
        from mlflow.exceptions import MlflowException

        now = int(time.time() * 1000)
        metrics = [
            Metric(self._key(name), float(value), now, step)
            for step, values in rows
            for name, value in values.items()
            if math.isfinite(value)
        ]
        try:
            for start in range(0, len(metrics), 1000):
                self.client.log_batch(self.run_id, metrics=metrics[start : start + 1000])
        except MlflowException as e:
            # Losing a few points of a curve is better than losing the training run.
            log.warning("could not log %d metrics to MLflow run %s: %s", len(metrics), self.run_id, e)


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 of a model's parameters and buffers (to check that ranks agree)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _build(spec: TrainSpec) -> SequenceEncoder[Any]:
    if spec.init_dir is not None:
        return load_encoder(spec.init_dir)
    return build_encoder(spec.encoder_kind, **dict(spec.encoder_params))


def train(spec: TrainSpec) -> dict[str, Any]:
    """Train (or resume training) an encoder as described by ``spec``; see the module doc.

    Returns the same metrics on every rank: ``train_loss`` (mean over the last epoch's
    steps of this run), ``val_loss``, ``val_accuracy``, ``hr@k``, ``ndcg@k`` (when held-out
    data exist), ``steps``, ``start_step``, ``epochs_completed``, ``stopped_early``,
    ``seconds``, ``sequences_per_s``, ``tokens_per_s``, ``world_size`` and
    ``weights_sha256``.
    """
    _ensure_logging()
    started = time.perf_counter()
    ctx = _init_distributed()
    try:
        return _train(spec, ctx, started)
    finally:
        if ctx.owns_group:
            dist.destroy_process_group()


def _train(spec: TrainSpec, ctx: DistContext, started: float) -> dict[str, Any]:
    torch.manual_seed(spec.seed)  # identical initial weights on every rank
    encoder = _build(spec).to(ctx.device)
    torch.manual_seed(spec.seed + ctx.rank)  # distinct dropout streams per rank
    mask_generator = torch.Generator().manual_seed(spec.seed * 7919 + ctx.rank)

    data_filter = (
        pq.filters_to_expression([list(t) for t in spec.data_filter]) if spec.data_filter else None
    )

    def loader(split: str) -> ParquetShardLoader:
        return ParquetShardLoader(
            spec.data_path, columns=(encoder.input_column,), batch_size=spec.batch_size,
            rank=ctx.rank, world_size=ctx.world_size, seed=spec.seed, filter=data_filter,
            split=split, val_pct=spec.val_pct,
        )

    train_loader = loader("train")
    val_loader = loader("val") if spec.val_pct > 0 else None
    # Every rank takes the same number of batches, or DDP would wait forever on the others.
    (batches_per_epoch,) = _all_reduce([train_loader.local_num_batches()], ctx, op="min")
    n_batches = int(batches_per_epoch)
    if n_batches == 0:
        raise ValueError(
            f"some rank has fewer than batch_size={spec.batch_size} training sequences in "
            f"{spec.data_path}; lower batch_size or use fewer ranks"
        )
    planned = spec.epochs * n_batches
    last_step = planned if spec.max_steps is None else min(planned, spec.max_steps)

    optimizer = _optimizer(encoder.model, spec)
    scheduler = _schedule(optimizer, spec.warmup_steps, planned)
    position = _resume(spec, ctx, encoder, optimizer, scheduler, mask_generator)
    start_step = position.step
    model: torch.nn.Module = encoder.model
    if ctx.world_size > 1:
        device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        model = DistributedDataParallel(encoder.model, device_ids=device_ids)

    sink = _MlflowSink(spec, ctx)
    if start_step == 0:
        sink.params({
            **{k: v for k, v in dataclasses.asdict(spec).items() if "mlflow" not in k},
            "world_size": ctx.world_size, "batches_per_epoch": n_batches,
            "parameters": sum(p.numel() for p in encoder.model.parameters()),
        })
    log.info(
        "rank %d/%d on %s: %s encoder, %d batches per epoch, steps %d -> %d",
        ctx.rank, ctx.world_size, ctx.device, encoder.kind, n_batches, start_step, last_step,
    )

    def checkpoint() -> None:
        _save_checkpoint(spec, ctx, encoder, optimizer, scheduler, position, mask_generator)

    run_sequences = run_tokens = train_seconds = 0.0
    epoch_loss_sum, epoch_steps = 0.0, 0
    window_losses: list[torch.Tensor] = []
    window_sequences = window_tokens = 0
    window_started = time.perf_counter()
    val_metrics: dict[str, float] = {}
    validated_at = -1

    def flush_window() -> None:
        """Progress line and MLflow metrics for the steps since the last flush (collective)."""
        nonlocal window_losses, window_sequences, window_tokens, window_started
        nonlocal run_sequences, run_tokens, train_seconds, epoch_loss_sum, epoch_steps
        if not window_losses:
            return
        local = torch.stack(window_losses).tolist()
        *loss_sums, sequences, tokens = _all_reduce([*local, window_sequences, window_tokens], ctx)
        step_losses = [value / ctx.world_size for value in loss_sums]  # mean over ranks, per step
        elapsed = max(time.perf_counter() - window_started, 1e-9)
        lr = float(scheduler.get_last_lr()[0])
        run_sequences, run_tokens = run_sequences + sequences, run_tokens + tokens
        train_seconds += elapsed
        epoch_loss_sum, epoch_steps = epoch_loss_sum + sum(step_losses), epoch_steps + len(step_losses)
        seconds_per_step = train_seconds / max(position.step - start_step, 1)
        eta = timedelta(seconds=round(seconds_per_step * (last_step - position.step)))
        log.info(
            "step %d/%d epoch %d loss %.4f | %.1f seq/s %.0f tok/s | lr %.2e | eta %s",
            position.step, last_step, position.epoch, step_losses[-1], sequences / elapsed,
            tokens / elapsed, lr, eta,
        )
        first = position.step - len(step_losses) + 1
        rows = [(first + i, {"train_loss": loss}) for i, loss in enumerate(step_losses)]
        rows[-1][1].update(
            sequences_per_s=sequences / elapsed, tokens_per_s=tokens / elapsed, lr=lr,
            epoch=float(position.epoch),
        )
        sink.metrics(rows)
        window_losses, window_sequences, window_tokens = [], 0, 0
        window_started = time.perf_counter()

    patience = spec.early_stopping_patience
    stopped_early = patience is not None and position.bad_epochs >= patience  # in an earlier run
    done_training = stopped_early or position.step >= last_step
    while not done_training and position.epoch < spec.epochs:
        encoder.model.train()
        epoch_loss_sum, epoch_steps = 0.0, 0
        window_started = time.perf_counter()  # validation time is not training time
        for rows in train_loader.batches(position.epoch, start=position.batch_offset, limit=n_batches):
            inputs = _batch_inputs(encoder, rows)
            batch = {name: value.to(ctx.device) for name, value in encoder.mask(inputs, mask_generator).items()}
            loss = encoder.loss(batch, model=model)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if spec.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(encoder.model.parameters(), spec.max_grad_norm)
            optimizer.step()
            scheduler.step()
            position.step += 1
            position.batch_offset += 1
            window_losses.append(loss.detach().float())  # read at the next flush: no sync per step
            window_sequences += int(inputs["input_ids"].size(0))
            window_tokens += int(inputs["attention_mask"].sum())
            if position.step % spec.log_every == 0:
                flush_window()
            if position.step % spec.checkpoint_every == 0:
                checkpoint()
            if position.step >= last_step:
                done_training = True
                break
        flush_window()
        if position.batch_offset < n_batches:
            break  # stopped by max_steps inside the epoch
        val_metrics, validated_at = _validate(spec, ctx, encoder, val_loader), position.step
        log.info("epoch %d done at step %d: %s", position.epoch, position.step, _fmt(val_metrics))
        sink.metrics([(position.step, val_metrics)])
        position.epoch, position.batch_offset = position.epoch + 1, 0
        if "val_loss" in val_metrics and patience is not None:
            if val_metrics["val_loss"] < position.best_val_loss - spec.early_stopping_min_delta:
                position.best_val_loss, position.bad_epochs = val_metrics["val_loss"], 0
            else:
                position.bad_epochs += 1
            if position.bad_epochs >= patience:
                log.info("early stopping: no better validation loss for %d epochs", position.bad_epochs)
                stopped_early = done_training = True
        checkpoint()

    if validated_at != position.step:
        val_metrics = _validate(spec, ctx, encoder, val_loader)
        sink.metrics([(position.step, val_metrics)])
    checkpoint()
    if ctx.is_main:
        encoder.save(spec.output_dir)
    if ctx.world_size > 1:
        dist.barrier()  # nobody returns before rank 0 has saved

    # The slowest rank's times, so that every rank returns the same figures.
    seconds, train_seconds = _all_reduce([time.perf_counter() - started, train_seconds], ctx, op="max")
    train_seconds = max(train_seconds, 1e-9)
    result: dict[str, Any] = {
        **val_metrics,
        "steps": position.step,
        "start_step": start_step,
        "epochs_completed": position.epoch,
        "stopped_early": stopped_early,
        "seconds": seconds,
        "sequences_per_s": run_sequences / train_seconds,  # training steps only, all ranks
        "tokens_per_s": run_tokens / train_seconds,
        "world_size": ctx.world_size,
        "weights_sha256": weights_digest(encoder.model),
    }
    if epoch_steps:
        result["train_loss"] = epoch_loss_sum / epoch_steps
    log.info("training finished: %s", _fmt(result))
    return result


def _fmt(metrics: Mapping[str, Any]) -> str:
    return ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(metrics.items())
    )

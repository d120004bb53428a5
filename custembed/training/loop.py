"""The training loop every rank runs, under torchrun or as a single process.

Spark's ``TorchDistributor`` pickles :func:`train` with a :class:`~custembed.training.spec.TrainSpec`
(plain values only) and runs it in torchrun processes; the same call works in one process.

* Distributed set-up (:mod:`.distributed`): gloo on CPU, NCCL on CUDA; the model is
  wrapped in ``DistributedDataParallel``.
* AdamW (no decay on biases and norms), linear warm-up then linear decay to zero at the
  end of the last epoch. ``max_steps`` only stops early; it does not change the
  schedule, so a run stopped at ``max_steps`` and resumed follows the same path as one
  that was never stopped.
* Rank 0 checkpoints (:mod:`.checkpoint`) every ``checkpoint_every`` steps, at the end
  of each epoch and at the end; a run finding a checkpoint resumes from the newest.
* After each epoch: masked-token loss and accuracy on the held-out customers (for a
  contrastive encoder such as CoLES: its loss on fixed sub-sequence views and the share of
  views whose nearest view is the same customer's; and, for
  encoders that rank items, HR@k / NDCG@k of their last item through
  ``SequenceEncoder.ranking_metrics``), summed over ranks. Early stopping watches that
  loss. The saved encoder has the weights of the epoch with the lowest validation loss
  (kept in memory and in every checkpoint); the last weights only when they validate
  lower still or no epoch ended. Validation loss, not HR@k, because every encoder kind
  has it and its masks are fixed, so epochs compare.
* With ``compare_dir`` (the current champion), that encoder is validated on the same
  customers and masks at the end; its figures come back as ``champion_<metric>``.
* Rank 0 sends every step's loss to MLflow (:mod:`.mlflow_sink`; sent in batches at
  each log interval) and saves the final encoder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pyarrow.parquet as pq
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LambdaLR

from custembed.encoders.base import SequenceEncoder
from custembed.encoders.masking import Inputs
from custembed.encoders.registry import build_encoder, load_encoder
from custembed.training.checkpoint import Position, TrainState, resume, save_checkpoint
from custembed.training.data import AMOUNTS, GAPS, TOKENS, ParquetShardLoader
from custembed.training.distributed import DistContext, all_reduce, init_distributed
from custembed.training.mlflow_sink import MlflowSink
from custembed.training.spec import TrainSpec

log = logging.getLogger(__name__)

VAL_SEED_OFFSET = 1_000_003  # validation masks use their own, fixed, generator
# where a training step's time goes: reading and masking the batch; the loss; the gradients (with
# DistributedDataParallel this includes averaging them over the ranks); clipping and the update
PHASES = ("input", "forward", "backward", "optimizer")


@contextlib.contextmanager
def _rank_zero_logging(ctx: DistContext) -> Iterator[None]:
    """Info lines of the training modules from rank 0 alone; warnings from every rank.

    The figures in them (progress, epochs, checkpoints, results) are all-reduced, so every
    rank would print the same line and torchrun's merged output showed each one per rank.
    """
    if ctx.is_main:
        yield
        return
    logger = logging.getLogger("custembed.training")
    level = logger.level
    logger.setLevel(max(logging.WARNING, logger.getEffectiveLevel()))
    try:
        yield
    finally:
        logger.setLevel(level)


def _ensure_logging() -> None:
    # torchrun workers start with an unconfigured root logger and `train` is their entry
    # point; in a process that configured logging already this does nothing.
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


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


def _build(spec: TrainSpec) -> SequenceEncoder[Any]:
    if spec.init_dir is not None:
        # fine-tuning: the saved model, adapted to this training's data fields (a grown vocabulary)
        return load_encoder(spec.init_dir).for_fine_tuning(spec.encoder_params)
    return build_encoder(spec.encoder_kind, **dict(spec.encoder_params))


def _batch_inputs(encoder: SequenceEncoder[Any], rows: Mapping[str, list[Any]]) -> Inputs:
    # gaps and amounts are read only for encoders that use them (SequenceEncoder.input_columns)
    gaps, amounts = rows.get(GAPS), rows.get(AMOUNTS)
    if encoder.input_column == TOKENS:
        return encoder.inputs(tokens=rows[TOKENS], gaps=gaps, amounts=amounts)
    return encoder.inputs(texts=rows[encoder.input_column], gaps=gaps, amounts=amounts)


def _validate(
    spec: TrainSpec, ctx: DistContext, encoder: SequenceEncoder[Any], loader: ParquetShardLoader | None
) -> dict[str, float]:
    """Held-out metrics summed over ranks; empty when no rank holds validation customers."""
    # Same masks every epoch, so that the losses of successive epochs compare.
    generator = torch.Generator().manual_seed(spec.seed + VAL_SEED_OFFSET + ctx.rank)
    k = spec.metrics_k
    loss_sum = correct = count = hits = gains = scored = no_action = targets = 0.0
    for rows in loader.batches(0) if loader is not None else ():
        inputs = _batch_inputs(encoder, rows)
        stats = encoder.masked_token_stats(encoder.mask(inputs, generator))
        loss_sum, correct, count = loss_sum + stats.loss_sum, correct + stats.correct, count + stats.count
        ranking = encoder.ranking_metrics(inputs, k)
        if ranking is not None:
            hits += ranking.hit_rate * ranking.count
            gains += ranking.ndcg * ranking.count
            scored += ranking.count
            no_action += ranking.no_action_share * ranking.targets  # held-out "no action" targets, not ranked
            targets += ranking.targets
    loss_sum, correct, count, hits, gains, scored, no_action, targets = all_reduce(
        [loss_sum, correct, count, hits, gains, scored, no_action, targets], ctx
    )
    metrics: dict[str, float] = {}
    if count > 0:
        metrics.update(val_loss=loss_sum / count, val_accuracy=correct / count)
    if scored > 0:
        metrics.update({f"hr@{k}": hits / scored, f"ndcg@{k}": gains / scored, "val_sequences": scored})
    if targets > 0:
        metrics["no_action_share"] = no_action / targets
    return metrics


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 of a model's parameters and buffers (to check that ranks agree)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@dataclass
class _Progress:
    """Training figures: the window since the last progress line, this epoch, this run.

    Step losses stay on the device until :meth:`flush` reads them: no sync per step.
    """

    ctx: DistContext
    sink: MlflowSink
    start_step: int
    last_step: int
    window_losses: list[torch.Tensor] = field(default_factory=list)
    window_sequences: int = 0
    window_tokens: int = 0
    window_started: float = field(default_factory=time.perf_counter)
    run_sequences: float = 0.0  # all ranks, training steps of this run
    run_tokens: float = 0.0
    train_seconds: float = 0.0  # time in training steps (validation excluded)
    epoch_loss_sum: float = 0.0  # mean-over-ranks step losses of the current epoch
    epoch_steps: int = 0
    # this rank's seconds per phase of a training step (see PHASES); on a GPU the kernels run
    # asynchronously, so time lands in whichever phase waits for them
    phase_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))

    def clock(self, phase: str, since: float) -> float:
        """Add the time since ``since`` to ``phase``; returns now."""
        now = time.perf_counter()
        self.phase_seconds[phase] += now - since
        return now

    def start_epoch(self) -> None:
        self.epoch_loss_sum, self.epoch_steps = 0.0, 0
        self.window_started = time.perf_counter()  # validation time is not training time

    def record(self, loss: torch.Tensor, inputs: Inputs) -> None:
        self.window_losses.append(loss.detach().float())
        self.window_sequences += int(inputs["input_ids"].size(0))
        self.window_tokens += int(inputs["attention_mask"].sum())

    def flush(self, position: Position, lr: float) -> None:
        """Collective: progress line and MLflow metrics for the steps since the last flush."""
        if not self.window_losses:
            return
        local = torch.stack(self.window_losses).tolist()
        *loss_sums, sequences, tokens = all_reduce([*local, self.window_sequences, self.window_tokens], self.ctx)
        step_losses = [value / self.ctx.world_size for value in loss_sums]  # mean over ranks, per step
        elapsed = max(time.perf_counter() - self.window_started, 1e-9)
        self.run_sequences, self.run_tokens = self.run_sequences + sequences, self.run_tokens + tokens
        self.train_seconds += elapsed
        self.epoch_loss_sum = self.epoch_loss_sum + sum(step_losses)
        self.epoch_steps = self.epoch_steps + len(step_losses)
        seconds_per_step = self.train_seconds / max(position.step - self.start_step, 1)
        eta = timedelta(seconds=round(seconds_per_step * (self.last_step - position.step)))
        log.info(
            "step %d/%d epoch %d loss %.4f | %.1f seq/s %.0f tok/s | lr %.2e | eta %s",
            position.step,
            self.last_step,
            position.epoch,
            step_losses[-1],
            sequences / elapsed,
            tokens / elapsed,
            lr,
            eta,
        )
        first = position.step - len(step_losses) + 1
        rows = [(first + i, {"train_loss": loss}) for i, loss in enumerate(step_losses)]
        rows[-1][1].update(
            sequences_per_s=sequences / elapsed,
            tokens_per_s=tokens / elapsed,
            lr=lr,
            epoch=float(position.epoch),
        )
        self.sink.metrics(rows)
        self.window_losses, self.window_sequences, self.window_tokens = [], 0, 0
        self.window_started = time.perf_counter()


@dataclass
class _Run:
    """One rank's run once set up: what the epochs read and update."""

    spec: TrainSpec
    ctx: DistContext
    state: TrainState
    model: torch.nn.Module  # what the forward pass calls: the DDP wrapper, or the model itself
    train_loader: ParquetShardLoader
    val_loader: ParquetShardLoader | None
    n_batches: int  # per epoch, the same on every rank
    last_step: int
    sink: MlflowSink
    progress: _Progress

    @property
    def lr(self) -> float:
        return float(self.state.scheduler.get_last_lr()[0])


def train(spec: TrainSpec) -> dict[str, Any]:
    """Train (or resume training) an encoder as described by ``spec``; see the module doc.

    Returns the same metrics on every rank: ``train_loss`` (mean over the last epoch's
    steps of this run), ``val_loss``, ``val_accuracy``, ``hr@k``, ``ndcg@k`` (when held-out
    data exist and the encoder ranks items; all of the saved weights), ``weights_step``
    (the step those weights are from), ``last_<early_stopping_metric>`` (when they are not the last),
    ``champion_<metric>`` (with ``compare_dir``), ``steps``, ``start_step``,
    ``epochs_completed``, ``stopped_early``, ``seconds``, ``sequences_per_s``,
    ``tokens_per_s``, ``world_size``, ``weights_sha256`` (of the saved weights) and, per phase of
    :data:`PHASES`, ``<phase>_s_per_step`` (a rank's seconds per step, mean over ranks).
    """
    _ensure_logging()
    started = time.perf_counter()
    ctx = init_distributed()
    try:
        with _rank_zero_logging(ctx):
            return _run(spec, ctx, started)
    finally:
        # The DDP wrapper (inside _run's frame) must be gone before its process group: a Reducer
        # released after destroy_process_group joins gloo's threads while holding the GIL and hangs.
        if ctx.owns_group:
            dist.destroy_process_group()


def _run(spec: TrainSpec, ctx: DistContext, started: float) -> dict[str, Any]:
    """Set up, train every epoch, save: everything that holds the model lives and dies in this frame."""
    run = _set_up(spec, ctx)
    stopped_early, val_metrics = _train_epochs(run)
    val_metrics = _finish(run, val_metrics)
    result = _result(run, val_metrics, stopped_early, started)
    result.update(_compare(run))
    return result


def _loaders(
    spec: TrainSpec, ctx: DistContext, columns: tuple[str, ...]
) -> tuple[ParquetShardLoader, ParquetShardLoader | None, int]:
    """This rank's training and validation readers of ``columns``, and the batches per epoch of every rank."""
    data_filter = pq.filters_to_expression([list(t) for t in spec.data_filter]) if spec.data_filter else None

    def loader(split: str) -> ParquetShardLoader:
        return ParquetShardLoader(
            spec.data_path,
            columns=columns,
            batch_size=spec.batch_size,
            rank=ctx.rank,
            world_size=ctx.world_size,
            seed=spec.seed,
            filter=data_filter,
            split=split,
            val_pct=spec.val_pct,
            length_buckets=spec.length_buckets if split == "train" else 0,
        )

    train_loader = loader("train")
    val_loader = loader("val") if spec.val_pct > 0 else None
    # Every rank takes the same number of batches, or DDP would wait forever on the others.
    (batches_per_epoch,) = all_reduce([train_loader.local_num_batches()], ctx, op="min")
    n_batches = int(batches_per_epoch)
    if n_batches == 0:
        raise ValueError(
            f"some rank has fewer than batch_size={spec.batch_size} training sequences in "
            f"{spec.data_path} (rows with {', '.join(columns)} null or empty are left out); "
            "lower batch_size or use fewer ranks"
        )
    return train_loader, val_loader, n_batches


def _set_up(spec: TrainSpec, ctx: DistContext) -> _Run:
    """Encoder, data, optimiser and schedule, restored from the newest checkpoint if any."""
    torch.manual_seed(spec.seed)  # identical initial weights on every rank
    encoder = _build(spec).to(ctx.device)
    torch.manual_seed(spec.seed + ctx.rank)  # distinct dropout streams per rank
    mask_generator = torch.Generator().manual_seed(spec.seed * 7919 + ctx.rank)
    train_loader, val_loader, n_batches = _loaders(spec, ctx, encoder.input_columns)
    planned = spec.epochs * n_batches
    last_step = planned if spec.max_steps is None else min(planned, spec.max_steps)

    optimizer = _optimizer(encoder.model, spec)
    state = TrainState(encoder, optimizer, _schedule(optimizer, spec.warmup_steps, planned), mask_generator)
    resume(spec, ctx, state)
    start_step = state.position.step
    model: torch.nn.Module = encoder.training_module()
    if ctx.world_size > 1:
        device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        model = DistributedDataParallel(model, device_ids=device_ids)

    sink = MlflowSink(spec, ctx)
    if start_step == 0:
        sink.params(
            {
                **{k: v for k, v in dataclasses.asdict(spec).items() if "mlflow" not in k},
                "world_size": ctx.world_size,
                "batches_per_epoch": n_batches,
                "parameters": sum(p.numel() for p in encoder.model.parameters()),
            }
        )
    log.info(
        "%d rank(s), rank 0 on %s: %s encoder, %d batches per epoch, steps %d -> %d",
        ctx.world_size,
        ctx.device,
        encoder.kind,
        n_batches,
        start_step,
        last_step,
    )
    return _Run(
        spec=spec,
        ctx=ctx,
        state=state,
        model=model,
        train_loader=train_loader,
        val_loader=val_loader,
        n_batches=n_batches,
        last_step=last_step,
        sink=sink,
        progress=_Progress(ctx=ctx, sink=sink, start_step=start_step, last_step=last_step),
    )


def _train_epochs(run: _Run) -> tuple[bool, dict[str, float]]:
    """Epochs until the last one, ``max_steps`` or early stopping; returns (stopped early, last validation)."""
    spec, position = run.spec, run.state.position
    patience = spec.early_stopping_patience
    stopped_early = patience is not None and position.bad_epochs >= patience  # in an earlier run
    val_metrics: dict[str, float] = {}
    validated_at = -1
    done_training = stopped_early or position.step >= run.last_step
    while not done_training and position.epoch < spec.epochs:
        done_training = _train_epoch(run)
        run.progress.flush(position, run.lr)
        if position.batch_offset < run.n_batches:
            break  # stopped by max_steps inside the epoch
        val_metrics, validated_at = _validate(spec, run.ctx, run.state.encoder, run.val_loader), position.step
        log.info("epoch %d done at step %d: %s", position.epoch, position.step, _fmt(val_metrics))
        run.sink.metrics([(position.step, val_metrics)])
        _keep_if_best(spec, run.state, val_metrics)
        position.epoch, position.batch_offset = position.epoch + 1, 0
        if _out_of_patience(spec, position, val_metrics):
            stopped_early = done_training = True
        save_checkpoint(spec, run.ctx, run.state)
    if validated_at != position.step:
        val_metrics = _validate(spec, run.ctx, run.state.encoder, run.val_loader)
        run.sink.metrics([(position.step, val_metrics)])
    return stopped_early, val_metrics


def _train_epoch(run: _Run) -> bool:
    """Train on the rest of the current epoch; True when the run's last step is reached."""
    spec, state = run.spec, run.state
    position = state.position
    state.encoder.model.train()
    run.progress.start_epoch()
    clock = time.perf_counter()
    for rows in run.train_loader.batches(position.epoch, start=position.batch_offset, limit=run.n_batches):
        inputs = _batch_inputs(state.encoder, rows)
        loss = _step(run, inputs, clock)
        position.step += 1
        position.batch_offset += 1
        run.progress.record(loss, inputs)
        if position.step % spec.log_every == 0:
            run.progress.flush(position, run.lr)
        if position.step % spec.checkpoint_every == 0:
            save_checkpoint(spec, run.ctx, state)
        if position.step >= run.last_step:
            return True
        clock = time.perf_counter()
    return False


def _step(run: _Run, inputs: Inputs, clock: float) -> torch.Tensor:
    """One optimiser step on freshly masked ``inputs`` read since ``clock``; returns the loss (not synchronised)."""
    state, progress = run.state, run.progress
    masked = state.encoder.mask(inputs, state.generator)
    batch = {name: value.to(run.ctx.device) for name, value in masked.items()}
    clock = progress.clock("input", clock)
    loss = state.encoder.loss(batch, model=run.model)
    clock = progress.clock("forward", clock)
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    clock = progress.clock("backward", clock)
    if run.spec.max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(state.encoder.model.parameters(), run.spec.max_grad_norm)
    state.optimizer.step()
    state.scheduler.step()
    progress.clock("optimizer", clock)
    return loss


def _out_of_patience(spec: TrainSpec, position: Position, val_metrics: Mapping[str, float]) -> bool:
    """Update the early-stopping state after an epoch; True when patience has run out."""
    patience, value = spec.early_stopping_patience, spec.monitored(val_metrics)
    if value is None or patience is None:
        return False
    if value < position.best_monitored - spec.early_stopping_min_delta:
        position.best_monitored, position.bad_epochs = value, 0
    else:
        position.bad_epochs += 1
    if position.bad_epochs >= patience:
        log.info("early stopping: no better %s for %d epochs", spec.early_stopping_metric, position.bad_epochs)
        return True
    return False


def _keep_if_best(spec: TrainSpec, state: TrainState, val_metrics: Mapping[str, float]) -> None:
    """After an epoch: keep a copy of the weights when their monitored validation figure is the best so far."""
    position = state.position
    value, kept = spec.monitored(val_metrics), spec.monitored(position.kept_metrics)
    if value is None or (kept is not None and value >= kept):
        return
    state.kept_weights = {k: v.detach().cpu().clone() for k, v in state.encoder.model.state_dict().items()}
    position.kept_step, position.kept_metrics = position.step, dict(val_metrics)


def _choose_weights(run: _Run, last_metrics: Mapping[str, float]) -> tuple[int, dict[str, float]]:
    """Load the kept epoch's weights unless the last ones validate as well; (step of the weights, their figures)."""
    spec, state, position = run.spec, run.state, run.state.position
    name = spec.early_stopping_metric
    kept, last = spec.monitored(position.kept_metrics), spec.monitored(last_metrics)
    if state.kept_weights is None or kept is None or position.kept_step == position.step:
        return position.step, dict(last_metrics)
    if last is not None and last <= kept:
        return position.step, dict(last_metrics)
    state.encoder.model.load_state_dict(state.kept_weights)
    log.info(
        "keeping the weights of step %d (%s %.4f), not those of the last step %d (%s %s)",
        position.kept_step,
        name,
        position.kept_metrics[name],
        position.step,
        name,
        "n/a" if last is None else f"{last_metrics[name]:.4f}",
    )
    chosen = dict(position.kept_metrics)
    if last is not None:
        chosen[f"last_{name}"] = last_metrics[name]
    return position.kept_step, chosen


def _finish(run: _Run, last_metrics: Mapping[str, float]) -> dict[str, Any]:
    """Collective: the last checkpoint, then the best weights; rank 0 saves them while the others wait.

    Returns the validation figures of the saved weights and ``weights_step``, the step they are from.
    """
    save_checkpoint(run.spec, run.ctx, run.state)  # the last weights: what a resumed run continues from
    step, chosen = _choose_weights(run, last_metrics)
    if run.ctx.is_main:
        run.state.encoder.save(run.spec.output_dir)
    if run.ctx.world_size > 1:
        dist.barrier()  # nobody returns before rank 0 has saved
    return {**chosen, "weights_step": step}


def _compare(run: _Run) -> dict[str, float]:
    """Collective: ``champion_<metric>`` of the encoder in ``spec.compare_dir`` on this run's validation data."""
    spec = run.spec
    if spec.compare_dir is None or run.val_loader is None:
        return {}
    try:
        champion = load_encoder(spec.compare_dir)
    except (OSError, ValueError) as e:  # the same directory on every rank: all skip alike
        log.warning("cannot load the encoder to compare with from %s: %s", spec.compare_dir, e)
        return {}
    if champion.kind != run.state.encoder.kind or champion.input_columns != run.state.encoder.input_columns:
        log.warning(
            "not comparing with %s: a %s encoder, this run trains %s",
            spec.compare_dir,
            champion.kind,
            run.state.encoder.kind,
        )
        return {}
    champion = champion.to(run.ctx.device)
    champion.model.eval()
    metrics = _validate(spec, run.ctx, champion, run.val_loader)
    log.info("champion on the same held-out customers: %s", _fmt(metrics))
    return {f"champion_{k}": v for k, v in metrics.items()}


def _result(run: _Run, val_metrics: Mapping[str, Any], stopped_early: bool, started: float) -> dict[str, Any]:
    """The figures every rank returns (collective: the slowest rank's times)."""
    progress, position = run.progress, run.state.position
    seconds, train_seconds = all_reduce([time.perf_counter() - started, progress.train_seconds], run.ctx, op="max")
    train_seconds = max(train_seconds, 1e-9)
    result: dict[str, Any] = {
        **val_metrics,
        "steps": position.step,
        "start_step": progress.start_step,
        "epochs_completed": position.epoch,
        "stopped_early": stopped_early,
        "seconds": seconds,
        "sequences_per_s": progress.run_sequences / train_seconds,  # training steps only, all ranks
        "tokens_per_s": progress.run_tokens / train_seconds,
        "world_size": run.ctx.world_size,
        "weights_sha256": weights_digest(run.state.encoder.model),
    }
    steps = position.step - progress.start_step
    if steps:
        per_rank = all_reduce([progress.phase_seconds[phase] for phase in PHASES], run.ctx)
        for phase, total in zip(PHASES, per_rank, strict=True):
            result[f"{phase}_s_per_step"] = total / run.ctx.world_size / steps
    if progress.epoch_steps:
        result["train_loss"] = progress.epoch_loss_sum / progress.epoch_steps
    log.info("training finished: %s", _fmt(result))
    return result


def _fmt(metrics: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(metrics.items()))

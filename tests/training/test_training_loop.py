"""The training loop: single process, checkpoints and resume, MLflow, two gloo ranks."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import pickle
import socket
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pytest
import torch
import torch.multiprocessing as mp
from transformers import BertTokenizerFast, ElectraConfig, ElectraForMaskedLM

from custembed import lakefs
from custembed.encoders import load_encoder
from custembed.training import ParquetShardLoader, TrainSpec, train, weights_digest
from custembed.training.loop import PHASES

WriteSequences = Callable[..., Path]
TINY_BERT4REC = {"vocab_size": 33, "hidden_size": 32, "num_layers": 2, "num_heads": 2, "max_len": 16}


def make_spec(tmp_path: Path, data: Path, **overrides: Any) -> TrainSpec:
    values: dict[str, Any] = {
        "data_path": str(data),
        "output_dir": str(tmp_path / "encoder"),
        "checkpoint_dir": str(tmp_path / "checkpoints"),
        "encoder_kind": "bert4rec",
        "encoder_params": dict(TINY_BERT4REC),
        "epochs": 2,
        "batch_size": 16,
        "lr": 3e-3,
        "warmup_steps": 5,
        "checkpoint_every": 4,
        "log_every": 4,
        "val_pct": 20,
        "seed": 0,
    }
    return TrainSpec(**{**values, **overrides})


def checkpoint_steps(directory: str) -> list[int]:
    return sorted(int(p.name.removeprefix("step-")) for p in Path(directory).glob("step-*"))


def test_spec_pickles_and_rejects_bad_values(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, tmp_path, data_filter=(("dt", "=", "2024-01-01"),))
    assert pickle.loads(pickle.dumps(spec)) == spec
    with pytest.raises(ValueError, match="epochs must be positive, got 0"):
        dataclasses.replace(spec, epochs=0)
    with pytest.raises(ValueError, match="val_pct must be in \\[0, 100\\), got 100"):
        dataclasses.replace(spec, val_pct=100)
    with pytest.raises(ValueError, match="mlflow"):
        dataclasses.replace(spec, mlflow_tracking_uri="sqlite:///x.db")
    with pytest.raises(ValueError, match="\\('dt', '='\\)"):
        dataclasses.replace(spec, data_filter=(("dt", "="),))


def test_single_process_run_trains_checkpoints_and_saves(
    tmp_path: Path, write_sequences: WriteSequences, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="custembed")
    spec = make_spec(tmp_path, write_sequences(200))
    result = train(spec)

    train_rows = ParquetShardLoader(spec.data_path, columns=("tokens",), batch_size=16, val_pct=20).num_rows
    assert result["steps"] == 2 * (train_rows // 16) and result["start_step"] == 0
    assert result["epochs_completed"] == 2 and result["world_size"] == 1
    assert not result["stopped_early"]
    for key in ("train_loss", "val_loss", "val_accuracy", "hr@10", "ndcg@10"):
        assert math.isfinite(result[key]), key
    assert 0.0 <= result["hr@10"] <= 1.0 and result["val_loss"] < 5.0
    assert result["sequences_per_s"] > 0 and result["tokens_per_s"] > result["sequences_per_s"]
    phases = [result[f"{phase}_s_per_step"] for phase in PHASES]
    assert all(seconds > 0 for seconds in phases)
    # the phases are the training steps' time: validation and checkpoints are outside them
    assert sum(phases) * result["steps"] < result["seconds"]

    steps = checkpoint_steps(spec.checkpoint_dir)
    assert steps[-1] == result["steps"] and len(steps) == spec.keep_checkpoints
    assert not list(Path(spec.checkpoint_dir).glob(".tmp-*"))
    progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ")]
    assert progress and all("seq/s" in line and "eta" in line for line in progress)

    encoder = load_encoder(spec.output_dir)
    vectors = encoder.embed(encoder.inputs(tokens=[[3, 4, 5], [20, 21]]))
    assert vectors.shape == (2, 32)


def test_a_run_on_a_remote_store_checkpoints_resumes_and_saves_there(
    tmp_path: Path, write_sequences: WriteSequences
) -> None:
    """Snapshot, checkpoints and encoder as URIs of a store that is not the local disk (fsspec's memory://)."""
    remote = f"memory://loop-{uuid.uuid4().hex[:8]}/training"
    lakefs.put_dir(write_sequences(120), lakefs.join(remote, "data"))
    spec = make_spec(
        tmp_path,
        tmp_path / "unused",
        data_path=lakefs.join(remote, "data"),
        output_dir=lakefs.join(remote, "encoder"),
        checkpoint_dir=lakefs.join(remote, "checkpoints"),
        epochs=1,
    )
    first = train(spec)
    assert first["steps"] > 0
    steps = [int(lakefs.name(uri).removeprefix("step-")) for uri in lakefs.glob(spec.checkpoint_dir, "step-*")]
    assert steps[-1] == first["steps"] and len(steps) <= spec.keep_checkpoints
    assert not lakefs.glob(spec.checkpoint_dir, ".tmp-*")
    again = train(spec)
    assert again["start_step"] == first["steps"]  # resumed from the remote checkpoint
    assert load_encoder(spec.output_dir).kind == "bert4rec"
    assert [p.name for p in tmp_path.iterdir()] == ["sequences"]  # the input only: nothing written locally


def test_resume_continues_from_the_checkpointed_step(
    tmp_path: Path, write_sequences: WriteSequences, caplog: pytest.LogCaptureFixture
) -> None:
    data = write_sequences(300)
    shared = {"epochs": 1, "checkpoint_every": 100}

    def run(name: str, max_steps: int) -> dict[str, Any]:
        return train(
            make_spec(
                tmp_path / name,
                data,
                max_steps=max_steps,
                **shared,
                checkpoint_dir=str(tmp_path / name / "checkpoints"),
            )
        )

    first = run("resumed", 3)
    assert first["steps"] == 3 and checkpoint_steps(str(tmp_path / "resumed" / "checkpoints")) == [3]
    caplog.set_level(logging.INFO, logger="custembed")
    resumed = run("resumed", 7)
    assert resumed["start_step"] == 3 and resumed["steps"] == 7
    assert any("resuming from step 3" in r.getMessage() for r in caplog.records)

    fresh_short = run("fresh_short", 4)  # as many steps as the resumed run made itself
    uninterrupted = run("uninterrupted", 7)
    assert fresh_short["start_step"] == 0
    assert resumed["weights_sha256"] != fresh_short["weights_sha256"]
    # Model, optimiser, schedule, data position and random streams all came back.
    assert resumed["weights_sha256"] == uninterrupted["weights_sha256"]


def test_early_stopping_ends_after_patience_epochs(tmp_path: Path, write_sequences: WriteSequences) -> None:
    spec = make_spec(
        tmp_path,
        write_sequences(100),
        epochs=6,
        early_stopping_patience=1,
        early_stopping_min_delta=10.0,  # no epoch can improve by 10 nats
    )
    result = train(spec)
    assert result["stopped_early"] and result["epochs_completed"] == 2
    # Rerunning the same command does not train on: the stop was checkpointed.
    again = train(spec)
    assert again["stopped_early"] and again["start_step"] == again["steps"] == result["steps"]
    assert again["epochs_completed"] == 2


def test_early_stopping_can_follow_a_ranking_figure(
    tmp_path: Path, write_sequences: WriteSequences, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the validation loss rises after the first epoch while HR@10 keeps rising (what SASRec does on
    # Video Games): following the loss keeps the first epoch's weights, following hr@10 the last
    data = write_sequences(120)
    batches = ParquetShardLoader(str(data), columns=("tokens",), batch_size=16, val_pct=20).local_num_batches()
    shared = {"epochs": 3, "checkpoint_every": 1000, "early_stopping_patience": 2}
    scripted_validation(monkeypatch, [1.0, 2.0, 3.0])
    by_loss = train(make_spec(tmp_path / "loss", data, **shared))
    assert by_loss["weights_step"] == batches and by_loss["last_val_loss"] == 3.0
    assert by_loss["stopped_early"] and by_loss["epochs_completed"] == 3

    scripted_validation(monkeypatch, [0.1, 0.2, 0.3], name="hr@10")
    by_hr = train(make_spec(tmp_path / "hr", data, early_stopping_metric="hr@10", **shared))
    assert by_hr["weights_step"] == by_hr["steps"] == 3 * batches and by_hr["hr@10"] == 0.3
    assert not by_hr["stopped_early"]

    scripted_validation(monkeypatch, [0.3, 0.2, 0.1], name="hr@10")
    falling = train(make_spec(tmp_path / "falling", data, early_stopping_metric="hr@10", **shared))
    assert falling["weights_step"] == batches and falling["hr@10"] == 0.3 and falling["last_hr@10"] == 0.1
    assert falling["stopped_early"]


def test_early_stopping_metric_must_be_a_validation_figure(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="early_stopping_metric must be one of val_loss, val_accuracy, hr@5"):
        make_spec(tmp_path, tmp_path, metrics_k=5, early_stopping_metric="hr@10")


def test_data_filter_reads_only_the_chosen_partition(tmp_path: Path, write_sequences: WriteSequences) -> None:
    data = write_sequences(100, partitions=("2024-01-01", "2024-02-01"))
    spec = make_spec(tmp_path, data, epochs=1, data_filter=(("dt", "=", "2024-02-01"),))
    result = train(spec)
    february = ParquetShardLoader(
        data, columns=("tokens",), batch_size=16, val_pct=20, filter=pc.field("dt") == "2024-02-01"
    )
    assert result["steps"] == february.local_num_batches() == february.num_rows // 16


@pytest.fixture
def tiny_electra_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "tiny_electra"
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *(f"a{i}" for i in range(30))]
    BertTokenizerFast(vocab={w: i for i, w in enumerate(words)}).save_pretrained(directory)
    config = ElectraConfig(
        vocab_size=len(words),
        embedding_size=16,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=32,
    )
    ElectraForMaskedLM(config).save_pretrained(directory)
    return directory


def test_text_encoder_reads_the_text_column(
    tmp_path: Path, write_sequences: WriteSequences, tiny_electra_dir: Path
) -> None:
    spec = make_spec(
        tmp_path,
        write_sequences(120),
        epochs=1,
        encoder_kind="mlm",
        encoder_params={"checkpoint": str(tiny_electra_dir), "max_len": 16},
    )
    result = train(spec)
    assert result["steps"] > 0 and math.isfinite(result["val_loss"])
    assert "hr@10" not in result  # ranking metrics are BERT4Rec's
    loaded = load_encoder(spec.output_dir)
    assert loaded.kind == "mlm" and loaded.embed(loaded.inputs(texts=["a1 a2"])).shape == (1, 32)


def test_a_fine_tuned_encoder_names_the_checkpoint_it_started_from(
    tmp_path: Path, write_sequences: WriteSequences, tiny_electra_dir: Path
) -> None:
    from custembed.encoders import build_encoder
    from custembed.tracking import LINEAGE_FILE, TAG_INIT_CHECKPOINT, initial_checkpoint

    spec = make_spec(
        tmp_path,
        write_sequences(120),
        epochs=1,
        encoder_kind="mlm",
        encoder_params={"checkpoint": str(tiny_electra_dir), "max_len": 16},
    )
    result = train(spec)
    checkpoint, config = initial_checkpoint(spec.output_dir)
    assert checkpoint == str(tiny_electra_dir) and config["max_len"] == 16
    before = build_encoder("mlm", **config)  # the report's "before" model: the starting weights
    assert weights_digest(before.model) == weights_digest(ElectraForMaskedLM.from_pretrained(tiny_electra_dir))
    assert weights_digest(before.model) != result["weights_sha256"]

    # recorded as configured (the train job writes it), resolved where it is read
    lineage = {TAG_INIT_CHECKPOINT: "package:custembed/encoders"}
    (Path(spec.output_dir) / LINEAGE_FILE).write_text(json.dumps(lineage))
    checkpoint, config = initial_checkpoint(spec.output_dir)
    assert Path(checkpoint).parts[-2:] == ("custembed", "encoders") and config["checkpoint"] == checkpoint


def test_ranking_metrics_come_from_the_encoder_hook(
    tmp_path: Path, write_sequences: WriteSequences, tiny_electra_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from custembed.encoders import MlmEncoder, RankingMetrics

    def ranking_metrics(self: MlmEncoder, inputs: dict[str, torch.Tensor], k: int) -> RankingMetrics:
        assert k == 5
        n = int(inputs["input_ids"].size(0))
        return RankingMetrics(hit_rate=0.5, ndcg=0.25, count=n, no_action_share=0.2, targets=n + 1)

    monkeypatch.setattr(MlmEncoder, "ranking_metrics", ranking_metrics)
    spec = make_spec(
        tmp_path,
        write_sequences(120),
        epochs=1,
        encoder_kind="mlm",
        metrics_k=5,
        encoder_params={"checkpoint": str(tiny_electra_dir), "max_len": 16},
    )
    result = train(spec)
    assert result["hr@5"] == pytest.approx(0.5) and result["ndcg@5"] == pytest.approx(0.25)
    assert result["val_sequences"] > 0  # every held-out sequence the hook saw
    assert result["no_action_share"] == pytest.approx(0.2)  # weighted by targets, summed over batches


def test_init_dir_starts_from_a_saved_encoder(tmp_path: Path, write_sequences: WriteSequences) -> None:
    data = write_sequences(100)
    first = train(make_spec(tmp_path / "a", data, epochs=1, checkpoint_dir=str(tmp_path / "a" / "ck")))
    second = train(
        make_spec(
            tmp_path / "b",
            data,
            epochs=1,
            init_dir=str(tmp_path / "a" / "encoder"),
            encoder_params={},
            checkpoint_dir=str(tmp_path / "b" / "ck"),
        )
    )
    assert second["start_step"] == 0 and second["weights_sha256"] != first["weights_sha256"]


def test_metrics_go_to_an_existing_mlflow_run(tmp_path: Path, write_sequences: WriteSequences) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("custembed-test")).info.run_id
    spec = make_spec(tmp_path, write_sequences(100), epochs=1, mlflow_tracking_uri=uri, mlflow_run_id=run_id)
    result = train(spec)

    losses = client.get_metric_history(run_id, "train_loss")
    assert [m.step for m in sorted(losses, key=lambda m: m.step)] == list(range(1, result["steps"] + 1))
    assert client.get_metric_history(run_id, "hr_at_10")[-1].value == pytest.approx(result["hr@10"])
    assert client.get_run(run_id).data.params["batch_size"] == "16"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def train_rank(rank: int, spec: TrainSpec, port: int, out: str) -> None:
    """One torchrun-like rank: the variables torchrun would set, then `train`."""
    torch.set_num_threads(1)
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE="2",
        LOCAL_WORLD_SIZE="2",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    result = train(spec)
    Path(out, f"rank-{rank}.json").write_text(json.dumps(result))


@pytest.mark.slow
def test_two_gloo_ranks_end_with_identical_weights(
    tmp_path: Path, write_sequences: WriteSequences, capfd: pytest.CaptureFixture[str]
) -> None:
    spec = make_spec(tmp_path, write_sequences(200, files=3, row_group_size=20), epochs=2)
    mp.spawn(train_rank, args=(spec, free_port(), str(tmp_path)), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in range(2)]
    assert results[0] == results[1]  # same weights, same metrics, same figures
    assert results[0]["world_size"] == 2 and results[0]["steps"] > 0
    assert checkpoint_steps(spec.checkpoint_dir)[-1] == results[0]["steps"]
    assert load_encoder(spec.output_dir).kind == "bert4rec"
    # both ranks' output reaches the same stream (as under torchrun): each run-level line once
    output = capfd.readouterr()
    lines = (output.out + output.err).splitlines()
    for marker in ("epoch 0 done at step", "epoch 1 done at step", "training finished:"):
        assert sum(marker in line for line in lines) == 1, (marker, lines)


def scripted_validation(monkeypatch: pytest.MonkeyPatch, losses: list[float], name: str = "val_loss") -> list[int]:
    """Replace the held-out figure ``name`` of each validation by the next of ``losses``; returns the steps
    validated."""
    from custembed.training import loop

    real = getattr(loop._validate, "real", loop._validate)  # not an earlier script
    validated: list[int] = []

    def validate(spec: TrainSpec, ctx: Any, encoder: Any, loader: Any) -> dict[str, float]:
        metrics = real(spec, ctx, encoder, loader)
        validated.append(len(validated))
        return {**metrics, name: losses.pop(0)}

    validate.real = real  # type: ignore[attr-defined]
    monkeypatch.setattr(loop, "_validate", validate)
    return validated


def test_the_saved_weights_are_the_best_epochs_also_after_a_resume(
    tmp_path: Path, write_sequences: WriteSequences, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write_sequences(120)
    batches = ParquetShardLoader(str(data), columns=("tokens",), batch_size=16, val_pct=20).local_num_batches()
    shared = {"epochs": 3, "checkpoint_every": 1000}

    # reference: the weights at the end of the second epoch of the same schedule
    scripted_validation(monkeypatch, [2.0, 1.0])
    second_epoch = train(make_spec(tmp_path / "ref", data, max_steps=2 * batches, **shared))

    # epoch losses 2, 1, 3: the second epoch's weights are saved, not the last
    scripted_validation(monkeypatch, [2.0, 1.0, 3.0])
    full = train(make_spec(tmp_path / "full", data, **shared))
    assert full["steps"] == 3 * batches and full["weights_step"] == 2 * batches
    assert full["val_loss"] == 1.0 and full["last_val_loss"] == 3.0
    assert full["weights_sha256"] == second_epoch["weights_sha256"]
    saved = load_encoder(str(tmp_path / "full" / "encoder"))
    assert weights_digest(saved.model) == second_epoch["weights_sha256"]

    # killed after two epochs and resumed: the kept weights come back from the checkpoint
    scripted_validation(monkeypatch, [2.0, 1.0])
    train(make_spec(tmp_path / "resumed", data, max_steps=2 * batches, **shared))
    scripted_validation(monkeypatch, [3.0])
    resumed = train(make_spec(tmp_path / "resumed", data, **shared))
    assert resumed["start_step"] == 2 * batches and resumed["weights_step"] == 2 * batches
    assert resumed["weights_sha256"] == second_epoch["weights_sha256"]


def test_the_champion_is_validated_on_the_same_customers_and_masks(
    tmp_path: Path, write_sequences: WriteSequences
) -> None:
    data = write_sequences(120)
    first = train(make_spec(tmp_path / "a", data, epochs=1))
    # the same training again, compared with the first one's encoder: identical weights, identical figures
    again = train(make_spec(tmp_path / "b", data, epochs=1, compare_dir=str(tmp_path / "a" / "encoder")))
    assert again["weights_sha256"] == first["weights_sha256"]
    assert again["champion_val_loss"] == pytest.approx(again["val_loss"], abs=1e-9)
    assert again["champion_hr@10"] == pytest.approx(again["hr@10"], abs=1e-9)
    assert "champion_val_loss" not in first

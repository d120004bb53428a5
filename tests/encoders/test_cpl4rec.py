"""CPL4Rec (our reading): pre-training and prompt stages learn, ablation switches change what trains."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import pytest
import torch

from custembed.encoders.cpl4rec import PROMPT, Cpl4RecConfig, Cpl4RecModel, split_tables

N_SPECIAL = 3
ITEMS = [f"i{k}" for k in range(12)]
VOCAB = [("no action", None)] + [(b, i) for b in ("viewing", "buying") for i in ITEMS]


def tiny(**overrides: object) -> Cpl4RecConfig:
    tables = split_tables(VOCAB, N_SPECIAL)
    names = tables["behaviours"]
    params = {
        "action_item": tables["action_item"],
        "action_behaviour": tables["action_behaviour"],
        "n_items": tables["n_items"],
        "n_behaviours": tables["n_behaviours"],
        "target_behaviour": list(names).index("buying") + 1,
        "hidden_size": 32,
        "num_layers": 2,
        "num_heads": 2,
        "max_len": 12,
        "dropout": 0.0,
        "num_prompts": 2,
        "prompt_hidden": 32,
    }
    return Cpl4RecConfig(**{**params, **overrides})  # type: ignore[arg-type]


def action(behaviour: str, item: int) -> int:
    return N_SPECIAL + VOCAB.index((behaviour, f"i{item}"))


def batch(n: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Users view item k, then k+1, ..., and buy the item after the last one viewed (the next-buy target)."""
    rng = random.Random(seed)
    ids = torch.zeros(n, 6, dtype=torch.long)
    targets = torch.zeros(n, dtype=torch.long)
    for row in range(n):
        start = rng.randrange(len(ITEMS))
        for step in range(6):
            ids[row, step] = action("viewing", (start + step) % len(ITEMS))
        targets[row] = split_tables(VOCAB, N_SPECIAL)["action_item"][action("buying", (start + 6) % len(ITEMS))]
    return ids, torch.ones_like(ids), targets


def test_split_tables_share_items_across_behaviours() -> None:
    tables = split_tables(VOCAB, N_SPECIAL)
    assert tables["action_item"][:N_SPECIAL] == (0, 0, 0) and tables["action_item"][N_SPECIAL] == 0  # no action
    assert tables["action_item"][action("viewing", 3)] == tables["action_item"][action("buying", 3)]
    assert tables["action_behaviour"][action("viewing", 3)] != tables["action_behaviour"][action("buying", 3)]
    assert tables["n_items"] == len(ITEMS) + 1 and tables["behaviours"] == ("no action", "viewing", "buying")


@pytest.mark.parametrize("denoise", [False, True])
def test_pretraining_loss_falls(denoise: bool) -> None:
    torch.manual_seed(0)
    model = Cpl4RecModel(tiny(denoise=denoise))
    ids, mask, _ = batch()
    items, _ = model.split(ids)
    masked = torch.zeros_like(ids, dtype=torch.bool)
    masked[:, 2] = True
    masked[:, 4] = True
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(60):
        out = model(ids, mask, labels=items, masked=masked)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert out.logits is not None and out.logits.shape == (2 * 32, len(ITEMS) + 1)


def test_prompt_stage_freezes_the_backbone_and_learns_the_target() -> None:
    torch.manual_seed(0)
    model = Cpl4RecModel(tiny())
    backbone = {n: p.detach().clone() for n, p in model.named_parameters() if n.split(".")[0] in ("items", "layers")}
    model.set_stage(PROMPT)
    ids, mask, targets = batch()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    first = None
    for _ in range(80):
        out = model(ids, mask, labels=targets)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        first = out.loss.item() if first is None else first
    assert float(out.loss) < 0.5 * first
    for name, before in backbone.items():
        assert torch.equal(dict(model.named_parameters())[name], before), name
    assert out.user.shape == (32, 32) and out.logits is not None and out.logits.shape == (32, len(ITEMS) + 1)


def test_each_ablation_switch_changes_what_trains() -> None:
    def trainable(**switches: object) -> int:
        model = Cpl4RecModel(tiny(**switches))
        model.set_stage(PROMPT)
        return model.trainable_parameters()

    full = trainable()
    no_prompts = trainable(use_prompts=False)
    no_pfg = trainable(use_pfg=False)
    generator = sum(p.numel() for p in Cpl4RecModel(tiny()).generator.parameters())
    assert full - no_prompts == generator
    assert full - no_pfg == tiny().num_layers + 1  # the gate: one weight per layer output
    assert trainable(compactness=0.0) == full  # compactness changes the loss, not the parameters
    everything = sum(p.numel() for p in Cpl4RecModel(tiny()).parameters())
    assert full < 0.5 * everything  # prompt learning trains a fraction of the model


def test_compactness_penalty_is_zero_for_identical_prompts_within_the_bound() -> None:
    model = Cpl4RecModel(tiny(prompt_norm=1.0))
    same = torch.full((4, 2, 32), 0.1)  # norm 0.57 < 1
    assert float(model.compactness_penalty(same)) == pytest.approx(0.0)
    spread = same + torch.randn(4, 2, 32)
    assert float(model.compactness_penalty(spread)) > 0.0
    model_without = Cpl4RecModel(tiny(compactness=0.0))
    model_without.set_stage(PROMPT)
    ids, mask, targets = batch(8)
    torch.manual_seed(1)
    plain = model_without(ids, mask, labels=targets).loss
    assert torch.isfinite(plain)


def test_bad_configs_name_the_field() -> None:
    with pytest.raises(ValueError, match="target_behaviour"):
        tiny(target_behaviour=0)
    with pytest.raises(ValueError, match="stage"):
        tiny(stage="finetune")
    with pytest.raises(ValueError, match="action_item"):
        dataclasses.replace(tiny(), action_item=(99,) * len(tiny().action_item))


# -- the encoder (kind cpl4rec): registry, training loop, save/load, stages and switches -------------------


def write_vocabulary(path: Path, vocab: list[tuple[str, str | None]] = VOCAB) -> Path:
    """A run vocabulary file as the train job writes it (``vocabulary.json``)."""
    actions = [[b, i, b if i is None else f"{b} {i}"] for b, i in vocab]
    path.write_text(json.dumps({"catalogue": "tiny", "n_special": N_SPECIAL, "actions": actions}))
    return path


def encoder_params(vocabulary: Path, **overrides: object) -> dict[str, object]:
    return {
        "vocab_size": N_SPECIAL + len(VOCAB),
        "vocabulary_file": str(vocabulary),
        "hidden_size": 32,
        "num_layers": 2,
        "num_heads": 2,
        "max_len": 12,
        "dropout": 0.0,
        "num_prompts": 2,
        "prompt_hidden": 32,
        **overrides,
    }


def write_snapshot(directory: Path, n: int = 96) -> Path:
    """Training rows as Spark writes the snapshot: views of k, k+1, ... then buying the next item."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(5)
    rows = []
    for c in range(n):
        start = rng.randrange(len(ITEMS))
        views = [action("viewing", (start + s) % len(ITEMS)) for s in range(rng.randint(3, 6))]
        tokens = [*views, action("buying", (start + len(views)) % len(ITEMS))]
        rows.append({"customer_id": f"c{c:03d}", "tokens": tokens, "text": ""})
    schema = pa.schema([("customer_id", pa.string()), ("tokens", pa.list_(pa.int32())), ("text", pa.string())])
    directory.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), directory / "part-00000.parquet")
    (directory / "_SUCCESS").write_text("")
    return directory


def train_stage(tmp_path: Path, name: str, params: dict[str, object], steps: int = 12) -> Path:
    """Train through the training loop (one process, as each TorchDistributor rank runs it); the saved encoder."""
    from custembed.training.loop import train
    from custembed.training.spec import TrainSpec

    data = tmp_path / "data"
    if not data.exists():
        write_snapshot(data)
    spec = TrainSpec(
        data_path=str(data),
        output_dir=str(tmp_path / name / "encoder"),
        checkpoint_dir=str(tmp_path / name / "checkpoints"),
        encoder_kind="cpl4rec",
        encoder_params=params,
        epochs=4,
        max_steps=steps,
        batch_size=16,
        lr=3e-3,
        val_pct=20,
        log_every=4,
    )
    metrics = train(spec)
    assert metrics["steps"] == steps and "val_loss" in metrics and "hr@10" in metrics
    return tmp_path / name / "encoder"


def test_the_split_comes_from_the_catalogue_vocabulary(tmp_path: Path) -> None:
    from custembed.catalogue import load_catalogue, vocabulary_json
    from custembed.encoders.registry import build_encoder

    catalogue = load_catalogue("actions.yaml")  # system A's 8 behaviours x products
    (tmp_path / "vocabulary.json").write_text(vocabulary_json(catalogue))
    encoder = build_encoder(
        "cpl4rec",
        vocab_size=catalogue.vocab_size,
        vocabulary_file=str(tmp_path / "vocabulary.json"),
        hidden_size=16,
        num_heads=2,
        num_prompts=1,
        prompt_hidden=8,
    )
    network = encoder.network  # type: ignore[attr-defined]
    item, behaviour = network.action_item, network.action_behaviour
    buy_tv, repair_tv = catalogue.action_id("buying", "tv_oled"), catalogue.action_id("repairing", "tv_oled")
    assert item[buy_tv] == item[repair_tv] > 0 and behaviour[buy_tv] != behaviour[repair_tv]
    assert item[catalogue.no_action_id] == 0 and (item[:N_SPECIAL] == 0).all() and (behaviour[:N_SPECIAL] == 0).all()
    assert encoder.behaviours == catalogue.behaviours  # type: ignore[attr-defined]
    assert network.config.target_behaviour == catalogue.behaviours.index("buying") + 1
    assert len(item) == catalogue.vocab_size


def test_the_encoder_trains_saves_loads_and_scores_the_target_behaviour(tmp_path: Path) -> None:
    from custembed.encoders.registry import load_encoder

    vocabulary = write_vocabulary(tmp_path / "vocabulary.json")
    saved = train_stage(tmp_path, "pretrain", encoder_params(vocabulary))
    (tmp_path / "vocabulary.json").unlink()  # a saved encoder needs no vocabulary file: the split is in the weights
    encoder = load_encoder(saved)
    assert encoder.kind == "cpl4rec"
    again = load_encoder(saved)
    histories = [[action("viewing", 1), action("viewing", 2)], [action("viewing", 7)]]
    scores = encoder.score_next(histories)  # type: ignore[attr-defined]
    assert scores.shape == (2, N_SPECIAL + len(VOCAB))
    assert torch.equal(scores, again.score_next(histories))  # type: ignore[attr-defined]
    buying = torch.tensor([action("buying", k) for k in range(len(ITEMS))])
    assert torch.isfinite(scores[:, buying]).all()
    others = torch.ones(scores.size(1), dtype=torch.bool)
    others[buying] = False
    assert torch.isinf(scores[:, others]).all()  # only target-behaviour actions score
    inputs = encoder.inputs(tokens=histories)
    assert torch.equal(encoder.embed(inputs), again.embed(inputs))


def test_the_prompt_stage_loads_the_backbone_and_leaves_it_unchanged(tmp_path: Path) -> None:
    from custembed.encoders.cpl4rec import PROMPT_PARTS
    from custembed.encoders.registry import load_encoder

    vocabulary = write_vocabulary(tmp_path / "vocabulary.json")
    backbone_dir = train_stage(tmp_path, "pretrain", encoder_params(vocabulary))
    prompt_params = encoder_params(vocabulary, stage="prompt", backbone="pretrain", backbone_dir=str(backbone_dir))
    adapted_dir = train_stage(tmp_path, "prompt", prompt_params, steps=16)
    backbone = load_encoder(backbone_dir).network.state_dict()  # type: ignore[attr-defined]
    adapted = load_encoder(adapted_dir)
    assert adapted.config.stage == "prompt"
    after = adapted.network.state_dict()  # type: ignore[attr-defined]
    for name, tensor in backbone.items():
        if name.split(".")[0] not in PROMPT_PARTS:
            assert torch.equal(tensor, after[name]), name  # frozen: what was loaded is what was saved
    assert not torch.equal(backbone["gate"], after["gate"])  # the prompt parts trained
    with pytest.raises(ValueError, match="hidden_size=16 differs from the backbone's 32"):
        build_cpl4rec({**prompt_params, "hidden_size": 16})


def build_cpl4rec(params: dict[str, object]) -> object:
    from custembed.encoders.registry import build_encoder

    return build_encoder("cpl4rec", **params)


def test_each_switch_of_the_encoder_changes_the_trainable_count(tmp_path: Path) -> None:
    vocabulary = write_vocabulary(tmp_path / "vocabulary.json")
    torch.manual_seed(0)
    backbone = build_cpl4rec(encoder_params(vocabulary))
    backbone.save(tmp_path / "backbone")  # type: ignore[attr-defined]
    base = encoder_params(vocabulary, stage="prompt", backbone="b", backbone_dir=str(tmp_path / "backbone"))

    def counts(**switches: object) -> tuple[int, int]:
        encoder = build_cpl4rec({**base, **switches})
        return encoder.trainable_parameters(), encoder.total_parameters()  # type: ignore[attr-defined]

    full, total = counts()
    network = Cpl4RecModel(tiny())
    generator = sum(p.numel() for p in network.generator.parameters())
    backbone_size = sum(
        p.numel() for n, p in network.named_parameters() if n.split(".")[0] not in ("generator", "gate", "task_head")
    )
    mlm_head = sum(p.numel() for p in network.mlm_head.parameters())
    assert counts(use_prompts=False)[0] == full - generator
    assert counts(use_pfg=False)[0] == full - network.config.num_layers - 1
    assert counts(compactness=0.0)[0] == full
    assert counts(finetune_backbone=True)[0] == full + backbone_size - mlm_head  # the unused MLM head stays frozen
    assert counts(finetune_backbone=True)[1] == total and full < 0.5 * total
    pretrain = backbone.trainable_parameters()  # type: ignore[attr-defined]
    assert pretrain == backbone_size


def test_bad_encoder_settings_name_the_field(tmp_path: Path) -> None:
    vocabulary = write_vocabulary(tmp_path / "vocabulary.json")
    with pytest.raises(ValueError, match="stage prompt needs backbone"):
        build_cpl4rec(encoder_params(vocabulary, stage="prompt"))
    with pytest.raises(ValueError, match="target_behaviour 'renting'"):
        build_cpl4rec(encoder_params(vocabulary, target_behaviour="renting"))
    with pytest.raises(ValueError, match="needs vocabulary_file"):
        build_cpl4rec(encoder_params(vocabulary, vocabulary_file=""))
    with pytest.raises(ValueError, match="has 28 ids, vocab_size is 30"):
        build_cpl4rec(encoder_params(vocabulary, vocab_size=30))

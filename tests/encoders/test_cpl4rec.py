"""CPL4Rec (our reading): pre-training and prompt stages learn, ablation switches change what trains."""

from __future__ import annotations

import dataclasses
import random

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

"""CoLES specifics: config checks, view sampling, the contrastive loss, time gaps, training end to end."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from custembed.encoders import ColesConfig, ColesEncoder, SequenceEncoder, load_encoder
from custembed.encoders.coles import AMOUNTS, GAPS, contrastive_terms, sample_views
from custembed.training import TrainSpec, train

MakeEncoder = Callable[..., SequenceEncoder[Any]]
TINY = {
    "vocab_size": 33,
    "hidden_size": 32,
    "embedding_dim": 16,
    "max_len": 24,
    "views": 4,
    "min_view_len": 4,
    "max_view_len": 10,
    "dropout": 0.0,
}


def coles(**overrides: Any) -> ColesEncoder:
    torch.manual_seed(0)
    return ColesEncoder(ColesConfig(**{**TINY, **overrides}))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"vocab_size": 3}, "vocab_size"),
        ({"vocab_size": 40, "views": 1}, "views must be at least 2"),
        ({"vocab_size": 40, "min_view_len": 9, "max_view_len": 8}, "min_view_len=9"),
        ({"vocab_size": 40, "margin": 0.0}, "margin"),
        ({"vocab_size": 40, "margin": 2.5}, "margin"),
        ({"vocab_size": 40, "neg_count": -1}, "neg_count"),
        ({"vocab_size": 40, "pooling": "max"}, "'max'"),
    ],
)
def test_config_rejects_bad_values(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ColesConfig(**params)


def test_views_are_seeded_slices_of_the_allowed_lengths() -> None:
    lengths = torch.tensor([3, 10, 25, 40, 100])
    starts, sizes = sample_views(lengths, views=50, min_len=5, max_len=20, generator=torch.Generator().manual_seed(0))
    assert starts.shape == sizes.shape == (5, 50)
    ends = starts + sizes
    assert (starts >= 0).all() and (ends <= lengths.unsqueeze(1)).all()
    assert (sizes[0] == 3).all()  # shorter than min_len: the whole sequence
    assert (sizes[1:] >= 5).all() and (sizes[1] <= 10).all() and (sizes[2:] <= 20).all()
    # every allowed length and (for a long sequence) starts across the whole range come up
    assert set(sizes[4].tolist()) == set(range(5, 21))
    assert starts[4].min() < 10 and starts[4].max() > 70
    again = sample_views(lengths, views=50, min_len=5, max_len=20, generator=torch.Generator().manual_seed(0))
    other = sample_views(lengths, views=50, min_len=5, max_len=20, generator=torch.Generator().manual_seed(1))
    assert torch.equal(starts, again[0]) and torch.equal(sizes, again[1])
    assert not torch.equal(starts, other[0])


def test_recent_views_end_at_the_last_token_in_about_their_share() -> None:
    lengths = torch.tensor([3, 40, 100, 100])
    kwargs: dict[str, Any] = {"views": 400, "min_len": 5, "max_len": 20}
    plain = sample_views(lengths, generator=torch.Generator().manual_seed(0), **kwargs)
    starts, sizes = sample_views(lengths, generator=torch.Generator().manual_seed(0), recent_share=0.5, **kwargs)
    assert torch.equal(sizes, plain[1])  # the sizes are those of the plain draw
    at_end = (starts + sizes) == lengths.unsqueeze(1)
    assert at_end[0].all()  # a short sequence is its own suffix
    share = at_end[2:].float().mean().item()
    assert 0.4 < share < 0.6, share  # plain views of a long sequence end at its last token rarely
    moved = starts != plain[0]
    assert torch.equal(moved, at_end & ~((plain[0] + plain[1]) == lengths.unsqueeze(1)))


def test_mask_cuts_contiguous_views_with_their_gaps_and_labels_them_by_customer() -> None:
    encoder = coles()
    rng = random.Random(0)
    tokens = [[rng.randrange(3, 33) for _ in range(n)] for n in (2, 7, 15, 24)]
    gaps = [[rng.randrange(0, 90) for _ in seq] for seq in tokens]
    inputs = encoder.inputs(tokens=tokens, gaps=gaps)
    views = encoder.mask(inputs, torch.Generator().manual_seed(3))
    n_views = encoder.config.views
    assert views["labels"].tolist() == [row for row in range(4) for _ in range(n_views)]
    for index, label in enumerate(views["labels"].tolist()):
        size = int(views["attention_mask"][index].sum())
        assert views["attention_mask"][index, :size].all()  # right-padded
        ids = views["input_ids"][index, :size].tolist()
        days = views[GAPS][index, :size].tolist()
        seq, seq_gaps = tokens[label], gaps[label]
        assert size == len(seq) if len(seq) < 4 else 4 <= size <= 10
        starts = [s for s in range(len(seq) - size + 1) if seq[s : s + size] == ids and seq_gaps[s : s + size] == days]
        assert starts, (label, ids)  # a contiguous slice, its gaps cut at the same place
        assert (views["input_ids"][index, size:] == 0).all() and (views[GAPS][index, size:] == 0).all()
    again = encoder.mask(inputs, torch.Generator().manual_seed(3))
    assert all(torch.equal(views[name], again[name]) for name in views)


def reference_terms(
    vectors: np.ndarray, labels: list[int], margin: float, neg_count: int
) -> tuple[list[float], list[bool]]:
    """The per-view loss and nearest-neighbour hit written out pair by pair."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    n = len(labels)
    distance = np.array([[np.linalg.norm(unit[i] - unit[j]) for j in range(n)] for i in range(n)])
    losses, hits = [], []
    for i in range(n):
        positives = [distance[i, j] ** 2 for j in range(n) if j != i and labels[j] == labels[i]]
        negatives = sorted(distance[i, j] for j in range(n) if labels[j] != labels[i])[:neg_count]
        terms = positives + [max(0.0, margin - d) ** 2 for d in negatives]
        losses.append(sum(terms) / len(terms))
        nearest = min((j for j in range(n) if j != i), key=lambda j: distance[i, j])
        hits.append(labels[nearest] == labels[i])
    return losses, hits


def test_contrastive_terms_match_a_pair_by_pair_reference() -> None:
    generator = np.random.default_rng(0)
    labels = [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    vectors = generator.normal(size=(12, 8)) + np.repeat(generator.normal(size=(4, 8)), 3, axis=0)
    for margin, neg_count in ((0.5, 5), (1.5, 2), (2.0, 9)):
        per_view, hit = contrastive_terms(
            torch.tensor(vectors, dtype=torch.float32), torch.tensor(labels), margin=margin, neg_count=neg_count
        )
        losses, hits = reference_terms(vectors, labels, margin, min(neg_count, 9))
        assert per_view.tolist() == pytest.approx(losses, abs=1e-5)
        assert hit.tolist() == hits
    assert 0 < sum(hits) < 12  # the reference case is neither trivial nor hopeless


def test_time_gaps_are_inputs_and_required_when_used() -> None:
    tokens, gaps = [[3, 4, 5, 6]], [[0, 1, 30, 2]]
    encoder = coles()
    with pytest.raises(ValueError, match="gaps=None.*rerun `custembed sequences`"):
        encoder.inputs(tokens=tokens)
    with pytest.raises(ValueError, match="4 tokens but gaps of length 3"):
        encoder.inputs(tokens=tokens, gaps=[[0, 1, 2]])
    base = encoder.embed(encoder.inputs(tokens=tokens, gaps=gaps))
    moved = encoder.embed(encoder.inputs(tokens=tokens, gaps=[[0, 1, 300, 2]]))
    assert not torch.allclose(base, moved)

    plain = coles(use_time_gaps=False)
    assert plain.input_columns == ("tokens",) and encoder.input_columns == ("tokens", GAPS)
    assert GAPS not in plain.inputs(tokens=tokens, gaps=gaps)
    assert torch.equal(plain.embed(plain.inputs(tokens=tokens)), plain.embed(plain.inputs(tokens=tokens, gaps=gaps)))
    # left truncation keeps the gaps of the kept tokens
    short = coles(max_len=2).inputs(tokens=tokens, gaps=gaps)
    assert short["input_ids"].tolist() == [[5, 6]] and short[GAPS].tolist() == [[30, 2]]


def test_the_embedding_is_the_gru_state_after_the_last_action() -> None:
    encoder = coles()
    inputs = encoder.inputs(tokens=[[3, 4, 5], [6, 7, 8, 9, 10]], gaps=[[0, 1, 1], [0, 2, 2, 2, 2]])
    vectors = encoder.embed(inputs)
    encoder.model.eval()
    with torch.no_grad():
        alone = [
            encoder.model(
                input_ids=ids[None, :n], attention_mask=torch.ones(1, n, dtype=torch.long), gaps=days[None, :n]
            ).last_hidden_state
            for ids, days, n in zip(inputs["input_ids"], inputs[GAPS], (3, 5), strict=True)
        ]
    assert torch.allclose(vectors[0], alone[0][0, -1], atol=1e-6)
    assert torch.allclose(vectors[1], alone[1][0, -1], atol=1e-6)


def customer_patterns(n: int, seed: int) -> tuple[list[list[int]], list[list[int]]]:
    """Customers with their own habits: three favourite actions and a typical gap, in random order."""
    rng = random.Random(seed)
    tokens, gaps = [], []
    for _ in range(n):
        favourites = rng.sample(range(3, 33), 3)
        rhythm = rng.choice([1, 7, 30, 90])
        length = rng.randint(12, 24)
        tokens.append([rng.choice(favourites) for _ in range(length)])
        gaps.append([0, *(max(0, rhythm + rng.randint(-1, 1)) for _ in range(length - 1))])
    return tokens, gaps


def test_loss_falls_and_views_find_their_customer_on_distinct_patterns() -> None:
    encoder = coles()
    train_tokens, train_gaps = customer_patterns(256, seed=0)
    held_tokens, held_gaps = customer_patterns(32, seed=1)
    held_out = encoder.mask(encoder.inputs(tokens=held_tokens, gaps=held_gaps), torch.Generator().manual_seed(0))

    def held_out_figures() -> tuple[float, float]:
        stats = encoder.masked_token_stats(held_out)
        return stats.loss_sum / stats.count, stats.correct / stats.count

    loss_before, recall_before = held_out_figures()
    optimizer = torch.optim.AdamW(encoder.model.parameters(), lr=3e-3)
    generator, rng = torch.Generator().manual_seed(1), random.Random(2)
    encoder.model.train()
    for _ in range(120):
        rows = rng.sample(range(256), 16)
        batch = encoder.inputs(tokens=[train_tokens[r] for r in rows], gaps=[train_gaps[r] for r in rows])
        loss = encoder.loss(encoder.mask(batch, generator))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    loss_after, recall_after = held_out_figures()
    assert loss_after < 0.6 * loss_before, (loss_before, loss_after)
    assert recall_after >= 0.9 and recall_after > recall_before, (recall_before, recall_after)


def test_save_then_load_gives_the_same_embeddings(tmp_path: Path) -> None:
    encoder = coles(pooling="mean")
    with torch.no_grad():
        for parameter in encoder.model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    tokens, gaps = customer_patterns(6, seed=4)
    encoder.save(tmp_path / "saved")
    loaded = load_encoder(tmp_path / "saved")
    assert isinstance(loaded, ColesEncoder) and loaded.config == encoder.config
    inputs = encoder.inputs(tokens=tokens, gaps=gaps)
    assert torch.equal(encoder.embed(inputs), loaded.embed(inputs))
    assert torch.equal(encoder.embed(inputs, "last"), loaded.embed(inputs, "last"))


def test_amounts_are_inputs_required_when_used_and_cut_into_the_views() -> None:
    tokens, gaps, amounts = [[3, 4, 5, 6], [7, 8]], [[0, 1, 30, 2], [0, 4]], [[0, 90, 120, 7], [200, 0]]
    encoder = coles(use_amounts=True)
    assert encoder.input_columns == ("tokens", GAPS, AMOUNTS)
    assert coles(use_amounts=True, use_time_gaps=False).input_columns == ("tokens", AMOUNTS)
    with pytest.raises(ValueError, match="amounts=None.*rerun `custembed sequences`"):
        encoder.inputs(tokens=tokens, gaps=gaps)
    with pytest.raises(ValueError, match="2 tokens but amounts of length 1"):
        encoder.inputs(tokens=tokens, gaps=gaps, amounts=[[0, 1, 2, 3], [5]])
    inputs = encoder.inputs(tokens=tokens, gaps=gaps, amounts=amounts)
    assert inputs[AMOUNTS].tolist() == [[0, 90, 120, 7], [200, 0, 0, 0]]  # right-padded with 0
    base = encoder.embed(inputs)
    moved = encoder.embed(encoder.inputs(tokens=tokens, gaps=gaps, amounts=[[0, 90, 10, 7], [200, 0]]))
    assert not torch.allclose(base[0], moved[0]) and torch.allclose(base[1], moved[1])
    # the views cut the amounts where they cut the tokens
    views = encoder.mask(inputs, torch.Generator().manual_seed(1))
    for index, label in enumerate(views["labels"].tolist()):
        size = int(views["attention_mask"][index].sum())
        ids, values = views["input_ids"][index, :size].tolist(), views[AMOUNTS][index, :size].tolist()
        seq, seq_amounts = tokens[label], amounts[label]
        assert any(seq[s : s + size] == ids and seq_amounts[s : s + size] == values for s in range(len(seq)))
    # an encoder without amounts ignores them
    plain = coles()
    assert AMOUNTS not in plain.inputs(tokens=tokens, gaps=gaps, amounts=amounts)


def write_sequences(directory: Path, n: int) -> Path:
    """``n`` customers of :func:`customer_patterns` as the training snapshot's Parquet files
    (amounts: each action's own bucket)."""
    tokens, gaps = customer_patterns(n, seed=5)
    schema = pa.schema(
        [
            ("customer_id", pa.string()),
            ("tokens", pa.list_(pa.int32())),
            ("text", pa.string()),
            (GAPS, pa.list_(pa.int32())),
            (AMOUNTS, pa.list_(pa.int32())),
        ]
    )
    rows = [
        {"customer_id": f"c{i:04d}", "tokens": t, "text": " ".join(map(str, t)), GAPS: g, AMOUNTS: [7 * a for a in t]}
        for i, (t, g) in enumerate(zip(tokens, gaps, strict=True))
    ]
    directory.mkdir(parents=True)
    for part in range(2):
        table = pa.Table.from_pylist(rows[part::2], schema=schema)
        pq.write_table(table, directory / f"part-{part:05d}.parquet", row_group_size=32)
    (directory / "_SUCCESS").write_text("")
    return directory


def spec_for(tmp_path: Path, data: Path, name: str, **overrides: Any) -> TrainSpec:
    values: dict[str, Any] = {
        "data_path": str(data),
        "output_dir": str(tmp_path / name / "encoder"),
        "checkpoint_dir": str(tmp_path / name / "checkpoints"),
        "encoder_kind": "coles",
        "encoder_params": dict(TINY),
        "epochs": 2,
        "batch_size": 16,
        "lr": 3e-3,
        "warmup_steps": 3,
        "checkpoint_every": 100,
        "log_every": 4,
        "val_pct": 20,
        "seed": 0,
    }
    return TrainSpec(**{**values, **overrides})


def test_the_training_loop_trains_validates_resumes_and_saves(tmp_path: Path) -> None:
    data = write_sequences(tmp_path / "data", 200)
    result = train(spec_for(tmp_path, data, "full"))
    assert result["steps"] > 0 and result["epochs_completed"] == 2
    assert math.isfinite(result["val_loss"]) and 0.0 <= result["val_accuracy"] <= 1.0
    assert "hr@10" not in result  # no item ranking
    saved = load_encoder(tmp_path / "full" / "encoder")
    assert saved.kind == "coles" and saved.embed(saved.inputs(tokens=[[3, 4]], gaps=[[0, 5]])).shape == (1, 32)

    # stopped after 3 steps and resumed: the same views, so the same weights as the uninterrupted run
    train(spec_for(tmp_path, data, "resumed", max_steps=3))
    resumed = train(spec_for(tmp_path, data, "resumed"))
    assert resumed["start_step"] == 3 and resumed["weights_sha256"] == result["weights_sha256"]
    assert resumed["val_loss"] == pytest.approx(result["val_loss"], abs=1e-9)  # fixed validation views


def test_amounts_flow_from_the_snapshot_through_training_to_the_embedding_udf(tmp_path: Path) -> None:
    import pandas as pd

    from custembed.encoders import saved_input_columns
    from custembed.udfs.embed import embed_frame

    data = write_sequences(tmp_path / "data", 64)
    params = {**TINY, "use_amounts": True}
    result = train(spec_for(tmp_path, data, "amounts", encoder_params=params, epochs=1))
    assert result["steps"] > 0 and math.isfinite(result["val_loss"])
    path = tmp_path / "amounts" / "encoder"
    assert saved_input_columns(path) == ("tokens", GAPS, AMOUNTS)
    saved = load_encoder(path)
    tokens, gaps = customer_patterns(4, seed=8)
    amounts = [[7 * a for a in t] for t in tokens]
    frame = pd.DataFrame({"customer_id": list("abcd"), "tokens": tokens, GAPS: gaps, AMOUNTS: amounts})
    vectors = embed_frame(saved, frame, batch_size=3)
    expected = saved.embed(saved.inputs(tokens=tokens, gaps=gaps, amounts=amounts)).numpy()
    assert np.allclose(vectors, expected, atol=1e-5)
    frame.at[2, AMOUNTS] = None  # a partition written before the amounts column existed
    with pytest.raises(ValueError, match="reads amounts.*rerun `custembed sequences`"):
        embed_frame(saved, frame, batch_size=3)


def test_the_embedding_udf_core_reads_the_gaps_column() -> None:
    import pandas as pd

    from custembed.udfs.embed import embed_frame

    encoder = coles()
    tokens, gaps = customer_patterns(5, seed=6)
    frame = pd.DataFrame({"customer_id": [f"c{i}" for i in range(5)], "tokens": tokens, "text": "", GAPS: gaps})
    vectors = embed_frame(encoder, frame, batch_size=2)
    assert np.allclose(vectors, encoder.embed(encoder.inputs(tokens=tokens, gaps=gaps)).numpy(), atol=1e-5)
    frame.at[3, GAPS] = None  # a partition written before the gaps column existed
    with pytest.raises(ValueError, match="rerun `custembed sequences`"):
        embed_frame(encoder, frame, batch_size=2)

"""The encoder registry, the one-way imports it allows, and the hooks the training loop calls."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import custembed.encoders
from custembed.encoders import RankingMetrics, SequenceEncoder, encoder_class, encoder_classes, load_encoder
from custembed.encoders.registry import ENCODERS

MakeEncoder = Callable[..., SequenceEncoder[Any]]
ToInputs = Callable[[SequenceEncoder[Any], list[list[int]]], dict[str, torch.Tensor]]
SIBLINGS = {
    "custembed.encoders.bert4rec",
    "custembed.encoders.hf_mlm",
    "custembed.encoders.causal_lm",
    "custembed.encoders.coles",
    "custembed.encoders.cpl4rec",
    "custembed.encoders.journeys_gpt2",
    "custembed.encoders.journeys_lstm",
}


def modules_after_import(statement: str) -> set[str]:
    """The ``custembed`` and ``torch`` modules a fresh interpreter holds after ``statement``."""
    code = f"{statement}\nimport sys\nprint('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return {m for m in out.split() if m.startswith(("custembed", "torch"))}


def test_importing_one_encoder_imports_no_sibling() -> None:
    loaded = modules_after_import("import custembed.encoders.bert4rec")
    assert "custembed.encoders.bert4rec" in loaded
    assert not loaded & (SIBLINGS - {"custembed.encoders.bert4rec"})
    assert "custembed.encoders.registry" not in loaded  # the registry sits on top, nothing below needs it


def test_base_and_masking_know_no_concrete_encoder() -> None:
    loaded = modules_after_import("import custembed.encoders.base, custembed.encoders.masking")
    assert not loaded & SIBLINGS


def test_config_imports_neither_torch_nor_encoders() -> None:
    loaded = modules_after_import("import custembed.config")
    assert not {m for m in loaded if m == "torch" or m.startswith("custembed.encoders")}


def test_registry_round_trip() -> None:
    classes = encoder_classes()
    assert list(classes) == list(ENCODERS)
    for kind, cls in classes.items():
        assert encoder_class(kind) is cls and cls.kind == kind
        module, _, name = ENCODERS[kind].partition(":")
        assert (cls.__module__, cls.__name__) == (module, name)


def test_unknown_kind_names_the_known_ones() -> None:
    with pytest.raises(
        ValueError,
        match=r"'word2vec'.*\['bert4rec', 'causal_lm', 'coles', 'cpl4rec', 'journeys_gpt2', 'journeys_lstm', 'mlm', "
        r"'sasrec'\]",
    ):
        encoder_class("word2vec")


@pytest.mark.parametrize("kind", sorted(ENCODERS))
def test_load_encoder_dispatches_on_the_saved_kind(kind: str, make_encoder: MakeEncoder, tmp_path: Path) -> None:
    make_encoder(kind).save(tmp_path / kind)
    assert type(load_encoder(tmp_path / kind)) is encoder_class(kind)


def test_package_exports_resolve_lazily() -> None:
    for name in custembed.encoders.__all__:
        assert getattr(custembed.encoders, name) is not None
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = custembed.encoders.no_such_name  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", sorted(ENCODERS))
def test_ranking_metrics_hook(kind: str, make_encoder: MakeEncoder, to_inputs: ToInputs) -> None:
    encoder = make_encoder(kind)
    inputs = to_inputs(encoder, [[1, 2, 3, 4], [5, 6, 7], [8, 9]])
    ranking = encoder.ranking_metrics(inputs, 5)
    if kind not in ("bert4rec", "sasrec", "cpl4rec"):
        assert ranking is None  # free-text and contrastive models rank no item catalogue
        return
    reference = encoder.next_action_metrics(inputs, k=5)
    assert isinstance(ranking, RankingMetrics)
    # no no_action_id configured: every target is an action, none left out
    assert ranking == RankingMetrics(
        hit_rate=reference["hr@5"], ndcg=reference["ndcg@5"], count=3, no_action_share=0.0, targets=3
    )


@pytest.mark.parametrize("use_time_gaps", [False, True])
def test_the_columns_a_saved_encoder_reads_come_from_its_metadata(tmp_path: Path, use_time_gaps: bool) -> None:
    # the embed job selects these before shipping rows to the Python workers, without loading weights
    from custembed.encoders import build_encoder, saved_input_columns

    path = tmp_path / "encoder"
    build_encoder(
        "bert4rec", vocab_size=40, hidden_size=16, num_layers=1, num_heads=2, max_len=16, use_time_gaps=use_time_gaps
    ).save(path)
    expected = ("tokens", "gaps") if use_time_gaps else ("tokens",)
    assert saved_input_columns(path) == expected == load_encoder(path).input_columns
    assert encoder_class("mlm").columns_read(False) == ("text",)
    with pytest.raises(ValueError, match="is not a saved encoder"):
        saved_input_columns(tmp_path)

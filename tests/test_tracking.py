"""The promotion rule: a new version takes the alias only when the figure its training followed is not worse."""

from __future__ import annotations

import pytest

from custembed.tracking import promotion


def test_if_better_on_the_loss_wants_it_lower() -> None:
    assert promotion("if_better", {"val_loss": 2.0, "champion_val_loss": 2.5}, "3")[0]
    taken, why = promotion("if_better", {"val_loss": 2.6, "champion_val_loss": 2.5}, "3")
    assert not taken and why == "val_loss 2.6000 > 2.5000 of version 3 on the same held-out customers"


def test_if_better_on_a_ranking_figure_wants_it_higher() -> None:
    # a model kept for its NDCG has a higher loss than a champion kept for its loss: the NDCG decides
    metrics = {"val_loss": 8.4, "champion_val_loss": 8.2, "ndcg@10": 0.052, "champion_ndcg@10": 0.046}
    taken, why = promotion("if_better", metrics, "3", metric="ndcg@10")
    assert taken and why == "ndcg@10 0.0520 >= 0.0460 of version 3 on the same held-out customers"
    assert not promotion("if_better", metrics, "3")[0]
    assert not promotion("if_better", {**metrics, "ndcg@10": 0.04}, "3", metric="ndcg@10")[0]


def test_missing_figures_and_the_other_policies() -> None:
    assert promotion("if_better", {"val_loss": 2.0}, None) == (True, "no version holds the alias yet")
    taken, why = promotion("if_better", {"val_loss": 2.0}, "3", metric="hr@10")
    assert not taken and why.startswith("no hr@10 of both this version and version 3")
    assert promotion("always", {}, "3") == (True, "promote policy is 'always'")
    with pytest.raises(ValueError, match="promote policy must be one of"):
        promotion("sometimes", {}, "3")

"""Which registered encoder an embedding run may use: none trained on data after its feature cutoff."""

from __future__ import annotations

from pathlib import Path

import pytest

from custembed.config import ConfigError, TrackingConfig
from custembed.tracking import TAG_CUTOFF, Tracking, tracking_for


def _register(tracking: Tracking, tmp_path: Path, cutoffs: list[str | None]) -> None:
    client = tracking.client()
    name = tracking.model_name("bert4rec")
    client.create_registered_model(name)
    for i, cutoff in enumerate(cutoffs):
        source = tmp_path / f"encoder-{i + 1}"
        source.mkdir()
        (source / "weights.txt").write_text(f"version {i + 1}")
        tags = {TAG_CUTOFF: cutoff} if cutoff else {}
        client.create_model_version(name, str(source), tags=tags)
    client.set_registered_model_alias(name, "champion", str(len(cutoffs)))


def test_a_backfill_embeds_with_the_newest_version_trained_before_its_cutoff(tmp_path: Path) -> None:
    from custembed.jobs.embed import registered_encoder

    tracking = tracking_for(TrackingConfig(model_prefix="versions"), str(tmp_path / "lake"))
    _register(tracking, tmp_path, ["2023-03-31", "2023-04-30", "2023-06-30"])

    # the champion (version 3) was trained up to June: a run whose features end in May gets version 2
    model_dir, version = registered_encoder(tracking, "bert4rec", "champion", feature_cutoff="2023-05-31")
    assert version == "2" and (Path(model_dir) / "weights.txt").read_text() == "version 2"
    # up to date: the champion itself
    assert registered_encoder(tracking, "bert4rec", "champion", feature_cutoff="2023-06-30")[1] == "3"
    # asked by number for a version trained later: refused, naming what would do
    with pytest.raises(
        ConfigError, match="version 3 was trained on data up to 2023-06-30.*versions trained up to it: 2, 1"
    ):
        registered_encoder(tracking, "bert4rec", "3", feature_cutoff="2023-05-31")
    # nothing old enough
    with pytest.raises(ConfigError, match="no version is trained up to it"):
        registered_encoder(tracking, "bert4rec", "champion", feature_cutoff="2023-01-31")


def test_a_version_without_a_recorded_cutoff_is_used_and_said_so() -> None:
    from custembed.jobs.embed import eligible_version

    version, why = eligible_version([("1", {})], requested="1", by_alias=True, feature_cutoff="2023-05-31")
    assert version == "1" and "records no training cutoff" in why

"""What the journey model jobs share: which visits train and which are held out, and model names."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from custembed import schemas
from custembed.config import JourneysHoldoutConfig
from custembed.io import Lake
from custembed.jobs import journeys_frames as frames

JOURNEYS_TABLE = "journeys"


def journey_model_name(encoder_name: str, store: str, variant: str = "") -> str:
    """Registry name of a journey model: ``<encoder>-<store>`` (``-<variant>`` for transfer runs)."""
    return "-".join(part for part in (encoder_name, store, variant) if part)


def journeys_of(lake: Lake, *, day: str, store: str | None = None) -> DataFrame:
    """The journeys of one run date (and store)."""
    journeys = lake.read_partition(JOURNEYS_TABLE, day)
    return journeys if store is None else journeys.where(F.col(frames.STORE) == store)


def test_journeys(lake: Lake, holdout: JourneysHoldoutConfig, *, day: str, store: str | None = None) -> DataFrame:
    """The held-out test visits of one run date (and store): prompts and reference, never trained on."""
    return frames.split_holdout(
        journeys_of(lake, day=day, store=store), test_pct=holdout.test_pct, salt=holdout.salt, test=True
    )


def training_journeys(
    lake: Lake, holdout: JourneysHoldoutConfig, *, day: str, store: str, fraction: float = 1.0, seed: int = 0
) -> DataFrame:
    """The training visits of a store as training-snapshot rows (``customer_id`` = ``store:visit_id``).

    Test visits are left out; ``fraction`` keeps a seeded share of the rest (nested: 1/100 ⊂ 1/10).
    """
    journeys = frames.split_holdout(
        journeys_of(lake, day=day, store=store), test_pct=holdout.test_pct, salt=holdout.salt, test=False
    )
    journeys = frames.sample_visits(journeys, fraction=fraction, seed=seed)
    return journeys.select(
        frames.visit_key().alias(schemas.CUSTOMER_ID),
        F.lit(None).cast("array<int>").alias("tokens"),
        F.col(frames.TEXT).alias("text"),
        F.lit(None).cast("array<int>").alias("gaps"),
        F.lit(None).cast("array<int>").alias("amounts"),
    )

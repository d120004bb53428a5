"""Stand-in journeys for the model side: six-character codes on a small grid, purchase markers."""

from __future__ import annotations

import random

import pytest

ZONES = ("dairy", "bakery", "produce")


def journey_texts(n: int, *, seed: int = 0, length: int = 24) -> list[str]:
    """Journeys that walk right along a row of cells, with a purchase now and then."""
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        row = rng.randrange(4)
        tokens = []
        for step in range(rng.randrange(length // 2, length)):
            tokens.append(f"A{row}B{step % 10}C{step // 10}")
            if rng.random() < 0.1:
                tokens.append(f"${rng.choice(ZONES)}")
        texts.append(" ".join(tokens))
    return texts


@pytest.fixture(scope="session")
def corpus() -> list[str]:
    return journey_texts(64)

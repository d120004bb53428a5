"""Small Parquet sequence tables laid out the way Spark writes them."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

WriteSequences = Callable[..., Path]


@pytest.fixture(autouse=True)
def _small_torch(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def themed_rows(n: int, seed: int, prefix: str = "c") -> list[dict[str, object]]:
    """Customers whose actions come from one of three themes of ten (BERT4Rec ids 3..32)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        theme = rng.randrange(3)
        actions = [10 * theme + rng.randrange(10) for _ in range(rng.randint(4, 12))]
        rows.append(
            {
                "customer_id": f"{prefix}{i:05d}",
                "tokens": [3 + a for a in actions],
                "text": " ".join(f"a{a}" for a in actions),
            }
        )
    return rows


@pytest.fixture
def write_sequences(tmp_path: Path) -> WriteSequences:
    """``write_sequences(n, files=2, row_group_size=32, partitions=("2024-01-01",))``.

    Writes ``n`` customers per partition under ``dt=<date>/`` split over ``files`` files,
    adds Spark's ``_SUCCESS`` marker and returns the directory.
    """

    def write(
        n: int,
        *,
        files: int = 2,
        row_group_size: int = 32,
        partitions: tuple[str, ...] = ("2024-01-01",),
        name: str = "sequences",
    ) -> Path:
        root = tmp_path / name
        schema = pa.schema([("customer_id", pa.string()), ("tokens", pa.list_(pa.int32())), ("text", pa.string())])
        for p, dt in enumerate(partitions):
            rows = themed_rows(n, seed=p, prefix=f"c{p}-")
            directory = root / f"dt={dt}"
            directory.mkdir(parents=True)
            for f in range(files):
                part = rows[f::files]
                table = pa.Table.from_pylist(part, schema=schema)
                pq.write_table(table, directory / f"part-{f:05d}.parquet", row_group_size=row_group_size)
        (root / "_SUCCESS").write_text("")
        return root

    return write

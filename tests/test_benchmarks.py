"""The benchmarks' synthetic inputs stay what the jobs read (the benchmarks themselves are not run in CI)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from benchmarks.bench_training import write_sequences
from custembed import schemas
from custembed.jobs.embed import ENCODER_INPUTS


def test_synthetic_sequences_carry_every_encoder_input(tmp_path: Path) -> None:
    # bench_embed broke when the embedding started reading `gaps` and these sequences had none
    write_sequences(tmp_path, 10, files=2)
    table = pq.read_table(tmp_path)
    assert table.num_rows == 10
    assert {schemas.CUSTOMER_ID, *ENCODER_INPUTS} <= set(table.column_names)
    columns = (table.column(c).to_pylist() for c in ("tokens", "gaps", "amounts"))
    for tokens, gaps, amounts in zip(*columns, strict=True):
        assert len(gaps) == len(tokens) and gaps[0] == 0 and min(gaps) >= 0
        assert len(amounts) == len(tokens) and 0 <= min(amounts) and max(amounts) <= 255

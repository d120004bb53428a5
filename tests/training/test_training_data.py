"""ParquetShardLoader: disjoint balanced shares, validation split, order, resume."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from custembed.training.data import ParquetShardLoader, val_bucket

WriteSequences = Callable[..., Path]


def customers(loader: ParquetShardLoader) -> list[str]:
    return loader.table["customer_id"].to_pylist()


def test_val_bucket_is_crc32_mod_100() -> None:
    # CRC-32 of "hello" is 0x3610A686 = 907060870 (the published check value family).
    assert val_bucket("hello") == 907060870 % 100
    assert val_bucket(123) == val_bucket("123")  # ids are bucketed by their text, as Spark casts


@pytest.mark.parametrize(("world_size", "files", "row_group_size"), [(1, 2, 32), (2, 3, 16), (3, 2, 25)])
def test_ranks_get_disjoint_balanced_shares_covering_the_data(
    write_sequences: WriteSequences, world_size: int, files: int, row_group_size: int
) -> None:
    path = write_sequences(200, files=files, row_group_size=row_group_size)
    shares = [
        customers(ParquetShardLoader(path, columns=("tokens",), batch_size=8, rank=r, world_size=world_size))
        for r in range(world_size)
    ]
    everyone = pq.read_table(path / "dt=2024-01-01")["customer_id"].to_pylist()
    assert sorted(c for share in shares for c in share) == sorted(everyone)
    sizes = [len(share) for share in shares]
    assert max(sizes) - min(sizes) <= row_group_size


def test_fewer_row_groups_than_ranks_falls_back_to_hashing(write_sequences: WriteSequences) -> None:
    path = write_sequences(60, files=1, row_group_size=1000)  # one row group for 4 ranks
    shares = [
        set(customers(ParquetShardLoader(path, columns=("tokens",), batch_size=4, rank=r, world_size=4)))
        for r in range(4)
    ]
    assert sum(len(s) for s in shares) == 60 and len(set.union(*shares)) == 60
    assert all(len(s) > 0 for s in shares)


def test_validation_customers_are_never_trained_on(write_sequences: WriteSequences) -> None:
    path = write_sequences(300)
    args = {"columns": ("tokens",), "batch_size": 8, "val_pct": 20}
    train = set(customers(ParquetShardLoader(path, split="train", **args)))
    held_out = set(customers(ParquetShardLoader(path, split="val", **args)))
    assert not train & held_out and len(train | held_out) == 300
    assert 30 < len(held_out) < 90
    assert all(val_bucket(c) < 20 for c in held_out) and all(val_bucket(c) >= 20 for c in train)


def test_order_is_fixed_per_epoch_and_changes_between_epochs(write_sequences: WriteSequences) -> None:
    path = write_sequences(100)
    loader = ParquetShardLoader(path, columns=("tokens",), batch_size=10, seed=3)
    again = ParquetShardLoader(path, columns=("tokens",), batch_size=10, seed=3)
    epoch0 = [b["customer_id"] for b in loader.batches(0)]
    assert epoch0 == [b["customer_id"] for b in again.batches(0)]
    epoch1 = [b["customer_id"] for b in loader.batches(1)]
    assert epoch0 != epoch1
    assert sorted(sum(epoch0, [])) == sorted(sum(epoch1, []))
    assert all(len(batch) == 10 for batch in epoch0)
    resumed = [b["customer_id"] for b in loader.batches(0, start=4)]
    assert resumed == epoch0[4:]
    assert len(list(loader.batches(0, limit=3))) == 3


def test_length_buckets_batch_similar_lengths_and_keep_every_row(write_sequences: WriteSequences) -> None:
    path = write_sequences(200, files=1)
    plain = ParquetShardLoader(path, columns=("tokens",), batch_size=10, seed=1)
    bucketed = ParquetShardLoader(path, columns=("tokens",), batch_size=10, seed=1, length_buckets=5)

    def spread(loader: ParquetShardLoader, epoch: int) -> float:
        widths = [max(map(len, b["tokens"])) - min(map(len, b["tokens"])) for b in loader.batches(epoch)]
        return sum(widths) / len(widths)

    assert spread(bucketed, 0) < spread(plain, 0)
    epoch0 = [b["customer_id"] for b in bucketed.batches(0)]
    assert sorted(sum(epoch0, [])) == sorted(sum((b["customer_id"] for b in plain.batches(0)), []))
    assert epoch0 == [b["customer_id"] for b in bucketed.batches(0)]  # fixed for (seed, epoch): resumable
    assert epoch0 != [b["customer_id"] for b in bucketed.batches(1)]
    assert [b["customer_id"] for b in bucketed.batches(0, start=3)] == epoch0[3:]


def test_batches_hold_python_lists_of_each_column(write_sequences: WriteSequences) -> None:
    path = write_sequences(20)
    batch = next(ParquetShardLoader(path, columns=("tokens", "text"), batch_size=4).batches(0))
    assert set(batch) == {"customer_id", "tokens", "text"}
    assert len(batch["tokens"]) == 4 and all(isinstance(t, int) for t in batch["tokens"][0])
    assert isinstance(batch["text"][0], str)


def test_drop_last_only_for_training(write_sequences: WriteSequences) -> None:
    path = write_sequences(25, files=1)
    train = ParquetShardLoader(path, columns=("tokens",), batch_size=10)
    held_out = ParquetShardLoader(path, columns=("tokens",), batch_size=10, split="val", val_pct=99)
    assert train.local_num_batches() == 2
    assert held_out.local_num_batches() == -(-held_out.num_rows // 10)
    assert sum(len(b["customer_id"]) for b in held_out.batches(0)) == held_out.num_rows


def test_hive_partition_filter_and_success_marker(write_sequences: WriteSequences) -> None:
    path = write_sequences(40, partitions=("2024-01-01", "2024-02-01"))
    assert (path / "_SUCCESS").is_file()
    everything = ParquetShardLoader(path, columns=("tokens",), batch_size=4)
    february = ParquetShardLoader(path, columns=("tokens",), batch_size=4, filter=pc.field("dt") == "2024-02-01")
    assert everything.num_rows == 80
    assert february.num_rows == 40 and all(c.startswith("c1-") for c in customers(february))


def test_null_and_empty_sequences_are_dropped(tmp_path: Path) -> None:
    table = pa.table(
        {
            "customer_id": ["a", "b", "c", "d"],
            "tokens": pa.array([[3, 4], [], None, [5]], pa.list_(pa.int32())),
            "text": ["a1", "", None, "a2"],
        }
    )
    pq.write_table(table, tmp_path / "part-0.parquet")
    assert customers(ParquetShardLoader(tmp_path, columns=("tokens",), batch_size=1)) == ["a", "d"]
    assert customers(ParquetShardLoader(tmp_path, columns=("text",), batch_size=1)) == ["a", "d"]


def test_bad_arguments_name_the_value(write_sequences: WriteSequences, tmp_path: Path) -> None:
    path = write_sequences(10)
    with pytest.raises(ValueError, match="lacks columns \\['labels'\\]"):
        ParquetShardLoader(path, columns=("labels",), batch_size=2).table  # noqa: B018
    with pytest.raises(ValueError, match="rank must be in \\[0, world_size=2\\), got 2"):
        ParquetShardLoader(path, columns=("tokens",), batch_size=2, rank=2, world_size=2)
    with pytest.raises(ValueError, match="'test'"):
        ParquetShardLoader(path, columns=("tokens",), batch_size=2, split="test")
    with pytest.raises(ValueError, match="cannot read"):
        ParquetShardLoader(tmp_path / "missing", columns=("tokens",), batch_size=2).table  # noqa: B018

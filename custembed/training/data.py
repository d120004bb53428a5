"""Reading the sequences Spark wrote, one share per training rank.

The input is a directory of Parquet files as Spark writes it (``_SUCCESS`` markers and
hive ``key=value/`` partition directories are understood) with the columns
``customer_id``, ``tokens`` (list<int>) and/or ``text`` (string), and ``gaps`` and
``amounts`` (list<int>) for encoders that read time gaps or amounts.

Sharding: row groups are the unit. They are listed in a fixed order and dealt to ranks
greedily by row count (largest first, to the rank holding the fewest rows), so every
rank computes the same plan without talking to the others and the shares are balanced.
When there are fewer row groups than ranks, every rank reads everything and keeps the
customers whose stable hash falls on it. Ranks can still end up with different row
counts: the caller truncates every rank to the smallest batch count
(``limit`` of :meth:`ParquetShardLoader.batches`) so that DDP never waits on a rank that
ran out of data.

Validation: customers with ``val_bucket(customer_id) < val_pct`` are held out and never
used for training. The bucket equals Spark's ``crc32(cast(customer_id as string)) % 100``,
so Spark jobs can pick the same customers.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from custembed import lakefs
from custembed.tables import AMOUNTS, CUSTOMER_ID, GAPS, TEXT, TOKENS  # the training snapshot's columns (registry)

log = logging.getLogger(__name__)

__all__ = [
    "AMOUNTS",
    "CUSTOMER_ID",
    "GAPS",
    "TEXT",
    "TOKENS",
    "ParquetShardLoader",
    "RowGroup",
    "assign_row_groups",
    "shard_of",
    "val_bucket",
]

SPLITS = ("train", "val")

Batch = dict[str, list[Any]]  # column name -> one value per sequence


def val_bucket(customer_id: object) -> int:
    """Bucket 0..99 of a customer; equals Spark's ``crc32(cast(customer_id as string)) % 100``."""
    return zlib.crc32(str(customer_id).encode("utf-8")) % 100


def shard_of(customer_id: object, world_size: int) -> int:
    """Rank that owns a customer when sharding by hash (salted, so independent of ``val_bucket``)."""
    return zlib.crc32(f"shard:{customer_id}".encode()) % world_size


@dataclass(frozen=True)
class RowGroup:
    """One Parquet row group: the unit of sharding."""

    path: str
    index: int
    num_rows: int
    fragment: ds.ParquetFileFragment


def assign_row_groups(row_groups: Sequence[RowGroup], world_size: int) -> list[list[RowGroup]]:
    """Deal row groups to ranks: largest first, each to the rank holding the fewest rows.

    Deterministic: ties go by path, row-group index, then lowest rank.
    """
    shares: list[list[RowGroup]] = [[] for _ in range(world_size)]
    loads = [0] * world_size
    for group in sorted(row_groups, key=lambda g: (-g.num_rows, g.path, g.index)):
        rank = min(range(world_size), key=lambda r: (loads[r], r))
        shares[rank].append(group)
        loads[rank] += group.num_rows
    for share in shares:
        share.sort(key=lambda g: (g.path, g.index))
    return shares


class ParquetShardLoader:
    """Batches of one rank's share of a Parquet directory, reshuffled every epoch.

    ``columns`` are the data columns wanted besides ``customer_id`` (e.g. ``("tokens",)``);
    rows where one of them is null or empty are dropped. ``split`` picks the training
    customers or the held-out ones (``val_pct`` percent of them). Each yielded batch is a
    dict of python lists, one entry per sequence.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        columns: Sequence[str],
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        filter: pc.Expression | None = None,  # pyarrow's own name for it
        split: str = "train",
        val_pct: int = 0,
        shuffle: bool | None = None,
        drop_last: bool | None = None,
        length_buckets: int = 0,
    ) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if not 0 <= val_pct <= 100:
            raise ValueError(f"val_pct must be in [0, 100], got {val_pct}")
        if not columns:
            raise ValueError("columns must name at least one data column, got none")
        if length_buckets < 0:
            raise ValueError(f"length_buckets must be 0 (off) or positive, got {length_buckets}")
        self.path = str(path)
        self.columns = tuple(columns)
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.filter = filter
        self.split = split
        self.val_pct = val_pct
        # Training batches are shuffled and all full; validation reads everything in order.
        self.shuffle = split == "train" if shuffle is None else shuffle
        self.drop_last = split == "train" if drop_last is None else drop_last
        self.length_buckets = length_buckets

    def _dataset(self) -> ds.Dataset:
        try:
            filesystem, path = lakefs.pyarrow_filesystem(self.path)
            dataset = ds.dataset(path, filesystem=filesystem, format="parquet", partitioning="hive")
        except (FileNotFoundError, pa.ArrowInvalid) as e:
            raise ValueError(f"cannot read Parquet sequences at {self.path}: {e}") from e
        missing = [c for c in (CUSTOMER_ID, *self.columns) if c not in dataset.schema.names]
        if missing:
            raise ValueError(f"{self.path} lacks columns {missing}; it has {dataset.schema.names}")
        return dataset

    def _row_groups(self, dataset: ds.Dataset) -> list[RowGroup]:
        groups = []
        for fragment in dataset.get_fragments(filter=self.filter):
            kwargs: dict[str, Any] = {"schema": dataset.schema}
            if self.filter is not None:
                kwargs["filter"] = self.filter  # prunes row groups by their statistics
            for piece in fragment.split_by_row_group(**kwargs):
                info = piece.row_groups[0]
                groups.append(RowGroup(piece.path, info.id, info.num_rows, piece))
        return sorted(groups, key=lambda g: (g.path, g.index))

    def _read(self, dataset: ds.Dataset, groups: Sequence[RowGroup]) -> pa.Table:
        wanted = [CUSTOMER_ID, *self.columns]
        schema = pa.schema([dataset.schema.field(c) for c in wanted])
        tables = [g.fragment.to_table(columns=wanted, filter=self.filter, schema=dataset.schema) for g in groups]
        return pa.concat_tables(tables).cast(schema) if tables else schema.empty_table()

    @cached_property
    def table(self) -> pa.Table:
        """This rank's rows of the chosen split (read on first use)."""
        dataset = self._dataset()
        groups = self._row_groups(dataset)
        if len(groups) >= self.world_size:
            table = self._read(dataset, assign_row_groups(groups, self.world_size)[self.rank])
        else:
            # Too few row groups to give each rank one: every rank reads all, keeps its customers.
            table = self._read(dataset, groups)
            owners = np.array([shard_of(c, self.world_size) for c in table[CUSTOMER_ID].to_pylist()])
            table = table.filter(pa.array(owners == self.rank, type=pa.bool_()))
        buckets = np.array([val_bucket(c) for c in table[CUSTOMER_ID].to_pylist()], dtype=np.int64)
        held_out = buckets < self.val_pct
        table = table.filter(pa.array(held_out if self.split == "val" else ~held_out, type=pa.bool_()))
        usable = pc.invert(pc.is_null(table[CUSTOMER_ID]))
        for column in self.columns:
            values = table[column]
            if pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
                usable = pc.and_(usable, pc.fill_null(pc.greater(pc.list_value_length(values), 0), False))
            elif pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
                usable = pc.and_(usable, pc.fill_null(pc.greater(pc.utf8_length(values), 0), False))
            else:
                usable = pc.and_(usable, pc.is_valid(values))
        kept = table.filter(usable).combine_chunks()
        log.info(
            "rank %d/%d: %d %s sequences from %d row groups in %s (%d dropped as empty)",
            self.rank,
            self.world_size,
            kept.num_rows,
            self.split,
            len(groups),
            self.path,
            table.num_rows - kept.num_rows,
        )
        return kept

    @property
    def num_rows(self) -> int:
        return int(self.table.num_rows)

    def local_num_batches(self) -> int:
        """Batches this rank can produce per epoch (before truncation to the other ranks)."""
        if self.drop_last:
            return self.num_rows // self.batch_size
        return math.ceil(self.num_rows / self.batch_size)

    @cached_property
    def lengths(self) -> np.ndarray:
        """Length of each row's first data column (list items or characters), ``[rows]``."""
        values = self.table[self.columns[0]]
        if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
            return np.asarray(pc.utf8_length(values).to_numpy(zero_copy_only=False), dtype=np.int64)
        return np.asarray(pc.list_value_length(values).to_numpy(zero_copy_only=False), dtype=np.int64)

    def order(self, epoch: int) -> np.ndarray:
        """Row order of ``epoch``: a permutation fixed by (seed, epoch, rank).

        With ``length_buckets`` = N, the shuffled rows are cut into windows of N batches,
        each window is sorted by length and cut into batches, and the batches are shuffled:
        a batch holds sequences of similar length, so little of it is padding, while every
        row still lands in a random batch of a random window each epoch.
        """
        if not self.shuffle:
            return np.arange(self.num_rows)
        rng = np.random.default_rng([self.seed, epoch, self.rank])
        order = rng.permutation(self.num_rows)
        if self.length_buckets == 0:
            return order
        window = self.length_buckets * self.batch_size
        full: list[np.ndarray] = []
        rest: list[np.ndarray] = []
        for start in range(0, len(order), window):
            chunk = order[start : start + window]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            for begin in range(0, len(chunk), self.batch_size):
                batch = chunk[begin : begin + self.batch_size]
                (full if len(batch) == self.batch_size else rest).append(batch)
        # full batches in random order; the one short batch, if any, last (drop_last drops it)
        shuffled = [full[i] for i in rng.permutation(len(full))]
        return np.concatenate(shuffled + rest) if shuffled or rest else order

    def batches(self, epoch: int, *, start: int = 0, limit: int | None = None) -> Iterator[Batch]:
        """Yield batches ``start, start + 1, ...`` of ``epoch``, stopping before ``limit``.

        ``start`` resumes mid-epoch: the order does not depend on it.
        """
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        stop = self.local_num_batches() if limit is None else min(limit, self.local_num_batches())
        order = self.order(epoch)
        for index in range(start, stop):
            rows = order[index * self.batch_size : (index + 1) * self.batch_size]
            yield self.table.take(pa.array(rows)).to_pydict()

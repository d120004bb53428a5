"""System C's next-item path end to end: user-item lines -> data-built vocabulary -> SASRec with
held-out targets -> evaluate-nextitem, recommend and rank."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

N_ITEMS = 24
RUN_DATE = "2000-12-31"
TINY = [
    "--conf",
    "nextitem.yaml",
    "--set",
    "train.num_processes=1",
    "--set",
    "train.encoders.sasrec.model.hidden_size=32",
    "--set",
    "train.encoders.sasrec.model.dropout=0.1",
    "--set",
    "train.encoders.sasrec.epochs=40",
    "--set",
    "train.encoders.sasrec.batch_size=32",
    "--set",
    "train.encoders.sasrec.lr=0.005",
    "--set",
    "train.encoders.sasrec.warmup_steps=0",
    "--set",
    "train.encoders.sasrec.early_stopping_patience=40",
    "--set",
    "nextitem.negatives=10",
    "--set",
    "nextitem.partitions=2",
    "--set",
    "nextitem.k=3",
]


def write_user_items(path: Path, users: int = 160, seed: int = 3) -> Path:
    """Users walking a cycle of items: after item i comes item i + 1 (mod N_ITEMS), learnable from order alone."""
    rng = random.Random(seed)
    lines = []
    for u in range(users):
        start = rng.randrange(N_ITEMS)
        lines += [f"u{u} i{(start + step) % N_ITEMS}" for step in range(rng.randint(5, 9))]
    lines.append("malformed line with many fields")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.slow
def test_user_items_to_recommendations_rank_and_metrics(spark, lake_sets, database, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from custembed.jobs import evaluate_nextitem, ingest, rank, recommend, sequences, train

    data = write_user_items(tmp_path / "items.txt")
    args = [*lake_sets, *TINY]
    assert ingest.main([*args, "--format", "user-item", "--input", str(data)]) == 0
    assert sequences.main(args) == 0
    spark.catalog.setCurrentDatabase(database)
    vocabulary = spark.table("vocabulary").where(f"dt = '{RUN_DATE}'").collect()
    assert sorted(r["id"] for r in vocabulary) == list(range(4, 4 + N_ITEMS))  # after pad, mask, unk, no action
    seqs = spark.table("sequences").where(f"dt = '{RUN_DATE}' and view = 'current'")
    assert seqs.count() == 160 and seqs.where("n_no_action > 0").count() == 0
    assert train.main([*args, "--encoder", "sasrec"]) == 0

    assert evaluate_nextitem.main([*args, "--encoder", "sasrec"]) == 0
    metrics = {
        (r["protocol"], r["metric"], r["k"]): r
        for r in spark.table("nextitem_metrics").where(f"dt = '{RUN_DATE}' and model = 'sasrec'").collect()
    }
    assert {p for p, _, _ in metrics} == {"full", "sampled-uniform", "sampled-popularity"}
    full10 = metrics[("full", "hr", 10)]
    assert full10["customers"] == 160 and full10["ci_low"] <= full10["value"] <= full10["ci_high"]
    # the last item follows from the one before it; chance over 24 items is 10/24 at HR@10, 1/24 at HR@1
    assert metrics[("full", "hr", 1)]["value"] > 0.5

    assert recommend.main([*args, "--encoder", "sasrec"]) == 0
    recs = spark.table("recommendations").where(f"dt = '{RUN_DATE}' and model = 'sasrec'")
    assert recs.count() == 160 * 3
    seen = {r["customer_id"]: set(r["tokens"]) for r in seqs.collect()}
    ids = {r["item"]: r["id"] for r in vocabulary}
    assert all(ids[r["item"]] not in seen[r["customer_id"]] for r in recs.collect())  # exclude_seen
    assert {r["rank"] for r in recs.collect()} == {1, 2, 3}

    candidates = tmp_path / "candidates.tsv"
    candidates.write_text("u1\ti3,I4,unknown\nnot a candidate line\nnobody\ti1\n")
    out = tmp_path / "scores.tsv"
    assert rank.main([*args, "--encoder", "sasrec", "--candidates", str(candidates), "--out", str(out)]) == 0
    rows = [line.split("\t") for line in out.read_text().splitlines()]
    assert [(u, i) for u, i, _ in rows] == [("u1", "i3"), ("u1", "I4"), ("u1", "unknown"), ("nobody", "i1")]
    assert float(rows[0][2]) > float("-inf") and float(rows[1][2]) > float("-inf")  # I4 matches i4
    assert float(rows[2][2]) == float("-inf") and float(rows[3][2]) == float("-inf")
    assert (tmp_path / "scores.tsv.rejects").read_text() == "no_tab\tnot a candidate line\n"
    # an existing output is not replaced unless asked
    assert rank.main([*args, "--encoder", "sasrec", "--candidates", str(candidates), "--out", str(out)]) == 2
    assert (
        rank.main([*args, "--encoder", "sasrec", "--candidates", str(candidates), "--out", str(out), "--overwrite"])
        == 0
    )

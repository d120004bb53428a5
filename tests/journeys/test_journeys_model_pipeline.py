"""Train (GPT-2, Markov) → generate → evaluate on a handful of journeys written by the test.

The journeys table is the data side's; here it is written directly with the contract's
columns. Generation's counts and the path rates need ``custembed.journeys.text`` /
``codes`` / ``layout`` (the data side): without them the module is skipped.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest

from custembed.config import Config, load_config
from tests.journeys.conftest import journey_texts

pytest.importorskip("custembed.journeys.text")

RUN = dt.date(2031, 3, 31)
PREFIX = "jpipe"


def _journeys(spark: Any, n: int = 80, store: str = "store_a") -> Any:
    """``n`` journeys of ``store``; store_b's walk other cells (codes the store_a texts never use)."""
    rows = [
        (
            store,
            f"v{i:04d}",
            text,
            len([t for t in text.split() if not t.startswith("$")]),
            text.count("$"),
            RUN.isoformat(),
        )
        for i, text in enumerate(journey_texts(n, seed=5))
    ]
    if store != "store_a":
        rows = [(store, visit, text.replace("A", "G"), *rest) for _, visit, text, *rest in rows]
    return spark.createDataFrame(
        rows, "store string, visit_id string, text string, n_positions int, n_purchases int, dt string"
    )


def _config(lake_sets: list[str]) -> Config:
    pairs = [lake_sets[i + 1] for i in range(0, len(lake_sets), 2)]
    gpt2 = "train.encoders.journeys-gpt2"
    return load_config(
        None,
        [
            *pairs,
            f"{gpt2}.model.hidden_size=32",
            f"{gpt2}.model.num_layers=2",
            f"{gpt2}.model.num_heads=2",
            f"{gpt2}.model.max_len=64",
            f"{gpt2}.model.bpe_vocab_size=300",
            f"{gpt2}.epochs=2",
            f"{gpt2}.batch_size=8",
            f"{gpt2}.val_pct=10",
            f"{gpt2}.early_stopping_patience=null",
            "train.num_processes=1",
            "journeys.generate.models=[journeys-gpt2,journeys-markov]",
            "journeys.generate.max_new_tokens=40",
            "journeys.generate.partitions=2",
            "journeys.evaluate.bootstrap=20",
            f"tracking.model_prefix={PREFIX}",
        ],
    )


@pytest.fixture()
def in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Train in this process (the launcher seam), not in torchrun processes."""
    from custembed.jobs import train as train_job

    def launch(_cfg: Any) -> Callable[..., Any]:
        return lambda fn, spec: fn(spec)

    monkeypatch.setattr(train_job, "launch", launch)


@pytest.mark.slow
def test_train_generate_evaluate(spark: Any, lake_sets: list[str], in_process: None) -> None:
    from pyspark.sql import functions as F

    from custembed.jobs import journeys_evaluate, journeys_generate, train
    from custembed.jobs import journeys_frames as frames
    from custembed.jobs.common import lake_from

    cfg = _config(lake_sets)
    lake = lake_from(spark, cfg)
    _journeys(spark).write.mode("overwrite").partitionBy("dt", "store").saveAsTable(lake.table("journeys"))

    gpt2 = train.run(spark, cfg, run_date=RUN, encoder_name="journeys-gpt2")
    assert gpt2["kind"] == "journeys_gpt2" and gpt2["sequences"] > 0
    markov = train.run(spark, cfg, run_date=RUN, encoder_name="journeys-markov")
    assert markov["states"] > 0

    journeys_generate.run(spark, cfg, run_date=RUN)
    generated = lake.read_partition("generated_journeys", RUN.isoformat())
    test_visits = frames.split_holdout(
        lake.read("journeys"), test_pct=cfg.journeys.holdout.test_pct, salt=cfg.journeys.holdout.salt, test=True
    )
    n_test = test_visits.count()
    assert n_test > 0
    per_model = {r["model"]: r["count"] for r in generated.groupBy("model").count().collect()}
    assert per_model == {"journeys-gpt2": n_test, "journeys-markov": n_test}
    # never trained on: the generated visits are exactly the held-out ones
    assert generated.select("visit_id").distinct().join(test_visits, "visit_id", "left_anti").count() == 0
    # the prompt is kept: every generated text starts with its visit's first 7 positions
    prompts = frames.prompts(test_visits, points=7)
    joined = generated.join(prompts, ["store", "visit_id"])
    assert joined.where(~F.col("text").startswith(F.col("prompt"))).count() == 0

    result = journeys_evaluate.run(spark, cfg, run_date=RUN, with_rates=False)
    metrics = lake.read_partition("journey_metrics", RUN.isoformat()).collect()
    names = {(r["model"], r["metric"]) for r in metrics}
    for model in ("journeys-gpt2", "journeys-markov"):
        for metric in ("js_cells", "js_purchase_zones", "js_length"):
            assert (model, metric) in names
    js_rows = [r for r in metrics if r["metric"].startswith("js_")]
    assert all(0.0 <= r["value"] <= 1.0 for r in js_rows)
    assert all(0.0 <= r["ci_low"] <= r["ci_high"] <= 1.0 for r in js_rows)  # bootstrap intervals
    assert all(0.0 <= r["value"] <= 1.0 and r["plugin_value"] is not None for r in js_rows)
    assert "Poisson bootstrap" in result["protocol"]
    assert "base 2" in result["protocol"]


@pytest.mark.slow
def test_transfer_grows_the_vocabulary_and_measures_every_variant(
    spark: Any, lake_sets: list[str], in_process: None
) -> None:
    from custembed import lakefs
    from custembed.jobs import journeys_transfer, train
    from custembed.jobs.common import lake_from
    from custembed.journeys.tokenizer import load_tokenizer
    from custembed.tracking import tracking_for

    cfg = _config(lake_sets)
    cfg = journeys_transfer.with_encoder_settings(cfg, "journeys-gpt2", epochs=1)
    lake = lake_from(spark, cfg)
    both = _journeys(spark).unionByName(_journeys(spark, store="store_b"))
    both.write.mode("overwrite").partitionBy("dt", "store").saveAsTable(lake.table("journeys"))
    train.run(spark, cfg, run_date=RUN, encoder_name="journeys-gpt2", store="store_a")
    transfer = dataclasses.replace(cfg.journeys.transfer, fractions=(1.0,), fine_tune_epochs=1)
    cfg = dataclasses.replace(cfg, journeys=dataclasses.replace(cfg.journeys, transfer=transfer))

    summary = journeys_transfer.run(spark, cfg, run_date=RUN, evaluate=True)

    tracking = tracking_for(cfg.tracking, cfg.project.lake_dir)
    staging = lake.path("models")
    source_dir, _ = tracking.encoder_uri("journeys-gpt2-store_a", cfg.train.alias, staging=staging)
    tuned_dir, _ = tracking.encoder_uri("journeys-gpt2-store_b-finetuned-1", cfg.train.alias, staging=staging)
    source, tuned = load_tokenizer(lakefs.get_dir(source_dir)), load_tokenizer(lakefs.get_dir(tuned_dir))
    assert len(tuned) > len(source)  # store_b's codes added to the source's ids
    assert all(tuned.get_vocab()[token] == i for token, i in source.get_vocab().items())
    text = _journeys(spark, 4, store="store_b").first()["text"]
    assert len(tuned(text)["input_ids"]) < len(source(text)["input_ids"])
    generated = lake.read_partition("generated_journeys", RUN.isoformat()).where("store = 'store_b'")
    variants = {(r["model"], r["train_fraction"]) for r in generated.select("model", "train_fraction").collect()}
    assert variants == {
        ("journeys-gpt2-source", 0.0),
        ("journeys-gpt2-finetuned", 1.0),
        ("journeys-gpt2-scratch", 1.0),
    }
    assert set(summary["curve"]) >= {"journeys-gpt2-source js_cells", "journeys-gpt2-finetuned js_cells"}

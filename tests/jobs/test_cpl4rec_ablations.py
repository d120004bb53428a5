"""CPL4Rec end to end on a small generated multi-behaviour lake: the backbone once, every adaptation variant
through the train job, each evaluated into nextitem_metrics, adaptation_stats written; a rerun reuses them."""

from __future__ import annotations

import pytest

RUN_DATE = "2023-07-31"
ENTRIES = ("cpl4rec_pretrain", "cpl4rec")


def tiny(lake_sets: list[str]) -> list[str]:
    args = [
        *lake_sets,
        "--conf",
        "cpl4rec.yaml",
        "--set",
        "generate.customers=300",
        "--set",
        "generate.events_per_customer=25",
        "--set",
        "train.num_processes=1",
        "--set",
        "tracking.model_prefix=t-cpl4rec",  # the session's lake holds other modules' registries
        "--set",
        "nextitem.negatives=10",
        "--set",
        "nextitem.partitions=2",
    ]
    for entry in ENTRIES:
        for key, value in (
            ("model.hidden_size", 16),
            ("model.max_len", 20),
            ("epochs", 1),
            ("batch_size", 32),
            ("log_every", 5),
            ("early_stopping_patience", "null"),
        ):
            args += ["--set", f"train.encoders.{entry}.{key}={value}"]
    args += ["--set", "train.encoders.cpl4rec.model.prompt_hidden=16"]
    return args


@pytest.mark.slow
def test_ablations_train_evaluate_and_record_every_variant(spark, lake_sets, database, capsys) -> None:  # type: ignore[no-untyped-def]
    from custembed.jobs import cpl4rec_ablations, generate, sequences

    args = tiny(lake_sets)
    assert generate.main(args) == 0
    assert sequences.main(args) == 0
    assert cpl4rec_ablations.main(args) == 0
    printed = capsys.readouterr().out
    spark.catalog.setCurrentDatabase(database)

    names = {v: cpl4rec_ablations.variant_name("cpl4rec", v) for v in cpl4rec_ablations.VARIANTS}
    stats = {r["variant"]: r for r in spark.table("adaptation_stats").where(f"dt = '{RUN_DATE}'").collect()}
    assert set(stats) == set(cpl4rec_ablations.VARIANTS)
    assert {r["model"] for r in stats.values()} == set(names.values())
    trainable = {v: r["trainable_parameters"] for v, r in stats.items()}
    # the same network everywhere; what trains differs by the switch
    assert len({r["total_parameters"] for r in stats.values()}) == 1
    assert trainable["no_prompts"] < trainable["no_pfg"] < trainable["full"] < trainable["finetune"]
    assert trainable["no_compactness"] == trainable["full"]
    assert all(r["train_seconds"] > 0 and r["steps"] > 0 and not r["reused"] for r in stats.values())

    metrics = spark.table("nextitem_metrics").where(f"dt = '{RUN_DATE}'")
    evaluated = {r["model"] for r in metrics.select("model").distinct().collect()}
    assert {*names.values(), "cpl4rec_pretrain"} <= evaluated
    protocols = {r["protocol"] for r in metrics.where("model = 'cpl4rec'").collect()}
    assert protocols == {"full", "sampled-uniform", "sampled-popularity"}
    for name in names.values():
        assert name in printed  # the summary table

    # a rerun trains nothing again: the registered versions are reused, their figures from MLflow
    assert cpl4rec_ablations.main([*args, "--variants", "full", "finetune", "--no-evaluate"]) == 0
    rerun = {r["variant"]: r for r in spark.table("adaptation_stats").where(f"dt = '{RUN_DATE}'").collect()}
    for variant in ("full", "finetune"):
        assert rerun[variant]["reused"] and rerun[variant]["wall_seconds"] is None
        assert rerun[variant]["model_version"] == stats[variant]["model_version"]
        assert rerun[variant]["steps"] == stats[variant]["steps"]
        assert rerun[variant]["train_seconds"] == pytest.approx(stats[variant]["train_seconds"], abs=1e-3)  # rounded
    assert not rerun["no_pfg"]["reused"]  # the partitions of the variants not rerun stay


def test_the_conf_entries_are_valid_and_the_split_cannot_be_a_parameter() -> None:
    from custembed.config import ConfigError
    from custembed.jobs.train import check_model_layers

    for name in ENTRIES:
        check_model_layers("cpl4rec.yaml", [], name)
    with pytest.raises(ConfigError, match="vocabulary_file is set from the data"):
        check_model_layers("cpl4rec.yaml", ["train.encoders.cpl4rec.model.vocabulary_file=x.json"], "cpl4rec")
    with pytest.raises(ConfigError, match="stage prompt needs backbone"):
        check_model_layers("cpl4rec.yaml", ["train.encoders.cpl4rec.model.backbone="], "cpl4rec")


def test_each_variant_is_the_prompt_entry_with_one_switch() -> None:
    from custembed.config import ConfigError, load_config
    from custembed.jobs.cpl4rec_ablations import VARIANTS, check_prompt_entry, variant_name, with_variant

    cfg = load_config("cpl4rec.yaml")
    assert check_prompt_entry(cfg, "cpl4rec") == "cpl4rec_pretrain"
    base = cfg.train.encoders["cpl4rec"]
    for variant, changes in VARIANTS.items():
        settings = with_variant(cfg, "cpl4rec", variant).train.encoders[variant_name("cpl4rec", variant)]
        changed = {k: v for k, v in settings.model.items() if base.model.get(k) != v}
        assert changed == dict(changes)
        assert settings.epochs == base.epochs and settings.holdout_last == 2
    with pytest.raises(ConfigError, match="must be kind cpl4rec with model.stage: prompt"):
        check_prompt_entry(cfg, "cpl4rec_pretrain")

"""Every file in conf/ loads; unknown keys and wrong types are errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from custembed.catalogue import load_catalogue
from custembed.config import ConfigError, conf_dir, load_config

CONF = conf_dir()
CATALOGUES = sorted(p.name for p in CONF.glob("*actions*.yaml"))
OVERRIDES = sorted(
    p.name
    for p in CONF.glob("*.yaml")
    if p.name not in CATALOGUES and p.name not in ("base.yaml", "retail_families.yaml")
)


@pytest.mark.parametrize("name", [*OVERRIDES, str(CONF.parent / "deploy" / "cluster.yaml")])
def test_every_config_file_loads(name: str) -> None:
    cfg = load_config(name)
    load_catalogue(cfg.sequences.catalogue)
    for product in cfg.score.products:
        load_catalogue(cfg.sequences.catalogue).buy_action_id(product)


@pytest.mark.parametrize("name", CATALOGUES)
def test_every_catalogue_loads(name: str) -> None:
    catalogue = load_catalogue(name)
    assert catalogue.vocab_size == 3 + len(catalogue.actions)
    assert catalogue.no_action_id == 3


def test_default_catalogue_has_the_papers_309_actions() -> None:
    catalogue = load_catalogue("actions.yaml")
    assert len(catalogue.actions) == 309
    assert len(catalogue.behaviours) == 8
    assert catalogue.id_to_text() == load_catalogue("actions.yaml").id_to_text()


def test_unknown_key_is_rejected_with_its_name(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("sequences:\n  max_lenght: 10\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown key 'sequences.max_lenght'"):
        load_config(str(bad))


def test_duplicate_key_is_rejected(tmp_path: Path) -> None:
    bad = tmp_path / "twice.yaml"
    bad.write_text("score:\n  seed: 1\nscore:\n  seed: 2\n")
    with pytest.raises(ConfigError, match="key 'score' appears twice"):
        load_config(str(bad))


def test_wrong_type_is_rejected_with_its_name() -> None:
    with pytest.raises(ConfigError, match="sequences.max_len must be int"):
        load_config(None, ["sequences.max_len=many"])


def test_set_overrides_merge_over_base() -> None:
    cfg = load_config(None, ["generate.customers=12", "spark.conf={spark.foo: bar}"])
    assert cfg.generate.customers == 12
    assert cfg.spark.conf == {"spark.foo": "bar"}
    assert cfg.sequences.max_len == 200


@pytest.mark.parametrize(
    ("assignment", "key"),
    [
        ("project.database=custembed; drop table x", "project.database"),
        ("project.database=1db", "project.database"),
        ("project.database=my-db", "project.database"),
        ("tables.sequences=seq`s", "tables.sequences"),
        ("tables.sequences=a.b.c", "tables.sequences"),
    ],
)
def test_identifiers_that_reach_sql_are_validated(assignment: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(sets=[assignment])


def test_qualified_table_override_is_accepted() -> None:
    cfg = load_config(sets=["tables.sequences=analytics.customer_sequences", "project.database=lake_2"])
    assert cfg.tables["sequences"] == "analytics.customer_sequences"

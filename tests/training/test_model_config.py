"""`train.encoders.<name>`: `model:` checked against the kind's config class, training fields defined once."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import pytest

from custembed.catalogue import load_catalogue
from custembed.config import ConfigError, EncoderSettings, conf_dir, load_config
from custembed.encoders import build_encoder
from custembed.jobs.train import check_model, check_model_layers, model_params
from custembed.training.spec import TrainParams, TrainSpec, train_params

CONF = conf_dir()
CONF_FILES = [None, "demo.yaml", "retail.yaml"]


@pytest.mark.parametrize("conf_file", CONF_FILES)
def test_every_encoder_model_in_conf_checks(conf_file: str | None) -> None:
    cfg = load_config(conf_file)
    vocab_size = load_catalogue(cfg.sequences.catalogue).vocab_size
    for name, settings in cfg.train.encoders.items():
        params = check_model(name, settings, vocab_size=vocab_size)
        assert set(settings.model) <= set(params)
        if settings.kind == "bert4rec":
            assert params["vocab_size"] == vocab_size


def test_bert4rec_model_builds_the_configured_network() -> None:
    cfg = load_config(
        None, ["train.encoders.bert4rec.model.hidden_size=32", "train.encoders.bert4rec.model.max_len=20"]
    )
    params = model_params("bert4rec", cfg.train.encoders["bert4rec"], vocab_size=40)
    encoder = build_encoder("bert4rec", **params)
    assert (encoder.hidden_size, encoder.max_len, encoder.config.num_layers, encoder.config.vocab_size) == (
        32,
        20,
        2,
        40,
    )
    assert encoder.config.mask_prob == 0.15  # from conf/base.yaml


def test_unknown_model_key_names_the_key_and_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  encoders:\n    bert4rec:\n      model:\n        n_layers: 3\n")
    cfg = load_config(str(bad))  # the config itself loads: `model:` is a mapping
    with pytest.raises(ConfigError, match=r"^config: unknown key 'train.encoders.bert4rec.model.n_layers' \(known: "):
        check_model("bert4rec", cfg.train.encoders["bert4rec"], vocab_size=40)
    with pytest.raises(ConfigError, match=rf"^{bad}: unknown key 'train.encoders.bert4rec.model.n_layers'"):
        check_model_layers(str(bad), [], "bert4rec")


def test_wrong_model_type_names_the_key_and_the_set() -> None:
    sets = ["train.encoders.bert4rec.epochs=2", "train.encoders.electra.model.max_len=long"]
    with pytest.raises(
        ConfigError,
        match=r"^--set train.encoders.electra.model.max_len=long: "
        r"train.encoders.electra.model.max_len must be int",
    ):
        check_model_layers(None, sets, "electra")
    check_model_layers(None, sets, "bert4rec")  # another encoder's bad model does not matter here


def test_bad_model_values_and_data_fields_are_config_errors() -> None:
    cfg = load_config(None, ["train.encoders.bert4rec.model.num_heads=3"])
    with pytest.raises(ConfigError, match=r"train.encoders.bert4rec.model: hidden_size=64 is not a multiple of"):
        check_model("bert4rec", cfg.train.encoders["bert4rec"], vocab_size=40)
    cfg = load_config(None, ["train.encoders.bert4rec.model.vocab_size=99"])
    with pytest.raises(ConfigError, match=r"train.encoders.bert4rec.model.vocab_size is set from the data"):
        check_model("bert4rec", cfg.train.encoders["bert4rec"], vocab_size=40)
    without_checkpoint = EncoderSettings(kind="causal_lm", model={"max_len": 64})
    with pytest.raises(ConfigError, match=r"train.encoders.llama.model: .*'checkpoint'"):
        check_model("llama", without_checkpoint, vocab_size=40)
    cfg = load_config(None, ["train.encoders.llama.kind=gpt"])
    with pytest.raises(ConfigError, match=r"train.encoders.llama.kind: unknown encoder kind 'gpt'"):
        check_model("llama", cfg.train.encoders["llama"], vocab_size=40)


def test_model_keys_at_the_old_place_are_unknown(tmp_path: Path) -> None:
    old = tmp_path / "old.yaml"
    old.write_text("train:\n  encoders:\n    bert4rec:\n      hidden_size: 32\n")
    with pytest.raises(ConfigError, match=rf"{old}: unknown key 'train.encoders.bert4rec.hidden_size'"):
        load_config(str(old))


def test_bad_training_value_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "zero.yaml"
    bad.write_text("train:\n  encoders:\n    bert4rec:\n      epochs: 0\n")
    with pytest.raises(ConfigError, match=rf"{bad}: train.encoders.bert4rec: epochs must be positive, got 0"):
        load_config(str(bad))


def test_training_fields_are_defined_once() -> None:
    names = {f.name for f in dataclasses.fields(TrainParams)}
    assert names <= {f.name for f in dataclasses.fields(EncoderSettings)}
    assert names <= {f.name for f in dataclasses.fields(TrainSpec)}
    settings = load_config("demo.yaml").train.encoders["bert4rec"]
    spec = TrainSpec(data_path="d", output_dir="o", checkpoint_dir="c", **train_params(settings))
    assert train_params(spec) == train_params(settings) and spec.epochs == 12 and spec.lr == 0.002
    assert pickle.loads(pickle.dumps(spec)) == spec


def test_cli_reports_a_bad_model_key_in_one_line(  # type: ignore[no-untyped-def]
    spark, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from custembed.jobs import train

    bad = tmp_path / "typo.yaml"
    bad.write_text(
        f"project:\n  lake_dir: {tmp_path / 'lake'}\ntrain:\n  encoders:\n    bert4rec:\n"
        "      model:\n        hiden_size: 32\n"
    )
    assert train.main(["--conf", str(bad), "--run-date", "2023-07-31"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"custembed train: error: {bad}: unknown key 'train.encoders.bert4rec.model.hiden_size' "
        f"(known: {err[0].split('(known: ')[1]}"
    ]
    assert not (tmp_path / "lake").exists()  # nothing was written: no training work started

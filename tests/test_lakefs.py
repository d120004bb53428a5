"""The lake's file-system layer: URIs qualified once, the same files for Spark and for Python, any store.

``memory://`` (fsspec's in-process store) stands in for a remote store: it is not on the
local disk, so every copy, upload and wrapping path of :mod:`custembed.lakefs` runs.
"""

from __future__ import annotations

import importlib.util
import os
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from custembed import lakefs
from custembed.config import ProjectConfig, SparkConfig, TrackingConfig
from custembed.errors import ConfigError


@pytest.fixture()
def remote() -> str:
    """A fresh directory URI on a store that is not the local disk."""
    return f"memory://lakefs-test-{uuid.uuid4().hex[:8]}/lake"


def test_a_plain_path_becomes_an_absolute_file_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert lakefs.qualify("lake") == f"file://{tmp_path}/lake"
    assert lakefs.qualify(f"{tmp_path}/lake/") == f"file://{tmp_path}/lake"
    assert lakefs.qualify(tmp_path / "lake") == f"file://{tmp_path}/lake"
    # Hadoop's own qualified form (what inputFiles() returns) and the URI form are the same place
    assert lakefs.qualify(f"file:{tmp_path}/lake") == lakefs.qualify(f"file://{tmp_path}/lake/")
    # no %-escapes: Hadoop would take them literally
    assert lakefs.qualify(f"{tmp_path}/a b#c") == f"file://{tmp_path}/a b#c"
    assert lakefs.local_path(lakefs.qualify(f"{tmp_path}/a b#c")) == f"{tmp_path}/a b#c"


def test_remote_uris_keep_their_scheme_for_spark_and_map_it_for_python() -> None:
    assert lakefs.qualify("hdfs://namenode:8020/lake/") == "hdfs://namenode:8020/lake"
    assert lakefs.spark_uri("s3a://bucket/lake") == "s3a://bucket/lake"  # Hadoop's S3 connector
    assert lakefs.mlflow_uri("s3a://bucket/lake") == "s3://bucket/lake"  # boto3's
    assert lakefs.qualify("dbfs:/lake") == "dbfs:/lake"
    assert lakefs.qualify("s3a://bucket") == "s3a://bucket"
    for uri in ("hdfs://nn/lake", "s3a://bucket/lake", "abfss://c@account.dfs.core.windows.net/lake"):
        assert lakefs.local_path(uri) is None and not lakefs.is_local(uri)


def test_join_parent_and_name() -> None:
    assert lakefs.join("s3a://bucket/lake/", "training", "/bert4rec/", "") == "s3a://bucket/lake/training/bert4rec"
    assert lakefs.join("file:///lake", "a/b") == "file:///lake/a/b"
    assert lakefs.join("dbfs:/lake", "x") == "dbfs:/lake/x"
    assert lakefs.parent("hdfs://nn/lake/training/key/source.json") == "hdfs://nn/lake/training/key"
    assert lakefs.name("hdfs://nn/lake/training/key/") == "key"


@pytest.mark.parametrize("where", ["local", "remote"])
def test_files_round_trip(where: str, tmp_path: Path, remote: str) -> None:
    base = lakefs.qualify(tmp_path / "lake") if where == "local" else remote
    text_file = lakefs.join(base, "training", "key", "source.json")
    lakefs.write_text(text_file, '{"key": "é"}')
    assert lakefs.read_text(text_file) == '{"key": "é"}'
    assert lakefs.exists(text_file) and lakefs.isfile(text_file) and lakefs.isdir(lakefs.parent(text_file))

    with lakefs.open_output(lakefs.join(base, "training", "other", "state.pt")) as stream:
        stream.write(b"\x00\x01")
    with lakefs.open_input(lakefs.join(base, "training", "other", "state.pt")) as stream:
        assert stream.read() == b"\x00\x01"

    training = lakefs.join(base, "training")
    assert lakefs.ls(training) == [lakefs.join(training, "key"), lakefs.join(training, "other")]
    assert lakefs.glob(training, "*/source.json") == [text_file]
    assert lakefs.glob(training, "*/missing") == [] and lakefs.ls(lakefs.join(base, "missing")) == []

    lakefs.move(lakefs.join(training, "other"), lakefs.join(training, "moved"))
    assert lakefs.ls(training) == [lakefs.join(training, "key"), lakefs.join(training, "moved")]
    lakefs.rm(lakefs.join(training, "moved"), recursive=True)
    lakefs.rm(lakefs.join(training, "moved"), recursive=True)  # already gone: fine
    with pytest.raises(FileNotFoundError):
        lakefs.rm(lakefs.join(training, "moved"), missing_ok=False)
    assert lakefs.ls(training) == [lakefs.join(training, "key")]
    if where == "local":  # written next to its place and renamed: nothing else left there
        assert os.listdir(tmp_path / "lake" / "training" / "key") == ["source.json"]


def test_directories_go_up_and_come_down_whole(tmp_path: Path, remote: str) -> None:
    source = tmp_path / "encoder"
    (source / "sub").mkdir(parents=True)
    (source / "config.json").write_text("{}")
    (source / "sub" / "vocab.txt").write_text("a\nb\n")
    target = lakefs.join(remote, "encoder")
    lakefs.put_dir(source, target)
    assert lakefs.glob(target, "**/*.*") == [lakefs.join(target, "config.json"), lakefs.join(target, "sub/vocab.txt")]

    downloaded = Path(lakefs.get_dir(target, str(tmp_path / "download")))
    assert downloaded == tmp_path / "download"
    assert (downloaded / "config.json").read_text() == "{}" and (
        downloaded / "sub" / "vocab.txt"
    ).read_text() == "a\nb\n"
    assert Path(lakefs.get_dir(target)).joinpath("sub", "vocab.txt").is_file()  # a fresh temporary directory
    # a local directory is used in place: no copy
    assert lakefs.get_dir(lakefs.qualify(source), str(tmp_path / "unused")) == str(source)
    assert not (tmp_path / "unused").exists()
    with pytest.raises(FileNotFoundError):
        lakefs.get_dir(lakefs.join(remote, "missing"))


@pytest.mark.parametrize("where", ["local", "remote"])
def test_pyarrow_reads_a_dataset_through_the_layer(where: str, tmp_path: Path, remote: str) -> None:
    base = lakefs.qualify(tmp_path / "lake") if where == "local" else remote
    directory = lakefs.join(base, "data")
    table = pa.table({"customer_id": ["a", "b", "c"], "n": [1, 2, 3]})
    with lakefs.open_output(lakefs.join(directory, "part-00000.parquet")) as stream:
        pq.write_table(table, stream)
    lakefs.write_text(lakefs.join(directory, "_SUCCESS"), "")
    filesystem, path = lakefs.pyarrow_filesystem(directory)
    assert (filesystem.type_name == "local") == (where == "local")
    assert ds.dataset(path, filesystem=filesystem, format="parquet").to_table().equals(table)


def test_a_store_without_its_package_is_a_config_error_naming_it() -> None:
    if importlib.util.find_spec("adlfs") is None:
        with pytest.raises(ConfigError, match="abfss://.*adlfs"):
            lakefs.exists("abfss://container@account.dfs.core.windows.net/lake")
    if importlib.util.find_spec("s3fs") is None:
        with pytest.raises(ConfigError, match="s3a://.*s3fs"):
            lakefs.exists("s3a://bucket/lake")
    with pytest.raises(ConfigError, match="no file system for nosuchfs://"):
        lakefs.read_text("nosuchfs://somewhere/lake/x")
    with pytest.raises(ConfigError, match="names no host"):
        lakefs.local_path("file://host/lake")


def test_a_remote_lake_needs_a_tracking_uri_and_the_cluster_catalogue(remote: str) -> None:
    from custembed.spark import build_session
    from custembed.tracking import tracking_for

    with pytest.raises(ConfigError, match="set tracking.uri"):
        tracking_for(TrackingConfig(), remote)
    tracking = tracking_for(TrackingConfig(uri="http://mlflow:5000"), "s3a://bucket/lake")
    assert tracking.uri == "http://mlflow:5000" and tracking.artifact_root == "s3://bucket/lake/mlartifacts"
    with pytest.raises(ConfigError, match="embedded_catalogue"):
        build_session(SparkConfig(), ProjectConfig(lake_dir="hdfs://namenode/lake"))


def test_an_encoder_saves_to_and_loads_from_a_remote_lake(remote: str) -> None:
    import torch

    from custembed.encoders import build_encoder, load_encoder
    from custembed.encoders.base import META_FILE

    torch.manual_seed(0)
    encoder = build_encoder("bert4rec", vocab_size=40, hidden_size=32, num_layers=1, num_heads=2, max_len=16)
    target = lakefs.join(remote, "encoder")
    assert encoder.save(target) == target
    assert lakefs.isfile(lakefs.join(target, META_FILE)) and lakefs.glob(target, "*.safetensors")
    loaded = load_encoder(target)
    inputs = encoder.inputs(tokens=[[5, 6, 7], [8, 9]])
    torch.testing.assert_close(loaded.embed(inputs), encoder.embed(inputs))
    with pytest.raises(ValueError, match="is not a saved encoder"):
        load_encoder(lakefs.join(remote, "nothing"))

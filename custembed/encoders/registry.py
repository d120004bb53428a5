"""Encoder kinds → classes, and the entry points that dispatch on a kind.

Adding an encoder is one new module holding its config class and its
:class:`~custembed.encoders.base.SequenceEncoder` subclass, plus one line in
:data:`ENCODERS`. Modules are imported when their kind is first asked for, so
importing one encoder never imports the others.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from custembed import lakefs
from custembed.encoders.base import FORMAT_VERSION, META_FILE, SequenceEncoder

# kind → "module:class"; the class's `kind` must equal its key.
ENCODERS: Mapping[str, str] = MappingProxyType(
    {
        "bert4rec": "custembed.encoders.bert4rec:Bert4RecEncoder",
        "mlm": "custembed.encoders.hf_mlm:MlmEncoder",
        "causal_lm": "custembed.encoders.causal_lm:CausalLmEncoder",
        "sasrec": "custembed.encoders.sasrec:SasRecEncoder",
        "coles": "custembed.encoders.coles:ColesEncoder",
        "cpl4rec": "custembed.encoders.cpl4rec:Cpl4RecEncoder",
        "journeys_gpt2": "custembed.encoders.journeys_gpt2:JourneysGpt2Encoder",
        "journeys_lstm": "custembed.encoders.journeys_lstm:JourneysLstmEncoder",
    }
)


def encoder_class(kind: str) -> type[SequenceEncoder[Any]]:
    """The encoder class registered as ``kind`` (its module imported now); ``ValueError`` naming it if unknown."""
    if kind not in ENCODERS:
        raise ValueError(f"unknown encoder kind {kind!r}; known kinds: {sorted(ENCODERS)}")
    module_name, _, class_name = ENCODERS[kind].partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, SequenceEncoder)) or cls.kind != kind:
        raise TypeError(f"{ENCODERS[kind]} is not a SequenceEncoder of kind {kind!r}")
    return cls


def encoder_classes() -> Mapping[str, type[SequenceEncoder[Any]]]:
    """Every registered encoder class by kind (imports all encoder modules)."""
    return MappingProxyType({kind: encoder_class(kind) for kind in ENCODERS})


def build_encoder(kind: str, **params: Any) -> SequenceEncoder[Any]:
    """Build an encoder of ``kind`` from its config's fields, e.g.
    ``build_encoder("bert4rec", vocab_size=1000)`` or ``build_encoder("mlm", checkpoint=...)``.
    """
    return encoder_class(kind).create(**params)


def load_encoder(path: str | Path) -> SequenceEncoder[Any]:
    """Load an encoder saved by :meth:`SequenceEncoder.save`, whatever its kind.

    ``path`` is a local path or a lake URI (:mod:`custembed.lakefs`); a remote encoder is
    downloaded to a local temporary directory first (Hugging Face loads from local directories).
    """
    uri = lakefs.qualify(path)
    meta = saved_meta(uri)
    return encoder_class(meta["kind"]).load(Path(lakefs.get_dir(uri)), meta)


def saved_meta(path: str | Path) -> dict[str, Any]:
    """The ``custembed_encoder.json`` of the encoder saved in ``path`` (a local path or lake URI)."""
    meta_uri = lakefs.join(lakefs.qualify(path), META_FILE)
    if not lakefs.isfile(meta_uri):
        raise ValueError(f"{path} is not a saved encoder: {META_FILE} is missing")
    meta: dict[str, Any] = json.loads(lakefs.read_text(meta_uri))
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{meta_uri} has format_version {meta.get('format_version')!r}, expected {FORMAT_VERSION}")
    return meta


def saved_input_columns(path: str | Path) -> tuple[str, ...]:
    """The sequence columns the encoder saved in ``path`` reads, from its metadata alone (no weights loaded):
    what a Spark job selects before shipping rows to the Python workers."""
    meta = saved_meta(path)
    config = meta.get("config", {})
    return encoder_class(meta["kind"]).columns_read(
        bool(config.get("use_time_gaps", False)), bool(config.get("use_amounts", False))
    )

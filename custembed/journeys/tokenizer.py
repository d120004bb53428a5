"""Byte-level BPE over journey text, trained on the journeys corpus and saved with the model.

Journey text is space-separated tokens: six-character location codes and ``$<zone>``
purchase markers. Pre-tokenisation splits on whitespace only, then maps bytes as GPT-2
does (``ByteLevel`` without its regex, which would cut a code at every letter/digit
boundary): BPE merges stay inside one code or marker, so frequent cells and zone markers
become single tokens and rare cells fall back to their hierarchical prefixes. One
special token, ``<|endoftext|>``, opens and closes every journey and pads batches (GPT-2's
convention). The tokenizer is saved in the encoder's directory (``save_pretrained``), so
ids never drift between training, generation and a fine-tuning on another store.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from transformers import PreTrainedTokenizerFast

BOUNDARY = "<|endoftext|>"  # start, end and padding of a journey


def train_tokenizer(texts: Iterable[str], *, vocab_size: int, min_frequency: int = 2) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer of at most ``vocab_size`` tokens learnt from ``texts`` (streamed once)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < 257 + 1:
        raise ValueError(f"vocab_size must leave room for the 256 bytes and {BOUNDARY}, got {vocab_size}")
    if min_frequency < 1:
        raise ValueError(f"min_frequency must be positive, got {min_frequency}")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=False)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[BOUNDARY],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_non_empty(texts), trainer=trainer)
    return wrap(tokenizer)


def extend_tokenizer(source: PreTrainedTokenizerFast, target: PreTrainedTokenizerFast) -> PreTrainedTokenizerFast:
    """``source`` grown by what ``target`` (a BPE learnt on another store's journeys) has and it lacks.

    Fine-tuning on another store keeps the source model's ids: every token of ``source``
    keeps its id and the tokens only ``target`` has are appended after them. The merges are
    ``target``'s first, then ``source``'s: text of the target store is cut as ``target``
    cuts it (so its codes are single tokens again, not bytes), in ids the source model
    already knows wherever the two vocabularies share a token.
    """
    import json

    from tokenizers import Tokenizer

    src = json.loads(source.backend_tokenizer.to_str())
    tgt = json.loads(target.backend_tokenizer.to_str())
    for which, spec in (("source", src), ("target", tgt)):
        if spec["model"]["type"] != "BPE":
            raise ValueError(f"the {which} tokenizer is not a BPE tokenizer: {spec['model']['type']}")
    vocab: dict[str, int] = dict(src["model"]["vocab"])
    for token, _ in sorted(tgt["model"]["vocab"].items(), key=lambda item: item[1]):
        vocab.setdefault(token, len(vocab))
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in tgt["model"]["merges"]]
    seen = set(merges)
    for m in src["model"]["merges"]:
        pair = tuple(m) if isinstance(m, list) else tuple(m.split(" "))
        if pair not in seen:
            seen.add(pair)
            merges.append(pair)
    src["model"]["vocab"] = vocab
    src["model"]["merges"] = [list(pair) for pair in merges]
    return wrap(Tokenizer.from_str(json.dumps(src)))


def _non_empty(texts: Iterable[str]) -> Iterator[str]:
    return (text for text in texts if text)


def wrap(tokenizer: object) -> PreTrainedTokenizerFast:
    """The ``tokenizers`` object as a Hugging Face fast tokenizer with the journey's special token."""
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOUNDARY,
        eos_token=BOUNDARY,
        pad_token=BOUNDARY,
        padding_side="right",
        truncation_side="right",  # keep a journey's start: generation is conditioned on it
    )


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """A tokenizer saved by :func:`save_tokenizer` (or in an encoder's directory)."""
    return PreTrainedTokenizerFast.from_pretrained(str(path), padding_side="right", truncation_side="right")


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, path: str | Path) -> None:
    Path(path).mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(path))


def journey_input(text: str, *, closed: bool = True) -> str:
    """The model's input string of a journey: opened by :data:`BOUNDARY`, closed by it when ``closed``."""
    return f"{BOUNDARY}{text.strip()}{BOUNDARY if closed else ''}"


def clean_text(decoded: str) -> str:
    """Decoded model output as journey text: special tokens dropped, tokens separated by single spaces."""
    return " ".join(decoded.replace(BOUNDARY, " ").split())

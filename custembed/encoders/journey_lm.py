"""What the journey language models (GPT-2, LSTM) share: their own BPE, a causal objective, sampling.

Like :mod:`.action_ids` for BERT4Rec and SASRec: the part two model files would otherwise
repeat, so that importing one journey model never imports the other.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, cast

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerFast

from custembed.encoders.base import HfTextEncoder
from custembed.encoders.masking import IGNORE_INDEX, Inputs
from custembed.journeys.tokenizer import clean_text, journey_input, load_tokenizer


class JourneyLmEncoder(HfTextEncoder[Any]):
    """What the journey language models share: their own BPE, a causal objective and sampling."""

    causal: ClassVar[bool] = True
    data_fields: ClassVar[tuple[str, ...]] = ("tokenizer_dir",)
    input_table: ClassVar[str] = "journeys"

    def __init__(self, config: Any, model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast) -> None:
        super().__init__(config, model, tokenizer)

    @classmethod
    def load(cls, path: Path, meta: Mapping[str, Any]) -> JourneyLmEncoder:
        params = {**meta["config"], "tokenizer_dir": str(path)}
        config = cls.config_class(**params)
        tokenizer = load_tokenizer(path)
        model = cls.model_class().from_pretrained(str(path))
        model.config.use_cache = False
        return cls(config, model, tokenizer)

    @classmethod
    def model_class(cls) -> type[PreTrainedModel]:
        raise NotImplementedError

    def for_fine_tuning(self, params: Mapping[str, Any]) -> JourneyLmEncoder:
        """With a grown tokenizer in ``params["tokenizer_dir"]`` (:func:`extend_tokenizer`), this
        model with that tokenizer: embedding rows (and head rows) added for the new tokens, each
        the mean of the rows of the pieces the old tokenizer cut it into, so that a new store's
        code starts where its prefixes stand. Without one, this model unchanged."""
        tokenizer_dir = params.get("tokenizer_dir")
        if not tokenizer_dir:
            return self
        grown = load_tokenizer(tokenizer_dir)
        old = self.tokenizer.get_vocab()
        new_vocab = grown.get_vocab()
        moved = [token for token, i in old.items() if new_vocab.get(token) != i]
        if moved:
            raise ValueError(f"the tokenizer at {tokenizer_dir} does not extend the model's: {moved[:3]} changed ids")
        added = sorted((i, token) for token, i in new_vocab.items() if token not in old)
        n_old = len(self.tokenizer)
        model = cast(Any, self.model)  # the Hugging Face model: torch typing reads its methods as tensors
        rows_in = model.get_input_embeddings().weight.detach().clone()
        output = model.get_output_embeddings()
        rows_out = None if output is None else output.weight.detach().clone()
        bias_out = None if output is None or getattr(output, "bias", None) is None else output.bias.detach().clone()
        model.resize_token_embeddings(len(grown), mean_resizing=False)
        with torch.no_grad():
            new_in = model.get_input_embeddings().weight
            new_output = model.get_output_embeddings()
            for i, token in added:
                text = grown.convert_tokens_to_string([token])
                pieces = [p for p in self.tokenizer(text, add_special_tokens=False)["input_ids"] if p < n_old] or [
                    self.tokenizer.pad_token_id
                ]
                new_in[i] = rows_in[pieces].mean(dim=0)
                if new_output is not None and rows_out is not None and new_output.weight is not new_in:
                    new_output.weight[i] = rows_out[pieces].mean(dim=0)
                    if bias_out is not None:
                        new_output.bias[i] = bias_out[pieces].mean()
        model.config.vocab_size = len(grown)
        return type(self)(dataclasses.replace(self.config, tokenizer_dir=str(tokenizer_dir)), self.model, grown)

    def inputs(
        self,
        tokens: Sequence[Sequence[int]] | None = None,
        texts: Sequence[str] | None = None,
        gaps: Sequence[Sequence[int]] | None = None,
        amounts: Sequence[Sequence[int]] | None = None,
    ) -> Inputs:
        if texts is None:
            raise ValueError(f"{self.kind} encoder reads journey texts, got texts=None")
        if isinstance(texts, str):
            raise TypeError(f"texts must be a sequence of strings, got one string {texts[:40]!r}")
        return super().inputs(texts=[journey_input(text) for text in texts])

    def mask(self, inputs: Inputs, generator: torch.Generator) -> Inputs:
        # Every real token is a target (the closing boundary included); padding is ignored.
        labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, IGNORE_INDEX)
        return {**inputs, "labels": labels}

    @torch.no_grad()
    def generate_texts(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int = 0,
    ) -> list[str]:
        """Each prompt (journey text) followed by a sampled continuation, as journey text.

        Sampling stops at the closing boundary, at ``max_new_tokens`` or at the model's
        longest input. Seeded: the same prompts, weights and seed give the same texts.
        """
        if not prompts:
            return []
        torch.manual_seed(seed)
        encoded = self.tokenizer(
            [journey_input(p, closed=False) for p in prompts], padding=True, padding_side="left", return_tensors="pt"
        )
        input_ids = encoded["input_ids"].to(self.device)  # [B, P]
        room = max(0, self.max_len - input_ids.shape[1])
        with self._eval_mode():
            # GenerationMixin's method; torch's Module typing reads attributes as tensors
            output = cast(Any, self.model).generate(
                input_ids=input_ids,
                attention_mask=encoded["attention_mask"].to(self.device),
                do_sample=True,
                temperature=temperature,
                top_k=top_k or None,
                top_p=top_p,
                max_new_tokens=min(max_new_tokens, room),
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.tokenizer.eos_token_id,
                use_cache=True,
            )  # [B, P + N]
        new = output[:, input_ids.shape[1] :]
        continuations = self.tokenizer.batch_decode(new, skip_special_tokens=False)
        # a continuation ends at its first boundary token: what follows is padding
        return [
            clean_text(f"{prompt} {continuation.split(self.tokenizer.eos_token)[0]}")
            for prompt, continuation in zip(prompts, continuations, strict=True)
        ]

"""What the journey language models (GPT-2, LSTM) share: their own BPE, a causal objective, sampling.

Like :mod:`.action_ids` for BERT4Rec and SASRec: the part two model files would otherwise
repeat, so that importing one journey model never imports the other.
"""

from __future__ import annotations

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

    def inputs(
        self,
        tokens: Sequence[Sequence[int]] | None = None,
        texts: Sequence[str] | None = None,
        gaps: Sequence[Sequence[int]] | None = None,
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

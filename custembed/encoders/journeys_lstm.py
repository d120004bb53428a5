"""An LSTM language model over the same journey BPE tokens as GPT-2: the paper's neural baseline.

Token embedding → dropout → stacked LSTM → linear head tied to nothing (the paper gives
no details; this is the textbook word-level LSTM LM). Same objective, tokenizer, inputs
and saving as :mod:`custembed.encoders.journeys_gpt2`; sampling carries the LSTM state
from step to step instead of re-reading the prefix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput

from custembed.encoders.journey_lm import JourneyLmEncoder
from custembed.encoders.masking import IGNORE_INDEX, Inputs, check_fraction, check_pooling
from custembed.journeys.tokenizer import clean_text, journey_input, load_tokenizer


@dataclass(frozen=True)
class JourneysLstmConfig:
    """The LSTM's size and its BPE vocabulary (``tokenizer_dir`` is filled in by the train job)."""

    tokenizer_dir: str = field(default="", metadata={"help": "Saved BPE tokenizer (set by the train job)."})
    bpe_vocab_size: int = field(default=4000, metadata={"help": "BPE vocabulary learnt on the corpus."})
    bpe_min_frequency: int = field(default=2, metadata={"help": "Fewest occurrences of a pair merged by BPE."})
    embedding_dim: int = field(default=256, metadata={"help": "Token embedding width."})
    hidden_size: int = field(default=512, metadata={"help": "LSTM state width."})
    num_layers: int = field(default=2, metadata={"help": "Stacked LSTM layers."})
    max_len: int = field(default=512, metadata={"help": "Longest journey in tokens; longer are cut."})
    dropout: float = field(default=0.1, metadata={"help": "Dropout on embeddings and between layers."})
    pooling: str = field(default="last", metadata={"help": "Default pooling of embed(): last, mean or first."})

    def __post_init__(self) -> None:
        if self.bpe_vocab_size < 258:
            raise ValueError(f"bpe_vocab_size must be at least 258 (bytes + boundary), got {self.bpe_vocab_size}")
        for name in ("bpe_min_frequency", "embedding_dim", "hidden_size", "num_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if self.max_len < 2:
            raise ValueError(f"max_len must be at least 2, got {self.max_len}")
        check_fraction("dropout", self.dropout)
        check_pooling(self.pooling)


class JourneysLstmNetConfig(PreTrainedConfig):
    """The network's Hugging Face config (``config.json`` of a saved encoder)."""

    model_type = "custembed_journeys_lstm"

    vocab_size: int = 258
    embedding_dim: int = 256
    hidden_size: int = 512
    num_layers: int = 2
    dropout: float = 0.1
    pad_token_id: int | None = 0


class LstmBase(nn.Module):
    """Embedding and LSTM: ``last_hidden_state`` for embeddings and the head."""

    def __init__(self, config: JourneysLstmNetConfig) -> None:
        super().__init__()
        self.tokens = nn.Embedding(config.vocab_size, config.embedding_dim)
        self.dropout = nn.Dropout(config.dropout)
        self.lstm = nn.LSTM(
            config.embedding_dim,
            config.hidden_size,
            num_layers=config.num_layers,
            batch_first=True,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
        )

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        state: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> CausalLMOutput:
        # Right padding: the LSTM reads left to right, so padding never reaches a real position.
        hidden, new_state = self.lstm(self.dropout(self.tokens(input_ids)), state)  # [B, L, H]
        output = CausalLMOutput(logits=None)
        output["last_hidden_state"] = hidden
        output["state"] = new_state
        return output


class JourneysLstmModel(PreTrainedModel):
    """LSTM language model: logits of the next token at every position."""

    config_class = JourneysLstmNetConfig
    base_model_prefix = "lstm"
    main_input_name = "input_ids"
    config: JourneysLstmNetConfig

    def __init__(self, config: JourneysLstmNetConfig) -> None:
        super().__init__(config)
        self.lstm = LstmBase(config)
        self.head = nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.lstm.tokens

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.lstm.tokens = cast(nn.Embedding, value)

    def get_output_embeddings(self) -> nn.Module:
        return self.head

    def set_output_embeddings(self, new_embeddings: nn.Module) -> None:
        self.head = cast(nn.Linear, new_embeddings)

    def _init_weights(self, module: nn.Module) -> None:
        # The LSTM keeps torch's own initialisation, and the embedding its unit-variance one: with
        # GPT-2's std 0.02 the LSTM's inputs are near zero and it idles on the unigram plateau.
        if isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=1.0)
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        state: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> CausalLMOutput:
        base = self.lstm(input_ids, attention_mask, state)
        logits = self.head(base["last_hidden_state"])  # [B, L, V]
        loss = None
        if labels is not None:
            # position t predicts token t + 1, as GPT2LMHeadModel does with the same labels
            loss = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX
            )
        output = CausalLMOutput(loss=loss, logits=logits)
        output["state"] = base["state"]
        return output


def sample_next(
    logits: torch.Tensor, *, temperature: float, top_k: int, top_p: float, generator: torch.Generator
) -> torch.Tensor:
    """One sampled id per row of ``logits`` ``[B, V]`` after temperature, top-k and nucleus filtering; ``[B]``."""
    logits = logits.float() / max(temperature, 1e-6)
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # [B, 1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        ordered, order = torch.sort(logits, descending=True, dim=-1)
        mass = torch.softmax(ordered, dim=-1).cumsum(dim=-1)
        # drop a token when the tokens before it already hold top_p; the most likely always stays
        drop = (mass - torch.softmax(ordered, dim=-1)) >= top_p
        logits = logits.scatter(-1, order, ordered.masked_fill(drop, float("-inf")))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


class JourneysLstmEncoder(JourneyLmEncoder):
    """The LSTM baseline over journey BPE tokens."""

    kind: ClassVar[str] = "journeys_lstm"
    config_class: ClassVar[type[Any]] = JourneysLstmConfig

    @classmethod
    def model_class(cls) -> type[PreTrainedModel]:
        return JourneysLstmModel

    @classmethod
    def from_config(cls, config: Any) -> JourneysLstmEncoder:
        if not config.tokenizer_dir:
            raise ValueError("journeys_lstm needs tokenizer_dir: the train job learns the BPE before building it")
        tokenizer = load_tokenizer(config.tokenizer_dir)
        model = JourneysLstmModel(
            JourneysLstmNetConfig(
                vocab_size=len(tokenizer),
                embedding_dim=config.embedding_dim,
                hidden_size=config.hidden_size,
                num_layers=config.num_layers,
                dropout=config.dropout,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
        return cls(config, model, tokenizer)

    def attentions(self, inputs: Inputs) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError("an LSTM language model has no attention to show")

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
        generator = torch.Generator().manual_seed(seed)
        boundary = int(self.tokenizer.eos_token_id)
        texts = []
        with self._eval_mode():
            # one prompt at a time: prompts differ in length and the LSTM state is per sequence
            for prompt in prompts:
                ids = self.tokenizer(journey_input(prompt, closed=False), return_tensors="pt")["input_ids"]
                output = self.model(input_ids=ids.to(self.device))
                new: list[int] = []
                for _ in range(max(0, min(max_new_tokens, self.max_len - ids.shape[1]))):
                    token = sample_next(
                        output.logits[:, -1].cpu(),
                        temperature=temperature,
                        top_k=top_k,
                        top_p=top_p,
                        generator=generator,
                    )
                    if int(token) == boundary:
                        break
                    new.append(int(token))
                    output = self.model(input_ids=token.view(1, 1).to(self.device), state=output["state"])
                texts.append(clean_text(f"{prompt} {self.tokenizer.decode(new)}"))
        return texts

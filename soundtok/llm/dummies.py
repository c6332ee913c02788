"""Tiny stand-ins for tests and examples: a word-level chat tokenizer and a 2-layer Llama, both built in memory.

The tokenizer splits text into words, single whitespace characters and punctuation (every piece is one token, so
a rendered prompt reads token by token) and uses a ChatML template like SmolLM2's, without the default system
prompt.

>>> tok = tiny_chat_tokenizer()
>>> tok.convert_ids_to_tokens(tok("a dog barks .", add_special_tokens=False)["input_ids"])
['a', ' ', 'dog', ' ', 'barks', ' ', '.']
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from soundtok.llm.prompt import CHATML_TEMPLATE

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

SPECIAL = ("<unk>", "<|im_start|>", "<|im_end|>")
WORDS = (
    "\n", " ", ".", ",", "?", "!", "system", "user", "assistant", "you", "are", "a", "helpful", "what", "is", "this",
    "it", "sound", "dog", "barks", "cat", "speech", "say", "describe", "the", "audio", "now", "hello", "yes", "no",
)  # fmt: skip


def tiny_chat_tokenizer(words: Sequence[str] = WORDS) -> PreTrainedTokenizerBase:
    """A word-level HF tokenizer over ``SPECIAL + words`` (unknown words become ``<unk>``) with a ChatML template."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(dict.fromkeys([*SPECIAL, *words]))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"\s|\w+|[^\w\s]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens(list(SPECIAL))
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<unk>",
    )
    tok.chat_template = CHATML_TEMPLATE
    return tok


def tiny_causal_lm(vocab_size: int, *, tie_word_embeddings: bool = True, seed: int = 0) -> PreTrainedModel:
    """A randomly initialised 2-layer Llama (hidden size 16) with ``vocab_size`` embedding rows."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    torch.random.set_rng_state(state)
    return model


def save_tiny_llm(folder: str | os.PathLike[str]) -> Path:
    """The tiny chat tokenizer and a tiny Llama over it, saved as a Hugging Face folder (what ``load_llm`` reads)."""
    folder = Path(folder)
    tok = tiny_chat_tokenizer()
    tiny_causal_lm(len(tok)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder

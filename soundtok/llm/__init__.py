"""The audio LLM bridge: audio tokens in a causal LM's vocabulary.

* :mod:`soundtok.llm.models`: ``load_llm(name_or_path) -> (model, tokenizer)`` for a local HF folder or an offline
  default (``smollm2-135m``, ``gemma3-270m``), converted once from GGUF and cached.
* :mod:`soundtok.llm.vocab`: ``extend_vocab(model, tokenizer, audio_tokenizer) -> AudioVocab``: one token per
  (level, code) plus ``<|audio_start|>`` / ``<|audio_end|>``, new rows initialised at the mean of the old ones;
  the interleaving rule that turns a multi-level ``Tokens`` item into one flat id sequence and back.
* :mod:`soundtok.llm.prompt`: ``render(turns, tokenizer, vocab) -> Rendered`` (``input_ids``, ``loss_weights``),
  the one prompt format.
* :mod:`soundtok.llm.lora`: ``apply_lora(model, vocab, LoRASettings())`` (peft LoRA + the new audio rows only),
  ``weighted_lm_loss`` (per-token weights + z-loss; ``supervised_mask`` keeps only the supervised logits),
  ``merge_and_save``.
* :mod:`soundtok.llm.train`: ``train_lora(...) -> LoRARun``: the resumable LoRA loop over rendered instructions.
* :mod:`soundtok.llm.instructions`: ``build_instructions(manifest)``: instruction examples (captions, classification,
  ASR, open questions, text-to-audio) from the corpus labels, following the corpus splits; ``render_instruction``.

Only the standard library and torch are imported here; transformers is imported when a model or tokenizer is
loaded.
"""

from soundtok.llm.instructions import (
    Instruction,
    InstructionError,
    build_instructions,
    from_jsonl,
    render_instruction,
    split_counts,
    to_jsonl,
)
from soundtok.llm.lora import (
    LoRASettings,
    LossParts,
    apply_lora,
    merge_and_save,
    supervised_mask,
    trainable_parameters,
    weighted_lm_loss,
)
from soundtok.llm.models import (
    DEFAULT_LLM,
    OFFLINE_LLMS,
    LLMUnavailableError,
    OfflineLLM,
    cache_root,
    llm_folder,
    load_llm,
    load_llm_tokenizer,
    verify_cache,
)
from soundtok.llm.prompt import (
    CHATML_TEMPLATE,
    AudioPart,
    LossWeights,
    PromptFormat,
    PromptFormatError,
    Rendered,
    TextPart,
    TokenKind,
    Turn,
    render,
)
from soundtok.llm.train import LoRARun, train_lora
from soundtok.llm.vocab import (
    AUDIO_END,
    AUDIO_START,
    AudioCode,
    AudioTokenError,
    AudioVocab,
    Interleaving,
    add_audio_tokens,
    extend_vocab,
    interleave_order,
    resize_embeddings,
    untie_output_embeddings,
)

__all__ = [
    "AUDIO_END",
    "AUDIO_START",
    "CHATML_TEMPLATE",
    "DEFAULT_LLM",
    "OFFLINE_LLMS",
    "add_audio_tokens",
    "apply_lora",
    "AudioCode",
    "AudioPart",
    "AudioTokenError",
    "AudioVocab",
    "build_instructions",
    "cache_root",
    "extend_vocab",
    "from_jsonl",
    "Instruction",
    "InstructionError",
    "interleave_order",
    "Interleaving",
    "llm_folder",
    "LLMUnavailableError",
    "load_llm",
    "load_llm_tokenizer",
    "LoRARun",
    "LoRASettings",
    "LossParts",
    "LossWeights",
    "merge_and_save",
    "OfflineLLM",
    "PromptFormat",
    "PromptFormatError",
    "render",
    "render_instruction",
    "Rendered",
    "resize_embeddings",
    "split_counts",
    "supervised_mask",
    "TextPart",
    "to_jsonl",
    "TokenKind",
    "train_lora",
    "trainable_parameters",
    "Turn",
    "untie_output_embeddings",
    "verify_cache",
    "weighted_lm_loss",
]

"""The audio-LLM recipe: one command from a corpus, an audio tokenizer and a causal LM to a merged audio LLM.

``soundtok train configs/lora-smollm2-msn.yaml runs/lora-msn`` (a config whose ``recipe`` is ``lora``) runs:

1. **Instructions** from the corpus labels (:func:`~soundtok.llm.build_instructions`), written to
   ``RUN/instructions.jsonl`` (the train split trains; the test split is for :mod:`benchmarks.audio_llm`).
2. **Tokens**: every item that has an instruction, tokenized once into the token store ``RUN/tokens``
   (:func:`~soundtok.corpus.tokenize.tokenize_corpus`; a killed run goes on where it stopped).
3. **LoRA**: the LLM (an offline default or a local HF folder), extended with the audio tokenizer's tokens
   (:func:`~soundtok.llm.extend_vocab`), trained by :func:`~soundtok.llm.train_lora` in ``RUN`` (resumable).
4. **Export**: once ``steps`` are done, the adapter is merged into a fresh copy of the extended LLM and saved to
   ``RUN/model`` (HF weights + tokenizer + ``audio_vocab.json`` + ``soundtok_llm.json``, naming the audio
   tokenizer), which :func:`load_audio_llm` and ``soundtok chat RUN/model ...`` load.

Rerunning the same command resumes at the first unfinished stage. Every value of :class:`LLMTrainConfig` can be
overridden on the command line (``steps=200 lora.audio_weight=1``). What the saved training state is built on (the
LLM, the audio tokenizer's fingerprint, ``audio_init``, ``untie_head`` and ``seed``, from which the extended
embedding is rebuilt on every resume) is written to ``RUN/base.json``; a resume with other values is refused, since
the state would silently be applied to another base. A run folder from before ``base.json`` existed was built with
``audio_init: mean``; one whose ``base.json`` predates ``untie_head`` was built tied.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import Field

from soundtok.errors import CheckpointError, SoundtokError
from soundtok.fileio import atomic_write
from soundtok.registry import RecipeEntry, register_recipe
from soundtok.train.config import Strict, read_config

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from soundtok.corpus import Manifest
    from soundtok.llm.lora import LoRASettings
    from soundtok.llm.prompt import PromptFormat
    from soundtok.tokenizers.base import AudioTokenizer
    from soundtok.types import Tokens

log = logging.getLogger(__name__)

MODEL_DIR = "model"
TOKENS_DIR = "tokens"
INSTRUCTIONS_FILE = "instructions.jsonl"
META_FILE = "soundtok_llm.json"
BASE_FILE = "base.json"


class LLMTrainConfig(Strict):
    recipe: str = "lora"
    name: str = "audio-llm"
    llm: str = "smollm2-135m"  # an offline default (soundtok.llm.OFFLINE_LLMS) or a local HF folder
    audio_tokenizer: str = "msn-16k"  # a preset name or a checkpoint folder
    manifest: Path | None = None  # a manifest JSONL; else the shared corpus below
    corpus: Path | None = None  # default: $SOUNDTOK_CORPUS or ../shared/corpus
    datasets: list[str] | None = None  # default: every dataset of the corpus
    tasks: list[str] | None = None  # default: every task of soundtok.llm.instructions.TASKS
    templates_per_item: int = Field(1, ge=1)
    audio_init: Literal["mean", "random", "codebook"] = "codebook"  # audio-token input rows (soundtok.llm.vocab)
    untie_head: bool = False  # give a tied LLM its own output head first (soundtok.llm.vocab.untie_output_embeddings)
    lora: dict[str, Any] = Field(default_factory=dict)  # fields of soundtok.llm.LoRASettings
    steps: int = Field(1000, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(2e-4, gt=0)
    max_length: int = Field(1024, ge=8)  # longer train examples (long clips) are dropped, counted in the log
    micro_batch_ids: int = Field(512, ge=0)  # padded ids per forward (soundtok.llm.train); 0: the whole batch
    seed: int = 0
    checkpoint_every: int = Field(50, ge=1)
    log_every: int = Field(10, ge=1)

    def lora_settings(self) -> LoRASettings:
        from soundtok.llm.lora import LoRASettings

        try:
            return LoRASettings.from_dict(self.lora)
        except (TypeError, ValueError) as exc:
            raise SoundtokError(f"invalid lora settings {self.lora}: {exc}") from None


def load_llm_config(path: str | os.PathLike[str] | None, overrides: list[str] | None = None) -> LLMTrainConfig:
    return read_config(path, overrides, LLMTrainConfig)


def _manifest(cfg: LLMTrainConfig) -> Manifest:
    from soundtok.corpus import Manifest
    from soundtok.corpus.loaders import load_shared_corpus

    if cfg.manifest is not None:
        return Manifest.from_jsonl(cfg.manifest)
    return load_shared_corpus(cfg.corpus, cfg.datasets)


def prepare_data(cfg: LLMTrainConfig, run_dir: Path, audio: AudioTokenizer) -> list[Any]:
    """Stages 1 and 2: the instructions (written once, checked against the config on later calls) and the token
    store of their items."""
    from soundtok.corpus import Manifest
    from soundtok.corpus.tokenize import tokenize_corpus
    from soundtok.llm.instructions import build_instructions, from_jsonl, to_jsonl

    manifest = _manifest(cfg)
    instructions = build_instructions(
        manifest, seed=cfg.seed, templates_per_item=cfg.templates_per_item, tasks=cfg.tasks
    )
    path = run_dir / INSTRUCTIONS_FILE
    if path.exists():
        if from_jsonl(path) != instructions:
            raise SoundtokError(
                f"{path} holds other instructions than this config builds (corpus, datasets, tasks, seed or "
                "templates_per_item changed); use a new run folder"
            )
    else:  # every process of a multi-process run builds the same list; replacing it is harmless
        to_jsonl(instructions, path, force=True)
    needed = {ins.item_id for ins in instructions}
    items = Manifest([item for item in manifest if item.id in needed])
    tokenize_corpus(items, audio, run_dir / TOKENS_DIR)
    return instructions


def _extended_llm(cfg: LLMTrainConfig, audio: AudioTokenizer) -> tuple[PreTrainedModel, Any, Any]:
    from soundtok.llm.models import load_llm
    from soundtok.llm.vocab import extend_vocab

    model, tokenizer = load_llm(cfg.llm)
    vocab = extend_vocab(model, tokenizer, audio, init=cfg.audio_init, untie=cfg.untie_head, seed=cfg.seed)
    return model, tokenizer, vocab


def check_base(cfg: LLMTrainConfig, run_dir: Path, audio: AudioTokenizer) -> None:
    """Write ``RUN/base.json`` (module docstring), or refuse to resume on another base than the one it names."""
    from soundtok.train.state import STATE_DIR

    base = {"llm": cfg.llm, "audio_tokenizer": str(audio.identity), "audio_init": cfg.audio_init,
            "untie_head": cfg.untie_head, "seed": cfg.seed}  # fmt: skip
    path = run_dir / BASE_FILE
    older = {"untie_head": False}  # keys added to base.json later, as the runs before them were built
    if path.is_file():
        saved = older | json.loads(path.read_text())
    elif any((run_dir / STATE_DIR).glob("step-*")):  # a run from before base.json: only the init is known
        saved = older | {"audio_init": "mean"}
    else:
        saved = {}
    changed = {k: (saved[k], base[k]) for k in saved if k in base and saved[k] != base[k]}
    if changed:
        what = ", ".join(f"{k}: {old!r} in the run, {new!r} now" for k, (old, new) in changed.items())
        raise SoundtokError(
            f"{run_dir} was trained on another base ({what}); its saved state only fits that one. "
            "Resume with the run's settings, or train in a new run folder"
        )
    if int(os.environ.get("RANK", "0")) == 0:
        text = json.dumps(base, indent=2) + "\n"
        atomic_write(path, lambda tmp: tmp.write_text(text), force=True)


def train_llm(cfg: LLMTrainConfig, run_dir: str | os.PathLike[str]) -> Path | None:
    """Run (or resume) the recipe (module docstring); returns ``RUN/model`` once it is exported."""
    import soundtok
    from soundtok.llm.lora import merge_and_save
    from soundtok.llm.train import train_lora
    from soundtok.store import TokenStore

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    settings = cfg.lora_settings()
    audio = soundtok.load(cfg.audio_tokenizer)
    instructions = prepare_data(cfg, run_dir, audio)
    store = TokenStore(run_dir / TOKENS_DIR)

    check_base(cfg, run_dir, audio)
    model, tokenizer, vocab = _extended_llm(cfg, audio)
    run = train_lora(
        model, tokenizer, vocab, instructions, store.get, settings, run_dir,
        steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, max_length=cfg.max_length, seed=cfg.seed,
        checkpoint_every=cfg.checkpoint_every, log_every=cfg.log_every, micro_batch_ids=cfg.micro_batch_ids,
    )  # fmt: skip
    if run.adapter_dir is None:
        return None
    out = run_dir / MODEL_DIR
    if int(os.environ.get("RANK", "0")) != 0:  # one process exports
        return out
    from peft import PeftModel

    fresh, tokenizer, vocab = _extended_llm(cfg, audio)
    peft_model = PeftModel.from_pretrained(fresh, str(run.adapter_dir))
    merge_and_save(peft_model, out, tokenizer, vocab, force=True)
    meta = {
        "audio_tokenizer": cfg.audio_tokenizer,
        "llm": cfg.llm,
        "steps": run.steps,
        "train_tokens": run.train_tokens,
        "lora": settings.to_dict(),
        "train_config": json.loads(cfg.model_dump_json()),
        # tells two exports of the same config apart (a run trained again on another machine, say)
        "exported_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    text = json.dumps(meta, indent=2) + "\n"
    atomic_write(out / META_FILE, lambda tmp: tmp.write_text(text), force=True)
    log.info("merged audio LLM in %s", out)
    return out


# ---------------------------------------------------------------------------------------------------------------
# using a trained audio LLM
@dataclass
class AudioLLM:
    """A causal LM with audio tokens, its prompt format and the audio tokenizer whose tokens it reads and writes."""

    model: PreTrainedModel
    fmt: PromptFormat
    audio: AudioTokenizer

    def audio_tokens(self, wav: torch.Tensor, sample_rate: int) -> Tokens:
        """``wav [C, T]`` or ``[1, C, T]`` -> one item of this model's audio tokens."""
        return self.audio.encode(wav if wav.dim() == 3 else wav[None], sample_rate)

    def ask(self, question: str, wav: torch.Tensor | None = None, sample_rate: int | None = None, **kw: Any) -> str:
        """The text answer to ``question`` about ``wav`` (or about nothing); ``kw`` go to :func:`generate_text`."""
        if wav is not None and sample_rate is None:
            raise ValueError("pass the sample_rate of wav")
        tokens = None if wav is None else self.audio_tokens(wav, int(sample_rate))  # type: ignore[arg-type]
        return self.ask_tokens(question, tokens, **kw)

    def ask_tokens(self, question: str, tokens: Tokens | None, **kw: Any) -> str:
        """As :meth:`ask`, for audio already tokenized (one item of this model's tokenizer)."""
        from soundtok.llm.generate import generate_text
        from soundtok.llm.prompt import Turn

        turn = Turn.user(question) if tokens is None else Turn.user(tokens, "\n" + question)
        return generate_text(self.model, self.fmt, [turn], **kw).text

    def speak(self, prompt: str, **kw: Any) -> torch.Tensor:
        """Audio ``[1, C, T]`` at ``self.audio.sample_rate`` generated for ``prompt``, via :func:`generate_audio`."""
        from soundtok.llm.generate import generate_audio
        from soundtok.llm.prompt import Turn

        answer = generate_audio(self.model, self.fmt, [Turn.user(prompt)], **kw)
        return self.audio.decode(answer.tokens)


def load_audio_llm(folder: str | os.PathLike[str], *, device: str | torch.device = "cpu") -> AudioLLM:
    """Load ``RUN/model`` written by :func:`train_llm` (or any folder with the same files)."""
    import soundtok
    from soundtok.llm.models import load_llm
    from soundtok.llm.prompt import CHATML_TEMPLATE, PromptFormat
    from soundtok.llm.vocab import AudioVocab

    folder = Path(folder)
    meta_path = folder / META_FILE
    try:
        meta = json.loads(meta_path.read_text())
        audio_name = meta["audio_tokenizer"]
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(
            f"{meta_path}: cannot read which audio tokenizer this model uses ({exc}); an audio LLM folder is "
            "written by 'soundtok train' with a lora recipe"
        ) from None
    model, tokenizer = load_llm(folder, device=device)
    vocab = AudioVocab.load(folder, tokenizer)
    audio = soundtok.load(audio_name)
    vocab.tokenizer.check_same(audio.identity)  # the checkpoint behind the name must be the one trained with
    template = None if getattr(tokenizer, "chat_template", None) else CHATML_TEMPLATE
    return AudioLLM(model, PromptFormat(tokenizer, vocab, chat_template=template), audio.to(device))


register_recipe(RecipeEntry("lora", load_llm_config, train_llm))

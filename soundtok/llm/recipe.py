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

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, replace
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
    from soundtok.llm.instructions import Instruction
    from soundtok.llm.lora import LoRASettings
    from soundtok.llm.prompt import PromptFormat
    from soundtok.llm.vocab import PromptAudio
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
    question_style: Literal["choices", "short"] = "choices"  # short: no list of classes (soundtok.llm.instructions)
    # a fraction of the train split's items (hashed by item id) held out as split "validation", to select settings on
    validation_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    # control run: the answers of each classification task shuffled across its train instructions (seeded)
    permute_labels: bool = False
    prompt_max_seconds: float | None = Field(None, gt=0)  # prompt audio cut to its first seconds (PromptAudio)
    collapse_runs: bool = False  # prompt audio with runs of one code written once (one-level tokenizers)
    audio_init: Literal["mean", "random", "codebook"] = "codebook"  # audio-token input rows (soundtok.llm.vocab)
    untie_head: bool = False  # give a tied LLM its own output head first (soundtok.llm.vocab.untie_output_embeddings)
    lora: dict[str, Any] = Field(default_factory=dict)  # fields of soundtok.llm.LoRASettings
    steps: int = Field(1000, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(2e-4, gt=0)
    new_rows_lr: float | None = Field(None, gt=0)  # the new audio rows' own learning rate (no weight decay); None: lr
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

    def prompt_audio(self) -> PromptAudio:
        from soundtok.llm.vocab import PromptAudio

        return PromptAudio(self.prompt_max_seconds, self.collapse_runs)


def load_llm_config(path: str | os.PathLike[str] | None, overrides: list[str] | None = None) -> LLMTrainConfig:
    return read_config(path, overrides, LLMTrainConfig)


def run_manifest(cfg: LLMTrainConfig) -> Manifest:
    """The items a run of ``cfg`` builds its instructions from: its manifest file, or the shared corpus."""
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
    from soundtok.llm.instructions import from_jsonl, to_jsonl

    manifest = run_manifest(cfg)
    instructions = run_instructions(cfg, manifest)
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


def run_instructions(cfg: LLMTrainConfig, manifest: Manifest, *, true_labels: bool = False) -> list[Instruction]:
    """The instructions a run of ``cfg`` trains and is scored on (stage 1); ``true_labels`` leaves out the label
    permutation of a control run (its readers and blind prior are scored on the real labels)."""
    from soundtok.llm.instructions import build_instructions

    instructions = build_instructions(
        manifest, seed=cfg.seed, templates_per_item=cfg.templates_per_item, tasks=cfg.tasks,
        question_style=cfg.question_style,
    )  # fmt: skip
    instructions = hold_out(instructions, cfg.validation_fraction, cfg.seed)
    return permute_labels(instructions, cfg.seed) if cfg.permute_labels and not true_labels else instructions


def hold_out(instructions: list[Instruction], fraction: float, seed: int) -> list[Instruction]:
    """The train-split instructions of a ``fraction`` of the items (chosen by a hash of ``seed`` and the item id, so
    every task of an item lands on the same side) moved to split ``"validation"``."""
    if fraction <= 0:
        return instructions

    def held(item_id: str) -> bool:
        digest = hashlib.sha256(f"validation:{seed}:{item_id}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < fraction

    return [replace(i, split="validation") if i.split == "train" and held(i.item_id) else i for i in instructions]


def permute_labels(instructions: list[Instruction], seed: int) -> list[Instruction]:
    """The control for "the model learned from the audio": each classification task's train answers shuffled
    across its train instructions (seeded), so the labels keep their frequencies and lose their tie to the audio.
    Other splits and tasks are unchanged."""
    import random

    from soundtok.llm.instructions import CLASSIFY_TASKS

    out = list(instructions)
    for task in sorted(CLASSIFY_TASKS):
        where = [n for n, i in enumerate(out) if i.task == task and i.split == "train"]
        answers = [out[n].answer for n in where]
        random.Random(f"permute:{seed}:{task}").shuffle(answers)
        for n, answer in zip(where, answers, strict=True):
            out[n] = replace(out[n], answer=answer, references=(answer,))
    return out


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
            "untie_head": cfg.untie_head, "seed": cfg.seed, "prompt_audio": cfg.prompt_audio().to_dict()}  # fmt: skip
    path = run_dir / BASE_FILE
    # keys added to base.json later, as the runs before them were built
    older = {"untie_head": False, "prompt_audio": {"max_seconds": None, "collapse_runs": False}}
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
        new_rows_lr=cfg.new_rows_lr, prompt_audio=cfg.prompt_audio(),
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
        "prompt_audio": cfg.prompt_audio().to_dict(),
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
    prompt_audio: PromptAudio | None = None  # how audio in a question is shown (as in training); None: as encoded

    def audio_tokens(self, wav: torch.Tensor, sample_rate: int) -> Tokens:
        """``wav [C, T]`` or ``[1, C, T]`` -> one item of this model's audio tokens."""
        return self.audio.encode(wav if wav.dim() == 3 else wav[None], sample_rate)

    def question_audio(self, tokens: Tokens) -> Tokens:
        """``tokens`` as the model read audio in its questions during training (:class:`PromptAudio`)."""
        return tokens if self.prompt_audio is None else self.prompt_audio(tokens)

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

        turn = Turn.user(question) if tokens is None else Turn.user(self.question_audio(tokens), "\n" + question)
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
    from soundtok.llm.vocab import AudioVocab, PromptAudio

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
    fmt = PromptFormat(tokenizer, vocab, chat_template=template)
    return AudioLLM(model, fmt, audio.to(device), PromptAudio(**meta.get("prompt_audio", {})))


register_recipe(RecipeEntry("lora", load_llm_config, train_llm))

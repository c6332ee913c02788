"""The LoRA training loop: instruction examples with audio tokens -> a peft adapter, resumable after a kill.

Definitions
-----------
*Examples.* Every ``train``-split :class:`~soundtok.llm.Instruction` is rendered once
(:func:`~soundtok.llm.render_instruction` with its item's tokens, loss weights from :class:`LoRASettings`:
prompt 0, answer text 1, answer audio ``settings.audio_weight``); examples longer than ``max_length`` ids are
dropped (counted in :attr:`LoRARun.dropped` and logged), never truncated: a cut answer would teach the model to
stop mid-audio.

*Batches* are a function of ``(seed, step)`` only: ``random.Random(f"lora:{seed}:{step}")`` draws ``batch_size``
examples with replacement, so a resumed run sees exactly the batches a straight run sees. With several processes
each takes every ``num_processes``-th example of the step's batch.

*Micro-batches* (:func:`micro_batches`): a process's examples, sorted by length, are cut into groups of at most
``micro_batch_ids`` padded ids (``len(group) * longest``; an example longer than that is a group of its own), and
each group is padded on the right to its longest with the tokenizer's pad id, weight 0 and attention mask 0
(:func:`collate`). The instruction lengths are skewed (SmolLM2 + msn-16k: median 66 ids, 90th percentile 153,
longest 715), so one padded batch of 8 is half padding; a budget of 512 ids made a step 2.19x faster than one
padded forward (11.8 vs 25.8 s on 1 CPU thread) and cut peak memory from 10.4 to 3.4 GB
(``benchmarks/lora_throughput.py``). ``micro_batch_ids=0`` pads the whole batch into one forward (what a GPU
wants). Gradients accumulate over the groups and the loss of each group is
divided by the totals of the whole batch, so a step's loss and gradient do not depend on the grouping.

*Step*: ``loss = weighted_lm_loss(logits, input_ids, loss_weights, settings.z_loss).total`` with the logits of the
supervised positions only (``logits_to_keep=supervised_mask(loss_weights)``: same loss, the head skips the prompt),
AdamW over the trainable parameters only (LoRA matrices and the new audio rows), gradients clipped to norm 1.
LoRA dropout draws from a generator seeded by ``(seed, step, rank)``, so it too is a function of the step.

*Resume*: every ``checkpoint_every`` steps (and at the end of each call) the accelerate state (weights, optimiser,
counters) is written to ``run_dir/state/step-XXXXXXX`` (:func:`soundtok.train.state.save_state`); a new call on the
same ``run_dir`` continues from the newest one, and ``n`` steps then ``m`` steps give the weights of ``n + m``
straight steps. When ``steps`` are done the adapter is saved with peft ``save_pretrained`` to ``run_dir/adapter``:
the LoRA matrices and the trained deltas of the new rows, not the base embedding, which is rebuilt by
:func:`~soundtok.llm.extend_vocab` from the same seed before the adapter is loaded.

>>> import soundtok, soundtok.testing.dummies, tempfile, torch
>>> from soundtok.llm import Instruction, LoRASettings, extend_vocab
>>> from soundtok.llm.dummies import tiny_causal_lm, tiny_chat_tokenizer
>>> toy = soundtok.load("toy-tiny")
>>> tok = tiny_chat_tokenizer(); model = tiny_causal_lm(len(tok))
>>> vocab = extend_vocab(model, tok, toy)
>>> audio = toy.encode(torch.randn(1, 1, 640), toy.sample_rate)
>>> data = [Instruction("a/0", "a", "caption", "train", "describe it", "a dog", True, ("a dog",))]
>>> run = train_lora(model, tok, vocab, data, lambda _: audio, LoRASettings(r=2, alpha=4), tempfile.mkdtemp(), steps=2)
>>> run.steps, run.dropped, run.adapter_dir.name
(2, 0, 'adapter')
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from soundtok.llm.instructions import Instruction, render_instruction
from soundtok.llm.lora import LoRASettings, apply_lora, supervised_mask, weighted_lm_loss
from soundtok.llm.prompt import CHATML_TEMPLATE, LossWeights, PromptFormat, Rendered
from soundtok.train.loop import LoopSettings, Recipe, StepOutput, run
from soundtok.types import Tokens

if TYPE_CHECKING:
    from accelerate import Accelerator
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from soundtok.llm.vocab import AudioVocab, PromptAudio

log = logging.getLogger(__name__)

ADAPTER_DIR = "adapter"
KEEP_STATES = 2


@dataclass(frozen=True)
class LoRARun:
    """What :func:`train_lora` did. ``steps`` and ``train_tokens`` count the whole run (resumed parts included);
    ``final_loss``, ``losses`` and ``seconds`` this call only. ``adapter_dir`` is None while steps remain."""

    steps: int
    final_loss: float  # total loss of the last step of this call (nan if it ran none)
    train_tokens: int  # supervised target tokens seen (weight > 0), over all processes
    seconds: float
    dropped: int  # train examples longer than max_length, left out
    adapter_dir: Path | None
    losses: tuple[float, ...] = ()  # total loss of each step of this call


@dataclass(frozen=True)
class Batch:
    """Right-padded examples: ``input_ids``, ``attention_mask`` (int64) and ``loss_weights`` (float32), all
    ``[B, T]``; padding has mask 0 and weight 0."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    loss_weights: torch.Tensor

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.loss_weights.to(device))


def collate(examples: Sequence[Rendered], pad_id: int) -> Batch:
    """Pad ``examples`` on the right to the longest with ``pad_id``, weight 0 and attention mask 0."""
    if not examples:
        raise ValueError("cannot collate an empty batch")
    longest = max(len(r.input_ids) for r in examples)
    ids = torch.full((len(examples), longest), pad_id, dtype=torch.long)  # [B, T]
    mask = torch.zeros(len(examples), longest, dtype=torch.long)  # [B, T]
    weights = torch.zeros(len(examples), longest, dtype=torch.float32)  # [B, T]
    for b, r in enumerate(examples):
        n = len(r.input_ids)
        ids[b, :n] = r.input_ids
        mask[b, :n] = 1
        weights[b, :n] = r.loss_weights
    return Batch(ids, mask, weights)


def micro_batches(lengths: Sequence[int], max_ids: int) -> list[list[int]]:
    """Positions into ``lengths`` grouped into micro-batches (module docstring): sorted by length, each group at most
    ``max_ids`` padded ids (``len(group) * longest``), a longer example alone; ``max_ids=0``: one group of all.

    >>> micro_batches([50, 300, 60, 40], 256)
    [[3, 0, 2], [1]]
    """
    if max_ids < 0:
        raise ValueError(f"micro_batch_ids must be >= 0 (0: no micro-batches), got {max_ids}")
    if max_ids == 0:
        return [list(range(len(lengths)))]
    groups: list[list[int]] = []
    group: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        if group and (len(group) + 1) * lengths[i] > max_ids:
            groups.append(group)
            group = []
        group.append(i)
    return groups + [group] if group else groups


def param_groups(
    named: Sequence[tuple[str, torch.nn.Parameter]], lr: float, new_rows_lr: float | None
) -> list[dict[str, Any]]:
    """AdamW groups: the LoRA matrices at ``lr`` (AdamW's default weight decay); with ``new_rows_lr``, the new audio
    rows (peft's ``trainable_tokens`` deltas) in a group of their own at that rate and without weight decay, since
    rows that start from scratch need larger steps than a low-rank update of trained weights (and decay would pull
    them to the init). Without it every trainable parameter is one group at ``lr``."""
    if new_rows_lr is None:
        return [{"params": [p for _, p in named], "lr": lr}]
    rows = [p for n, p in named if "trainable_tokens" in n]
    if not rows:
        raise ValueError("new_rows_lr is set but no new audio rows train (lora.train_new_tokens is false)")
    other = [p for n, p in named if "trainable_tokens" not in n]
    return [{"params": other, "lr": lr}, {"params": rows, "lr": new_rows_lr, "weight_decay": 0.0}]


def batch_indices(seed: int, step: int, num_examples: int, batch_size: int) -> list[int]:
    """The examples of step ``step``: ``batch_size`` draws with replacement, a function of ``(seed, step)`` only."""
    rng = random.Random(f"lora:{seed}:{step}")
    return [rng.randrange(num_examples) for _ in range(batch_size)]


def render_examples(
    instructions: Sequence[Instruction],
    tokens_of: Callable[[str], Tokens],
    fmt: PromptFormat,
    *,
    max_length: int,
    split: str = "train",
    prompt_audio: PromptAudio | None = None,
) -> tuple[list[Rendered], int]:
    """``split``'s instructions rendered once each, and how many were dropped for being longer than
    ``max_length`` ids. ``prompt_audio`` is the view of audio read in a question (not of answer audio)."""
    kept: list[Rendered] = []
    dropped = 0
    for ins in instructions:
        if ins.split != split:
            continue
        tokens = tokens_of(ins.item_id)
        if prompt_audio is not None and ins.audio_in_prompt:
            tokens = prompt_audio(tokens)
        r = render_instruction(ins, fmt, tokens)
        if len(r.input_ids) > max_length:
            dropped += 1
            continue
        kept.append(r)
    return kept, dropped


class _Progress:
    """Counters saved with the accelerate state (``register_for_checkpointing``)."""

    def __init__(self) -> None:
        self.train_tokens = 0

    def state_dict(self) -> dict[str, Any]:
        return {"train_tokens": self.train_tokens}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.train_tokens = int(state["train_tokens"])


class LoRARecipe(Recipe):
    """One LoRA step over pre-rendered examples (module docstring), for :func:`soundtok.train.loop.run`."""

    name = "lora"
    loss_tag = "loss/total"
    console_tags = ("loss/total", "loss/ce", "loss/z")
    work_unit = "tokens"

    def __init__(
        self,
        model: PreTrainedModel,
        vocab: AudioVocab,
        examples: list[Rendered],
        pad_id: int,
        settings: LoRASettings,
        *,
        batch_size: int,
        lr: float,
        seed: int,
        micro_batch_ids: int,
        new_rows_lr: float | None = None,
    ) -> None:
        self.base_model, self.vocab, self.examples, self.pad_id = model, vocab, examples, pad_id
        self.settings, self.batch_size, self.lr, self.seed, self.micro_batch_ids = (
            settings,
            batch_size,
            lr,
            seed,
            micro_batch_ids,
        )
        self.new_rows_lr = new_rows_lr
        # supervised targets per example: positions 1.. with weight > 0 (position 0 is never a target)
        self.supervised = [int((r.loss_weights[1:] > 0).sum()) for r in examples]
        self.supervised_weight = [float(r.loss_weights[1:].sum()) for r in examples]  # weights are >= 0
        self.progress = _Progress()

    def setup(self, accelerator: Accelerator, run_dir: Path) -> None:
        torch.manual_seed(self.seed)  # identical LoRA initialisation on every process
        peft_model = apply_lora(self.base_model, self.vocab, self.settings)
        named = [(n, p) for n, p in peft_model.named_parameters() if p.requires_grad]
        self.params = [p for _, p in named]
        optimizer = torch.optim.AdamW(param_groups(named, self.lr, self.new_rows_lr))
        self.prepared, self.optimizer = accelerator.prepare(peft_model, optimizer)
        accelerator.register_for_checkpointing(self.progress)
        self.accelerator = accelerator

    def step(self, step: int) -> StepOutput:
        acc, examples = self.accelerator, self.examples
        rank, world = acc.process_index, acc.num_processes
        chosen = batch_indices(self.seed, step, len(examples), self.batch_size)
        mine = chosen[rank::world] or chosen[:1]  # more processes than the batch holds: repeat one
        totals = (sum(self.supervised_weight[i] for i in mine), sum(self.supervised[i] for i in mine))
        groups = micro_batches([len(examples[i].input_ids) for i in mine], self.micro_batch_ids)
        # dropout is a function of (seed, step, rank), so a resumed run draws the masks a straight run draws
        torch.manual_seed(hash((self.seed, step, rank)) & 0x7FFF_FFFF)  # hash of ints: the same in every interpreter
        self.prepared.train()
        self.optimizer.zero_grad(set_to_none=True)
        parts_sum = {"total": 0.0, "ce": 0.0, "z": 0.0}
        ids = 0
        for g, group in enumerate(groups):
            batch = collate([examples[mine[j]] for j in group], self.pad_id).to(acc.device)
            # gradients are averaged across processes once, after the last group
            sync = contextlib.nullcontext() if g == len(groups) - 1 else acc.no_sync(self.prepared)
            with sync:
                logits = _supervised_logits(self.prepared, batch)  # [N, V], or [B, T, V] without logits_to_keep
                parts = weighted_lm_loss(
                    logits, batch.input_ids, batch.loss_weights, self.settings.z_loss, batch_totals=totals
                )
                acc.backward(parts.total)
            for key in parts_sum:
                parts_sum[key] += float(getattr(parts, key).detach())
            ids += int(batch.attention_mask.sum())
        acc.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.progress.train_tokens += sum(self.supervised[i] for i in chosen)
        return StepOutput({f"loss/{k}": v for k, v in parts_sum.items()}, work=ids)

    def scalars(self) -> dict[str, float]:
        return {"train/supervised_tokens": float(self.progress.train_tokens)}

    def export(self, accelerator: Accelerator, run_dir: Path, step: int) -> Path:
        adapter_dir = run_dir / ADAPTER_DIR
        state = accelerator.get_state_dict(self.prepared)  # every process takes part: FSDP gathers the shards here
        if accelerator.is_main_process:
            # the LoRA matrices and the new rows' deltas only: peft would also store the whole resized embedding and
            # head (363 MB for SmolLM2), which extend_vocab rebuilds identically from its seed
            accelerator.unwrap_model(self.prepared).save_pretrained(
                str(adapter_dir), state_dict=state, save_embedding_layers=False
            )
            log.info("saved the LoRA adapter to %s", adapter_dir)
        accelerator.wait_for_everyone()
        return adapter_dir


def train_lora(
    model: PreTrainedModel,
    hf_tokenizer: PreTrainedTokenizerBase,
    vocab: AudioVocab,
    instructions: Sequence[Instruction],
    tokens_of: Callable[[str], Tokens],
    settings: LoRASettings,
    run_dir: str | os.PathLike[str],
    *,
    steps: int,
    batch_size: int = 4,
    lr: float = 2e-4,
    max_length: int = 1024,
    seed: int = 0,
    checkpoint_every: int = 50,
    log_every: int = 10,
    micro_batch_ids: int = 512,
    max_steps_this_run: int | None = None,
    new_rows_lr: float | None = None,
    prompt_audio: PromptAudio | None = None,
) -> LoRARun:
    """Train a LoRA adapter (module docstring) on ``model`` (already extended with
    :func:`~soundtok.llm.extend_vocab`) and return what was done.

    ``tokens_of(item_id)`` gives one item's tokens (e.g. :meth:`soundtok.store.TokenStore.get`).
    ``max_steps_this_run`` stops early (the state is saved; call again with the same ``run_dir`` to go on).
    ``model`` is wrapped in place by :func:`~soundtok.llm.apply_lora`: pass a freshly loaded model to each call.
    ``new_rows_lr``: the new audio rows' own learning rate (:func:`param_groups`); ``prompt_audio``: how audio in a
    question is shown (:class:`~soundtok.llm.vocab.PromptAudio`).
    """
    loop = LoopSettings(steps=steps, log_every=log_every, checkpoint_every=checkpoint_every,
                        keep_checkpoints=KEEP_STATES, max_steps_this_run=max_steps_this_run)  # fmt: skip
    for name, value in (("batch_size", batch_size), ("max_length", max_length)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if lr <= 0:
        raise ValueError(f"the learning rate must be > 0, got {lr}")
    micro_batches([], micro_batch_ids)  # validates it

    template = None if getattr(hf_tokenizer, "chat_template", None) else CHATML_TEMPLATE
    fmt = PromptFormat(hf_tokenizer, vocab, weights=LossWeights(audio=settings.audio_weight), chat_template=template)
    examples, dropped = render_examples(instructions, tokens_of, fmt, max_length=max_length, prompt_audio=prompt_audio)
    if dropped:
        log.warning("dropped %d train example(s) longer than max_length=%d ids", dropped, max_length)
    if not examples:
        raise ValueError(
            f"no train-split instruction fits in max_length={max_length} ids ({dropped} dropped); "
            "raise max_length or pass instructions whose split is 'train'"
        )
    pad_id = hf_tokenizer.pad_token_id if hf_tokenizer.pad_token_id is not None else hf_tokenizer.eos_token_id
    if pad_id is None:
        raise ValueError("the tokenizer has neither a pad nor an eos token; set tokenizer.pad_token")
    recipe = LoRARecipe(model, vocab, examples, pad_id, settings, batch_size=batch_size, lr=lr, seed=seed,
                        micro_batch_ids=micro_batch_ids, new_rows_lr=new_rows_lr)  # fmt: skip
    log.info("%d train examples (%d dropped), %d supervised tokens", len(examples), dropped, sum(recipe.supervised))
    result = run(recipe, Path(run_dir), loop)
    return LoRARun(
        steps=result.steps,
        final_loss=result.losses[-1] if result.losses else float("nan"),
        train_tokens=recipe.progress.train_tokens,
        seconds=result.seconds,
        dropped=dropped,
        adapter_dir=result.exported,
        losses=tuple(result.losses),
    )


def _supervised_logits(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """The logits the loss reads: ``[N, V]`` at the supervised positions only (``logits_to_keep``, which Hugging Face
    causal LMs take), so the output head, the largest matrix of a small LLM, skips the prompt. A model whose
    ``forward`` has no ``logits_to_keep`` gives all ``[B, T, V]``; the loss is the same either way."""
    inputs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
    try:
        return model(**inputs, logits_to_keep=supervised_mask(batch.loss_weights)).logits
    except TypeError as error:
        if "logits_to_keep" not in str(error):
            raise
        return model(**inputs).logits


__all__ = [
    "ADAPTER_DIR",
    "Batch",
    "LoRARecipe",
    "LoRARun",
    "batch_indices",
    "collate",
    "micro_batches",
    "param_groups",
    "render_examples",
    "train_lora",
]

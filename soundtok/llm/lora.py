"""LoRA fine-tuning of a causal LM that holds audio tokens: the adapter, the weighted loss, merging for release.

Definitions
-----------
*Adapter* (:func:`apply_lora`). peft LoRA of rank ``r`` and scale ``alpha / r`` on ``target_modules`` (default
``"all-linear"``: every linear layer of the transformer, the output head excluded), plus, when
``train_new_tokens``, peft's *trainable tokens* on the new audio ids of the :class:`~soundtok.llm.AudioVocab`
(markers and codes): only those embedding rows train and only they are stored in the adapter, never the whole
embedding matrix (``modules_to_save`` would store the whole embedding and head: GBs for a real LLM).

* Tied input/output embeddings (``tie_word_embeddings``, e.g. SmolLM2): peft puts the trainable rows on the input
  embedding and a layer *tied* to them on the output head, so the new tokens' input rows and output rows are one
  parameter, as in the base model; the adapter stores one ``[n_new, D]`` delta.
* Untied: the new rows of the input embedding and of the output head train as two separate sets of rows (the
  audio tokens must be both read and predicted); the adapter stores two ``[n_new, D]`` deltas.

Every other weight of the base model is frozen.

*Loss* (:func:`weighted_lm_loss`), for ``logits [B, T, V]``, ``input_ids [B, T]`` and per-token ``weights [B, T]``
(:class:`~soundtok.llm.Rendered` ``loss_weights``: ``weights[b, t]`` weighs ``input_ids[b, t]`` as a target;
prompt 0, answer text 1, answer audio 10, padding 0). Position ``t`` predicts token ``t + 1``; the *supervised
positions* are ``S = {(b, t) : t < T - 1, weights[b, t + 1] > 0}``:

    ce    = sum_S w[b, t+1] * (-log softmax(logits[b, t])[input_ids[b, t+1]]) / sum_S w[b, t+1]
    z     = z_loss * mean_S logsumexp(logits[b, t]) ** 2          (PaLM's z-loss: keeps the softmax normaliser
                                                                   near 1, i.e. logits from drifting)
    total = ce + z

Positions outside ``S`` do not enter the loss at all (their targets may be anything, even ``-100``). With no
supervised position every part is 0 (and ``total`` still back-propagates, to zero gradients).

Defaults (:class:`LoRASettings`) follow Make Some Noise (arXiv 2503.22275): LoRA r 64, alpha 128 on all layers,
10x loss weight on audio tokens, z-loss.

>>> import torch
>>> logits = torch.zeros(1, 3, 4)                 # uniform predictions over 4 ids
>>> parts = weighted_lm_loss(logits, torch.tensor([[0, 1, 2]]), torch.tensor([[0.0, 1.0, 10.0]]), z_loss=0.0)
>>> round(parts.ce.item(), 4), parts.tokens     # log(4): both targets predicted uniformly
(1.3863, 2)
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from soundtok.config import Config
from soundtok.errors import OutputExistsError, SoundtokError

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from soundtok.llm.vocab import AudioVocab

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoRASettings(Config):
    """How :func:`apply_lora` adapts a model and how the loss is built (module docstring).

    ``target_modules`` is ``"all-linear"`` or a tuple of module names (e.g. ``("q_proj", "v_proj")``).
    ``audio_weight`` is the loss weight of answer audio tokens; it is applied when rendering
    (:class:`~soundtok.llm.LossWeights` of :class:`~soundtok.llm.PromptFormat`) and only recorded here, so a
    training run's settings say which weight it used.
    """

    r: int = 64
    alpha: int = 128
    dropout: float = 0.05
    target_modules: str | tuple[str, ...] = "all-linear"
    train_new_tokens: bool = True
    z_loss: float = 1e-4  # coefficient of the z-loss term
    audio_weight: float = 10.0

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"LoRA rank r must be >= 1, got {self.r}")
        if self.alpha < 1:
            raise ValueError(f"LoRA alpha must be >= 1, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must lie in [0, 1), got {self.dropout}")
        if self.z_loss < 0 or self.audio_weight < 0:
            raise ValueError(f"z_loss and audio_weight must be >= 0, got {self.z_loss}, {self.audio_weight}")
        modules = self.target_modules
        if isinstance(modules, list):  # e.g. from a YAML file
            object.__setattr__(self, "target_modules", modules := tuple(modules))
        if isinstance(modules, str):
            if not modules:
                raise ValueError('target_modules is empty; use "all-linear" or a tuple of module names')
        elif not modules or not all(isinstance(m, str) and m for m in modules):
            raise ValueError(f'target_modules must be "all-linear" or a non-empty tuple of names, got {modules!r}')


# ------------------------------------------------------------------------------------------------------------
# the adapter
def apply_lora(model: PreTrainedModel, vocab: AudioVocab, settings: LoRASettings | None = None) -> PeftModel:
    """Wrap ``model`` (already extended with :func:`soundtok.llm.extend_vocab`) in a peft LoRA model: LoRA on
    ``settings.target_modules`` and, if ``settings.train_new_tokens``, trainable rows for ``vocab``'s ids only.

    The base model is modified in place (peft swaps its layers); train the returned model's trainable parameters.
    """
    from peft import LoraConfig, get_peft_model

    settings = settings or LoRASettings()
    embedding = model.get_input_embeddings()
    rows = _weight(embedding).shape[0]
    if max(vocab.ids) >= rows:
        raise ValueError(
            f"the model has {rows} embedding rows but the audio vocabulary uses ids up to {max(vocab.ids)}; "
            "grow the embeddings first with extend_vocab(model, tokenizer, audio_tokenizer) or resize_embeddings"
        )
    indices: dict[str, list[int]] | None = None
    if settings.train_new_tokens:
        head = model.get_output_embeddings()
        tied = head is None or _weight(head) is _weight(embedding)
        indices = {_module_name(model, embedding): list(vocab.ids)}
        if not tied:  # the head's new rows are separate parameters: they must learn to predict the audio tokens
            indices[_module_name(model, head)] = list(vocab.ids)
    target = settings.target_modules if isinstance(settings.target_modules, str) else list(settings.target_modules)
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=target,
        task_type="CAUSAL_LM",
        trainable_token_indices=indices,
    )
    peft_model = get_peft_model(model, config)
    trainable, total = trainable_parameters(peft_model)
    log.info("LoRA r=%d alpha=%g: %d of %d parameters train (%.2f%%)", settings.r, settings.alpha, trainable, total,
             100 * trainable / max(total, 1))  # fmt: skip
    return peft_model


def _weight(module: torch.nn.Module) -> torch.Tensor:
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.ndim != 2:
        raise TypeError(f"expected an embedding or linear layer with a [V, D] weight, got {type(module).__name__}")
    return weight


def _module_name(model: torch.nn.Module, module: torch.nn.Module) -> str:
    for name, m in model.named_modules():
        if m is module:
            return name
    raise SoundtokError(f"cannot find the {type(module).__name__} embedding among the model's modules")


def trainable_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts (shared parameters counted once)."""
    params = list(model.parameters())  # parameters() yields each shared tensor once
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


# ------------------------------------------------------------------------------------------------------------
# the loss
@dataclass(frozen=True)
class LossParts:
    """:func:`weighted_lm_loss`'s result: ``total = ce + z`` (scalar tensors) and the supervised position count."""

    total: torch.Tensor
    ce: torch.Tensor  # weighted mean next-token cross-entropy over the supervised positions
    z: torch.Tensor  # z_loss * mean logsumexp(logits) ** 2 over the supervised positions
    tokens: int


def supervised_mask(weights: torch.Tensor) -> torch.Tensor:
    """``[B, T]`` bool, True at the supervised positions ``S`` (module docstring): ``t`` with ``weights[b, t + 1] > 0``.

    Pass it as ``logits_to_keep`` to a Hugging Face causal LM and the output head runs on those positions only
    (``[N, V]`` logits): the loss is unchanged and the head's cost and memory fall by a factor of ``B * T / N``.
    """
    keep = torch.zeros(weights.shape, dtype=torch.bool, device=weights.device)
    keep[:, :-1] = weights[:, 1:] > 0
    return keep


def weighted_lm_loss(
    logits: torch.Tensor,
    input_ids: torch.Tensor,
    weights: torch.Tensor,
    z_loss: float = 0.0,
    *,
    batch_totals: tuple[float, int] | None = None,
) -> LossParts:
    """Weighted next-token cross-entropy plus z-loss (module docstring); computed in float32.

    ``input_ids [B, T]``, ``weights [B, T]`` (``weights[b, t]`` weighs ``input_ids[b, t]`` as a target; 0 for prompt
    and padding). ``logits`` is either ``[B, T, V]`` (every position) or ``[N, V]``: the supervised positions only,
    in row-major order, as a model returns them for ``logits_to_keep=supervised_mask(weights)``.

    ``batch_totals = (sum_S w, |S|)`` of a whole batch of which these rows are one *micro-batch*: the sums are
    divided by the batch's totals instead of the micro-batch's own, so the parts of the micro-batches add up to
    the loss of the whole batch (and so do their gradients).
    """
    if input_ids.ndim != 2 or weights.shape != input_ids.shape:
        raise ValueError(f"input_ids {tuple(input_ids.shape)} and weights {tuple(weights.shape)} must both be [B, T]")
    if z_loss < 0:
        raise ValueError(f"the z-loss coefficient must be >= 0, got {z_loss}")
    if bool((weights < 0).any()):
        raise ValueError("loss weights must be >= 0 (0 for prompt and padding)")
    keep = supervised_mask(weights)  # [B, T]
    n = int(keep.sum())
    if logits.ndim == 3 and logits.shape[:2] == input_ids.shape:
        pred = logits[keep]  # [N, V]
    elif logits.ndim == 2 and logits.shape[0] == n:
        pred = logits
    else:
        raise ValueError(
            f"expected logits shaped [B, T, V] with [B, T] = {tuple(input_ids.shape)}, or [N, V] with N = {n} "
            f"supervised positions; got {tuple(logits.shape)}"
        )
    if n == 0:
        zero = logits.sum() * 0.0  # keeps the graph: backward gives zero gradients
        return LossParts(zero, zero.detach(), zero.detach(), 0)
    pred = pred.float()
    target = input_ids.roll(-1, dims=1)[keep]  # [N]: the token after each supervised position
    w = weights.roll(-1, dims=1)[keep].float()  # [N]
    weight_total, positions = (w.sum(), n) if batch_totals is None else batch_totals
    ce = (F.cross_entropy(pred, target, reduction="none") * w).sum() / weight_total
    z = z_loss * torch.logsumexp(pred, dim=-1).pow(2).sum() / positions
    return LossParts(ce + z, ce, z, n)


# ------------------------------------------------------------------------------------------------------------
# release
def merge_and_save(
    peft_model: PeftModel,
    folder: str | os.PathLike[str],
    tokenizer: PreTrainedTokenizerBase | None = None,
    vocab: AudioVocab | None = None,
    *,
    force: bool = False,
) -> PreTrainedModel:
    """Merge the LoRA weights and trained token rows into the base weights and save a plain HF folder that
    ``AutoModelForCausalLM.from_pretrained(folder)`` (or :func:`soundtok.llm.load_llm`) reloads without peft;
    also the tokenizer and ``audio_vocab.json`` when given.

    Merging happens in place: ``peft_model`` is unwrapped and must not be used afterwards; use the returned model.
    Refuses a non-empty ``folder`` unless ``force``.
    """
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()) and not force:
        raise OutputExistsError(f"{folder} is not empty; pass --force (force=True) to write into it")
    merged = peft_model.merge_and_unload()
    folder.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(folder, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    if vocab is not None:
        vocab.save(folder, force=force)
    log.info("saved the merged model to %s", folder)
    return merged

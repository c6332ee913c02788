"""Train a probe on frozen inputs, score it once on the test split, and summarise several seeds.

The protocol follows DASB: the tokenizer (or feature encoder) is frozen and run once over every item; a light
:class:`~soundtok.probes.heads.ProbeHead` is trained on its outputs with the same recipe for every input
(:class:`~soundtok.probes.heads.ProbeConfig`), so differences in the scores are differences in what the inputs
carry. There is **no validation split**, hence no early stopping and no model selection: the head trains for
the fixed number of epochs and the test split is scored once, at the end. Run several seeds and report
:func:`summarise`'s mean and 95% Student-t interval rather than a single run.

Training is fully seeded: ``torch.manual_seed(seed)`` fixes the initial weights and dropout, and a generator of
its own fixes the shuffling and the random crops (classification only: items longer than ``max_frames`` frames
are cropped to a random window while training; evaluation always sees whole items).

Scores: ``accuracy`` for ``classify`` tasks, with ``chance`` the accuracy of always answering the most frequent
training class; ``cer`` and ``wer`` for ``ctc`` tasks, from greedy decoding (best path, repeats collapsed,
blanks dropped), pooled over the test split after :func:`soundtok.eval.asr.normalize_text`.

>>> import torch
>>> from soundtok.corpus.manifest import AudioItem
>>> from soundtok.probes import InputSpec, ProbeConfig, ProbeTask, TaskSplit
>>> task = ProbeTask("toy", "toy", "y", "classify", "accuracy", "which way do the features point?")
>>> items = [AudioItem(f"toy/{i}", "x.wav", 1.0, {"y": str(i % 2)}) for i in range(8)]
>>> split = TaskSplit(task, train=items[:6], test=items[6:], classes=("0", "1"))
>>> inputs = [torch.tensor([[1.0, -1.0]] * 5) * (1 if i % 2 else -1) for i in range(8)]  # [T', D] = [5, 2]
>>> spec = InputSpec("features", frame_rates=(50.0,), dim=2)
>>> result = train_probe(split, spec, inputs[:6], inputs[6:], ProbeConfig(hidden=8, epochs=20, lr=1e-2), seed=0)
>>> result.metrics, result.chance
({'accuracy': 1.0}, 0.5)
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from soundtok.eval.stats import mean_ci
from soundtok.probes.heads import InputSpec, ProbeConfig, ProbeHead, ProbeInput, collate
from soundtok.probes.tasks import TaskSplit, encode_target


@dataclass
class ProbeResult:
    """The test scores of one probe trained with one seed."""

    task: str
    seed: int
    metrics: dict[str, float]  # {"accuracy": ...} or {"cer": ..., "wer": ...}
    chance: float | None  # classify: accuracy of always answering the most frequent train class; ctc: None
    epochs: int
    train_seconds: float
    num_train: int
    num_test: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ctc_greedy_decode(log_probs: Tensor) -> list[int]:
    """Best-path decoding of ``[F, C + 1]`` per-frame log-probs: repeats collapsed, blanks (0) dropped."""
    best = log_probs.argmax(-1)  # [F]
    new = torch.ones_like(best, dtype=torch.bool)
    new[1:] = best[1:] != best[:-1]
    return best[new & (best != 0)].tolist()


def _random_crop(item: ProbeInput, spec: InputSpec, max_frames: int, rng: torch.Generator) -> ProbeInput:
    """A random window of ``max_frames`` head frames; token levels keep the same stretch of time (within a frame)."""
    frames = spec.num_frames(item)
    if frames <= max_frames:
        return item
    start = int(torch.randint(frames - max_frames + 1, (1,), generator=rng))
    if isinstance(item, Tensor):
        return item[start : start + max_frames]  # [max_frames, D]
    cropped = []
    for codes, rate in zip(item, spec.frame_rates, strict=True):
        ratio = rate / spec.frame_rate
        first = min(math.floor(start * ratio), len(codes) - 1)
        cropped.append(codes[first : first + math.ceil(max_frames * ratio)])  # [~max_frames * ratio]
    return cropped


def _loss(out: Tensor, out_lengths: Tensor, targets: list[Any], kind: str) -> Tensor:
    """Cross-entropy (classify) or CTC over the ``out_lengths [B]`` valid output frames (ctc)."""
    if kind == "classify":
        return F.cross_entropy(out, torch.tensor(targets, device=out.device))  # out: [B, C]
    flat = torch.tensor([c for t in targets for c in t], device=out.device)  # [sum of target lengths]
    target_lengths = torch.tensor([len(t) for t in targets], device=out.device)  # [B]
    return F.ctc_loss(
        out.transpose(0, 1),
        flat,
        out_lengths.to(out.device),
        target_lengths,
        blank=0,
        zero_infinity=True,
    )  # out: [B, F, C + 1] -> [F, B, C + 1]


@torch.no_grad()
def _predict(
    model: ProbeHead, spec: InputSpec, inputs: Sequence[ProbeInput], batch_size: int, device: str | torch.device
) -> list[Tensor]:
    """Per item: logits ``[C]`` (classify) or log-probs ``[F, C + 1]`` over its valid frames (ctc)."""
    model.eval()
    order = sorted(range(len(inputs)), key=lambda i: spec.num_frames(inputs[i]))  # less padding; same outputs
    outputs: list[Tensor] = [torch.empty(0)] * len(inputs)
    for i in range(0, len(order), batch_size):
        chunk = order[i : i + batch_size]
        batch = collate([inputs[j] for j in chunk], spec).to(device)
        out = model(batch).cpu()
        for k, j in enumerate(chunk):
            outputs[j] = out[k] if model.kind == "classify" else out[k, : int(model.output_lengths(batch.lengths)[k])]
    return outputs


def _scores(split: TaskSplit, outputs: list[Tensor]) -> dict[str, float]:
    if split.task.kind == "classify":
        targets = [encode_target(split, item) for item in split.test]
        correct = sum(int(out.argmax()) == t for out, t in zip(outputs, targets, strict=True))
        return {"accuracy": correct / len(targets)}
    from soundtok.eval._common import require
    from soundtok.eval.asr import normalize_text

    require("jiwer")  # soundtok[eval]
    import jiwer

    references = [normalize_text(item.labels[split.task.label]) for item in split.test]
    hypotheses = [normalize_text("".join(split.classes[i - 1] for i in ctc_greedy_decode(out))) for out in outputs]
    return {"cer": float(jiwer.cer(references, hypotheses)), "wer": float(jiwer.wer(references, hypotheses))}


def _chance(split: TaskSplit) -> float | None:
    if split.task.kind != "classify":
        return None
    counts = Counter(encode_target(split, item) for item in split.train)
    majority = min(counts, key=lambda c: (-counts[c], c))  # ties: the first class
    return sum(encode_target(split, item) == majority for item in split.test) / len(split.test)


def train_probe(
    split: TaskSplit,
    spec: InputSpec,
    train_inputs: Sequence[ProbeInput],
    test_inputs: Sequence[ProbeInput],
    config: ProbeConfig | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> ProbeResult:
    """Train a :class:`ProbeHead` on ``train_inputs`` for ``config.epochs`` epochs, then score ``test_inputs`` once.

    ``train_inputs[i]`` is the frozen input of ``split.train[i]`` (likewise for test), in ``spec``'s format: a
    list of ``[T'_l]`` code tensors per item for tokens, or one ``[T', D]`` tensor for features. There is no
    validation split and no model selection (see the module docstring). ``progress`` shows a bar over epochs.
    """
    config = config or ProbeConfig()
    for name, inputs, audio in (("train", train_inputs, split.train), ("test", test_inputs, split.test)):
        if len(inputs) != len(audio):
            raise ValueError(f"got {len(inputs)} {name} inputs for {len(audio)} {name} items; pass one per item")
        for item, x in zip(audio, inputs, strict=True):
            spec.check(x, what=f"{name} input of {item.id!r}")
    kind = split.task.kind
    targets = [encode_target(split, item) for item in split.train]

    torch.manual_seed(seed)
    rng = torch.Generator().manual_seed(seed)
    model = ProbeHead(spec, len(split.classes), kind, config).to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)

    start = time.perf_counter()
    bar = tqdm(range(config.epochs), desc=f"probe {split.task.name}", unit="epoch", disable=not progress)
    for _ in bar:
        model.train()
        order = torch.randperm(len(targets), generator=rng).tolist()
        losses = []
        for i in range(0, len(order), config.batch_size):
            chunk = order[i : i + config.batch_size]
            items = [train_inputs[j] for j in chunk]
            if kind == "classify":
                items = [_random_crop(x, spec, config.max_frames, rng) for x in items]
            batch = collate(items, spec).to(device)
            loss = _loss(model(batch), model.output_lengths(batch.lengths), [targets[j] for j in chunk], kind)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
        bar.set_postfix(loss=f"{sum(losses) / len(losses):.3f}")
    train_seconds = time.perf_counter() - start

    outputs = _predict(model, spec, test_inputs, config.batch_size, device)
    return ProbeResult(
        task=split.task.name,
        seed=seed,
        metrics=_scores(split, outputs),
        chance=_chance(split),
        epochs=config.epochs,
        train_seconds=train_seconds,
        num_train=len(split.train),
        num_test=len(split.test),
    )


@dataclass(frozen=True)
class Interval:
    """A mean over ``n`` seeds with its confidence interval ``[low, high]`` (NaN bounds when ``n == 1``)."""

    mean: float
    low: float
    high: float
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.4f} [{self.low:.4f}, {self.high:.4f}] (n={self.n})"


def summarise(results: Sequence[ProbeResult], confidence: float = 0.95) -> dict[str, Interval]:
    """Per metric, the mean over seeds and its Student-t confidence interval (``confidence``, default 95%).

    The interval is ``mean -/+ t_{(1+confidence)/2, n-1} * s / sqrt(n)`` with ``s`` the sample standard deviation.

    >>> r = [ProbeResult("digits", s, {"accuracy": a}, 0.1, 30, 1.0, 90, 10) for s, a in enumerate([0.8, 0.9])]
    >>> print(summarise(r)["accuracy"])
    0.8500 [0.2147, 1.4853] (n=2)
    """
    if not results:
        raise ValueError("summarise needs at least one ProbeResult")
    first = results[0]
    for r in results[1:]:
        if r.task != first.task or set(r.metrics) != set(first.metrics):
            raise ValueError(f"cannot pool results of task {r.task!r} with results of task {first.task!r}")
    seeds = [r.seed for r in results]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds repeat ({sorted(seeds)}); repeated runs are identical and would narrow the interval")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    summary = {}
    n = len(results)
    for name in first.metrics:
        mean, half = mean_ci([float(r.metrics[name]) for r in results], confidence)
        summary[name] = Interval(mean, mean - half, mean + half, n)
    return summary

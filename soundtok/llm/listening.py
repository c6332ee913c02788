"""Does an audio LLM hear? Classification scored by the likelihood of each answer, beside the controls that tell
hearing from guessing.

Greedy answers hide what a model knows: a model that finds "female" likelier after a woman's voice than after a
man's still answers "male" when its prior for "male" is larger. So every classification instruction (a question,
its ``choices`` and the right ``answer``, about clip ``x``) is scored here in several ways, and each way beside a
control that a model deaf to the audio would pass just as well.

Definitions
-----------
``LL(c | a)`` is the log-likelihood (whole-vocabulary softmax) of choice ``c`` written as the assistant's answer,
i.e. the ids the training loss supervises for it (the text and the chat template's end of turn), after the user
turn ``[a, question]``; the audio ``a`` is shown as in training (:class:`~soundtok.llm.vocab.PromptAudio`).

* **ll**: ``argmax_c LL(c | x)``.
* **calibrated**: ``argmax_c LL(c | x) - mean_r LL(c | r)``, over ``references`` reference clips ``r`` of the same
  task from the *train* split (one class after another, seeded): the answer that this clip raises most above what
  the model says after any clip (contextual calibration, Zhao et al. 2021, with clips in place of a content-free
  input). Not a partner clip of another class: subtracting a clip chosen for having another answer leaks the label.
* **greedy**: the model's own answer (:func:`~soundtok.llm.generate.generate_text`, audio ids masked), right when it
  normalises (:func:`~soundtok.eval.asr.normalize_text`) to one of the references.

Controls, on the same instructions:

* **no audio**: ``argmax_c LL(c | question alone)``: the label prior the model learned.
* **swapped**: ``argmax_c LL(c | x')``, ``x'`` the *partner* clip (:func:`soundtok.llm.runs.partner_of`: same task and
  dataset, another answer, nearest in length), scored against ``x``'s answer. A model that hears falls to or below
  chance; one that reads only the clip's length keeps most of its score.
* **blind prior**: the train split's most frequent answer of the task.
* **duration reader** and **bag-of-codes reader**: multinomial logistic regression (train split) on the clip's log
  duration, and on the normalised counts of the codes the LLM reads (the same view): what a linear reader gets from
  the length alone, and from the same tokens without order (the ceiling the issue compares against).

Accuracies carry Wilson 95% intervals; McNemar's exact test compares each scoring with the blind prior on the same
instructions (:func:`soundtok.eval.stats.mcnemar`).

**Speaking** (:func:`evaluate_speaking`), for ``text_to_audio`` prompts ("Say the digit seven."): the model's audio
answer (:func:`~soundtok.llm.generate.generate_audio`, seeded sampling) is read by a bag-of-codes reader fitted on the
*real* train clips' tokens of the same classes (the tokenizer's own probe), and is right when the reader hears the
requested class; the same reader on the prompts' own real clips is its ceiling, and the share of the most frequent
heard class shows a model that says one thing to every prompt.

>>> blind_prior_answer(["seven", "one", "seven"])
'seven'
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from soundtok.eval.asr import normalize_text
from soundtok.eval.stats import mcnemar, wilson
from soundtok.icl import score_labels
from soundtok.llm.instructions import Instruction
from soundtok.llm.prompt import Turn
from soundtok.types import Tokens

if TYPE_CHECKING:
    from soundtok.llm.recipe import AudioLLM

log = logging.getLogger(__name__)

CONDITIONS = ("own", "no_audio", "swapped")


@dataclass
class Scored:
    """One instruction's scores: ``ll[condition][k]`` is ``LL(choices[k] | ...)`` (module docstring)."""

    instruction: Instruction
    partner: str | None  # the partner's item id (None: none qualified; swapped is then missing)
    ll: dict[str, list[float]] = field(default_factory=dict)
    greedy: str = ""

    def predict(self, condition: str, prior: dict[str, float] | None = None) -> str:
        """The best choice under ``condition``; with ``prior`` (choice -> its calibration prior) calibrated."""
        choices, scores = self.instruction.choices, self.ll[condition]
        if prior is not None:
            scores = [s - prior[c] for c, s in zip(choices, scores, strict=True)]
        return choices[int(np.argmax(scores))]


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """``model`` in eval mode (no dropout) for the block, then back in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def answer_ids(llm: AudioLLM, turn: Turn, choice: str) -> tuple[list[int], list[int]]:
    """The prompt ids of ``[turn]`` with the assistant header, and the ids the loss supervises when ``choice`` is
    the answer (which follow the prompt in the full rendering)."""
    prompt = llm.fmt.render([turn], add_generation_prompt=True).input_ids.tolist()
    full = llm.fmt.render([turn, Turn.assistant(choice)])
    ids = full.input_ids.tolist()
    if ids[: len(prompt)] != prompt:
        raise ValueError("the chat template renders the prompt differently once an answer follows it")
    supervised = [i for i, keep in zip(ids, full.supervised.tolist(), strict=True) if keep]
    return prompt, supervised


def choice_loglik(llm: AudioLLM, turn: Turn, choices: Sequence[str]) -> list[float]:
    """``LL(c | turn)`` for every choice: the prompt runs once, each choice continues a copy of its cache."""
    answers = [answer_ids(llm, turn, c) for c in choices]
    prompt = answers[0][0]
    return score_labels(llm.model, prompt[:-1], [prompt[-1:]], [a for _, a in answers])[0]


def user_turn(llm: AudioLLM, question: str, tokens: Tokens | None) -> Turn:
    return Turn.user(question) if tokens is None else Turn.user(llm.question_audio(tokens), "\n" + question)


def score_instruction(
    llm: AudioLLM,
    ins: Instruction,
    tokens_of: Callable[[str], Tokens],
    partner: str | None,
    *,
    greedy: bool = True,
    no_audio: dict[str, float] | None = None,
) -> Scored:
    """The likelihoods of every choice under the three conditions, and the greedy answer. ``no_audio`` (choice ->
    ``LL(c | question alone)``, the same for every clip asked the same question) saves recomputing it."""
    from soundtok.llm.generate import generate_text

    out = Scored(ins, partner)
    own = user_turn(llm, ins.question, tokens_of(ins.item_id))
    out.ll["own"] = choice_loglik(llm, own, ins.choices)
    if no_audio is None:
        out.ll["no_audio"] = choice_loglik(llm, user_turn(llm, ins.question, None), ins.choices)
    else:
        out.ll["no_audio"] = [no_audio[c] for c in ins.choices]
    if partner is not None:
        out.ll["swapped"] = choice_loglik(llm, user_turn(llm, ins.question, tokens_of(partner)), ins.choices)
    if greedy:
        out.greedy = generate_text(llm.model, llm.fmt, [own], max_new_tokens=8).text
    return out


def reference_clips(train: Sequence[Instruction], count: int, seed: int = 0) -> list[str]:
    """``count`` train item ids for calibration: the classes in turn (sorted), a seeded random clip of each."""
    by_class: dict[str, list[str]] = {}
    for ins in sorted(train, key=lambda i: i.id):
        by_class.setdefault(ins.answer, []).append(ins.item_id)
    rng = random.Random(f"reference:{seed}")
    pools = {c: rng.sample(ids, len(ids)) for c, ids in sorted(by_class.items())}
    out: list[str] = []
    while len(out) < count and any(pools.values()):
        for c in sorted(pools):
            if pools[c] and len(out) < count:
                out.append(pools[c].pop())
    return out


def calibration_prior(
    llm: AudioLLM, question: str, choices: Sequence[str], references: Sequence[str], tokens_of: Callable[[str], Tokens]
) -> dict[str, float]:
    """``mean_r LL(c | r)`` per choice over the reference clips."""
    rows = [choice_loglik(llm, user_turn(llm, question, tokens_of(r)), choices) for r in references]
    return {c: float(np.mean(col)) for c, col in zip(choices, zip(*rows, strict=True), strict=True)}


def blind_prior_answer(train_answers: Sequence[str]) -> str:
    """The most frequent train answer (ties: the first seen)."""
    return Counter(train_answers).most_common(1)[0][0]


def linear_reader(train_x: np.ndarray, train_y: Sequence[str], test_x: np.ndarray) -> list[str]:
    """Multinomial logistic regression (standardised features, L2, C=1), fitted on the train rows."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    reader = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    reader.fit(train_x, list(train_y))
    return [str(p) for p in reader.predict(test_x)]


def bag_of_codes(tokens: Tokens) -> np.ndarray:
    """Normalised code counts of one item, its levels side by side."""
    parts = []
    for level, size in enumerate(tokens.codebook_sizes):
        codes = tokens.codes[level][0, : int(tokens.frame_lengths(level)[0])]
        counts = torch.bincount(codes, minlength=size).double().numpy()
        parts.append(counts / max(counts.sum(), 1.0))
    return np.concatenate(parts)


def right(answer: str, ins: Instruction) -> bool:
    refs = {normalize_text(r) for r in ins.references}
    return normalize_text(answer) in refs


def accuracy(correct: Sequence[bool]) -> dict[str, Any]:
    k, n = int(sum(correct)), len(correct)
    low, high = wilson(k, n)
    return {"accuracy": k / n if n else math.nan, "ci_low": low, "ci_high": high, "right": k, "n": n}


def summarise(
    scored: Sequence[Scored],
    prior: dict[str, dict[str, float]],
    blind: str,
    readers: dict[str, list[str]],
) -> dict[str, Any]:
    """Accuracies (Wilson intervals) of every scoring and control, and McNemar p-values against the blind prior.
    ``prior`` maps a question to its calibration prior; ``readers`` maps a reader's name to its predictions."""
    blind_right = [right(blind, s.instruction) for s in scored]
    columns: dict[str, list[bool]] = {
        "ll": [right(s.predict("own"), s.instruction) for s in scored],
        "calibrated": [right(s.predict("own", prior[s.instruction.question]), s.instruction) for s in scored],
        "greedy": [right(s.greedy, s.instruction) for s in scored],
        "no_audio": [right(s.predict("no_audio"), s.instruction) for s in scored],
        "blind_prior": blind_right,
    }
    paired = [s for s in scored if "swapped" in s.ll]
    columns_swapped = [right(s.predict("swapped"), s.instruction) for s in paired]
    for name, predictions in readers.items():
        columns[name] = [right(p, s.instruction) for p, s in zip(predictions, scored, strict=True)]
    out: dict[str, Any] = {name: accuracy(c) for name, c in columns.items()}
    out["swapped"] = accuracy(columns_swapped)
    for name in ("ll", "calibrated", "greedy"):
        out[name]["mcnemar_p_vs_blind_prior"] = mcnemar(columns[name], blind_right)
    out["chance"] = float(np.mean([1 / len(s.instruction.choices) for s in scored])) if scored else math.nan
    out["blind_prior_answer"] = blind
    out["greedy_answers"] = dict(Counter(s.greedy for s in scored).most_common(12))
    return out


def evaluate_task(
    llm: AudioLLM,
    evaluated: Sequence[Instruction],
    train: Sequence[Instruction],
    tokens_of: Callable[[str], Tokens],
    *,
    partners: dict[str, str | None],
    durations: dict[str, float],
    references: int = 10,
    greedy: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Every scoring and control of the module docstring for one task: ``evaluated`` instructions (one split),
    ``train`` the same task's train-split instructions with their true labels (the readers, the blind prior and the
    calibration clips come from them), ``partners`` an item id per evaluated instruction id, ``durations`` seconds
    per item id. Returns :func:`summarise`'s figures plus ``"scores"``, every instruction's likelihoods."""
    if not evaluated or not train:
        raise ValueError("evaluate_task needs instructions to score and train instructions of the same task")
    with _eval_mode(llm.model):
        refs = reference_clips(train, references, seed)
        prior: dict[str, dict[str, float]] = {}
        blind: dict[str, dict[str, float]] = {}  # per question: LL(c | question alone)
        for question in sorted({i.question for i in evaluated}):
            choices = next(i.choices for i in evaluated if i.question == question)
            prior[question] = calibration_prior(llm, question, choices, refs, tokens_of)
            values = choice_loglik(llm, user_turn(llm, question, None), choices)
            blind[question] = dict(zip(choices, values, strict=True))
        scored = []
        for n, ins in enumerate(evaluated):
            scored.append(score_instruction(llm, ins, tokens_of, partners.get(ins.id), greedy=greedy,
                                            no_audio=blind[ins.question]))  # fmt: skip
            if (n + 1) % 50 == 0:
                log.info("%s: %d of %d instructions scored", ins.task, n + 1, len(evaluated))

    def features(ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        bags = np.stack([bag_of_codes(llm.question_audio(tokens_of(i))) for i in ids])
        return bags, np.log(np.array([[max(durations[i], 1e-3)] for i in ids]))

    train_bags, train_dur = features([i.item_id for i in train])
    eval_bags, eval_dur = features([i.item_id for i in evaluated])
    labels = [i.answer for i in train]
    readers = {
        "duration_reader": linear_reader(train_dur, labels, eval_dur),
        "bag_of_codes_reader": linear_reader(train_bags, labels, eval_bags),
    }
    out = summarise(scored, prior, blind_prior_answer(labels), readers)
    out["references"] = refs
    out["scores"] = {s.instruction.id: {"partner": s.partner, "greedy": s.greedy, **s.ll} for s in scored}
    return out


def evaluate_speaking(
    llm: AudioLLM,
    prompts: Sequence[Instruction],
    train: Sequence[Instruction],
    tokens_of: Callable[[str], Tokens],
    *,
    max_seconds: float = 2.0,
    temperature: float = 1.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Speaking, as the module docstring defines it: ``prompts`` are ``text_to_audio`` instructions (the requested
    class is their reference), ``train`` those of the train split, whose items' real tokens fit the reader."""
    from soundtok.llm.generate import generate_audio

    if not prompts or not train:
        raise ValueError("evaluate_speaking needs prompts to answer and train prompts whose clips fit the reader")
    train_x = np.stack([bag_of_codes(tokens_of(i.item_id)) for i in train])
    labels = [i.references[0] for i in train]
    requested = [i.references[0] for i in prompts]
    real = linear_reader(train_x, labels, np.stack([bag_of_codes(tokens_of(i.item_id)) for i in prompts]))
    generated: list[Tokens] = []
    with _eval_mode(llm.model):
        for n, ins in enumerate(prompts):
            answer = generate_audio(llm.model, llm.fmt, [Turn.user(ins.question)], max_seconds=max_seconds,
                                    temperature=temperature, seed=seed + n)  # fmt: skip
            generated.append(answer.tokens)
    heard = linear_reader(train_x, labels, np.stack([bag_of_codes(t) for t in generated]))
    hits = [h == r for h, r in zip(heard, requested, strict=True)]
    counts = Counter(heard)
    return {
        "probe": accuracy(hits),
        "probe_on_real_clips": accuracy([h == r for h, r in zip(real, requested, strict=True)]),
        "chance": 1 / len(set(labels)),
        "most_heard_share": counts.most_common(1)[0][1] / len(heard),
        "heard": dict(counts.most_common()),
        "seconds": [float(t.lengths[0]) / t.sample_rate for t in generated],
        "generated": generated,
    }


__all__ = [
    "CONDITIONS",
    "Scored",
    "accuracy",
    "answer_ids",
    "bag_of_codes",
    "blind_prior_answer",
    "calibration_prior",
    "choice_loglik",
    "evaluate_speaking",
    "evaluate_task",
    "linear_reader",
    "reference_clips",
    "right",
    "score_instruction",
    "summarise",
    "user_turn",
]

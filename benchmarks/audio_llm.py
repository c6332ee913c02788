"""The audio-LLM benchmark: what a trained audio LLM understands, generates, keeps of its text ability, and costs.

A *run* is a folder written by ``soundtok train CONFIG RUN`` with a lora recipe (:mod:`soundtok.llm.recipe`): the
merged model ``RUN/model`` (loaded with ``load_audio_llm``), its instructions ``RUN/instructions.jsonl`` (only the
``test`` split is used here) and its items' audio tokens ``RUN/tokens`` (the very tokens it was trained and is
tested on: nothing is encoded again). Several runs are scored on the same settings and shown side by side.

    python benchmarks/audio_llm.py --runs runs/lora-msn runs/lora-semantic runs/lora-msn-w1 runs/lora-msn-noz
    python benchmarks/audio_llm.py --runs runs/lora-msn --quick --out /tmp/audio-llm     # smoke test

*Selection.* ``--limit N`` keeps N test instructions per task (and N perplexity texts), taken round robin over the
source datasets (an item's dataset is its manifest dataset, else the prefix of its id; within a dataset in the
fixed pseudo-random order of :func:`soundtok.llm.runs.selection_order`, never by id, whose order follows the
classes), so every dataset stays represented; default: all. ``--quick`` (a smoke test) is ``--limit 4``,
``--max-seconds 2``. ``--resume`` keeps the runs already in ``--out/audio_llm.json`` (same settings and threads,
same model: steps and training tokens) and scores the others, so runs can be scored as they finish; each run records
the command, date and seconds of its scoring.

Definitions
-----------
*Text answers* (every task but ``text_to_audio``): ``generate_text`` with greedy decoding on the training prompt
without its answer (``instruction_turns(..., with_answer=False)``: one user turn ``<audio>\\n<question>``, no system
prompt), at most ``--max-new-tokens`` ids (default 96); audio ids are masked, a stop id ends the answer. Every
selected instruction is asked, also those whose prompt is longer than the run's training ``max_length`` (train
examples that long were dropped, so the model never saw that length); they are counted per task.
*Match*: ``normalize_text(answer) == normalize_text(r)`` for some reference ``r`` of the instruction
(:func:`soundtok.eval.asr.normalize_text`: NFKC, lower case, apostrophes removed, other punctuation and symbols
as spaces, spaces collapsed).

1. **Classification** (``classify_*``): accuracy = fraction of matched answers, with a 95% Wilson score interval;
   *chance* = mean over the instructions of 1 / (number of choices listed in the question): a uniform guess among
   the choices. *Blind prior* (:func:`blind_prior`, also for open questions): the accuracy of answering every test
   question with the train split's most frequent answer to the same question, i.e. without hearing the audio; a
   model beats it only by using the audio.
2. **ASR**: corpus WER = total word errors / total reference words, after ``normalize_text`` (an utterance's
   errors = :func:`soundtok.eval.asr.wer` x its reference words); 95% interval by bootstrap over utterances.
3. **Captioning**: :func:`soundtok.eval.captions.caption_scores` (its docstring defines BLEU-4, METEOR, ROUGE-L,
   CIDEr-D and the MiniLM similarity) of the answers against all references of each instruction (Clotho: the
   clip's 5 human captions; templated: the item's template phrasings), separately for the Clotho items (dataset
   ``clotho``, always test) and for the templated items of every other dataset (per dataset in the JSON). CIDEr's
   IDF comes from each subset's own references. The similarity (to the best reference) has a 95% bootstrap
   interval over items.
4. **open_question**: accuracy by match (the references hold the accepted variants), Wilson interval.
5. **text_to_audio**: for each test prompt, ``generate_audio`` (decoding under the interleaving grammar) with seed
   ``--seed`` (the same for every prompt and run), ``--audio-temperature`` (default 1.0), ``--audio-top-k``
   (default 0: no limit), at most ``--max-seconds`` (default 5) s, decoded by the run's audio tokenizer.

   a. *Probe accuracy*: one reference classifier per source dataset (esc50 -> ESC-50 category, instruments ->
      instrument, fsdd -> digit), trained once on REAL audio of the shared corpus train split and cached in
      ``--work``: the continuous:L6 row of ``benchmarks/dasb.py`` (DASB's probe protocol: the BiLSTM head
      :data:`soundtok.probes.BENCHMARK_PROBE`, seed 0, on Whisper-base layer-6 features with 1 s short windows
      stored as float16; the feature store of ``benchmarks/semantic_study.py`` is read when it holds them, else
      they are extracted). It is the strongest classifier available offline for all three datasets and its real
      test accuracy is already in ``dasb.md``. Generated audio (mono, resampled to 16 kHz) goes through the same
      encoder; the probe's class (as an instruction class name) is compared with the prompt's target class. The
      *ceiling* is the probe's accuracy on the real test clips of its task split (:func:`soundtok.probes.task_split`),
      *chance* 1 / number of probe classes. Prompts whose class the probe never saw in training (ESC-50
      washing_machine: its clips are all test) are left out and counted.
   b. *DNSMOS OVRL* (:func:`soundtok.eval.perceptual.dnsmos`) of the generated audio, and of the real clips of the
      same prompts' items (whole clips) as reference: mean with a 95% bootstrap interval; clips DNSMOS cannot rate
      (digital silence) are counted and left out. DNSMOS was trained on speech: on events and music it compares a
      run with the real clips and with other runs, it is no absolute quality.
6. **Text ability kept**: perplexity on the LibriSpeech test-split transcripts of the shared corpus (sorted by id),
   each in sentence case: lower-cased, first letter capitalised, a full stop appended. Each transcript is one
   sequence without special tokens, tokenized by the run's tokenizer (its text part is the base LLM's; the base
   tokenizer is checked to give the same ids); its first token is context only and every later token is scored;
   PPL = exp(total NLL / scored tokens) over all transcripts. The merged model twice: over its whole vocabulary
   (audio ids included) and with audio ids masked (as ``generate_text`` decodes); the base LLM named in
   ``RUN/model/soundtok_llm.json`` (``llm``) once, the same way.
7. **Throughput** on ``--threads`` CPU threads (default 2; ``torch.set_num_threads`` for the whole benchmark):
   generation tokens/s = ids generated / wall time of the ``generate_text`` (resp. ``generate_audio``) calls,
   prompt prefill included, decoding audio tokens to waveforms excluded; text ids = answer ids + the stop id when
   one ended the answer; audio ids = the answer's codes (codes of a last partial frame group, cut when
   ``--max-seconds`` closes the item, are not counted) + ``<|audio_end|>`` when the model chose it (the forced
   ``<|audio_start|>`` is not counted); the prompts' total length (prefill) is reported beside it. Audio real-time
   factor = generation wall time / seconds generated.
   Training tokens/s: the mean over logged steps of the TensorBoard scalar ``train/tokens_per_second`` in
   ``RUN/logs`` (ids of the batch, padding excluded, per second of the training loop, each over its log window),
   beside the steps and supervised training tokens of ``soundtok_llm.json`` (``steps``, ``train_tokens``).
8. **Context cost**: audio tokens per second of audio (sum over levels of sample_rate / hop_length, which is
   ``AudioVocab.tokens_per_second``) and nominal bit/s for every registered preset that loads here (test presets,
   whose names end in ``-tiny``, are skipped; one that cannot load is listed with the reason) and each run's
   tokenizer.

Writes ``audio_llm.md`` and ``audio_llm.json`` (every answer included) to ``--out`` (default benchmarks/results)
after each run, and prints the tables.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import soundtok
import soundtok.testing.dummies  # noqa: F401  (registers toy-tiny: runs of smoke tests are trained on it)
from soundtok.audio.io import load_audio, resample
from soundtok.corpus import AudioItem, Manifest
from soundtok.corpus.loaders import load_shared_corpus
from soundtok.errors import MetricUnavailableError, SoundtokError
from soundtok.eval.asr import normalize_text, wer
from soundtok.eval.captions import caption_scores, caption_unavailable
from soundtok.eval.perceptual import dnsmos
from soundtok.eval.provenance import run_record
from soundtok.eval.stats import bootstrap_mean, bootstrap_ratio, wilson
from soundtok.llm.generate import generate_audio, generate_text
from soundtok.llm.instructions import CLASSIFY_TASKS, TASKS, Instruction, class_name, from_jsonl, instruction_turns
from soundtok.llm.recipe import INSTRUCTIONS_FILE, META_FILE, MODEL_DIR, TOKENS_DIR, AudioLLM, load_audio_llm
from soundtok.llm.runs import dataset_of, run_items, run_names, select, stored_meta
from soundtok.probes import BENCHMARK_PROBE, InputSpec, ProbeHead, TaskSplit, collate, encode_target, task_split
from soundtok.store import TokenStore

log = logging.getLogger("audio_llm")
ROOT = Path(__file__).resolve().parents[1]
STUDY_FEATURES = ROOT / "runs" / "semantic" / "features" / "whisper-base-w1"
RATE = 16000
PROBE_LAYER = 6
PROBE_SEED = 0
FEATURE_SETTINGS = {"encoder": "whisper-base", "window_seconds": 1.0}
#: source dataset of text_to_audio -> (probe task of soundtok.probes, classification task naming its classes)
PROBES = {
    "esc50": ("events", "classify_event"),
    "instruments": ("instruments", "classify_instrument"),
    "fsdd": ("digits", "classify_digit"),
}
CAPTION_COLUMNS = (("bleu4", "BLEU-4"), ("meteor", "METEOR"), ("rouge_l", "ROUGE-L"), ("cider", "CIDEr-D"))


# ------------------------------------------------------------------------------------------------------------
# statistics
def mean_interval(values: Sequence[float]) -> dict[str, Any]:
    x = np.asarray(values, dtype=np.float64)
    if not len(x):
        return {"mean": math.nan, "low": math.nan, "high": math.nan, "n": 0}
    low, high = bootstrap_mean(x.tolist())
    return {"mean": float(x.mean()), "low": low, "high": high, "n": len(x)}


def proportion(k: int, n: int) -> dict[str, Any]:
    """Accuracy ``k / n`` with its 95% Wilson interval (all NaN when there are no items)."""
    low, high = wilson(k, n) if n else (math.nan, math.nan)
    return {"accuracy": k / n if n else math.nan, "low": low, "high": high, "correct": k, "n": n}


# ------------------------------------------------------------------------------------------------------------
# data
def matches(answer: str, references: Sequence[str]) -> bool:
    said = normalize_text(answer)
    return any(said == normalize_text(r) for r in references)


def sentence_case(transcript: str) -> str:
    text = " ".join(transcript.lower().split())
    return text[:1].upper() + text[1:] + "."


# ------------------------------------------------------------------------------------------------------------
# reference classifiers for generated audio
class Features:
    """Whisper-base layer-6 features (1 s short windows, float16-rounded) of the corpus and of new audio."""

    def __init__(self, work: Path, features: Path | None) -> None:
        self.work, self.folder = work, features
        self._encoder: Any = None

    @property
    def encoder(self) -> Any:
        if self._encoder is None:
            from soundtok.encoders import WhisperFeatures

            self._encoder = WhisperFeatures("base", layers=[PROBE_LAYER], window_seconds=1.0)
            if self._encoder.settings != FEATURE_SETTINGS:
                raise SystemExit(f"unexpected Whisper feature settings {self._encoder.settings}")
        return self._encoder

    def store_for(self, items: Sequence[AudioItem]) -> Any:
        """A feature store holding ``items``: ``--features`` (default: the semantic study's), else extracted."""
        from soundtok.encoders.store import FeatureStore, extract_features

        ids = {it.id for it in items}
        for folder in (self.folder, self.work / "features"):
            if folder is not None and (folder / "features.json").is_file():
                store = FeatureStore(folder)
                if store.settings == FEATURE_SETTINGS and PROBE_LAYER in store.layers and ids <= set(store.items):
                    return store
        folder = self.work / "features" / hashlib.sha1("\n".join(sorted(ids)).encode()).hexdigest()[:12]
        log.info("extracting Whisper-base features of %d clips into %s", len(ids), folder)
        return extract_features(self.encoder, Manifest(list(items)), folder, layers=[PROBE_LAYER])

    def of_audio(self, wav: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """``[T', 512]`` features of one clip ``[C, T]`` (mixed to mono, resampled to 16 kHz)."""
        x = resample(wav.mean(0), sample_rate, RATE)  # [T]
        if x.numel() < self.encoder.min_samples:
            x = torch.nn.functional.pad(x, (0, self.encoder.min_samples - x.numel()))
        out = self.encoder(x[None], layers=[PROBE_LAYER])
        return out.item(0)[0].half().float()


@dataclass
class Probe:
    """A trained reference classifier for one source dataset."""

    dataset: str
    split: TaskSplit
    head: ProbeHead
    names: list[str]  # instruction class name of each probe class
    ceiling: dict[str, Any]

    @property
    def chance(self) -> float:
        return 1 / len(self.names)

    @torch.no_grad()
    def predict(self, inputs: Sequence[torch.Tensor]) -> list[str]:
        self.head.eval()
        out = []
        for i in range(0, len(inputs), 32):
            logits = self.head(collate(list(inputs[i : i + 32]), self.head.spec))  # [B, C]
            out += [self.names[int(k)] for k in logits.argmax(-1)]
        return out


def train_head(split: TaskSplit, spec: InputSpec, inputs: Sequence[torch.Tensor], seed: int) -> ProbeHead:
    """The loop of :func:`soundtok.probes.train_probe` (classification), which returns scores only: repeated here to
    keep the trained head. Same seeding and order of random draws, so it gives train_probe's head."""
    config = BENCHMARK_PROBE
    targets = [encode_target(split, item) for item in split.train]
    torch.manual_seed(seed)
    rng = torch.Generator().manual_seed(seed)
    head = ProbeHead(spec, len(split.classes), "classify", config)
    optimiser = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    for _ in range(config.epochs):
        head.train()
        order = torch.randperm(len(targets), generator=rng).tolist()
        for i in range(0, len(order), config.batch_size):
            chunk = order[i : i + config.batch_size]
            batch = []
            for j in chunk:  # random training crops of max_frames frames, as train_probe does
                x = inputs[j]
                if len(x) > config.max_frames:
                    start = int(torch.randint(len(x) - config.max_frames + 1, (1,), generator=rng))
                    x = x[start : start + config.max_frames]
                batch.append(x)
            loss = torch.nn.functional.cross_entropy(
                head(collate(batch, spec)), torch.tensor([targets[j] for j in chunk])
            )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return head.eval()


def load_probe(dataset: str, corpus: Manifest, features: Features, work: Path) -> Probe:
    """The reference classifier of ``dataset``, trained once on the corpus train split and cached in ``work``."""
    from safetensors.torch import load_file, save_file

    task, classify_task = PROBES[dataset]
    split = task_split(task, corpus)
    spec = InputSpec("features", (50.0,), dim=512)
    key = json.dumps(
        {"task": task, "features": FEATURE_SETTINGS, "layer": PROBE_LAYER, "probe": BENCHMARK_PROBE.to_dict(),
         "seed": PROBE_SEED, "train": [it.id for it in split.train], "test": [it.id for it in split.test]},
        sort_keys=True,
    )  # fmt: skip
    stem = work / "probes" / f"{task}-{hashlib.sha1(key.encode()).hexdigest()[:12]}"
    names = [class_name(classify_task, c) for c in split.classes]
    if stem.with_suffix(".json").is_file():
        saved = json.loads(stem.with_suffix(".json").read_text())
        head = ProbeHead(spec, len(split.classes), "classify", BENCHMARK_PROBE)
        head.load_state_dict(load_file(str(stem.with_suffix(".safetensors"))))
        log.info("probe %s: cached %s", task, stem)
        return Probe(dataset, split, head.eval(), names, saved["ceiling"])
    store = features.store_for([*split.train, *split.test])

    def get(item: AudioItem) -> torch.Tensor:
        return torch.from_numpy(np.asarray(store.get(item.id, PROBE_LAYER), dtype=np.float32))

    started = time.perf_counter()
    head = train_head(split, spec, [get(it) for it in split.train], PROBE_SEED)
    probe = Probe(dataset, split, head, names, {})
    said = probe.predict([get(it) for it in split.test])
    truth = [class_name(classify_task, it.labels[split.task.label]) for it in split.test]
    correct = sum(s == t for s, t in zip(said, truth, strict=True))
    probe.ceiling = {
        **proportion(correct, len(split.test)),
        "num_train": len(split.train),
        "classes": len(names),
        "train_seconds": round(time.perf_counter() - started, 1),
    }
    stem.parent.mkdir(parents=True, exist_ok=True)
    save_file(head.state_dict(), str(stem.with_suffix(".safetensors")))
    stem.with_suffix(".json").write_text(json.dumps({"key": json.loads(key), "ceiling": probe.ceiling}, indent=1))
    log.info("probe %s: real test accuracy %.3f (%s)", task, probe.ceiling["accuracy"], stem)
    return probe


# ------------------------------------------------------------------------------------------------------------
# one run
@dataclass
class Clock:
    """Generated ids and wall seconds of the generation calls."""

    ids: int = 0
    seconds: float = 0.0
    calls: int = 0
    prompt_ids: int = 0  # the prompts' lengths (prefill), for reading the rate
    audio_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        rate = self.ids / self.seconds if self.seconds else math.nan
        rtf = self.seconds / self.audio_seconds if self.audio_seconds else None
        out = {"ids": self.ids, "seconds": self.seconds, "calls": self.calls, "prompt_ids": self.prompt_ids}
        return (
            out
            | {"tokens_per_second": rate}
            | ({"audio_seconds": self.audio_seconds, "rtf": rtf} if self.audio_seconds else {})
        )


def answer_all(
    llm: AudioLLM,
    tasks: dict[str, list[Instruction]],
    store: TokenStore,
    args: argparse.Namespace,
    clock: Clock,
    train_length: int | None,
) -> tuple[dict[str, str], dict[str, int]]:
    """Greedy text answers of every selected understanding instruction, by id; and per task how many prompts are
    longer than the run's training ``max_length`` (train examples that long were dropped, never seen)."""
    answers = {}
    too_long: dict[str, int] = defaultdict(int)
    todo = [ins for task, group in tasks.items() if task != "text_to_audio" for ins in group]
    for n, ins in enumerate(todo, start=1):
        turns = instruction_turns(ins, store.get(ins.item_id), with_answer=False)
        length = len(llm.fmt.render(turns, add_generation_prompt=True).input_ids)
        clock.prompt_ids += length
        if train_length is not None and length > train_length:
            too_long[ins.task] += 1
        t0 = time.perf_counter()
        out = generate_text(llm.model, llm.fmt, turns, max_new_tokens=args.max_new_tokens, seed=args.seed)
        clock.seconds += time.perf_counter() - t0
        clock.ids += len(out.ids) + int(out.stopped)
        clock.calls += 1
        answers[ins.id] = out.text
        if n % 50 == 0 or n == len(todo):
            log.info("answered %d / %d", n, len(todo))
    return answers, dict(too_long)


def understanding(
    tasks: dict[str, list[Instruction]], answers: dict[str, str], items: dict[str, AudioItem]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for task, group in tasks.items():
        if task in CLASSIFY_TASKS or task == "open_question":
            k = sum(matches(answers[i.id], i.references) for i in group)
            out[task] = proportion(k, len(group))
            if task in CLASSIFY_TASKS:
                out[task]["chance"] = sum(1 / len(i.choices) for i in group) / len(group)
        elif task == "asr":
            words = np.array([len(normalize_text(i.references[0]).split()) for i in group], dtype=np.float64)
            errors = np.array(
                [round(wer(i.references[0], answers[i.id]) * w) for i, w in zip(group, words, strict=True)]
            )
            low, high = bootstrap_ratio(errors.tolist(), words.tolist())
            out[task] = {"wer": float(errors.sum() / words.sum()), "low": low, "high": high, "n": len(group),
                         "errors": int(errors.sum()), "words": int(words.sum())}  # fmt: skip
        elif task == "caption":
            out[task] = captions(group, answers, items)
    return out


def blind_prior(instructions: Sequence[Instruction], tasks: dict[str, list[Instruction]]) -> dict[str, Any]:
    """The accuracy of a model that never hears the audio: to each selected test question it gives the train split's
    most frequent answer to the same question (classification: the majority class of its options; ties: the first
    in file order), else the task's most frequent train answer. Classification and open questions only."""
    by_question: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    by_task: dict[str, Counter[str]] = defaultdict(Counter)
    for ins in instructions:
        if ins.split == "train":
            by_question[ins.task, ins.question][ins.answer] += 1
            by_task[ins.task][ins.answer] += 1
    out: dict[str, Any] = {}
    for task, group in tasks.items():
        if task in CLASSIFY_TASKS or task == "open_question":
            right = 0
            for ins in group:
                counts = by_question.get((task, ins.question)) or by_task[task]
                right += bool(counts) and matches(counts.most_common(1)[0][0], ins.references)
            out[task] = proportion(right, len(group))
    return out


def captions(group: list[Instruction], answers: dict[str, str], items: dict[str, AudioItem]) -> dict[str, Any]:
    subsets: dict[str, list[Instruction]] = defaultdict(list)
    for ins in group:
        ds = dataset_of(ins.item_id, items)
        subsets["clotho" if ds == "clotho" else "templated"].append(ins)
        if ds != "clotho":
            subsets[f"templated:{ds}"].append(ins)
    metrics = [m for m in ("bleu4", "meteor", "rouge_l", "cider", "similarity") if caption_unavailable(m) is None]
    missing = {m: caption_unavailable(m) for m in ("bleu4", "similarity") if m not in metrics}
    out: dict[str, Any] = {"unavailable": missing} if missing else {}
    for name in sorted(subsets, key=lambda s: (s != "clotho", s != "templated", s)):
        subset = subsets[name]
        if not metrics:
            out[name] = {"n": len(subset)}
            continue
        s = caption_scores([answers[i.id] for i in subset], [list(i.references) for i in subset], metrics=metrics)
        row = s.to_dict()
        if "similarity" in s.per_item:
            sim = mean_interval(s.per_item["similarity"])
            row["similarity_low"], row["similarity_high"] = sim["low"], sim["high"]
        out[name] = row
    return out


def text_to_audio(
    llm: AudioLLM, group: list[Instruction], args: argparse.Namespace, shared: Shared, clock: Clock, run: str
) -> dict[str, Any]:
    by_dataset: dict[str, list[tuple[Instruction, torch.Tensor]]] = defaultdict(list)
    for n, ins in enumerate(group, start=1):
        t0 = time.perf_counter()
        out = generate_audio(
            llm.model, llm.fmt, instruction_turns(ins, None, with_answer=False), max_seconds=args.max_seconds,
            temperature=args.audio_temperature, top_k=args.audio_top_k, seed=args.seed,
        )  # fmt: skip
        clock.seconds += time.perf_counter() - t0
        clock.ids += len(out.ids) - 2 + int(out.ended)  # codes, and the end marker when the model chose it
        clock.calls += 1
        clock.audio_seconds += out.seconds
        wav = llm.audio.decode(out.tokens)[0].float()  # [C, T]
        by_dataset[dataset_of(ins.item_id, shared.items)].append((ins, wav))
        if args.save_audio:
            from soundtok.audio.io import save_audio

            path = args.out / "audio_llm_audio" / run / f"{ins.id.replace('/', '_')}.wav"
            save_audio(path, wav, llm.audio.sample_rate, force=True)
        log.info("generated %d / %d (%.2f s of audio)", n, len(group), out.seconds)
    result: dict[str, Any] = {}
    for dataset, pairs in sorted(by_dataset.items()):
        row: dict[str, Any] = {"n": len(pairs)}
        probe = shared.probe(dataset)
        if probe is not None:
            known = [(ins, wav) for ins, wav in pairs if ins.references[0] in probe.names]
            said = probe.predict([shared.features.of_audio(wav, llm.audio.sample_rate) for _, wav in known])
            k = sum(s == ins.references[0] for s, (ins, _) in zip(said, known, strict=True))
            row["probe"] = proportion(k, len(known)) | {"left_out": len(pairs) - len(known), "chance": probe.chance}
            row["probe_answers"] = {ins.id: s for s, (ins, _) in zip(said, known, strict=True)}
        scores, failed = [], 0
        for _, wav in pairs:
            try:
                scores.append(dnsmos(wav.mean(0), llm.audio.sample_rate).ovrl)
            except MetricUnavailableError:
                failed += 1
        row["dnsmos_ovrl"] = mean_interval(scores) | {"unrated": failed}
        row["real_dnsmos_ovrl"] = shared.real_dnsmos([ins.item_id for ins, _ in pairs])
        result[dataset] = row
    return result


@torch.no_grad()
def perplexity(model: Any, sequences: Sequence[torch.Tensor], masked: Sequence[int] = ()) -> dict[str, Any]:
    """PPL over ``sequences`` (module docstring); with ``masked`` also with those ids' logits set to -inf."""
    nll = {"full": 0.0, "masked": 0.0}
    scored = 0
    banned = torch.tensor(sorted(masked), dtype=torch.long)
    for ids in sequences:
        logits = model(input_ids=ids[None]).logits[0, :-1].float()  # [n - 1, V]
        targets = ids[1:, None]
        nll["full"] -= float(logits.log_softmax(-1).gather(1, targets).sum())
        if len(banned):
            logits[:, banned[banned < logits.shape[-1]]] = -math.inf
            nll["masked"] -= float(logits.log_softmax(-1).gather(1, targets).sum())
        scored += len(ids) - 1
    out: dict[str, Any] = {"ppl": math.exp(nll["full"] / scored), "scored_tokens": scored, "texts": len(sequences)}
    if len(banned):
        out["ppl_text_ids_only"] = math.exp(nll["masked"] / scored)
    return out


def text_ability(llm: AudioLLM, meta: dict[str, Any], texts: list[str], shared: Shared) -> dict[str, Any]:
    from soundtok.llm.models import load_llm

    tokenizer = llm.fmt.tokenizer
    ids = [torch.tensor(tokenizer(t, add_special_tokens=False)["input_ids"], dtype=torch.long) for t in texts]
    ids = [x for x in ids if len(x) >= 2]
    vocab = llm.fmt.vocab
    out = {"merged": perplexity(llm.model, ids, vocab.ids if vocab is not None else ())}
    base_name = str(meta["llm"])
    if base_name not in shared.base_ppl:
        try:
            base, base_tok = load_llm(base_name)
        except (SoundtokError, OSError) as exc:
            shared.base_ppl[base_name] = {"unavailable": str(exc)}
        else:
            same = all(
                base_tok(t, add_special_tokens=False)["input_ids"] == x.tolist()
                for t, x in zip(texts, ids, strict=True)
            )
            shared.base_ppl[base_name] = perplexity(base, ids) | {"same_tokens_as_run": same}
            del base
    out["base"] = {"llm": base_name, **shared.base_ppl[base_name]}
    return out


def train_speed(run: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Training speed and loss from the run's TensorBoard log: the mean of ``train/tokens_per_second`` over the
    logged steps, and ``loss/total`` of the first and last log windows. Only steps up to the merged model's
    ``steps`` count (a killed call may have logged steps whose state was never saved; a later call logs them anew)."""
    steps = meta.get("steps")
    out: dict[str, Any] = {"steps": steps, "train_tokens": meta.get("train_tokens")}
    logs = run / "logs"
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        return out | {"tokens_per_second": None, "note": "tensorboard is not installed"}
    scalars: dict[str, dict[int, float]] = {"train/tokens_per_second": {}, "loss/total": {}}
    for events in sorted(logs.glob("events.out.tfevents.*")):  # one file per call, in time order: later calls win
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        for tag, values in scalars.items():
            if tag in acc.Tags().get("scalars", []):
                values.update({e.step: e.value for e in acc.Scalars(tag) if steps is None or e.step <= steps})
    speed, loss = scalars["train/tokens_per_second"], scalars["loss/total"]
    if not speed:
        return out | {"tokens_per_second": None, "note": f"no train/tokens_per_second in {logs}"}
    out |= {"tokens_per_second": float(np.mean(list(speed.values()))), "logged_steps": len(speed)}
    if loss:
        first, last = min(loss), max(loss)
        out |= {"loss_first": {"step": first, "loss": loss[first]}, "loss_last": {"step": last, "loss": loss[last]}}
    return out


def examples(
    tasks: dict[str, list[Instruction]], answers: dict[str, str], t2a: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """The first selected instruction of each task with the model's answer (for text_to_audio: the probe's class)."""
    heard = {i: c for row in t2a.values() for i, c in row.get("probe_answers", {}).items()}
    out = {}
    for task, group in tasks.items():
        ins = group[0]
        if task == "text_to_audio":
            answer = f"(audio, heard by the probe as: {heard[ins.id]})" if ins.id in heard else "(audio)"
        else:
            answer = answers[ins.id]
        out[task] = {"id": ins.id, "question": ins.question, "answer": answer, "references": list(ins.references)}
    return out


def model_key(meta: dict[str, Any]) -> dict[str, Any]:
    """What identifies a trained run's model for ``--resume``: its tokenizer, LLM, steps, training tokens and the
    time it was exported (absent from runs exported before soundtok recorded it)."""
    return {k: meta.get(k) for k in ("llm", "audio_tokenizer", "steps", "train_tokens", "exported_at")}


def evaluate_run(run: Path, args: argparse.Namespace, shared: Shared) -> dict[str, Any]:
    meta = json.loads((run / MODEL_DIR / META_FILE).read_text())
    llm = load_audio_llm(run / MODEL_DIR)
    llm.model.eval()
    items = run_items(meta, shared.corpus, ROOT)
    shared.items.update(items)
    tasks = select(from_jsonl(run / INSTRUCTIONS_FILE), args.limit, items)
    store = TokenStore(run / TOKENS_DIR)
    log.info("%s: %s", run, {t: len(g) for t, g in tasks.items()})

    text_clock, audio_clock = Clock(), Clock()
    train_length = (meta.get("train_config") or {}).get("max_length")
    answers, too_long = answer_all(llm, tasks, store, args, text_clock, train_length)
    result: dict[str, Any] = {
        "run": str(run),
        "model": model_key(meta),
        "llm": meta.get("llm"),
        "audio_tokenizer": meta.get("audio_tokenizer"),
        "tasks": understanding(tasks, answers, items),
        "train_max_length": train_length,
        "prompts_beyond_train_length": too_long,
    }
    if "text_to_audio" in tasks:
        result["tasks"]["text_to_audio"] = text_to_audio(
            llm, tasks["text_to_audio"], args, shared, audio_clock, run.name
        )
    result["text_ability"] = text_ability(llm, meta, shared.texts, shared)
    result["throughput"] = {
        "text": text_clock.to_dict(),
        "audio": audio_clock.to_dict(),
        "train": train_speed(run, meta),
    }
    vocab = llm.fmt.vocab
    result["tokenizer"] = {
        "name": meta.get("audio_tokenizer"),
        "identity": str(llm.audio.identity),
        "family": llm.audio.family,
        "levels": llm.audio.num_levels,
        "tokens_per_second": vocab.tokens_per_second if vocab is not None else llm.audio.token_rate,
        "bitrate": llm.audio.bitrate,
    }
    result["examples"] = examples(tasks, answers, result["tasks"].get("text_to_audio", {}))
    result["answers"] = {i: answers[i] for i in sorted(answers)}
    return result


# ------------------------------------------------------------------------------------------------------------
# what all runs share
class Shared:
    """The corpus, the reference classifiers, real-audio DNSMOS and the base LLMs' perplexities: computed once."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.corpus = load_shared_corpus(args.corpus)
        self.items: dict[str, AudioItem] = {it.id: it for it in self.corpus}
        self.features = Features(args.work, args.features)
        self._probes: dict[str, Probe | None] = {}
        self._real: dict[str, float | None] = {}
        self.base_ppl: dict[str, dict[str, Any]] = {}
        libri = sorted(self.corpus.filter(dataset="librispeech", split="test"), key=lambda it: it.id)
        self.texts = [sentence_case(it.labels["transcript"]) for it in libri if it.labels.get("transcript")]
        if args.limit is not None:
            self.texts = self.texts[: args.limit]

    def probe(self, dataset: str) -> Probe | None:
        if dataset not in self._probes:
            self._probes[dataset] = (
                load_probe(dataset, self.corpus, self.features, self.args.work) if dataset in PROBES else None
            )
        return self._probes[dataset]

    def real_dnsmos(self, item_ids: Sequence[str]) -> dict[str, Any]:
        for i in item_ids:
            if i not in self._real:
                item = self.items.get(i)
                if item is None:
                    self._real[i] = None
                    continue
                wav, sr = load_audio(item.path, sample_rate=RATE, channels=1)
                try:
                    self._real[i] = dnsmos(wav[0], sr).ovrl
                except MetricUnavailableError:
                    self._real[i] = None
        values = [v for i in item_ids if (v := self._real[i]) is not None]
        return mean_interval(values) | {"unrated": len(item_ids) - len(values)}

    def probes_summary(self) -> dict[str, Any]:
        return {
            d: {"task": p.split.task.name, "ceiling": p.ceiling, "chance": p.chance}
            for d, p in sorted(self._probes.items())
            if p is not None
        }


def context_cost(results: dict[str, Any]) -> list[dict[str, Any]]:
    from soundtok.registry import available, list_presets

    rows: list[dict[str, Any]] = []
    for preset in list_presets():
        if preset.name.endswith("-tiny"):
            continue
        row: dict[str, Any] = {"tokenizer": preset.name, "family": preset.family}
        reason = available(preset)
        if reason is None:
            try:
                tok = soundtok.load(preset.name)
            except Exception as exc:  # a preset that fails to load is reported, not fatal
                reason = f"{type(exc).__name__}: {exc}"
            else:
                row |= {"levels": tok.num_levels, "tokens_per_second": tok.token_rate, "bitrate": tok.bitrate}
        if reason is not None:
            row["unavailable"] = reason
        rows.append(row)
    for name, result in results.items():  # each run's tokenizer, measured from the loaded run
        tok = result["tokenizer"]
        found = [r for r in rows if r["tokenizer"] == tok["name"]]
        if found:
            row = found[0]
        else:
            row = {"tokenizer": tok["name"]}
            rows.append(row)
        row.pop("unavailable", None)
        row |= {k: tok[k] for k in ("family", "levels", "tokens_per_second", "bitrate")}
        row.setdefault("runs", []).append(name)
    return rows


# ------------------------------------------------------------------------------------------------------------
# the report
def pct(x: dict[str, Any], key: str = "accuracy") -> str:
    """``value [low, high]``; the value alone where there is no interval (one item)."""
    if not x.get("n"):
        return "—"
    if not all(isinstance(x.get(k), float) and math.isfinite(x[k]) for k in ("low", "high")):
        return f"{x[key]:.3f}"
    return f"{x[key]:.3f} [{x['low']:.2f}, {x['high']:.2f}]"


def num(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:,.{digits}f}" if isinstance(x, float) else f"{x:,}"


def by_command(report: dict[str, Any]) -> dict[str, list[str]]:
    """The command that scored each run (``--resume`` adds runs to a report made earlier) -> the run names."""
    out: dict[str, list[str]] = defaultdict(list)
    for name, result in report["runs"].items():
        out[result.get("command", report["command"])].append(name)
    return dict(out)


def markdown(report: dict[str, Any]) -> str:
    runs = report["runs"]
    names = list(runs)
    head = "| " + " | ".join(names) + " |"
    rule = "---|" * len(names)
    lines = [
        "# Audio LLM benchmark",
        "",
        "Commands: " + "; ".join(f"`{c}` ({', '.join(n)})" for c, n in by_command(report).items()) + "  ",
        f"Date: {report['date']}, {report['seconds']} s. Machine: {report['machine']}; {report['threads']} "
        "torch thread(s).  ",
        "Settings: " + ", ".join(f"{k} {v}" for k, v in report["settings"].items()) + ".",
        "",
        "Runs: " + "; ".join(f"**{n}** = `{r['run']}` ({r['llm']} + {r['audio_tokenizer']})" for n, r in runs.items()),
        "",
        "Definitions are in the docstring of benchmarks/audio_llm.py. Cells: value [95% interval]; accuracies with "
        "Wilson intervals, WER and means with bootstrap intervals over items.",
        "",
        "## Understanding (greedy text answers on test instructions)",
        "",
        "| task | metric | n | chance | blind prior " + head,
        "|---|---|---|---|---|" + rule,
    ]
    first = runs[names[0]]["tasks"]
    prior = runs[names[0]].get("prior", {})
    for task in TASKS:
        if task in CLASSIFY_TASKS or task == "open_question":
            if task not in first:
                continue
            chance = num(first[task].get("chance"))
            cells = [pct(r["tasks"][task]) if task in r["tasks"] else "—" for r in runs.values()]
            blind = pct(prior[task]) if task in prior else "—"
            lines.append(
                f"| {task} | accuracy ↑ | {first[task]['n']} | {chance} | {blind} | " + " | ".join(cells) + " |"
            )
        elif task == "asr" and task in first:
            cells = [pct(r["tasks"][task], "wer") if task in r["tasks"] else "—" for r in runs.values()]
            lines.append(f"| asr | corpus WER ↓ | {first[task]['n']} | — | — | " + " | ".join(cells) + " |")
    beyond = {n: (r["train_max_length"], r["prompts_beyond_train_length"]) for n, r in runs.items()
              if r.get("prompts_beyond_train_length")}  # fmt: skip
    if beyond:
        lines += [
            "",
            "Prompts longer than the run's training max_length (train examples that long were dropped, so the model "
            "never saw such lengths): "
            + "; ".join(f"{n} (max_length {length}): {counts}" for n, (length, counts) in beyond.items())
            + ".",
        ]
    if "caption" in first:
        lines += ["", "## Captioning", ""]
        unavailable = first["caption"].get("unavailable")
        if unavailable:
            lines += [f"Unavailable: {unavailable}.", ""]
        for subset, title in (("clotho", "Clotho (5 human captions per clip)"), ("templated", "templated captions")):
            if subset not in first["caption"]:
                continue
            lines += [
                f"**{title}**, n = {first['caption'][subset]['n']}:",
                "",
                "| run | " + " | ".join(c for _, c in CAPTION_COLUMNS) + " | MiniLM sim (best ref) | (mean ref) |",
                "|---|" + "---|" * (len(CAPTION_COLUMNS) + 2),
            ]
            for name, r in runs.items():
                s = r["tasks"].get("caption", {}).get(subset, {})
                cells = [num(s.get(k)) for k, _ in CAPTION_COLUMNS]
                sim = (
                    pct({"n": s["n"], "similarity": s["similarity"], "low": s.get("similarity_low"),
                         "high": s.get("similarity_high")}, "similarity")
                    if s.get("similarity") is not None
                    else "—"
                )  # fmt: skip
                lines.append(f"| {name} | " + " | ".join(cells) + f" | {sim} | {num(s.get('similarity_mean_ref'))} |")
            lines.append("")
        lines.append("Per-dataset templated scores are in audio_llm.json (`caption` / `templated:<dataset>`).")
    t2a = [r["tasks"].get("text_to_audio", {}) for r in runs.values()]
    datasets = sorted({d for t in t2a for d in t})
    if datasets:
        lines += [
            "",
            "## Text to audio",
            "",
            "Probe accuracy on the generated audio (reference classifier per source dataset: BiLSTM probe on "
            "Whisper-base layer-6 features, trained on real train-split audio); *real test* is the same probe on "
            "the real test clips (its ceiling). In brackets after each run: how many different classes the probe "
            "heard in its n clips (1: the audio does not depend on the prompt).",
            "",
            "| dataset | n | chance | real test " + head,
            "|---|---|---|---|" + rule,
        ]
        probes = report["probes"]
        for d in datasets:
            if d not in probes:
                continue
            n = max(t.get(d, {}).get("probe", {}).get("n", 0) for t in t2a)
            cells = [
                f"{pct(t[d]['probe'])} ({len(set(t[d].get('probe_answers', {}).values()))} heard)"
                if "probe" in t.get(d, {})
                else "—"
                for t in t2a
            ]
            ceiling = probes[d]["ceiling"]
            lines.append(
                f"| {d} | {n} | {probes[d]['chance']:.3f} | {pct(ceiling)} (n={ceiling['n']}) | "
                + " | ".join(cells)
                + " |"
            )
        left_out = {d: t[d]["probe"]["left_out"] for t in t2a for d in t if t[d].get("probe", {}).get("left_out")}
        if left_out:
            lines.append(f"\nPrompts left out (class unseen by the probe): {left_out}.")
        lines += ["", "DNSMOS OVRL ↑ (1-5) of the generated audio and of the real clips of the same items:", ""]
        lines += ["| dataset | n | real " + head, "|---|---|---|" + rule]
        for d in datasets:
            rows = [t.get(d) for t in t2a]
            real = next(r["real_dnsmos_ovrl"] for r in rows if r)
            cells = [pct(r["dnsmos_ovrl"], "mean") if r else "—" for r in rows]
            n = next(r["n"] for r in rows if r)
            lines.append(f"| {d} | {n} | {pct(real, 'mean')} | " + " | ".join(cells) + " |")
        unrated = {f"{n}/{d}": t[d]["dnsmos_ovrl"]["unrated"] for n, t in zip(names, t2a, strict=True) for d in t
                   if t[d]["dnsmos_ovrl"]["unrated"]}  # fmt: skip
        if unrated:
            lines.append(f"\nGenerated clips DNSMOS could not rate (silence), left out: {unrated}.")
    lines += [
        "",
        "## Text ability kept",
        "",
        f"Perplexity ↓ on {report['text']['texts']} LibriSpeech test transcripts (sentence case), "
        f"{report['text']['example']!r} ...",
        "",
        "| model | PPL (all ids) | PPL (audio ids masked) | scored tokens |",
        "|---|---|---|---|",
    ]
    bases: dict[str, dict[str, Any]] = {}
    for name, r in runs.items():
        m = r["text_ability"]["merged"]
        lines.append(f"| {name} | {num(m['ppl'], 2)} | {num(m.get('ppl_text_ids_only'), 2)} | {m['scored_tokens']} |")
        bases[r["text_ability"]["base"]["llm"]] = r["text_ability"]["base"]
    for llm, b in bases.items():
        if "unavailable" in b:
            lines.append(f"| base {llm} | unavailable: {b['unavailable']} | | |")
        else:
            note = "" if b.get("same_tokens_as_run", True) else " (its tokenizer splits the texts differently!)"
            lines.append(f"| base {llm}{note} | {num(b['ppl'], 2)} | — | {b['scored_tokens']} |")
    lines += [
        "",
        "## Throughput",
        "",
        f"Generation on {report['threads']} CPU thread(s), prompt prefill included; training speed from the run's "
        "TensorBoard log (its own machine and threads).",
        "",
        "| run | text gen tokens/s | audio gen tokens/s | audio RTF | train tokens/s | train steps | "
        "supervised train tokens | train loss (step: first → last log window) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in runs.items():
        t = r["throughput"]
        lines.append(
            f"| {name} | {num(t['text']['tokens_per_second'], 1)} ({t['text']['ids']} ids; prompts "
            f"{t['text']['prompt_ids']} ids) | "
            f"{num(t['audio']['tokens_per_second'], 1)} ({t['audio']['ids']} ids) | {num(t['audio'].get('rtf'), 2)} | "
            f"{num(t['train'].get('tokens_per_second'), 1)} | {num(t['train'].get('steps'))} | "
            f"{num(t['train'].get('train_tokens'))} | {loss_change(t['train'])} |"
        )
    lines += [
        "",
        "## Context cost",
        "",
        "Registered presets (test presets left out) and the runs' tokenizers; tokens/s = sum over levels of "
        "sample_rate / hop_length.",
        "",
        "| tokenizer | family | levels | audio tokens/s | bit/s | s of audio per 1,000 tokens | used by |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in report["context_cost"]:
        if "unavailable" in row:
            lines.append(f"| {row['tokenizer']} | {row['family']} | not loadable here: {row['unavailable']} | | | | |")
            continue
        rate = row["tokens_per_second"]
        lines.append(
            f"| {row['tokenizer']} | {row['family']} | {num(row['levels'])} | {rate:.1f} | {row['bitrate']:,.0f} | "
            f"{1000 / rate:.1f} | {', '.join(row.get('runs', []))} |"
        )
    shown = max(names, key=lambda name: runs[name].get("model", {}).get("steps", 0))  # first of the longest trained
    lines += [
        "",
        f"## Example answers ({shown}, the run trained longest: the first selected test instruction of each task)",
        "",
        "| task | question | answer | references |",
        "|---|---|---|---|",
    ]
    for task, ex in runs[shown].get("examples", {}).items():
        refs = " / ".join(ex["references"][:3]) + (" / ..." if len(ex["references"]) > 3 else "")
        lines.append(f"| {task} | {cell(ex['question'])} | {cell(ex['answer'])} | {cell(refs)} |")
    return "\n".join(lines) + "\n"


def loss_change(train: dict[str, Any]) -> str:
    first, last = train.get("loss_first"), train.get("loss_last")
    if not first or not last:
        return "—"
    return f"{first['step']}: {first['loss']:.2f} → {last['step']}: {last['loss']:.2f}"


def cell(text: str, width: int = 90) -> str:
    """``text`` on one line, cut to ``width`` characters, safe in a markdown table."""
    text = " ".join(text.split()).replace("|", "\\|")
    return (text[: width - 1] + "…" if len(text) > width else text) or "(empty)"


def finite(x: Any) -> Any:
    """``x`` with every NaN or infinity replaced by None (strict JSON)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [finite(v) for v in x]
    return x


def write(report: dict[str, Any], out: Path) -> str:
    out.mkdir(parents=True, exist_ok=True)
    (out / "audio_llm.json").write_text(json.dumps(finite(report), indent=1, default=str) + "\n")
    text = markdown(report)
    (out / "audio_llm.md").write_text(text)
    return text


def previous_runs(out: Path, report: dict[str, Any], runs: dict[str, Path]) -> dict[str, Any]:
    """``--resume``: the runs already scored in ``out/audio_llm.json`` on the same settings and thread count, whose
    model is still the one in their folder (a run trained further or again is scored again); runs of that report
    that this command does not name are kept too, and so are runs whose folder is not on this machine (kept as
    recorded, with the command and date that scored them). A report with other settings is refused, never mixed
    in."""
    path = out / "audio_llm.json"
    if not path.is_file():
        return {}
    old = json.loads(path.read_text())
    for key in ("settings", "threads"):
        if old.get(key) != report[key]:
            raise SystemExit(f"--resume: {path} was made with {key} {old.get(key)}, not {report[key]}; "
                             "drop --resume or pass another --out")  # fmt: skip
    kept = {}
    for name, result in old.get("runs", {}).items():
        meta = stored_meta(runs.get(name, Path(result["run"])))
        if meta is None:  # not named (start() checked the named folders) and not on this machine
            log.info("%s: its folder %s is not here; kept as recorded on %s", name, result["run"], result["date"])
            kept[name] = result
        elif result.get("model") == model_key(meta):
            kept[name] = result
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", type=Path, required=True, help="run folders (each with model/)")
    parser.add_argument("--limit", type=int, default=None, help="test instructions per task (default all)")
    parser.add_argument("--max-new-tokens", type=int, default=96, help="for text answers")
    parser.add_argument("--max-seconds", type=float, default=None, help="generated audio, at most (default 5)")
    parser.add_argument("--audio-temperature", type=float, default=1.0)
    parser.add_argument("--audio-top-k", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--corpus", type=Path, default=None, help="the shared corpus (default: the usual one)")
    parser.add_argument("--features", type=Path, default=STUDY_FEATURES, help="a Whisper-base w1 feature store")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "audio_llm", help="probe/feature cache")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--save-audio", action="store_true", help="also write the generated audio under --out")
    parser.add_argument("--quick", action="store_true", help="a smoke test: 4 per task, 2 s of audio")
    parser.add_argument("--resume", action="store_true", help="keep the runs already scored in --out/audio_llm.json")
    args = parser.parse_args()
    if args.quick:
        args.limit = args.limit or 4
        args.max_seconds = args.max_seconds or 2.0
    args.max_seconds = args.max_seconds or 5.0
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    try:
        names = run_names(args.runs)
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)

    started = time.time()
    shared = Shared(args)
    report: dict[str, Any] = {
        **run_record(threads=args.threads),
        "threads": args.threads,
        "settings": {
            "limit": args.limit,
            "max_new_tokens": args.max_new_tokens,
            "max_seconds": args.max_seconds,
            "audio_temperature": args.audio_temperature,
            "audio_top_k": args.audio_top_k,
            "seed": args.seed,
            "selection": "round robin over datasets, sha1 of the id within",
        },  # fmt: skip
        "text": {"texts": len(shared.texts), "example": shared.texts[0] if shared.texts else ""},
        "runs": {},
    }
    report["runs"] = previous_runs(args.out, report, dict(zip(names, args.runs, strict=True))) if args.resume else {}
    for name, run in zip(names, args.runs, strict=True):
        if name in report["runs"]:
            log.info("%s: kept from %s (--resume)", name, args.out / "audio_llm.json")
            for dataset in report["runs"][name]["tasks"].get("text_to_audio", {}):
                shared.probe(dataset)  # its reference classifiers (cached in --work) for the probe table
        else:
            t0 = time.time()
            report["runs"][name] = evaluate_run(run, args, shared)
            report["runs"][name] |= {"command": report["command"], "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                                     "seconds": round(time.time() - t0, 1)}  # fmt: skip
        # read from the run's files, not measured: refreshed for kept runs too
        meta = json.loads((run / MODEL_DIR / META_FILE).read_text())
        instructions = from_jsonl(run / INSTRUCTIONS_FILE)
        tasks = select(instructions, args.limit, run_items(meta, shared.corpus, ROOT))
        report["runs"][name]["prior"] = blind_prior(instructions, tasks)
        report["runs"][name]["throughput"]["train"] = train_speed(run, meta)
        report["probes"] = shared.probes_summary()
        report["context_cost"] = []
        report["seconds"] = round(time.time() - started, 1)
        write(report, args.out)  # a killed benchmark keeps the runs it finished
    report["context_cost"] = context_cost(report["runs"])
    report["seconds"] = round(time.time() - started, 1)
    print(write(report, args.out))


if __name__ == "__main__":
    main()

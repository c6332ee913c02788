"""In-context audio learning by a frozen LLM over soundtok tokenizers (issue 26, UniAudio 1.5's test).

For each task, tokenizer and code-to-word mapping, ``--episodes`` N-way K-shot episodes (soundtok.icl: balanced
queries, a fresh support set that never holds the query, seeded; the same episodes for every system of a task),
answered by the frozen LLM's label log-likelihood after the prompt. Conditions, on the same episodes:

* ``llm``: the prompt as is; ``llm-calibrated``: label scores minus those with the query's words removed
  (contextual calibration against the label and recency priors);
* ``query-shuffled``: the query's words in random order; ``no-audio`` (once per task): every clip's words removed,
  what the LLM gets from the labels and their order alone;
* ``1nn-codes``: a non-LLM reader, 1-nearest-neighbour on bags of codes of the same demonstrations;
* chance: 1/N.

Accuracy with Wilson 95% intervals; McNemar exact p of ``llm`` and ``llm-calibrated`` against ``no-audio``. Codes
are level 1 of each tokenizer (repeats collapsed), clips cut to ``--max-seconds``. The LLM's weights are hashed
before and after and must not change. Results: ``icl.json`` (``cells``: task, n_way, k_shot, system, llm,
accuracy, ci_low, ci_high, episodes) and ``icl.md``.

    python benchmarks/icl.py --tasks digits-same,gender --tokenizers semantic-whisper-base-1000,codec-16k
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import soundtok
from soundtok.audio.io import load_audio
from soundtok.cache import cache_root, sha256_tensors
from soundtok.corpus.loaders import load_shared_corpus
from soundtok.eval.provenance import command_line
from soundtok.eval.stats import mcnemar, wilson
from soundtok.icl import (
    Example,
    Groups,
    PromptFormat,
    WordMap,
    audio_words,
    label_ids,
    native_words,
    nearest_neighbour,
    prompt_parts,
    sample_episodes,
    score_labels,
    word_candidates,
)
from soundtok.llm.models import load_llm

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
#: task -> (dataset, label column, group column, groups constraint, label spelling)
TASKS: dict[str, tuple[str, str, str | None, Groups, Callable[[str], str]]] = {
    "digits-same": ("fsdd", "digit", "speaker", "same", lambda v: DIGITS[int(v)]),
    "digits-disjoint": ("fsdd", "digit", "speaker", "disjoint", lambda v: DIGITS[int(v)]),
    "gender": ("ravdess", "gender", "actor", "disjoint", str.lower),
    "emotion": ("ravdess", "emotion", "actor", "disjoint", str.lower),
    "events": ("esc50", "category", None, "any", lambda v: v.replace("_", " ")),
    "instruments": ("instruments", "label", None, "any", lambda v: v.replace("_", " ").lower()),
}


def task_examples(task: str, split: str) -> tuple[list[Example], dict[str, Path]]:
    dataset, column, group, _, spell = TASKS[task]
    items = load_shared_corpus(None, [dataset]).filter(split=split)
    examples = [Example(i.id, spell(i.labels[column]), i.labels[group] if group else "") for i in items]
    return examples, {i.id: i.path for i in items}


def encode_all(tokenizer_name: str, paths: dict[str, Path], max_seconds: float, cache: Path) -> dict[str, torch.Tensor]:
    """Level-1 codes of every clip, cached per tokenizer in ``cache`` (a torch file of tensors only)."""
    codes: dict[str, torch.Tensor] = torch.load(cache, weights_only=True) if cache.exists() else {}
    missing = [k for k in paths if k not in codes]
    if missing:
        tok = soundtok.load(tokenizer_name)
        for n, key in enumerate(missing):
            wav, _ = load_audio(paths[key], sample_rate=tok.sample_rate, channels=1)
            wav = wav[:, : int(max_seconds * tok.sample_rate)]
            codes[key] = tok.encode(wav[None], tok.sample_rate).item(0).codes[0][0].to(torch.int32)
            if n % 200 == 199:
                print(f"  {tokenizer_name}: {n + 1}/{len(missing)} clips encoded", flush=True)
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save(codes, cache)
    return codes


def run_task(task, episodes, systems, model, tokenizer, fmt, n_way, k_shot, llm_name, cells, outcomes) -> None:
    """Score every system on ``episodes``; append cells and keep per-episode outcomes for McNemar."""
    labels_of: dict[tuple[str, ...], list[list[int]]] = {}
    for episode in episodes:
        labels_of.setdefault(episode.labels, label_ids(episode.labels, tokenizer))
    rng = random.Random(0)

    def add(system: str, correct: list[bool]) -> None:
        lo, hi = wilson(sum(correct), len(correct))
        cells.append({"task": task, "n_way": n_way, "k_shot": k_shot, "system": system, "llm": llm_name,
                      "accuracy": sum(correct) / len(correct), "ci_low": lo, "ci_high": hi,
                      "episodes": len(correct)})  # fmt: skip
        outcomes[(task, system)] = correct
        print(f"  {task} {system}: {sum(correct) / len(correct):.3f} [{lo:.3f}, {hi:.3f}]", flush=True)

    blind = []
    for episode in episodes:
        prefix, query, tail = prompt_parts(episode, dict.fromkeys(_ids(episode), []), tokenizer, fmt)
        (row,) = score_labels(model, prefix, [query + tail], labels_of[episode.labels])
        blind.append(episode.labels[max(range(n_way), key=row.__getitem__)] == episode.query.label)
    add("no-audio", blind)
    for system, (word_map, codes, codebook_size) in systems.items():
        plain: list[bool] = []
        calibrated: list[bool] = []
        shuffled: list[bool] = []
        nn: list[bool] = []
        for n, episode in enumerate(episodes):
            if n and n % 250 == 0:
                print(f"  {task} {system}: {n} episodes, llm accuracy so far {sum(plain) / n:.3f}", flush=True)
            words = {i: audio_words(codes[i], word_map) for i in _ids(episode)}
            prefix, query, tail = prompt_parts(episode, words, tokenizer, fmt)
            mixed = query[:]
            rng.shuffle(mixed)
            real, empty, shuffled_row = score_labels(
                model, prefix, [query + tail, tail, mixed + tail], labels_of[episode.labels]
            )
            answer = episode.query.label
            pick = episode.labels.__getitem__
            plain.append(pick(max(range(n_way), key=real.__getitem__)) == answer)
            calibrated.append(pick(max(range(n_way), key=lambda j: real[j] - empty[j])) == answer)
            shuffled.append(pick(max(range(n_way), key=shuffled_row.__getitem__)) == answer)
            nn.append(nearest_neighbour(episode, codes, codebook_size) == answer)
        add(f"{system} llm", plain)
        add(f"{system} llm-calibrated", calibrated)
        add(f"{system} query-shuffled", shuffled)
        add(f"{system} 1nn-codes", nn)


def _ids(episode) -> list[str]:
    return [e.id for e in (*episode.support, episode.query)]


def markdown(cells: list[dict], tests: list[dict]) -> list[str]:
    def p_against(prefix: str) -> dict[tuple, float]:
        return {(t["task"], t["system"], t.get("n_way", 2), t.get("k_shot", 1)): t["p"] for t in tests
                if t["against"].startswith(prefix) or (prefix == "random" and " random " in t["against"])}  # fmt: skip

    vs_blind, vs_random = p_against("no-audio"), p_against("random")
    lines = ["| task | N-way | K-shot | LLM | system | accuracy | 95% interval | episodes | p vs no-audio "
             "| p vs random words |", "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for c in cells:
        key = (c["task"], c["system"], c["n_way"], c["k_shot"])
        p, q = (f"{v:.2g}" if v is not None else "" for v in (vs_blind.get(key), vs_random.get(key)))
        lines.append(f"| {c['task']} | {c['n_way']} | {c['k_shot']} | {c['llm']} | {c['system']} | "
                     f"{c['accuracy']:.3f} | [{c['ci_low']:.3f}, {c['ci_high']:.3f}] | {c['episodes']} | "
                     f"{p} | {q} |")  # fmt: skip
    return lines


def combine(runs: Path, out: Path) -> None:
    """Every run's ``icl.json`` under ``runs/*/`` into one ``out`` (json + md), with each run's command."""
    cells, tests, commands = [], [], []
    for path in sorted(runs.glob("*/icl.json")):
        run = json.loads(path.read_text())
        cells += run["cells"]
        tests += [{**t, "n_way": run["cells"][0]["n_way"], "k_shot": run["cells"][0]["k_shot"]} for t in run["mcnemar"]]
        commands.append(run["command"])
    out.write_text(json.dumps({"cells": cells, "mcnemar": tests, "command": " && ".join(commands)}, indent=1))
    text = ["Combined from " + ", ".join(f"`{p.parent.name}`" for p in sorted(runs.glob("*/icl.json"))) +
            " (`python benchmarks/icl.py --combine`); chance is 1/N; Wilson 95% intervals; McNemar exact p "
            "against the same episodes without audio.", "", *markdown(cells, tests), "", "Commands:", "",
            *[f"    {c}" for c in commands]]  # fmt: skip
    out.with_suffix(".md").write_text("\n".join(text) + "\n")
    print("\n".join(text))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="digits-same,digits-disjoint,gender")
    parser.add_argument("--tokenizers", default="semantic-whisper-base-1000,codec-16k")
    parser.add_argument("--mappings", default="random", help="random, nearest and/or native (llm_codec only)")
    parser.add_argument("--llm", default="smollm2-135m")
    parser.add_argument("--n-way", type=int, default=2)
    parser.add_argument("--k-shot", type=int, default=1)
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--split", default="test")
    parser.add_argument("--max-seconds", type=float, default=3.0)
    parser.add_argument("--no-induction", action="store_true")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/icl/run"))
    parser.add_argument("--combine", action="store_true", help="merge benchmarks/results/icl/*/ into icl.json")
    args = parser.parse_args()
    if args.combine:
        combine(Path("benchmarks/results/icl"), Path("benchmarks/results/icl.json"))
        return
    torch.set_num_threads(args.threads)
    started = time.time()

    model, tokenizer = load_llm(args.llm)
    before = sha256_tensors(model.state_dict())
    fmt = PromptFormat(induction=not args.no_induction, repeats=args.repeats)
    embeddings: Any = model.get_input_embeddings().weight.detach()  # type: ignore[operator]
    cells: list[dict] = []
    outcomes: dict = {}
    for task in args.tasks.split(","):
        examples, paths = task_examples(task, args.split)
        episodes = sample_episodes(examples, args.n_way, args.k_shot, args.episodes, args.seed, groups=TASKS[task][3])
        needed = {i for e in episodes for i in _ids(e)}
        candidates = word_candidates(tokenizer, exclude=sorted({e.label for e in examples}))
        print(f"{task}: {len(examples)} clips, {len(episodes)} episodes, {len(candidates)} candidate words", flush=True)
        systems = {}
        for name in args.tokenizers.split(","):
            cache = cache_root() / "icl-codes" / f"{Path(name).name}-{args.split}-{args.max_seconds:g}s.pt"
            codes = encode_all(name, {k: paths[k] for k in sorted(needed)}, args.max_seconds, cache)
            tok = soundtok.load(name)
            size = tok.codebook_sizes[0]
            for kind in args.mappings.split(","):
                if kind == "random":
                    word_map = WordMap.random(size, candidates, args.seed)
                elif kind == "native":  # an llm_codec's codes are the LLM's own words
                    word_map = native_words(tok)
                else:
                    vectors = tok.code_vectors(0)
                    if vectors is None:
                        raise SystemExit(f"{name} has no code vectors: use --mappings random")
                    word_map = WordMap.nearest(vectors, embeddings, candidates, args.seed)
                systems[f"{name} {kind}"] = (word_map, codes, size)
        run_task(task, episodes, systems, model, tokenizer, fmt, args.n_way, args.k_shot, args.llm, cells, outcomes)
    after = sha256_tensors(model.state_dict())
    if after != before:
        raise SystemExit("the LLM's weights changed during the run")

    tests = []
    for (task, system), correct in outcomes.items():
        if system.endswith(("llm", "llm-calibrated")):
            tests.append({"task": task, "system": system, "against": "no-audio",
                          "p": mcnemar(correct, outcomes[(task, "no-audio")])})  # fmt: skip
            random_twin = (task, system.replace(" native ", " random "))
            if " native " in system and random_twin in outcomes:  # the test: the LLM's own words vs random
                tests.append({"task": task, "system": system, "against": random_twin[1],
                              "p": mcnemar(correct, outcomes[random_twin])})  # fmt: skip
    result = {"cells": cells, "mcnemar": tests, "llm_sha256": before, "seconds": round(time.time() - started),
              "command": command_line()}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "icl.json").write_text(json.dumps(result, indent=1))
    lines = [f"{args.n_way}-way {args.k_shot}-shot, {args.llm}, {args.episodes} episodes per task, split "
             f"{args.split}, chance {1 / args.n_way:.3f}; Wilson 95% intervals; McNemar p against no-audio.\n",
             *markdown(cells, tests)]  # fmt: skip
    lines += ["", f"Command: `{result['command']}`; {result['seconds']} s; LLM weights sha256 {before[:16]}… "
              "unchanged after the run."]  # fmt: skip
    (args.out / "icl.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

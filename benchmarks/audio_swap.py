"""The audio swap test: does a trained audio LLM use the audio it is given, or only the question?

Generated answers (``benchmarks/audio_llm.py``) are a coarse probe: a model can lean on the audio a little and still
give every clip the same answer. This benchmark scores each instruction's *reference* answer by teacher forcing, in
the training prompt format, twice:

* *own*: with the instruction's own audio, as in training;
* *swapped*: the same question and answer with the audio of a *partner* item.

A model that ignores the audio finds the reference answer as likely after either clip; a model that listens finds it
more likely after its own. For ``text_to_audio`` the roles turn: the answer is the item's audio tokens, and the
partner's *prompt* (its caption or label) replaces the instruction's, which tests whether generation follows the
text.

    python benchmarks/audio_swap.py --runs runs/lora-smollm2-msn-1000 runs/lora-smollm2-msn-w1-1000 --limit 30
    python benchmarks/audio_swap.py --runs runs/lora-smollm2-msn-1000 --split train --limit 30   # memorised?
    python benchmarks/audio_swap.py --runs runs/a runs/b --limit 30 --resume   # score b, keep a's earlier scores

Definitions
-----------
*Selection*: :func:`soundtok.llm.runs.select`, as in ``benchmarks/audio_llm.py`` (``--limit`` instructions per task,
round robin over the source datasets) on ``--split`` (default ``test``). *Partner* of instruction ``i``: among the
instructions of the same task and split whose item differs and whose reference answers share none with ``i``'s
(after ``normalize_text``), those of the same source dataset if any, the one whose audio is nearest in length to
``i``'s (ties: :func:`soundtok.llm.runs.selection_order`). Nearest length keeps the number of audio tokens, which
alone reveals duration, about the same: a model that reads only the length of the clip gains little. The partner
may come from outside the selection.

*Score*: the mean negative log-likelihood (nats per token, the whole vocabulary's softmax) of the ids the training
loss supervises (``Rendered.supervised``: the answer and its end markers) given everything before them. Per task:
mean own and swapped NLL; *gap* = mean over instructions of (swapped - own), with a 95% paired bootstrap interval;
*own wins* = the fraction of instructions whose own NLL is lower (ties count half), with a 95% Wilson interval. A
model that does not use the audio (beyond its length) has a gap near 0 and wins near 50%. The mean own NLL per task
is printed too: on the test split it is the held-out loss of the answers, a finer comparison of runs than their
generated answers.

Writes ``audio_swap.md`` and ``audio_swap.json`` to ``--out`` (default benchmarks/results) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

import soundtok.testing.dummies  # noqa: F401  (registers toy-tiny: runs of smoke tests are trained on it)
from soundtok.corpus import Manifest
from soundtok.corpus.loaders import load_shared_corpus
from soundtok.eval.provenance import run_record
from soundtok.eval.stats import bootstrap_mean, wilson
from soundtok.llm.instructions import Instruction, from_jsonl, instruction_turns
from soundtok.llm.prompt import PromptFormat
from soundtok.llm.recipe import INSTRUCTIONS_FILE, META_FILE, MODEL_DIR, TOKENS_DIR, load_audio_llm
from soundtok.llm.runs import dataset_of, partner_of, run_items, run_names, select, stored_meta
from soundtok.store import TokenStore
from soundtok.types import Tokens

log = logging.getLogger("audio_swap")
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Pair:
    """An instruction and the partner whose audio (``text_to_audio``: whose prompt) replaces its own."""

    instruction: Instruction
    partner: Instruction


def pairs_of(
    selected: dict[str, list[Instruction]],
    instructions: Sequence[Instruction],
    split: str,
    lengths: dict[str, int],
    datasets: dict[str, str],
) -> tuple[dict[str, list[Pair]], dict[str, int]]:
    """Every selected instruction with its partner, by task; and per task how many had none."""
    pools: dict[str, list[Instruction]] = defaultdict(list)
    for ins in instructions:
        if ins.split == split:
            pools[ins.task].append(ins)
    pairs: dict[str, list[Pair]] = {}
    unpaired: dict[str, int] = {}
    for task, group in selected.items():
        found = [(ins, partner_of(ins, pools[task], lengths, datasets)) for ins in group]
        pairs[task] = [Pair(ins, p) for ins, p in found if p is not None]
        if len(pairs[task]) < len(group):
            unpaired[task] = len(group) - len(pairs[task])
    return pairs, unpaired


@torch.no_grad()
def answer_nll(model: Any, fmt: PromptFormat, ins: Instruction, audio: Tokens, question: str) -> float:
    """Mean NLL (nats per id) of the supervised ids of ``ins`` rendered with ``audio`` and ``question``."""
    rendered = fmt.render(instruction_turns(_with_question(ins, question), audio))
    targets = rendered.supervised[1:]
    logits = model(input_ids=rendered.input_ids[None]).logits[0, :-1].float()  # [N - 1, V]
    logp = logits.log_softmax(-1).gather(1, rendered.input_ids[1:, None])[:, 0]
    return float(-logp[targets].mean())


def _with_question(ins: Instruction, question: str) -> Instruction:
    return ins if question == ins.question else replace(ins, question=question)


def score_pair(model: Any, fmt: PromptFormat, pair: Pair, store: TokenStore) -> tuple[float, float]:
    """(own, swapped) NLL of the pair's instruction (module docstring)."""
    ins, partner = pair.instruction, pair.partner
    own_audio = store.get(ins.item_id)
    own = answer_nll(model, fmt, ins, own_audio, ins.question)
    if ins.audio_in_prompt:
        swapped = answer_nll(model, fmt, ins, store.get(partner.item_id), ins.question)
    else:  # text_to_audio: the answer is the own audio; the partner's prompt replaces the question
        swapped = answer_nll(model, fmt, ins, own_audio, partner.question)
    return own, swapped


def summarise(own: Sequence[float], swapped: Sequence[float]) -> dict[str, Any]:
    """Mean NLLs, the paired gap with a bootstrap interval and the own-wins rate with a Wilson interval."""
    a, b = np.asarray(own, dtype=np.float64), np.asarray(swapped, dtype=np.float64)
    n = len(a)
    gap_low, gap_high = bootstrap_mean((b - a).tolist())
    wins = float(np.sum(b > a) + 0.5 * np.sum(b == a))
    win_low, win_high = wilson(round(wins), n) if n else (math.nan, math.nan)
    return {
        "n": n,
        "own_nll": float(a.mean()) if n else math.nan,
        "swapped_nll": float(b.mean()) if n else math.nan,
        "gap": float((b - a).mean()) if n else math.nan,
        "gap_low": gap_low,
        "gap_high": gap_high,
        "own_wins": wins / n if n else math.nan,
        "wins_low": win_low,
        "wins_high": win_high,
    }


def evaluate_run(run: Path, args: argparse.Namespace, corpus: Manifest) -> dict[str, Any]:
    meta = json.loads((run / MODEL_DIR / META_FILE).read_text())
    llm = load_audio_llm(run / MODEL_DIR)
    llm.model.eval()
    items = run_items(meta, corpus, ROOT)
    instructions = from_jsonl(run / INSTRUCTIONS_FILE)
    selected = select(instructions, args.limit, items, split=args.split)
    store = TokenStore(run / TOKENS_DIR)
    used = {i.item_id for i in instructions if i.split == args.split}
    lengths = {i: int(store.get(i).lengths[0]) for i in sorted(used)}
    datasets = {i: dataset_of(i, items) for i in used}
    pairs, unpaired = pairs_of(selected, instructions, args.split, lengths, datasets)
    tasks: dict[str, Any] = {}
    for task, group in pairs.items():
        scores = [score_pair(llm.model, llm.fmt, pair, store) for pair in group]
        tasks[task] = summarise([s[0] for s in scores], [s[1] for s in scores]) | {
            "unpaired": unpaired.get(task, 0),
            "pairs": {p.instruction.id: {"partner": p.partner.id, "own": o, "swapped": s}
                      for p, (o, s) in zip(group, scores, strict=True)},
        }  # fmt: skip
        log.info("%s %s: own wins %.2f, gap %+.3f", run.name, task, tasks[task]["own_wins"], tasks[task]["gap"])
    return {"run": str(run), "tasks": tasks} | {
        k: meta.get(k) for k in ("audio_tokenizer", "steps", "train_tokens", "exported_at")
    }


def markdown(report: dict[str, Any]) -> str:
    runs = report["runs"]
    names = list(runs)
    tasks = [t for t in dict.fromkeys(t for r in runs.values() for t in r["tasks"])]
    commands: dict[str, list[str]] = defaultdict(list)
    for name, result in runs.items():
        commands[f"`{result.get('command', report['command'])}` ({result.get('date', report['date'])})"].append(name)
    lines = [
        "# Audio swap test: does the model use the audio?",
        "",
        *(f"{cmd}: {', '.join(scored)}  " for cmd, scored in commands.items()),
        f"{report['machine']}; this report took {report['seconds']:.0f} s. Split: **{report['split']}**, "
        f"at most {report['limit']} instructions per task.",
        "",
        "Each instruction's reference answer is scored (mean NLL per supervised id) after its own audio and after "
        "the audio of a partner item of the same dataset, nearest in length, with another answer (text_to_audio: "
        "the item's audio after its own prompt and after the partner's). Cell: **own wins** (the share of "
        "instructions whose answer is likelier after its own audio; 50% = the audio is not used) [95% Wilson] · "
        "**gap** = swapped - own NLL, nats [95% bootstrap]. Definitions: `benchmarks/audio_swap.py`.",
        "",
        "| task | n | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for task in tasks:
        cells = []
        n = "-"
        for name in names:
            row = runs[name]["tasks"].get(task)
            if row is None:
                cells.append("-")
                continue
            n = str(row["n"])
            cells.append(
                f"{100 * row['own_wins']:.0f}% [{100 * row['wins_low']:.0f}, {100 * row['wins_high']:.0f}] · "
                f"{row['gap']:+.3f} [{row['gap_low']:+.3f}, {row['gap_high']:+.3f}]"
            )
        lines.append(f"| {task} | {n} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Answer NLL after the instruction's own audio, nats per supervised id (on the test split: the held-out "
        "loss, unweighted; text_to_audio: the audio codes and end marker):",
        "",
        "| task | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for task in tasks:
        cells = [f"{runs[n]['tasks'][task]['own_nll']:.3f}" if task in runs[n]["tasks"] else "-" for n in names]
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    lines += ["", "| run | tokenizer | steps | supervised training tokens |", "|---|---|---|---|"]
    lines += [f"| {n} | {r['audio_tokenizer']} | {r['steps']} | {r['train_tokens']} |" for n, r in runs.items()]
    return "\n".join(lines) + "\n"


def write(report: dict[str, Any], out: Path, stem: str, started: float) -> str:
    report["seconds"] = round(time.time() - started, 1)
    (out / f"{stem}.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    text = markdown(report)
    (out / f"{stem}.md").write_text(text)
    return text


def previous_runs(path: Path, report: dict[str, Any], runs: dict[str, Path]) -> dict[str, Any]:
    """``--resume``: the runs of an earlier report at ``path`` (same split and limit) whose model is still the one
    in their folder (same tokenizer, steps, training tokens and export time), or whose folder is not on this machine
    (kept as recorded), each with the command and date that scored it."""
    if not path.is_file():
        return {}
    old = json.loads(path.read_text())
    for key in ("split", "limit"):
        if old.get(key) != report[key]:
            raise SystemExit(f"--resume: {path} was made with {key} {old.get(key)}, not {report[key]}; "
                             "drop --resume or pass another --out")  # fmt: skip
    kept = {}
    for name, result in old["runs"].items():
        meta = stored_meta(runs.get(name, Path(result["run"])))
        if meta is None:  # not named (start() checked the named folders) and not on this machine
            log.info("%s: its folder %s is not here; kept as recorded", name, result["run"])
        elif any(meta.get(k) != result.get(k) for k in ("audio_tokenizer", "steps", "train_tokens", "exported_at")):
            continue
        kept[name] = {"command": old["command"], "date": old["date"]} | result
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", type=Path, required=True, help="run folders (each with model/)")
    parser.add_argument("--limit", type=int, default=None, help="instructions per task (default all)")
    parser.add_argument("--split", default="test", choices=("test", "train"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--corpus", type=Path, default=None, help="the shared corpus (default: the usual one)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--resume", action="store_true", help="keep the runs already scored in the --out report")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    try:
        names = run_names(args.runs)
    except ValueError as exc:
        parser.error(str(exc))
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")

    started = time.time()
    corpus = load_shared_corpus(args.corpus)
    report: dict[str, Any] = {
        **run_record(threads=args.threads),
        "threads": args.threads,
        "split": args.split,
        "limit": args.limit,
        "runs": {},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "audio_swap" if args.split == "test" else f"audio_swap_{args.split}"
    if args.resume:
        report["runs"] = previous_runs(args.out / f"{stem}.json", report, dict(zip(names, args.runs, strict=True)))
    for name, run in zip(names, args.runs, strict=True):
        if name in report["runs"]:
            log.info("%s: kept from %s (--resume)", name, args.out / f"{stem}.json")
            continue
        report["runs"][name] = evaluate_run(run, args, corpus)
        report["runs"][name] |= {"command": report["command"], "date": time.strftime("%Y-%m-%d %H:%M:%S")}
        write(report, args.out, stem, started)  # a killed benchmark keeps the runs it finished
    print(write(report, args.out, stem, started))


if __name__ == "__main__":
    main()

"""Does a trained audio LLM hear? Classification by the likelihood of each answer, with the controls (issue 23).

    python benchmarks/listening.py --runs runs/lora-curriculum --split validation            # choose settings here
    python benchmarks/listening.py --runs runs/lora-curriculum runs/lora-curriculum-permuted --split test --record

For every classification task of each run (``RUN/instructions.jsonl``), every instruction of ``--split`` (or
``--limit`` per task, :func:`soundtok.llm.runs.select`) is scored by :mod:`soundtok.llm.listening`: the
log-likelihood of each choice after the clip (``ll``), calibrated against reference train clips (``calibrated``),
the greedy answer, and the controls (no audio, a partner's audio, the blind prior, a duration reader and a
bag-of-codes reader on the same tokens), with Wilson intervals and McNemar tests against the blind prior. A run
trained with ``permute_labels=true`` is the permuted-label control: its readers and prior use the true labels.

Writes ``listening_{split}.md`` / ``.json`` to ``--out`` (default ``benchmarks/results/listening``); with
``--record`` (test split only) also the headline figures of the first run to ``benchmarks/results/listening.json``
(the issue's mechanical check).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from soundtok.eval.provenance import run_record
from soundtok.fileio import atomic_write
from soundtok.llm.instructions import CLASSIFY_TASKS, from_jsonl
from soundtok.llm.listening import accuracy, evaluate_speaking, evaluate_task
from soundtok.llm.recipe import (
    INSTRUCTIONS_FILE,
    MODEL_DIR,
    TOKENS_DIR,
    LLMTrainConfig,
    load_audio_llm,
    run_instructions,
    run_manifest,
)
from soundtok.llm.runs import dataset_of, partner_of, run_items, run_names, select, stored_meta
from soundtok.store import TokenStore

log = logging.getLogger("listening")
ROOT = Path(__file__).resolve().parents[1]
COLUMNS = (
    ("ll", "LL"),
    ("calibrated", "calibrated"),
    ("greedy", "greedy"),
    ("no_audio", "no audio"),
    ("swapped", "swapped audio"),
    ("blind_prior", "blind prior"),
    ("duration_reader", "duration reader"),
    ("bag_of_codes_reader", "bag-of-codes reader"),
)


def evaluate_run(run: Path, args: argparse.Namespace) -> dict[str, Any]:
    meta = stored_meta(run)
    if meta is None:
        raise SystemExit(f"{run}: no {MODEL_DIR}/ here (train it first: soundtok train CONFIG {run})")
    cfg = LLMTrainConfig.model_validate(meta["train_config"])
    llm = load_audio_llm(run / MODEL_DIR)
    instructions = from_jsonl(run / INSTRUCTIONS_FILE)
    manifest = run_manifest(cfg)
    truth = run_instructions(cfg, manifest, true_labels=True) if cfg.permute_labels else instructions
    items = run_items(meta, manifest, ROOT)
    store = TokenStore(run / TOKENS_DIR)
    selected = select(instructions, args.limit, items, split=args.split)
    tasks: dict[str, Any] = {}
    for task in sorted(set(selected) & CLASSIFY_TASKS):
        started = time.time()
        evaluated = selected[task]
        pool = [i for i in instructions if i.task == task and i.split == args.split]
        lengths = {i.item_id: int(store.get(i.item_id).lengths[0]) for i in pool}
        datasets = {i.item_id: dataset_of(i.item_id, items) for i in pool}
        partners = {}
        for ins in evaluated:
            partner = partner_of(ins, pool, lengths, datasets)
            partners[ins.id] = partner.item_id if partner is not None else None
        train = [i for i in truth if i.task == task and i.split == "train"]
        durations = {i.item_id: items[i.item_id].duration for i in (*train, *evaluated)}
        tasks[task] = evaluate_task(
            llm, evaluated, train, store.get, partners=partners, durations=durations, references=args.references
        ) | {"seconds": round(time.time() - started, 1)}
        t = tasks[task]
        log.info("%s %s: ll %.3f calibrated %.3f greedy %.3f (blind prior %.3f, bag of codes %.3f), %d items",
                 run.name, task, t["ll"]["accuracy"], t["calibrated"]["accuracy"], t["greedy"]["accuracy"],
                 t["blind_prior"]["accuracy"], t["bag_of_codes_reader"]["accuracy"], t["ll"]["n"])  # fmt: skip
    speaking = None
    prompts = [i for i in selected.get("text_to_audio", []) if dataset_of(i.item_id, items) == "fsdd"]
    if prompts and args.speak:
        speaking = speak_digits(llm, prompts[: args.speak], instructions, store, items)
    return {"run": str(run), "steps": meta.get("steps"), "permute_labels": cfg.permute_labels, "speaking": speaking,
            "audio_tokenizer": meta.get("audio_tokenizer"), "exported_at": meta.get("exported_at"),
            "tasks": tasks}  # fmt: skip


def speak_digits(llm: Any, prompts: list[Any], instructions: list[Any], store: Any, items: Any) -> dict[str, Any]:
    """Spoken digits on request: the tokenizer's own probe (:func:`evaluate_speaking`) and Whisper on the decoded
    audio (right when the transcript holds the requested digit word or numeral)."""
    from soundtok.eval.asr import normalize_text, transcribe
    from soundtok.llm.instructions import DIGIT_WORDS

    started = time.time()
    train = [i for i in instructions if i.task == "text_to_audio" and i.split == "train"
             and dataset_of(i.item_id, items) == "fsdd"]  # fmt: skip
    out = evaluate_speaking(llm, prompts, train, store.get)
    numerals = {w: str(n) for n, w in enumerate(DIGIT_WORDS)}
    heard = []
    for ins, tokens in zip(prompts, out.pop("generated"), strict=True):
        words = normalize_text(transcribe(llm.audio.decode(tokens)[0], llm.audio.sample_rate)).split()
        target = ins.references[0]
        heard.append(target in words or numerals.get(target) in words)
    out["whisper"] = accuracy(heard)
    out["seconds_total"] = round(time.time() - started, 1)
    log.info("speaking: probe %.3f (real clips %.3f), Whisper %.3f, %d prompts", out["probe"]["accuracy"],
             out["probe_on_real_clips"]["accuracy"], out["whisper"]["accuracy"], len(prompts))  # fmt: skip
    return out


def cell(x: dict[str, Any]) -> str:
    return f"{x['accuracy']:.3f} [{x['ci_low']:.3f}, {x['ci_high']:.3f}]"


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Does the audio LLM hear? Classification by answer likelihood ({report['split']} split)",
        "",
        f"Command: `{report['command']}` ({report['seconds']:.0f} s; {report['machine']}). Definitions: "
        "`soundtok/llm/listening.py`. Accuracy [Wilson 95%]; p: McNemar exact test against the blind prior on the "
        "same instructions.",
        "",
    ]
    for name, result in report["runs"].items():
        permuted = " (permuted-label control)" if result.get("permute_labels") else ""
        lines += [f"## {name}{permuted}: {result['audio_tokenizer']}, {result['steps']} steps", ""]
        lines += ["| scoring | " + " | ".join(result["tasks"]) + " |", "|---|" + "---|" * len(result["tasks"])]
        for key, label in COLUMNS:
            row = []
            for t in result["tasks"].values():
                text = cell(t[key])
                if "mcnemar_p_vs_blind_prior" in t[key]:
                    text += f", p={t[key]['mcnemar_p_vs_blind_prior']:.2g}"
                row.append(text)
            lines.append(f"| {label} | " + " | ".join(row) + " |")
        lines.append("| chance | " + " | ".join(f"{t['chance']:.3f}" for t in result["tasks"].values()) + " |")
        lines.append("| n | " + " | ".join(str(t["ll"]["n"]) for t in result["tasks"].values()) + " |")
        if result.get("speaking"):
            sp = result["speaking"]
            lines += ["", f"Spoken digits on request ({sp['probe']['n']} prompts, chance {sp['chance']:.2f}): the "
                      f"tokenizer's probe hears the requested digit in {cell(sp['probe'])} (on the real clips: "
                      f"{cell(sp['probe_on_real_clips'])}); Whisper on the decoded audio {cell(sp['whisper'])}; "
                      f"most frequent heard digit {sp['most_heard_share']:.2f} of answers."]  # fmt: skip
        lines += ["", "Greedy answers (most frequent): " + "; ".join(
            f"{task}: {t['greedy_answers']}" for task, t in result["tasks"].items()), ""]  # fmt: skip
    return "\n".join(lines) + "\n"


def headline(report: dict[str, Any], name: str) -> dict[str, Any]:
    """The issue's mechanical check: ``benchmarks/results/listening.json``."""
    tasks = report["runs"][name]["tasks"]
    out: dict[str, Any] = {"run": name, "split": report["split"], "command": report["command"],
                           "date": report["date"], "git_commit": report["git_commit"]}  # fmt: skip
    if "classify_digit" in tasks:
        d = tasks["classify_digit"]
        out["digits"] = {
            "ll_accuracy": d["ll"]["accuracy"],
            "ll_wilson_low": d["ll"]["ci_low"],
            "greedy_accuracy": d["greedy"]["accuracy"],
            "mcnemar_p_vs_blind_prior": d["greedy"]["mcnemar_p_vs_blind_prior"],
            "n": d["ll"]["n"],
        }
    if "classify_gender" in tasks:
        g = tasks["classify_gender"]
        out["gender"] = {"calibrated_accuracy": g["calibrated"]["accuracy"], "n": g["calibrated"]["n"]}
    speaking = report["runs"][name].get("speaking")
    out["text_to_audio_digits"] = (
        None if not speaking else {"probe_accuracy": speaking["probe"]["accuracy"], "n": speaking["probe"]["n"],
                                   "whisper_accuracy": speaking["whisper"]["accuracy"]}
    )  # fmt: skip
    return out


def write(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text), force=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", type=Path, required=True, help="run folders (each with model/)")
    parser.add_argument("--split", default="validation", choices=("validation", "test", "train"))
    parser.add_argument("--limit", type=int, default=None, help="instructions per task (default: all of the split)")
    parser.add_argument("--references", type=int, default=10, help="train clips the calibration averages over")
    parser.add_argument("--speak", type=int, default=100, help="text-to-audio digit prompts to answer (0: none)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "listening")
    parser.add_argument("--record", action="store_true", help="write benchmarks/results/listening.json (test split)")
    args = parser.parse_args()
    if args.record and (args.split != "test" or args.limit is not None):
        parser.error("--record is for the whole test split (no --limit)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    names = run_names(args.runs)
    started = time.time()
    report: dict[str, Any] = {**run_record(threads=args.threads), "split": args.split, "limit": args.limit,
                              "runs": {}}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"listening_{args.split}"
    for name, run in zip(names, args.runs, strict=True):
        report["runs"][name] = evaluate_run(run, args)
        report["seconds"] = time.time() - started
        write(stem.with_suffix(".json"), json.dumps(report, indent=1) + "\n")  # a killed run keeps what it scored
        write(stem.with_suffix(".md"), markdown(report))
    print(markdown(report))
    if args.record:
        path = ROOT / "benchmarks" / "results" / "listening.json"
        write(path, json.dumps(headline(report, names[0]), indent=2) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()

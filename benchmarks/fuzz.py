"""The hardening campaign of issue 21: thousands of mutated token files and checkpoint folders, each read in a
worker process under a timeout, counting uncaught exceptions, hangs, peak memory and accepted inconsistencies.

    python benchmarks/fuzz.py --token-files 2000 --checkpoints 300 --seed 0

*Token files*: valid files from the presets below (one item of noise each), mutated by
:func:`soundtok.testing.fuzz.mutate_token_file` (a header field set to a non-finite, huge, negative, wrong-typed or
nested value, dropped or duplicated; a header consistent in itself but not with its tokenizer; damaged bytes), read
and decoded as ``soundtok detokenize`` does (the tokenizer by preset name). *Checkpoints*: folders saved by
:func:`soundtok.save_checkpoint` (which records the config in the weights' header), and the shipped folders as they
are (saved before it did), with a mutated ``config.json`` (:func:`~soundtok.testing.fuzz.mutate_checkpoint_config`)
or damaged weights (:func:`~soundtok.testing.fuzz.mutate_weights`), loaded with :func:`soundtok.load_checkpoint`.

Outcomes: *refused* (soundtok's own error), *accepted* (the original content), *ACCEPTED INCONSISTENT* (a change got
through), *uncaught* (any other exception), *hang* (no answer within ``--timeout`` s: the worker is killed and
replaced), *crash* (the worker died). Peak memory is the largest resident set of any worker (ru_maxrss), which
includes the loaded tokenizers; *growth* is the largest rise of that peak during one case. Mutated inputs that were
not refused cleanly are kept under ``--keep`` for reproduction. Writes benchmarks/results/fuzz.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import random
import resource
import shutil
import sys
import tempfile
import time
import traceback
from collections import Counter
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TOKEN_PRESETS = ("mulaw-8bit-8k", "toy-tiny", "codec-16k", "msn-16k")
CHECKPOINT_PRESETS = ("toy-tiny", "codec-16k", "msn-16k")  # saved anew: with the config in the weights' header
SHIPPED = ("codec-16k", "msn-16k")  # as shipped: without it


def worker(conn: Connection, originals: dict[str, str]) -> None:
    """Answer cases from ``conn`` until it closes: ``(kind, path, base)`` -> ``(outcome, detail, peak_kb)``."""
    import torch

    import soundtok
    import soundtok.testing.dummies  # noqa: F401  (registers toy-tiny)
    from soundtok.testing.fuzz import ACCEPTED_INCONSISTENT, load_checkpoint_outcome, read_and_decode
    from soundtok.tokenfile import read_token_file

    torch.set_num_threads(1)
    tokenizers = {name: soundtok.load(name) for name in TOKEN_PRESETS}
    tokens = {name: read_token_file(path).tokens for name, path in originals.items()}
    configs = {name: tokenizers[name].config for name in CHECKPOINT_PRESETS}
    conn.send(("ready", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
    while True:
        try:
            kind, path, base = conn.recv()
        except EOFError:
            return
        try:
            if kind == "token":
                outcome = read_and_decode(Path(path).read_bytes(), tokenizers, tokens[base])
            else:
                outcome = load_checkpoint_outcome(Path(path), configs[base])
            detail = changed_fields(Path(path), configs[base]) if outcome == ACCEPTED_INCONSISTENT else ""
        except Exception as exc:  # what the campaign counts: anything that is not soundtok's own error
            outcome, detail = "uncaught", f"{type(exc).__name__}: {exc}"[:300] + "\n" + traceback.format_exc()[-1500:]
        conn.send((outcome, detail, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))


def changed_fields(folder: Path, original: Any) -> str:
    """Which config fields of an accepted checkpoint differ from the original's."""
    config = json.loads((folder / "config.json").read_text())["config"]
    return "changed: " + ", ".join(sorted(k for k, v in original.to_dict().items() if config.get(k, "(dropped)") != v))


class Worker:
    """A worker process that can be killed and replaced when a case hangs."""

    def __init__(self, originals: dict[str, str]) -> None:
        self.originals = originals
        self.start()

    def start(self) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=worker, args=(child, self.originals), daemon=True)
        self.process.start()
        if not self.conn.poll(300):
            raise RuntimeError("a fuzz worker did not start")
        _, self.peak = self.conn.recv()

    def run(self, case: tuple[str, str, str], timeout: float) -> tuple[str, str, int, int, float]:
        """``(outcome, detail, peak_kb, growth_kb, seconds)``: the worker's peak memory after the case, and how much
        the case raised it."""
        start = time.perf_counter()
        self.conn.send(case)
        try:
            ready = self.conn.poll(timeout)
            result = self.conn.recv() if ready else None
        except EOFError:
            result = ("crash", f"worker exit code {self.process.exitcode}", self.peak)
        seconds = time.perf_counter() - start
        if result is None:
            self.process.kill()
            self.process.join()
            self.start()
            return "hang", f"no answer in {timeout:g} s", self.peak, 0, seconds
        outcome, detail, peak = result
        if outcome == "crash":
            self.process.join()
            self.start()
        growth, self.peak = max(0, peak - self.peak), max(self.peak, peak)
        return outcome, detail, peak, growth, seconds

    def close(self) -> None:
        self.conn.close()
        self.process.join(10)


def make_cases(args: argparse.Namespace, work: Path) -> tuple[dict[str, str], list[tuple[str, str, str, str]]]:
    """Originals and mutated inputs on disk: ``({preset: original .stok}, [(kind, path, base, what)])``."""
    import soundtok
    import soundtok.testing.dummies  # noqa: F401
    from soundtok.testing import noise_batch
    from soundtok.testing.fuzz import mutate_checkpoint_config, mutate_token_file, mutate_weights
    from soundtok.tokenfile import to_bytes

    rng = random.Random(args.seed)
    originals: dict[str, str] = {}
    valid: dict[str, bytes] = {}
    for name in TOKEN_PRESETS:
        tok = soundtok.load(name)
        tokens = tok.encode(noise_batch([tok.sample_rate // 4], seed=args.seed)[0], tok.sample_rate)
        valid[name] = to_bytes(tokens, {"source": "noise.wav", "labels": {"split": "test"}})
        originals[name] = str(work / f"{name}.stok")
        Path(originals[name]).write_bytes(valid[name])
    cases = []
    for i in range(args.token_files):
        base = TOKEN_PRESETS[i % len(TOKEN_PRESETS)]
        what, data = mutate_token_file(valid[base], rng)
        path = work / "tokens" / f"{i:05d}-{base}.stok"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        cases.append(("token", str(path), base, f"{base} {what}"))
    bases = {name: soundtok.save_checkpoint(soundtok.load(name), work / "bases" / name) for name in CHECKPOINT_PRESETS}
    bases.update({f"{name} (shipped)": ROOT / "soundtok" / "checkpoints" / name for name in SHIPPED})
    names = sorted(bases)
    for i in range(args.checkpoints):
        label = names[i % len(names)]
        folder = work / "checkpoints" / f"{i:04d}"
        shutil.copytree(bases[label], folder)
        if rng.random() < 0.2:
            what = "weights"
            (folder / "model.safetensors").write_bytes(mutate_weights((folder / "model.safetensors").read_bytes(), rng))
        else:
            what = "config"
            meta = json.loads((folder / "config.json").read_text())
            (folder / "config.json").write_bytes(mutate_checkpoint_config(meta, rng))
        cases.append(("checkpoint", str(folder), label.split()[0], f"{label} {what}"))
    return originals, cases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--token-files", type=int, default=2000)
    parser.add_argument("--checkpoints", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds before a case counts as a hang")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="folder for the findings (default: a new temporary folder)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fuzz.md")
    args = parser.parse_args(argv)
    command = "python benchmarks/fuzz.py " + " ".join(argv if argv is not None else sys.argv[1:])

    started = time.time()
    with tempfile.TemporaryDirectory(prefix="soundtok-fuzz-") as tmp:
        originals, cases = make_cases(args, Path(tmp))
        workers = [Worker(originals) for _ in range(args.workers)]
        results = run_all(workers, cases, args.timeout)
        for w in workers:
            w.close()
        pairs = list(zip(cases, results, strict=True))
        findings = [(c, r) for c, r in pairs if r[0] in ("uncaught", "hang", "crash")]
        findings += [(c, r) for c, r in pairs if r[0] == "ACCEPTED INCONSISTENT"]
        args.keep = args.keep or Path(tempfile.mkdtemp(prefix="soundtok-fuzz-findings-"))
        args.keep.mkdir(parents=True, exist_ok=True)
        for (_, path, _, _), _ in findings:
            copy = shutil.copytree if Path(path).is_dir() else shutil.copy
            copy(path, args.keep / Path(path).name)
    args.out.write_text(report(command, cases, results, findings, time.time() - started, args))
    print(args.out.read_text())
    return 0


def run_all(workers: list[Worker], cases: list[tuple[str, str, str, str]], timeout: float) -> list[Any]:
    """Each case on the next free worker (threads only wait on pipes)."""
    from concurrent.futures import ThreadPoolExecutor
    from queue import Queue

    free: Queue[Worker] = Queue()
    for w in workers:
        free.put(w)

    def one(case: tuple[str, str, str, str]) -> tuple[str, str, int, int, float]:
        w = free.get()
        try:
            return w.run(case[:3], timeout)
        finally:
            free.put(w)

    with ThreadPoolExecutor(len(workers)) as pool:
        results = []
        for i, result in enumerate(pool.map(one, cases)):
            results.append(result)
            if (i + 1) % 250 == 0:
                print(f"{i + 1}/{len(cases)} cases", file=sys.stderr, flush=True)
    return results


def report(
    command: str, cases: list[Any], results: list[Any], findings: list[Any], seconds: float, args: argparse.Namespace
) -> str:
    lines = [
        "# Fuzz campaign (issue 21)",
        "",
        f"Command: `{command}` (seed {args.seed}, {args.workers} workers, timeout {args.timeout:g} s per case); "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {seconds / 60:.1f} min. "
        "What each outcome means: the docstring of benchmarks/fuzz.py.",
        "",
    ]
    for kind in ("token", "checkpoint"):
        rows = [(c, r) for c, r in zip(cases, results, strict=True) if c[0] == kind]
        outcomes = Counter(r[0] for _, r in rows)
        lines += [
            f"## {'Token files' if kind == 'token' else 'Checkpoint folders'}: {len(rows)} mutated",
            "",
            "| outcome | cases |",
            "|---|---|",
            *(f"| {o} | {n} |" for o, n in sorted(outcomes.items())),
            "",
            f"Slowest case {max(r[4] for _, r in rows):.2f} s. "
            f"Peak memory of a worker {max(r[2] for _, r in rows) / 1024:.0f} MB "
            f"(with {len(TOKEN_PRESETS)} tokenizers loaded); largest rise of that peak during one case "
            f"{max(r[3] for _, r in rows) / 1024:.0f} MB.",
            "",
        ]
        by_source = Counter((c[3].rsplit(" ", 1)[0], r[0].split()[0]) for c, r in rows)
        columns = ("refused", "accepted", "ACCEPTED", "uncaught", "hang", "crash")  # first words of the outcomes
        header = " | ".join(c if c != "ACCEPTED" else "ACCEPTED INCONSISTENT" for c in columns)
        lines += [f"| source | {header} |", "|---" * (len(columns) + 1) + "|"]
        for source in sorted({s for s, _ in by_source}):
            lines.append(f"| {source} | " + " | ".join(str(by_source[(source, c)]) for c in columns) + " |")
        by_mutation = Counter((c[3].rsplit(" ", 1)[1], r[0].split()[0]) for c, r in rows)
        lines += ["", f"| mutation | {header} |", "|---" * (len(columns) + 1) + "|"]
        for mutation in sorted({m for m, _ in by_mutation}):
            lines.append(f"| {mutation} | " + " | ".join(str(by_mutation[(mutation, c)]) for c in columns) + " |")
        lines.append("")
    lines += [
        f"Findings (kept under {args.keep}): {len(findings)}. Rows marked '(shipped)' mutate copies of the "
        "checkpoints in soundtok/checkpoints/ as they are; the others, folders saved by this run. Checkpoints saved "
        "before save_checkpoint recorded the config in the weights' header cannot tell an edit that keeps every "
        "tensor shape (a loss weight, a flag) from the original: the shipped ones were re-saved on 2026-12-04 "
        "(same tensors, same fingerprints) for that reason.",
        "",
    ]
    for case, result in findings[:20]:
        lines += [f"- {case[3]} -> **{result[0]}** {result[1].splitlines()[0] if result[1] else ''}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())

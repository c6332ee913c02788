"""LoRA training throughput of an audio-LLM run's recipe, side by side: CPU threads x how a step runs its forwards.

    python benchmarks/lora_throughput.py --run runs/lora-smollm2-msn                  # 1 and 2 threads
    python benchmarks/lora_throughput.py --run runs/lora-smollm2-msn --threads 1 2 4 --steps 10

A *run* is a folder of ``soundtok train`` with a lora recipe and its merged model (``RUN/model/soundtok_llm.json``
holds the training config: LLM, audio tokenizer, LoRA settings, batch size, max_length, seed). Its instructions and
token store are reused: nothing is tokenized again.

Each configuration runs in its own process (so threads and peak memory are its own), on a fresh copy of the LLM
extended with the run's audio tokens, through :func:`soundtok.llm.train_lora` itself: ``--steps`` steps of the
run's batch size over the same ``--examples`` train instructions (drawn with seed 0), the same batches in every
configuration. Configurations:

* *threads*: ``torch.set_num_threads`` (and ``OMP_NUM_THREADS``) of the process, each of ``--threads``;
* *variant*: ``micro`` (the training loop's default: micro-batches of similar length within 512 padded ids,
  logits at the supervised positions only, ``logits_to_keep``), ``supervised`` (the whole batch padded into one
  forward, supervised logits: ``micro_batch_ids=0``) or ``full`` (the reference: the whole batch, logits at every
  position, as a plain ``model(...)`` call gives them). The loss is the same in all three (tested in
  tests/test_llm_lora.py and tests/test_llm_train.py).

Figures, from the TensorBoard scalars of the loop's one log window (all steps, the first included; the final state
save excluded): ids/s = ids of the batches (padding excluded) per second (``train/tokens_per_second``); s/step
(``train/seconds_per_step``); supervised tokens/s (targets with weight > 0). Also the peak resident memory of the
process (``ru_maxrss``: model, optimiser and activations). Writes ``lora_throughput.md`` / ``.json`` to ``--out``
(default benchmarks/results) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any

from soundtok.eval.provenance import run_record
from soundtok.eval.speed import in_fresh_process, peak_rss_mb

ROOT = Path(__file__).resolve().parents[1]
# variant -> (logits, micro_batch_ids)
VARIANTS = {"micro": ("supervised", 512), "supervised": ("supervised", 0), "full": ("full", 0)}


def one(run: Path, variant: str, steps: int, n_examples: int) -> dict[str, Any]:
    """One configuration, in this process (threads come from OMP_NUM_THREADS)."""
    import torch
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    import soundtok
    import soundtok.llm.train as train_module
    from soundtok.llm import LoRASettings, extend_vocab, load_llm
    from soundtok.llm.instructions import from_jsonl
    from soundtok.llm.recipe import INSTRUCTIONS_FILE, META_FILE, MODEL_DIR, TOKENS_DIR
    from soundtok.store import TokenStore

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    meta = json.loads((run / MODEL_DIR / META_FILE).read_text())
    config = meta["train_config"]
    train = [i for i in from_jsonl(run / INSTRUCTIONS_FILE) if i.split == "train"]
    chosen = random.Random(0).sample(train, min(n_examples, len(train)))
    store = TokenStore(run / TOKENS_DIR)
    model, tokenizer = load_llm(config["llm"])
    audio = soundtok.load(config["audio_tokenizer"])
    vocab = extend_vocab(model, tokenizer, audio, init=config.get("audio_init", "mean"), seed=config["seed"])
    head, micro_batch_ids = VARIANTS[variant]
    if head == "full":  # the reference: every position's logits, then the same loss

        def full(model: torch.nn.Module, batch: Any) -> torch.Tensor:
            return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits

        train_module._supervised_logits = full  # type: ignore[assignment]
    with tempfile.TemporaryDirectory() as tmp:
        result = train_module.train_lora(
            model, tokenizer, vocab, chosen, store.get, LoRASettings.from_dict(meta["lora"]), tmp,
            steps=steps, batch_size=config["batch_size"], lr=config["lr"], max_length=config["max_length"],
            seed=config["seed"], checkpoint_every=steps, log_every=steps, micro_batch_ids=micro_batch_ids,
        )  # fmt: skip
        events = sorted((Path(tmp) / "logs").glob("events.out.tfevents.*"))
        acc = EventAccumulator(str(events[-1]))
        acc.Reload()
        ids_per_second = acc.Scalars("train/tokens_per_second")[-1].value
        seconds_per_step = acc.Scalars("train/seconds_per_step")[-1].value  # the loop, not the final state save
    return {
        "variant": variant,
        "micro_batch_ids": micro_batch_ids,
        "threads": torch.get_num_threads(),
        "steps": steps,
        "examples": len(chosen),
        "ids_per_second": ids_per_second,
        "seconds_per_step": seconds_per_step,
        "supervised_tokens": result.train_tokens,
        "supervised_per_second": result.train_tokens / (seconds_per_step * steps),
        "peak_rss_gb": peak_rss_mb() / 1024,
        "final_loss": result.final_loss,
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# LoRA training throughput",
        "",
        f"Command: `{report['command']}`  ",
        f"Date: {report['date']}. Machine: {report['machine']}.  ",
        f"Run: `{report['run']}` ({report['llm']} + {report['audio_tokenizer']}); {report['steps']} steps of batch "
        f"{report['batch_size']} over the same {report['examples']} train instructions in every row.",
        "",
        "Definitions: docstring of benchmarks/lora_throughput.py. *micro*: micro-batches of similar length within "
        "512 padded ids, logits at the supervised positions only (the training loop's default); *supervised*: the "
        "whole batch in one padded forward, supervised logits; *full*: the whole batch, logits at every position "
        "(reference).",
        "",
        "| threads | variant | ids/s | s/step | supervised tokens/s | peak RSS (GB) | speed-up vs full |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = report["rows"]
    for row in rows:
        ref = next(r for r in rows if r["threads"] == row["threads"] and r["variant"] == "full")
        lines.append(
            f"| {row['threads']} | {row['variant']} | {row['ids_per_second']:.1f} | {row['seconds_per_step']:.2f} | "
            f"{row['supervised_per_second']:.2f} | {row['peak_rss_gb']:.2f} | "
            f"{ref['seconds_per_step'] / row['seconds_per_step']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a trained lora run folder (with model/)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--examples", type=int, default=256, help="train instructions the batches are drawn from")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--one", choices=VARIANTS, help=argparse.SUPPRESS)  # a child process: one configuration
    args = parser.parse_args()
    meta_path = args.run / "model" / "soundtok_llm.json"
    if not meta_path.is_file():
        parser.error(f"{args.run} is not a trained lora run (no {meta_path})")
    if args.one:
        print(json.dumps(one(args.run, args.one, args.steps, args.examples)))
        return

    rows = []
    for threads in args.threads:
        for variant in VARIANTS:
            child = [__file__, "--run", str(args.run), "--steps", str(args.steps),
                     "--examples", str(args.examples), "--one", variant]  # fmt: skip
            env = os.environ | {"OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
            try:
                rows.append(in_fresh_process(child, env))
            except ChildProcessError as exc:
                raise SystemExit(str(exc)) from None
            print(f"{threads} thread(s), {variant}: {rows[-1]['seconds_per_step']:.2f} s/step", flush=True)
    config = json.loads(meta_path.read_text())["train_config"]
    report = {
        **run_record(threads="threads per row"),
        "run": str(args.run),
        "llm": config["llm"],
        "audio_tokenizer": config["audio_tokenizer"],
        "batch_size": config["batch_size"],
        "steps": args.steps,
        "examples": rows[0]["examples"],
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "lora_throughput.json").write_text(json.dumps(report, indent=1) + "\n")
    text = markdown(report)
    (args.out / "lora_throughput.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

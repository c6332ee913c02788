"""Tokenize a corpus, data-parallel and resumable, into a token store or one ``.stok`` file per item.

Run it in one process, or in every process of an ``accelerate`` run (on CPU machines set
``ACCELERATE_USE_CPU=true``; ``--cpu --num_processes 2`` would silently run one process)::

    python -m soundtok.corpus.tokenize --manifest m.jsonl --tokenizer mulaw-8bit-16k --out tokens/
    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 \\
        -m soundtok.corpus.tokenize --manifest m.jsonl --tokenizer mulaw-8bit-16k --out tokens/ --output files

How the work is shared and resumed:

1. every process sorts the manifest by id and checks its share of the existing output (complete shards, or
   ``.stok`` files that parse and were made by this tokenizer); the shares are gathered, so every process
   sees the same set of done ids, taken before anyone writes;
2. the remaining items are dealt out: process ``r`` of ``w`` takes remaining item ``i`` when ``i % w == r``;
3. each process groups its items by duration, loads and encodes them in batches, and writes atomically:
   whole Parquet shards named after its rank (every ``shard_items`` items) or one ``<out>/<id>.stok`` per item.

A killed run therefore leaves only complete records, and a rerun tokenizes exactly the missing items. Audio that
cannot be read or encoded is logged to ``<out>/errors-rank<r>.jsonl`` (one file per process, rewritten by each
run) and retried by the next run.

Only one run writes to a folder at a time: before step 1 the main process takes the folder's
:class:`~soundtok.fileio.RunLock` and every process joins it, so a second run (or a rerun started while processes of
a killed one still write) is refused with a message naming the holder's pid. Under a launcher the processes die
with it (:func:`~soundtok.launch.die_with_parent`), and a store reads an item stored twice once.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

import torch

from soundtok.audio.io import load_audio
from soundtok.corpus.manifest import AudioItem, Manifest
from soundtok.corpus.sampler import BucketBatchSampler
from soundtok.errors import SoundtokError, TokenFileError, TokenizerMismatchError
from soundtok.fileio import RunLock
from soundtok.launch import (  # noqa: F401  (launch_env re-exported)
    accelerate_command,
    die_with_parent,
    launch_env,
    run_accelerate,
)
from soundtok.store import META_FILE, SHARD_GLOB, TokenStore, TokenStoreWriter
from soundtok.tokenfile import SUFFIX, read_token_file, write_token_file
from soundtok.tokenizers.base import AudioTokenizer
from soundtok.types import Tokens

log = logging.getLogger(__name__)

Output = Literal["store", "files"]
#: seconds to sleep after each batch; a hook for tests that interrupt a run (unset in normal use)
SLEEP_ENV = "SOUNDTOK_TOKENIZE_SLEEP"
ERRORS_GLOB = "errors-rank*.jsonl"
R = TypeVar("R")


@dataclass(frozen=True)
class TokenizeSummary:
    """Counts over all processes: ``done`` now, ``skipped`` (done by an earlier run), ``failed`` (see errors)."""

    done: int
    skipped: int
    failed: int
    out_dir: Path
    output: str
    num_processes: int

    def __str__(self) -> str:
        text = (
            f"tokenized {self.done}, skipped {self.skipped} (already done), failed {self.failed} "
            f"-> {self.out_dir} ({self.output}, {self.num_processes} process{'es' * (self.num_processes != 1)})"
        )
        if self.failed:
            text += f"; failures are listed in {self.out_dir}/{ERRORS_GLOB}"
        return text


def errors_path(out_dir: str | os.PathLike[str], rank: int) -> Path:
    return Path(out_dir) / f"errors-rank{rank}.jsonl"


def read_errors(out_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The failures recorded by the latest run, all processes together."""
    records: list[dict[str, Any]] = []
    for path in sorted(Path(out_dir).glob(ERRORS_GLOB)):
        records.extend(json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    return records


def stok_path(out_dir: str | os.PathLike[str], item_id: str) -> Path:
    """Where ``output="files"`` puts an item: ``<out>/<id>.stok`` (ids with ``/`` make subfolders)."""
    return Path(out_dir) / f"{item_id}{SUFFIX}"


# ---------------------------------------------------------------------------------------------------------------
# processes
def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _partial_state() -> Any:
    from accelerate import PartialState

    # PartialState ignores ACCELERATE_USE_CPU: without cpu=True a CPU-only multi-process launch would make every
    # process believe it is rank 0 of 1
    return PartialState(cpu=_env_true("ACCELERATE_USE_CPU") or not torch.cuda.is_available())


def _collective(state: Any, fn: Callable[[], R]) -> list[R]:
    """Run ``fn`` on every process and gather the results; a :class:`SoundtokError` on any process is raised on
    all of them (so none is left waiting in a later collective)."""
    from accelerate.utils import gather_object

    outcome: tuple[Any, SoundtokError | None]
    try:
        outcome = (fn(), None)
    except SoundtokError as exc:
        outcome = (None, exc)
    gathered = gather_object([outcome]) if state.num_processes > 1 else [outcome]
    for _, error in gathered:
        if error is not None:
            raise error
    return [cast(R, result) for result, _ in gathered]


# ---------------------------------------------------------------------------------------------------------------
# what is done already
def _done_files(items: Sequence[AudioItem], out_dir: Path, tokenizer: AudioTokenizer) -> list[str]:
    done = []
    for item in items:
        path = stok_path(out_dir, item.id)
        if not path.exists():
            continue
        try:
            tf = read_token_file(path)
        except TokenFileError as exc:
            log.warning("%s; it will be tokenized again", exc)
            continue
        if tf.tokens.tokenizer.fingerprint != tokenizer.identity.fingerprint:
            raise TokenizerMismatchError(
                f"{path} holds tokens made by {tf.tokens.tokenizer}, but this run uses {tokenizer.identity}; "
                "write to another folder, or pass force=True (--force) to replace them"
            )
        done.append(item.id)
    return done


def _done_store(shards: Sequence[Path], store: TokenStore) -> list[str]:
    return [item_id for shard in shards for item_id in store.shard_ids(shard)]


def _prepare(out_dir: Path, output: Output, tokenizer: AudioTokenizer, force: bool) -> None:
    """Main process, before anyone scans or writes: clear old error logs; in store mode, start afresh if
    ``force``, then create or check ``store.json``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob(ERRORS_GLOB):
        old.unlink()
    if output == "store":
        if force:
            for old in [*out_dir.glob(SHARD_GLOB), *out_dir.glob(".shard-*.tmp"), out_dir / META_FILE]:
                old.unlink(missing_ok=True)
        TokenStoreWriter.for_tokenizer(out_dir, tokenizer)


# ---------------------------------------------------------------------------------------------------------------
# the work
def _encode_batch(tokenizer: AudioTokenizer, wavs: list[torch.Tensor]) -> Tokens:
    lengths = torch.tensor([w.shape[-1] for w in wavs])
    batch = torch.zeros(len(wavs), tokenizer.channels, int(lengths.max()))  # [B, C, T]
    for b, w in enumerate(wavs):
        batch[b, :, : w.shape[-1]] = w
    return tokenizer.encode(batch, tokenizer.sample_rate, lengths)


def tokenize_corpus(
    manifest: Manifest | str | os.PathLike[str],
    tokenizer_name_or_path: str | os.PathLike[str] | AudioTokenizer,
    out_dir: str | os.PathLike[str],
    *,
    output: Output = "store",
    batch_seconds: float = 60.0,
    max_batch_items: int = 64,
    shard_items: int = 1000,
    force: bool = False,
    progress: bool = True,
) -> TokenizeSummary:
    """Tokenize every item of ``manifest`` (or a manifest JSONL path) not already in ``out_dir``.

    Call it in every process of a distributed run (``accelerate launch``/``torchrun``) or in a single one.
    ``output="store"`` writes a :class:`~soundtok.store.TokenStore` (a shard per ``shard_items`` items per
    process); ``output="files"`` writes ``<out>/<id>.stok`` with metadata ``{id, labels, split, dataset}``.
    Batches hold at most ``batch_seconds`` of audio and ``max_batch_items`` items. ``force`` re-tokenizes
    everything (in store mode the old shards are deleted first). Returns the counts of all processes.
    """
    if output not in ("store", "files"):
        raise ValueError(f"output must be 'store' or 'files', got {output!r}")
    if shard_items < 1 or batch_seconds <= 0 or max_batch_items < 1:
        raise ValueError("shard_items and max_batch_items must be >= 1 and batch_seconds > 0")
    state = _partial_state()
    if not isinstance(manifest, Manifest):
        manifest = Manifest.from_jsonl(manifest)
    items = sorted(manifest, key=lambda i: i.id)
    if isinstance(tokenizer_name_or_path, AudioTokenizer):
        tokenizer = tokenizer_name_or_path
    else:
        from soundtok.registry import load

        tokenizer = load(tokenizer_name_or_path, device=str(state.device))
    tokenizer.eval()
    out_dir = Path(out_dir)
    with RunLock(out_dir) as lock:
        # the main process holds the folder (or every process raises), then every process joins the run
        _collective(state, lambda: lock.acquire() if state.is_main_process else None)
        lock.join()
        return _tokenize(
            state, items, tokenizer, out_dir, output, batch_seconds, max_batch_items, shard_items, force, progress
        )


def _tokenize(
    state: Any,
    items: list[AudioItem],
    tokenizer: AudioTokenizer,
    out_dir: Path,
    output: Output,
    batch_seconds: float,
    max_batch_items: int,
    shard_items: int,
    force: bool,
    progress: bool,
) -> TokenizeSummary:
    """:func:`tokenize_corpus` of one process, once the run holds ``out_dir``."""
    from tqdm.auto import tqdm

    rank, world = state.process_index, state.num_processes

    # 1. prepare (main process), then everyone scans its share of the existing output
    _collective(state, lambda: _prepare(out_dir, output, tokenizer, force) if state.is_main_process else None)
    if output == "store":
        store = TokenStore(out_dir)
        shards = store.shards()
        shares = _collective(state, lambda: _done_store(shards[rank::world], store))
    elif force:
        shares = [[]]
    else:
        shares = _collective(state, lambda: _done_files(items[rank::world], out_dir, tokenizer))
    wanted = {i.id for i in items}
    done = {item_id for share in shares for item_id in share} & wanted
    remaining = [i for i in items if i.id not in done]
    mine = remaining[rank::world]
    log.info(
        "rank %d of %d: %d items to tokenize (%d of %d already done)", rank, world, len(mine), len(done), len(items)
    )

    # 2. tokenize this process's share, shortest batches first
    writer = (
        TokenStoreWriter.for_tokenizer(out_dir, tokenizer, rank=rank, shard_items=shard_items)
        if output == "store"
        else None
    )
    sampler = BucketBatchSampler(
        [i.duration for i in mine],
        max_seconds=batch_seconds,
        max_items=max_batch_items,
        shuffle=False,
        rank=0,
        world_size=1,
    )
    sleep = float(os.environ.get(SLEEP_ENV, "0") or 0)
    errors_file = errors_path(out_dir, rank)
    n_done = n_failed = 0

    def fail(item: AudioItem, exc: Exception) -> None:
        nonlocal n_failed
        n_failed += 1
        log.warning("item %s (%s) failed: %s", item.id, item.path, exc)
        record = {"id": item.id, "path": str(item.path), "error": f"{type(exc).__name__}: {exc}", "rank": rank}
        with errors_file.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")

    def emit(item: AudioItem, tokens: Tokens) -> None:
        nonlocal n_done
        if writer is not None:
            writer.add(item.id, tokens, item.labels, split=item.split, dataset=item.dataset)
        else:
            metadata = {"id": item.id, "labels": dict(item.labels), "split": item.split, "dataset": item.dataset}
            write_token_file(stok_path(out_dir, item.id), tokens, metadata, force=True)
        n_done += 1

    bar = tqdm(
        total=len(mine),
        desc=f"tokenizing (rank {rank} of {world})",
        unit="item",
        disable=not (progress and state.is_main_process),
    )
    for batch in sampler:
        loaded: list[tuple[AudioItem, torch.Tensor]] = []
        for index in batch:
            item = mine[index]
            try:
                wav, _ = load_audio(item.path, sample_rate=tokenizer.sample_rate, channels=tokenizer.channels)
                loaded.append((item, wav))
            except SoundtokError as exc:
                fail(item, exc)
        if loaded:
            try:
                tokens = _encode_batch(tokenizer, [w for _, w in loaded])
                outcomes: list[Tokens | Exception] = list(tokens.items())
            except SoundtokError:
                # find the culprit: encode one by one
                outcomes = []
                for _, wav in loaded:
                    try:
                        outcomes.append(_encode_batch(tokenizer, [wav]))
                    except SoundtokError as exc:
                        outcomes.append(exc)
            for (item, _), outcome in zip(loaded, outcomes, strict=True):
                if isinstance(outcome, Exception):
                    fail(item, outcome)
                else:
                    emit(item, outcome)
        bar.update(len(batch))
        if sleep:
            time.sleep(sleep)
    if writer is not None:
        writer.close()
    bar.close()

    # 3. counts of every process
    counts = _collective(state, lambda: (n_done, n_failed))
    summary = TokenizeSummary(
        done=sum(c[0] for c in counts),
        skipped=len(done),
        failed=sum(c[1] for c in counts),
        out_dir=out_dir,
        output=output,
        num_processes=world,
    )
    log.info("rank %d of %d: tokenized %d, failed %d", rank, world, n_done, n_failed)
    return summary


# ---------------------------------------------------------------------------------------------------------------
# command line
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m soundtok.corpus.tokenize",
        description="Tokenize a manifest into a token store or .stok files; resumable; runs under accelerate launch.",
    )
    p.add_argument("--manifest", required=True, help="manifest JSONL (Manifest.to_jsonl)")
    p.add_argument("--tokenizer", required=True, help="preset name (soundtok list) or checkpoint folder")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--output", choices=["store", "files"], default="store", help="Parquet token store or .stok files")
    p.add_argument("--shard-items", type=int, default=1000, help="items per store shard (per process)")
    p.add_argument("--batch-seconds", type=float, default=60.0, help="audio seconds per encode batch")
    p.add_argument("--max-batch-items", type=int, default=64, help="items per encode batch")
    p.add_argument("--force", action="store_true", help="tokenize everything again, replacing earlier output")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if "LOCAL_RANK" in os.environ and not die_with_parent():  # started by a launcher: stop writing when it dies
        log.warning("this process cannot ask to die with its launcher here; if the launcher is killed, stop it too")
    rank = os.environ.get("RANK", "0")
    logging.basicConfig(
        level=args.log_level.upper(), format=f"%(asctime)s rank{rank} %(levelname)s %(name)s: %(message)s"
    )
    try:
        summary = tokenize_corpus(
            args.manifest,
            args.tokenizer,
            args.out,
            output=args.output,
            batch_seconds=args.batch_seconds,
            max_batch_items=args.max_batch_items,
            shard_items=args.shard_items,
            force=args.force,
            progress=not args.no_progress,
        )
    except SoundtokError as exc:
        log.error("%s", exc)
        return 2
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if rank == "0":
        print(summary, flush=True)
    return 0


def launch_command(argv: Sequence[str], num_processes: int = 2, *, port: int | None = None) -> list[str]:
    """The ``accelerate launch`` command that runs this module's CLI in ``num_processes`` processes.

    >>> launch_command(["--manifest", "m.jsonl"], 2, port=29999)[1:6]
    ['-m', 'accelerate.commands.launch', '--multi_gpu', '--num_processes', '2']
    """
    return accelerate_command("soundtok.corpus.tokenize", argv, num_processes, port=port)


def launch(argv: Sequence[str], num_processes: int = 2, *, cpu: bool | None = None) -> int:
    """Run this module's CLI in ``num_processes`` accelerate processes; returns the exit code."""
    return run_accelerate("soundtok.corpus.tokenize", argv, num_processes, cpu=cpu)


if __name__ == "__main__":
    sys.exit(main())

"""Corpus tokenization: outputs, resume, bad audio, and a 2-process accelerate run killed and restarted."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

import soundtok
from soundtok.audio.io import load_audio
from soundtok.corpus.loaders import load_shared_corpus
from soundtok.corpus.manifest import AudioItem, Manifest
from soundtok.corpus.tokenize import (
    SLEEP_ENV,
    launch_command,
    launch_env,
    main,
    read_errors,
    stok_path,
    tokenize_corpus,
)
from soundtok.errors import CorpusError, OutputLockedError, TokenizerMismatchError
from soundtok.fileio import RunLock
from soundtok.store import TokenStore, shard_rank
from soundtok.tokenfile import read_token_file

NAME = "mulaw-8bit-8k"
SUMMARY = re.compile(r"tokenized (\d+), skipped (\d+) \(already done\), failed (\d+)")


def counts(log: str) -> tuple[int, ...]:
    """(tokenized, skipped, failed) from the summary line."""
    match = SUMMARY.search(log)
    assert match is not None, f"no summary in:\n{log[-3000:]}"
    return tuple(int(g) for g in match.groups())


def clips(tmp_path: Path, n: int) -> Manifest:
    """n real FSDD clips from the shared corpus (spread over speakers and digits), else generated tones."""
    try:
        fsdd = load_shared_corpus(datasets=["fsdd"])
        items = list(fsdd[:: max(1, len(fsdd) // n)][:n])
        if len(items) == n and all(i.path.is_file() for i in items):
            return Manifest(items)
    except CorpusError:
        pass
    rng = np.random.default_rng(0)
    items = []
    for i in range(n):
        seconds = float(rng.uniform(0.2, 0.7))
        t = np.arange(int(seconds * 16000)) / 16000
        path = tmp_path / "clips" / f"tone_{i:02d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), (0.2 * np.sin(2 * np.pi * (200 + 20 * i) * t)).astype("float32"), 16000)
        items.append(AudioItem(f"tones/{i:02d}", path, seconds, {"n": str(i)}, "train" if i % 4 else "test", "tones"))
    return Manifest(items)


def with_bad_clip(tmp_path: Path, manifest: Manifest) -> Manifest:
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVE this is not audio")
    return manifest + Manifest([AudioItem("bad/broken", broken, 0.5, {"digit": "1"}, "train", "bad")])


def expected_length(item: AudioItem) -> int:
    return load_audio(item.path, sample_rate=8000, channels=1)[0].shape[-1]


# ---------------------------------------------------------------------------------------------------------------
# one process, in this interpreter
def test_files_output_resume_and_errors(tmp_path: Path) -> None:
    manifest = with_bad_clip(tmp_path, clips(tmp_path, 6))
    out = tmp_path / "out"
    first = tokenize_corpus(manifest, NAME, out, output="files", progress=False)
    assert (first.done, first.skipped, first.failed, first.num_processes) == (6, 0, 1, 1)
    tok = soundtok.load(NAME)
    for item in manifest[:6]:
        tf = read_token_file(stok_path(out, item.id))  # ids with "/" make subfolders
        assert tf.metadata == {"id": item.id, "labels": dict(item.labels), "split": item.split, "dataset": item.dataset}
        assert tok.decode(tf.tokens).shape[-1] == expected_length(item)
    [error] = read_errors(out)
    assert error["id"] == "bad/broken" and "AudioLoadingError" in error["error"]

    (stok_path(out, manifest[2].id)).write_bytes(b"STOK truncated")  # a damaged record is redone
    again = tokenize_corpus(manifest, NAME, out, output="files", progress=False)
    assert (again.done, again.skipped, again.failed) == (1, 5, 1)
    assert len(read_errors(out)) == 1  # errors of the latest run only
    forced = tokenize_corpus(manifest, NAME, out, output="files", progress=False, force=True)
    assert (forced.done, forced.skipped) == (6, 0)

    with pytest.raises(TokenizerMismatchError, match="mulaw-4bit-8k"):
        tokenize_corpus(manifest, "mulaw-4bit-8k", out, output="files", progress=False)


def test_store_output_resume_and_mismatch(tmp_path: Path) -> None:
    manifest = with_bad_clip(tmp_path, clips(tmp_path, 7))
    out = tmp_path / "store"
    first = tokenize_corpus(manifest, NAME, out, output="store", shard_items=3, batch_seconds=1.0, progress=False)
    assert (first.done, first.skipped, first.failed) == (7, 0, 1)
    store = TokenStore(out)
    assert sorted(store.ids()) == sorted(i.id for i in manifest[:7]) and len(store.shards()) == 3
    tok = soundtok.load(NAME)
    for row in store.iter_rows():
        item = manifest.get(row["id"])
        assert row["labels"] == dict(item.labels) and row["split"] == item.split and row["dataset"] == item.dataset
        assert tok.decode(store.to_tokens(row)).shape[-1] == row["length"] == expected_length(item)
    again = tokenize_corpus(manifest, NAME, out, output="store", progress=False)
    assert (again.done, again.skipped, again.failed) == (0, 7, 1) and len(TokenStore(out).shards()) == 3

    with pytest.raises(TokenizerMismatchError):
        tokenize_corpus(manifest, "mulaw-4bit-8k", out, output="store", progress=False)
    forced = tokenize_corpus(manifest, "mulaw-4bit-8k", out, output="store", progress=False, force=True)
    assert forced.done == 7 and TokenStore(out).tokenizer.name == "mulaw-4bit-8k" and len(TokenStore(out)) == 7


def test_a_folder_being_written_is_refused(tmp_path: Path) -> None:
    manifest = clips(tmp_path, 2)
    out = tmp_path / "out"
    with RunLock(out) as other:  # another live run: its main process, then only its writers
        other.acquire()
        other.join()
        with pytest.raises(OutputLockedError, match=f"another run \\(pid {os.getpid()} "):
            tokenize_corpus(manifest, NAME, out, output="files", progress=False)
    with RunLock(out) as leftover:
        leftover.join()  # a worker of a killed run, still writing
        with pytest.raises(OutputLockedError, match="still writing"):
            tokenize_corpus(manifest, NAME, out, output="store", progress=False)
    assert not list(out.glob("*.stok")) and not list(out.glob("shard-*"))  # refused runs wrote nothing
    assert tokenize_corpus(manifest, NAME, out, output="files", progress=False).done == 2  # free again


def test_module_cli_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest_path = clips(tmp_path, 3).to_jsonl(tmp_path / "m.jsonl")
    argv = ["--manifest", str(manifest_path), "--tokenizer", NAME, "--out", str(tmp_path / "o"), "--no-progress"]
    assert main([*argv, "--output", "files"]) == 0
    assert counts(capsys.readouterr().out) == (3, 0, 0)
    assert main([*argv, "--tokenizer", "no-such-tokenizer"]) == 2


def test_launch_command() -> None:
    cmd = launch_command(["--out", "x"], 2, port=29123)
    assert cmd[:3] == [sys.executable, "-m", "accelerate.commands.launch"] and "--multi_gpu" in cmd
    assert cmd[cmd.index("--num_processes") + 1] == "2" and cmd[-3:] == ["soundtok.corpus.tokenize", "--out", "x"]
    assert "--multi_gpu" not in launch_command([], 1)
    assert launch_env(cpu=True, base={})["ACCELERATE_USE_CPU"] == "true"
    assert "ACCELERATE_USE_CPU" not in launch_env(cpu=False, base={})


# ---------------------------------------------------------------------------------------------------------------
# two accelerate processes, killed mid-run, then resumed
def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the launcher and every process under it (torch's launcher puts workers in their own sessions)."""
    pids = _descendants(proc.pid)
    for pid in [*reversed(pids), proc.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)
    for pid in pids:  # gone, or a zombie waiting for init
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                break
            if state == "Z":
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"process {pid} survived SIGKILL")


def _records(out: Path, output: str) -> int:
    if output == "files":
        return sum(1 for _ in out.rglob("*.stok"))
    return sum(pq.ParquetFile(p).metadata.num_rows for p in out.glob("shard-*.parquet"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="walks /proc to kill the process tree")
@pytest.mark.parametrize("output", ["files", "store"])
def test_two_processes_killed_then_resumed(tmp_path: Path, output: str) -> None:
    good = clips(tmp_path, 40)
    manifest = with_bad_clip(tmp_path, good)
    manifest_path = manifest.to_jsonl(tmp_path / "manifest.jsonl")
    out = tmp_path / "out"
    argv = ["--manifest", str(manifest_path), "--tokenizer", NAME, "--out", str(out), "--output", output]
    argv += ["--shard-items", "2", "--batch-seconds", "0.5", "--no-progress"]
    env = launch_env(cpu=True)
    env.pop(SLEEP_ENV, None)

    # run 1: slowed down, killed as soon as the first records exist
    log1 = tmp_path / "run1.log"
    with log1.open("wb") as f:
        proc = subprocess.Popen(
            launch_command(argv, 2), env={**env, SLEEP_ENV: "0.15"}, stdout=f, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 90
            while _records(out, output) == 0:
                assert proc.poll() is None, f"run 1 ended early:\n{log1.read_text()[-3000:]}"
                assert time.monotonic() < deadline, f"no output after 90 s:\n{log1.read_text()[-3000:]}"
                time.sleep(0.05)
        finally:
            _kill_tree(proc)
    killed_at = _records(out, output)
    print(f"{output}: {killed_at} records at the kill")
    time.sleep(0.5)
    assert _records(out, output) == killed_at, "something still writes after the kill"
    assert 0 < killed_at < len(good), f"{killed_at} records at the kill"
    text1 = log1.read_text()
    assert "rank 0 of 2:" in text1 and "rank 1 of 2:" in text1, text1[-3000:]

    # run 2: resumes
    run2 = subprocess.run(launch_command(argv, 2), env=env, capture_output=True, text=True, timeout=300)
    text2 = run2.stdout + run2.stderr
    assert run2.returncode == 0, text2[-3000:]
    assert "rank 0 of 2:" in text2 and "rank 1 of 2:" in text2  # really two processes
    done, skipped, failed = counts(text2)
    assert (skipped, done, failed) == (killed_at, len(good) - killed_at, 1)

    # exactly one record per good id, each decoding to its clip's length
    tok = soundtok.load(NAME)
    lengths = {item.id: expected_length(item) for item in good}
    if output == "files":
        found = Counter(p.relative_to(out).with_suffix("").as_posix() for p in out.rglob("*.stok"))
        assert found == Counter(lengths.keys())
        for item_id, n in lengths.items():
            tf = read_token_file(stok_path(out, item_id))
            assert tf.metadata["id"] == item_id and tok.decode(tf.tokens).shape == (1, 1, n)
    else:
        ids = [i for p in out.glob("shard-*.parquet") for i in pq.read_table(p, columns=["id"])["id"].to_pylist()]
        assert Counter(ids) == Counter(lengths.keys())  # no duplicates, none lost
        assert {shard_rank(p) for p in TokenStore(out).shards()} == {0, 1}
        store = TokenStore(out)
        for row in store.iter_rows():
            assert tok.decode(store.to_tokens(row)).shape == (1, 1, lengths[row["id"]])
    [error] = read_errors(out)
    assert error["id"] == "bad/broken" and error["rank"] in (0, 1)
    assert all(p.name.startswith(".") for p in out.rglob("*.tmp"))  # leftovers of the kill stay hidden


KILLS = int(os.environ.get("SOUNDTOK_TEST_KILLS", "2"))  # the issue-21 campaign ran this with 10


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signals and /proc are Linux's")
@pytest.mark.parametrize("output", ["files", "store"])
def test_killing_the_launcher_alone_then_rerunning_at_once(tmp_path: Path, output: str) -> None:
    """SIGKILL only the launcher at random moments and start the next run at once: nothing is duplicated or lost,
    a rerun that comes while the killed run still holds the folder is refused (and retried here), and workers that
    had started tokenizing die with their launcher. A worker still starting up when its launcher dies cannot tell
    (its parent-death request comes after the kill): it never writes, as its rendezvous is gone, and is killed at
    the end here."""
    good = clips(tmp_path, 120)
    manifest_path = good.to_jsonl(tmp_path / "manifest.jsonl")
    out = tmp_path / "out"
    argv = ["--manifest", str(manifest_path), "--tokenizer", NAME, "--out", str(out), "--output", output]
    argv += ["--shard-items", "2", "--batch-seconds", "0.5", "--no-progress"]
    env = launch_env(cpu=True)
    slow = {**env, SLEEP_ENV: "0.4"}  # the killed runs take ~30 s: orphans would write for many seconds
    rng = random.Random(int(os.environ.get("SOUNDTOK_TEST_SEED", "0")))
    workers: list[int] = []
    stragglers: list[int] = []
    refused = mid_run = 0
    try:
        for run in range(100):
            log = tmp_path / f"run{run}.log"
            with log.open("wb") as f:
                run_env = slow if run < KILLS else env
                proc = subprocess.Popen(launch_command(argv, 2), env=run_env, stdout=f, stderr=subprocess.STDOUT)
                _wait_gone(workers)  # the killed run's workers die with their launcher, while this run starts
                if run < KILLS:
                    if rng.random() < 0.75:  # mostly while tokenizing: a random moment once both ranks started
                        deadline = time.monotonic() + 120
                        while log.read_text().count("items to tokenize") < 2 and proc.poll() is None:
                            assert time.monotonic() < deadline, log.read_text()[-3000:]
                            time.sleep(0.05)
                    time.sleep(rng.uniform(0.0, 6.0))
                    workers = _descendants(proc.pid)
                    proc.kill()  # the launcher alone
                    proc.wait()
                elif proc.wait(timeout=300) == 0:
                    break
            text = log.read_text()
            if text.count("items to tokenize") < 2:  # killed while starting up (or refused)
                stragglers += workers
                workers = []
            assert run == KILLS or not SUMMARY.search(text), "a run to be killed ended first: make it slower"
            mid_run += run < KILLS and bool(workers)
            was_refused = "being written" in text or "still writing" in text
            refused += was_refused
            assert run < KILLS or was_refused, text[-3000:]  # after the kills, only a refusal ends a run early
    finally:
        for pid in stragglers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert counts(log.read_text())[2] == 0
    if output == "files":
        ids = [p.relative_to(out).with_suffix("").as_posix() for p in out.rglob("*.stok")]
    else:
        ids = [i for p in out.glob("shard-*.parquet") for i in pq.read_table(p, columns=["id"])["id"].to_pylist()]
    assert Counter(ids) == Counter(item.id for item in good)  # none duplicated, none lost
    print(f"{output}: {KILLS} kills ({mid_run} mid-run, {KILLS - mid_run} during start-up), {refused} reruns refused")


def _wait_gone(pids: list[int], seconds: float = 2) -> None:
    deadline = time.monotonic() + seconds
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in pids), "a worker outlived its launcher"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"

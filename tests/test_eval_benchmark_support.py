"""What the benchmarks take from the library instead of re-implementing it: intervals, provenance, fresh-process
measurements, the audio-LLM run selection, the bundled clips and the out-of-corpus validation set."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch

import soundtok
from soundtok.corpus import AudioItem, Manifest
from soundtok.corpus.loaders import load_pocketsphinx_testdata
from soundtok.errors import CorpusError
from soundtok.eval import provenance, speaker
from soundtok.eval.speed import in_fresh_process, median_seconds, peak_rss_mb
from soundtok.eval.stats import bootstrap, bootstrap_mean, bootstrap_ratio, mean_ci, t_quantile
from soundtok.llm.instructions import Instruction
from soundtok.llm.runs import run_items, run_names, select, stored_meta

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------------- intervals
def test_mean_ci_is_the_student_t_interval_at_any_confidence() -> None:
    values = [0.81, 0.84, 0.79, 0.88]
    sd = statistics.stdev(values)
    assert mean_ci(values) == pytest.approx((statistics.fmean(values), 3.182446305 * sd / 2))
    pytest.importorskip("scipy")
    assert mean_ci(values, 0.9)[1] == pytest.approx(2.353363 * sd / 2, rel=1e-6)
    assert t_quantile(0.95, 40) == pytest.approx(2.021075390, rel=1e-8)  # beyond the table: the expansion
    assert math.isnan(mean_ci([1.0])[1])
    with pytest.raises(ValueError, match="confidence"):
        mean_ci(values, 95)


def test_probe_summaries_use_the_same_interval() -> None:
    from soundtok.probes.train import ProbeResult, summarise

    scores = [0.7, 0.75, 0.9]
    results = [ProbeResult("digits", s, {"accuracy": a}, 0.1, 30, 1.0, 90, 10) for s, a in enumerate(scores)]
    interval = summarise(results)["accuracy"]
    mean, half = mean_ci(scores)
    assert (interval.mean, interval.low, interval.high, interval.n) == pytest.approx(
        (mean, mean - half, mean + half, 3)
    )


def test_bootstrap_intervals_are_seeded_and_resample_whole_items() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=40).tolist()
    assert bootstrap_mean(x) == bootstrap_mean(x)  # seed 0: a report is reproducible
    low, high = bootstrap_mean(x)
    assert low < statistics.fmean(x) < high
    assert bootstrap_mean(x, seed=1) != (low, high)
    # a ratio of sums resamples (numerator, denominator) pairs together: constant per-item rates give no spread
    assert bootstrap_ratio([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx((0.1, 0.1))
    assert all(math.isnan(v) for v in bootstrap(lambda i: 0.0, 1))
    with pytest.raises(ValueError, match="length"):
        bootstrap_ratio([1, 2], [1])


def test_speaker_cosine_of_embeddings_is_clamped_and_symmetric() -> None:
    a, b = np.array([3.0, 4.0]), np.array([4.0, 3.0])
    assert speaker.embedding_similarity(a, b) == pytest.approx(24 / 25) == speaker.embedding_similarity(b, a)
    assert speaker.embedding_similarity(a, a * (1 + 1e-16)) <= 1.0
    assert speaker.embedding_similarity(a, -a) == pytest.approx(-1.0)


# --------------------------------------------------------------------------------------------------- provenance
def test_run_record_names_the_command_code_and_machine() -> None:
    record = provenance.run_record(["benchmarks/x.py", "--out", "a b"], threads=3)
    assert record["command"] == "python benchmarks/x.py --out 'a b'"
    assert record["soundtok"] == soundtok.__version__
    assert ", 3 threads" in record["machine"] and f"torch {torch.__version__}" in record["machine"]
    assert json.loads(json.dumps(record)) == record
    if (ROOT / ".git").exists():  # this checkout: its commit, marked when the tree differs from it
        assert record["git_commit"] is not None and len(record["git_commit"].split()[0]) == 40
    assert provenance.machine("1 thread per probe").split(", ")[3] == "1 thread per probe"
    info = provenance.machine_info()
    assert {"processor", "cpu_count", "torch", "torch_threads", "python", "platform"} <= set(info)


# ------------------------------------------------------------------------------------------------ fresh process
def test_a_measurement_in_a_fresh_process_returns_its_json_line(tmp_path: Path) -> None:
    child = tmp_path / "child.py"
    child.write_text(
        "import json, sys\nfrom soundtok.eval.speed import peak_rss_mb\n"
        "print('progress')\nprint(json.dumps({'arg': sys.argv[1], 'peak_rss_mb': peak_rss_mb()}))\n"
    )
    out = in_fresh_process([str(child), "x"])
    assert out["arg"] == "x" and out["peak_rss_mb"] > 1
    child.write_text("import sys\nprint('no result')\nsys.exit(3)\n")
    with pytest.raises(ChildProcessError, match="exit status 3"):
        in_fresh_process([str(child)])
    child.write_text("print('no result')\n")
    with pytest.raises(ChildProcessError, match="no JSON"):
        in_fresh_process([str(child)])
    assert median_seconds(lambda: torch.ones(3).sum(), repeats=2) >= 0 and peak_rss_mb() > 1


# ----------------------------------------------------------------------------------------------- audio-LLM runs
def _ins(item_id: str, task: str = "asr", split: str = "test") -> Instruction:
    return Instruction(f"{item_id}/{task}", item_id, task, split, "?", "x", True, ("x",))


def test_selection_is_round_robin_over_datasets_and_checks_its_limit() -> None:
    data = [_ins(f"a/{i}") for i in range(6)] + [_ins("b/0"), _ins("c/0", split="train")]
    chosen = select(data, 2, {})["asr"]
    assert sorted(i.item_id[0] for i in chosen) == ["a", "b"]
    assert len(select(data, None, {})["asr"]) == 7
    moved = {"b/0": AudioItem("b/0", Path("x.wav"), 1.0, {}, "test", "a")}  # the manifest's dataset wins
    assert {i.item_id[0] for i in select(data, 2, moved)["asr"]} == {"a"}
    with pytest.raises(ValueError, match="limit"):
        select(data, 0, {})


def test_run_folders_names_items_and_metadata(tmp_path: Path) -> None:
    for run in ("x/run", "y/run", "z/other"):
        (tmp_path / run / "model").mkdir(parents=True)
        (tmp_path / run / "model" / "soundtok_llm.json").write_text(json.dumps({"steps": 3}))
    runs = [tmp_path / "x/run", tmp_path / "y/run", tmp_path / "z/other"]
    assert run_names(runs) == [str(runs[0]), str(runs[1]), "other"]  # names shared by two folders are paths
    with pytest.raises(ValueError, match="not trained"):
        run_names([*runs, tmp_path / "missing"])
    assert stored_meta(runs[0]) == {"steps": 3} and stored_meta(tmp_path / "missing") is None

    corpus = Manifest([AudioItem("a/1", tmp_path / "1.wav", 1.0, {}, "test", "a")])
    Manifest([AudioItem("own/2", tmp_path / "2.wav", 1.0, {}, "train", "own")]).to_jsonl(tmp_path / "m.jsonl")
    meta = {"train_config": {"manifest": "m.jsonl"}}  # relative to where training ran
    assert sorted(run_items(meta, corpus, tmp_path)) == ["a/1", "own/2"]
    assert sorted(run_items({"train_config": {"manifest": "gone.jsonl"}}, corpus, tmp_path)) == ["a/1"]


# ---------------------------------------------------------------------------------------------------- the clips
def test_bundled_clips_are_library_data_and_testing_reexports_them() -> None:
    import soundtok.fixtures as fixtures
    import soundtok.testing as testing

    assert testing.load_fixture is fixtures.load_fixture and testing.FIXTURES is fixtures.FIXTURES
    assert (fixtures.DATA / "ATTRIBUTION.md").is_file()
    assert all(fixtures.fixture_path(name).is_file() for name in fixtures.FIXTURES)
    wav, sr = fixtures.load_fixture("sneeze", sample_rate=8000)
    assert sr == 8000 and wav.shape[0] == 1


def test_pocketsphinx_layout_is_read_with_its_transcripts(tmp_path: Path) -> None:
    import soundfile as sf

    for folder, table, utt, text in (("librivox", "transcription", "a_1", "<s> hello there </s> (a_1)"),
                                     ("cards", "cards.transcription", "001", "ten of clubs (001)")):  # fmt: skip
        (tmp_path / folder).mkdir()
        (tmp_path / folder / table).write_text(text + "\n")
        sf.write(tmp_path / folder / f"{utt}.wav", np.zeros(1600, dtype=np.float32), 16000)
    items = {i.id: i for i in load_pocketsphinx_testdata(tmp_path)}
    assert {k: v.labels["transcript"] for k, v in items.items()} == {
        "cards/001": "ten of clubs",
        "librivox/a_1": "hello there",
    }
    assert items["cards/001"].duration == pytest.approx(0.1) and items["cards/001"].split == "test"
    with pytest.raises(CorpusError, match="pocketsphinx-testdata"):
        load_pocketsphinx_testdata(tmp_path / "nothing")

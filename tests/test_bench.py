"""soundtok bench: caching (a rerun computes nothing), summaries, the CLI, and the report in a real browser."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from soundtok.bench import ClipSet, quick_clips, ranking, run_bench, summarise, write_report
from soundtok.bench.data import Clip
from soundtok.bench.report import png_bytes, spectrogram_png
from soundtok.cli.main import main
from soundtok.eval.stats import mean_ci

SYSTEMS = ["mulaw-8bit-16k", "codec-16k@1"]


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory: pytest.TempPathFactory):
    cache = tmp_path_factory.mktemp("bench-cache")
    run = run_bench(SYSTEMS, quick_clips(), cache_dir=cache)
    return run, cache


@pytest.fixture(scope="module")
def report_folder(bench_run, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run, _ = bench_run
    out = tmp_path_factory.mktemp("report")
    recorded = [{"title": "recorded", "source": "a test", "head": ["a", "b"], "rows": [["x", "1"]]}]
    write_report(run, out, command="pytest", recorded=recorded)
    return out


def test_first_run_computes_every_system_and_scores_every_clip(bench_run) -> None:
    run, _ = bench_run
    assert [e.system["name"] for e in run.entries] == SYSTEMS and run.computed == 2 and not run.failed
    mulaw = run.entries[0]
    assert set(mulaw.clips) == {"speech", "digit", "sneeze"}
    assert mulaw.clips["speech"]["metrics"]["stoi"] > 0.95  # 8-bit mu-law is near transparent
    assert mulaw.audio_path("speech").is_file()
    codec = run.entries[1]
    assert codec.system["bitrate"] == 500.0 and codec.tokens["codebook_usage"][0] > 0
    # peak memory in a fresh process each: a 7.8 M-parameter codec needs more than a lookup table
    assert 0 < mulaw.cost["peak_mib"] < codec.cost["peak_mib"]


def test_rerun_recomputes_nothing_and_a_new_system_only_its_own_entry(bench_run) -> None:
    run, cache = bench_run
    again = run_bench(SYSTEMS, quick_clips(), cache_dir=cache)
    assert again.computed == 0 and [e.cached for e in again.entries] == [True, True]
    assert again.entries[0].clips == run.entries[0].clips
    more = run_bench([*SYSTEMS, "mulaw-4bit-8k"], quick_clips(), cache_dir=cache)
    assert [e.cached for e in more.entries] == [True, True, False]


def test_other_audio_or_an_interrupted_entry_is_not_reused(bench_run, tmp_path: Path) -> None:
    run, cache = bench_run
    clips = quick_clips()
    changed = ClipSet("quick", (*clips.clips[:2], Clip("sneeze", "events", clips.clips[2].wav * 0.5)), "changed")
    assert changed.hash != clips.hash
    assert run_bench(["mulaw-8bit-16k"], changed, cache_dir=cache).computed == 1
    result = run.entries[0].folder / "result.json"
    saved = result.read_text()
    result.unlink()  # as if the run had been killed before writing it
    try:
        assert run_bench(["mulaw-8bit-16k"], clips, cache_dir=cache).computed == 1
    finally:
        result.write_text(saved)


def test_a_system_that_cannot_run_is_reported_and_the_others_still_run(tmp_path: Path) -> None:
    run = run_bench(["no-such-tokenizer", "mulaw-8bit-16k", "mulaw-8bit-16k@2"], quick_clips(), cache_dir=tmp_path)
    assert [e.system["name"] for e in run.entries] == ["mulaw-8bit-16k"]
    assert "neither a registered tokenizer nor a checkpoint folder" in run.failed["no-such-tokenizer"]
    assert "fixed number of codebooks" in run.failed["mulaw-8bit-16k@2"]


def test_summary_intervals_pooled_dwer_and_ranking(bench_run) -> None:
    run, _ = bench_run
    summary = summarise(run)
    mel = [run.entries[0].clips[c]["metrics"]["mel_distance"] for c in ("speech", "digit")]
    cell = summary["systems"][0]["domains"]["speech"]["mel_distance"]
    assert (cell["mean"], cell["ci"], cell["n"]) == (pytest.approx(mean_ci(mel)[0]), pytest.approx(mean_ci(mel)[1]), 2)
    assert summary["systems"][0]["domains"]["speech"]["dwer"]["ci"] is None  # pooled, no interval
    assert "events" in summary["systems"][0]["domains"] and "music" not in summary["systems"][0]["domains"]
    bands = {(r["domain"], r["band"]): [o["system"] for o in r["order"]] for r in ranking(summary)}
    assert bands[("speech", "< 1 kbit/s")] == ["codec-16k@1"]
    assert bands[("speech", ">= 8 kbit/s")] == ["mulaw-8bit-16k"]


def test_report_files(report_folder: Path) -> None:
    data = json.loads((report_folder / "bench.json").read_text())
    assert [s["name"] for s in data["systems"]] == SYSTEMS and data["command"] == "pytest"
    rows = (report_folder / "bench.csv").read_text().splitlines()
    assert rows[0].startswith("system,kind,fingerprint") and len(rows) == 1 + 2 * (5 + 2)  # 2 systems x 7 metrics
    page = (report_folder / "report.html").read_text()
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "") and "https://" not in page  # no CDN
    for src in [s.split('"')[0] for s in page.split('src="')[1:]]:
        assert (report_folder / src).is_file(), src
    assert len(list((report_folder / "audio").glob("*.flac"))) == 3 * 3  # original + 2 systems per clip


def test_png_writer_round_trips_through_pillow() -> None:
    Image = pytest.importorskip("PIL.Image")
    rgb = torch.randint(0, 256, (5, 7, 3), dtype=torch.uint8).numpy()
    image = Image.open(io.BytesIO(png_bytes(rgb)))
    assert image.size == (7, 5) and (np.asarray(image) == rgb).all()
    spec = Image.open(io.BytesIO(spectrogram_png(torch.randn(16000) * 0.1)))
    assert spec.size[1] > 100


def test_cli_bench_twice_second_run_loads_everything(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["bench", *SYSTEMS[:1], "--quick", "--cache", str(tmp_path / "c"), "-o", str(tmp_path / "r")]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "computed 1, loaded 0" in first and str(tmp_path / "r" / "report.html") in first
    assert main(args) == 0
    assert "computed 0, loaded 1" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- in a browser
def _chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.fixture(scope="module")
def browser():
    found = _chromium()
    if found is None or importlib.util.find_spec("selenium") is None:
        why = "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver) and selenium"
        if os.environ.get("SOUNDTOK_REQUIRE_BROWSER"):  # set by .ci/run: there, a skip would hide a broken report
            pytest.fail(f"SOUNDTOK_REQUIRE_BROWSER is set: {why}")
        pytest.skip(why)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--autoplay-policy=no-user-gesture-required",
        "--window-size=1400,1000",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(found[1]), options=options)
    yield driver
    driver.quit()


def test_report_in_headless_chromium(browser, report_folder: Path) -> None:
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get((report_folder / "report.html").as_uri())
    WebDriverWait(browser, 20).until(lambda d: d.execute_script("return document.readyState") == "complete")

    tables = browser.find_elements(By.CSS_SELECTOR, "table")
    assert len(tables) >= 5
    assert all(len(t.find_elements(By.CSS_SELECTOR, "tbody tr")) > 0 for t in tables)

    # sorting: the speech table's STOI column, ascending then descending
    table = browser.find_elements(By.CSS_SELECTOR, "table.sortable")[1]
    header = [h for h in table.find_elements(By.CSS_SELECTOR, "th") if h.text.startswith("stoi")][0]
    col = table.find_elements(By.CSS_SELECTOR, "th").index(header)

    def column() -> list[float]:
        return [
            float(r.find_elements(By.CSS_SELECTOR, "td")[col].get_attribute("data-v"))
            for r in table.find_elements(By.CSS_SELECTOR, "tbody tr")
        ]

    header.click()
    assert column() == sorted(column())
    header.click()
    assert column() == sorted(column(), reverse=True)

    # every audio player loads its source
    WebDriverWait(browser, 30).until(
        lambda d: d.execute_script(
            "return Array.from(document.querySelectorAll('audio')).every(a => a.readyState >= 1 || a.error)"
        )
    )
    states = browser.execute_script(
        "return Array.from(document.querySelectorAll('audio'))"
        ".map(a => [a.src, a.readyState, a.error && a.error.code, a.duration])"
    )
    assert len(states) == 9
    assert all(ready >= 1 and error is None and duration > 0.1 for _, ready, error, duration in states), states

    # spectrogram images decoded
    assert browser.execute_script("return Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")

    # plots: a screenshot of each SVG is not blank
    plots = browser.find_elements(By.CSS_SELECTOR, "svg.plot")
    assert len(plots) == 3  # speech and events against bitrate, speech against compute
    for plot in plots:
        browser.execute_script("arguments[0].scrollIntoView()", plot)
        image = Image.open(io.BytesIO(plot.screenshot_as_png)).convert("L")
        colours = image.getcolors(maxcolors=1 << 16) or []
        assert len(colours) > 10 and image.getextrema()[0] < 128, "plot looks blank"

    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors

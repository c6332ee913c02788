"""benchmarks/lora_throughput.py: its table (the configurations themselves run real LLM steps: a benchmark)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_table_compares_each_variant_with_the_full_logits_of_the_same_threads() -> None:
    spec = importlib.util.spec_from_file_location("lora_throughput_bench", ROOT / "benchmarks" / "lora_throughput.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench
    spec.loader.exec_module(bench)

    def row(threads: int, variant: str, seconds: float) -> dict[str, object]:
        return {"threads": threads, "variant": variant, "ids_per_second": 100 / seconds, "seconds_per_step": seconds,
                "supervised_per_second": 1.0, "peak_rss_gb": 2.0}  # fmt: skip

    report = {"command": "python x", "date": "d", "machine": "m", "run": "r", "llm": "l", "audio_tokenizer": "a",
              "steps": 2, "batch_size": 8, "examples": 16,
              "rows": [row(1, "micro", 5.0), row(1, "supervised", 10.0), row(1, "full", 15.0),
                       row(2, "supervised", 6.0), row(2, "full", 6.0)]}  # fmt: skip
    lines = [line for line in bench.markdown(report).splitlines() if line.startswith("| 1 ") or line.startswith("| 2 ")]
    assert [line.rsplit("|", 2)[-2].strip() for line in lines] == ["3.00x", "1.50x", "1.00x", "1.00x", "1.00x"]

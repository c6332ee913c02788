"""benchmarks/dasb.py: how a row names a tokenizer (the probes themselves are a benchmark)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from soundtok.checkpoint import save_checkpoint
from soundtok.tokenizers.codec import CodecConfig, CodecTokenizer

ROOT = Path(__file__).resolve().parents[1]


def _dasb():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("dasb_bench", ROOT / "benchmarks" / "dasb.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench
    spec.loader.exec_module(bench)
    return bench


def test_a_codec_row_keeps_the_first_n_codebooks(tmp_path: Path) -> None:
    config = CodecConfig(channels=2, strides=(4, 5), dilations=(1,), activation="elu", latent_dim=4,
                         num_quantizers=4, codebook_size=16, codebook_dim=2)  # fmt: skip
    save_checkpoint(CodecTokenizer(config, name="tiny-codec"), tmp_path / "codec")
    bench = _dasb()
    whole = bench.load_system(str(tmp_path / "codec"))
    two = bench.load_system(f"{tmp_path / 'codec'}@2")
    assert (whole.num_codebooks, two.num_codebooks) == (4, 2)
    assert two.bitrate == whole.bitrate / 2
    with pytest.raises(SystemExit, match="needs an RVQ codec"):
        bench.load_system("mulaw-8bit-16k@2")

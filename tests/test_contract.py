"""The contract suite: every registered tokenizer, one row each in CASES.

A new family is tested by adding one row. Rows whose family is unavailable here (e.g. no libcodec2) skip with
the reason. ``decode_atol`` is the tolerance for batched vs one-by-one decoding (0 = exact).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

import soundtok
import soundtok.testing.dummies  # noqa: F401  (registers the toy family)
from soundtok.audio.io import resampled_length
from soundtok.errors import InvalidAudioError, TokenizerMismatchError, TokenizerUnavailableError
from soundtok.registry import PRESETS, available
from soundtok.testing import load_fixture, noise_batch
from soundtok.tokenfile import from_bytes, to_bytes


@dataclass(frozen=True)
class Case:
    preset: str
    input_rate: int = 16000  # rate of the test audio (resampled by encode when it differs)
    decode_atol: float = 0.0
    chunk_seconds: float = 0.05  # small, so the test input spans many chunks


CASES = [
    Case("mulaw-8bit-16k"),
    Case("mulaw-8bit-8k"),
    Case("mulaw-4bit-8k", input_rate=8000),
    Case("codec2-3200"),
    Case("codec2-1200"),
    Case("codec2-700c", input_rate=8000),
    Case("toy-tiny", decode_atol=1e-6),
    Case("codec-tiny", decode_atol=1e-5),
    Case("codec-spectral-tiny", decode_atol=1e-5),
    Case("codec-16k", decode_atol=1e-5),
    Case("llm-codec-tiny", decode_atol=1e-5),
    Case("msn-tiny", decode_atol=1e-3),  # a vocoder-based tokenizer: random MSN + the shipped vocoder-16k
    Case("msn-16k", decode_atol=1e-3),  # float attention in a many-step ODE: codes exact, audio within 1e-3
    Case("msn-mse-16k", decode_atol=1e-3),
    Case("semantic-tiny", decode_atol=1e-3),  # random centroids over Whisper tiny.en + a random decoder
    Case("semantic-whisper-base-1000", decode_atol=1e-3),
]


def test_every_preset_has_a_case() -> None:
    assert {c.preset for c in CASES} == set(PRESETS), "add a Case row for each new preset"


@pytest.fixture(params=CASES, ids=lambda c: c.preset)
def case(request: pytest.FixtureRequest) -> tuple[Case, soundtok.AudioTokenizer]:
    c: Case = request.param
    reason = available(PRESETS[c.preset])
    if reason:
        pytest.skip(reason)
    return c, soundtok.load(c.preset)


LENGTHS = [4000, 1234, 2999, 77]  # samples at the input rate: odd sizes, one shorter than a frame


def test_shapes_lengths_and_code_range(case: tuple[Case, soundtok.AudioTokenizer]) -> None:
    c, tok = case
    wav, lengths = noise_batch(LENGTHS)
    tokens = tok.encode(wav, c.input_rate, lengths)
    assert tokens.lengths.tolist() == [resampled_length(n, c.input_rate, tok.sample_rate) for n in LENGTHS]
    assert tokens.num_levels == tok.num_levels and tokens.codebook_sizes == tok.codebook_sizes
    for level, codes in enumerate(tokens.codes):
        frames = tokens.frame_lengths(level)
        assert codes.shape == (len(LENGTHS), int(frames.max())) and codes.dtype == torch.long
        assert int(codes.min()) >= 0 and int(codes.max()) < tok.codebook_sizes[level]
        hop = tok.levels[level].hop_length
        assert frames.tolist() == [-(-n // hop) for n in tokens.lengths.tolist()]
    audio = tok.decode(tokens)
    assert audio.shape == (len(LENGTHS), tok.channels, int(tokens.lengths.max()))
    assert torch.isfinite(audio).all()
    for b, n in enumerate(tokens.lengths.tolist()):
        assert not audio[b, :, n:].any(), f"item {b}: samples after its length are not zero"


def test_batch_equals_one_by_one(case: tuple[Case, soundtok.AudioTokenizer]) -> None:
    c, tok = case
    wav, lengths = noise_batch(LENGTHS, seed=1)
    batch = tok.encode(wav, c.input_rate, lengths)
    audio = tok.decode(batch)
    for b, n in enumerate(LENGTHS):
        alone = tok.encode(wav[b : b + 1, :, :n], c.input_rate)
        assert alone.equal(batch.item(b)), f"item {b}: batched codes differ from encoding it alone"
        audio_alone = tok.decode(alone)
        m = int(alone.lengths[0])
        torch.testing.assert_close(audio[b : b + 1, :, :m], audio_alone, atol=c.decode_atol, rtol=0)


def test_chunked_equals_whole(case: tuple[Case, soundtok.AudioTokenizer]) -> None:
    c, tok = case
    wav, lengths = noise_batch([c.input_rate // 2, c.input_rate // 3], seed=2)  # 0.5 s and 0.33 s
    whole = tok.encode(wav, c.input_rate, lengths, chunk_seconds=100.0)
    chunked = tok.encode(wav, c.input_rate, lengths, chunk_seconds=c.chunk_seconds)
    assert chunked.equal(whole)
    torch.testing.assert_close(
        tok.decode(whole, chunk_seconds=c.chunk_seconds),
        tok.decode(whole, chunk_seconds=100.0),
        atol=c.decode_atol,
        rtol=0,
    )


def test_token_file_round_trip_is_exact(case: tuple[Case, soundtok.AudioTokenizer]) -> None:
    c, tok = case
    wav, lengths = noise_batch([3000, 1000], seed=3)
    tokens = tok.encode(wav, c.input_rate, lengths)
    for item in tokens.items():
        parsed = from_bytes(to_bytes(item, {"source": "noise"}))
        assert parsed.tokens.equal(item) and parsed.metadata == {"source": "noise"}
        torch.testing.assert_close(tok.decode(parsed.tokens), tok.decode(item), atol=0, rtol=0)


def test_real_clip_round_trip(case: tuple[Case, soundtok.AudioTokenizer]) -> None:
    c, tok = case
    wav, sr = load_fixture("digit")
    audio = tok.decode(tok.encode(wav[None], sr))
    assert audio.shape[-1] == resampled_length(wav.shape[-1], sr, tok.sample_rate)
    assert audio.abs().max() > 0.01  # the tokens carry signal, not silence


def test_wrong_tokenizer_is_refused(case: tuple[Case, soundtok.AudioTokenizer]) -> None:
    c, tok = case
    other = soundtok.load("toy-tiny" if c.preset != "toy-tiny" else "mulaw-8bit-16k")
    tokens = other.encode(noise_batch([800])[0], 16000)
    with pytest.raises(TokenizerMismatchError, match=other.name):
        tok.decode(tokens)


def test_checkpoint_round_trip(case: tuple[Case, soundtok.AudioTokenizer], tmp_path) -> None:  # noqa: ANN001
    c, tok = case
    soundtok.save_checkpoint(tok, tmp_path / "ckpt")
    again = soundtok.load(tmp_path / "ckpt")
    assert again.identity == tok.identity
    wav = noise_batch([1500], seed=4)[0]
    assert again.encode(wav, c.input_rate).equal(tok.encode(wav, c.input_rate))


def test_bad_input_is_rejected(case: tuple[Case, soundtok.AudioTokenizer]) -> None:
    c, tok = case
    good = noise_batch([500])[0]
    with pytest.raises(InvalidAudioError, match=r"\[B, C, T\]"):
        tok.encode(good[0, 0], c.input_rate)
    with pytest.raises(InvalidAudioError, match="NaN or Inf"):
        tok.encode(good.clone().index_fill_(-1, torch.tensor([3]), float("nan")), c.input_rate)
    with pytest.raises(InvalidAudioError, match="empty"):
        tok.encode(good[..., :0], c.input_rate)
    with pytest.raises(InvalidAudioError, match="sample_rate"):
        tok.encode(good, 0)
    with pytest.raises(InvalidAudioError, match="lengths"):
        tok.encode(good, c.input_rate, lengths=[501])


def test_code_vectors_one_row_per_code(case: tuple[Case, soundtok.AudioTokenizer]) -> None:
    _, tok = case
    tables = [tok.code_vectors(level) for level in range(tok.num_levels)]
    if tok.family in ("pcm", "codec2"):  # no learned table: codes are quantised samples or a speech model's
        assert tables == [None] * tok.num_levels
        return
    for level, (table, size) in enumerate(zip(tables, tok.codebook_sizes, strict=True)):
        assert table is not None and table.ndim == 2 and table.shape[0] == size, (level, table)
        assert table.dtype == torch.float32 and torch.isfinite(table).all()
        assert torch.unique(table, dim=0).shape[0] > 1  # codes stand for different vectors
    with pytest.raises(IndexError, match="levels"):
        tok.code_vectors(tok.num_levels)


def test_unavailable_family_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    from soundtok.tokenizers import codec2

    monkeypatch.setattr(codec2, "_system_library", lambda: None)
    with pytest.raises(TokenizerUnavailableError, match="libcodec2"):
        soundtok.load("codec2-3200")


def test_stereo_input_is_mixed_to_mono() -> None:
    tok = soundtok.load("mulaw-8bit-16k")
    left = noise_batch([1000], seed=5)[0]
    stereo = torch.cat([left, left], dim=1)
    assert tok.encode(stereo, 16000).equal(tok.encode(left, 16000))


def test_stack_rebuilds_the_batch() -> None:
    tok = soundtok.load("toy-tiny")
    wav, lengths = noise_batch([1200, 700, 2000], seed=6)
    batch = tok.encode(wav, 16000, lengths)
    again = soundtok.Tokens.stack([batch.item(2), batch.item(0), batch.item(1)])
    assert again.lengths.tolist() == [2000, 1200, 700]
    assert again.item(0).equal(batch.item(2)) and again.item(2).equal(batch.item(1))
    with pytest.raises(TokenizerMismatchError):
        soundtok.Tokens.stack([batch.item(0), soundtok.load("mulaw-8bit-16k").encode(wav[:1], 16000)])


def test_pad_sensitive_family_is_run_per_length_group() -> None:
    from soundtok.tokenizers.pcm import PCMConfig, PCMTokenizer

    class MeanRemoved(PCMTokenizer):
        """Subtracts the window's mean first: zero padding changes it, so batching must group by length."""

        pad_sensitive = True

        def _encode(self, wav: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
            return super()._encode(wav - wav.mean(dim=-1, keepdim=True), lengths)

    tok = MeanRemoved(PCMConfig(bits=8))
    wav, lengths = noise_batch([900, 400, 900, 650], seed=7)
    wav = wav + 0.3 * (torch.arange(wav.shape[-1]) < lengths[:, None, None])  # a DC offset the mean removes
    batch = tok.encode(wav, 16000, lengths)
    for b, n in enumerate(lengths.tolist()):
        assert batch.item(b).equal(tok.encode(wav[b : b + 1, :, :n], 16000))
    tok.pad_sensitive = False  # type: ignore[misc]  # without grouping, padded items come out different
    assert not tok.encode(wav, 16000, lengths).item(1).equal(batch.item(1))

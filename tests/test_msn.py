"""The Make Some Noise family (msn): latent autoencoders, the tokenizer at toy size, its training recipe.

Tolerances: codes are compared exactly, decoded normalised latents to 1e-4 (band attention over windows or batches
of other sizes sums in another order: ~5e-7 measured). Audio through Griffin-Lim (these tests' vocoder) to 1e-2: its
32 momentum iterations amplify that rounding to ~3e-3, where a feed-forward vocoder keeps it at ~1e-7.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import soundtok
from soundtok.errors import CheckpointError, InvalidAudioError, TokenizerMismatchError, TokenizerUnavailableError
from soundtok.latent import (
    LatentAutoencoder,
    MelLatentAutoencoder,
    load_latent_autoencoder,
    register_autoencoder,
    save_latent_autoencoder,
)
from soundtok.testing import noise_batch
from soundtok.tokenizers.msn import MSNConfig, MSNTokenizer, SamplingConfig, latent_mse
from soundtok.train.config import TrainConfig, load_config
from soundtok.vocoder import Vocoder, VocoderConfig

LATENT_ATOL, AUDIO_ATOL = 1e-4, 1e-2
TINY = dict(
    vocoder="griffin-lim",
    dim=16,
    heads=2,
    mlp_ratio=2.0,
    encoder_layers=2,
    encoder_window=4,
    decoder_layers=2,
    decoder_window=2,
    codebook_size=64,
    codebook_dim=4,
    sampling=SamplingConfig(solver="euler", steps=2),
)


def tiny(decoder: str = "cfm", seed: int = 0, **changes: object) -> MSNTokenizer:
    """A toy tokenizer with latent statistics from noise and a perturbed decoder (adaLN-Zero starts at 0)."""
    torch.manual_seed(seed)
    tok = MSNTokenizer(MSNConfig(**{**TINY, "decoder": decoder, **changes}))
    wav, lengths = noise_batch([8000, 6000], seed=seed)
    z, frames = tok.latents(wav[:, 0], lengths)
    tok.set_latent_statistics(tok.autoencoder.encode(wav[:, 0], lengths), frames)
    with torch.no_grad():
        for p in tok.decoder.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return tok.eval()


def frame_lengths(tokens: soundtok.Tokens) -> torch.Tensor:
    return -(-tokens.lengths // 256)


@pytest.fixture(scope="module")
def cfm() -> MSNTokenizer:
    return tiny("cfm")


@pytest.fixture(scope="module")
def mse() -> MSNTokenizer:
    return tiny("mse")


# --------------------------------------------------------------------------------------------------------
# latent autoencoders
@register_autoencoder("test-tiny")
class TinyAE(nn.Module):
    """A user's own autoencoder: one linear map per 160-sample frame, and back."""

    sample_rate, hop_length, context_frames = 16000, 160, 0

    def __init__(self, latent_dim: int = 6) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.analysis = nn.Linear(self.hop_length, latent_dim)
        self.synthesis = nn.Linear(latent_dim, self.hop_length)

    def encode(self, wav: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        frames = wav[:, : wav.shape[-1] // self.hop_length * self.hop_length].reshape(wav.shape[0], -1, self.hop_length)
        return torch.tanh(self.analysis(frames)).transpose(1, 2)  # [B, D, F]

    def decode(self, latents: torch.Tensor, frame_lengths: torch.Tensor | None = None) -> torch.Tensor:
        wav = self.synthesis(latents.transpose(1, 2)).reshape(latents.shape[0], 1, -1)  # [B, 1, F * hop]
        if frame_lengths is not None:
            wav = wav * (torch.arange(wav.shape[-1])[None, None] < frame_lengths[:, None, None] * self.hop_length)
        return wav


def test_mel_autoencoder_frames_and_batching() -> None:
    torch.manual_seed(0)
    ae = MelLatentAutoencoder(Vocoder(VocoderConfig(dim=16, intermediate_dim=32, num_layers=2)))
    assert isinstance(ae, LatentAutoencoder) and (ae.latent_dim, ae.hop_length, ae.context_frames) == (80, 256, 2)
    wav, lengths = noise_batch([4096, 1000], seed=3)
    z = ae.encode(wav[:, 0], lengths)
    assert z.shape == (2, 80, 16)
    alone = ae.encode(wav[1:, 0, :1024], lengths[1:])  # the item padded to another length
    torch.testing.assert_close(z[1:, :, :4], alone, atol=1e-5, rtol=0)  # FFTs of other sizes round differently
    out = ae.decode(z, torch.tensor([16, 4]))
    assert out.shape == (2, 1, 4096) and not out[1, :, 1024:].any()
    torch.testing.assert_close(out[1:, :, :1024], ae.decode(alone, torch.tensor([4])), atol=1e-5, rtol=0)


def test_missing_vocoder_says_what_to_do() -> None:
    ae = MelLatentAutoencoder("no-such-vocoder")
    z = ae.encode(torch.zeros(1, 2048))  # encoding never needs the vocoder
    with pytest.raises(TokenizerUnavailableError, match="griffin-lim"):
        ae.decode(z)


def test_user_autoencoder_folder_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ae = TinyAE(latent_dim=6)
    save_latent_autoencoder(ae, tmp_path / "ae", kwargs={"latent_dim": 6})
    again = load_latent_autoencoder(tmp_path / "ae")
    wav = torch.randn(2, 1600)
    torch.testing.assert_close(again.encode(wav), ae.encode(wav))
    assert not any(p.requires_grad for p in again.parameters())  # type: ignore[attr-defined]

    tok = MSNTokenizer(MSNConfig(**{**TINY, "autoencoder": str(tmp_path / "ae"), "latent_hop": 160, "latent_dim": 6}))
    assert tok.levels[0].hop_length == 480
    tokens = tok.encode(wav[:, None], 16000)
    assert tok.decode(tokens).shape == (2, 1, 1600)
    with pytest.raises(ValueError, match="latent_dim"):
        MSNTokenizer(MSNConfig(**{**TINY, "autoencoder": str(tmp_path / "ae"), "latent_hop": 160}))


def test_bad_autoencoder_folders(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="config.json"):
        load_latent_autoencoder(tmp_path)

    class Unregistered(TinyAE):
        pass

    with pytest.raises(TypeError, match="register_autoencoder"):
        save_latent_autoencoder(Unregistered(), tmp_path / "x")
    save_latent_autoencoder(TinyAE(), tmp_path / "a")
    for kind in ("no-such-kind", "tests.test_msn:TinyAE", ["test-tiny"]):
        _edit_config(tmp_path / "a", kind=kind)
        with pytest.raises(CheckpointError, match="not a registered latent autoencoder.*test-tiny"):
            load_latent_autoencoder(tmp_path / "a")
    _edit_config(tmp_path / "a", kind="test-tiny", kwargs={"latent_dim": 5})
    with pytest.raises(CheckpointError, match="shape"):
        load_latent_autoencoder(tmp_path / "a")
    for kwargs, problem in [({"latent_dim": 6, "colour": 1}, "colour"), ({"latent_dim": float("nan")}, "latent_dim")]:
        _edit_config(tmp_path / "a", kwargs=kwargs)
        with pytest.raises(CheckpointError, match=problem):
            load_latent_autoencoder(tmp_path / "a")
    _edit_config(tmp_path / "a", kwargs={"latent_dim": 10**7})  # would be a 6 GB layer: refused before it exists
    with pytest.raises(CheckpointError, match="do not belong together"):
        load_latent_autoencoder(tmp_path / "a")


def test_version_1_folders_load_a_registered_class_by_its_saved_name(tmp_path: Path) -> None:
    save_latent_autoencoder(TinyAE(), tmp_path / "a")
    _edit_config(tmp_path / "a", version=1, kind=None, **{"class": f"{TinyAE.__module__}:TinyAE"})
    assert isinstance(load_latent_autoencoder(tmp_path / "a"), TinyAE)


def _edit_config(folder: Path, **changes: object) -> None:
    """Set (or with None, remove) keys of an autoencoder folder's config.json."""
    path = folder / "config.json"
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps({k: v for k, v in meta.items() if v is not None}))


# --------------------------------------------------------------------------------------------------------
# the tokenizer
def test_config_rates_and_validation() -> None:
    c = MSNConfig()
    assert c.hop_length == 768 and round(16000 / 768 * 13, 1) == 270.8  # the paper's ~0.23-0.3 kbit/s regime
    for bad in ({"decoder": "gan"}, {"dim": 30, "heads": 4}, {"downsample": 0}, {"cfg_dropout": 1.0}):
        with pytest.raises(ValueError):
            MSNConfig(**bad)
    for bad in ({"solver": "rk4"}, {"steps": 0}, {"guidance": -1.0}):
        with pytest.raises(ValueError):
            SamplingConfig(**bad)


@pytest.mark.parametrize("kind", ["cfm", "mse"])
def test_shapes_lengths_and_codes(kind: str, cfm: MSNTokenizer, mse: MSNTokenizer) -> None:
    tok = cfm if kind == "cfm" else mse
    assert tok.frame_rates == (16000 / 768,) and tok.bitrate == pytest.approx(16000 / 768 * 6)
    wav, lengths = noise_batch([4000, 1234, 77], seed=1)
    tokens = tok.encode(wav, 16000, lengths)
    assert tokens.codes[0].shape == (3, 6) and tokens.frame_lengths(0).tolist() == [6, 2, 1]
    assert int(tokens.codes[0].min()) >= 0 and int(tokens.codes[0].max()) < 64
    audio = tok.decode(tokens)
    assert audio.shape == (3, 1, 4000) and torch.isfinite(audio).all() and audio.abs().max() > 0
    for b, n in enumerate(lengths.tolist()):
        assert not audio[b, :, n:].any()


@pytest.mark.parametrize("kind", ["cfm", "mse"])
def test_batch_equals_one_by_one(kind: str, cfm: MSNTokenizer, mse: MSNTokenizer) -> None:
    tok = cfm if kind == "cfm" else mse
    wav, lengths = noise_batch([6000, 2500, 300], seed=2)
    batch = tok.encode(wav, 16000, lengths)
    latents = tok.decode_latents(batch.codes[0], frame_lengths(batch))
    audio = tok.decode(batch)
    for b, n in enumerate(lengths.tolist()):
        alone = tok.encode(wav[b : b + 1, :, :n], 16000)
        assert alone.equal(batch.item(b))
        f = int(frame_lengths(alone))
        torch.testing.assert_close(
            tok.decode_latents(alone.codes[0], frame_lengths(alone))[..., :f],
            latents[b : b + 1, :, :f],
            atol=LATENT_ATOL,
            rtol=0,
        )
        torch.testing.assert_close(tok.decode(alone), audio[b : b + 1, :, :n], atol=AUDIO_ATOL, rtol=0)


@pytest.mark.parametrize("kind", ["cfm", "mse"])
def test_windowed_equals_whole(
    kind: str, cfm: MSNTokenizer, mse: MSNTokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    tok = cfm if kind == "cfm" else mse
    wav, lengths = noise_batch([16000, 11000], seed=3)  # 21 tokens
    whole = tok.encode(wav, 16000, lengths)
    latents = tok.decode_latents(whole.codes[0], frame_lengths(whole))
    monkeypatch.setattr(tok, "window_seconds", 0.1)  # windows of 2 tokens, each run with its context
    assert tok.encode(wav, 16000, lengths).equal(whole)
    torch.testing.assert_close(
        tok.decode_latents(whole.codes[0], frame_lengths(whole)), latents, atol=LATENT_ATOL, rtol=0
    )
    monkeypatch.setattr(tok, "_decode_reach", lambda: 0)  # without the context, windows would show
    assert (tok.decode_latents(whole.codes[0], frame_lengths(whole)) - latents).abs().max() > 1e-3


def test_sampling_is_seeded_and_part_of_the_identity(cfm: MSNTokenizer) -> None:
    wav = noise_batch([5000], seed=4)[0]
    tokens = cfm.encode(wav, 16000)
    first = cfm.decode(tokens)
    torch.testing.assert_close(cfm.decode(tokens), first, atol=0, rtol=0)
    before = cfm.identity
    try:
        for change in ({"seed": 1}, {"steps": 3}, {"solver": "midpoint"}, {"guidance": 2.0}):
            cfm.set_sampling(**change)
            assert cfm.identity != before, change
            with pytest.raises(TokenizerMismatchError):
                cfm.decode(tokens)
            again = cfm.decode(cfm.encode(wav, 16000))
            assert (again - first).abs().max() > 1e-3, f"{change} did not change the audio"
            cfm.set_sampling(solver="euler", steps=2, guidance=1.0, seed=0)
    finally:
        cfm.set_sampling(solver="euler", steps=2, guidance=1.0, seed=0)
    assert cfm.identity == before


def test_mse_decoder_ignores_sampling(mse: MSNTokenizer) -> None:
    wav = noise_batch([5000], seed=5)[0]
    tokens = mse.encode(wav, 16000)
    first = mse.decode(tokens)
    before = mse.identity
    try:
        mse.set_sampling(seed=7, steps=5)
        assert mse.identity == before
        torch.testing.assert_close(mse.decode(tokens), first, atol=0, rtol=0)
    finally:
        mse.set_sampling(seed=0, steps=2)


def test_checkpoint_round_trip(cfm: MSNTokenizer, tmp_path: Path) -> None:
    soundtok.save_checkpoint(cfm, tmp_path / "ckpt")
    again = soundtok.load(tmp_path / "ckpt")
    assert isinstance(again, MSNTokenizer) and again.identity == cfm.identity
    torch.testing.assert_close(again.latent_std, cfm.latent_std, atol=0, rtol=0)
    wav = noise_batch([3000], seed=6)[0]
    tokens = cfm.encode(wav, 16000)
    assert again.encode(wav, 16000).equal(tokens)
    torch.testing.assert_close(again.decode(tokens), cfm.decode(tokens), atol=0, rtol=0)


def test_latent_error_definition(mse: MSNTokenizer) -> None:
    wav, lengths = noise_batch([5000, 2000], seed=7)
    result = mse.reconstruct_latents(wav[:, 0], lengths)
    assert result.frame_lengths.tolist() == [20, 8] and result.token_lengths.tolist() == [7, 3]
    target, _ = mse.latents(torch.nn.functional.pad(wav[:, 0], (0, 376)), lengths)
    torch.testing.assert_close(result.target, target)
    assert result.codes.equal(mse.encode(wav, 16000, lengths).codes[0])
    by_hand = [float(((result.rebuilt[b] - target[b]) ** 2)[:, :n].mean()) for b, n in enumerate([20, 8])]
    torch.testing.assert_close(result.error, torch.tensor(by_hand))
    assert latent_mse(target, target, result.frame_lengths).abs().max() == 0


def test_bad_latents_are_rejected(cfm: MSNTokenizer) -> None:
    good = torch.randn(2, 80, 12)
    with pytest.raises(InvalidAudioError, match="80 latent channels"):
        cfm.encode_latents(torch.randn(2, 64, 12))
    with pytest.raises(InvalidAudioError, match="NaN"):
        cfm.encode_latents(good.clone().index_fill_(-1, torch.tensor([3]), float("nan")))
    with pytest.raises(InvalidAudioError, match="multiple of downsample"):
        cfm(good[..., :11])
    with pytest.raises(InvalidAudioError, match="80 latent channels"):
        cfm.set_latent_statistics(torch.randn(2, 81, 12))
    with pytest.raises(InvalidAudioError, match="NaN or Inf"):
        cfm.encode(torch.full((1, 1, 1000), float("nan")), 16000)


def _fixed_draw_loss(tok: MSNTokenizer, latents: torch.Tensor) -> float:
    """The objective on one fixed draw of (t, x0): comparable across training steps, unlike the training loss."""
    with torch.no_grad():
        return float(tok.eval()(latents, generator=torch.Generator().manual_seed(123)).loss)


@pytest.mark.parametrize(("kind", "ratio"), [("cfm", 0.8), ("mse", 0.7)])
def test_the_decoder_learns(kind: str, ratio: float) -> None:
    """40 steps on one fixed batch of smooth latents: the objective falls (v = 0 scores 2 for cfm, 1 for mse)."""
    torch.manual_seed(0)
    tok = MSNTokenizer(MSNConfig(**{**TINY, "decoder": kind, "dim": 32, "cfg_dropout": 0.0}))
    latents = torch.randn(4, 80, 24).cumsum(-1)
    latents = (latents - latents.mean(dim=(0, 2), keepdim=True)) / latents.std(dim=(0, 2), keepdim=True)
    before = _fixed_draw_loss(tok, latents)
    opt = torch.optim.Adam(tok.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    tok.train()
    for _ in range(40):
        out = tok(latents, generator=generator)
        opt.zero_grad()
        (out.loss + out.quantized.commit_loss + out.quantized.codebook_loss).backward()
        opt.step()
    after = _fixed_draw_loss(tok, latents)
    assert after < ratio * before, f"{kind}: {before:.3f} -> {after:.3f}"


# --------------------------------------------------------------------------------------------------------
# the training recipe
ROOT = Path(__file__).resolve().parents[1]
RECIPE_TINY = (
    "{vocoder: griffin-lim, dim: 16, heads: 2, mlp_ratio: 2.0, encoder_layers: 1, encoder_window: 4, "
    "decoder_layers: 1, decoder_window: 2, codebook_size: 32, codebook_dim: 4, sampling: {solver: euler, steps: 2}"
)


@pytest.fixture
def manifest(fixture_manifest: Path) -> Path:
    return fixture_manifest


def recipe_config(manifest: Path, steps: int, decoder: str = "cfm", *extra: str) -> TrainConfig:
    overrides = [
        f"model={RECIPE_TINY}, decoder: {decoder}}}",
        f"data.manifest={manifest}",
        "data.batch_size=2",
        "data.segment_seconds=0.192",  # 4 tokens of 768 samples
        "data.eval_items=2",
        "data.eval_seconds=0.3",
        "log_every=1",
        "eval_every=3",
        "checkpoint_every=2",
        f"steps={steps}",
        *extra,
    ]
    config = "msn-16k.yaml" if decoder == "cfm" else "msn-mse-16k.yaml"
    return load_config(ROOT / "configs" / config, overrides)


def test_recipe_trains_exports_and_resumes_exactly(manifest: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from soundtok.train.flow import train_flow
    from soundtok.train.state import latest_state

    cfg = recipe_config(manifest, 4)
    straight = train_flow(cfg, tmp_path / "a")
    assert straight is not None and (tmp_path / "a" / "logs").is_dir()
    assert train_flow(cfg, tmp_path / "b", max_steps_this_run=2) is None
    assert latest_state(tmp_path / "b") == (2, tmp_path / "b" / "state" / "step-0000002")
    resumed = train_flow(cfg, tmp_path / "b")
    assert resumed is not None
    a, b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys() and a["decoder.out.weight"].dtype == torch.float16
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=f"{key} differs after resuming")
    assert a["latent_std"].float().sub(1).abs().max() > 0.1  # statistics measured on the corpus, not the defaults
    assert a["decoder.out.weight"].abs().max() > 0  # trained away from its zero init

    tok = soundtok.load(straight)
    assert isinstance(tok, MSNTokenizer) and tok.name == "msn-16k" and tok.config.decoder == "cfm"
    wav = soundtok.testing.load_fixture("digit")[0][..., :4000]
    assert tok.decode(tok.encode(wav[None], 16000)).shape == (1, 1, 4000)


def test_mse_recipe_trains(manifest: Path, tmp_path: Path) -> None:
    from soundtok.train.flow import train_flow

    export = train_flow(recipe_config(manifest, 2, "mse"), tmp_path / "run")
    assert export is not None
    tok = soundtok.load(export)
    assert isinstance(tok, MSNTokenizer) and tok.name == "msn-mse-16k" and tok.config.decoder == "mse"


def test_recipe_refuses_bad_configs(manifest: Path, tmp_path: Path) -> None:
    from soundtok.errors import SoundtokError
    from soundtok.train.flow import train_flow

    with pytest.raises(SoundtokError, match="whole number of decoding blocks"):
        train_flow(recipe_config(manifest, 2, "cfm", "data.segment_seconds=0.2"), tmp_path / "a")
    with pytest.raises(SoundtokError, match="adversarial"):
        train_flow(recipe_config(manifest, 2, "cfm", "loss.commitment=1.0"), tmp_path / "b")

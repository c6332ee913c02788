"""Discriminators and GAN losses (soundtok.nn.discriminators, soundtok.nn.losses), with tiny widths."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator

import pytest
import torch

from soundtok.audio.mel import MelConfig
from soundtok.errors import InvalidAudioError
from soundtok.nn.discriminators import (
    DiscriminatorConfig,
    DiscriminatorOutput,
    MultiPeriodDiscriminator,
    MultiResolutionSTFTDiscriminator,
    MultiScaleDiscriminator,
    STFTDiscriminator,
    build_discriminator,
    count_parameters,
)
from soundtok.nn.losses import (
    MultiResolutionSTFTLoss,
    MultiScaleMelLoss,
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
    multiscale_mel_configs,
)

# tiny: 2 periods, 2 STFT resolutions (complex, DAC bands), 2 scales, channels / 32
TINY = DiscriminatorConfig(periods=(2, 3), stft_resolutions=((256, 64), (128, 32)), num_scales=2, width=1 / 32)
# small, fast losses for tests that loop
SMALL_MEL = multiscale_mel_configs(16000, (64, 256), (10, 40))
SMALL_STFT = ((128, 32), (256, 64))


@pytest.fixture(autouse=True)
def _seed_and_one_thread() -> Iterator[None]:
    # tiny models gain nothing from threads, and several OpenMP threads per process thrash when test runs share cores
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


def sine(batch: int, length: int, sample_rate: int = 16000) -> torch.Tensor:
    freqs = torch.empty(batch, 1, 1).uniform_(100, 2000)  # Hz
    t = torch.arange(length) / sample_rate
    return 0.5 * torch.sin(2 * math.pi * freqs * t)  # [B, 1, T]


# --- discriminators --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [2048, 3001, 5000])
def test_one_output_per_sub_discriminator_with_sane_shapes(length: int) -> None:
    disc = build_discriminator(TINY)
    outs = disc(torch.randn(3, 1, length))
    assert len(outs) == disc.num_outputs == TINY.num_outputs == 6
    assert all(isinstance(o, DiscriminatorOutput) for o in outs)
    for o in outs:
        assert o.logits.shape[:2] == (3, 1) and o.logits.numel() > 3
        assert len(o.features) == 5 or len(o.features) == 7  # period/STFT stacks have 5 layers, scales 7
        assert all(f.shape[0] == 3 and bool(torch.isfinite(f).all()) for f in o.features)
    # periods: [B, 1, T', p]
    for o, p in zip(outs[:2], TINY.periods, strict=True):
        assert o.logits.ndim == 4 and o.logits.shape[-1] == p
    # STFT resolutions: [B, 1, N, F'] with N = T // hop + 1 frames
    for o, (_, hop) in zip(outs[2:4], TINY.stft_resolutions, strict=True):
        assert o.logits.ndim == 4 and o.logits.shape[2] == length // hop + 1
    # scales: [B, 1, T'], the second at half the rate of the first
    assert outs[4].logits.ndim == outs[5].logits.ndim == 3
    assert abs(outs[4].logits.shape[-1] / outs[5].logits.shape[-1] - 2) < 0.2  # pooling pads by 2


def test_gradients_reach_the_waveform() -> None:
    disc = build_discriminator(TINY)
    wav = torch.randn(2, 1, 2048, requires_grad=True)
    outs = disc(wav)
    sum(o.logits.mean() + sum(f.mean() for f in o.features) for o in outs).backward()
    assert wav.grad is not None and bool(torch.isfinite(wav.grad).all()) and wav.grad.abs().sum() > 0
    assert all(p.grad is not None for p in disc.parameters())


def test_batched_equals_one_by_one() -> None:
    disc = build_discriminator(TINY).eval()
    wav = torch.randn(3, 1, 2500)
    batched = disc(wav)
    for i in range(3):
        single = disc(wav[i : i + 1])
        for b, s in zip(batched, single, strict=True):
            torch.testing.assert_close(b.logits[i : i + 1], s.logits, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("complex_input", [True, False])
def test_stft_discriminator_input_kinds_and_short_signals(complex_input: bool) -> None:
    disc = MultiResolutionSTFTDiscriminator(((512, 128),), complex_input=complex_input, bands=((0.0, 1.0),), width=0.1)
    stft = disc.discriminators[0]
    assert isinstance(stft, STFTDiscriminator)
    assert stft.spectrogram(torch.randn(2, 1, 1024)).shape == (2, 2 if complex_input else 1, 9, 257)  # [B, C, N, F]
    # shorter than n_fft: zero-padded to n_fft, not an error
    (out,) = disc(torch.randn(2, 1, 100))
    assert out.logits.shape[:2] == (2, 1) and bool(torch.isfinite(out.logits).all())
    (out,) = MultiPeriodDiscriminator((7,), width=0.1)(torch.randn(1, 1, 3))  # shorter than its period
    (out,) = MultiScaleDiscriminator(1, width=0.1)(torch.randn(1, 1, 50))
    assert bool(torch.isfinite(out.logits).all())


def test_silence_gives_finite_outputs_and_gradients() -> None:
    disc = build_discriminator(
        DiscriminatorConfig(periods=(2,), stft_resolutions=((256, 64),), stft_complex=False, num_scales=1, width=1 / 32)
    )
    wav = torch.zeros(2, 1, 2048, requires_grad=True)
    outs = disc(wav)
    loss = generator_adversarial_loss(outs) + feature_matching_loss(disc(torch.zeros(2, 1, 2048)), outs)
    loss.backward()
    assert bool(torch.isfinite(loss)) and wav.grad is not None and bool(torch.isfinite(wav.grad).all())


def test_bad_input_says_what_to_do() -> None:
    disc = build_discriminator(TINY)
    with pytest.raises(InvalidAudioError, match=r"\[B, 1, T\].*reshape"):
        disc(torch.randn(2, 2, 2048))
    with pytest.raises(InvalidAudioError, match=r"\[B, 1, T\]"):
        disc(torch.randn(2048))


def test_config_round_trips_and_validates() -> None:
    assert DiscriminatorConfig.from_dict(TINY.to_dict()) == TINY
    assert DiscriminatorConfig.from_dict(json.loads(DiscriminatorConfig().to_json())) == DiscriminatorConfig()
    for bad in (
        {"periods": (2, 2)},
        {"periods": (0,)},
        {"stft_resolutions": ((256, 512),)},
        {"stft_bands": ((0.5, 0.2),)},
        {"stft_resolutions": ((16, 4),), "stft_bands": ((0.0, 0.05), (0.05, 1.0))},  # first band has no bin
        {"width": 0},
        {"num_scales": -1},
        {"periods": (), "stft_resolutions": (), "num_scales": 0},
    ):
        with pytest.raises(ValueError):
            DiscriminatorConfig(**bad)  # type: ignore[arg-type]


def test_default_discriminators_are_the_published_sizes() -> None:
    # HiFi-GAN MPD ~41.1M, DAC MRD (3 resolutions x 5 bands) ~1.4M, weight-norm magnitudes included
    assert count_parameters(MultiPeriodDiscriminator()) == 41_105_770
    assert count_parameters(MultiResolutionSTFTDiscriminator()) == 1_413_990
    assert build_discriminator().num_outputs == 8


# --- reconstruction losses ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "loss",
    [MultiScaleMelLoss(sample_rate=16000), MultiScaleMelLoss(SMALL_MEL, mag_weight=1.0), MultiResolutionSTFTLoss()],
    ids=["mel-dac", "mel-small-mag", "mrstft"],
)
def test_reconstruction_loss_is_zero_when_equal_and_grows_with_noise(loss: torch.nn.Module) -> None:
    clean = sine(2, 4096)
    assert float(loss(clean, clean.clone())) == 0.0
    values = [float(loss(clean + level * torch.randn_like(clean), clean)) for level in (0.001, 0.01, 0.1, 0.5)]
    assert all(math.isfinite(v) and v > 0 for v in values)
    assert values == sorted(values), values


@pytest.mark.parametrize(
    "loss", [MultiScaleMelLoss(SMALL_MEL, mag_weight=1.0), MultiResolutionSTFTLoss(SMALL_STFT)], ids=["mel", "stft"]
)
def test_reconstruction_losses_are_finite_on_silence(loss: torch.nn.Module) -> None:
    silence = torch.zeros(2, 1, 2048)
    assert float(loss(silence, silence)) == 0.0
    for estimate, target in ((torch.zeros(2, 1, 2048), sine(2, 2048)), (sine(2, 2048), torch.zeros(2, 1, 2048))):
        estimate.requires_grad_(True)
        value = loss(estimate, target)
        value.backward()
        assert bool(torch.isfinite(value)) and float(value.detach()) > 0
        assert estimate.grad is not None and bool(torch.isfinite(estimate.grad).all())


def test_losses_pad_short_signals_and_check_shapes() -> None:
    mel, stft = MultiScaleMelLoss(), MultiResolutionSTFTLoss()
    x = torch.randn(1, 1, 300)  # shorter than the largest n_fft (2048)
    assert float(mel(x, x)) == 0.0 and float(stft(x, x)) == 0.0
    assert float(mel(x, 0.5 * x)) > 0 and float(stft(x, 0.5 * x)) > 0
    with pytest.raises(InvalidAudioError, match="differ in shape"):
        mel(torch.randn(1, 1, 4096), torch.randn(1, 1, 4000))
    with pytest.raises(InvalidAudioError, match="floating-point"):
        stft(torch.zeros(1, 1, 4096, dtype=torch.int16), torch.zeros(1, 1, 4096, dtype=torch.int16))


def test_mel_loss_uses_the_given_configs() -> None:
    configs = (MelConfig(sample_rate=24000, n_fft=512, hop_length=128, win_length=512, n_mels=40, f_max=12000.0),)
    loss = MultiScaleMelLoss(configs)
    assert loss.configs == configs and loss.sample_rate == 24000 and loss.min_length == 512
    assert [c.n_fft for c in MultiScaleMelLoss().configs] == [32, 64, 128, 256, 512, 1024, 2048]
    assert [c.hop_length for c in MultiScaleMelLoss().configs] == [8, 16, 32, 64, 128, 256, 512]
    with pytest.raises(ValueError, match="one sample rate"):
        MultiScaleMelLoss(configs + multiscale_mel_configs(16000, (64,), (10,)))


# --- adversarial losses ------------------------------------------------------------------------------------------


def _outputs(*logits: float) -> list[DiscriminatorOutput]:
    return [DiscriminatorOutput(torch.full((2, 1, 5), v), [torch.full((2, 4, 5), v)]) for v in logits]


def test_lsgan_and_hinge_values() -> None:
    perfect_real, perfect_fake = _outputs(1.0, 1.0), _outputs(0.0, 0.0)
    assert float(discriminator_loss(perfect_real, perfect_fake)) == 0.0
    assert float(discriminator_loss(perfect_fake, perfect_real)) == 4.0  # (1 + 1) per sub-discriminator, summed
    assert float(generator_adversarial_loss(perfect_real)) == 0.0
    assert float(generator_adversarial_loss(perfect_fake)) == 2.0
    assert float(discriminator_loss(_outputs(1.0), _outputs(-1.0), kind="hinge")) == 0.0
    assert float(generator_adversarial_loss(_outputs(3.0), kind="hinge")) == -3.0
    with pytest.raises(ValueError, match="one real and one fake"):
        discriminator_loss(perfect_real, perfect_fake[:1])


def test_feature_matching_is_zero_when_equal_and_detaches_real() -> None:
    disc = build_discriminator(TINY)
    wav = torch.randn(2, 1, 2048)
    with torch.no_grad():
        assert float(feature_matching_loss(disc(wav), disc(wav.clone()))) == 0.0
    fake_wav = (wav + 0.1 * torch.randn_like(wav)).requires_grad_(True)
    real_wav = wav.clone().requires_grad_(True)
    loss = feature_matching_loss(disc(real_wav), disc(fake_wav))
    assert float(loss.detach()) > 0
    loss.backward()
    assert fake_wav.grad is not None and fake_wav.grad.abs().sum() > 0
    assert real_wav.grad is None  # real features are targets, not trained towards the fake ones


def test_discriminator_learns_sines_from_noise() -> None:
    disc = build_discriminator(
        DiscriminatorConfig(periods=(2, 3), stft_resolutions=((256, 64),), stft_bands=((0.0, 1.0),), width=1 / 16)
    )
    opt = torch.optim.Adam(disc.parameters(), lr=2e-3, betas=(0.5, 0.9))
    real, fake = sine(8, 2048), 0.3 * torch.randn(8, 1, 2048)

    def loss() -> torch.Tensor:
        return discriminator_loss(disc(real), disc(fake))

    with torch.no_grad():
        before = float(loss())
    for _ in range(50):
        opt.zero_grad()
        loss().backward()
        opt.step()
    with torch.no_grad():
        after = float(loss())
    print(f"discriminator loss {before:.3f} -> {after:.3f}")
    assert after < 0.5 * before, (before, after)

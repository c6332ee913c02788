"""The codec's spectral encoder and inverse-STFT decoder (soundtok.nn.spectral), with either counterpart.

The contract suite runs the `codec-spectral-tiny` preset (STFT encoder + iSTFT decoder); here: the mixed pairings,
shapes, receptive fields that hold, gradients, and config errors.
"""

from __future__ import annotations

import pytest
import torch

from soundtok.nn.spectral import ISTFTDecoder, STFTEncoder
from soundtok.testing import noise_batch
from soundtok.tokenizers.codec import CodecConfig, CodecTokenizer

HOP = 40  # strides (2, 4, 5)
TINY = dict(channels=4, strides=(2, 4, 5), latent_dim=8, num_quantizers=2, codebook_size=16, decoder_dim=16)
TINY_MLP = dict(decoder_intermediate_dim=32, decoder_layers=2, encoder_layers=1)


@pytest.mark.parametrize(("encoder", "decoder"), [("conv", "istft"), ("stft", "conv"), ("stft", "istft")])
def test_every_pairing_batches_like_one_by_one(encoder: str, decoder: str) -> None:
    torch.manual_seed(0)
    codec = CodecTokenizer(CodecConfig(**TINY, **TINY_MLP, encoder=encoder, decoder=decoder)).eval()
    lengths = [1000, 613, 97]
    wav, _ = noise_batch(lengths, seed=3)
    tokens = codec.encode(wav, 16000, torch.tensor(lengths))
    audio = codec.decode(tokens)
    assert audio.shape == (3, 1, 1000)
    for b, n in enumerate(lengths):
        alone = codec.encode(wav[b : b + 1, :, :n], 16000)
        assert alone.equal(tokens.item(b))
        torch.testing.assert_close(audio[b : b + 1, :, :n], codec.decode(alone), atol=1e-5, rtol=0)
        assert not audio[b, :, n:].any()


def test_encoder_reach_bounds_what_a_frame_sees() -> None:
    """Changing samples beyond the stated reach of a latent frame leaves that frame unchanged."""
    torch.manual_seed(0)
    encoder = STFTEncoder(8, HOP, dim=16, intermediate_dim=32, num_layers=2).eval()
    reach = encoder.receptive_field()
    frames = 60
    wav = torch.randn(1, 1, frames * HOP)
    t = 30  # the frame owning samples [t * HOP, (t + 1) * HOP)
    changed = wav.clone()
    changed[..., (t + 1) * HOP + reach.right :] = torch.randn_like(changed[..., (t + 1) * HOP + reach.right :])
    changed[..., : t * HOP - reach.left] = 0.0
    with torch.no_grad():
        a, b = encoder(wav)[..., t], encoder(changed)[..., t]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    with torch.no_grad():  # and the reach is not vacuous: a change just inside it does move the frame
        inside = wav.clone()
        inside[..., (t + 1) * HOP + reach.right // 4] += 1.0
        assert (encoder(inside)[..., t] - a).abs().max() > 1e-4


def test_decoder_shapes_gradients_and_context() -> None:
    torch.manual_seed(0)
    decoder = ISTFTDecoder(8, HOP, dim=16, intermediate_dim=32, num_layers=2, upsample=2)
    z = torch.randn(2, 8, 25, requires_grad=True)
    out = decoder(z)
    assert out.shape == (2, 1, 25 * HOP) and torch.isfinite(out).all()
    out.square().sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    # a sample depends on no latent frame further than receptive_field_frames from its own
    reach = decoder.receptive_field_frames()
    t = 12
    far = z.detach().clone()
    far[..., t + reach + 1 :] = 0.0
    far[..., : t - reach] = 0.0
    with torch.no_grad():
        torch.testing.assert_close(
            decoder(z.detach())[..., t * HOP : (t + 1) * HOP], decoder(far)[..., t * HOP : (t + 1) * HOP]
        )


def test_config_errors_say_what_to_do() -> None:
    with pytest.raises(ValueError, match="causal"):
        CodecConfig(decoder="istft", causal=True)
    with pytest.raises(ValueError, match="causal"):
        CodecConfig(encoder="stft", causal=True)
    with pytest.raises(ValueError, match="encoder must be"):
        CodecConfig(decoder="vocos")
    with pytest.raises(ValueError, match="even multiple"):
        ISTFTDecoder(8, 30, upsample=4)


def test_parameter_order_is_the_first_releases() -> None:
    """An optimizer state stores Adam's moments by parameter position, so a resumed run needs the order its state
    was saved in: the resampling conv sits after the blocks in the encoder and right after the embedding in the
    decoder, as in the first release (before the two shared a base class)."""
    encoder = STFTEncoder(8, HOP, dim=16, intermediate_dim=32, num_layers=2)
    decoder = ISTFTDecoder(8, HOP, dim=16, intermediate_dim=32, num_layers=2)

    def order(module: torch.nn.Module) -> list[str]:
        return list(dict.fromkeys(name.split(".")[0] for name, _ in module.named_parameters()))

    assert order(encoder) == ["embed", "norm", "blocks", "down", "final_norm", "project"]
    assert order(decoder) == ["embed", "up", "norm", "blocks", "final_norm", "head"]

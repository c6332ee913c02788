"""Properties of the vector quantizers, on tiny dims (D=8..16, V=16..32) so the file runs in seconds."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from soundtok.nn.quantize import QuantizerOutput, ResidualVectorQuantizer, RVQConfig, VectorQuantizer, VQConfig

DIM = 16

# (name, config overrides): every property below holds for each flavour
FLAVOURS = [
    ("dac", {}),
    ("dac-no-weight-norm", {"weight_norm": False}),
    ("euclidean", {"factorised": False}),
    ("ema", {"ema": True}),
    ("ema-euclidean", {"ema": True, "factorised": False}),
    ("unit-codes", {"unit_codes": True}),
]


def make_rvq(**overrides: Any) -> ResidualVectorQuantizer:
    fields = {"dim": DIM, "num_quantizers": 4, "codebook_size": 32, "codebook_dim": 4} | overrides
    return ResidualVectorQuantizer(RVQConfig(**fields))


@pytest.fixture(params=FLAVOURS, ids=[f[0] for f in FLAVOURS])
def flavour(request: pytest.FixtureRequest) -> dict[str, Any]:
    return dict(request.param[1])


def test_shapes_and_code_range(flavour: dict[str, Any]) -> None:
    torch.manual_seed(0)
    rvq = make_rvq(**flavour)
    x = torch.randn(3, DIM, 7)  # [B, D, T']
    for training in (True, False):
        rvq.train(training)
        out = rvq(x)
        assert isinstance(out, QuantizerOutput)
        assert out.quantized.shape == x.shape and out.quantized.dtype == torch.float32
        assert out.codes.shape == (3, 4, 7) and out.codes.dtype == torch.long
        assert out.num_quantizers == 4
        assert out.commit_loss.ndim == 0 and out.codebook_loss.ndim == 0
        assert int(out.codes.min()) >= (-1 if training else 0) and int(out.codes.max()) < 32
    assert rvq.encode(x, n_q=2).shape == (3, 2, 7)
    vq = VectorQuantizer(VQConfig(dim=DIM, codebook_size=32, codebook_dim=4, **flavour))
    out = vq(x)
    assert out.codes.shape == (3, 1, 7) and vq.encode(x).shape == (3, 7) and vq.decode(vq.encode(x)).shape == x.shape


@pytest.mark.parametrize("training", [True, False])
def test_straight_through_gradient_is_identity(flavour: dict[str, Any], training: bool) -> None:
    torch.manual_seed(0)
    rvq = make_rvq(**flavour).train(training)
    x = torch.randn(4, DIM, 5, requires_grad=True)
    rvq(x).quantized.sum().backward()
    if flavour.get("unit_codes"):  # the identity holds for the frames scaled to unit RMS, the RVQ's real input
        scaled = x.detach().clone().requires_grad_(True)
        expected = torch.autograd.grad(rvq._scaled(scaled).sum(), scaled)[0]
        torch.testing.assert_close(x.grad, expected)
    else:
        assert x.grad is not None and torch.equal(x.grad, torch.ones_like(x))
    vq = VectorQuantizer(VQConfig(dim=DIM, codebook_size=16, codebook_dim=4, **flavour)).train(training)
    x.grad = None
    vq(x).quantized.sum().backward()
    assert x.grad is not None and torch.equal(x.grad, torch.ones_like(x))


def test_projections_get_the_decoder_gradient() -> None:
    """The loss after the quantizer trains the factorised projections (DAC's latent straight-through)."""
    torch.manual_seed(0)
    rvq = make_rvq()
    (rvq(torch.randn(2, DIM, 5)).quantized ** 2).sum().backward()
    level = rvq.level(0)
    assert level.in_proj is not None and level.out_proj is not None
    for proj in (level.in_proj, level.out_proj):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in proj.parameters())
    assert level.codebook.grad is None  # the codebook learns from codebook_loss only


def test_decode_encode_equals_forward_in_eval(flavour: dict[str, Any]) -> None:
    torch.manual_seed(0)
    rvq = make_rvq(**flavour)
    rvq(torch.randn(8, DIM, 6))  # one training batch: k-means init, statistics
    rvq.eval()
    x = torch.randn(3, DIM, 9)
    for n_q in (1, 2, 4):
        out = rvq(x, n_q=n_q)
        codes = rvq.encode(x, n_q=n_q)
        assert torch.equal(codes, out.codes)
        torch.testing.assert_close(rvq.decode(codes), out.quantized, atol=1e-6, rtol=0)
        # fewer levels of the same codes = the bitrate knob
        torch.testing.assert_close(rvq.decode(rvq.encode(x)[:, :n_q]), out.quantized, atol=1e-6, rtol=0)
    vq = rvq.level(0)
    torch.testing.assert_close(vq.decode(vq.encode(x)), vq(x).quantized, atol=1e-6, rtol=0)


def test_code_vectors_are_what_decode_gives_each_code(flavour: dict[str, Any]) -> None:
    torch.manual_seed(0)
    vq = make_rvq(**flavour).level(1)
    vq(torch.randn(4, DIM, 6))  # k-means init
    table = vq.code_vectors()  # [V, D]
    codes = torch.arange(32)[None]  # [1, V]
    assert table.shape == (32, DIM) and not table.requires_grad
    torch.testing.assert_close(table, vq.decode(codes)[0].T, atol=1e-6, rtol=0)


def test_batch_results_equal_one_by_one(flavour: dict[str, Any]) -> None:
    torch.manual_seed(0)
    rvq = make_rvq(**flavour)
    rvq(torch.randn(8, DIM, 6))
    rvq.eval()
    x = torch.randn(5, DIM, 11)
    batched = rvq.encode(x)
    alone = torch.cat([rvq.encode(x[b : b + 1]) for b in range(5)])
    assert torch.equal(batched, alone)
    assert torch.equal(rvq(x).codes, batched)


def test_quantizes_in_fp32_under_autocast() -> None:
    torch.manual_seed(0)
    rvq = make_rvq().eval()
    x = torch.randn(2, DIM, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = rvq(x.bfloat16())
    assert out.quantized.dtype == torch.float32
    assert torch.equal(out.codes, rvq.encode(x.bfloat16().float()))


def _train(rvq: ResidualVectorQuantizer, data: torch.Tensor, steps: int) -> None:
    optimiser = torch.optim.Adam(rvq.parameters(), lr=3e-3)
    rvq.train()
    for _ in range(steps):
        out = rvq(data)
        loss = F.mse_loss(out.quantized, data) + out.commit_loss + out.codebook_loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    rvq.eval()


def _error(rvq: ResidualVectorQuantizer, data: torch.Tensor, n_q: int) -> float:
    return F.mse_loss(rvq.decode(rvq.encode(data, n_q=n_q)), data).item()


@pytest.mark.parametrize(
    ("ema", "unit"), [(False, False), (True, False), (False, True)], ids=["gradient", "ema", "unit"]
)
def test_training_reduces_error_and_more_levels_help(ema: bool, unit: bool) -> None:
    torch.manual_seed(0)
    data = torch.randn(32, DIM, 8)  # a fixed data set of 256 vectors
    rvq = make_rvq(ema=ema, unit_codes=unit, codebook_size=16).eval()
    before = _error(rvq, data, 4)
    _train(rvq, data, steps=1)  # k-means init (in the latent: the random out_proj still decodes badly)
    after_init = _error(rvq, data, 4)
    _train(rvq, data, steps=199)
    errors = [_error(rvq, data, n) for n in (1, 2, 4)]
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 0.5 * min(before, after_init), (before, after_init, errors)


def test_unit_codes_bound_the_losses_whatever_the_input_scale() -> None:
    """|z - c|^2 <= 4 for unit vectors: per level the mean over d is at most 4 / d, times the loss weight; and
    the output does not depend on the input's length (frames are scaled to unit RMS)."""
    torch.manual_seed(0)
    rvq = make_rvq(unit_codes=True, quantizer_dropout=0.0).train()
    config = rvq.config
    for scale in (1.0, 1e4):
        out = rvq(scale * torch.randn(4, DIM, 8))
        assert out.commit_loss.item() <= config.num_quantizers * 4 / config.codebook_dim * config.commitment
        assert out.codebook_loss.item() <= config.num_quantizers * 4 / config.codebook_dim * config.codebook_weight
    x = torch.randn(2, DIM, 8)
    rvq.eval()
    assert torch.equal(rvq.encode(x), rvq.encode(1e4 * x))  # the input's length is scaled away
    torch.testing.assert_close(rvq(x).quantized, rvq(1e4 * x).quantized)
    with pytest.raises(ValueError, match="unit_codes needs factorised"):
        RVQConfig(dim=DIM, factorised=False, unit_codes=True)


def test_kmeans_init_runs_once_and_is_saved() -> None:
    torch.manual_seed(0)
    rvq = make_rvq(dead_code_threshold=0.0)
    random_codebook = rvq.level(0).codebook.detach().clone()
    rvq(torch.randn(8, DIM, 6))
    assert all(bool(rvq.level(i).initialised) for i in range(4))
    after_init = rvq.level(0).codebook.detach().clone()
    assert not torch.equal(after_init, random_codebook)
    rvq(10 * torch.randn(8, DIM, 6))  # a second batch, far from the first: no second k-means
    assert torch.equal(rvq.level(0).codebook.detach(), after_init)

    state = rvq.state_dict()
    assert "quantizers.0.initialised" in state and "num_replaced" not in " ".join(state)
    torch.manual_seed(1)
    fresh = make_rvq(dead_code_threshold=0.0)
    fresh.load_state_dict(state)
    x = torch.randn(3, DIM, 5)
    assert torch.equal(fresh.eval().encode(x), rvq.eval().encode(x))
    fresh.train()(torch.randn(8, DIM, 6))  # training resumes without re-initialising
    assert torch.equal(fresh.level(0).codebook.detach(), after_init)


@pytest.mark.parametrize("ema", [False, True], ids=["gradient", "ema"])
def test_dead_codes_are_restarted(ema: bool) -> None:
    torch.manual_seed(0)
    cfg = VQConfig(dim=8, codebook_size=16, codebook_dim=4, kmeans_init=False, ema=ema, dead_code_threshold=0.1)
    vq = VectorQuantizer(cfg)
    with torch.no_grad():
        vq.codebook.copy_(vq.codebook[:1].expand(16, -1))  # every entry alike: the search always picks entry 0
    data = torch.randn(4, 8, 16)
    assert vq.encode(data).unique().numel() == 1
    vq.eval()(data)
    assert int(vq.num_replaced) == 0  # eval mode never restarts
    vq.train()(data)
    assert int(vq.num_replaced) == 15
    assert vq.encode(data).unique().numel() >= 8
    assert "num_replaced" not in vq.state_dict()


def test_quantizer_dropout_masks_levels_per_item() -> None:
    torch.manual_seed(0)
    # no k-means and no restarts: this forward leaves the codebooks as they are, so decode can check it
    rvq = make_rvq(quantizer_dropout=1.0, kmeans_init=False, dead_code_threshold=0.0).train()
    x = torch.randn(16, DIM, 5)
    out = rvq(x)
    kept = (out.codes >= 0).all(dim=2).sum(dim=1)  # [B] levels each item used
    assert int(kept.min()) >= 1 and int(kept.max()) <= 4 and len(kept.unique()) > 1
    rvq.eval()
    for b, n in enumerate(kept.tolist()):
        assert bool((out.codes[b, :n] >= 0).all()) and bool((out.codes[b, n:] == -1).all())
        expected = sum(rvq.level(i).decode(out.codes[b : b + 1, i]) for i in range(n))
        torch.testing.assert_close(out.quantized[b : b + 1], expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(rvq.decode(out.codes), out.quantized, atol=1e-6, rtol=0)
    # the kept levels hold the codes eval mode gives
    full = rvq.encode(x)
    assert torch.equal(torch.where(out.codes >= 0, full, -1), out.codes)


def test_losses_count_only_the_levels_each_item_used() -> None:
    torch.manual_seed(0)
    rvq = make_rvq(kmeans_init=False, dead_code_threshold=0.0).eval()
    x = torch.randn(4, DIM, 5)
    per_level = [rvq(x, n_q=n).commit_loss for n in (1, 2, 3, 4)]
    assert all(a < b for a, b in zip(per_level, per_level[1:], strict=False))  # summed over levels, not averaged


def test_config_round_trips_and_validates() -> None:
    cfg = RVQConfig(dim=12, num_quantizers=3, ema=True)
    assert RVQConfig.from_dict(json.loads(cfg.to_json())) == cfg
    bad_fields: list[dict[str, Any]] = [
        {"codebook_size": 1},
        {"quantizer_dropout": 1.5},
        {"ema_decay": 1.0},
        {"num_quantizers": 0},
        {"dead_code_threshold": -0.1},
    ]
    for bad in bad_fields:
        with pytest.raises(ValueError):
            RVQConfig(dim=12, **bad)


def test_bad_inputs_say_what_to_do() -> None:
    rvq = make_rvq().eval()
    with pytest.raises(ValueError, match=r"\[B, D=16, T'\]"):
        rvq.encode(torch.randn(2, 5, DIM))
    with pytest.raises(ValueError, match="n_q must lie in"):
        rvq.encode(torch.randn(2, DIM, 5), n_q=5)
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 32\)"):
        rvq.decode(torch.full((1, 2, 3), 32))
    with pytest.raises(ValueError, match="integer codes"):
        rvq.decode(torch.zeros(1, 2, 3))

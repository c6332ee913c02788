"""The semantic family: k-means units over encoder layers, the feature store, k-means itself, the decoder recipe.

The contract suite covers encode/decode through the common interface (``semantic-tiny``); here: that codes are the
nearest centroids of the named layers, that centroids come only from the train split, that the unit-to-latent
decoder batches, windows and learns, and that the recipe trains from given centroids.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import soundtok
from soundtok.corpus import AudioItem, Manifest
from soundtok.encoders.base import FeatureEncoder
from soundtok.encoders.store import FeatureStore, extract_features
from soundtok.errors import CheckpointError, SoundtokError
from soundtok.nn.kmeans import fit_kmeans, nearest
from soundtok.testing import load_fixture
from soundtok.tokenizers.semantic import SemanticConfig, SemanticTokenizer, deduplicate, fit_centroids
from soundtok.train.config import load_config

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(encoder="none", feature_dim=2, num_clusters=4, vocoder="griffin-lim", dim=16, heads=2, decoder_layers=2)


class FrameLevel(FeatureEncoder):
    """A stand-in encoder: per 320-sample frame, layer 0 = (mean, mean) and layer 1 = twice that."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(1))
        self.name, self.sample_rate, self.frame_rate, self.num_layers, self.dim = "frame-level", 16000, 50.0, 1, 2
        self.layers = (0, 1)

    def num_frames(self, samples: torch.Tensor) -> torch.Tensor:
        return -(-samples // 320)

    def _encode(self, wav: torch.Tensor, lengths: torch.Tensor, layers: tuple[int, ...]) -> list[torch.Tensor]:
        frames = wav.new_zeros(wav.shape[0], -(-wav.shape[1] // 320) * 320)
        frames[:, : wav.shape[1]] = wav
        mean = frames.reshape(wav.shape[0], -1, 320).mean(-1, keepdim=True).repeat(1, 1, 2) * self.scale
        return [mean * (1 + layer) for layer in layers]


def test_config_rates_and_validation() -> None:
    tok = SemanticTokenizer(SemanticConfig(**{**TINY, "layers": (0, 1), "num_clusters": 32}))
    assert tok.frame_rates == (50.0, 50.0) and tok.bitrate == 2 * 50 * 5 and tok.block_samples == 1280
    with pytest.raises(ValueError, match="layers is empty"):
        SemanticConfig(layers=())
    with pytest.raises(ValueError, match="num_clusters"):
        SemanticConfig(num_clusters=1)
    with pytest.raises(ValueError, match="set them in SemanticConfig"):
        SemanticTokenizer(SemanticConfig(**{**TINY, "feature_dim": 3}), encoder=FrameLevel())


def test_codes_are_the_nearest_centroids_of_each_layer() -> None:
    tok = SemanticTokenizer(SemanticConfig(**{**TINY, "layers": (0, 1)}), encoder=FrameLevel())
    tok.set_centroids(torch.tensor([[[-0.4, -0.4], [0.0, 0.0], [0.2, 0.2], [0.9, 0.9]]] * 2))
    wav = torch.cat([torch.full((1, 640), -0.4), torch.full((1, 640), 0.1), torch.full((1, 320), 0.3)], dim=1)
    tokens = tok.encode(wav[None], 16000)
    assert tokens.codes[0].tolist() == [[0, 0, 1, 1, 2]]  # layer 0 = the frame means
    assert tokens.codes[1].tolist() == [[0, 0, 2, 2, 3]]  # layer 1 = twice them: -0.8, 0.2, 0.6 (nearer 0.9)
    with pytest.raises(ValueError, match="centroids must be shaped"):
        tok.set_centroids(torch.zeros(3, 2))
    identity = tok.identity
    tok.set_centroids(torch.zeros(2, 4, 2))
    assert tok.identity != identity


def test_nearest_matches_brute_force() -> None:
    g = torch.Generator().manual_seed(0)
    x, c = torch.randn(500, 7, generator=g), torch.randn(33, 7, generator=g)
    index, dist = nearest(x, c, chunk=64)
    brute = torch.cdist(x, c) ** 2
    assert torch.equal(index, brute.argmin(dim=1))
    torch.testing.assert_close(dist, brute.min(dim=1).values, atol=1e-4, rtol=1e-4)


def test_kmeans_recovers_clusters_and_uses_every_code() -> None:
    g = torch.Generator().manual_seed(1)
    centres = torch.randn(8, 4, generator=g) * 5
    x = (centres[torch.randint(8, (4000,), generator=g)] + 0.1 * torch.randn(4000, 4, generator=g))[
        torch.randperm(4000, generator=g)
    ]
    result = fit_kmeans(lambda: iter(x.split(500)), 8, passes=4, seed=0)
    found = torch.cdist(centres, result.centroids).min(dim=1).values
    assert found.max() < 0.2 and int((result.counts > 0).sum()) == 8 and result.inertia < 0.1
    again = fit_kmeans(lambda: iter(x.split(500)), 8, passes=4, seed=0)
    assert torch.equal(result.centroids, again.centroids)  # seeded
    with pytest.raises(ValueError, match="at least as many vectors"):
        fit_kmeans(lambda: iter([x[:5]]), 8)


@pytest.fixture
def store(tmp_path: Path) -> FeatureStore:
    """Train clips at levels -0.5 and 0.5, a test clip at 3.0 (k-means must never see it)."""
    import soundfile as sf

    items = []
    for name, level, split in (("a", -0.5, "train"), ("b", 0.5, "train"), ("c", 3.0, "test")):
        path = tmp_path / f"{name}.wav"
        sf.write(path, np.full(3200 + 17, level / 4, dtype=np.float32), 16000)  # 10 frames + a partial one
        items.append(AudioItem(id=f"t/{name}", path=path, duration=0.2, split=split, dataset="t"))
    return extract_features(FrameLevel(), Manifest(items), tmp_path / "features", progress=False)


def test_feature_store_holds_every_frame_and_refuses_other_settings(store: FeatureStore, tmp_path: Path) -> None:
    assert store.layers == (0, 1) and set(store.items) == {"t/a", "t/b", "t/c"}
    assert store.get("t/c", 1).shape == (11, 2) and store.get("t/c", 1).dtype == np.float16
    np.testing.assert_allclose(store.get("t/c", 1)[:10], 1.5, rtol=1e-3)  # 2 x 0.75
    assert store.rows(["t/b"]).tolist() == list(range(store.items["t/b"].offset, store.items["t/b"].offset + 11))
    same = extract_features(FrameLevel(), Manifest([]), tmp_path / "features", progress=False)
    assert same.items == store.items  # complete and matching: reused
    with pytest.raises(CheckpointError, match="other settings"):
        extract_features(FrameLevel(), Manifest([]), tmp_path / "features", layers=[1], progress=False)
    with pytest.raises(CheckpointError, match="feature store"):
        FeatureStore(tmp_path)


def test_centroids_are_fitted_on_the_train_split_only(store: FeatureStore) -> None:
    result = fit_centroids(store, layer=0, num_clusters=2, batch_size=7, passes=3)
    values = sorted(result.centroids[:, 0].tolist())
    # the clips' levels are -0.125 and 0.125; each clip's partial last frame (mostly zeros) pulls them inward
    assert values[0] == pytest.approx(-0.12, abs=0.03) and values[1] == pytest.approx(0.12, abs=0.03)
    assert max(abs(v) for v in values) < 0.5  # the test clip (0.75) is nowhere


def test_deduplicate() -> None:
    units, durations = deduplicate(torch.tensor([3, 3, 3, 1, 1, 3, 7]))
    assert units.tolist() == [3, 1, 3, 7] and durations.tolist() == [3, 2, 1, 1]
    assert deduplicate(torch.zeros(0, dtype=torch.long))[0].numel() == 0
    with pytest.raises(ValueError, match="one item"):
        deduplicate(torch.zeros(2, 3, dtype=torch.long))


def perturbed(decoder: str) -> SemanticTokenizer:
    torch.manual_seed(0)
    tok = SemanticTokenizer(SemanticConfig(**{**TINY, "decoder": decoder, "decoder_window": 2}))
    with torch.no_grad():
        for p in tok.decoder.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return tok.eval()


@pytest.mark.parametrize("decoder", ["mse", "cfm"])
def test_decoding_batches_and_windows_like_one_pass(decoder: str) -> None:
    tok = perturbed(decoder)
    codes = torch.randint(4, (2, 40))
    frames = torch.tensor([50, 23])  # 40 units = 10 blocks = 50 latent frames; the second item is shorter
    together = tok.decode_latents([codes], frames)
    assert together.shape == (2, 80, 50) and together[1, :, 23:].abs().sum() == 0
    alone = tok.decode_latents([codes[1:, :19]], frames[1:])  # 19 units -> 5 blocks -> 25 frames
    torch.testing.assert_close(together[1:, :, :23], alone[..., :23], rtol=0, atol=1e-4)
    tok.window_seconds = 0.16  # 2 blocks per window
    torch.testing.assert_close(tok.decode_latents([codes], frames), together, rtol=0, atol=1e-4)


def test_the_decoder_learns() -> None:
    torch.manual_seed(0)
    tok = SemanticTokenizer(SemanticConfig(**{**TINY, "dim": 32, "decoder_window": 2}))
    codes = [torch.randint(4, (4, 16))]  # 4 blocks = 20 latent frames
    latents = torch.randn(4, 80, 20).cumsum(-1)
    latents = (latents - latents.mean(dim=(0, 2), keepdim=True)) / latents.std(dim=(0, 2), keepdim=True)
    with torch.no_grad():
        before = float(tok.eval()(latents, codes).loss)
    opt = torch.optim.Adam(tok.parameters(), lr=3e-3)
    tok.train()
    for _ in range(40):
        loss = tok(latents, codes).total
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = float(tok.eval()(latents, codes).loss)
    assert after < 0.7 * before, f"{before:.3f} -> {after:.3f}"


def test_recipe_trains_the_decoder_from_given_centroids(fixture_manifest: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    from soundtok.train.flow import train_flow

    centroids = torch.randn(1, 16, 384)
    save_file({"centroids": centroids}, str(tmp_path / "c.safetensors"))
    overrides = [
        "model={encoder: whisper-tiny.en, layers: [4], feature_dim: 384, num_clusters: 16, vocoder: griffin-lim, "
        "dim: 16, heads: 2, decoder_layers: 1, decoder_window: 2}",
        f"data.manifest={fixture_manifest}",
        "data.batch_size=2",
        "data.segment_seconds=0.16",  # 2 blocks
        "data.eval_items=2",
        "data.eval_seconds=0.3",
        "eval_every=2",
        "checkpoint_every=2",
        "steps=2",
    ]
    config = ROOT / "configs" / "semantic-whisper-base-1000.yaml"
    cfg = load_config(config, [*overrides, f"init_weights={tmp_path / 'c.safetensors'}"])
    export = train_flow(cfg, tmp_path / "run")
    assert export is not None
    weights = load_file(export / "model.safetensors")
    torch.testing.assert_close(weights["centroids"].float(), centroids.half().float())  # kept as given
    tok = soundtok.load(export)
    assert isinstance(tok, SemanticTokenizer) and tok.name == "semantic-whisper-base-1000"
    wav = load_fixture("digit")[0][..., :4000]
    assert tok.decode(tok.encode(wav[None], 16000)).shape == (1, 1, 4000)
    with pytest.raises(SoundtokError, match="init_weights"):
        train_flow(load_config(config, [*overrides, "init_weights=null"]), tmp_path / "other")

"""Golden values of every shipped checkpoint: a refactor must not change what they do.

For each checkpoint in ``soundtok/checkpoints/``: its identity (the fingerprint hashes the family, the config's
JSON and the weights, so a config that serialises differently or a renamed tensor shows here), a hash of the codes
it gives the first two seconds of the bundled speech clip, and a few samples of the audio it decodes them to
(within ``atol``: float rounding may differ between builds, the behaviour may not). The vocoder has no codes: its
golden values are its module fingerprint and a few samples of the audio it makes from the clip's log-mel.

The values were recorded from the code before issue 22's refactor; to re-record them after a deliberate change
(e.g. re-trained weights), run ``python tests/test_golden.py`` and paste its output over :data:`GOLDEN`.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import torch

import soundtok
from soundtok.registry import PRESETS, available
from soundtok.testing import load_fixture

SECONDS = 2.0
PROBES = 8  # decoded samples compared, evenly spaced


def _clip() -> torch.Tensor:
    wav, sr = load_fixture("speech")
    return wav[:, : int(SECONDS * sr)]  # [1, T]


def _samples(wav: torch.Tensor) -> list[float]:
    flat = wav.flatten()
    index = torch.linspace(0, flat.numel() - 1, PROBES + 2)[1:-1].long()  # skip the edges
    return [round(float(v), 6) for v in flat[index]] + [round(float(flat.pow(2).mean().sqrt()), 6)]


def _codes_hash(codes: tuple[torch.Tensor, ...]) -> str:
    h = hashlib.sha256()
    for level in codes:
        h.update(level.to(torch.int64).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def golden_values(name: str) -> dict[str, Any]:
    """What :data:`GOLDEN` records for the shipped checkpoint ``name``."""
    torch.manual_seed(0)
    wav = _clip()
    if name.startswith("vocoder-"):
        from soundtok.latent import module_fingerprint
        from soundtok.vocoder import Vocoder, load_vocoder

        vocoder = load_vocoder(name)
        assert isinstance(vocoder, Vocoder)
        audio = vocoder.synthesize(vocoder.mel(wav))  # [1, 1, T]
        identity = f"{vocoder.name} ({vocoder.family}, {module_fingerprint(vocoder)})"
        return {"identity": identity, "samples": _samples(audio)}
    tok = soundtok.load(name)
    with torch.no_grad():
        tokens = tok.encode(wav[None], 16000)
        audio = tok.decode(tokens)
    return {
        "identity": str(tok.identity),
        "codes": _codes_hash(tokens.codes),
        "frames": [int(c.shape[-1]) for c in tokens.codes],
        "samples": _samples(audio),
    }


#: recorded with ``python tests/test_golden.py`` before the issue-22 refactor
GOLDEN: dict[str, dict[str, Any]] = {
    "codec-16k": {
        "identity": "codec-16k (codec, 47e1d1c2f1116463)",
        "codes": "90fb44fa95efac08",
        "frames": [100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100],
        "samples": [0.000686, -1.5e-05, 0.005424, -0.126272, 0.112619, 0.001079, 0.058999, -0.000765, 0.058964],
    },
    "msn-16k": {
        "identity": "msn-16k (msn, d943016c441dcd88)",
        "codes": "d45aedd23bcfb5ce",
        "frames": [42],
        "samples": [0.001283, -9.7e-05, 0.004562, 0.235686, -0.024215, -0.000629, -0.04476, -0.004173, 0.046068],
    },
    "msn-mse-16k": {
        "identity": "msn-mse-16k (msn, 1beadee3bd7e3481)",
        "codes": "d4a2e6462c0eb363",
        "frames": [42],
        "samples": [-4.5e-05, -0.000117, 0.004985, -0.016534, 0.009587, -0.000169, -0.002634, 0.000177, 0.022025],
    },
    "semantic-whisper-base-1000": {
        "identity": "semantic-whisper-base-1000 (semantic, c1a56ee8e5ed2e1e)",
        "codes": "9d353b4f03bab1bb",
        "frames": [100],
        "samples": [5e-06, 1.8e-05, 0.000623, 0.002579, -0.002791, -0.000506, 0.003592, -0.000103, 0.003393],
    },
    "vocoder-16k": {
        "identity": "vocoder-16k (vocoder, 23bf42c485319c8c)",
        "samples": [6.4e-05, 0.000346, -0.001082, 0.068361, -0.018777, 0.000258, -0.014308, 0.00051, 0.050542],
    },
}

#: decoded audio tolerance per checkpoint (a many-step ODE through float attention rounds a little more)
ATOL = {"msn-16k": 1e-4, "msn-mse-16k": 1e-4, "semantic-whisper-base-1000": 1e-4}


def test_every_shipped_checkpoint_has_golden_values() -> None:
    soundtok.list_presets()  # registers the presets
    shipped = {p.name for p in PRESETS.values() if p.checkpoint is not None} | {"vocoder-16k"}
    assert shipped == set(GOLDEN), "record golden values for each shipped checkpoint (python tests/test_golden.py)"


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_shipped_checkpoint_is_unchanged(name: str) -> None:
    if name in PRESETS and (reason := available(PRESETS[name])):
        pytest.skip(reason)
    got, want = golden_values(name), GOLDEN[name]
    assert got["identity"] == want["identity"]
    assert got.get("codes") == want.get("codes") and got.get("frames") == want.get("frames")
    torch.testing.assert_close(
        torch.tensor(got["samples"]), torch.tensor(want["samples"]), atol=ATOL.get(name, 1e-5), rtol=0
    )


if __name__ == "__main__":
    import json

    soundtok.list_presets()
    names = sorted([p.name for p in PRESETS.values() if p.checkpoint is not None] + ["vocoder-16k"])
    print("GOLDEN: dict[str, dict[str, Any]] = {")
    for name in names:
        fields = ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in golden_values(name).items())
        print(f"    {json.dumps(name)}: {{{fields}}},")
    print("}")

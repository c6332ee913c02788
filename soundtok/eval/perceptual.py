"""Perceptual and intelligibility metrics from optional packages: STOI/ESTOI, PESQ, ViSQOL, DNSMOS.

Each function returns a float (DNSMOS: :class:`DnsmosScores`) or raises
:class:`~soundtok.errors.MetricUnavailableError` saying why it cannot: the package is missing (with the pip
command), or the input is one the metric cannot score (silence, too short). Inputs are 1-D float clips at
``sample_rate``; intrusive metrics trim ref/deg to the shorter length (they may differ by at most 5 %).
Everything here runs offline: the models ship inside the packages.
"""

from __future__ import annotations

import functools
import logging
import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any

from soundtok.errors import MetricUnavailableError
from soundtok.eval._common import AudioLike, as_mono, check_sample_rate, is_silent, prepare_pair, require, to_rate
from soundtok.logs import native_stderr_silenced

log = logging.getLogger(__name__)

#: ViSQOL mode -> the sample rate it works at (inputs are resampled to it)
VISQOL_RATES = {"speech": 16000, "audio": 48000}
#: PESQ mode -> the sample rate it is run at: wide band (P.862.2) at 16 kHz, narrow band (P.862.1) at 8 kHz
PESQ_RATES = {"wb": 16000, "nb": 8000}
DNSMOS_RATE = 16000


def stoi(ref: AudioLike, deg: AudioLike, sample_rate: int, *, extended: bool = False) -> float:
    """Short-time objective intelligibility (Taal et al. 2011), via pystoi; about 0..1, higher is better.

    pystoi resamples to 10 kHz internally, drops frames more than 40 dB below the loudest, and needs at least
    30 frames (~0.4 s of active speech) left; otherwise, or for a silent reference, this raises
    :class:`MetricUnavailableError`.
    ``extended=True`` gives ESTOI (Jensen & Taal 2016), better for modulated noise.
    """
    require("pystoi")
    from pystoi import stoi as _pystoi

    a, b = prepare_pair(ref, deg, sample_rate)
    if is_silent(a):  # pystoi would keep every (equally silent) frame and return 0
        raise MetricUnavailableError("STOI needs speech in the reference; it is digital silence")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(_pystoi(a.double().numpy(), b.double().numpy(), sample_rate, extended=extended))
    for w in caught:
        if "Not enough STFT frames" in str(w.message):  # pystoi then returns a placeholder 1e-5
            raise MetricUnavailableError(
                "STOI needs at least 30 frames (~0.4 s) of non-silent reference at 10 kHz; this clip has fewer"
            )
        log.debug("pystoi warned: %s", w.message)
    return _finite(value, "ESTOI" if extended else "STOI")


def estoi(ref: AudioLike, deg: AudioLike, sample_rate: int) -> float:
    """Extended STOI; see :func:`stoi`."""
    return stoi(ref, deg, sample_rate, extended=True)


def _pesq_error_names() -> dict[int, str]:
    from pesq import PesqError

    return {
        int(getattr(PesqError, name)): name
        for name in dir(PesqError)
        if name.isupper() and name not in ("SUCCESS", "RAISE_EXCEPTION", "RETURN_VALUES")
    }


def pesq(ref: AudioLike, deg: AudioLike, sample_rate: int, *, mode: str = "wb") -> float:
    """PESQ MOS-LQO (ITU-T P.862.2 wide band, or P.862.1 narrow band), via the ``pesq`` package; higher is better.

    Wide band runs at 16 kHz, narrow band at 8 kHz; audio at other rates is resampled first, except that wide band
    is unavailable below 16 kHz (the upper band is missing). Runs with ``on_error=PesqError.RETURN_VALUES``:
    PESQ's error codes (e.g. no utterances detected) and silent inputs become :class:`MetricUnavailableError`.
    Range about 1.0-4.6 (wb 1.04-4.64, nb 1.02-4.55).
    """
    if mode not in PESQ_RATES:
        raise ValueError(f"PESQ mode must be one of {sorted(PESQ_RATES)}, got {mode!r}")
    require("pesq")
    from pesq import PesqError
    from pesq import pesq as _pesq

    a, b = prepare_pair(ref, deg, sample_rate)
    if mode == "wb" and sample_rate < PESQ_RATES["wb"]:
        raise MetricUnavailableError(
            f"wide-band PESQ needs audio sampled at 16 kHz or more, got {sample_rate} Hz; use narrow band (pesq_nb)"
        )
    rate = PESQ_RATES[mode]
    a, b = to_rate(a, sample_rate, rate), to_rate(b, sample_rate, rate)
    if is_silent(a) or is_silent(b):
        raise MetricUnavailableError("PESQ cannot score digital silence")
    value = _pesq(rate, a.numpy(), b.numpy(), mode, on_error=PesqError.RETURN_VALUES)
    if value < 0:  # RETURN_VALUES gives a negative error code instead of a score
        name = _pesq_error_names().get(int(value), f"error code {value}")
        raise MetricUnavailableError(f"PESQ could not score this pair: {name}")
    return _finite(float(value), "PESQ")


@functools.lru_cache(maxsize=2)
def _visqol_api(mode: str) -> Any:
    from visqol import VisqolApi

    api = VisqolApi()
    with native_stderr_silenced():  # TF Lite prints "Created TensorFlow Lite XNNPACK delegate" here, with no switch
        api.create(mode=mode)
    log.debug("ViSQOL %s mode ready", mode)
    return api


def visqol(ref: AudioLike, deg: AudioLike, sample_rate: int, *, mode: str = "speech") -> float:
    """ViSQOL v3 MOS-LQO (1-5, higher is better), via visqol-python.

    ``mode="speech"`` runs at 16 kHz (lattice mapper, speech in 0-8 kHz); ``mode="audio"`` runs at 48 kHz (SVR
    mapper, for music and general audio; max about 4.75). Inputs are resampled to that rate first. Silent inputs
    and clips too short for ViSQOL's patches (about 1 s) raise :class:`MetricUnavailableError`.
    """
    if mode not in VISQOL_RATES:
        raise ValueError(f"ViSQOL mode must be one of {sorted(VISQOL_RATES)}, got {mode!r}")
    require("visqol")
    a, b = prepare_pair(ref, deg, sample_rate)
    rate = VISQOL_RATES[mode]
    a, b = to_rate(a, sample_rate, rate), to_rate(b, sample_rate, rate)
    if is_silent(a) or is_silent(b):
        raise MetricUnavailableError("ViSQOL cannot score digital silence")
    api = _visqol_api(mode)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            result = api.measure_from_arrays(a.double().numpy(), b.double().numpy(), rate)
    except (ValueError, IndexError) as exc:  # what visqol raises for clips shorter than its patches
        raise MetricUnavailableError(
            f"ViSQOL could not score this pair ({type(exc).__name__}: {exc}); clips need about 1 s of audio"
        ) from exc
    return _finite(float(result.moslqo), "ViSQOL")


@dataclass(frozen=True)
class DnsmosScores:
    """DNSMOS P.835 (``sig`` speech, ``bak`` background, ``ovrl`` overall) and P.808 ``p808``; each 1-5."""

    sig: float
    bak: float
    ovrl: float
    p808: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def dnsmos(wav: AudioLike, sample_rate: int) -> DnsmosScores:
    """Non-intrusive DNSMOS (Reddy et al. 2022) of one clip, via speechmos' bundled ONNX models; higher is better.

    The clip is resampled to 16 kHz and clipped to [-1, 1] (speechmos refuses values outside). DNSMOS scores
    9.01 s windows with a 1 s hop and averages them; speechmos repeats shorter clips up to 9.01 s.
    Digital silence raises :class:`MetricUnavailableError`.
    """
    require("onnxruntime", "librosa", "speechmos")
    from speechmos import dnsmos as _dnsmos

    x = to_rate(as_mono(wav), check_sample_rate(sample_rate), DNSMOS_RATE)
    if is_silent(x):
        raise MetricUnavailableError("DNSMOS cannot rate digital silence")
    if float(x.abs().max()) > 1.0:
        log.debug("DNSMOS: clipping samples beyond [-1, 1]")
        x = x.clamp(-1.0, 1.0)
    out = _dnsmos.run(x.numpy(), DNSMOS_RATE)
    return DnsmosScores(
        sig=_finite(float(out["sig_mos"]), "DNSMOS SIG"),
        bak=_finite(float(out["bak_mos"]), "DNSMOS BAK"),
        ovrl=_finite(float(out["ovrl_mos"]), "DNSMOS OVRL"),
        p808=_finite(float(out["p808_mos"]), "DNSMOS P.808"),
    )


def _finite(value: float, what: str) -> float:
    if not math.isfinite(value):
        raise MetricUnavailableError(f"{what} gave a non-finite result ({value}) on this input")
    return value

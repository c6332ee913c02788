"""Opus as a reference codec: run a clip through libopus (via the ``ffmpeg`` command) and back, aligned.

:func:`opus_transcode` encodes raw float32 PCM with ffmpeg's ``libopus`` encoder into an Ogg/Opus stream and
decodes it with ffmpeg back to the input's sample rate, both through pipes (no temporary files). It returns an
:class:`OpusResult`: the decoded clip (same shape and length as the input) and the bitrate actually spent.
:func:`opus_roundtrip` returns only the clip.

Encoder settings: ``-b:a <bitrate>`` with libopus defaults otherwise (VBR, 20 ms frames, complexity 10), and
``-application voip`` up to 12 kbit/s (speech-tuned: at 6 kbit/s it scores clearly higher ViSQOL on LibriSpeech
than ``audio`` and the same on ESC-50 / instrument clips), ``audio`` above; pass ``application=`` to choose.
libopus takes 8, 12, 16, 24 or 48 kHz; ffmpeg resamples other rates to 48 kHz before encoding, and the decoder
(48 kHz internally) is resampled by ffmpeg to the input rate.

Alignment. An Ogg/Opus stream declares a pre-skip (the encoder's look-ahead, 312 samples at 48 kHz); ffmpeg's Ogg
demuxer drops it and trims the padding of the last frame using the final granule position, so the decoded clip
already has the input's length and is within about 2 samples (at 16 kHz) of the input. The remainder depends on
the configuration (SILK's internal resampler: about +1.5 samples at 6 kbit/s, -0.3 at 12 kbit/s, measured on
LibriSpeech/RAVDESS clips), not on the clip; it is measured once per (sample rate, bitrate, application) by
cross-correlating a round trip of the bundled LibriSpeech fixture (:func:`codec_delay`) and removed, so the output
is aligned with the input to within about one sample. It is not measured per clip: on music and noise the
cross-correlation peak is ambiguous (periodic signals), and a per-clip shift would flatter the codec.

Bitrate. ``bitrate`` is the whole Ogg/Opus stream (headers, Ogg page overhead and Opus packets) x 8 / duration;
``packet_bitrate`` counts the Opus audio packets only, the number to compare with a tokenizer's nominal bitrate.
On short clips the difference is large (the two header packets are ~100 bytes).
"""

from __future__ import annotations

import functools
import math
import shutil
import subprocess
from dataclasses import dataclass

import numpy as np
import torch

from soundtok.errors import InvalidAudioError, MetricUnavailableError

#: libopus accepts bitrates in this range (bit/s)
MIN_BITRATE, MAX_BITRATE = 500, 512_000
#: up to this bitrate the default application is "voip" (speech-tuned), above it "audio"
VOIP_MAX_BITRATE = 12_000
APPLICATIONS = ("voip", "audio", "lowdelay")
#: the search range of the delay calibration, in seconds either side
MAX_DELAY_SECONDS = 0.02
INSTALL_HINT = "install ffmpeg with libopus (Debian/Ubuntu: apt-get install ffmpeg)"


@dataclass(frozen=True)
class OpusResult:
    """A clip after Opus, and what the Opus stream cost."""

    wav: torch.Tensor  # same shape, length, dtype and sample rate as the input
    sample_rate: int
    requested_bitrate: int  # the encoder's target, bit/s
    bitrate: float  # bytes of the whole Ogg/Opus stream x 8 / duration
    packet_bitrate: float  # Opus audio packets only (no Ogg pages, no header packets) x 8 / duration
    application: str
    delay: int  # samples the output was shifted by to align it (positive: the decoder's output was late)


def default_application(bitrate: int) -> str:
    """``"voip"`` up to :data:`VOIP_MAX_BITRATE`, else ``"audio"``."""
    return "voip" if bitrate <= VOIP_MAX_BITRATE else "audio"


def opus_roundtrip(
    wav: torch.Tensor, sample_rate: int, bitrate: int, *, application: str | None = None
) -> torch.Tensor:
    """``wav`` ([T] or [1, T] float, at ``sample_rate``) through Opus at ``bitrate`` bit/s and back: same shape,
    length and rate, aligned with the input. See :func:`opus_transcode` for the bitrate actually used."""
    return opus_transcode(wav, sample_rate, bitrate, application=application).wav


def opus_transcode(wav: torch.Tensor, sample_rate: int, bitrate: int, *, application: str | None = None) -> OpusResult:
    """Encode ``wav`` with libopus at ``bitrate`` bit/s, decode, align; the clip and the measured bitrate.

    Raises :class:`~soundtok.errors.MetricUnavailableError` if ffmpeg or its libopus encoder is missing, and
    :class:`~soundtok.errors.InvalidAudioError` (a ``ValueError``) for input it cannot take.
    """
    x = _check_input(wav, sample_rate)
    bitrate, application = _check_settings(bitrate, application)
    delay = codec_delay(sample_rate, bitrate, application)
    # the shift below would cut |delay| samples off one end: code some trailing silence so the tail is real
    tail = abs(delay) + 1
    stream = _encode(np.concatenate([x, np.zeros(tail, np.float32)]), sample_rate, bitrate, application)
    y = _decode(stream, sample_rate)
    out = np.zeros(x.shape[0], np.float32)
    if delay >= 0:
        part = y[delay : delay + x.shape[0]]
        out[: part.shape[0]] = part
    else:  # the output leads: its first -delay samples are lost (Opus does not code before the start)
        part = y[: x.shape[0] + delay]
        out[-delay : -delay + part.shape[0]] = part
    seconds = x.shape[0] / sample_rate
    return OpusResult(
        wav=torch.from_numpy(out).to(wav.dtype).reshape(wav.shape),
        sample_rate=sample_rate,
        requested_bitrate=bitrate,
        bitrate=len(stream) * 8 / seconds,
        packet_bitrate=ogg_packet_bytes(stream) * 8 / seconds,
        application=application,
        delay=delay,
    )


@functools.lru_cache(maxsize=64)
def codec_delay(sample_rate: int, bitrate: int, application: str) -> int:
    """Samples (at ``sample_rate``) by which ffmpeg's decoded Opus lags the input for these settings, after
    ffmpeg has removed the pre-skip: the rounded cross-correlation peak (1/8-sample resolution, within
    +-:data:`MAX_DELAY_SECONDS`) of the bundled LibriSpeech fixture and its round trip. Measured once per setting."""
    from soundtok.fixtures import load_fixture

    ref, _ = load_fixture("speech", sample_rate=sample_rate)
    x = ref[0].numpy().astype(np.float32)
    y = _decode(_encode(x, sample_rate, bitrate, application), sample_rate)[: x.shape[0]]
    return round(cross_correlation_lag(x, y, max_lag=int(MAX_DELAY_SECONDS * sample_rate)))


def cross_correlation_lag(ref: np.ndarray, deg: np.ndarray, *, max_lag: int, upsample: int = 8) -> float:
    """The lag (in samples, a multiple of ``1 / upsample``) at which ``deg`` best matches ``ref``: positive when
    ``deg`` is late (``deg[n] ~ ref[n - lag]``). Searched within ``+-max_lag``."""
    n = ref.shape[0] + deg.shape[0]
    spectrum = np.fft.rfft(deg.astype(np.float64), n) * np.conj(np.fft.rfft(ref.astype(np.float64), n))
    corr = np.fft.irfft(spectrum, n * upsample)  # band-limited interpolation of the cross-correlation
    index = np.arange(corr.shape[0])
    lags = np.where(index > corr.shape[0] // 2, index - corr.shape[0], index) / upsample
    window = np.abs(lags) <= max_lag
    return float(lags[window][np.argmax(corr[window])])


def ogg_packet_bytes(stream: bytes) -> int:
    """Bytes of audio packets in an Ogg/Opus stream: page payloads, leaving out the pages of the two header
    packets (OpusHead, OpusTags), which carry granule position 0 (RFC 7845)."""
    total, pos = 0, 0
    while pos + 27 <= len(stream):
        if stream[pos : pos + 4] != b"OggS":
            raise ValueError(f"not an Ogg stream: no page header at byte {pos}")
        granule = int.from_bytes(stream[pos + 6 : pos + 14], "little", signed=True)
        segments = stream[pos + 26]
        payload = sum(stream[pos + 27 : pos + 27 + segments])
        if granule != 0:
            total += payload
        pos += 27 + segments + payload
    return total


# ---------------------------------------------------------------------------------------------------------------
# ffmpeg
@functools.lru_cache(maxsize=1)
def _ffmpeg() -> str:
    """The ffmpeg executable, checked once for its libopus encoder."""
    path = shutil.which("ffmpeg")
    if path is None:
        raise MetricUnavailableError(f"Opus needs the ffmpeg command, which is not on PATH; {INSTALL_HINT}")
    try:
        listing = subprocess.run(
            [path, "-hide_banner", "-encoders"], capture_output=True, text=True, check=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise MetricUnavailableError(f"cannot run {path} ({type(exc).__name__}: {exc}); {INSTALL_HINT}") from exc
    if not any(line.split()[1:2] == ["libopus"] for line in listing.splitlines()):
        raise MetricUnavailableError(f"{path} was built without the libopus encoder; {INSTALL_HINT}")
    return path


def ffmpeg_version() -> str | None:
    """The first line of ``ffmpeg -version`` (e.g. ``ffmpeg version 5.1.6-0+deb12u1 ...``), for a benchmark's record
    of what made its Opus figures; None when ffmpeg is not on PATH or does not run."""
    path = shutil.which("ffmpeg")
    if path is None:
        return None
    try:
        done = subprocess.run([path, "-version"], capture_output=True, text=True, check=False, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.split("\n")[0] or None


def _run(args: list[str], data: bytes, what: str) -> bytes:
    command = [_ffmpeg(), "-nostdin", "-hide_banner", "-loglevel", "error", *args]
    try:
        done = subprocess.run(command, input=data, capture_output=True, timeout=600)
    except (OSError, subprocess.SubprocessError) as exc:
        raise RuntimeError(f"ffmpeg ({what}) could not run: {type(exc).__name__}: {exc}") from exc
    if done.returncode != 0 or not done.stdout:
        message = done.stderr.decode(errors="replace").strip()[-2000:] or "no output"
        raise RuntimeError(f"ffmpeg ({what}) failed with exit code {done.returncode}: {message}\n{' '.join(command)}")
    return done.stdout


def _encode(x: np.ndarray, sample_rate: int, bitrate: int, application: str) -> bytes:
    """Mono float32 PCM -> an Ogg/Opus stream (bit-exact mode: no random serial number, no encoder tags)."""
    pcm = np.ascontiguousarray(x, dtype="<f4").tobytes()
    args = ["-f", "f32le", "-ar", str(sample_rate), "-ac", "1", "-i", "pipe:0"]
    args += ["-c:a", "libopus", "-b:a", str(bitrate), "-application", application]
    args += ["-map_metadata", "-1", "-fflags", "+bitexact", "-flags:a", "+bitexact", "-f", "ogg", "pipe:1"]
    return _run(args, pcm, "libopus encoding")


def _decode(stream: bytes, sample_rate: int) -> np.ndarray:
    """An Ogg/Opus stream -> mono float32 PCM at ``sample_rate`` (pre-skip and end padding removed by ffmpeg)."""
    args = ["-f", "ogg", "-i", "pipe:0", "-f", "f32le", "-ac", "1", "-ar", str(sample_rate), "pipe:1"]
    return np.frombuffer(_run(args, stream, "Opus decoding"), dtype="<f4")


# ---------------------------------------------------------------------------------------------------------------
# input checks
def _check_input(wav: torch.Tensor, sample_rate: int) -> np.ndarray:
    if not isinstance(wav, torch.Tensor):
        raise InvalidAudioError(f"Opus takes a torch.Tensor shaped [T] or [1, T], got {type(wav).__name__}")
    if wav.ndim not in (1, 2) or (wav.ndim == 2 and wav.shape[0] != 1):
        raise InvalidAudioError(
            f"Opus takes one mono clip shaped [T] or [1, T], got {tuple(wav.shape)}; mix to mono first"
        )
    if not wav.is_floating_point():
        raise InvalidAudioError(f"Opus takes float audio in [-1, 1], got dtype {wav.dtype}")
    if wav.numel() == 0:
        raise InvalidAudioError("Opus got an empty clip")
    if not bool(torch.isfinite(wav).all()):
        raise InvalidAudioError("the clip contains NaN or Inf samples")
    if not isinstance(sample_rate, int | np.integer) or isinstance(sample_rate, bool) or sample_rate <= 0:
        raise InvalidAudioError(f"sample_rate must be a positive integer (Hz), got {sample_rate!r}")
    return wav.detach().reshape(-1).to("cpu", torch.float32).numpy()


def _check_settings(bitrate: int, application: str | None) -> tuple[int, str]:
    if isinstance(bitrate, bool) or not isinstance(bitrate, int | np.integer | float) or not math.isfinite(bitrate):
        raise InvalidAudioError(f"bitrate must be a number of bit/s, got {bitrate!r}")
    if not MIN_BITRATE <= bitrate <= MAX_BITRATE:
        raise InvalidAudioError(f"libopus bitrates lie in [{MIN_BITRATE}, {MAX_BITRATE}] bit/s, got {bitrate}")
    bitrate = int(bitrate)
    application = default_application(bitrate) if application is None else application
    if application not in APPLICATIONS:
        raise InvalidAudioError(f"application must be one of {APPLICATIONS}, got {application!r}")
    return bitrate, application

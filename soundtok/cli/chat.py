"""``soundtok chat``: ask an audio LLM (``RUN/model`` of a lora recipe) about a sound, or ask it for one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from soundtok.cli.batch import Force
from soundtok.errors import SoundtokError


def register(app: typer.Typer) -> None:
    app.command("chat")(chat)


def chat(
    model_dir: Annotated[Path, typer.Argument(help="an audio LLM folder (RUN/model of 'soundtok train' lora)")],
    audio: Annotated[Path | None, typer.Argument(help="an audio file to ask about")] = None,
    question: Annotated[
        str | None, typer.Option("-q", "--question", help="the question (none: read one per line from stdin)")
    ] = None,
    speak: Annotated[
        str | None, typer.Option("--speak", help="ask for audio instead, e.g. 'Generate the sound of a dog barking.'")
    ] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="where --speak writes its audio")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="longest text answer, in tokens")] = 64,
    max_seconds: Annotated[float, typer.Option(help="longest audio answer (--speak)")] = 5.0,
    temperature: Annotated[
        float | None, typer.Option(help="sampling temperature; default: 0 (greedy) for text, 1 for --speak")
    ] = None,
    seed: Annotated[int, typer.Option(help="sampling seed")] = 0,
    force: Force = False,
) -> None:
    """Text answers about AUDIO (one --question, or one per stdin line), or audio for a --speak prompt."""
    from soundtok.audio.io import load_audio, save_audio
    from soundtok.llm.recipe import load_audio_llm

    if speak is not None:
        if audio is not None or question is not None:
            raise SoundtokError("--speak generates audio from text alone; drop the audio file and --question")
        if output is None:
            raise SoundtokError("--speak needs -o/--output, the audio file to write")
        if output.exists() and not force:
            raise SoundtokError(f"{output} exists; pass --force to overwrite it")
    llm = load_audio_llm(model_dir)
    if speak is not None:
        assert output is not None
        audio_temperature = 1.0 if temperature is None else temperature
        wav = llm.speak(speak, max_seconds=max_seconds, temperature=audio_temperature, seed=seed)
        save_audio(output, wav[0], llm.audio.sample_rate, force=force)
        typer.echo(f"{output} ({wav.shape[-1] / llm.audio.sample_rate:.2f} s)")
        return
    tokens = None
    if audio is not None:
        wav, sr = load_audio(audio, sample_rate=llm.audio.sample_rate, channels=1)
        tokens = llm.audio_tokens(wav, sr)
    questions = [question] if question is not None else _stdin_lines()
    for q in questions:
        text_temperature = 0.0 if temperature is None else temperature
        typer.echo(llm.ask_tokens(q, tokens, max_new_tokens=max_new_tokens, temperature=text_temperature, seed=seed))


def _stdin_lines() -> list[str]:
    import sys

    if sys.stdin.isatty():
        typer.echo("one question per line; Ctrl-D ends", err=True)
    return [line.strip() for line in sys.stdin if line.strip()]

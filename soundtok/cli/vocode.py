"""``soundtok vocode``: audio -> soundtok's log-mel -> a vocoder -> audio, to hear what a vocoder keeps."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from tqdm import tqdm

from soundtok.cli.tokens import Force, _outputs, _refuse_existing


def register(app: typer.Typer) -> None:
    app.command("vocode")(vocode)


def vocode(
    inputs: Annotated[list[Path], typer.Argument(help="audio files")],
    output: Annotated[Path, typer.Option("-o", "--output", help="an audio file (one input) or a folder")],
    vocoder: Annotated[
        str, typer.Option("-v", "--vocoder", help="vocoder-16k, griffin-lim, or a vocoder checkpoint folder")
    ] = "vocoder-16k",
    force: Force = False,
) -> None:
    """Resynthesise audio from its log-mel (the mel every mel-domain tokenizer of soundtok decodes through)."""
    import torch

    from soundtok.audio.io import load_audio, save_audio
    from soundtok.audio.mel import log_mel
    from soundtok.vocoder import load_vocoder

    model = load_vocoder(vocoder)
    mel_config = model.mel_config
    outs = _outputs(inputs, output, ".wav")
    _refuse_existing(outs, force)
    for src, dst in tqdm(list(zip(inputs, outs, strict=True)), desc="vocode", unit="file", disable=len(inputs) < 2):
        wav, _ = load_audio(src, sample_rate=mel_config.sample_rate, channels=1)  # [1, T]
        length = wav.shape[-1]
        padded = torch.nn.functional.pad(wav, (0, -length % mel_config.hop_length))  # a whole number of hops
        rebuilt = model.synthesize(log_mel(padded, mel_config))[0, :, :length]  # [1, T]
        save_audio(dst, rebuilt, mel_config.sample_rate, force=force)
        typer.echo(f"{src} -> {dst} ({length / mel_config.sample_rate:.2f} s through {vocoder})")

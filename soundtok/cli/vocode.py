"""``soundtok vocode``: audio -> soundtok's log-mel -> a vocoder -> audio, to hear what a vocoder keeps."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from soundtok.cli.batch import Force, Job, Notices, SkipExisting, note, plan, run_jobs


def register(app: typer.Typer) -> None:
    app.command("vocode")(vocode)


def vocode(
    inputs: Annotated[list[Path], typer.Argument(help="audio files or folders of them")],
    output: Annotated[Path, typer.Option("-o", "--output", help="an audio file (one input) or a folder")],
    vocoder: Annotated[
        str, typer.Option("-v", "--vocoder", help="vocoder-16k, griffin-lim, or a vocoder checkpoint folder")
    ] = "vocoder-16k",
    force: Force = False,
    skip_existing: SkipExisting = False,
) -> None:
    """Resynthesise audio from its log-mel (the mel every mel-domain tokenizer of soundtok decodes through)."""
    import torch

    from soundtok.audio.io import (
        AUDIO_SUFFIXES,
        conversion_notice,
        convert_channels,
        level_notice,
        load_audio,
        resample,
        rms,
        save_audio,
    )
    from soundtok.audio.mel import log_mel
    from soundtok.vocoder import load_vocoder

    jobs = plan(inputs, output, find=AUDIO_SUFFIXES, suffix=".wav", what="audio files")
    model = load_vocoder(vocoder)
    mel_config = model.mel_config
    notices = Notices()

    def one(job: Job) -> str:
        wav, sr = load_audio(job.source)  # [C, T]
        change = conversion_notice(sr, wav.shape[0], mel_config.sample_rate, 1)
        if change:
            notices.once(change, f"{job.source.name}: {change} for {vocoder} (said once for all such inputs)")
        wav = resample(convert_channels(wav, 1), sr, mel_config.sample_rate)  # [1, T]
        length = wav.shape[-1]
        padded = torch.nn.functional.pad(wav, (0, -length % mel_config.hop_length))  # a whole number of hops
        rebuilt = model.synthesize(log_mel(padded, mel_config))[0, :, :length]  # [1, T]
        level = level_notice(rebuilt, rms(wav))
        save_audio(job.output, rebuilt, mel_config.sample_rate, force=force)
        if level:
            note(f"{job.output}: {level}")
        return f"{job.source} -> {job.output} ({length / mel_config.sample_rate:.2f} s through {vocoder})"

    run_jobs(jobs, one, desc="vocode", force=force, skip_existing=skip_existing)

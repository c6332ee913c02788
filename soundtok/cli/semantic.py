"""``soundtok fit-semantic``: a semantic tokenizer (k-means over encoder layers) fitted on a corpus."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, cast

import typer

from soundtok.cli.batch import Force
from soundtok.errors import CorpusError, OutputExistsError


def register(app: typer.Typer) -> None:
    app.command("fit-semantic")(fit_semantic)


def fit_semantic(
    output: Annotated[Path, typer.Option("-o", "--output", help="the tokenizer checkpoint folder to write")],
    manifest: Annotated[
        Path | None,
        typer.Option("-m", "--manifest", help="a manifest JSONL (soundtok manifest); default: the shared corpus"),
    ] = None,
    encoder: Annotated[str, typer.Option(help="whisper-base, whisper-tiny.en, or a HuBERT/wav2vec2/WavLM folder")] = (
        "whisper-base"
    ),
    layers: Annotated[list[int], typer.Option("--layer", help="encoder layer(s) to quantize, one level each")] = [6],  # noqa: B006
    clusters: Annotated[int, typer.Option(help="k-means clusters per layer")] = 1000,
    window_seconds: Annotated[
        float, typer.Option(help="Whisper only: pad clips to a multiple of this (30 = Whisper's own padding)")
    ] = 1.0,
    split: Annotated[str, typer.Option(help="fit on the items of this split ('' for a manifest without splits)")] = (
        "train"
    ),
    features: Annotated[
        Path | None, typer.Option(help="feature store folder (computed once, reused); default OUTPUT.features")
    ] = None,
    passes: Annotated[int, typer.Option(help="k-means passes over the features")] = 4,
    seed: int = 0,
    force: Force = False,
) -> None:
    """Extract encoder features of a corpus once, fit k-means per layer on one split, and write a ``semantic``
    tokenizer checkpoint. Its resynthesis decoder is untrained: train it with ``soundtok train
    configs/semantic-whisper-base-1000.yaml RUN init_weights=OUTPUT/model.safetensors`` (and matching ``model.*``)."""
    import torch

    from soundtok.checkpoint import Checkpointable, save_checkpoint
    from soundtok.corpus.loaders import load_shared_corpus
    from soundtok.corpus.manifest import Manifest
    from soundtok.encoders import load_encoder
    from soundtok.encoders.store import extract_features
    from soundtok.tokenizers.semantic import SemanticConfig, SemanticTokenizer, fit_centroids

    if (output / "config.json").exists() and not force:
        raise OutputExistsError(f"{output} already holds a checkpoint; pass --force to overwrite it")
    corpus = Manifest.from_jsonl(manifest) if manifest is not None else load_shared_corpus()
    ids = [item.id for item in corpus if item.split == split]
    if not ids:
        splits = sorted({item.split for item in corpus})
        raise CorpusError(f"no item of split {split!r} to fit on; the manifest's splits are {splits}")
    whisper = encoder.startswith("whisper-")
    options = {"window_seconds": window_seconds} if whisper else {}
    model = load_encoder(encoder, layers=layers, **options)
    store = extract_features(model, corpus, features or output.with_name(output.name + ".features"), layers=layers)
    centroids = []
    for layer in model.resolve_layers(layers):
        result = fit_centroids(store, layer, clusters, ids=ids, passes=passes, seed=seed, progress=True)
        used = int((result.counts > 0).sum())
        typer.echo(f"layer {layer}: {clusters} clusters, {used} used, mean squared distance {result.inertia:.3f}")
        centroids.append(result.centroids)
    config = SemanticConfig(
        encoder=encoder,
        window_seconds=window_seconds if whisper else None,
        layers=tuple(layers),
        feature_dim=model.dim,
        unit_hop=round(model.sample_rate / model.frame_rate),
        num_clusters=clusters,
    )
    tok = SemanticTokenizer(config, name=output.name, encoder=model)
    tok.set_centroids(torch.stack(centroids))  # [L, K, D]
    save_checkpoint(cast("Checkpointable", tok), output, force=force)  # float32: the centroids as fitted
    typer.echo(
        f"wrote {output}: {tok.token_rate:g} tokens/s, {tok.bitrate:.0f} bit/s; fitted on {len(ids)} items of "
        f"split {split!r} (the resynthesis decoder is untrained)"
    )

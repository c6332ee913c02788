"""Corpora: manifests of labelled audio files, loaders for common layouts, length bucketing, and tokenization.

``soundtok.corpus.tokenize`` (data-parallel, resumable tokenization) and ``soundtok.corpus.lhotse_io`` are
imported on demand.
"""

from soundtok.corpus.loaders import (
    load_esc50,
    load_fsdd,
    load_librispeech,
    load_pocketsphinx_testdata,
    load_ravdess,
    load_shared_corpus,
)
from soundtok.corpus.manifest import AudioItem, Manifest
from soundtok.corpus.sampler import BucketBatchSampler

__all__ = [
    "AudioItem",
    "BucketBatchSampler",
    "Manifest",
    "load_esc50",
    "load_fsdd",
    "load_librispeech",
    "load_pocketsphinx_testdata",
    "load_ravdess",
    "load_shared_corpus",
]

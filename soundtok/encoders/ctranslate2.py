"""A reader for CTranslate2's ``model.bin``, enough to take the weights out of a converted model without
CTranslate2 itself.

The layout (CTranslate2's binary format version 6, little-endian; ``string`` = u16 byte length including a
trailing NUL, then the bytes):

- ``u32`` format version, ``string`` spec name (``WhisperSpec``), ``u32`` spec revision, ``u32`` variable count;
- per variable: ``string`` name, ``u8`` rank, ``u32`` x rank dimensions, ``u8`` dtype (0 f32, 1 i8, 2 i16,
  3 i32, 4 f16, 5 bf16), ``u32`` byte count, the raw data;
- ``u32`` alias count, then per alias ``string`` alias, ``string`` target (e.g. ``decoder/projection/weight`` ->
  ``decoder/embeddings/weight``, the tied output projection).

Names are paths such as ``encoder/layer_0/self_attention/linear_0/weight``; scalars (``encoder/num_heads``) have
rank 0.

>>> import io, struct
>>> def s(text): b = text.encode() + b"\\0"; return struct.pack("<H", len(b)) + b
>>> blob = (struct.pack("<I", 6) + s("Spec") + struct.pack("<II", 1, 1) + s("w") + struct.pack("<BIBI", 1, 2, 0, 8)
...         + struct.pack("<2f", 1.0, 2.0) + struct.pack("<I", 0))
>>> model = read_ctranslate2(blob)
>>> model.spec, model.variables["w"].tolist()
('Spec', [1.0, 2.0])
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from soundtok.errors import CheckpointError

#: the binary format versions this reader understands
SUPPORTED_VERSIONS = (6,)

#: CTranslate2 dtype id -> numpy dtype (bf16 is read as raw u16 and widened in :func:`_to_numpy`)
_DTYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
    5: np.dtype("<u2"),
}


@dataclass
class CTranslate2Model:
    """The content of a ``model.bin``: spec name and revision, variables by name, aliases (alias -> target)."""

    spec: str
    revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str] = field(default_factory=dict)

    def scalar(self, name: str) -> int:
        """An integer scalar such as ``encoder/num_heads``."""
        return int(self.variables[name].reshape(()))


class _Reader:
    def __init__(self, data: bytes | memoryview, source: str) -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.source = source

    def take(self, size: int) -> memoryview:
        if self.pos + size > len(self.data):
            raise CheckpointError(
                f"{self.source}: CTranslate2 model.bin is truncated (wanted {size} bytes at offset {self.pos}, "
                f"the file has {len(self.data)}); reinstall the package that ships it"
            )
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def unpack(self, fmt: str) -> tuple[int, ...]:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))

    def string(self) -> str:
        (size,) = self.unpack("H")
        return bytes(self.take(size)).rstrip(b"\0").decode("utf-8")


def read_ctranslate2(data: bytes | memoryview, source: str = "model.bin") -> CTranslate2Model:
    """Parse a whole ``model.bin`` held in memory. Arrays are copies (they do not keep ``data`` alive).

    Raises :class:`CheckpointError` for a truncated file, an unknown format version or dtype, or trailing bytes.
    """
    reader = _Reader(data, source)
    (version,) = reader.unpack("I")
    if version not in SUPPORTED_VERSIONS:
        raise CheckpointError(
            f"{source}: CTranslate2 binary format version {version} is not supported (this reader knows "
            f"{SUPPORTED_VERSIONS}); is this a CTranslate2 model.bin?"
        )
    spec = reader.string()
    (revision,) = reader.unpack("I")
    (count,) = reader.unpack("I")
    variables: dict[str, np.ndarray] = {}
    for _ in range(count):
        name = reader.string()
        (rank,) = reader.unpack("B")
        shape = reader.unpack("I" * rank)
        (dtype_id,) = reader.unpack("B")
        (nbytes,) = reader.unpack("I")
        if dtype_id not in _DTYPES:
            raise CheckpointError(f"{source}: variable {name!r} has unknown CTranslate2 dtype id {dtype_id}")
        dtype = _DTYPES[dtype_id]
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if nbytes != expected:
            raise CheckpointError(
                f"{source}: variable {name!r} holds {nbytes} bytes, expected {expected} for shape {shape}"
            )
        array = np.frombuffer(reader.take(nbytes), dtype=dtype).reshape(shape).copy()
        variables[name] = _to_numpy(array, dtype_id)
    (num_aliases,) = reader.unpack("I")
    aliases = {}
    for _ in range(num_aliases):
        alias = reader.string()
        aliases[alias] = reader.string()
    if reader.pos != len(reader.data):
        raise CheckpointError(
            f"{source}: {len(reader.data) - reader.pos} unexpected bytes after the last alias; the file is corrupt"
        )
    return CTranslate2Model(spec=spec, revision=revision, variables=variables, aliases=aliases)


def _to_numpy(array: np.ndarray, dtype_id: int) -> np.ndarray:
    if dtype_id == 5:  # bfloat16: the high half of a float32
        return (array.astype(np.uint32) << 16).view(np.float32)
    return array

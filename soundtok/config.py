"""Frozen, validated config dataclasses that round-trip through JSON.

:meth:`Config.from_dict` is the one gate between a JSON file and a config: it checks every value against its
field's annotation (``int``, ``float``, ``bool``, ``str``, ``X | None``, ``tuple[int, ...]``, ``dict``, a nested config)
before the dataclass sees it, refuses non-finite numbers and integers beyond :data:`MAX_INT`, so a family's
``__post_init__`` only ever validates meaning, never type.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from typing import Any, TypeVar

C = TypeVar("C", bound="Config")

#: the largest magnitude a number from JSON may have (exact in a double); more is a corrupt or hostile file
MAX_INT = 1 << 53


def check_value(value: Any, hint: Any, where: str) -> Any:
    """``value`` from JSON, checked against the annotation ``hint`` and converted (lists -> tuples, nested
    configs built); raises ValueError naming ``where`` and what was expected."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        for option in args:
            try:
                return check_value(value, option, where)
            except ValueError:
                pass
        raise ValueError(f"{where}: expected {_describe(hint)}, got {value!r:.80}")
    if hint is type(None):
        if value is not None:
            raise ValueError(f"{where}: expected null, got {value!r:.80}")
        return None
    if origin is dict:  # free-form (e.g. a token file's metadata): only its type is checked here
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected an object, got {type(value).__name__}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {type(value).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(check_value(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ValueError(f"{where}: expected a list of {len(args)}, got {len(value)}")
        return tuple(check_value(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if isinstance(hint, type) and issubclass(hint, Config):
        if isinstance(value, hint):
            return value
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected an object ({hint.__name__}), got {type(value).__name__}")
        return hint.from_dict(value, where=where)
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where}: expected true or false, got {value!r:.80}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where}: expected an integer, got {value!r:.80}")
        if abs(value) > MAX_INT:
            raise ValueError(f"{where}: a {value.bit_length()}-bit integer is out of range (|value| <= 2**53)")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where}: expected a number, got {value!r:.80}")
        if abs(value) > MAX_INT or not math.isfinite(value):  # in this order: a huge int does not fit a float
            shown = f"a {value.bit_length()}-bit integer" if isinstance(value, int) else repr(value)
            raise ValueError(f"{where}: {shown} is not a finite number of magnitude <= 2**53")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"{where}: expected a string, got {type(value).__name__}")
        return value
    return _from_json_value(value)  # an annotation this gate does not know: the dataclass validates it


def _describe(hint: Any) -> str:
    return " or ".join(getattr(a, "__name__", str(a)) for a in typing.get_args(hint)) or str(hint)


def _to_json_value(value: Any) -> Any:
    if isinstance(value, Config):
        return value.to_dict()
    if isinstance(value, tuple):
        return [_to_json_value(v) for v in value]
    return value


def _from_json_value(value: Any) -> Any:
    # JSON has no tuples; configs use tuples so they stay hashable and immutable.
    if isinstance(value, list):
        return tuple(_from_json_value(v) for v in value)
    return value


@dataclasses.dataclass(frozen=True)
class Config:
    """Base of every config. Subclasses are ``@dataclass(frozen=True)`` and validate in ``__post_init__``."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _to_json_value(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any], where: str = "") -> C:
        """Build from a JSON dict, type-checked field by field (:func:`check_value`); unknown keys are an error
        (they usually mean a version mismatch)."""
        if not isinstance(data, dict):
            raise ValueError(f"{where or cls.__name__}: expected an object, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"{cls.__name__} has no field(s) {unknown}; known fields: {sorted(names)}")
        hints = typing.get_type_hints(cls)
        prefix = f"{where}." if where else ""
        values = {key: check_value(value, hints[key], prefix + key) for key, value in data.items()}
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def digest(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()

"""Frozen, validated config dataclasses that round-trip through JSON."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from typing import Any, TypeVar

C = TypeVar("C", bound="Config")


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
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        """Build from a JSON dict; unknown keys are an error (they usually mean a version mismatch)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"{cls.__name__} has no field(s) {unknown}; known fields: {sorted(names)}")
        hints = typing.get_type_hints(cls)
        values = {}
        for key, value in data.items():
            hint = hints.get(key)
            if isinstance(hint, type) and issubclass(hint, Config) and isinstance(value, dict):
                values[key] = hint.from_dict(value)  # a nested config, e.g. a vocoder's MelConfig
            else:
                values[key] = _from_json_value(value)
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def digest(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()

"""Settings dataclasses from plain mappings (YAML, JSON), with one error for unknown keys."""

from __future__ import annotations

from dataclasses import fields
from typing import TypeVar

from motionrefine.core.errors import MotionRefineError

T = TypeVar("T")


def from_mapping(cls: type[T], d: dict | None, what: str) -> T:
    """``cls(**d)``, refusing keys that are not fields of ``cls`` in one error naming them all.

    ``what`` names the settings in that error ("unknown {what} keys: [...]")."""
    d = dict(d or {})
    unknown = set(d) - {f.name for f in fields(cls)}
    if unknown:
        raise MotionRefineError(f"unknown {what} keys: {sorted(unknown)}")
    return cls(**d)

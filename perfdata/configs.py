"""Frozen config dataclasses built from JSON objects: unknown fields and bad values are ConfigErrors."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from perfdata.errors import ConfigError

T = TypeVar("T")


def from_fields(cls: type[T], data: dict[str, Any], source: str, what: str) -> T:
    """cls(**data), refusing fields cls does not have; `what` names the config in the message
    ("{source}: unknown {what} field(s) ...")."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{source}: unknown {what} field(s) {', '.join(unknown)}")
    try:
        return cls(**data)
    except TypeError as exc:
        raise ConfigError(f"{source}: {exc}") from None

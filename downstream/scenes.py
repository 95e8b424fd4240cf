"""Choosing scenes for training: `--scenes` takes scene ids or shell-style globs (fnmatch: `room_*`, `obj_00[0-4]*`)."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from perfdata.errors import ConfigError


def select_scene_ids(ids: Sequence[str], patterns: Sequence[str], where: str = "") -> list[str]:
    """The ids (in their order) matching any pattern; no patterns keeps all. A pattern matching none of the
    ids is a ConfigError (a typo must not silently train on nothing)."""
    if not patterns:
        return list(ids)
    unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(i, p) for i in ids)]
    if unmatched:
        shown = ", ".join(list(ids)[:8]) + (" ..." if len(ids) > 8 else "")
        raise ConfigError(f"--scenes {', '.join(unmatched)} matches no scene{' of ' + where if where else ''} "
                          f"(scenes: {shown or 'none'})")
    return [i for i in ids if any(fnmatch.fnmatchcase(i, p) for p in patterns)]

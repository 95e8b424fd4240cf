"""The one safe-name rule for scene ids (DESIGN.md sections 3 and 8).

Scene ids come from the data itself (folder names, CO3D `sequence_name`s, mirror listings): they are untrusted.
Every reader's ids pass `check_scene_id` where they are yielded, and every stage that turns an id into a path
(fit folders, store groups, label, render folders, shard keys) goes through `scene_path`, which checks again and
refuses a result outside its root. A safe id is a non-empty string of at most `MAX_ID_BYTES` UTF-8 bytes with

- no path separator (`/`, `\\`), no `:` (so never absolute, nor a Windows drive), and none of `# ? %` (which
  would change a store URL) nor `* < > | "` (which Windows and shells treat specially),
- no NUL or other control character,
- no leading `.` (so neither `.` nor `..`, nor the hidden / temporary names readers skip).
"""

from __future__ import annotations

import os
from pathlib import Path

from perfdata.errors import UnsafePathError

MAX_ID_BYTES = 200
"""Longest id in UTF-8 bytes: a temporary sibling (`.<id>.<16 hex>.tmp`) still fits NAME_MAX (255)."""

_FORBIDDEN = frozenset('/\\:#?%*<>|"')


def scene_id_problem(scene_id: object) -> str | None:
    """Why `scene_id` is not a safe id, or None when it is."""
    if not isinstance(scene_id, str) or not scene_id:
        return "is empty or not a string"
    if len(scene_id.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
        return f"is longer than {MAX_ID_BYTES} bytes"
    if any(c in _FORBIDDEN for c in scene_id):
        return "holds a path separator or a character that paths and URLs treat specially (/ \\ : # ? % * < > | \")"
    if any(ord(c) < 32 or ord(c) == 127 for c in scene_id):
        return "holds a NUL or another control character"
    if scene_id.startswith("."):
        return "starts with '.' (hidden, temporary, '.' or '..')"
    return None


def check_scene_id(scene_id: object, origin: str | Path | None = None) -> str:
    """Return `scene_id` when it is safe (module doc); else UnsafePathError naming `origin` (the file or folder
    the id came from)."""
    problem = scene_id_problem(scene_id)
    if problem is not None:
        raise UnsafePathError(origin, f"scene id {scene_id!r} {problem}; refusing to use it as a name")
    return str(scene_id)


def scene_path(root: str | Path, scene_id: str, origin: str | Path | None = None) -> Path:
    """`root / scene_id` after `check_scene_id`, also refusing a result that resolves outside `root` (a symlink
    planted under that name)."""
    check_scene_id(scene_id, origin if origin is not None else root)
    root = Path(root)
    target = root / scene_id
    real_root = os.path.realpath(root)
    if os.path.commonpath([real_root, os.path.realpath(target)]) != real_root:
        raise UnsafePathError(target, f"scene folder resolves outside {root}")
    return target

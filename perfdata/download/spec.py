"""Chunk SPEC parsing: `77`, `[11,22,33]`, `"[11, 22, 33]"`, `11,22,33`, `10-20` (inclusive), `all`."""

from __future__ import annotations

import re

from perfdata.errors import ConfigError

_RANGE_RE = re.compile(r"^(\d+)\s*-\s*(\d+)$")


def parse_chunk_spec(spec: str, n_chunks: int, dataset: str = "dataset") -> tuple[int, ...]:
    """Chunk ids named by `spec`, sorted and unique; ConfigError for a malformed SPEC or an id out of range.

    Forms may be mixed inside a list: `[0-3, 7]`. Quotes and brackets around the whole SPEC are ignored.
    """
    text = spec.strip().strip("\"'").strip()
    if text.lower() == "all":
        return tuple(range(n_chunks))
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or any(not p for p in parts):
        raise ConfigError(f"chunk SPEC {spec!r} is empty or has an empty item; e.g. 77, 11,22,33, 10-20, all")
    ids: set[int] = set()
    for part in parts:
        ids.update(_parse_part(part, spec))
    bad = sorted(i for i in ids if i >= n_chunks)
    if bad:
        raise ConfigError(f"chunk {bad[0]} is out of range for {dataset}: chunks are 0-{n_chunks - 1} (SPEC {spec!r})")
    return tuple(sorted(ids))


def _parse_part(part: str, spec: str) -> range:
    if part.isdigit():
        return range(int(part), int(part) + 1)
    match = _RANGE_RE.match(part)
    if match is None:
        raise ConfigError(
            f"chunk SPEC {spec!r}: {part!r} is not a chunk number or range; use 77, [11,22,33], 11,22,33, 10-20 or all"
        )
    first, last = int(match.group(1)), int(match.group(2))
    if first > last:
        raise ConfigError(f"chunk SPEC {spec!r}: range {part!r} runs backwards")
    return range(first, last + 1)

"""Chunk SPEC forms and their errors."""

from __future__ import annotations

import pytest

from perfdata.download.spec import parse_chunk_spec
from perfdata.errors import ConfigError


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("77", (77,)),
        ("[11,22,33]", (11, 22, 33)),
        ('"[11, 22, 33]"', (11, 22, 33)),
        ("11,22,33", (11, 22, 33)),
        ("33, 11 ,22,11", (11, 22, 33)),
        ("10-20", tuple(range(10, 21))),
        ("[0-2, 98-99]", (0, 1, 2, 98, 99)),
        ("07", (7,)),
        ("all", tuple(range(100))),
        (" ALL ", tuple(range(100))),
    ],
)
def test_spec_forms(spec: str, expected: tuple[int, ...]) -> None:
    assert parse_chunk_spec(spec, 100) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("100", "chunk 100 is out of range for co3d: chunks are 0-99"),
        ("99-100", "chunk 100 is out of range"),
        ("abc", "'abc' is not a chunk number"),
        ("-1", "'-1' is not a chunk number"),
        ("20-10", "runs backwards"),
        ("", "empty"),
        ("[]", "empty"),
        ("1,,2", "empty item"),
        ("1.5", "'1.5' is not a chunk number"),
    ],
)
def test_bad_specs(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_chunk_spec(spec, 100, "co3d")

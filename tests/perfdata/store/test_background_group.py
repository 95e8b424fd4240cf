"""The store's background group: PeRFception's released bytes decode into svox2's dense texels, our own
quantisation round-trips within half a step, bad groups are named."""

from __future__ import annotations

import numpy as np
import pytest

from perfdata.errors import InputError
from perfdata.store import background


def test_released_bytes_with_pruned_texels_decode_dense() -> None:
    rng = np.random.default_rng(1)
    data = rng.integers(0, 256, (31, 3, 4), dtype=np.uint8)
    links = np.full(32, -1, np.int32)
    links[1:] = np.arange(31)
    links = links.reshape(8, 4)
    bg = background.from_released(data, links, np.array([[-1.0, -1.0, -1.0, 0.0]]), np.full((1, 4), 0.01), "ckpt")
    dense = background.decode(bg.data, bg.links, background.check_attrs(bg.attrs, "g"), "g")
    assert dense.shape == (8, 4, 3, 4) and not dense[0, 0].any()  # the pruned texel: nothing
    np.testing.assert_allclose(dense[0, 1], data[0] * 0.01 + np.array([-1, -1, -1, 0]), atol=1e-6)
    with pytest.raises(InputError, match="point past the 30 rows"):
        background.from_released(data[:30], links, np.zeros(4), np.ones(4), "ckpt")


def test_own_quantisation_round_trips_within_half_a_step() -> None:
    msi = np.random.default_rng(2).normal(size=(8, 4, 3, 4)).astype(np.float32)
    bg = background.quantise(msi, np.ones(3))
    back = background.decode(bg.data, bg.links, bg.attrs, "g")
    step = (msi.max(axis=(0, 1)) - msi.min(axis=(0, 1))) / 255.0
    assert np.all(np.abs(back - msi) <= step / 2 + 1e-6)
    with pytest.raises(InputError, match="kind 'mpi' is not known"):
        background.check_attrs({**bg.attrs, "kind": "mpi"}, "g")

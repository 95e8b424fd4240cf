"""Contact sheets and colour maps."""

from __future__ import annotations

import numpy as np
import pytest

from perfdata.contact import colorize_depth, colorize_labels, contact_sheet, label_palette, turbo


def test_turbo_ramp_ends_and_clipping():
    ends = turbo(np.array([0.0, 1.0, -3.0, 7.0]))
    np.testing.assert_allclose(ends[0], [0.19, 0.07, 0.23], atol=1e-6)
    np.testing.assert_allclose(ends[1], [0.48, 0.02, 0.01], atol=1e-6)
    np.testing.assert_array_equal(ends[2], ends[0])  # clipped
    assert turbo(np.array(0.5)).shape == (3,)


def test_colorize_depth_marks_unknown_black_and_orders_near_far():
    depth = np.array([[0.0, 1.0], [2.0, 3.0]], np.float32)
    rgb = colorize_depth(depth, lo=1.0, hi=3.0)
    np.testing.assert_array_equal(rgb[0, 0], 0.0)
    np.testing.assert_allclose(rgb[0, 1], turbo(np.array(0.0)))
    np.testing.assert_allclose(rgb[1, 1], turbo(np.array(1.0)))
    assert not colorize_depth(np.zeros((3, 3))).any()


def test_label_colours_are_distinct_and_ignore_is_black():
    palette = label_palette(20)
    assert len({tuple(np.round(c, 3)) for c in palette}) == 20
    rgb = colorize_labels(np.array([[-1, 0], [3, 1]]), n_classes=4)
    np.testing.assert_array_equal(rgb[0, 0], 0.0)
    np.testing.assert_allclose(rgb[1, 0], label_palette(4)[3])


def test_contact_sheet_size_and_tile_positions():
    a = np.zeros((4, 5, 3))
    b = np.ones((4, 5, 3))
    sheet = contact_sheet([[a, b, a], [b]], pad=1, fill=0.5)
    assert sheet.shape == (2 * 4 + 3, 3 * 5 + 4, 3) and sheet.dtype == np.uint8
    assert (sheet[1:5, 7:12] == 255).all() and (sheet[1:5, 1:6] == 0).all()  # row 0: tiles a, b
    assert (sheet[6:10, 1:6] == 255).all() and (sheet[6:10, 7:12] == 128).all()  # row 1: b, then gutter
    with pytest.raises(ValueError, match="expected"):
        contact_sheet([[a, np.zeros((3, 5, 3))]])
    with pytest.raises(ValueError, match="at least one"):
        contact_sheet([])

"""Pictures drawn with matplotlib: real PNG files of the expected size, with ink where the data is."""

from __future__ import annotations

import math
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from perfdata.downstream import plot


def test_curves_confusion_and_grid(tmp_path: Path) -> None:
    plot.write_curves(tmp_path / "c.png", [1.0, 0.5, 0.25], [0.4, 0.7, 0.9], [0.3, math.nan, 0.8], "accuracy",
                      {"source": [math.nan, math.nan, 0.7]})
    curve = iio.imread(tmp_path / "c.png")
    assert curve.shape[:2] == (340, 900) and (curve[..., :3] < 128).any()
    conf = np.array([[5, 1], [0, 4]])
    plot.write_confusion(tmp_path / "m.png", conf, ["box", "sphere"])
    m = iio.imread(tmp_path / "m.png")[..., :3].astype(int)
    assert m.shape[0] > 200 and (np.abs(m[..., 2] - m[..., 0]) > 60).any()  # blue cells
    imgs = [np.full((8, 8, 3), v, np.float32) for v in (0.0, 0.5, 1.0)]
    plot.write_sample_grid(tmp_path / "g.png", imgs, ["a -> b", "b -> a", "c -> a"], columns=2)
    plot.write_sample_grid(tmp_path / "e.png", [], [])
    assert iio.imread(tmp_path / "g.png").shape[1] > iio.imread(tmp_path / "e.png").shape[1]
    assert not list(tmp_path.glob(".*tmp*"))

"""Pictures of a training run, drawn with matplotlib (Agg, no pyplot state) and written as PNG atomically.

    write_curves(path, epochs)               training curves: loss (left); train / val metric (right)
    write_confusion(path, conf, classes)     confusion matrix (rows truth, columns prediction), counts annotated
    write_sample_grid(path, images, titles)  a grid of images with a title each (cls2d: misclassified val views)

Every function builds its own `matplotlib.figure.Figure`, so concurrent runs never share a global figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from perfdata.atomic import atomic_path


def _figure(width: float, height: float):  # noqa: ANN202 - matplotlib types stay lazy
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(fig, path: str | Path) -> None:  # noqa: ANN001
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def write_curves(path: str | Path, train_loss: Sequence[float], train_metric: Sequence[float],
                 val_metric: Sequence[float], metric: str, extra: dict[str, Sequence[float]] | None = None) -> None:
    """Two panels over epochs 1..n: train loss; train and val `metric` (and any `extra` series) in [0, 1].

    Series are per epoch; nan values leave gaps.
    """
    fig = _figure(9.0, 3.4)
    ax_loss, ax_metric = fig.subplots(1, 2)
    epochs = np.arange(1, len(train_loss) + 1)
    ax_loss.plot(epochs, train_loss, marker="o", color="tab:blue", label="train loss")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="training loss")
    ax_loss.set_ylim(bottom=0.0)
    ax_metric.plot(epochs, train_metric, marker="o", color="tab:green", label=f"train {metric}")
    ax_metric.plot(epochs, val_metric, marker="s", color="tab:orange", label=f"val {metric}")
    for (name, values), colour in zip((extra or {}).items(), ("tab:purple", "tab:red", "tab:brown"), strict=False):
        ax_metric.plot(epochs, values, marker="^", color=colour, label=name)
    ax_metric.set(xlabel="epoch", ylabel=metric, title=metric, ylim=(0.0, 1.02))
    for ax in (ax_loss, ax_metric):
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True)
    _save(fig, path)


def write_confusion(path: str | Path, conf: np.ndarray, classes: Sequence[str], title: str = "val confusion") -> None:
    """A (C, C) confusion matrix (rows truth, columns prediction) as an image, rows normalised for the colour
    and the raw counts written in each cell."""
    conf = np.asarray(conf, dtype=np.int64)
    assert conf.ndim == 2 and conf.shape == (len(classes), len(classes)), (
        f"confusion {conf.shape} does not match {len(classes)} classes")
    n = len(classes)
    side = min(2.0 + 0.55 * n, 14.0)
    fig = _figure(side + 1.0, side)
    ax = fig.subplots()
    rows = conf.sum(axis=1, keepdims=True)
    frac = np.divide(conf, rows, out=np.zeros(conf.shape, np.float64), where=rows > 0)
    im = ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, label="fraction of the true class")
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="true", title=title)
    ax.set_xticklabels(classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticklabels(classes, fontsize=8)
    if n <= 30:
        for t in range(n):
            for p in range(n):
                ax.text(p, t, str(conf[t, p]), ha="center", va="center", fontsize=7,
                        color="white" if frac[t, p] > 0.5 else "black")
    _save(fig, path)


def write_sample_grid(path: str | Path, images: Sequence[np.ndarray], titles: Sequence[str], columns: int = 8,
                      title: str = "") -> None:
    """Images (H, W, 3) float in [0, 1] or uint8, each with a short title, in a grid of `columns`; an empty
    list gives a picture that says so."""
    assert len(images) == len(titles), f"{len(images)} images but {len(titles)} titles"
    cols = max(1, min(columns, len(images)))
    rows = max(1, -(-len(images) // cols))
    fig = _figure(1.6 * cols + 0.4, 1.7 * rows + 0.5)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax in axes:
        ax.set_axis_off()
    for ax, img, name in zip(axes, images, titles, strict=False):
        ax.imshow(np.asarray(img), interpolation="nearest")
        ax.set_title(name, fontsize=7)
    if not images:
        axes[0].text(0.5, 0.5, "none", ha="center", va="center")
    if title:
        fig.suptitle(title, fontsize=9)
    _save(fig, path)

"""Classification and segmentation metrics, pure torch: accuracy, confusion matrix, per-class IoU, mIoU.

Predictions and targets are integer class ids of the same shape (any shape); targets equal to `ignore_index`
are left out everywhere. Rows of a confusion matrix are the truth, columns the prediction.
"""

from __future__ import annotations

import torch


def accuracy(pred: torch.Tensor, target: torch.Tensor, ignore_index: int | None = None) -> float:
    """Fraction of non-ignored targets predicted right (nan when none counts). pred, target: same shape."""
    assert pred.shape == target.shape, f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ"
    keep = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
    n = int(keep.sum())
    return float("nan") if n == 0 else float((pred[keep] == target[keep]).sum()) / n


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, n_classes: int,
                     ignore_index: int | None = None) -> torch.Tensor:
    """(n_classes, n_classes) int64 counts: [t, p] = elements of truth t predicted p.

    pred, target: same shape, int. Ignored targets are skipped; any other target or prediction outside
    [0, n_classes) is an error.
    """
    assert pred.shape == target.shape, f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ"
    p, t = pred.reshape(-1).long(), target.reshape(-1).long()
    if ignore_index is not None:
        keep = t != ignore_index
        p, t = p[keep], t[keep]
    if len(t) and (min(int(t.min()), int(p.min())) < 0 or max(int(t.max()), int(p.max())) >= n_classes):
        raise ValueError(f"class ids must lie in [0, {n_classes}) (or equal the ignore index)")
    return torch.bincount(t * n_classes + p, minlength=n_classes * n_classes).view(n_classes, n_classes)


def per_class_iou(conf: torch.Tensor) -> torch.Tensor:
    """(C,) float64 IoU = TP / (TP + FP + FN) per class from a (C, C) confusion matrix; nan for a class
    absent from both truth and prediction."""
    assert conf.ndim == 2 and conf.shape[0] == conf.shape[1], f"expected (C, C), got {tuple(conf.shape)}"
    conf = conf.double()
    tp = conf.diag()
    union = conf.sum(dim=0) + conf.sum(dim=1) - tp
    return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))


def mean_iou(conf: torch.Tensor) -> float:
    """Mean of per_class_iou over the classes present (truth or prediction); nan when none is."""
    iou = per_class_iou(conf)
    present = ~torch.isnan(iou)
    return float("nan") if not bool(present.any()) else float(iou[present].mean())


def confusion_accuracy(conf: torch.Tensor) -> float:
    """Overall accuracy from a (C, C) confusion matrix (nan when empty)."""
    total = int(conf.sum())
    return float("nan") if total == 0 else float(conf.diag().sum()) / total

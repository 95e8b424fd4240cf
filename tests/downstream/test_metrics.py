"""Metrics against hand computations."""

from __future__ import annotations

import math

import pytest
import torch
from perfdata.downstream.metrics import (
    accuracy,
    confusion_accuracy,
    confusion_matrix,
    mean_iou,
    per_class_iou,
)


def test_accuracy_with_ignore() -> None:
    pred = torch.tensor([0, 1, 2, 2, 1])
    target = torch.tensor([0, 1, 1, -1, 1])
    assert accuracy(pred, target) == pytest.approx(3 / 5)
    assert accuracy(pred, target, ignore_index=-1) == pytest.approx(3 / 4)  # the ignored one is wrong anyway
    assert math.isnan(accuracy(pred[3:4], target[3:4], ignore_index=-1))


def test_confusion_iou_by_hand() -> None:
    # truth:  0 0 0 1 1 2 255 ; pred: 0 1 0 1 2 2 0
    target = torch.tensor([0, 0, 0, 1, 1, 2, 255])
    pred = torch.tensor([0, 1, 0, 1, 2, 2, 0])
    conf = confusion_matrix(pred, target, 3, ignore_index=255)
    assert conf.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    # class 0: tp 2, fp 0, fn 1 -> 2/3; class 1: tp 1, fp 1, fn 1 -> 1/3; class 2: tp 1, fp 1, fn 0 -> 1/2
    assert per_class_iou(conf).tolist() == pytest.approx([2 / 3, 1 / 3, 1 / 2])
    assert mean_iou(conf) == pytest.approx((2 / 3 + 1 / 3 + 1 / 2) / 3)
    assert confusion_accuracy(conf) == pytest.approx(4 / 6)


def test_absent_class_is_nan_and_left_out_of_miou() -> None:
    conf = confusion_matrix(torch.tensor([0, 0, 1]), torch.tensor([0, 0, 1]), 3)
    iou = per_class_iou(conf)
    assert iou[:2].tolist() == [1.0, 1.0] and math.isnan(float(iou[2]))
    assert mean_iou(conf) == 1.0


def test_out_of_range_class_raises() -> None:
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        confusion_matrix(torch.tensor([0, 2]), torch.tensor([0, 1]), 2)

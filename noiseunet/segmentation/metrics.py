"""Segmentation metrics from one confusion matrix: per-class IoU, mean IoU, Dice, pixel accuracy."""

import torch

from .losses import IGNORE_INDEX


def confusion_matrix(prediction: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """(C, C) counts: row = true class, column = predicted class; ignored pixels are not counted."""
    valid = target != ignore_index
    index = target[valid].long() * num_classes + prediction[valid].long()
    return torch.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def scores(confusion: torch.Tensor) -> dict:
    """Per-class IoU and Dice (NaN for a class that is neither present nor predicted), their means over
    the classes that occur, and pixel accuracy."""
    confusion = confusion.double()
    hits = confusion.diag()
    actual, predicted = confusion.sum(1), confusion.sum(0)
    union = actual + predicted - hits
    iou = torch.where(union > 0, hits / union.clamp_min(1), torch.nan)
    dice = torch.where(actual + predicted > 0, 2 * hits / (actual + predicted).clamp_min(1), torch.nan)
    return {
        "per_class_iou": iou.tolist(),
        "mean_iou": torch.nanmean(iou).item(),
        "per_class_dice": dice.tolist(),
        "dice": torch.nanmean(dice).item(),
        "pixel_accuracy": (hits.sum() / confusion.sum().clamp_min(1)).item(),
    }

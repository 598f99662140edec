"""Segmentation with the same UNet: per-pixel classes, CE / Dice / IoU losses, and their metrics."""

from .losses import ce_dice_loss, cross_entropy, dice_loss, iou_loss
from .metrics import confusion_matrix, scores
from .model import SegmentationUNet

__all__ = ["SegmentationUNet", "cross_entropy", "dice_loss", "iou_loss", "ce_dice_loss", "confusion_matrix", "scores"]

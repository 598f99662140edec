"""Segmentation losses: per-pixel cross-entropy, soft Dice, soft IoU (Jaccard), and CE + Dice.

Logits are (B, C, H, W) for C classes (softmax), or (B, 1, H, W) for a binary task (sigmoid); targets
are (B, H, W) class indices, where ``ignore_index`` marks pixels that count for nothing. Dice and IoU
are computed on probabilities ("soft"), so they are differentiable stand-ins for the metrics of the
same name (Milletari et al. 2016, V-Net; Rahman & Wang 2016), and robust to class imbalance.
"""

import torch
import torch.nn.functional as F

IGNORE_INDEX = 255


def cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
    reduction: str = "mean",
) -> torch.Tensor:
    """-sum_c y_c log p_c at every pixel, vectorised (PyTorch's fused log-softmax + NLL). With class
    ``weight``, "mean" divides by the summed weights of the counted pixels, as PyTorch defines it."""
    if logits.shape[1] == 1:  # binary: a single logit per pixel
        valid = target != ignore_index
        losses = F.binary_cross_entropy_with_logits(logits[:, 0][valid], target[valid].float(), reduction="none")
        if weight is not None:
            losses = losses * weight[target[valid]]
        return losses.sum() if reduction == "sum" else losses.mean()
    return F.cross_entropy(logits, target, weight=weight, ignore_index=ignore_index, reduction=reduction)


def _probabilities_and_onehot(logits: torch.Tensor, target: torch.Tensor, ignore_index: int):
    """(B, C, H, W) probabilities and one-hot targets, both zeroed on ignored pixels."""
    valid = (target != ignore_index).unsqueeze(1)
    labels = target.masked_fill(~valid[:, 0], 0)
    if logits.shape[1] == 1:
        p = torch.sigmoid(logits)
        probs, onehot = torch.cat([1 - p, p], 1), F.one_hot(labels, 2).permute(0, 3, 1, 2)
    else:
        probs, onehot = logits.softmax(1), F.one_hot(labels, logits.shape[1]).permute(0, 3, 1, 2)
    return probs * valid, onehot.to(probs.dtype) * valid


def _overlaps(logits, target, ignore_index):
    probs, onehot = _probabilities_and_onehot(logits, target, ignore_index)
    dims = (0, 2, 3)  # per class, over the batch and all pixels
    return (probs * onehot).sum(dims), probs.sum(dims), onehot.sum(dims)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX, eps: float = 1.0) -> torch.Tensor:
    """1 - mean over classes of (2 |P∩Y| + eps) / (|P| + |Y| + eps); ``eps`` makes an absent class that is
    also not predicted count as perfect instead of 0/0."""
    intersection, predicted, actual = _overlaps(logits, target, ignore_index)
    return 1 - ((2 * intersection + eps) / (predicted + actual + eps)).mean()


def iou_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX, eps: float = 1.0) -> torch.Tensor:
    """1 - mean over classes of (|P∩Y| + eps) / (|P| + |Y| - |P∩Y| + eps) (soft Jaccard)."""
    intersection, predicted, actual = _overlaps(logits, target, ignore_index)
    return 1 - ((intersection + eps) / (predicted + actual - intersection + eps)).mean()


def ce_dice_loss(
    logits: torch.Tensor, target: torch.Tensor, ce_weight: float = 1.0, dice_weight: float = 1.0,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """ce_weight * cross-entropy + dice_weight * Dice: CE gives well-behaved per-pixel gradients from the
    start, Dice keeps small classes from being drowned by the background."""
    return (ce_weight * cross_entropy(logits, target, ignore_index=ignore_index)
            + dice_weight * dice_loss(logits, target, ignore_index))


LOSSES = {
    "ce": cross_entropy,
    "dice": dice_loss,
    "iou": iou_loss,
    "ce+dice": ce_dice_loss,
}

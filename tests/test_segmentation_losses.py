"""Segmentation losses and metrics against direct loops and hand-computed cases."""

import math

import pytest
import torch

from noiseunet.segmentation.losses import IGNORE_INDEX, ce_dice_loss, cross_entropy, dice_loss, iou_loss
from noiseunet.segmentation.metrics import confusion_matrix, scores


def direct_cross_entropy(logits, target, weight=None, ignore_index=IGNORE_INDEX, reduction="mean"):
    """The definition, pixel by pixel: -sum_c y_c log p_c, weighted by the true class's weight."""
    total, weights = 0.0, 0.0
    b, c, h, w = logits.shape
    for n in range(b):
        for i in range(h):
            for j in range(w):
                label = int(target[n, i, j])
                if label == ignore_index:
                    continue
                p = torch.softmax(logits[n, :, i, j].double(), 0)
                y = torch.zeros(c, dtype=torch.double)
                y[label] = 1
                k = 1.0 if weight is None else float(weight[label])
                total += k * float(-(y * p.log()).sum())
                weights += k
    return total / weights if reduction == "mean" else total


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("weighted", [False, True])
def test_vectorised_cross_entropy_equals_the_pixel_loop(reduction, weighted):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 5, 7, generator=g)
    target = torch.randint(0, 4, (2, 5, 7), generator=g)
    target[0, 0, :3] = IGNORE_INDEX
    weight = torch.tensor([0.5, 1.0, 2.0, 3.0]) if weighted else None
    expected = direct_cross_entropy(logits, target, weight, reduction=reduction)
    assert math.isclose(cross_entropy(logits, target, weight, reduction=reduction).item(), expected, rel_tol=1e-5)


def test_binary_cross_entropy_with_a_single_logit():
    logits = torch.tensor([[[[2.0, -1.0]]]])
    target = torch.tensor([[[1, 0]]])
    expected = (-math.log(torch.sigmoid(torch.tensor(2.0))) - math.log(1 - torch.sigmoid(torch.tensor(-1.0)))) / 2
    assert math.isclose(cross_entropy(logits, target).item(), expected, rel_tol=1e-6)


def confident(labels: torch.Tensor, classes: int) -> torch.Tensor:
    """Logits that put (almost) all probability on ``labels``."""
    return torch.nn.functional.one_hot(labels, classes).permute(0, 3, 1, 2).float() * 40 - 20


def test_dice_and_iou_perfect_disjoint_and_ignored():
    target = torch.tensor([[[0, 0, 1, 1]]])
    assert dice_loss(confident(target, 2), target).item() < 1e-6
    assert iou_loss(confident(target, 2), target).item() < 1e-6
    swapped = confident(1 - target, 2)  # every pixel wrong
    # per class: intersection 0, |P| = |Y| = 2 -> dice = eps / (4 + eps) = 1/5, iou = eps / (4 + eps) = 1/5 (eps = 1)
    assert math.isclose(dice_loss(swapped, target).item(), 1 - 1 / 5, rel_tol=1e-5)
    assert math.isclose(iou_loss(swapped, target).item(), 1 - 1 / 5, rel_tol=1e-5)
    ignored = torch.tensor([[[0, 0, IGNORE_INDEX, IGNORE_INDEX]]])  # the wrong pixels no longer count
    half_wrong = confident(torch.tensor([[[0, 0, 0, 0]]]), 2)
    assert dice_loss(half_wrong, ignored).item() < 1e-6 and iou_loss(half_wrong, ignored).item() < 1e-6


def test_soft_dice_by_hand():
    """Probabilities 0.75/0.25 everywhere, target all class 0 on 2 pixels: class 0: I = 1.5, |P| = 1.5, |Y| = 2;
    class 1: I = 0, |P| = 0.5, |Y| = 0. Dice = ((3 + 1) / (3.5 + 1) + 1 / (0.5 + 1)) / 2."""
    logits = torch.log(torch.tensor([0.75, 0.25])).view(1, 2, 1, 1).expand(1, 2, 1, 2)
    target = torch.zeros(1, 1, 2, dtype=torch.long)
    expected = 1 - (4 / 4.5 + 1 / 1.5) / 2
    assert math.isclose(dice_loss(logits, target).item(), expected, rel_tol=1e-5)
    expected_iou = 1 - ((1.5 + 1) / (3.5 - 1.5 + 1) + 1 / 1.5) / 2
    assert math.isclose(iou_loss(logits, target).item(), expected_iou, rel_tol=1e-5)


def test_binary_dice_uses_the_sigmoid():
    target = torch.tensor([[[1, 0, 1]]])
    logits = (target.float() * 40 - 20).unsqueeze(1)
    assert dice_loss(logits, target).item() < 1e-6


def test_ce_plus_dice_is_the_weighted_sum():
    g = torch.Generator().manual_seed(1)
    logits, target = torch.randn(1, 3, 4, 4, generator=g), torch.randint(0, 3, (1, 4, 4), generator=g)
    combined = ce_dice_loss(logits, target, ce_weight=0.3, dice_weight=2.0)
    assert torch.allclose(combined, 0.3 * cross_entropy(logits, target) + 2.0 * dice_loss(logits, target))


def test_metrics_by_hand():
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 2, IGNORE_INDEX]])
    prediction = torch.tensor([[0, 1, 1, 1], [2, 2, 0, 0]])
    confusion = confusion_matrix(prediction, target, 3)
    assert confusion.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 2]]
    result = scores(confusion)
    # IoU: class 0: 1 / (2 + 2 - 1) = 1/3; class 1: 2 / (2 + 3 - 2) = 2/3; class 2: 2 / (3 + 2 - 2) = 2/3
    assert result["per_class_iou"] == pytest.approx([1 / 3, 2 / 3, 2 / 3])
    assert result["mean_iou"] == pytest.approx(5 / 9)
    assert result["per_class_dice"] == pytest.approx([2 / 4, 4 / 5, 4 / 5])
    assert result["pixel_accuracy"] == pytest.approx(5 / 7)


def test_metrics_perfect_empty_and_absent_classes():
    target = torch.tensor([[0, 0, 2]])
    result = scores(confusion_matrix(target, target, 3))
    assert result["mean_iou"] == 1.0 and result["dice"] == 1.0 and result["pixel_accuracy"] == 1.0
    assert math.isnan(result["per_class_iou"][1])  # class 1 neither present nor predicted: not counted
    empty = scores(confusion_matrix(target, torch.full_like(target, IGNORE_INDEX), 3))
    assert empty["pixel_accuracy"] == 0.0 and math.isnan(empty["mean_iou"])

"""dmmlib.losses: each loss by hand on a two-pixel example and against torch's own functions.

The paper does not state its training loss (dmmlib.losses documents the choice); what is checked
here is that each loss is what its docstring says: a per-pixel mean (BCE), 1 - soft IoU with the
+1 smoothing, a mean over each clip's valid objects and then over clips, and a cross-entropy of
the renormalised X^ rows against the best proposal, over the objects that have one.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dmmlib import losses
from dmmlib.errors import DMMInputError


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# ----------------------------------------------------------------------------- two pixels by hand

TWO_PIXELS = torch.tensor([[[[2.0, -1.0]]]])  # [B=1, n=1, H=1, W=2]
TARGET = torch.tensor([[[[1.0, 0.0]]]])
VALID = torch.tensor([[True]])
# BCE: -log sigmoid(2) on the object pixel, -log(1 - sigmoid(-1)) on the background one, averaged
BCE_BY_HAND = (-math.log(sigmoid(2.0)) - math.log(1.0 - sigmoid(-1.0))) / 2
# soft IoU with p = sigmoid(logits): intersection p0 * 1, union (p0 + 1 - p0) + p1
SOFT_IOU_BY_HAND = 1.0 - (sigmoid(2.0) + 1.0) / (1.0 + sigmoid(-1.0) + 1.0)


def test_each_loss_on_two_pixels_by_hand():
    assert losses.mask_loss(TWO_PIXELS, TARGET, VALID, "bce").item() == pytest.approx(BCE_BY_HAND, rel=1e-6)
    assert losses.mask_loss(TWO_PIXELS, TARGET, VALID, "soft_iou").item() == pytest.approx(SOFT_IOU_BY_HAND, rel=1e-6)
    assert losses.mask_loss(TWO_PIXELS, TARGET, VALID, "bce+soft_iou").item() == pytest.approx(
        BCE_BY_HAND + SOFT_IOU_BY_HAND, rel=1e-6)
    assert losses.mask_loss(TWO_PIXELS, TARGET, VALID).item() == pytest.approx(SOFT_IOU_BY_HAND, rel=1e-6)  # default
    assert losses.DEFAULT_LOSS == "soft_iou"


def test_lovasz_hinge_on_two_pixels_by_hand():
    # hinge errors 1 - 0.5 = 0.5 on the object pixel, 1 + 0.25 = 1.25 on the background one; most wrong
    # first: the background pixel alone as a mistake costs IoU 1 - 1/2, both cost 1 - 0/2: weights 0.5, 0.5
    logits = torch.tensor([[[[0.5, 0.25]]]])
    assert losses.mask_loss(logits, TARGET, VALID, "lovasz").item() == pytest.approx(1.25 * 0.5 + 0.5 * 0.5)
    assert losses.mask_loss(TWO_PIXELS, TARGET, VALID, "lovasz").item() == 0.0  # both right by a margin of 1


def test_lovasz_hinge_is_the_iou_loss_of_the_wrong_pixels_when_each_error_is_zero_or_one():
    gen = torch.Generator().manual_seed(0)
    target = (torch.rand(3, 4, 6, 7, generator=gen) > 0.6).float()
    wrong = torch.rand(3, 4, 6, 7, generator=gen) > 0.7
    logits = torch.where(wrong, torch.zeros_like(target), 2 * target - 1)  # hinge error 1 where wrong, else 0
    size, missed, false_alarms = (t.sum(dim=(-2, -1)) for t in (target, wrong * target, wrong * (1 - target)))
    iou_loss = torch.where(size + false_alarms > 0, 1 - (size - missed) / (size + false_alarms), 0.0)
    torch.testing.assert_close(losses.lovasz_hinge_per_object(logits, target), iou_loss)


def test_bce_is_torchs_pixel_mean_per_object():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 5, 7, generator=gen) * 3
    target = (torch.rand(2, 3, 5, 7, generator=gen) > 0.6).float()
    per_object = losses.bce_per_object(logits, target)
    for b in range(2):
        for i in range(3):
            expected = F.binary_cross_entropy_with_logits(logits[b, i], target[b, i])  # reduction="mean"
            torch.testing.assert_close(per_object[b, i], expected)
    # every object valid and of one size: the mean of pixel means is torch's mean over everything
    everything = F.binary_cross_entropy_with_logits(logits, target)
    torch.testing.assert_close(losses.mask_loss(logits, target, torch.ones(2, 3, dtype=torch.bool), "bce"), everything)


def test_soft_iou_is_one_minus_iou_for_hard_predictions():
    target = torch.zeros(1, 1, 10, 10)
    target[0, 0, :, :5] = 1  # 50 pixels
    logits = torch.full((1, 1, 10, 10), -50.0)
    logits[0, 0, :, 3:8] = 50.0  # 50 pixels, 20 overlapping: IoU 20/80
    expected = 1 - (20 + 1) / (80 + 1)
    assert losses.soft_iou_per_object(logits, target).item() == pytest.approx(expected, abs=1e-5)
    # an object that has left the frame, with nothing predicted, costs nothing (the + 1 smoothing)
    assert losses.soft_iou_per_object(torch.full((1, 1, 4, 4), -50.0), torch.zeros(1, 1, 4, 4)).item() == 0.0


def test_the_mean_is_over_each_clips_valid_objects_then_over_clips():
    """Clip 0 has two valid objects, clip 1 one valid and one padded, clip 2 none: each clip's loss is the
    mean over its valid objects, and the batch's the mean over its clips (an empty clip adds 0)."""
    per_pixel = torch.tensor([2.0, -1.0, 0.5, 3.0, -2.0, 1.0])
    logits = per_pixel.view(3, 2, 1, 1)
    target = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 1.0]).view(3, 2, 1, 1)
    valid = torch.tensor([[True, True], [True, False], [False, False]])
    bce = [-math.log(sigmoid(x)) if t else -math.log(1 - sigmoid(x)) for x, t in zip(per_pixel.tolist(), target.flatten().tolist())]
    expected = ((bce[0] + bce[1]) / 2 + bce[2] + 0.0) / 3
    assert losses.mask_loss(logits, target, valid, "bce").item() == pytest.approx(expected, rel=1e-6)
    # the padded object's value does not matter
    changed = logits.clone()
    changed[1, 1] = -30.0
    assert losses.mask_loss(changed, target, valid, "bce").item() == pytest.approx(expected, rel=1e-6)
    # the same averaging for the soft IoU, whose per-object values differ here
    soft = [1 - ((sigmoid(x) if t else 0) + 1) / ((1 if t else sigmoid(x)) + 1)
            for x, t in zip(per_pixel.tolist(), target.flatten().tolist())]
    assert losses.soft_iou_per_object(logits, target).flatten().tolist() == pytest.approx(soft, rel=1e-6)
    expected = ((soft[0] + soft[1]) / 2 + soft[2] + 0.0) / 3
    assert losses.mask_loss(logits, target, valid, "soft_iou").item() == pytest.approx(expected, rel=1e-6)


def test_targets_may_be_bool_or_uint8_masks():
    logits = torch.tensor([[[[2.0, -1.0], [0.5, 3.0]]]])
    target = torch.tensor([[[[True, False], [False, True]]]])
    valid = torch.tensor([[True]])
    for kind in losses.LOSSES:
        expected = losses.mask_loss(logits, target.float(), valid, kind)
        assert losses.mask_loss(logits, target, valid, kind) == expected, kind
        assert losses.mask_loss(logits, target.to(torch.uint8), valid, kind) == expected, kind


def test_losses_are_small_for_a_confident_right_answer_and_large_for_a_wrong_one():
    target = torch.zeros(1, 2, 8, 8)
    target[0, 0, 2:5, 2:5] = 1
    target[0, 1, 5:8, 0:3] = 1
    valid = torch.tensor([[True, True]])
    right, wrong = (target * 2 - 1) * 10, (1 - target * 2) * 10
    for kind in losses.LOSSES:
        good, bad = losses.mask_loss(right, target, valid, kind), losses.mask_loss(wrong, target, valid, kind)
        assert good < 0.05 and bad > 0.9, (kind, good, bad)


def test_invalid_objects_do_not_count():
    target = torch.zeros(1, 2, 8, 8)
    target[0, 0, 2:5, 2:5] = 1
    logits = (target * 2 - 1) * 10
    logits[0, 1] = 10  # object 1 badly wrong, but it has no template
    valid = torch.tensor([[True, False]])
    assert losses.mask_loss(logits, target, valid, "bce+soft_iou") < 0.05
    assert losses.mask_loss(logits, target, torch.tensor([[True, True]]), "bce+soft_iou") > 0.5


def test_bad_shapes_and_unknown_losses_are_input_errors():
    with pytest.raises(DMMInputError, match="l2"):
        losses.mask_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), torch.ones(1, 1, dtype=torch.bool), "l2")
    with pytest.raises(DMMInputError, match=r"logits \(1, 1, 2, 2\) and target \(1, 1, 2, 3\)"):
        losses.mask_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 3), torch.ones(1, 1, dtype=torch.bool))
    with pytest.raises(DMMInputError, match=r"must both be \[B, n, H, W\]"):
        losses.mask_loss(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2), torch.ones(1, 1, dtype=torch.bool))
    with pytest.raises(DMMInputError, match=r"valid \(1, 2\) must be \[B, n\] = \(1, 1\)"):
        losses.mask_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), torch.ones(1, 2, dtype=torch.bool))


# ----------------------------------------------------------------------------- the assignment loss


def test_assignment_loss_by_hand_leaves_out_objects_without_a_target_proposal():
    x_hat = torch.tensor([[[0.2, 0.5, 0.3],     # best proposal 1: -log 0.5
                           [0.25, 0.25, 0.5],   # no proposal good enough (-1): left out
                           [-0.1, 0.3, 0.2],    # renormalised after clamping at 0: 0.3 / 0.5
                           [0.1, 0.1, 0.8],     # no template (invalid): left out
                           [0.7, 0.2, 0.1]]])   # best proposal 0: -log 0.7
    best = torch.tensor([[1, -1, 1, 2, 0]])
    valid = torch.tensor([[True, True, True, False, True]])
    expected = (-math.log(0.5) - math.log(0.6) - math.log(0.7)) / 3
    assert losses.assignment_loss(x_hat, best, valid).item() == pytest.approx(expected, rel=1e-6)
    # torch's negative log-likelihood with -1 ignored says the same
    rows = x_hat.clamp(min=0)
    rows = rows / rows.sum(-1, keepdim=True)
    nll = F.nll_loss(rows[0].log(), torch.where(valid[0], best[0], -1), ignore_index=-1)
    assert losses.assignment_loss(x_hat, best, valid).item() == pytest.approx(nll.item(), rel=1e-6)


def test_assignment_loss_prefers_the_best_proposal():
    best = torch.tensor([[1, -1]])
    valid = torch.tensor([[True, True]])
    on_target = torch.tensor([[[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]])
    off_target = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    assert losses.assignment_loss(on_target, best, valid) < 1e-4
    assert losses.assignment_loss(off_target, best, valid).item() == pytest.approx(-math.log(1e-6), rel=1e-5)
    with pytest.raises(DMMInputError, match=r"x_hat \(1, 3\) must be \[B, n, m\]"):
        losses.assignment_loss(on_target[0, 0:1], best, valid)
    with pytest.raises(DMMInputError, match=r"got best \(1, 3\), valid \(1, 2\)"):
        losses.assignment_loss(on_target, torch.tensor([[1, -1, 0]]), valid)


def test_best_proposal_finds_the_overlapping_one():
    target = torch.zeros(2, 10, 10)
    target[0, :4, :4] = 1
    target[1, 6:, 6:] = 1
    proposals = torch.zeros(3, 10, 10)
    proposals[0, 6:, 5:] = 1  # IoU 16/20 with object 1
    proposals[2, :4, :5] = 1  # IoU 16/20 with object 0
    assert losses.best_proposal(target, proposals).tolist() == [2, 0]
    assert losses.best_proposal(target, proposals, min_iou=0.9).tolist() == [-1, -1]
    assert losses.best_proposal(target, proposals).dtype == torch.long
    none = losses.best_proposal(target, proposals[:0])  # no proposals at all
    assert none.tolist() == [-1, -1] and none.dtype == torch.long


def test_a_proposal_exactly_at_the_threshold_is_good_enough():
    """IoU = min_iou counts (>=): the object has 2 pixels and the proposal covers one of them, IoU 1/2."""
    target = torch.tensor([[[1.0, 1.0, 0.0, 0.0]]])
    proposals = torch.tensor([[[0.0, 0.0, 1.0, 1.0]], [[0.9, 0.0, 0.0, 0.0]]])
    assert losses.best_proposal(target, proposals, min_iou=0.5).tolist() == [1]
    assert losses.best_proposal(target, proposals, min_iou=0.51).tolist() == [-1]
    # pasted proposals are probabilities: a pixel is the proposal's only above 0.5
    assert losses.best_proposal(target, proposals * 0.5 / 0.9, min_iou=0.5).tolist() == [-1]


def test_a_target_pixel_at_one_half_is_background_and_no_proposals_stay_on_the_targets_device():
    # a target pixel is the object's only above 0.5, as a pasted proposal's is: here IoU 1/1, not 1/2
    target = torch.tensor([[[1.0, 0.5, 0.0, 0.0]]])
    proposals = torch.tensor([[[1.0, 0.0, 0.0, 0.0]]])
    assert losses.best_proposal(target, proposals, min_iou=1.0).tolist() == [0]
    # no proposals: the -1s are made on the target's device (a GPU batch would otherwise get CPU indices)
    none = losses.best_proposal(torch.zeros(2, 4, 4, device="meta"), torch.zeros(0, 4, 4, device="meta"))
    assert none.device.type == "meta" and none.shape == (2,) and none.dtype == torch.long

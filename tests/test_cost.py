"""dmmlib.cost: Eq. 1 and its two terms, checked term by term against torch's own functions and by hand."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from dmmlib.cost import PADDING_COST, cosine_similarity, mask_iou, matching_cost, soft_iou
from dmmlib.errors import DMMInputError

F64 = torch.float64


def test_cosine_is_the_angle_whatever_the_norm_and_zero_for_a_zero_vector():
    """cos(f(p_j), f(r_i)) of Eq. 1 depends on directions only: small and large feature vectors alike."""
    g = torch.Generator().manual_seed(0)
    templates = torch.randn(2, 3, 5, generator=g, dtype=F64) * torch.tensor([0.01, 1.0, 300.0], dtype=F64)[:, None]
    proposals = torch.randn(2, 4, 5, generator=g, dtype=F64) * 0.05
    proposals[1, 2] = 0.0
    cos = cosine_similarity(templates, proposals)
    assert cos.shape == (2, 3, 4)
    for b, i, j in itertools.product(range(2), range(3), range(4)):
        expected = 0.0 if (b, j) == (1, 2) else F.cosine_similarity(templates[b, i], proposals[b, j], dim=0).item()
        assert cos[b, i, j].item() == pytest.approx(expected, abs=1e-12), (b, i, j)


def test_soft_iou_and_mask_iou_by_hand():
    a = torch.tensor([[[[1.0, 0.5], [0.0, 0.0]]]], dtype=F64)  # [1, 1, 2, 2]
    b = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]], [[[0.0, 0.0], [0.0, 0.0]]]], dtype=F64).transpose(0, 1)  # [1, 2, 2, 2]
    # soft: sum(a b) / (sum a + sum b - sum(a b)) = 1.5 / (1.5 + 2 - 1.5); against an empty mask 0 / 1.5
    torch.testing.assert_close(soft_iou(a, b), torch.tensor([[[0.75, 0.0]]], dtype=F64), rtol=0, atol=1e-12)
    faint = torch.tensor([[[[0.2, 0.0], [0.0, 0.0]]]], dtype=F64)  # a union below 1 is not clamped: 0.04 / 0.36
    assert soft_iou(faint, faint).item() == pytest.approx(0.04 / 0.36, rel=1e-9)
    # binary, batched [B, n, H, W] x [B, m, H, W]: each batch entry on its own; two empty masks give 0
    x = torch.zeros(2, 2, 3, 3, dtype=torch.bool)
    y = torch.zeros(2, 3, 3, 3, dtype=torch.bool)
    x[0, 0, :2, :2] = True   # 4 pixels
    y[0, 1, :2, :3] = True   # 6 pixels, 4 shared: IoU 4/6
    x[1, 1, 2] = True        # 3 pixels
    y[1, 0, 2, :1] = True    # 1 pixel, shared: IoU 1/3
    y[1, 2] = True           # all 9: IoU 3/9
    expected = torch.zeros(2, 2, 3)
    expected[0, 0, 1] = 4 / 6
    expected[1, 1, 0] = 1 / 3
    expected[1, 1, 2] = 3 / 9
    torch.testing.assert_close(mask_iou(x, y), expected, rtol=0, atol=1e-7)
    torch.testing.assert_close(mask_iou(x[1], y[1]), expected[1], rtol=0, atol=1e-7)  # [n, H, W] too


def test_matching_cost_is_eq1_with_padding_columns_last():
    g = torch.Generator().manual_seed(1)
    templates, proposals = torch.randn(1, 2, 4, generator=g), torch.randn(1, 3, 4, generator=g)
    previous, pasted = torch.rand(1, 2, 5, 5, generator=g), torch.rand(1, 3, 5, 5, generator=g)
    cos, iou = cosine_similarity(templates, proposals), soft_iou(previous, pasted)
    for lam in (0.0, 0.3, 1.0):  # both ends of [0, 1] are allowed
        out = matching_cost(templates, proposals, previous, pasted, lam=lam)
        torch.testing.assert_close(out.cost, (lam - 1) * cos - lam * iou)
    valid = torch.tensor([[True, False, True]])
    out = matching_cost(templates, proposals, previous, pasted, lam=0.3, proposal_valid=valid)
    assert (out.cost[:, :, 1] == PADDING_COST).all() and (out.cosine[:, :, 1] == 0).all() and (out.iou[:, :, 1] == 0).all()
    torch.testing.assert_close(out.cost[:, :, [0, 2]], (0.3 - 1) * cos[:, :, [0, 2]] - 0.3 * iou[:, :, [0, 2]])
    for lam in (-0.01, 1.01):
        with pytest.raises(DMMInputError, match=f"lam={lam} must lie in"):
            matching_cost(templates, proposals, previous, pasted, lam=lam)
    for bad in (proposals[0], proposals[:, :, :3], torch.randn(2, 3, 4)):  # [m, d], d = 3, B = 2
        with pytest.raises(DMMInputError, match=r"proposal_features must be \[B=1, m, d=4\]"):
            matching_cost(templates, bad, previous, pasted)
    for prev, past in ((previous[:, :1], pasted), (previous, pasted[:, :2]), (previous[:, :, :4], pasted)):
        with pytest.raises(DMMInputError, match="previous_masks"):  # n, m or H x W disagree
            matching_cost(templates, proposals, prev, past)

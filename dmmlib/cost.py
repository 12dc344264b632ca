"""The matching cost of Eq. 1: appearance (cosine) and overlap (IoU).

    C_ij = (lam - 1) * cos(f(p_j), f(r_i)) - lam * IoU(p_j, r_hat_i)        (Eq. 1)

for template i (row) and proposal j (column). f is the feature extractor
(:mod:`dmmlib.features`). r_hat_i is the *previous* frame's matched mask of
object i (Eq. 8 propagates it; at the first step it is the template itself).
Both terms lie in [-1, 1] and [0, 1], so C lies in [lam - 1 - lam, 1 - lam] = [-1, 1 - lam].

Soft IoU. Pasted proposals and matched masks are probabilities, not sets, so we
use IoU(a, b) = sum(a*b) / (sum(a) + sum(b) - sum(a*b)): for {0, 1} masks it is
the usual IoU, it is differentiable, and for masks in [0, 1] it lies in [0, 1]
(because a*b <= min(a, b)). Two empty masks have IoU 0, not 0/0.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from dmmlib.errors import DMMInputError

# lam of Eq. 1 as set in Sec. 4.1.
LAMBDA_DAVIS = 0.3
LAMBDA_YOUTUBE_VOS = 0.3
LAMBDA_SEGTRACK = 0.9

# Cost given to padding columns (proposals that do not exist): above the largest
# possible Eq. 1 cost (1 - lam < 1), so no matcher ever prefers one.
PADDING_COST = 1.0


class MatchingCost(NamedTuple):
    """Eq. 1 and its two parts, each [B, n, m]."""

    cost: torch.Tensor
    cosine: torch.Tensor
    iou: torch.Tensor


def cosine_similarity(template_features: torch.Tensor, proposal_features: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """cos(f(p_j), f(r_i)) for every pair: [B, n, d], [B, m, d] -> [B, n, m]. A zero vector has cosine 0."""
    t = F.normalize(template_features, dim=-1, eps=eps)
    p = F.normalize(proposal_features, dim=-1, eps=eps)
    return torch.einsum("bnd,bmd->bnm", t, p)


def soft_iou(masks_a: torch.Tensor, masks_b: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Soft IoU for every pair: [B, n, H, W], [B, m, H, W] in [0, 1] -> [B, n, m] (see module docstring)."""
    intersection = torch.einsum("bnhw,bmhw->bnm", masks_a, masks_b)
    area_a = masks_a.sum(dim=(-1, -2))[:, :, None]
    area_b = masks_b.sum(dim=(-1, -2))[:, None, :]
    union = area_a + area_b - intersection
    return intersection / union.clamp_min(eps)


def mask_iou(masks_a: torch.Tensor, masks_b: torch.Tensor) -> torch.Tensor:
    """IoU between every pair of binary masks: ``[..., n, H, W]``, ``[..., m, H, W]`` -> ``[..., n, m]``.

    Two empty masks have IoU 0 here (no overlap to reward).
    """
    a = masks_a.flatten(-2).to(torch.float32)
    b = masks_b.flatten(-2).to(torch.float32)
    intersection = a @ b.transpose(-1, -2)
    union = a.sum(-1)[..., :, None] + b.sum(-1)[..., None, :] - intersection
    return intersection / union.clamp(min=1.0)


def matching_cost(
    template_features: torch.Tensor,
    proposal_features: torch.Tensor,
    previous_masks: torch.Tensor,
    proposal_masks: torch.Tensor,
    lam: float = LAMBDA_DAVIS,
    proposal_valid: torch.Tensor | None = None,
) -> MatchingCost:
    """Eq. 1 batched over frames and objects.

    template_features [B, n, d] = f(r_i); proposal_features [B, m, d] = f(p_j);
    previous_masks [B, n, H, W] = r_hat_i (the last matched masks); proposal_masks
    [B, m, H, W] = the pasted proposals P-tilde; proposal_valid [B, m] bool marks
    real proposals (padding columns get cost :data:`PADDING_COST` and cosine/IoU 0).
    Returns :class:`MatchingCost` (cost, cosine, iou), each [B, n, m].
    """
    if not 0.0 <= lam <= 1.0:
        raise DMMInputError(f"lam={lam} must lie in [0, 1] (Eq. 1 uses 0 < lam < 1)")
    b, n, d = template_features.shape
    if proposal_features.ndim != 3 or proposal_features.shape[0] != b or proposal_features.shape[2] != d:
        raise DMMInputError(
            f"proposal_features must be [B={b}, m, d={d}]; got {tuple(proposal_features.shape)}"
        )
    m = proposal_features.shape[1]
    if previous_masks.shape[:2] != (b, n) or proposal_masks.shape[:2] != (b, m):
        raise DMMInputError(
            f"previous_masks must be [B={b}, n={n}, H, W] and proposal_masks [B={b}, m={m}, H, W]; "
            f"got {tuple(previous_masks.shape)} and {tuple(proposal_masks.shape)}"
        )
    if previous_masks.shape[-2:] != proposal_masks.shape[-2:]:
        raise DMMInputError(
            f"previous_masks and proposal_masks must share H, W; got {tuple(previous_masks.shape[-2:])} "
            f"and {tuple(proposal_masks.shape[-2:])}"
        )
    cosine = cosine_similarity(template_features, proposal_features)
    iou = soft_iou(previous_masks, proposal_masks)
    cost = (lam - 1.0) * cosine - lam * iou
    if proposal_valid is not None:
        if proposal_valid.shape != (b, m):
            raise DMMInputError(f"proposal_valid must be [B={b}, m={m}]; got {tuple(proposal_valid.shape)}")
        keep = proposal_valid[:, None, :]
        cost = torch.where(keep, cost, torch.full_like(cost, PADDING_COST))
        cosine = torch.where(keep, cosine, torch.zeros_like(cosine))
        iou = torch.where(keep, iou, torch.zeros_like(iou))
    return MatchingCost(cost, cosine, iou)

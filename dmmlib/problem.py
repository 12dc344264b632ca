"""The linear program of Eq. 3 as every matcher receives it: checked, batched, padded.

A cost matrix C [B, n, m] (or [n, m]) with optional masks ``template_mask`` [B, n] and
``proposal_mask`` [B, m] becomes a :class:`MatchingProblem`; Alg. 1 (:mod:`dmmlib.matching`)
and the matchers it is compared with (:mod:`dmmlib.matchers`) all start from
:func:`prepare_problem`, so a bad input is refused the same way by every one of them.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch
from torch import Tensor

from dmmlib.device import any_on_host, max_on_host
from dmmlib.errors import DMMInputError
from dmmlib.projections import Layout, check_matrix, check_positive, make_layout

# The largest step alpha * max|C_ij| (and the largest |X^0_ij|) dmm_match accepts. A matching's entries
# lie in [0, 1]; a gradient step that moves them by more than ten times that range cannot be
# brought back by N_proj Dykstra rounds (Theorem 1 asks alpha < r0 / ||C||_F), and X^ stops being
# anything like a matching (lr = 1e30 gave entries of 7e28).
MAX_STEP = 10.0
# Half-precision costs are solved in float32 (sums over a row lose too much in float16) and the
# result is returned in the cost's dtype.
_UPCAST = (torch.float16, torch.bfloat16)


@dataclass
class MatchingProblem:
    """A checked cost matrix, batched and padded, as every matcher solves it."""

    cost: Tensor  # [B, n, m'] padded entries 0; m' = m + n when "no proposal" columns were added
    layout: Layout
    batched: bool
    n_real_columns: int  # m: the caller's columns; the rest are "no proposal" dummies
    scale: float = 0.0  # max |C_ij| over the valid entries (dummy columns included)
    dtype: torch.dtype | None = None  # the caller's dtype, if the problem is solved in another one

    def output(self, X: Tensor) -> Tensor:
        X = X[..., : self.n_real_columns]
        if self.dtype is not None:
            X = X.to(self.dtype)
        return X if self.batched else X.squeeze(0)


def prepare_problem(cost, template_mask, proposal_mask, no_proposal_cost) -> MatchingProblem:
    """Check ``cost`` [B, n, m] or [n, m] and its masks; add "no proposal" columns if asked.

    Raises :class:`DMMInputError` for a bad shape, dtype or mask, NaN/inf costs, or
    n > m without ``no_proposal_cost`` (Eq. 3 is then infeasible). float16 / bfloat16 costs
    are solved in float32 (:meth:`MatchingProblem.output` casts back).
    """
    cost = check_matrix(cost, "cost")
    caller_dtype = cost.dtype if cost.dtype in _UPCAST else None
    if caller_dtype is not None:
        cost = cost.float()
    if cost.ndim not in (2, 3):
        raise DMMInputError(f"cost has shape {list(cost.shape)}; expected [n, m] or [B, n, m]")
    batched = cost.ndim == 3
    # masks are checked against the caller's shape, before the batch dimension is added
    make_layout(cost.shape, template_mask, proposal_mask, cost.dtype, cost.device)
    if not batched:
        cost = cost.unsqueeze(0)
        template_mask = None if template_mask is None else template_mask.unsqueeze(0)
        proposal_mask = None if proposal_mask is None else proposal_mask.unsqueeze(0)
    B, n, m = cost.shape
    device = cost.device
    rows = torch.ones(B, n, dtype=torch.bool, device=device) if template_mask is None else template_mask.to(device)
    cols = torch.ones(B, m, dtype=torch.bool, device=device) if proposal_mask is None else proposal_mask.to(device)
    valid = rows.unsqueeze(-1) & cols.unsqueeze(-2)
    # one host sync gives both the check for NaN / inf (they propagate through amax) and the scale
    scale = max_on_host(torch.where(valid, cost.detach().abs(), torch.zeros((), dtype=cost.dtype, device=device)))
    if not math.isfinite(scale):
        bad = valid & ~torch.isfinite(cost.detach())
        where = [int(i) for i in bad.nonzero()[0]]
        raise DMMInputError(f"cost has {int(bad.sum())} NaN or infinite entries (first at index "
                            f"{where if batched else where[1:]}); expected finite costs")
    if template_mask is not None or proposal_mask is not None:
        # padded entries may hold anything (inf, NaN); they must not reach any sum
        cost = torch.where(valid, cost, torch.zeros((), dtype=cost.dtype, device=device))

    n_valid, m_valid = rows.sum(-1), cols.sum(-1)
    if no_proposal_cost is None:
        if any_on_host(n_valid > m_valid):
            b = int((n_valid > m_valid).nonzero()[0])
            which = f" (problem {b} of the batch)" if batched else ""
            raise DMMInputError(
                f"cost{which} has n={int(n_valid[b])} templates but only m={int(m_valid[b])} proposals: "
                f"every template row must sum to 1 while every proposal column sums to at most 1, "
                f"which is impossible when n > m; pass no_proposal_cost=<cost of leaving a template "
                f"unmatched> to add 'no proposal' columns")
    else:
        if isinstance(no_proposal_cost, bool) or not isinstance(no_proposal_cost, numbers.Real) \
                or not math.isfinite(no_proposal_cost):
            raise DMMInputError(f"no_proposal_cost={no_proposal_cost!r}; expected a finite number")
        # n dummy columns: enough for every template to be unmatched at once
        scale = max(scale, abs(float(no_proposal_cost)))
        dummy = torch.full((B, n, n), float(no_proposal_cost), dtype=cost.dtype, device=device)
        cost = torch.cat([cost, dummy * rows.unsqueeze(-1).to(cost.dtype)], dim=-1)
        if proposal_mask is not None:
            proposal_mask = torch.cat([proposal_mask.to(device), torch.ones(B, n, dtype=torch.bool, device=device)], -1)
    layout = make_layout(cost.shape, template_mask, proposal_mask, cost.dtype, device)
    return MatchingProblem(cost, layout, batched, m, scale, caller_dtype)


def check_step(lr, problem: MatchingProblem, init: Tensor | None = None) -> float:
    """``lr`` as a float, checked with the problem's cost scale: 0 < lr and lr * max|C_ij| <= :data:`MAX_STEP`.

    ``init`` (X^0), if given, must be finite with entries in [-MAX_STEP, MAX_STEP].
    """
    lr = check_positive(lr, "lr")
    if lr * problem.scale > MAX_STEP:
        raise DMMInputError(
            f"lr={lr!r} with max|cost|={problem.scale:.3g} makes a gradient step of {lr * problem.scale:.3g}; "
            f"expected lr in (0, {MAX_STEP / problem.scale:.3g}], i.e. lr * max|cost| <= {MAX_STEP:g} "
            "(a matching's entries lie in [0, 1]; Alg. 1 cannot project back from larger steps): "
            "lower lr or scale the cost down")
    if init is not None and isinstance(init, Tensor) and init.is_floating_point() and init.numel():
        largest = max_on_host(init.detach().abs())
        if not math.isfinite(largest):
            raise DMMInputError("init holds NaN or infinite entries; expected a finite starting point X^0 "
                                f"with entries in [-{MAX_STEP:g}, {MAX_STEP:g}]")
        if largest > MAX_STEP:
            raise DMMInputError(f"init has entries up to {largest:.3g} in magnitude; expected a finite starting "
                                f"point X^0 with entries in [-{MAX_STEP:g}, {MAX_STEP:g}] (an assignment lies in [0, 1])")
    return lr

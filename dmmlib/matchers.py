"""The matchers DMM-Net's layer is compared with (Table 4, Sec. 4.3; chapter 4's Sinkhorn).

All take a cost C [B, n, m] (or [n, m]) and the same optional masks as
:func:`dmmlib.matching.dmm_match`, and return an assignment of the same shape, dtype
and device, so they are interchangeable with it.

* :func:`hungarian_match` -- the exact 0/1 solution of the ILP of Eq. 2 (scipy).
* :func:`greedy_match` -- the cheap greedy baseline of Table 4.
* :func:`sinkhorn_match` -- an entropic relaxation of Eq. 3, differentiable.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from dmmlib.errors import DMMInputError
from dmmlib.problem import prepare_problem
from dmmlib.projections import check_iterations, check_positive


def hungarian_match(cost: Tensor, template_mask: Tensor | None = None, proposal_mask: Tensor | None = None,
                    no_proposal_cost: float | None = None) -> Tensor:
    """The exact solution of the ILP of Eq. 2 by the Hungarian method (scipy's linear_sum_assignment).

    cost [B, n, m] or [n, m] -> 0/1 assignment of the same shape, dtype and device; one scipy
    call per problem of the batch. Not differentiable.
    """
    problem = prepare_problem(cost, template_mask, proposal_mask, no_proposal_cost)
    C = problem.cost.detach().to("cpu", torch.float64).numpy()
    layout = problem.layout
    rows_ok = np.ones(C.shape[:2], bool) if layout.row_valid is None else \
        layout.row_valid.squeeze(-1).cpu().numpy() > 0
    cols_ok = np.ones((C.shape[0], C.shape[2]), bool) if layout.col_valid is None else \
        layout.col_valid.squeeze(-2).cpu().numpy() > 0
    X = np.zeros_like(C)
    padded = layout.row_valid is not None or layout.col_valid is not None
    for b in range(C.shape[0]):
        if not padded:
            r, c = linear_sum_assignment(C[b])
            X[b, r, c] = 1.0
            continue
        rows, cols = np.flatnonzero(rows_ok[b]), np.flatnonzero(cols_ok[b])
        r, c = linear_sum_assignment(C[b][np.ix_(rows, cols)])
        X[b, rows[r], cols[c]] = 1.0
    return problem.output(torch.as_tensor(X, dtype=cost.dtype, device=cost.device))


def greedy_match(cost: Tensor, template_mask: Tensor | None = None, proposal_mask: Tensor | None = None,
                 strategy: str = "global", no_proposal_cost: float | None = None) -> Tensor:
    """A greedy 0/1 matching, the cheap baseline of Table 4.

    cost [B, n, m] or [n, m] -> 0/1 assignment of the same shape, dtype and device.

    * ``strategy="global"`` (default): repeatedly take the cheapest remaining (template,
      proposal) pair of the whole matrix and remove its row and column, so every template
      gets a distinct proposal (feasible for Eq. 2). Ties go to the lower flat index.
    * ``strategy="per_template"``: every template takes its own cheapest proposal,
      independently; two templates may take the same one (the column constraint can fail).

    Runs on the cost's device, batched; n steps of a [B, n*m] argmin. Not differentiable.
    """
    if strategy not in ("global", "per_template"):
        raise DMMInputError(f"strategy={strategy!r}; expected 'global' or 'per_template'")
    problem = prepare_problem(cost, template_mask, proposal_mask, no_proposal_cost)
    layout = problem.layout
    C = problem.cost.detach()
    B, n, m = C.shape
    valid = layout.zero_padding(torch.ones_like(C)) > 0
    remaining = torch.where(valid, C, torch.full((), math.inf, dtype=C.dtype, device=C.device))
    X = torch.zeros_like(C)
    if strategy == "per_template":
        X.scatter_(-1, remaining.argmin(-1, keepdim=True), 1.0)
        return problem.output(layout.zero_padding(X))
    rows_index = torch.arange(n, device=C.device)
    cols_index = torch.arange(m, device=C.device)
    for _ in range(n):
        best, flat = remaining.flatten(-2).min(-1)  # [B]
        found = torch.isfinite(best)
        i, j = flat // m, flat % m
        X.view(B, -1).scatter_add_(-1, flat.unsqueeze(-1), found.to(C.dtype).unsqueeze(-1))
        taken = (rows_index == i[:, None]).unsqueeze(-1) | (cols_index == j[:, None]).unsqueeze(-2)
        remaining = remaining.masked_fill(taken & found[:, None, None], math.inf)
    return problem.output(X)


def sinkhorn_match(cost: Tensor, tau: float = 0.1, n_iter: int = 50, template_mask: Tensor | None = None,
                   proposal_mask: Tensor | None = None, no_proposal_cost: float | None = None) -> Tensor:
    """An entropic (Sinkhorn) relaxation of Eq. 3: min Tr(C X^T) - tau H(X), same constraints.

    cost [B, n, m] or [n, m] -> X of the same shape; differentiable. The inequality X^T 1 <= 1 is
    made an equality by one extra "dummy" template row of cost 0 whose row sum is m - n: it
    absorbs the mass of the unmatched proposals. Sinkhorn's alternating row/column scaling then
    runs in the log domain (stable for small tau), ``n_iter`` times, ending with the rows, so
    every template row sums to exactly 1 and column sums are <= 1 up to the convergence error.
    As tau -> 0 the result approaches a solution of the LP.
    """
    tau = check_positive(tau, "tau")
    n_iter = check_iterations(n_iter)
    problem = prepare_problem(cost, template_mask, proposal_mask, no_proposal_cost)
    layout = problem.layout
    C = problem.cost
    B, n, m = C.shape
    dtype, device = C.dtype, C.device
    # a large finite stand-in for log(0): -inf would turn into NaN gradients
    log_zero = torch.tensor(torch.finfo(dtype).min / 8, dtype=dtype, device=device)
    zero = torch.zeros((), dtype=dtype, device=device)
    row_ok = torch.ones(B, n, 1, dtype=torch.bool, device=device) if layout.row_valid is None \
        else layout.row_valid > 0
    col_ok = torch.ones(B, 1, m, dtype=torch.bool, device=device) if layout.col_valid is None \
        else layout.col_valid > 0
    n_valid = row_ok.sum(-2, keepdim=True).to(dtype)  # [B, 1, 1]
    m_valid = col_ok.sum(-1, keepdim=True).to(dtype)
    leftover = m_valid - n_valid  # the dummy row's mass
    log_kernel = torch.cat([-C / tau, torch.zeros(B, 1, m, dtype=dtype, device=device)], -2)
    ok = torch.cat([row_ok, leftover > 0], -2) & col_ok  # [B, n+1, m]
    log_kernel = torch.where(ok, log_kernel, log_zero)
    log_rows = torch.cat([torch.where(row_ok, zero, log_zero),
                          torch.where(leftover > 0, leftover.clamp_min(1).log(), log_zero)], -2)
    log_cols = torch.where(col_ok, zero, log_zero)
    f = torch.zeros(B, n + 1, 1, dtype=dtype, device=device)
    for _ in range(n_iter):
        g = log_cols - torch.logsumexp(log_kernel + f, dim=-2, keepdim=True)
        f = log_rows - torch.logsumexp(log_kernel + g, dim=-1, keepdim=True)
    X = torch.exp(log_kernel + f + g)[:, :n]
    return problem.output(layout.zero_padding(X))

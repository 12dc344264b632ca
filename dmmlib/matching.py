"""DMM-Net's differentiable matching layer (Sec. 3, Alg. 1).

A cost matrix C [B, n, m] (n templates by m proposals, batch first; [n, m] also accepted)
defines the linear program of Eq. 3:  min Tr(C X^T)  s.t.  X 1 = 1,  X^T 1 <= 1,  X >= 0.

* :func:`dmm_match` -- Alg. 1: projected gradient descent, each projection by Dykstra's
  algorithm (:mod:`dmmlib.projections`), output the average of the iterates.
  Differentiable; ``variant="release"`` reproduces the authors' released code instead
  of the paper's listing.
* :func:`paper_outer_iteration`, :func:`paper_iterate_and_average` -- Alg. 1's lines 4-11
  and 3-12, the pieces :func:`dmm_match` runs.
* :func:`confident_assignment` -- X~ = X^ * 1[X^ = row max] (Sec. 4.1).
* :func:`lp_objective` -- Tr(C X^T), the LP's objective.

The matchers it is compared with (Hungarian, greedy, Sinkhorn) are in
:mod:`dmmlib.matchers`. Optional masks ``template_mask`` [B, n] and ``proposal_mask``
[B, m] let one batch hold problems of different sizes: padded rows/columns get exactly 0.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint as _checkpoint

from dmmlib.errors import DMMInputError
from dmmlib.projections import (
    Layout,
    check_iterations,
    check_matrix,
    check_positive,
    make_layout,
    rows_sum_to_one,
    violation_with_layout,
)

PAPER_SETTINGS = {"n_grad": 40, "n_proj": 5, "lr": 0.1}  # Sec. 4.1
RELEASE_SETTINGS = {"n_grad": 400, "n_proj": 50, "lr": 0.1}  # the authors' code (see the book's chapter 11)
RELEASE_TOL = 1e-6
VARIANTS = ("paper", "release")
# The largest step alpha * max|C_ij| (and the largest |X^0_ij|) dmm_match accepts. A matching's entries
# lie in [0, 1]; a gradient step that moves them by more than ten times that range cannot be
# brought back by N_proj Dykstra rounds (Theorem 1 asks alpha < r0 / ||C||_F), and X^ stops being
# anything like a matching (lr = 1e30 gave entries of 7e28).
MAX_STEP = 10.0
# Half-precision costs are solved in float32 (sums over a row lose too much in float16) and the
# result is returned in the cost's dtype.
_UPCAST = (torch.float16, torch.bfloat16)


# ----------------------------------------------------------------------------- input checks


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
    scale = float(torch.where(valid, cost.detach().abs(), torch.zeros((), dtype=cost.dtype, device=device)).amax())
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
        infeasible = (n_valid > m_valid).nonzero()
        if len(infeasible):
            b = int(infeasible[0])
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
        largest = float(init.detach().abs().amax())
        if not math.isfinite(largest):
            raise DMMInputError("init holds NaN or infinite entries; expected a finite starting point X^0 "
                                f"with entries in [-{MAX_STEP:g}, {MAX_STEP:g}]")
        if largest > MAX_STEP:
            raise DMMInputError(f"init has entries up to {largest:.3g} in magnitude; expected a finite starting "
                                f"point X^0 with entries in [-{MAX_STEP:g}, {MAX_STEP:g}] (an assignment lies in [0, 1])")
    return lr


# ----------------------------------------------------------------------------- Alg. 1


@dataclass
class MatchTrace:
    """Per-outer-iteration diagnostics of :func:`dmm_match`; each field is [N_grad, B] ([N_grad] unbatched).

    * ``objective_average`` -- Tr(C X^T) of the running average (the X^ returned so far)
    * ``objective_iterate`` -- Tr(C X^T) of the current projected iterate X^i
    * ``violation_average`` / ``violation_iterate`` -- :func:`constraint_violation` of each
    * ``step_norm`` -- ||X^i - X^(i-1)||_F
    """

    objective_average: Tensor
    objective_iterate: Tensor
    violation_average: Tensor
    violation_iterate: Tensor
    step_norm: Tensor


def columns_with_correction(Y: Tensor, q_columns: Tensor | None, layout: Layout) -> tuple[Tensor, Tensor]:
    """P2(Y + q2) and the new correction q2 (Alg. 1 line 8), with q2 kept as one value per column [B, 1, m].

    Dykstra's correction for a half-space is always a multiple of its normal, so for C2 it is
    constant down each column; storing it as a vector saves a full [B, n, m] add per round.
    """
    excess = (Y.sum(-2, keepdim=True) - 1.0) * layout.inv_n
    if q_columns is not None:
        excess = excess + q_columns
    new_q = torch.relu(excess)
    delta = new_q if q_columns is None else new_q - q_columns
    if layout.row_valid is not None:
        delta = delta * layout.row_valid
    return Y - delta, new_q


def paper_outer_iteration(X: Tensor, step: Tensor, n_proj: int, layout: Layout) -> Tensor:
    """Alg. 1 lines 4-11: X^i = Dykstra(X^(i-1) - alpha C) with N_proj rounds, corrections from zero.

    The correction q1 of the affine set C1 is dropped: it always lies in C1's normal space
    (constant along rows), which P1 removes again, so P1(Y + q1) = P1(Y) exactly.
    ``dykstra_project`` keeps all three corrections literally; the tests check both agree.
    """
    Y = X - step
    q_columns = q_nonneg = None
    for j in range(n_proj):
        Y = rows_sum_to_one(Y, layout)
        Y, q_columns = columns_with_correction(Y, q_columns, layout)
        Z = Y if q_nonneg is None else Y + q_nonneg
        Y = torch.relu(Z)
        if j + 1 < n_proj:
            q_nonneg = Z - Y
    return Y


def release_outer_iteration(X: Tensor, q_columns: Tensor, q_nonneg: Tensor, active: Tensor, step: Tensor,
                        n_proj: int, tol: float, layout: Layout) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One outer iteration as the release runs it: P3 -> P2 -> P1, corrections carried over, early stop.

    X, q_nonneg [B, n, m]; q_columns [B, 1, m]; active [B, 1, 1] bool (problems still iterating).
    Returns (pre-projection point X - alpha C, X^i, q_columns, q_nonneg). The inner loop of a
    problem stops once a round moves no entry by more than ``tol``; problems that are no longer
    active keep their state, so a batch gives what a loop over its problems gives.
    """
    pre = X - step
    Y = pre
    inner_active = active
    for _ in range(n_proj):
        Z = Y + q_nonneg
        Y_new = torch.relu(Z)
        q_nonneg_new = Z - Y_new
        Y_new, q_columns_new = columns_with_correction(Y_new, q_columns, layout)
        Y_new = rows_sum_to_one(Y_new, layout)
        moved = (Y_new - Y).detach().abs().amax((-2, -1), keepdim=True) > tol  # [B, 1, 1]
        Y = torch.where(inner_active, Y_new, Y)
        q_columns = torch.where(inner_active, q_columns_new, q_columns)
        q_nonneg = torch.where(inner_active, q_nonneg_new, q_nonneg)
        inner_active = inner_active & moved
        if not bool(inner_active.any()):
            break
    return pre, torch.where(active, Y, X), q_columns, q_nonneg


def greedy_one_hot_start(cost: Tensor, layout: Layout | None = None) -> Tensor:
    """The release's starting point X^0 [B, n, m] for a cost [B, n, m] (padded entries ignored).

    Each proposal column keeps only its best (lowest-cost) template; each template row then takes
    its lowest-cost proposal among the columns it kept. A template that is best for no column
    gets an all-zero row. Constant with respect to the cost (no gradient).
    """
    C = cost.detach()
    valid = torch.ones_like(C, dtype=torch.bool) if layout is None else layout.zero_padding(torch.ones_like(C)) > 0
    inf = torch.full((), math.inf, dtype=C.dtype, device=C.device)
    masked = torch.where(valid, C, inf)
    best_template = masked.argmin(-2, keepdim=True)  # [B, 1, m]
    kept = (torch.arange(C.shape[-2], device=C.device)[:, None] == best_template) & valid
    best_proposal = torch.where(kept, masked, inf).argmin(-1, keepdim=True)  # [B, n, 1]
    X0 = torch.zeros_like(C).scatter(-1, best_proposal, 1.0)
    return X0 * kept.any(-1, keepdim=True).to(C.dtype)


def dmm_match(cost: Tensor, *, n_grad: int | None = None, n_proj: int | None = None, lr: float = 0.1,
              init: Tensor | None = None, template_mask: Tensor | None = None,
              proposal_mask: Tensor | None = None, variant: str = "paper", return_trace: bool = False,
              checkpoint: bool = False, no_proposal_cost: float | None = None, tol: float = RELEASE_TOL):
    """The differentiable matching layer: Alg. 1 on the LP relaxation of Eq. 3.

    Args:
        cost: C [B, n, m] or [n, m], templates by proposals, float32/float64, any device.
        n_grad, n_proj: outer (gradient) and inner (projection) iterations. Defaults: 40 and 5
            for ``variant="paper"`` (Sec. 4.1); 400 and 50 for ``variant="release"``.
        lr: the step size alpha (default 0.1, Sec. 4.1). Theorem 1 asks alpha < r0/||C||_F; accepted:
            0 < alpha with alpha * max|C_ij| <= :data:`MAX_STEP`. X^ is feasible only up to an error
            proportional to that step (N_proj Dykstra rounds stop short of the exact projection).
        init: X^0 [like cost], finite, entries in [-10, 10]. ``None`` means X^0 = 0 (the paper
            allows zeros or any point).
            Not accepted by ``variant="release"``, which starts from its greedy one-hot matrix.
        template_mask, proposal_mask: bool [B, n] / [B, m] ([n] / [m] unbatched); False marks
            padding. Padded rows/columns never enter a sum and are exactly 0 in the output; the
            valid block equals the unpadded problem's result.
        variant: ``"paper"`` -- Alg. 1 as printed: X^i = Dykstra_{N_proj}(X^(i-1) - alpha C) with
            order P1 -> P2 -> P3 (Eq. 5-7), corrections reset to 0 each outer iteration, output
            X^ = mean(X^1 .. X^N_grad). ``"release"`` -- the authors' released code: start from
            :func:`greedy_one_hot_start`; order P3 -> P2 -> P1 with Dykstra's corrections kept
            across outer iterations; output the mean of [X^0, X^1 - alpha C, X^1, X^2 - alpha C,
            X^2, ...]; early stopping: the inner loop stops when a round moves no entry by more
            than ``tol``, the outer loop when Tr(C X^i T) changes by <= ``tol``. In a batch each
            problem stops on its own (its state is frozen) and the loops end when all have
            stopped, so the trace may be shorter than n_grad.
        return_trace: also return a :class:`MatchTrace` (computed on the problem actually solved,
            "no proposal" columns included).
        checkpoint: recompute each outer iteration in backward (torch.utils.checkpoint), so the
            memory kept for backward grows with N_grad only, not N_grad * N_proj.
        no_proposal_cost: allow n > m: add n "no proposal" columns of this cost, so that a template
            can stay unmatched. They are dropped from the output, whose rows may then sum to < 1.
        tol: the absolute early-stopping tolerance of ``variant="release"`` (default 1e-6; the
            release tests for an update of exactly zero, which float rounding can keep from
            happening).

    Returns:
        X^ shaped like ``cost``; with ``return_trace=True``, ``(X^, trace)``.

    Raises:
        DMMInputError: n > m without ``no_proposal_cost``, NaN/inf costs, bad shapes or masks,
            non-float dtype, lr <= 0 or lr * max|C| > MAX_STEP (10), an init that is not finite or
            has entries beyond [-10, 10], n_grad or n_proj < 1, unknown variant.
    """
    if variant not in VARIANTS:
        raise DMMInputError(f"variant={variant!r}; expected one of {VARIANTS}")
    settings = PAPER_SETTINGS if variant == "paper" else RELEASE_SETTINGS
    n_grad = check_iterations(settings["n_grad"] if n_grad is None else n_grad, "n_grad")
    n_proj = check_iterations(settings["n_proj"] if n_proj is None else n_proj, "n_proj")
    check_positive(lr, "lr")
    problem = prepare_problem(cost, template_mask, proposal_mask, no_proposal_cost)
    lr = check_step(lr, problem, init)
    if variant == "release":
        if init is not None:
            raise DMMInputError("init is not used by variant='release', which starts from its greedy one-hot "
                                "matrix (greedy_one_hot_start); pass init=None")
        if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not tol >= 0:
            raise DMMInputError(f"tol={tol!r}; expected a number >= 0")
        tol = float(tol)
        X_hat, trace = release_iterate_and_average(problem, n_grad, n_proj, lr, tol, return_trace, checkpoint)
    else:
        X0 = _initial_point(problem, init)
        X_hat, trace = paper_iterate_and_average(problem, X0, n_grad, n_proj, lr, return_trace, checkpoint)
    X_hat = problem.output(X_hat)
    if not return_trace:
        return X_hat
    if not problem.batched:
        trace = MatchTrace(**{k: v.squeeze(-1) for k, v in vars(trace).items()})
    return X_hat, trace


def _initial_point(problem: MatchingProblem, init) -> Tensor:
    C = problem.cost
    if init is None:
        return torch.zeros_like(C)
    expected = list(C.shape[1:] if not problem.batched else C.shape)
    expected[-1] = problem.n_real_columns
    init = check_matrix(init, "init")
    if list(init.shape) != expected:
        raise DMMInputError(f"init has shape {list(init.shape)}; expected {expected} (the shape of cost)")
    init = init.to(dtype=C.dtype, device=C.device)
    if not problem.batched:
        init = init.unsqueeze(0)
    if init.shape[-1] < C.shape[-1]:  # "no proposal" columns start empty
        init = torch.cat([init, init.new_zeros(*init.shape[:-1], C.shape[-1] - init.shape[-1])], -1)
    return problem.layout.zero_padding(init)


class _Tracer:
    """Collects :class:`MatchTrace` rows; does nothing when the trace was not asked for."""

    def __init__(self, enabled: bool, cost: Tensor, layout: Layout):
        self.enabled, self.cost, self.layout = enabled, cost.detach(), layout
        self.rows: list[tuple[Tensor, ...]] = []

    @torch.no_grad()
    def record(self, average: Tensor, iterate: Tensor, previous: Tensor) -> None:
        if not self.enabled:
            return
        average, iterate = average.detach(), iterate.detach()
        self.rows.append((
            lp_objective(self.cost, average), lp_objective(self.cost, iterate),
            violation_with_layout(average, self.layout), violation_with_layout(iterate, self.layout),
            torch.linalg.matrix_norm(iterate - previous.detach()),
        ))

    def result(self) -> MatchTrace | None:
        if not self.enabled:
            return None
        return MatchTrace(*(torch.stack(column) for column in zip(*self.rows)))


def paper_iterate_and_average(problem: MatchingProblem, X0: Tensor, n_grad: int, n_proj: int, lr: float, return_trace: bool,
                 use_checkpoint: bool) -> tuple[Tensor, MatchTrace | None]:
    layout = problem.layout
    step = lr * problem.cost
    tracer = _Tracer(return_trace, problem.cost, layout)
    X, total = X0, None
    for i in range(n_grad):
        previous = X
        if use_checkpoint:
            X = _checkpoint(paper_outer_iteration, X, step, n_proj, layout, use_reentrant=False)
        else:
            X = paper_outer_iteration(X, step, n_proj, layout)
        total = X if total is None else total + X
        tracer.record(total / (i + 1), X, previous)
    return total / n_grad, tracer.result()


def release_iterate_and_average(problem: MatchingProblem, n_grad: int, n_proj: int, lr: float, tol: float, return_trace: bool,
                   use_checkpoint: bool) -> tuple[Tensor, MatchTrace | None]:
    C, layout = problem.cost, problem.layout
    B, n, m = C.shape
    step = lr * C
    tracer = _Tracer(return_trace, C, layout)
    X = greedy_one_hot_start(C, layout)
    q_columns = C.new_zeros(B, 1, m)
    q_nonneg = torch.zeros_like(C)
    active = torch.ones(B, 1, 1, dtype=torch.bool, device=C.device)
    # the release averages a list holding X^0 and, per outer iteration, X - alpha C and X^i
    total, count = X, C.new_ones(B, 1, 1)
    objective = lp_objective(C, X).detach()
    for _ in range(n_grad):
        previous = X
        state = (X, q_columns, q_nonneg, active, step, n_proj, tol, layout)
        if use_checkpoint:
            pre, X, q_columns, q_nonneg = _checkpoint(release_outer_iteration, *state, use_reentrant=False)
        else:
            pre, X, q_columns, q_nonneg = release_outer_iteration(*state)
        weight = active.to(C.dtype)
        total = total + (pre + X) * weight
        count = count + 2 * weight
        tracer.record(total / count, X, previous)
        new_objective = lp_objective(C, X).detach()
        active = active & ((new_objective - objective).abs() > tol)[:, None, None]
        objective = new_objective
        if not bool(active.any()):
            break
    return total / count, tracer.result()


# ----------------------------------------------------------------------------- after matching


def confident_assignment(X_hat: Tensor) -> Tensor:
    """X~ = X^ * 1[X^ = row max] (Sec. 4.1): keep each template's best proposal(s), zero the rest.

    X_hat [.., n, m] -> [.., n, m]. Gradients flow through the kept entries (the 0/1 mask is
    piecewise constant). Ties keep every maximal entry of a row.
    """
    X_hat = check_matrix(X_hat, "X_hat")
    keep = X_hat == X_hat.amax(-1, keepdim=True)
    return X_hat * keep.to(X_hat.dtype)


def lp_objective(cost: Tensor, X: Tensor) -> Tensor:
    """Tr(C X^T) (Eq. 2, 3) per problem: cost, X [.., n, m] -> [..]. Differentiable in both."""
    cost, X = check_matrix(cost, "cost"), check_matrix(X, "X")
    if cost.shape != X.shape:
        raise DMMInputError(f"cost has shape {list(cost.shape)} but X has shape {list(X.shape)}; expected equal")
    return (cost * X).sum((-2, -1))

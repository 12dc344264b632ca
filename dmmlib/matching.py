"""DMM-Net's differentiable matching layer (Sec. 3, Alg. 1).

A cost matrix C [B, n, m] (n templates by m proposals, batch first; [n, m] also accepted)
defines the linear program of Eq. 3:  min Tr(C X^T)  s.t.  X 1 = 1,  X^T 1 <= 1,  X >= 0.

* :func:`dmm_match` -- Alg. 1: projected gradient descent, each projection by Dykstra's
  algorithm (:mod:`dmmlib.projections`), output the average of the iterates.
  Differentiable; ``variant="release"`` reproduces the authors' released code instead
  of the paper's listing.
* :func:`paper_outer_iteration`, :func:`paper_iterate_and_average` -- Alg. 1's lines 4-11
  and 3-12, the pieces :func:`dmm_match` runs: a fixed number of fused rounds, no dtype
  conversion and no host read inside the loop; :func:`compiled_outer_iteration` is the same
  outer iteration through ``torch.compile(fullgraph=True)`` (``dmm_match(..., compiled=True)``).
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
from typing import NamedTuple

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint as _checkpoint

from dmmlib.device import any_on_host
from dmmlib.errors import DMMInputError
from dmmlib.problem import MatchingProblem, check_step, prepare_problem
from dmmlib.projections import (
    Layout,
    check_iterations,
    check_matrix,
    check_positive,
    violation_with_layout,
)

PAPER_SETTINGS = {"n_grad": 40, "n_proj": 5, "lr": 0.1}  # Sec. 4.1
RELEASE_SETTINGS = {"n_grad": 400, "n_proj": 50, "lr": 0.1}  # the authors' code (see the book's chapter 11)
RELEASE_TOL = 1e-6
VARIANTS = ("paper", "release")


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


class ProjectionWeights(NamedTuple):
    """Alg. 1's constants as tensors of the cost's dtype and device, made once per call.

    Tensors, not Python numbers: an operation between a tensor and a Python float converts the
    number to a tensor every time (four extra operations in the profiler), and a compiled loop
    would specialise on each float.

    * ``row_valid`` [B | 1, n, 1] -- 1 on a template row, 0 on padding; also the row sum Eq. 5 asks for.
    * ``col_share`` [B | 1, 1, m] -- 1 / m_valid on a valid proposal column, 0 on padding: P1 (Eq. 5)
      moves each entry of a row by the row's excess times this.
    * ``inv_n`` [B | 1, 1, 1] -- 1 / n_valid: P2 (Eq. 6) moves each entry of a column by its excess / n.
    * ``one`` [] -- the bound of Eq. 6.
    """

    row_valid: Tensor
    col_share: Tensor
    inv_n: Tensor
    one: Tensor


def projection_weights(layout: Layout, like: Tensor) -> ProjectionWeights:
    """The :class:`ProjectionWeights` of ``layout`` for a matrix ``like`` [B, n, m] (its dtype and device)."""
    n, m = like.shape[-2:]
    options = {"dtype": like.dtype, "device": like.device}
    row_valid = torch.ones(1, n, 1, **options) if layout.row_valid is None else layout.row_valid.to(**options)
    col_valid = torch.ones(1, 1, m, **options) if layout.col_valid is None else layout.col_valid.to(**options)
    inv_m = torch.as_tensor(layout.inv_m, **options).reshape(-1, 1, 1)
    inv_n = torch.as_tensor(layout.inv_n, **options).reshape(-1, 1, 1)
    return ProjectionWeights(row_valid, col_valid * inv_m, inv_n, torch.ones((), **options))


def paper_outer_iteration(X: Tensor, step: Tensor, n_proj: int, weights: ProjectionWeights) -> Tensor:
    """Alg. 1 lines 4-11: X^i = Dykstra(X^(i-1) - alpha C), N_proj rounds of P1 -> P2 -> P3 (Eq. 5-7).

    X, step = alpha C [B, n, m] (padded entries 0) -> X^i [B, n, m]. Each round is a handful of
    fused tensor operations, with no dtype conversion and no data-dependent branch, so
    ``torch.compile(paper_outer_iteration, fullgraph=True)`` compiles it whole. Dykstra's
    corrections start at zero in every outer iteration (Alg. 1) and are kept in cheap forms:

    * q1 (of the affine set C1) is dropped: it always lies in C1's normal space (constant along
      rows), which P1 removes again, so P1(Y + q1) = P1(Y) exactly.
    * q2 (of C2, a half-space per column) is a multiple of the column's normal: one value per
      column, ``q_columns`` [B, 1, m].
    * q3 = Z - relu(Z), where Z is the point P3 clips, so the next round's corrected point
      Y + q3 is Z again, moved only by P1's row shift and P2's column shift. The loop therefore
      carries Z; Y = relu(Z) is P3 (Eq. 7), and both shifts come from Y's row and column sums
      (the column sums after P1 are those before it, less the total row shift spread over the
      valid columns).

    ``dykstra_project`` keeps all three corrections as full matrices, exactly as Alg. 1 states
    them; the tests check both agree to 1e-12 in float64.
    """
    Z = X - step  # line 5: Y_0 = X^(i-1) - alpha C; Z is Y + q3 with q3 = 0
    Y = Z
    q_columns = torch.zeros_like(Z[..., :1, :])
    for j in range(n_proj):
        if j:
            Y = torch.clamp_min(Z, 0)  # P3 (Eq. 7) of the previous round
        # P1 (Eq. 5): each valid row moves by (row sum - 1) / m_valid on the valid columns
        row_excess = torch.sub(Y.sum(-1, keepdim=True), weights.row_valid)  # [B, n, 1]
        column_sums = torch.addcmul(Y.sum(-2, keepdim=True), row_excess.sum(-2, keepdim=True),
                                    weights.col_share, value=-1)  # after P1, [B, 1, m]
        # P2 (Eq. 6) on Y + q2: a column whose sum exceeds 1 moves down by its excess / n_valid
        new_q = torch.clamp_min(torch.addcmul(q_columns, column_sums - weights.one, weights.inv_n), 0)
        Z = torch.addcmul(Z, row_excess, weights.col_share, value=-1)
        Z = torch.addcmul(Z, weights.row_valid, new_q - q_columns, value=-1)
        q_columns = new_q
    return torch.clamp_min(Z, 0)  # P3 of the last round: X^i


_COMPILED: dict[str, object] = {}


def compiled_outer_iteration():
    """:func:`paper_outer_iteration` through ``torch.compile(fullgraph=True)`` (made once, on first use).

    One outer iteration becomes one compiled call (on a CPU: C++ loops built with the system
    compiler; on CUDA: Triton kernels). The first call of a shape compiles (seconds); later calls
    reuse the code, and shapes that vary become dynamic after the second one.
    """
    if "paper" not in _COMPILED:
        _COMPILED["paper"] = torch.compile(paper_outer_iteration, fullgraph=True)
    return _COMPILED["paper"]


RELEASE_CHECK_EVERY = 5  # inner rounds between two looks at the early-stopping flags (each look is a host sync)


def _release_round(Y: Tensor, q_columns: Tensor, q_nonneg: Tensor, weights: ProjectionWeights):
    """One inner round in the release's order, P3 -> P2 -> P1 (Eq. 7, 6, 5), corrections carried: (Y, q2, q3)."""
    Z = Y + q_nonneg
    Y = torch.clamp_min(Z, 0)
    q_nonneg = Z - Y
    new_q = torch.clamp_min(torch.addcmul(q_columns, Y.sum(-2, keepdim=True) - weights.one, weights.inv_n), 0)
    Y = torch.addcmul(Y, weights.row_valid, new_q - q_columns, value=-1)
    row_excess = torch.sub(Y.sum(-1, keepdim=True), weights.row_valid)
    return torch.addcmul(Y, row_excess, weights.col_share, value=-1), new_q, q_nonneg


def release_outer_iteration(X: Tensor, q_columns: Tensor, q_nonneg: Tensor, active: Tensor, step: Tensor,
                            n_proj: int, tol: Tensor, weights: ProjectionWeights) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One outer iteration as the release runs it: P3 -> P2 -> P1, corrections carried over, early stop.

    X, q_nonneg [B, n, m]; q_columns [B, 1, m]; active [B, 1, 1] bool (problems still iterating);
    tol [] (a tensor of the cost's dtype). Returns (pre-projection point X - alpha C, X^i, q_columns,
    q_nonneg). The inner loop of a problem stops once a round moves no entry by more than ``tol``;
    a stopped problem keeps its state, so a batch gives what a loop over its problems gives, and
    running rounds past the stop changes nothing: the flags are read on the host only every
    :data:`RELEASE_CHECK_EVERY` rounds, not after each one.
    """
    pre = X - step
    Y = pre
    inner_active = active
    for j in range(n_proj):
        Y_new, q_columns_new, q_nonneg_new = _release_round(Y, q_columns, q_nonneg, weights)
        moved = (Y_new - Y).detach().abs().amax((-2, -1), keepdim=True) > tol  # [B, 1, 1]
        Y = torch.where(inner_active, Y_new, Y)
        q_columns = torch.where(inner_active, q_columns_new, q_columns)
        q_nonneg = torch.where(inner_active, q_nonneg_new, q_nonneg)
        inner_active = inner_active & moved
        if (j + 1) % RELEASE_CHECK_EVERY == 0 and j + 1 < n_proj and not any_on_host(inner_active):
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
              checkpoint: bool = False, no_proposal_cost: float | None = None, tol: float = RELEASE_TOL,
              compiled: bool = False):
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
        compiled: ``variant="paper"`` only -- run each outer iteration as one
            ``torch.compile(fullgraph=True)`` call (:func:`compiled_outer_iteration`): the same
            numbers (to float rounding), far fewer operations per call; the first call of a shape
            compiles for seconds.

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
        if compiled:
            raise DMMInputError("compiled=True is for variant='paper'; the release variant stops early, "
                                "which reads flags on the host")
        tol = float(tol)
        X_hat, trace = release_iterate_and_average(problem, n_grad, n_proj, lr, tol, return_trace, checkpoint)
    else:
        X0 = _initial_point(problem, init)
        X_hat, trace = paper_iterate_and_average(problem, X0, n_grad, n_proj, lr, return_trace, checkpoint,
                                                 bool(compiled))
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
    def record(self, total: Tensor, count, iterate: Tensor, previous: Tensor) -> None:
        """One row: the running average is ``total / count`` (computed only when tracing)."""
        if not self.enabled:
            return
        average, iterate = (total / count).detach(), iterate.detach()
        self.rows.append((
            lp_objective(self.cost, average), lp_objective(self.cost, iterate),
            violation_with_layout(average, self.layout), violation_with_layout(iterate, self.layout),
            torch.linalg.matrix_norm(iterate - previous.detach()),
        ))

    def result(self) -> MatchTrace | None:
        if not self.enabled:
            return None
        return MatchTrace(*(torch.stack(column) for column in zip(*self.rows)))


def paper_iterate_and_average(problem: MatchingProblem, X0: Tensor, n_grad: int, n_proj: int, lr: float,
                              return_trace: bool, use_checkpoint: bool,
                              compiled: bool = False) -> tuple[Tensor, MatchTrace | None]:
    """Alg. 1 lines 3-12: N_grad outer iterations from X^0, output X^ = mean(X^1 .. X^N_grad) [B, n, m].

    The constants are made once, before the loop; no value is read back on the host inside it.
    ``compiled``: run each outer iteration through :func:`compiled_outer_iteration`.
    """
    weights = projection_weights(problem.layout, problem.cost)
    step = problem.cost * lr
    outer = compiled_outer_iteration() if compiled else paper_outer_iteration
    tracer = _Tracer(return_trace, problem.cost, problem.layout)
    X, total = X0, None
    for i in range(n_grad):
        previous = X
        if use_checkpoint:
            X = _checkpoint(outer, X, step, n_proj, weights, use_reentrant=False)
        else:
            X = outer(X, step, n_proj, weights)
        total = X if total is None else total + X
        tracer.record(total, i + 1, X, previous)
    return total / n_grad, tracer.result()


def release_iterate_and_average(problem: MatchingProblem, n_grad: int, n_proj: int, lr: float, tol: float,
                                return_trace: bool, use_checkpoint: bool) -> tuple[Tensor, MatchTrace | None]:
    """The release's loop (see :func:`dmm_match`); the early-stopping flags stay on the device and are
    read on the host once per outer iteration (and every few inner rounds, :func:`release_outer_iteration`)."""
    C = problem.cost
    B, n, m = C.shape
    weights = projection_weights(problem.layout, C)
    step = lr * C
    tol = torch.as_tensor(tol, dtype=C.dtype, device=C.device)
    tracer = _Tracer(return_trace, C, problem.layout)
    X = greedy_one_hot_start(C, problem.layout)
    q_columns = C.new_zeros(B, 1, m)
    q_nonneg = torch.zeros_like(C)
    active = torch.ones(B, 1, 1, dtype=torch.bool, device=C.device)
    # the release averages a list holding X^0 and, per outer iteration, X - alpha C and X^i
    total, count = X, C.new_ones(B, 1, 1)
    objective = lp_objective(C, X).detach()
    for _ in range(n_grad):
        previous = X
        state = (X, q_columns, q_nonneg, active, step, n_proj, tol, weights)
        if use_checkpoint:
            pre, X, q_columns, q_nonneg = _checkpoint(release_outer_iteration, *state, use_reentrant=False)
        else:
            pre, X, q_columns, q_nonneg = release_outer_iteration(*state)
        weight = active.to(C.dtype)
        total = total + (pre + X) * weight
        count = count + weight + weight
        tracer.record(total, count, X, previous)
        new_objective = lp_objective(C, X).detach()
        active = active & ((new_objective - objective).abs() > tol)[:, None, None]
        objective = new_objective
        if not any_on_host(active):
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

"""The three projections of DMM-Net's matching layer (Eq. 4-7) and Dykstra's algorithm.

The relaxed matching problem (Eq. 3) constrains the assignment matrix X [.., n, m]
(n templates by m proposals) to the intersection of three closed convex sets (Eq. 4):

* C1 = {X : X 1_m = 1_n}      every template row sums to one          (projection P1, Eq. 5)
* C2 = {X : X^T 1_n <= 1_m}   every proposal column sums to at most one (projection P2, Eq. 6)
* C3 = {X : X >= 0}                                                   (projection P3, Eq. 7)

Each projection has a closed form. Projecting onto the intersection needs an
iterative method: :func:`dykstra_project` (what Alg. 1 uses, lines 5-11) converges to
the Euclidean projection; :func:`alternating_project` (the same cycle without the
correction terms) converges to *some* point of the intersection, usually not the nearest.

Every function works on any leading batch dimensions and takes optional boolean
masks ``template_mask`` [.., n] and ``proposal_mask`` [.., m] so that one batch can
hold problems of different sizes: padded rows and columns take no part in any sum
and come out exactly zero.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from dmmlib.errors import DMMInputError

# ----------------------------------------------------------------------------- masks


@dataclass(frozen=True)
class Layout:
    """Where the valid rows and columns are, in the forms the projections need.

    ``row_valid`` [.., n, 1] and ``col_valid`` [.., 1, m] are 0/1 tensors of X's dtype
    (``None`` when there is no padding along that axis); ``inv_n`` / ``inv_m`` are
    1 / (number of valid templates / proposals), per problem [.., 1, 1] or a float.
    """

    row_valid: Tensor | None
    col_valid: Tensor | None
    inv_n: Tensor | float
    inv_m: Tensor | float

    @property
    def row_target(self) -> Tensor | float:
        # A padded row must sum to 0 (it is all zeros), a valid one to 1 (Eq. 5).
        return 1.0 if self.row_valid is None else self.row_valid

    def zero_padding(self, X: Tensor) -> Tensor:
        """X with every padded entry set to exactly 0 (a no-op without masks)."""
        if self.row_valid is not None:
            X = X * self.row_valid
        if self.col_valid is not None:
            X = X * self.col_valid
        return X


def _check_mask(mask, expected_shape: tuple[int, ...], name: str, device) -> Tensor:
    if not isinstance(mask, Tensor):
        raise DMMInputError(f"{name} must be a torch.Tensor of booleans with shape {list(expected_shape)}, "
                            f"got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise DMMInputError(f"{name} must have dtype torch.bool, got {mask.dtype}")
    if tuple(mask.shape) != tuple(expected_shape):
        raise DMMInputError(f"{name} has shape {list(mask.shape)}; expected {list(expected_shape)} "
                            f"to match the cost/assignment matrix")
    return mask.to(device)


def make_layout(shape: torch.Size | tuple[int, ...], template_mask: Tensor | None, proposal_mask: Tensor | None,
                dtype: torch.dtype, device: torch.device) -> Layout:
    """Check the masks against a matrix shape [.., n, m] and precompute a :class:`Layout`."""
    *lead, n, m = shape
    row_valid = col_valid = None
    inv_n: Tensor | float = 1.0 / n
    inv_m: Tensor | float = 1.0 / m
    if template_mask is not None:
        mask = _check_mask(template_mask, (*lead, n), "template_mask", device)
        row_valid = mask.to(dtype).unsqueeze(-1)
        # clamp: a problem with no valid template has nothing to divide, and must not make NaNs.
        inv_n = 1.0 / row_valid.sum(-2, keepdim=True).clamp_min(1.0)
    if proposal_mask is not None:
        mask = _check_mask(proposal_mask, (*lead, m), "proposal_mask", device)
        col_valid = mask.to(dtype).unsqueeze(-2)
        inv_m = 1.0 / col_valid.sum(-1, keepdim=True).clamp_min(1.0)
    return Layout(row_valid, col_valid, inv_n, inv_m)


def check_matrix(X, name: str = "X") -> Tensor:
    """Raise :class:`DMMInputError` unless X is a floating tensor [.., n, m] with n, m >= 1."""
    if not isinstance(X, Tensor):
        raise DMMInputError(f"{name} must be a torch.Tensor of shape [..., n, m], got {type(X).__name__} "
                            f"(convert numpy arrays with torch.as_tensor)")
    if X.ndim < 2:
        raise DMMInputError(f"{name} has shape {list(X.shape)}; expected at least 2 dimensions [..., n, m]")
    if not X.is_floating_point():
        raise DMMInputError(f"{name} has dtype {X.dtype}; expected a floating dtype (float32 or float64)")
    if X.shape[-1] == 0 or X.shape[-2] == 0:
        raise DMMInputError(f"{name} has shape {list(X.shape)}; expected n >= 1 templates and m >= 1 proposals")
    return X


def _prepare(X, template_mask, proposal_mask) -> tuple[Tensor, Layout]:
    X = check_matrix(X)
    layout = make_layout(X.shape, template_mask, proposal_mask, X.dtype, X.device)
    return layout.zero_padding(X), layout


# ----------------------------------------------------------------------------- P1, P2, P3
# rows_sum_to_one / columns_sum_at_most_one take a precomputed Layout and assume padded entries
# of X are 0; the matching layer calls them thousands of times, so they do no checking.


def rows_sum_to_one(X: Tensor, layout: Layout) -> Tensor:
    """P1 (Eq. 5) on a checked X [.., n, m] whose padded entries are 0: each row shifted to sum to 1."""
    shift = (X.sum(-1, keepdim=True) - layout.row_target) * layout.inv_m  # [.., n, 1]
    if layout.col_valid is not None:
        shift = shift * layout.col_valid
    return X - shift


def columns_sum_at_most_one(X: Tensor, layout: Layout) -> Tensor:
    """P2 (Eq. 6, column by column) on a checked X: each column summing above 1 lowered by its excess / n."""
    excess = torch.relu(X.sum(-2, keepdim=True) - 1.0) * layout.inv_n  # [.., 1, m]
    if layout.row_valid is not None:
        excess = excess * layout.row_valid
    return X - excess


def project_rows_sum_to_one(X: Tensor, template_mask: Tensor | None = None,
                            proposal_mask: Tensor | None = None) -> Tensor:
    """P1 (Eq. 5): the Euclidean projection onto C1 = {X : X 1_m = 1_n}.

    X [.., n, m] -> [.., n, m]: each row is shifted by the same amount in every entry,
    (row sum - 1) / m, so that it sums to 1. With masks, m counts the valid proposals
    of that row's problem and padded entries come out 0.
    """
    X, layout = _prepare(X, template_mask, proposal_mask)
    return rows_sum_to_one(X, layout)


def project_columns_sum_at_most_one(X: Tensor, template_mask: Tensor | None = None,
                                    proposal_mask: Tensor | None = None) -> Tensor:
    """P2 (Eq. 6, read column by column): the Euclidean projection onto C2 = {X : X^T 1_n <= 1_m}.

    X [.., n, m] -> [.., n, m]. C2 is a product of half-spaces, one per column, so the
    projection acts on each column alone: a column whose sum s_j exceeds 1 is lowered by
    (s_j - 1) / n in every entry; the other columns are left untouched. With masks, n counts
    the valid templates of that column's problem. Compare :func:`project_columns_literal_eq6`.
    """
    X, layout = _prepare(X, template_mask, proposal_mask)
    return columns_sum_at_most_one(X, layout)


def project_nonnegative(X: Tensor, template_mask: Tensor | None = None,
                        proposal_mask: Tensor | None = None) -> Tensor:
    """P3 (Eq. 7): the Euclidean projection onto C3 = {X >= 0}, i.e. ReLU. [.., n, m] -> [.., n, m]."""
    X, _ = _prepare(X, template_mask, proposal_mask)
    return torch.relu(X)


def project_columns_literal_eq6(X: Tensor, template_mask: Tensor | None = None,
                                proposal_mask: Tensor | None = None) -> Tensor:
    """Eq. 6 read literally -- *not* a projection onto C2; kept to show why.

    X [.., n, m] -> [.., n, m]. If every column sum is <= 1, X is returned; otherwise
    every column is shifted by (s_j - 1) / n, including the columns that already satisfied
    the constraint (whose entries are then *raised*). The result lands in C2 (all sums
    become 1) but is not the nearest point of C2.
    """
    X, layout = _prepare(X, template_mask, proposal_mask)
    col_sums = X.sum(-2, keepdim=True)  # [.., 1, m]
    if layout.col_valid is not None:
        # padded columns sum to 0 and must neither trigger the shift nor be shifted
        col_sums_for_test = col_sums.masked_fill(layout.col_valid == 0, 0.0)
    else:
        col_sums_for_test = col_sums
    any_exceeds = (col_sums_for_test > 1.0).any(-1, keepdim=True)  # [.., 1, 1]
    shift = (col_sums - 1.0) * layout.inv_n
    return layout.zero_padding(torch.where(any_exceeds, X - shift, X))


# ----------------------------------------------------------------------------- the intersection

PAPER_ORDER = ("rows", "columns", "nonnegative")  # Alg. 1 lines 7-9: P1 -> P2 -> P3

_PROJECTIONS: dict[str, Callable[[Tensor, Layout], Tensor]] = {
    "rows": rows_sum_to_one,
    "columns": columns_sum_at_most_one,
    "nonnegative": lambda X, layout: torch.relu(X),
}


def _check_order(order) -> tuple[str, ...]:
    order = tuple(order)
    if sorted(order) != sorted(PAPER_ORDER):
        raise DMMInputError(f"order={order!r}; expected a permutation of {PAPER_ORDER}")
    return order


def check_iterations(n_iter, name: str = "n_iter") -> int:
    """``n_iter`` as an int, or :class:`DMMInputError` unless it is an integer >= 1."""
    if isinstance(n_iter, bool) or not isinstance(n_iter, numbers.Integral) or n_iter < 1:
        raise DMMInputError(f"{name}={n_iter!r}; expected an integer >= 1")
    return int(n_iter)


def dykstra_project(X: Tensor, n_iter: int, template_mask: Tensor | None = None,
                    proposal_mask: Tensor | None = None, order=PAPER_ORDER) -> Tensor:
    """Dykstra's cyclic projection of X onto C1 ∩ C2 ∩ C3 (Alg. 1, lines 5-11).

    X [.., n, m] -> [.., n, m]. Runs ``n_iter`` rounds; each round projects the corrected
    point onto each set in ``order`` (default P1 -> P2 -> P3) and stores the difference
    between the pre- and post-projection points as that set's correction q_k. Each round
    starts from the previous round's output (Y_0 <- Y_3); all q_k start at zero. Converges
    to the Euclidean projection onto the intersection (Boyle & Dykstra 1986).

    Written with one full correction matrix per set, exactly as Alg. 1 states it;
    :func:`dmmlib.matching.dmm_match` uses an equivalent cheaper form.
    """
    check_iterations(n_iter)
    order = _check_order(order)
    Y, layout = _prepare(X, template_mask, proposal_mask)
    corrections = [torch.zeros_like(Y) for _ in order]
    for _ in range(n_iter):
        for k, name in enumerate(order):
            corrected = Y + corrections[k]
            Y = _PROJECTIONS[name](corrected, layout)
            corrections[k] = corrected - Y
    return Y


def alternating_project(X: Tensor, n_iter: int, template_mask: Tensor | None = None,
                        proposal_mask: Tensor | None = None, order=PAPER_ORDER) -> Tensor:
    """Plain cyclic projections P1 -> P2 -> P3 without Dykstra's corrections, for comparison.

    X [.., n, m] -> [.., n, m]. Converges to a point of the intersection, in general not the
    nearest one to X.
    """
    check_iterations(n_iter)
    order = _check_order(order)
    Y, layout = _prepare(X, template_mask, proposal_mask)
    for _ in range(n_iter):
        for name in order:
            Y = _PROJECTIONS[name](Y, layout)
    return Y


def check_positive(value, name: str) -> float:
    """``value`` as a float, or :class:`DMMInputError` unless it is a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise DMMInputError(f"{name}={value!r}; expected a finite number > 0")
    return float(value)


# ----------------------------------------------------------------------------- diagnostics


def constraint_violation(X: Tensor, template_mask: Tensor | None = None, proposal_mask: Tensor | None = None,
                         per_constraint: bool = False) -> Tensor | tuple[Tensor, Tensor, Tensor]:
    """How far X [.., n, m] is from the feasible set of Eq. 3, per problem [..].

    Returns the largest of: |row sum - 1| over valid rows, (column sum - 1)^+ over valid
    columns, and (-X_ij)^+. With ``per_constraint=True`` returns the three maxima separately
    (rows, columns, negativity). Padded entries are ignored. Zero means feasible.
    """
    X, layout = _prepare(X, template_mask, proposal_mask)
    return violation_with_layout(X, layout, per_constraint)


def violation_with_layout(X: Tensor, layout: Layout, per_constraint: bool = False):
    """:func:`constraint_violation` for an X whose padded entries are already 0 (no checks)."""
    row_target = 1.0 if layout.row_valid is None else layout.row_valid.squeeze(-1)
    rows = (X.sum(-1) - row_target).abs().amax(-1)
    columns = torch.relu(X.sum(-2) - 1.0).amax(-1)
    negativity = torch.relu(-X).amax((-2, -1))
    if per_constraint:
        return rows, columns, negativity
    return torch.maximum(torch.maximum(rows, columns), negativity)

"""Small worked examples for the matching chapters (Part I of the book).

Everything here is deliberately small and exact, so that a chapter can check a claim
of Sec. 3 of the paper against an independent reference:

* a matching problem drawn from a real photograph (scikit-image's ``coins``, bundled
  with the wheel, so nothing is downloaded): the coins of "frame 1" are the templates
  r_i; "frame 2" is the same scene after a small camera pan, and its mask proposals
  p_j are the moved coins with imperfect outlines plus distractors (fragments, two
  coins merged into one mask, coins nobody tracks) -- :func:`make_coin_example`;
* a tiny fixed appearance feature standing in for the learned f_theta of Eq. 1
  (:func:`appearance_features`); the cost itself is :func:`dmmlib.cost.matching_cost`,
  the same code the model uses (:meth:`CoinExample.cost`);
* the LP relaxation of Eq. 3 written out as a constraint matrix and solved with HiGHS
  -- :func:`assignment_constraints`, :func:`solve_lp_relaxation`;
* the exact Euclidean projection onto the feasible set of Eq. 3, computed by a QP
  solver and certified by its KKT conditions -- :func:`exact_projection`, the reference
  that Dykstra's algorithm (Alg. 1, lines 5-11) is measured against;
* :func:`plot_matrix`, a heat map of an assignment matrix with its row and column sums, and
  :func:`draw_masks`, mask outlines over a frame.

Arrays are numpy ``float64`` (the reference solvers are scipy's); shapes are given as
``[n, m]`` with n templates (rows) and m proposals (columns), as in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import matplotlib.patches as patches
import matplotlib.pyplot as plt
import numpy as np
import skimage.data
import torch
from scipy import ndimage
from scipy.optimize import linprog, minimize
from skimage import filters, measure, segmentation

from dmmlib.cost import LAMBDA_DAVIS, matching_cost
from dmmlib.errors import DMMInputError

# ----------------------------------------------------------------------------- the photograph


@lru_cache(maxsize=1)
def segment_coins() -> tuple[np.ndarray, np.ndarray]:
    """The ``coins`` photograph and a label image of its coins.

    Returns ``(image [H, W] float64 in [0, 1], labels [H, W] int)`` where label k >= 1
    marks the k-th coin and 0 is background. The coins are found by a local threshold
    (the illumination of the photo is uneven, so one global threshold splits it badly),
    with holes filled, specks removed and coins touching the border dropped. Both arrays
    are read-only (cached).
    """
    image = skimage.data.coins().astype(np.float64) / 255.0
    smooth = filters.gaussian(image, sigma=2)
    foreground = smooth > filters.threshold_local(smooth, block_size=101)
    foreground = ndimage.binary_fill_holes(foreground)
    foreground = segmentation.clear_border(foreground)
    labels = measure.label(foreground)
    # drop specks: a coin covers more than 500 pixels, noise far fewer
    sizes = np.bincount(labels.ravel())
    small = np.flatnonzero(sizes < 500)
    labels[np.isin(labels, small[small > 0])] = 0
    labels = measure.label(labels > 0)
    image.setflags(write=False)
    labels.setflags(write=False)
    return image, labels


# ----------------------------------------------------------------------------- Eq. 1


#: bins of the two histograms that make up :func:`appearance_features`
INTENSITY_BINS = 12
GRADIENT_BINS = 6


def appearance_features(image, masks) -> np.ndarray:
    """A tiny fixed appearance feature for each mask: ``[H, W]`` x ``[k, H, W]`` -> ``[k, d]``.

    The stand-in for the learned f_theta of Eq. 1: a normalised histogram of the pixel
    intensities under the mask (how bright the object is) next to a normalised histogram
    of the gradient magnitude under it (how much texture it has), d = 12 + 6. Both parts
    are non-negative, so the cosine of two features lies in [0, 1].
    """
    image = np.asarray(image, dtype=np.float64)
    masks = np.asarray(masks, dtype=bool)
    if image.ndim != 2 or masks.ndim != 3 or masks.shape[1:] != image.shape:
        raise DMMInputError(f"appearance_features: image {list(image.shape)} and masks {list(masks.shape)}; "
                            "expected [H, W] and [k, H, W]")
    gradient = filters.sobel(image)
    features = []
    for mask in masks:
        intensity_hist = np.histogram(image[mask], bins=INTENSITY_BINS, range=(0.0, 1.0))[0]
        gradient_hist = np.histogram(gradient[mask], bins=GRADIENT_BINS, range=(0.0, 0.3))[0]
        parts = [h / max(h.sum(), 1) for h in (intensity_hist, gradient_hist)]
        features.append(np.concatenate(parts))
    return np.asarray(features, dtype=np.float64).reshape(len(masks), INTENSITY_BINS + GRADIENT_BINS)


# ----------------------------------------------------------------------------- a matching problem from the photo


@dataclass(frozen=True)
class CoinExample:
    """Templates in frame 1 and proposals in frame 2 of the coins scene.

    ``frame1``, ``frame2`` [H, W]; ``template_masks`` [n, H, W] (frame 1);
    ``proposal_masks`` [m, H, W] (frame 2); ``proposal_kinds`` names what each proposal
    is ("match", "fragment", "merged", "other coin"); ``true_proposal`` [n] is the column
    of each template's own (imperfectly outlined) coin; ``pan`` is the camera motion
    (dy, dx) in pixels between the frames.
    """

    frame1: np.ndarray
    frame2: np.ndarray
    template_masks: np.ndarray
    proposal_masks: np.ndarray
    proposal_kinds: tuple[str, ...]
    true_proposal: np.ndarray
    pan: tuple[int, int]

    @property
    def n(self) -> int:
        return len(self.template_masks)

    @property
    def m(self) -> int:
        return len(self.proposal_masks)

    def cost_terms(self, lam: float = LAMBDA_DAVIS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(cost, cosine, iou)``, each ``[n, m]`` float64: Eq. 1 and its two ingredients.

        Computed by :func:`dmmlib.cost.matching_cost` (the model's own Eq. 1). The templates'
        features are read from frame 1, the proposals' from frame 2; IoU compares the masks
        where they lie (the templates did not move with the camera).
        """
        def batch(array):  # [k, ...] -> [1, k, ...] float64 tensor
            return torch.as_tensor(np.asarray(array, dtype=np.float64))[None]

        terms = matching_cost(batch(appearance_features(self.frame1, self.template_masks)),
                              batch(appearance_features(self.frame2, self.proposal_masks)),
                              batch(self.template_masks), batch(self.proposal_masks), lam=lam)
        return tuple(t[0].numpy() for t in terms)

    def cost(self, lam: float = LAMBDA_DAVIS) -> np.ndarray:
        """The Eq. 1 cost matrix ``[n, m]`` (float64)."""
        return self.cost_terms(lam)[0]

    def true_assignment(self) -> np.ndarray:
        """The 0/1 matrix ``[n, m]`` that sends every template to its own coin."""
        X = np.zeros((self.n, self.m))
        X[np.arange(self.n), self.true_proposal] = 1.0
        return X


def _jitter_outline(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A proposal's imperfect outline: grow or shrink the mask by 1-3 pixels."""
    radius = int(rng.integers(1, 4))
    if rng.random() < 0.5:
        return ndimage.binary_dilation(mask, iterations=radius)
    return ndimage.binary_erosion(mask, iterations=radius)


def _half(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A fragment: the part of ``mask`` on one side of a random line through its centre."""
    ys, xs = np.nonzero(mask)
    angle = rng.uniform(0, np.pi)
    side = (ys - ys.mean()) * np.sin(angle) + (xs - xs.mean()) * np.cos(angle) > 0
    fragment = np.zeros_like(mask)
    fragment[ys[side], xs[side]] = True
    return fragment


def make_coin_example(n_templates: int = 4, n_fragments: int = 1, n_merged: int = 1, n_other: int = 3,
                      pan: tuple[int, int] = (6, 9), noise: float = 0.03, seed: int = 0) -> CoinExample:
    """A matching problem from the ``coins`` photograph (see :class:`CoinExample`).

    Frame 1 and frame 2 are two crops of the photo, offset by ``pan`` (a camera pan), with
    Gaussian pixel noise of standard deviation ``noise`` and a slight brightness change in
    frame 2. ``n_templates`` coins, picked at random, are tracked. Proposals in frame 2,
    in random order: each tracked coin with its outline grown or shrunk by 1-3 px
    ("match"), ``n_fragments`` halves of tracked coins ("fragment"), ``n_merged`` masks
    that join a tracked coin with its nearest neighbour ("merged") and ``n_other``
    untracked coins ("other coin"). Deterministic given ``seed``.
    """
    for name, value in (("n_templates", n_templates), ("n_fragments", n_fragments), ("n_merged", n_merged),
                        ("n_other", n_other)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name == "n_templates" else 0):
            raise DMMInputError(f"make_coin_example: {name}={value!r}; expected an integer >= "
                                f"{1 if name == 'n_templates' else 0}")
    if n_fragments > n_templates or n_merged > n_templates:
        raise DMMInputError(f"make_coin_example: n_fragments={n_fragments} and n_merged={n_merged} "
                            f"may not exceed n_templates={n_templates}")
    dy, dx = (int(v) for v in pan)
    if not (0 <= dy <= 30 and 0 <= dx <= 30):
        raise DMMInputError(f"make_coin_example: pan={pan!r}; expected two integers in [0, 30]")
    rng = np.random.default_rng(seed)
    image, labels = segment_coins()
    H, W = image.shape[0] - 30, image.shape[1] - 30

    def crop(array, oy, ox):
        return array[oy:oy + H, ox:ox + W]

    labels1, labels2 = crop(labels, 0, 0), crop(labels, dy, dx)
    # only coins that lie whole inside both frames can be tracked or proposed
    whole = [k for k in range(1, labels.max() + 1)
             if (labels1 == k).sum() == (labels == k).sum() == (labels2 == k).sum()]
    if n_templates + n_other > len(whole):
        raise DMMInputError(f"make_coin_example: n_templates + n_other = {n_templates + n_other}; "
                            f"the photo has only {len(whole)} whole coins")
    chosen = rng.permutation(whole)
    tracked, others = chosen[:n_templates], chosen[n_templates:n_templates + n_other]

    frame1 = crop(image, 0, 0) + noise * rng.standard_normal((H, W))
    frame2 = 1.05 * crop(image, dy, dx) + noise * rng.standard_normal((H, W))
    frame1, frame2 = np.clip(frame1, 0, 1), np.clip(frame2, 0, 1)

    templates = np.stack([labels1 == k for k in tracked])
    proposals, kinds, owner = [], [], []
    for i, k in enumerate(tracked):
        proposals.append(_jitter_outline(labels2 == k, rng))
        kinds.append("match")
        owner.append(i)
    for k in rng.choice(tracked, size=n_fragments, replace=False):
        proposals.append(_half(labels2 == k, rng))
        kinds.append("fragment")
        owner.append(-1)
    centres = {k: np.argwhere(labels2 == k).mean(0) for k in range(1, labels.max() + 1) if (labels2 == k).any()}
    for k in rng.choice(tracked, size=n_merged, replace=False):
        # the partner is a coin that appears in no other proposal, so every mask stays distinct
        free = [j for j in centres if j not in set(tracked) | set(others)]
        neighbour = min(free, key=lambda j: np.linalg.norm(centres[j] - centres[k]))
        proposals.append((labels2 == k) | (labels2 == neighbour))
        kinds.append("merged")
        owner.append(-1)
    for k in others:
        proposals.append(_jitter_outline(labels2 == k, rng))
        kinds.append("other coin")
        owner.append(-1)
    order = rng.permutation(len(proposals))
    proposals = np.stack([proposals[j] for j in order])
    kinds = tuple(kinds[j] for j in order)
    owner = np.asarray(owner)[order]
    true_proposal = np.array([int(np.flatnonzero(owner == i)[0]) for i in range(n_templates)])
    return CoinExample(frame1=frame1, frame2=frame2, template_masks=templates, proposal_masks=proposals,
                       proposal_kinds=kinds, true_proposal=true_proposal, pan=(dy, dx))


# ----------------------------------------------------------------------------- Eq. 2-3 as a linear program


def _check_cost(cost, name: str = "cost") -> np.ndarray:
    C = np.asarray(cost, dtype=np.float64)
    if C.ndim != 2 or C.shape[0] < 1 or C.shape[1] < C.shape[0]:
        raise DMMInputError(f"{name} has shape {list(C.shape)}; expected [n, m] with 1 <= n <= m "
                            "(every template needs its own proposal)")
    if not np.isfinite(C).all():
        raise DMMInputError(f"{name} holds non-finite values")
    return C


def assignment_constraints(n: int, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The constraints of Eq. 3 on vec(X) (row-major, entry (i, j) at index i*m + j).

    Returns ``(A_eq [n, nm], b_eq [n], A_ub [m, nm], b_ub [m])``: row i of ``A_eq`` sums
    template i's entries (X 1_m = 1_n), row j of ``A_ub`` sums proposal j's entries
    (X^T 1_n <= 1_m). Stacked, they form the incidence matrix of the complete bipartite
    graph between templates and proposals: every column holds exactly two ones.
    """
    if n < 1 or m < 1:
        raise DMMInputError(f"assignment_constraints: n={n}, m={m}; expected both >= 1")
    A_eq = np.kron(np.eye(n), np.ones((1, m)))
    A_ub = np.kron(np.ones((1, n)), np.eye(m))
    return A_eq, np.ones(n), A_ub, np.ones(m)


def solve_lp_relaxation(cost) -> tuple[np.ndarray, float]:
    """Solve the LP relaxation (Eq. 3) with HiGHS: ``cost [n, m]`` -> ``(X [n, m], optimal value)``.

    An independent reference for the matching layer: a simplex/interior-point solver that
    knows nothing of Hungarian or Dykstra. The bounds X >= 0 are the third constraint.
    """
    C = _check_cost(cost)
    n, m = C.shape
    A_eq, b_eq, A_ub, b_ub = assignment_constraints(n, m)
    result = linprog(C.ravel(), A_ub=A_ub, b_ub=b_ub, A_eq=A_eq, b_eq=b_eq, bounds=(0, None), method="highs")
    if result.status != 0:
        raise RuntimeError(f"HiGHS did not solve the LP: {result.message}")
    return result.x.reshape(n, m), float(result.fun)


# ----------------------------------------------------------------------------- the exact projection onto C1 ∩ C2 ∩ C3


def _kkt_polish(X: np.ndarray, zero: np.ndarray, tight: np.ndarray):
    """Solve the KKT system of the projection for a guessed active set.

    Returns ``(Y, KKT error, residual X - u - v, v)``.

    With multipliers u_i (rows), v_j >= 0 (columns) the projection is
    Y_ij = max(0, X_ij - u_i - v_j). On the entries guessed positive ("free"), the row sums
    and the sums of the columns guessed tight are linear in (u, v): solve them exactly.
    """
    n, m = X.shape
    free = ~zero
    T = np.flatnonzero(tight)
    # unknowns: u (n), then v_j for j in T
    A = np.zeros((n + len(T), n + len(T)))
    b = np.zeros(n + len(T))
    for i in range(n):
        A[i, i] = free[i].sum()
        for k, j in enumerate(T):
            A[i, n + k] = free[i, j]
        b[i] = X[i, free[i]].sum() - 1.0
    for k, j in enumerate(T):
        A[n + k, :n] = free[:, j]
        A[n + k, n + k] = free[:, j].sum()
        b[n + k] = X[free[:, j], j].sum() - 1.0
    solution = np.linalg.lstsq(A, b, rcond=None)[0]
    u = solution[:n]
    v = np.zeros(m)
    v[T] = solution[n:]
    residual = X - u[:, None] - v[None, :]
    Y = np.where(free, residual, 0.0)
    # KKT: primal feasibility, dual feasibility (v >= 0, zero entries have residual <= 0),
    # complementary slackness (v_j > 0 only on tight columns, enforced by construction)
    error = max(np.abs(Y.sum(1) - 1).max(),
                np.maximum(Y.sum(0) - 1, 0).max(),
                np.maximum(-Y, 0).max(),
                np.maximum(-v, 0).max(),
                np.maximum(np.where(zero, residual, -np.inf), 0).max())
    return Y, float(error), residual, v


def exact_projection(X, tol: float = 1e-10) -> np.ndarray:
    """The Euclidean projection of ``X [n, m]`` onto {X 1 = 1, X^T 1 <= 1, X >= 0} (n <= m).

    The reference for Dykstra's algorithm, computed without it: scipy's SLSQP solves the QP
    min ||Y - X||_F^2 over the feasible set of Eq. 3; its active set (which entries are 0,
    which columns sum to 1) is then used to solve the KKT conditions exactly, and the result
    is returned only if it satisfies them to ``tol`` -- a certificate of optimality, since
    the problem is convex. If SLSQP's active set is off, it is corrected (a primal-dual
    active-set step) a few times before giving up with ``RuntimeError``.
    """
    X = _check_cost(X, name="X")
    n, m = X.shape
    A_eq, b_eq, A_ub, b_ub = assignment_constraints(n, m)
    x = X.ravel()
    result = minimize(lambda y: 0.5 * np.sum((y - x) ** 2), np.full(n * m, 1.0 / m), jac=lambda y: y - x,
                      method="SLSQP", bounds=[(0.0, None)] * (n * m),
                      constraints=[{"type": "eq", "fun": lambda y: A_eq @ y - b_eq, "jac": lambda y: A_eq},
                                   {"type": "ineq", "fun": lambda y: b_ub - A_ub @ y, "jac": lambda y: -A_ub}],
                      options={"ftol": 1e-15, "maxiter": 2000})
    Y = result.x.reshape(n, m)
    zero = Y <= 1e-7
    tight = Y.sum(0) >= 1 - 1e-7
    for _ in range(20):
        Y, error, residual, v = _kkt_polish(X, zero, tight)
        if error <= tol:
            return Y
        # re-guess the active set from the multipliers: an entry is zero where its
        # residual is not positive; a column is tight where its multiplier is positive
        # or where it would otherwise sum to more than one
        zero = residual <= 0
        tight = (v > 0) | (np.maximum(residual, 0).sum(0) > 1)
    raise RuntimeError(f"exact_projection: could not certify the projection (KKT error {error:.2e} > {tol:.0e})")


# ----------------------------------------------------------------------------- pictures


def plot_matrix(ax, X, title: str = "", sums: bool = True, row_labels=None, col_labels=None,
                cmap: str = "viridis", vmin: float | None = None, vmax: float | None = None,
                fmt: str = "{:.2f}", outline=None):
    """Draw ``X [n, m]`` as a heat map with its entries written in the cells.

    With ``sums=True`` the row sums are written to the right and the column sums below,
    in red where they break a constraint of Eq. 3 (row sum != 1, column sum > 1).
    ``outline`` is an optional 0/1 matrix whose ones get a white frame (an assignment).
    Returns the image artist (for a colour bar).
    """
    X = np.asarray(X, dtype=np.float64)
    n, m = X.shape
    image = ax.imshow(X, cmap=cmap, vmin=vmin, vmax=vmax, aspect="equal")
    for i in range(n):
        for j in range(m):
            # dark text on light cells, light text on dark ones (by the cell colour's luminance)
            red, green, blue, _ = image.cmap(image.norm(X[i, j]))
            dark_text = 0.299 * red + 0.587 * green + 0.114 * blue > 0.5
            ax.text(j, i, "0" if X[i, j] == 0 else fmt.format(X[i, j]), ha="center", va="center", fontsize=8,
                    color="black" if dark_text else "white")
    if outline is not None:
        for i, j in np.argwhere(np.asarray(outline) > 0.5):
            ax.add_patch(patches.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="white", linewidth=3.5))
            ax.add_patch(patches.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="crimson", linewidth=2))
    if sums:
        for i, s in enumerate(X.sum(1)):
            ax.text(m - 0.3, i, f"Σ {s:.2f}", ha="left", va="center", fontsize=8,
                    color="crimson" if abs(s - 1) > 1e-6 else "black")
        for j, s in enumerate(X.sum(0)):
            ax.text(j, n - 0.3, f"{s:.2f}", ha="center", va="top", fontsize=8,
                    color="crimson" if s > 1 + 1e-6 else "black")
        ax.set_xlim(-0.5, m + 0.6)
        ax.set_ylim(n + 0.3, -0.5)
        # the axes now reach past the matrix: frame the matrix itself instead of the axes
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.add_patch(patches.Rectangle((-0.5, -0.5), m, n, fill=False, edgecolor="0.3", linewidth=0.8))
        ax.tick_params(length=0)
    ax.set_xticks(range(m), col_labels if col_labels is not None else [f"p{j + 1}" for j in range(m)],
                  fontsize=8)
    ax.set_yticks(range(n), row_labels if row_labels is not None else [f"r{i + 1}" for i in range(n)],
                  fontsize=8)
    ax.xaxis.tick_top()
    if title:
        ax.set_title(title, fontsize=10, pad=20)
    return image


def draw_masks(ax, image, masks, names=None, colours=None, title: str = "", label_below=None, dashed=None):
    """Show a greyscale ``image [H, W]`` with the outlines of ``masks [k, H, W]`` drawn on it.

    Each outline gets a colour (default: matplotlib's ``tab10`` cycle) and, if ``names`` are
    given, a label at the mask's top-left corner (bottom-left where ``label_below[k]`` is true,
    for masks that share a corner with another). Outlines with ``dashed[k]`` true are dashed
    and drawn on top, so that a mask overlapping another stays visible.
    """
    masks = np.asarray(masks, dtype=bool)
    ax.imshow(image, cmap="gray", vmin=0, vmax=1)
    palette = plt.get_cmap("tab10").colors
    for k, mask in enumerate(masks):
        colour = colours[k] if colours is not None else palette[k % len(palette)]
        if mask.any():
            is_dashed = dashed is not None and dashed[k]
            ax.contour(mask.astype(float), levels=[0.5], colors=[colour], linewidths=1.8,
                       linestyles="--" if is_dashed else "-", zorder=3 if is_dashed else 2)
            if names is not None:
                ys, xs = np.nonzero(mask)
                below = label_below is not None and label_below[k]
                ax.text(xs.min(), ys.max() + 3 if below else ys.min() - 3, names[k], color=colour, fontsize=9,
                        fontweight="bold", ha="left", va="top" if below else "bottom",
                        bbox=dict(boxstyle="round,pad=0.1", facecolor="black", alpha=0.5, linewidth=0))
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=10)

"""Two more interactive figures of Part I, in the style of the convergence explorer.

* :func:`projection_stepper` (chapter 2) -- Dykstra's cyclic projections (Alg. 1, lines 5-11)
  and plain alternating projections, side by side, round by round, on a small matrix; with the
  distance of each to the exact projection (:func:`dmmlib.lessons.toy.exact_projection`).
* :func:`gradient_explorer` (chapter 4) -- move one cost entry C_ij and watch X^ and dL/dC of the
  cross-entropy loss change, for Alg. 1 (:func:`~dmmlib.matching.dmm_match`) and the Sinkhorn
  layer (:func:`~dmmlib.matchers.sinkhorn_match`) side by side.

Both are :class:`~dmmlib.lessons.interactive.Explorer` descriptions: one description, drawn by
the same JavaScript live (the kernel computes each state) and in the static page (every state
pre-computed).
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import torch
from torch import Tensor

from dmmlib.errors import DMMInputError
from dmmlib.lessons.cost_learning import matching_loss
from dmmlib.lessons.interactive import Computed, Explorer, control, fixed, note, sci, show_explorer, sig
from dmmlib.lessons.toy import exact_projection
from dmmlib.matchers import hungarian_match, sinkhorn_match
from dmmlib.matching import dmm_match
from dmmlib.projections import alternating_project, constraint_violation, dykstra_project

__all__ = ["STEPPER_ROUNDS", "GRADIENT_DELTAS", "GRADIENT_METHODS", "stepper_description", "projection_stepper",
           "gradient_description", "gradient_explorer"]

# ----------------------------------------------------------------------------- the projection stepper

#: The rounds the stepper offers: every round up to 10, then log-spaced to 400 (round 0 is X itself).
STEPPER_ROUNDS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 15, 20, 30, 50, 100, 200, 400)

STEPPER_NOTES = {
    "start": "Round 0 is the starting point X itself: both methods start here.",
    "dykstra_there": "Dykstra's iterate is within 1e-9 of the exact projection.",
    "alternating_stuck": ("Alternating projections have stopped moving (round {k} changed nothing above 1e-12), "
                          "{distance} away from the projection: a point of the feasible set, not the nearest one."),
}

STEPPER_READOUT = ("Dykstra: distance to the projection =", "alternating: distance to the projection =",
                   "Dykstra: violation =", "alternating: violation =")


def _rounded(matrix: Tensor | np.ndarray, decimals: int = 3) -> list:
    return np.round(np.asarray(matrix, dtype=np.float64), decimals).tolist()


def _project(method, X: Tensor, k: int) -> Tensor:
    return X if k == 0 else method(X, k)


class _StepperExamples:
    """The stepper's matrices, their exact projections and distance curves (computed once, up front)."""

    def __init__(self, examples: Mapping[str, np.ndarray], rounds: tuple[int, ...]):
        self.matrices = {}
        for name, X in examples.items():
            X = torch.as_tensor(np.asarray(X, dtype=np.float64))
            if X.ndim != 2 or X.shape[0] > X.shape[1]:
                raise DMMInputError(f"projection_stepper: example {name!r} has shape {list(X.shape)}; expected [n, m] "
                                    "with n <= m")
            self.matrices[name] = X
        self.rounds = [k for k in rounds if k >= 1]
        self.exact: dict[str, Tensor] = {}
        self.tables: dict[str, dict] = {}
        for name, X in self.matrices.items():  # once, when the figure is made: no move waits for it
            exact = torch.from_numpy(exact_projection(X.numpy()))
            self.exact[name] = exact
            curves = {method.__name__: [sig(torch.linalg.norm(method(X, k) - exact).item()) for k in self.rounds]
                      for method in (dykstra_project, alternating_project)}
            limit = max(X.abs().max().item(), exact.abs().max().item())
            self.tables[name] = {"x": _rounded(X), "exact": _rounded(exact), "limit": sig(limit), "rounds": self.rounds,
                                 "dykstra": curves["dykstra_project"], "alternating": curves["alternating_project"]}


def _stepper_state(examples: _StepperExamples, name: str, k: int) -> dict:
    X, exact = examples.matrices[name], examples.exact[name]
    dykstra, alternating = _project(dykstra_project, X, k), _project(alternating_project, X, k)
    distance = {"d": torch.linalg.norm(dykstra - exact).item(), "a": torch.linalg.norm(alternating - exact).item()}
    violation = {"d": constraint_violation(dykstra).item(), "a": constraint_violation(alternating).item()}
    notes = []
    if k == 0:
        notes.append(note("start"))
    if distance["d"] < 1e-9:
        notes.append(note("dykstra_there"))
    if k >= 2 and distance["a"] > 1e-6:
        change = torch.linalg.norm(alternating - alternating_project(X, k - 1)).item()
        if change < 1e-12:
            notes.append(note("alternating_stuck", k=k, distance=f"{distance['a']:.2e}"))
    return {"example": name, "dykstra": _rounded(dykstra), "alternating": _rounded(alternating),
            "readout": [sci(distance["d"]), sci(distance["a"]), sci(violation["d"]), sci(violation["a"])],
            "notes": notes}


def stepper_description(examples: Mapping[str, np.ndarray], rounds: tuple[int, ...] = STEPPER_ROUNDS) -> Explorer:
    """The projection stepper, described once for both hosts.

    ``examples`` maps a name to a matrix X [n, m] (n <= m) to project onto the feasible set of
    Eq. 3; ``rounds`` are the numbers of projection rounds the slider offers.
    """
    if not examples:
        raise DMMInputError("projection_stepper: examples is empty; expected at least one matrix")
    if 0 > min(rounds):
        raise DMMInputError(f"projection_stepper: rounds {rounds} include a negative number")
    data = _StepperExamples(examples, tuple(rounds))

    def compute(settings: list[dict]) -> Computed:
        names = sorted({s["example"] for s in settings})
        tables = {"examples": {name: data.tables[name] for name in names}}
        return Computed([_stepper_state(data, s["example"], s["rounds"]) for s in settings], tables)

    names = list(examples)
    return Explorer(
        kind="stepper", title="Projection stepper: Dykstra against alternating projections, round by round",
        controls=(control("example", "matrix X", names, kind="choice", labels=names, symbol="X"),
                  control("rounds", "projection rounds", tuple(rounds), default=1 if 1 in rounds else rounds[0],
                          symbol="rounds")),
        compute=compute, readout=STEPPER_READOUT, notes=STEPPER_NOTES,
        legend=("Each round projects onto C1 (rows sum to 1), C2 (columns sum to at most 1) and C3 (no negative "
                "entries), Eq. 5-7. Dykstra adds back what each projection removed last time (Alg. 1, lines "
                "7-9); alternating projections do not. Blue entries are negative, red positive; red row and "
                "column sums break a constraint. Curve: Frobenius distance to the exact projection (log scales)."),
    )


def projection_stepper(examples: Mapping[str, np.ndarray], rounds: tuple[int, ...] = STEPPER_ROUNDS,
                       live: bool | None = None):
    """Chapter 2's stepper: live ``ipywidgets`` in Jupyter, the pre-computed page in the static book."""
    return show_explorer(stepper_description(examples, rounds), live)


# ----------------------------------------------------------------------------- the gradient explorer

#: The changes of the chosen cost entry the slider offers.
GRADIENT_DELTAS = tuple(round(float(d), 2) for d in np.linspace(-0.5, 0.5, 11))

#: The two layers side by side: Alg. 1 at the paper's settings and the Sinkhorn layer at dmmlib's defaults.
GRADIENT_METHODS = {"Alg. 1 (40 \u00d7 5)": lambda cost: dmm_match(cost),
                    "Sinkhorn (\u03c4 = 0.1)": lambda cost: sinkhorn_match(cost, tau=0.1)}

GRADIENT_NOTES = {
    "jump": ("The Hungarian assignment of row {i} jumped from proposal {before} to {after}: a discrete change that "
             "no gradient announced."),
    "clipped": ("Alg. 1 left X\u0302[{i}, {j}] exactly 0 (clipped by the ReLU of P3 in every iterate): its gradient "
                "is only the small row-mean term shared by all clipped entries of the row."),
}

GRADIENT_READOUT = tuple(f"{name}: {what}" for name in GRADIENT_METHODS for what in (
    "L =", "X\u0302[i, j] =", "\u2202L/\u2202C[i, j] =", "X\u0302 at the true proposal =")) + \
    ("Hungarian's choice for row i:",)


def _gradient_batch(cost: Tensor, true: Tensor, i: int, j: int, deltas: tuple[float, ...]) -> dict:
    """X^, dL/dC and the loss of each method for C with C_ij moved by each delta (one batched call)."""
    costs = cost.expand(len(deltas), -1, -1).clone()
    costs[:, i, j] += torch.tensor(deltas, dtype=cost.dtype)
    results = {}
    for name, method in GRADIENT_METHODS.items():
        leaf = costs.clone().requires_grad_(True)
        X = method(leaf)
        # one loss per problem (matching_loss averages over what it is given), so each gradient is its own problem's
        losses = torch.stack([matching_loss(X[b:b + 1], true[None]) for b in range(len(deltas))])
        (grad,) = torch.autograd.grad(losses.sum(), leaf)
        results[name] = (X.detach(), grad, losses.detach())
    return {"costs": costs, "results": results, "hungarian": hungarian_match(costs).argmax(-1)}


def _gradient_state(batch: dict, b: int, i: int, j: int, true: Tensor, reference: int) -> dict:
    methods, readout, notes = [], [], []
    for name, (X, G, losses) in batch["results"].items():
        g = G[b]
        methods.append({"name": name, "x": torch.round(X[b] * 100).to(torch.int64).tolist(),
                        "g": torch.round(g * 10000).to(torch.int64).tolist()})
        readout += [fixed(losses[b].item(), 4), fixed(X[b, i, j].item(), 4), sci(g[i, j].item()),
                    fixed(X[b, i, true[i]].item(), 4)]
    choice, before = int(batch["hungarian"][b, i]), int(batch["hungarian"][reference, i])
    readout.append(f"proposal {choice}" + (" (the true one)" if choice == int(true[i]) else " (not the true one)"))
    if choice != before:
        notes.append(note("jump", i=i, before=before, after=choice))
    X_alg1 = next(iter(batch["results"].values()))[0]
    if X_alg1[b, i, j] == 0:
        notes.append(note("clipped", i=i, j=j))
    return {"problem": "p", "line": f"{i},{j}", "methods": methods, "readout": readout, "notes": notes}


def gradient_description(cost: Tensor, true_proposal: Tensor, deltas: tuple[float, ...] = GRADIENT_DELTAS) -> Explorer:
    """The gradient explorer, described once for both hosts.

    ``cost`` [n, m] is one matching problem, ``true_proposal`` [n] its true proposals (the
    targets of :func:`~dmmlib.lessons.cost_learning.matching_loss`); the controls pick an entry
    (i, j) -- first row 0's strongest rival -- and a change ``delta`` of C_ij from ``deltas``
    (which must contain 0). A state holds, per method, X^ in hundredths and dL/dC in
    ten-thousandths (the heat maps and their tooltips); the readout has the exact numbers.
    """
    cost = torch.as_tensor(cost, dtype=torch.float64).detach()
    true = torch.as_tensor(true_proposal, dtype=torch.int64)
    if cost.ndim != 2 or true.shape != (cost.shape[0],):
        raise DMMInputError(f"gradient_explorer: cost {list(cost.shape)} and true_proposal {list(true.shape)}; "
                            "expected [n, m] and [n]")
    if 0.0 not in deltas:
        raise DMMInputError(f"gradient_explorer: deltas {deltas} must contain 0 (the unchanged cost)")
    n, m = cost.shape
    spread = max(abs(d) for d in deltas)
    # the cost colour scale covers every moved cost (rounded outwards, so no cell falls off it)
    problem = {"cost": _rounded(cost), "true": true.tolist(), "lo": math.floor((cost.min().item() - spread) * 100) / 100,
               "hi": math.ceil((cost.max().item() + spread) * 100) / 100}
    reference = deltas.index(0.0)
    with torch.no_grad():  # the default entry: row 0's strongest rival, the proposal Alg. 1 weighs most after the true one
        weights = dmm_match(cost)[0].clone()
    weights[true[0]] = -1.0
    rival = int(weights.argmax())

    def compute(settings: list[dict]) -> Computed:
        states: list[dict | None] = [None] * len(settings)
        lines = {}
        for i, j in sorted({(s["row"], s["col"]) for s in settings}):
            batch = _gradient_batch(cost, true, i, j, deltas)
            lines[f"{i},{j}"] = {name: {"xij": [sig(v) for v in X[:, i, j].tolist()],
                                        "xtrue": [sig(v) for v in X[:, i, true[i]].tolist()]}
                                 for name, (X, _, _) in batch["results"].items()}
            for index, s in enumerate(settings):
                if (s["row"], s["col"]) == (i, j):
                    states[index] = _gradient_state(batch, deltas.index(s["delta"]), i, j, true, reference)
        return Computed(states, {"problems": {"p": problem}, "lines": lines})

    return Explorer(
        kind="gradient", title=f"Gradient explorer: move one cost entry ({n} templates \u00d7 {m} proposals)",
        controls=(control("row", "template i", range(n), symbol="i"),
                  control("col", "proposal j", range(m), default=rival, symbol="j"),
                  control("delta", "change of C[i, j]", deltas, default=0.0, fmt="{:+.2f}", symbol="\u0394C[i, j]")),
        compute=compute, readout=GRADIENT_READOUT, notes=GRADIENT_NOTES,
        legend=("Loss: the cross-entropy of each row of X\u0302 against its true proposal (cyan ring). Black box: the "
                "moved entry C[i, j]. \u2202L/\u2202C: red positive (lowering C there lowers the loss), blue negative; "
                "each colour bar has its own range. Curves: X\u0302[i, j] (solid) and X\u0302 at row i's true proposal "
                "(dashed) against the change of C[i, j]."),
        extra={"deltas": list(deltas)},
    )


def gradient_explorer(cost: Tensor, true_proposal: Tensor, deltas: tuple[float, ...] = GRADIENT_DELTAS,
                      live: bool | None = None):
    """Chapter 4's gradient explorer: live ``ipywidgets`` in Jupyter, the pre-computed page in the static book."""
    return show_explorer(gradient_description(cost, true_proposal, deltas), live)

"""How well the matching layer converges (Alg. 1, Theorem 1), measured.

Chapter 3 of the book and its report card use these helpers:

* :func:`uniform_costs` and :func:`realistic_costs` -- batches of matching problems: i.i.d.
  uniform costs, and costs of Eq. 1 built from synthetic masks and appearance features with
  the ambiguities DMM-Net meets (a look-alike distractor per object, fragments, drift);
* :func:`lp_optimum` -- the optimum of the LP of Eq. 3 (HiGHS), the reference every gap is
  measured from;
* :func:`agreement_study` -- for named settings of :func:`~dmmlib.matching.dmm_match`, how
  often the row argmax of X^ equals the Hungarian assignment, the objective gap, feasibility
  and time;
* :func:`gap_curves` -- the gap of the running average X^ to the optimum over the outer
  iterations, for several step sizes and numbers of projection rounds;
* :func:`convergence_explorer` -- the interactive explorer, described once
  (:func:`convergence_description`) and shown by either host of :mod:`dmmlib.lessons.interactive`:
  live in Jupyter (the kernel runs ``dmm_match`` per move), and in the static book over
  pre-computed states (no kernel, no network).

Costs are ``[B, n, m]`` (problems x templates x proposals), float64.
"""

from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from dmmlib import matchers, matching, projections
from dmmlib.errors import DMMInputError
from dmmlib.lessons.interactive import Computed, Explorer, control, fixed, note, sci, show_explorer, sig
from dmmlib.lessons.results import remember
from dmmlib.lessons.settings import CONVERGENCE_EXPLORER, CONVERGENCE_STUDY
from dmmlib.lessons.toy import solve_lp_relaxation
from dmmlib.matchers import hungarian_match
from dmmlib.matching import dmm_match, lp_objective
from dmmlib.profiles import by_profile
from dmmlib.projections import constraint_violation

# ----------------------------------------------------------------------------- problems


def _check_sizes(n_problems: int, n_templates: int, n_proposals: int) -> None:
    for name, value in (("n_problems", n_problems), ("n_templates", n_templates), ("n_proposals", n_proposals)):
        if not isinstance(value, int) or value < 1:
            raise DMMInputError(f"{name}={value!r}; expected a positive integer")
    if n_templates > n_proposals:
        raise DMMInputError(f"n_templates={n_templates} > n_proposals={n_proposals}; Eq. 3 needs n <= m")


def uniform_costs(n_problems: int, n_templates: int = 5, n_proposals: int = 50, seed: int = 0) -> Tensor:
    """I.i.d. uniform costs in [0, 1): ``[n_problems, n_templates, n_proposals]`` float64."""
    _check_sizes(n_problems, n_templates, n_proposals)
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n_problems, n_templates, n_proposals, generator=generator, dtype=torch.float64)


@dataclass(frozen=True)
class RealisticCosts:
    """Matching problems built like Eq. 1: ``cost = (lam - 1) * cosine - lam * iou``, all [B, n, m].

    ``true_proposal`` [B, n] is the index of the proposal that really is template i's object.
    """

    cosine: Tensor
    iou: Tensor
    true_proposal: Tensor
    lam: float

    @property
    def cost(self) -> Tensor:
        return self.with_lambda(self.lam)

    def with_lambda(self, lam: float) -> Tensor:
        """Eq. 1 with another lambda (the explorer's slider): [B, n, m]."""
        if not 0.0 < lam < 1.0:
            raise DMMInputError(f"lam={lam!r}; Eq. 1 needs 0 < lambda < 1")
        return (lam - 1.0) * self.cosine - lam * self.iou


def _ellipse_masks(centres: Tensor, radii: Tensor, size: int) -> Tensor:
    """Rasterise axis-aligned ellipses: centres, radii [..., 2] in [0, 1] units -> bool [..., size, size]."""
    grid = (torch.arange(size, dtype=torch.float64) + 0.5) / size
    dy = (grid.view(size, 1) - centres[..., 0, None, None]) / radii[..., 0, None, None]
    dx = (grid.view(1, size) - centres[..., 1, None, None]) / radii[..., 1, None, None]
    return dy.square() + dx.square() <= 1.0


def realistic_costs(n_problems: int, n_templates: int = 5, n_proposals: int = 50, lam: float = 0.3,
                    seed: int = 0, feature_dim: int = 32, mask_size: int = 48) -> RealisticCosts:
    """Matching problems that look like DMM-Net's: Eq. 1 on synthetic masks and features.

    Each template r_i is an ellipse with a random appearance feature f_i. Among the proposals:
    its own object, moved and reshaped a little (IoU ~ 0.5-0.9 with the previous mask) and with
    drifted appearance; a *look-alike distractor* elsewhere in the frame whose feature is as
    close to f_i as the object's own (appearance alone picks the wrong one about half the
    time, the IoU term of Eq. 1 must decide); a fragment overlapping the object; and clutter.
    Proposal order is shuffled. Returns the cosine and IoU parts so that lambda can be varied afterwards.
    """
    _check_sizes(n_problems, n_templates, n_proposals)
    if n_proposals < 3 * n_templates:
        raise DMMInputError(f"n_proposals={n_proposals}; realistic_costs needs at least 3 * n_templates = "
                            f"{3 * n_templates} (object, distractor and fragment per template)")
    g = torch.Generator().manual_seed(seed)
    B, n, m = n_problems, n_templates, n_proposals

    def uniform(*shape, low=0.0, high=1.0):
        return low + (high - low) * torch.rand(*shape, generator=g, dtype=torch.float64)

    centres = uniform(B, n, 2, low=0.2, high=0.8)
    radii = uniform(B, n, 2, low=0.08, high=0.2)
    features = torch.randn(B, n, feature_dim, generator=g, dtype=torch.float64)

    # the object itself: moved by a fraction of its size, resized, appearance drifted
    obj_centres = centres + uniform(B, n, 2, low=-0.5, high=0.5) * radii
    obj_radii = radii * uniform(B, n, 2, low=0.85, high=1.2)
    obj_features = features + 0.75 * torch.randn(B, n, feature_dim, generator=g, dtype=torch.float64)
    # a look-alike: as close in appearance as the object itself, but somewhere else
    far = uniform(B, n, 2, low=0.15, high=0.85)
    look_features = features + 0.75 * torch.randn(B, n, feature_dim, generator=g, dtype=torch.float64)
    # a fragment: a smaller piece of the object, partly overlapping it
    frag_centres = obj_centres + uniform(B, n, 2, low=-0.6, high=0.6) * obj_radii
    frag_radii = obj_radii * uniform(B, n, 2, low=0.35, high=0.6)
    frag_features = features + 1.5 * torch.randn(B, n, feature_dim, generator=g, dtype=torch.float64)
    # clutter: anything anywhere
    n_clutter = m - 3 * n
    clutter_centres = uniform(B, n_clutter, 2, low=0.05, high=0.95)
    clutter_radii = uniform(B, n_clutter, 2, low=0.05, high=0.2)
    clutter_features = torch.randn(B, n_clutter, feature_dim, generator=g, dtype=torch.float64)

    proposal_centres = torch.cat([obj_centres, far, frag_centres, clutter_centres], 1)
    proposal_radii = torch.cat([obj_radii, radii, frag_radii, clutter_radii], 1)
    proposal_features = torch.cat([obj_features, look_features, frag_features, clutter_features], 1)
    order = torch.stack([torch.randperm(m, generator=g) for _ in range(B)])  # [B, m]: new -> old index
    proposal_centres = proposal_centres.gather(1, order[..., None].expand(-1, -1, 2))
    proposal_radii = proposal_radii.gather(1, order[..., None].expand(-1, -1, 2))
    proposal_features = proposal_features.gather(1, order[..., None].expand(-1, -1, feature_dim))
    true_proposal = order.argsort(1)[:, :n]  # where old index i (template i's object) went

    template_masks = _ellipse_masks(centres, radii, mask_size).flatten(-2).to(torch.float64)
    proposal_masks = _ellipse_masks(proposal_centres, proposal_radii, mask_size).flatten(-2).to(torch.float64)
    intersection = template_masks @ proposal_masks.transpose(1, 2)
    union = template_masks.sum(-1)[..., None] + proposal_masks.sum(-1)[:, None, :] - intersection
    iou = intersection / union.clamp_min(1.0)
    cosine = torch.nn.functional.normalize(features, dim=-1) @ \
        torch.nn.functional.normalize(proposal_features, dim=-1).transpose(1, 2)
    return RealisticCosts(cosine=cosine, iou=iou, true_proposal=true_proposal, lam=float(lam))


def lp_optimum(cost: Tensor) -> Tensor:
    """The optimal value of the LP of Eq. 3 for each problem, by HiGHS: ``[B, n, m]`` -> ``[B]``."""
    if cost.ndim != 3:
        raise DMMInputError(f"cost has shape {list(cost.shape)}; expected [B, n, m]")
    values = [solve_lp_relaxation(c.detach().cpu().numpy())[1] for c in cost]
    return torch.tensor(values, dtype=torch.float64)


# ----------------------------------------------------------------------------- measurements


def agreement_study(cost: Tensor, settings: Mapping[str, Mapping], optimum: Tensor | None = None):
    """Compare settings of :func:`dmm_match` with the Hungarian method on a batch of problems.

    ``settings`` maps a row name to keyword arguments of ``dmm_match`` (e.g.
    ``{"paper": {}, "release": {"variant": "release"}}``). Returns a pandas DataFrame, one row
    per setting:

    * ``argmax = Hungarian`` -- fraction of problems whose row argmax of X^ is exactly the
      Hungarian assignment (every template);
    * ``rows agreeing`` -- the same, counted per template;
    * ``median |gap|`` / ``p90 |gap|`` -- |Tr(C X^T) - LP optimum| (X^ may be slightly
      infeasible, so the signed gap can be negative);
    * ``median violation`` -- :func:`~dmmlib.matching.constraint_violation` of X^.

    Speed is not measured here: ``benchmarks/matching.py`` times the settings side by side.
    """
    if optimum is None:
        optimum = lp_optimum(cost)
    hungarian = hungarian_match(cost).argmax(-1)
    rows = []
    for name, kwargs in settings.items():
        with torch.no_grad():
            X_hat = dmm_match(cost, **kwargs)
        agree = X_hat.argmax(-1) == hungarian
        gap = (lp_objective(cost, X_hat) - optimum).abs()
        rows.append({
            "setting": name,
            "argmax = Hungarian": agree.all(-1).double().mean().item(),
            "rows agreeing": agree.double().mean().item(),
            "median |gap|": gap.median().item(),
            "p90 |gap|": gap.quantile(0.9).item(),
            "median violation": constraint_violation(X_hat).median().item(),
        })
    return pd.DataFrame(rows).set_index("setting")


#: The settings of the agreement study (chapter 3, cited by the report card): the paper's, the
#: paper's algorithm run longer, and the authors' release.
AGREEMENT_SETTINGS = {
    "paper, longer (400 x 50)": {"n_grad": 400, "n_proj": 50},
    "release (400 x 50, early stop)": {"variant": "release"},
    "paper (40 x 5), same subset": {},
}


def agreement_tables(profile: str | None = None) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """Chapter 3's agreement study, measured once per profile (:func:`dmmlib.lessons.results.remember`).

    For uniform and realistic costs (``n_problems`` problems of the profile's
    :data:`~dmmlib.lessons.settings.CONVERGENCE_STUDY`): ``(fast, slow)`` tables of
    :func:`agreement_study` -- the paper's settings on every problem, and
    :data:`AGREEMENT_SETTINGS` on the first ``heavy_problems`` problems.
    """
    study = by_profile(CONVERGENCE_STUDY, profile)

    def measure() -> dict:
        shape = (study["n_problems"], study["n_templates"], study["n_proposals"])
        costs = {"uniform": uniform_costs(*shape, seed=13), "realistic": realistic_costs(*shape, seed=14).cost}
        return {kind: (agreement_study(cost, {"paper (40 x 5)": {}}),
                       agreement_study(cost[: study["heavy_problems"]], AGREEMENT_SETTINGS))
                for kind, cost in costs.items()}

    tables = remember("convergence-agreement", measure, settings={"study": study, "rows": AGREEMENT_SETTINGS},
                      code=(sys.modules[__name__], matching, projections, matchers), profile=profile)
    return {kind: tuple(pair) for kind, pair in tables.items()}


def gap_curves(cost: Tensor, lr_values, n_proj_values, n_grad: int, optimum: Tensor | None = None) -> dict:
    """|Tr(C X^T) - optimum| of the running average over iterations 1..n_grad.

    Returns ``{(lr, n_proj): Tensor [n_grad, B]}`` (one curve per problem), from the trace of
    :func:`dmm_match` (the average after i iterations is X^ for N_grad = i).
    """
    if optimum is None:
        optimum = lp_optimum(cost)
    curves = {}
    for lr, n_proj in itertools.product(lr_values, n_proj_values):
        with torch.no_grad():
            _, trace = dmm_match(cost, n_grad=n_grad, n_proj=n_proj, lr=lr, return_trace=True)
        curves[(lr, n_proj)] = (trace.objective_average - optimum).abs()
    return curves


# ----------------------------------------------------------------------------- the explorer

#: What the explorer's readout shows, in order (formatted in :func:`convergence_state`).
CONVERGENCE_READOUT = ("Tr(C X\u0302\u1d40) =", "LP optimum =", "|gap| =", "violation =", "argmax = Hungarian:",
                       "true objects picked:", "Theorem 1: \u03b1 <", "max X\u0302 =")


def sample_iterations(max_n_grad: int, n_grads=()) -> list[int]:
    """The outer iterations at which the explorer's gap curve is drawn: 1..10, then 30 log-spaced up to ``max_n_grad``.

    Every N_grad of the grid (``n_grads``) is included, so the curve ends exactly at the chosen N_grad.
    """
    if max_n_grad < 1:
        raise DMMInputError(f"max_n_grad={max_n_grad!r}; expected a positive integer")
    spaced = np.unique(np.round(np.logspace(0, np.log10(max_n_grad), 30)).astype(int))
    return sorted({*range(1, min(10, max_n_grad) + 1), *spaced.tolist(), *n_grads, max_n_grad})


@dataclass
class _Problem:
    cost: Tensor        # [n, m]
    optimum: float
    hungarian: Tensor   # [n]
    true: Tensor        # [n]
    key: str

    @property
    def bound(self) -> float:
        """Theorem 1's step bound min(15 r0, r0 / ||C||_F), with r0 = sqrt(n) (X^0 = 0)."""
        r0 = float(np.sqrt(self.cost.shape[0]))
        return min(15 * r0, r0 / torch.linalg.matrix_norm(self.cost).item())

    def table(self) -> dict:
        return {"cost": np.round(self.cost.numpy(), 3).tolist(), "optimum": self.optimum,
                "hungarian": self.hungarian.tolist(), "true": self.true.tolist()}


class _ExplorerProblems:
    """The explorer's problems by (size, lambda, seed), with their LP optimum and Hungarian assignment, cached."""

    def __init__(self, sizes, n_seeds: int, seed: int = 2019):
        self.realistic = {tuple(size): realistic_costs(n_seeds, *size, seed=seed) for size in sizes}
        self.cache: dict[tuple, _Problem] = {}

    def get(self, keys) -> dict[tuple, _Problem]:
        missing = sorted({k for k in keys if k not in self.cache}, key=str)
        for size in {k[0] for k in missing}:
            wanted = [k for k in missing if k[0] == size]
            costs = torch.stack([self.realistic[size].with_lambda(lam)[seed] for _, lam, seed in wanted])
            optima, hungarian = lp_optimum(costs), hungarian_match(costs).argmax(-1)
            for index, (size_, lam, seed) in enumerate(wanted):
                self.cache[(size_, lam, seed)] = _Problem(costs[index], float(optima[index]), hungarian[index],
                                                          self.realistic[size].true_proposal[seed],
                                                          f"{size_[0]}x{size_[1]}|{lam}|{seed}")
        return {k: self.cache[k] for k in keys}


#: The notes of the convergence explorer (raised by :func:`convergence_state`).
CONVERGENCE_NOTES = {
    "diverged": ("This setting does not converge: X\u0302 is {violation} outside the feasible set (constraint "
                 "violation \u2265 1). With N_proj = {n_proj} projection round(s) per step, Dykstra cannot undo steps "
                 "of \u03b1 = {lr}, and the iterates settle outside the set."),
    "stalled": ("The gap did not shrink over the second half of the iterations ({early} at i = {half}, "
                "{late} at i = {k})."),
    "below": ("Tr(C X\u0302\u1d40) is below the LP optimum, which no feasible point can reach: X\u0302 has drifted "
              "out of the feasible set (violation {violation})."),
    "above_one": ("X\u0302 leaves [0, 1]: its largest entry is {x_max}. Entries above 1 are drawn in pink, off the "
                  "colour scale."),
    "step_bound": "\u03b1 = {lr} is above Theorem 1's step bound r0 / \u2016C\u2016_F = {bound} for this problem.",
}


def _convergence_notes(setting: Mapping, problem: _Problem, objective: float, violation: float, x_max: float,
                       gap: Tensor) -> list:
    lr, n_proj, k = setting["lr"], setting["n_proj"], setting["n_grad"]
    notes = []
    if violation >= 1:
        notes.append(note("diverged", violation=f"{violation:.2f}", n_proj=n_proj, lr=f"{lr:g}"))
        half = max(1, k // 2)
        if k >= 10 and gap[k - 1] >= gap[half - 1]:
            notes.append(note("stalled", early=f"{gap[half - 1]:.3g}", half=half, late=f"{gap[k - 1]:.3g}", k=k))
    elif objective < problem.optimum - 1e-9:
        notes.append(note("below", violation=f"{violation:.2g}"))
    if round(x_max, 2) > 1:  # the heat map holds X^ in hundredths: these entries are drawn above 1
        notes.append(note("above_one", x_max=f"{x_max:.3f}"))
    if lr > problem.bound:
        notes.append(note("step_bound", lr=f"{lr:g}", bound=f"{problem.bound:.3f}"))
    return notes


def convergence_state(setting: Mapping, problem: _Problem, X_hat: Tensor, gap: Tensor, run_key: str) -> dict:
    """The JSON state of one explorer setting: X^ (in hundredths), its row argmax, the numbers and notes.

    ``gap`` [N_grad] is |Tr(C X^T) - LP optimum| of the running average after each outer iteration.
    """
    n = X_hat.shape[0]
    objective = lp_objective(problem.cost, X_hat).item()
    violation = constraint_violation(X_hat).item()
    argmax = X_hat.argmax(-1)
    agree = int((argmax == problem.hungarian).sum())
    found = int((argmax == problem.true).sum())
    x_max = X_hat.max().item()
    readout = [fixed(objective, 4), fixed(problem.optimum, 4), sci(abs(objective - problem.optimum)), sci(violation),
               "yes" if agree == n else f"NO ({agree} of {n} rows)", f"{found} of {n}", fixed(problem.bound, 3),
               fixed(x_max, 3)]
    return {"problem": problem.key, "run": run_key, "x": torch.round(X_hat * 100).to(torch.int64).tolist(),
            "argmax": argmax.tolist(), "readout": readout,
            "notes": _convergence_notes(setting, problem, objective, violation, x_max, gap)}


def _convergence_compute(problems: _ExplorerProblems, iterations: list[int]):
    def compute(settings: list[dict]) -> Computed:
        found = problems.get([(s["size"], s["lam"], s["seed"]) for s in settings])
        groups: dict[tuple, list[int]] = {}
        for index, s in enumerate(settings):  # one batched dmm_match per (size, alpha, N_proj)
            groups.setdefault((s["size"], s["lr"], s["n_proj"]), []).append(index)
        states: list[dict | None] = [None] * len(settings)
        tables = {"problems": {p.key: p.table() for p in found.values()}, "runs": {}}
        for (size, lr, n_proj), members in groups.items():
            keys = sorted({(size, settings[i]["lam"], settings[i]["seed"]) for i in members})
            batch = [found[k] for k in keys]
            costs = torch.stack([p.cost for p in batch])
            optimum = torch.tensor([p.optimum for p in batch], dtype=costs.dtype)
            n_grads = sorted({settings[i]["n_grad"] for i in members})
            with torch.no_grad():
                X_at = {}
                X_at[n_grads[-1]], trace = dmm_match(costs, n_grad=n_grads[-1], n_proj=n_proj, lr=lr, return_trace=True)
                for k in n_grads[:-1]:
                    X_at[k] = dmm_match(costs, n_grad=k, n_proj=n_proj, lr=lr)
            gap = (trace.objective_average - optimum).abs()  # [N_grad, B]
            shown = [i for i in iterations if i <= n_grads[-1]]
            for b, problem in enumerate(batch):
                tables["runs"][f"{problem.key}|{lr}|{n_proj}"] = {"gap": [sig(gap[i - 1, b].item()) for i in shown]}
            for index in members:
                s = settings[index]
                b = keys.index((size, s["lam"], s["seed"]))
                states[index] = convergence_state(s, batch[b], X_at[s["n_grad"]][b], gap[: s["n_grad"], b],
                                                  f"{batch[b].key}|{lr}|{n_proj}")
        return Computed(states, tables)

    return compute


def convergence_description(grid: Mapping) -> Explorer:
    """The convergence explorer, described once for both hosts (:mod:`dmmlib.lessons.interactive`).

    ``grid`` is one profile's :data:`~dmmlib.lessons.settings.CONVERGENCE_EXPLORER`: the values of
    every control. A state shows X^ of :func:`~dmmlib.matching.dmm_match` as a heat map (Hungarian's
    choice boxed, the row argmax dotted, the true object ringed, a colour bar that marks values
    above 1), the gap of the running average to the LP optimum on a log scale, the numbers of
    :data:`CONVERGENCE_READOUT` and notes when a setting does not converge.
    """
    default = grid["default"]
    sizes = [tuple(size) for size in grid["sizes"]]
    controls = (
        control("size", "problem size", sizes, kind="choice", symbol="size",
                labels=[f"{n} \u00d7 {m}" + (" (the chapter's)" if (n, m) == (5, 50) else "") for n, m in sizes]),
        control("lr", "step size \u03b1", grid["lr"], default=default["lr"], symbol="\u03b1"),
        control("n_grad", "N_grad", grid["n_grad"], default=default["n_grad"], symbol="N_grad"),
        control("n_proj", "N_proj", grid["n_proj"], default=default["n_proj"], symbol="N_proj"),
        control("lam", "\u03bb (Eq. 1)", grid["lam"], default=default["lam"], symbol="\u03bb"),
        control("seed", "problem", range(grid["seeds"]), symbol="problem"),
    )
    iterations = sample_iterations(max(grid["n_grad"]), grid["n_grad"])
    return Explorer(
        kind="convergence", title="Convergence explorer: Alg. 1 on one matching problem",
        controls=controls, compute=_convergence_compute(_ExplorerProblems(sizes, grid["seeds"]), iterations),
        readout=CONVERGENCE_READOUT, notes=CONVERGENCE_NOTES,
        legend=("Heat map: X\u0302 (n templates \u00d7 m proposals). Red box: Hungarian's choice; white dot: the row "
                "argmax of X\u0302; cyan ring: the true object (the proposal that really is the template's object). "
                "Curve: |Tr(C X\u0302\u1d40) \u2212 LP optimum| of the running average after each outer iteration, "
                "up to N_grad (log scales; values at the floor sit on the bottom edge as open triangles)."),
        extra={"iterations": iterations},
    )


def convergence_explorer(profile: str | None = None, live: bool | None = None):
    """The chapter's explorer: live ``ipywidgets`` in Jupyter, the pre-computed page in the static book.

    The controls offer the values of the profile's :data:`~dmmlib.lessons.settings.CONVERGENCE_EXPLORER`
    in both hosts; ``live`` overrides :func:`~dmmlib.lessons.viz.running_live`.
    """
    return show_explorer(convergence_description(by_profile(CONVERGENCE_EXPLORER, profile)), live)

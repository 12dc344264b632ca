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
* :func:`convergence_explorer` -- the interactive explorer: live ``ipywidgets`` sliders in
  Jupyter, and in the static book a self-contained HTML/JavaScript explorer over
  pre-computed results (no kernel, no network).

Costs are ``[B, n, m]`` (problems x templates x proposals), float64.
"""

from __future__ import annotations

import html
import itertools
import json
import sys
from dataclasses import dataclass
from typing import Mapping

import ipywidgets
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import display
from torch import Tensor

from dmmlib import matchers, matching, projections
from dmmlib.errors import DMMInputError
from dmmlib.lessons.results import remember
from dmmlib.lessons.settings import CONVERGENCE_STUDY
from dmmlib.lessons.toy import solve_lp_relaxation
from dmmlib.lessons.viz import embedded_script, new_dom_id, running_live
from dmmlib.matchers import hungarian_match
from dmmlib.matching import dmm_match, lp_objective
from dmmlib.profiles import by_profile
from dmmlib.projections import constraint_violation

#: The explorer's slider values. N_grad values index pre-computed results; everything else too.
EXPLORER_GRID = {
    "lr": (0.02, 0.05, 0.1, 0.2, 0.5),
    "n_grad": (5, 10, 20, 40, 80),
    "n_proj": (1, 2, 5, 10),
    "lam": (0.1, 0.3, 0.5, 0.7, 0.9),
}


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


def explorer_data(problems: RealisticCosts, grid: Mapping[str, tuple] = EXPLORER_GRID) -> dict:
    """Pre-compute everything the static explorer shows, as plain JSON-ready lists.

    For every (lr, n_proj, lam, problem): X^ at each N_grad of the grid, and the |gap| curve
    of the running average up to the largest N_grad. For every (lam, problem): the cost
    matrix, its LP optimum and the Hungarian assignment.
    """
    lams, n_grads = list(grid["lam"]), sorted(grid["n_grad"])
    n_seeds = problems.cosine.shape[0]
    costs = torch.cat([problems.with_lambda(lam) for lam in lams])  # [L * S, n, m], lam-major
    optimum = lp_optimum(costs)
    hungarian = hungarian_match(costs).argmax(-1)
    runs = {}
    for lr, n_proj in itertools.product(grid["lr"], grid["n_proj"]):
        with torch.no_grad():
            _, trace = dmm_match(costs, n_grad=n_grads[-1], n_proj=n_proj, lr=lr, return_trace=True)
            x_by_n_grad = [dmm_match(costs, n_grad=k, n_proj=n_proj, lr=lr) for k in n_grads]
        gap = (trace.objective_average - optimum).abs()  # [N, L * S]
        for index in range(costs.shape[0]):
            lam, seed = lams[index // n_seeds], index % n_seeds
            runs[f"{lr}|{n_proj}|{lam}|{seed}"] = {
                "x": [np.round(x[index].numpy(), 4).tolist() for x in x_by_n_grad],
                "gap": [float(f"{v:.3g}") for v in gap[:, index].tolist()],
            }
    problems_json = {}
    for index in range(costs.shape[0]):
        lam, seed = lams[index // n_seeds], index % n_seeds
        problems_json[f"{lam}|{seed}"] = {
            "cost": np.round(costs[index].numpy(), 4).tolist(),
            "optimum": float(optimum[index]),
            "hungarian": hungarian[index].tolist(),
        }
    return {"grid": {k: list(v) for k, v in grid.items()}, "n_seeds": n_seeds, "runs": runs,
            "problems": problems_json}


class _ExplorerHTML:
    def __init__(self, markup: str):
        self.data = markup

    def _repr_html_(self) -> str:
        return self.data


def static_explorer(data: dict, title: str = "Convergence explorer") -> _ExplorerHTML:
    """A self-contained HTML/JavaScript explorer over :func:`explorer_data` (no kernel, no network).

    Five range sliders (alpha, N_grad, N_proj, lambda, problem) pick a pre-computed run; the
    page draws X^ as a heat map (Hungarian's choice boxed, each row's argmax dotted), the gap
    curve on a log scale, and the objective, the LP optimum and the constraint violation.
    """
    root_id = new_dom_id()
    labels = {"lr": "step size alpha", "n_grad": "N_grad", "n_proj": "N_proj", "lam": "lambda (Eq. 1)",
              "seed": "problem"}
    defaults = {"lr": data["grid"]["lr"].index(0.1) if 0.1 in data["grid"]["lr"] else 0,
                "n_grad": data["grid"]["n_grad"].index(40) if 40 in data["grid"]["n_grad"] else 0,
                "n_proj": data["grid"]["n_proj"].index(5) if 5 in data["grid"]["n_proj"] else 0,
                "lam": data["grid"]["lam"].index(0.3) if 0.3 in data["grid"]["lam"] else 0, "seed": 0}
    counts = {**{k: len(v) for k, v in data["grid"].items()}, "seed": data["n_seeds"]}
    sliders = "\n".join(
        f'<label style="display:inline-block;margin:2px 14px 2px 0">{html.escape(labels[name])} '
        f'<input type="range" data-name="{name}" min="0" max="{counts[name] - 1}" step="1" '
        f'value="{defaults[name]}" aria-label="{html.escape(labels[name])}"> '
        f'<output data-name="{name}"></output></label>'
        for name in ("lr", "n_grad", "n_proj", "lam", "seed"))
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    markup = f"""<div class="dmm-explorer" id="{root_id}" style="font-family:sans-serif;font-size:13px">
<div style="font-weight:bold;margin-bottom:4px">{html.escape(title)}</div>
<div>{sliders}</div>
<div style="display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start">
<svg class="dmm-heat" role="img" aria-label="assignment heat map"></svg>
<svg class="dmm-curve" width="420" height="220" role="img" aria-label="convergence curve"></svg>
</div>
<div class="dmm-readout" style="font-family:monospace;margin-top:4px"></div>
<script type="application/json">{payload}</script>
<script>{embedded_script("explorer.js", root_id)}</script>
</div>"""
    return _ExplorerHTML(markup)


def plot_explorer_state(cost: Tensor, lr: float, n_grad: int, n_proj: int, figure=None):
    """Matplotlib version of one explorer state (used live): X^ heat map and the gap curve."""
    optimum = lp_optimum(cost[None])[0]
    with torch.no_grad():
        X_hat, trace = dmm_match(cost, n_grad=n_grad, n_proj=n_proj, lr=lr, return_trace=True)
    hungarian = hungarian_match(cost).argmax(-1)
    figure = figure or plt.figure(figsize=(11, 3.4))
    heat, curve = figure.subplots(1, 2, gridspec_kw={"width_ratios": [1.6, 1]})
    image = heat.imshow(X_hat.numpy(), cmap="viridis", vmin=0, vmax=1, aspect="auto")
    for i, j in enumerate(hungarian.tolist()):
        heat.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="#e4572e", linewidth=2))
    heat.scatter(X_hat.argmax(-1).numpy(), np.arange(cost.shape[0]), c="white", edgecolors="black", s=25)
    heat.set(xlabel="proposal j", ylabel="template i", title=r"$\hat X$ (red: Hungarian, dot: row argmax)")
    figure.colorbar(image, ax=heat, fraction=0.03)
    gap = (trace.objective_average - optimum).abs().clamp_min(1e-6).numpy()
    curve.semilogy(np.arange(1, n_grad + 1), gap)
    curve.set(xlabel="outer iteration i", ylabel="|objective - LP optimum|", ylim=(1e-6, 10),
              title=f"alpha={lr:g}, N_proj={n_proj}")
    figure.tight_layout()
    return figure


def live_explorer(problems: RealisticCosts):
    """An ``ipywidgets`` explorer that runs :func:`dmm_match` on every slider move (needs a kernel)."""
    def show(lr, n_grad, n_proj, lam, seed):
        figure = plot_explorer_state(problems.with_lambda(lam)[seed], lr, n_grad, n_proj)
        display(figure)
        plt.close(figure)

    return ipywidgets.interactive(
        show,
        lr=ipywidgets.FloatLogSlider(value=0.1, base=10, min=-2.5, max=0.5, step=0.1, description="alpha"),
        n_grad=ipywidgets.IntSlider(value=40, min=1, max=400, description="N_grad"),
        n_proj=ipywidgets.IntSlider(value=5, min=1, max=50, description="N_proj"),
        lam=ipywidgets.FloatSlider(value=0.3, min=0.05, max=0.95, step=0.05, description="lambda"),
        seed=ipywidgets.IntSlider(value=0, min=0, max=problems.cosine.shape[0] - 1, description="problem"),
    )


def convergence_explorer(n_seeds: int = 4, n_templates: int = 4, n_proposals: int = 12, live: bool | None = None):
    """The chapter's explorer: live sliders in Jupyter, the pre-computed HTML one in the static book."""
    problems = realistic_costs(n_seeds, n_templates, n_proposals, seed=2019)
    if live is None:
        live = running_live()
    return live_explorer(problems) if live else static_explorer(explorer_data(problems))

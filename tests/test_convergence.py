import json
import re

import numpy as np
import pytest
import torch

from dmmlib.errors import DMMInputError
from dmmlib.lessons.convergence import (
    agreement_study,
    convergence_description,
    gap_curves,
    lp_optimum,
    realistic_costs,
    sample_iterations,
    uniform_costs,
)
from dmmlib.lessons.interactive import payload_of, static_figure
from dmmlib.matchers import hungarian_match
from dmmlib.matching import dmm_match, lp_objective
from dmmlib.projections import constraint_violation

SMALL_GRID = {"sizes": ((3, 9),), "seeds": 2, "lr": (0.05, 2.0), "n_grad": (5, 20), "n_proj": (1, 5),
              "lam": (0.3, 0.7), "default": {"lr": 0.05, "n_grad": 20, "n_proj": 5, "lam": 0.3}}


def test_uniform_costs_are_deterministic():
    a, b = uniform_costs(3, 2, 6, seed=1), uniform_costs(3, 2, 6, seed=1)
    assert a.shape == (3, 2, 6) and a.dtype == torch.float64 and torch.equal(a, b)
    assert not torch.equal(a, uniform_costs(3, 2, 6, seed=2))


def test_realistic_costs_follow_eq1_and_are_ambiguous_in_appearance():
    problems = realistic_costs(60, 4, 20, lam=0.3, seed=3)
    assert torch.allclose(problems.cost, -0.7 * problems.cosine - 0.3 * problems.iou)
    assert problems.iou.min() >= 0 and problems.iou.max() <= 1
    true = problems.true_proposal
    picks = lambda score: (score.argmax(-1) == true).double().mean().item()  # noqa: E731
    by_appearance = picks(problems.cosine)
    by_cost = (hungarian_match(problems.cost).argmax(-1) == true).double().mean().item()
    # the look-alike makes appearance alone unreliable; Eq. 1 with both terms does better
    assert by_appearance < 0.8
    assert by_cost > by_appearance and by_cost > 0.7


def test_realistic_costs_reject_too_few_proposals():
    with pytest.raises(DMMInputError, match="n_proposals=8"):
        realistic_costs(2, 4, 8)


def test_lp_optimum_matches_hungarian_objective():
    cost = uniform_costs(5, 3, 7, seed=4)
    assert torch.allclose(lp_optimum(cost), lp_objective(cost, hungarian_match(cost)), atol=1e-9)


def test_agreement_study_separates_good_and_bad_settings():
    cost = uniform_costs(30, 4, 12, seed=5)
    table = agreement_study(cost, {"tiny": {"n_grad": 1, "n_proj": 1}, "long": {"n_grad": 300, "n_proj": 20}})
    assert table.loc["long", "median |gap|"] < 0.1 * table.loc["tiny", "median |gap|"]
    assert table.loc["long", "argmax = Hungarian"] >= table.loc["tiny", "argmax = Hungarian"]
    # every figure of a row, recomputed here from Alg. 1, the Hungarian method and the LP optimum
    hungarian = hungarian_match(cost).argmax(-1)
    for name, kwargs in {"tiny": {"n_grad": 1, "n_proj": 1}, "long": {"n_grad": 300, "n_proj": 20}}.items():
        X_hat = dmm_match(cost, **kwargs)
        agree = X_hat.argmax(-1) == hungarian
        gap = (lp_objective(cost, X_hat) - lp_optimum(cost)).abs()
        assert table.loc[name, "rows agreeing"] == pytest.approx(agree.double().mean().item(), abs=1e-12)
        assert table.loc[name, "argmax = Hungarian"] == pytest.approx(agree.all(-1).double().mean().item(), abs=1e-12)
        assert table.loc[name, "median |gap|"] == pytest.approx(gap.median().item(), abs=1e-12)
        assert table.loc[name, "p90 |gap|"] == pytest.approx(gap.quantile(0.9).item(), abs=1e-12)
    # long runs agree on more rows (not on all: 118 of 120 here)
    assert table.loc["tiny", "rows agreeing"] < table.loc["long", "rows agreeing"]


def test_gap_curves_end_at_the_gap_of_dmm_match():
    cost = uniform_costs(4, 3, 8, seed=6)
    optimum = lp_optimum(cost)
    curves = gap_curves(cost, [0.1], [5], n_grad=30, optimum=optimum)
    direct = (lp_objective(cost, dmm_match(cost, n_grad=30)) - optimum).abs()
    assert curves[(0.1, 5)].shape == (30, 4)
    assert torch.allclose(curves[(0.1, 5)][-1], direct, atol=1e-9)


def _index(explorer, **values):
    return tuple(c.values.index(values[c.name]) if c.name in values else c.default for c in explorer.controls)


def test_convergence_explorer_states_hold_what_dmm_match_computes():
    explorer = convergence_description(SMALL_GRID)
    setting = dict(size=(3, 9), lr=2.0, n_grad=20, n_proj=1, lam=0.7, seed=1)
    computed = explorer.run([_index(explorer, **setting)])
    state = computed.states[0]
    problems = realistic_costs(2, 3, 9, seed=2019)
    cost = problems.with_lambda(0.7)[1]
    X_hat, trace = dmm_match(cost, n_grad=20, n_proj=1, lr=2.0, return_trace=True)
    np.testing.assert_array_equal(np.array(state["x"]), np.round(X_hat.numpy() * 100))
    assert state["argmax"] == X_hat.argmax(-1).tolist()
    optimum = lp_optimum(cost[None])[0].item()
    objective, optimum_shown, gap, violation, agree, found, bound, x_max = state["readout"]
    assert float(objective) == pytest.approx(lp_objective(cost, X_hat).item(), abs=5e-5)
    assert float(optimum_shown) == pytest.approx(optimum, abs=5e-5)
    assert float(violation) == pytest.approx(constraint_violation(X_hat).item(), rel=1e-2)
    assert (agree == "yes") == bool((X_hat.argmax(-1) == hungarian_match(cost).argmax(-1)).all())
    assert found == f"{int((X_hat.argmax(-1) == problems.true_proposal[1]).sum())} of 3"
    # the run's curve: the gap of the running average at the sampled iterations
    shown = [i for i in sample_iterations(20, (5, 20)) if i <= 20]
    curve = computed.tables["runs"][state["run"]]["gap"]
    expected = (trace.objective_average - optimum).abs()
    assert curve == pytest.approx([expected[i - 1].item() for i in shown], rel=5e-3)  # three significant digits
    # alpha = 2 with one projection round leaves the feasible set: the notes say so
    codes = [code for code, _ in state["notes"]]
    assert "diverged" in codes and "step_bound" in codes and float(x_max) > 1 and "above_one" in codes
    assert float(bound) < 2.0


def test_convergence_explorer_notes_stay_quiet_where_alg1_converges():
    explorer = convergence_description(SMALL_GRID)
    state = explorer.run([_index(explorer, lr=0.05, n_grad=20, n_proj=5, lam=0.3, seed=0)]).states[0]
    assert not {"diverged", "above_one", "step_bound"} & {code for code, _ in state["notes"]}
    assert explorer.note_texts(state) == [explorer.notes[code].format(**fields) for code, fields in state["notes"]]


def test_static_convergence_explorer_is_self_contained_and_batched_like_the_live_one():
    explorer = convergence_description(SMALL_GRID)
    page = static_figure(explorer)
    markup = page._repr_html_()
    assert len(page.payload["states"]) == 2 * 2 * 2 * 2 * 2  # lr x n_grad x n_proj x lam x seed (one size)
    assert markup.count('type="range"') == 5 and markup.count("<select") == 1
    # no URL at all: nothing to fetch, and nothing the book's offline guard could mistake for a fetch
    assert not re.findall(r"https?://", markup)
    assert payload_of(markup) == json.loads(json.dumps(page.payload))
    # a state computed alone (as the live host does) equals the one computed in the static page's batch
    for values in (dict(lr=2.0, n_grad=5, n_proj=1, lam=0.7, seed=1), dict(lr=0.05, n_grad=20, n_proj=5, lam=0.3)):
        index = _index(explorer, **values)
        alone = explorer.run([index])
        assert json.loads(json.dumps(alone.states[0])) == page.payload["states"][explorer.key(index)]

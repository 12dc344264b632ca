import json
import re

import numpy as np
import pytest
import torch

from dmmlib.errors import DMMInputError
from dmmlib.lessons.convergence import (
    agreement_study,
    explorer_data,
    gap_curves,
    lp_optimum,
    realistic_costs,
    static_explorer,
    uniform_costs,
)
from dmmlib.matchers import hungarian_match
from dmmlib.matching import dmm_match, lp_objective

SMALL_GRID = {"lr": (0.05, 0.1), "n_grad": (5, 20), "n_proj": (2, 5), "lam": (0.3, 0.7)}


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
    assert 0.0 <= table.loc["long", "rows agreeing"] <= 1.0


def test_gap_curves_end_at_the_gap_of_dmm_match():
    cost = uniform_costs(4, 3, 8, seed=6)
    optimum = lp_optimum(cost)
    curves = gap_curves(cost, [0.1], [5], n_grad=30, optimum=optimum)
    direct = (lp_objective(cost, dmm_match(cost, n_grad=30)) - optimum).abs()
    assert curves[(0.1, 5)].shape == (30, 4)
    assert torch.allclose(curves[(0.1, 5)][-1], direct, atol=1e-9)


def test_explorer_data_holds_the_results_of_dmm_match():
    problems = realistic_costs(2, 3, 9, seed=7)
    data = explorer_data(problems, SMALL_GRID)
    assert len(data["runs"]) == 2 * 2 * 2 * 2
    run = data["runs"]["0.1|5|0.7|1"]
    expected = dmm_match(problems.with_lambda(0.7)[1], n_grad=20, n_proj=5, lr=0.1)
    np.testing.assert_allclose(run["x"][1], expected.numpy(), atol=1e-4)
    assert len(run["gap"]) == 20
    assert data["problems"]["0.7|1"]["hungarian"] == hungarian_match(problems.with_lambda(0.7)[1]).argmax(-1).tolist()


def test_static_explorer_is_self_contained():
    data = explorer_data(realistic_costs(2, 3, 9, seed=8), SMALL_GRID)
    markup = static_explorer(data)._repr_html_()
    assert markup.count('type="range"') == 5
    # no URL at all: nothing to fetch, and nothing the book's offline guard could mistake for a fetch
    assert not re.findall(r"https?://", markup)
    payload = re.search(r'<script type="application/json">(.*?)</script>', markup, re.S).group(1)
    assert json.loads(payload.replace("<\\/", "</"))["n_seeds"] == 2

"""dmmlib.toy: the worked examples of the matching chapters, checked against independent references."""

import itertools

import numpy as np
import pytest

from dmmlib.errors import DMMInputError
from dmmlib.lessons import toy

# ----------------------------------------------------------------------------- Eq. 1 ingredients


def test_appearance_features_are_two_normalised_histograms():
    image = np.linspace(0, 1, 36).reshape(6, 6)
    masks = np.zeros((2, 6, 6), bool)
    masks[0, :3] = True
    masks[1, 3:] = True
    features = toy.appearance_features(image, masks)
    assert features.shape == (2, toy.INTENSITY_BINS + toy.GRADIENT_BINS)
    np.testing.assert_allclose(features[:, :toy.INTENSITY_BINS].sum(1), 1.0)
    np.testing.assert_allclose(features[:, toy.INTENSITY_BINS:].sum(1), 1.0)
    # the top half is darker than the bottom half
    centres = (np.arange(toy.INTENSITY_BINS) + 0.5) / toy.INTENSITY_BINS
    assert features[0, :toy.INTENSITY_BINS] @ centres < features[1, :toy.INTENSITY_BINS] @ centres


# ----------------------------------------------------------------------------- the coins scene


def test_segment_coins_finds_the_coins():
    image, labels = toy.segment_coins()
    assert image.shape == labels.shape
    assert 15 <= labels.max() <= 30  # the photo shows 24 coins; a few may touch the border
    sizes = np.bincount(labels.ravel())[1:]
    assert sizes.min() > 500


def test_coin_example_is_deterministic_and_well_formed():
    a = toy.make_coin_example(seed=3)
    b = toy.make_coin_example(seed=3)
    np.testing.assert_array_equal(a.proposal_masks, b.proposal_masks)
    np.testing.assert_array_equal(a.frame2, b.frame2)
    assert a.n == 4 and a.m == 4 + 1 + 1 + 3
    assert sorted(a.proposal_kinds) == sorted(["match"] * 4 + ["fragment", "merged"] + ["other coin"] * 3)
    assert all(a.proposal_kinds[j] == "match" for j in a.true_proposal)
    assert len(set(a.true_proposal.tolist())) == a.n
    assert a.template_masks.reshape(a.n, -1).any(1).all() and a.proposal_masks.reshape(a.m, -1).any(1).all()
    # every template overlaps its own moved coin, and no untracked coin
    iou = a.cost_terms()[2]
    assert (iou[np.arange(a.n), a.true_proposal] > 0.3).all()
    others = [j for j, kind in enumerate(a.proposal_kinds) if kind == "other coin"]
    assert (iou[:, others] == 0).all()
    assert toy.make_coin_example(seed=4).proposal_kinds != a.proposal_kinds or \
        not np.array_equal(toy.make_coin_example(seed=4).template_masks, a.template_masks)


def _loop_iou(a, b):
    return (a & b).sum() / (a | b).sum()


def test_coin_example_cost_is_eq1_on_its_features_and_masks():
    example = toy.make_coin_example(seed=0)
    cost, cosine, iou = example.cost_terms(lam=0.3)
    assert cost.shape == cosine.shape == iou.shape == (example.n, example.m)
    assert cost.dtype == np.float64
    f_templates = toy.appearance_features(example.frame1, example.template_masks)
    f_proposals = toy.appearance_features(example.frame2, example.proposal_masks)
    for i in range(example.n):
        for j in range(example.m):
            cos = f_templates[i] @ f_proposals[j] / np.linalg.norm(f_templates[i]) / np.linalg.norm(f_proposals[j])
            overlap = _loop_iou(example.template_masks[i], example.proposal_masks[j])
            assert cosine[i, j] == pytest.approx(cos, abs=1e-9)
            assert iou[i, j] == pytest.approx(overlap, abs=1e-9)
            assert cost[i, j] == pytest.approx(-0.7 * cos - 0.3 * overlap, abs=1e-9)
    np.testing.assert_allclose(example.cost(0.9), example.cost_terms(0.9)[0])
    truth = example.true_assignment()
    assert truth.sum() == example.n and (truth.sum(1) == 1).all() and (truth.sum(0) <= 1).all()


@pytest.mark.parametrize("kwargs, message", [
    ({"n_templates": 0}, "n_templates"),
    ({"n_fragments": 5}, "may not exceed"),
    ({"n_templates": 20, "n_other": 10}, "whole coins"),
    ({"pan": (40, 0)}, "pan"),
])
def test_coin_example_rejects_bad_arguments(kwargs, message):
    with pytest.raises(DMMInputError, match=message):
        toy.make_coin_example(**kwargs)


# ----------------------------------------------------------------------------- Eq. 2-3


def test_constraint_matrix_is_the_bipartite_incidence_matrix():
    A_eq, b_eq, A_ub, b_ub = toy.assignment_constraints(3, 4)
    A = np.vstack([A_eq, A_ub])
    assert A.shape == (7, 12)
    assert (A.sum(0) == 2).all()  # every variable X_ij: one template row, one proposal column
    assert (A_eq.sum(0) == 1).all() and (A_ub.sum(0) == 1).all()
    X = np.arange(12.0).reshape(3, 4)
    np.testing.assert_allclose(A_eq @ X.ravel(), X.sum(1))
    np.testing.assert_allclose(A_ub @ X.ravel(), X.sum(0))
    assert (b_eq == 1).all() and (b_ub == 1).all()


def _brute_force_assignment(C):
    n, m = C.shape
    return min(sum(C[i, j] for i, j in enumerate(cols)) for cols in itertools.permutations(range(m), n))


def test_lp_relaxation_matches_brute_force_and_is_integral():
    rng = np.random.default_rng(0)
    for n, m in [(1, 1), (2, 2), (2, 5), (3, 4), (4, 4)]:
        C = rng.normal(size=(n, m))
        X, value = toy.solve_lp_relaxation(C)
        assert value == pytest.approx(_brute_force_assignment(C), abs=1e-9)
        np.testing.assert_allclose(X, np.round(X), atol=1e-9)


def test_lp_relaxation_rejects_tall_costs():
    with pytest.raises(DMMInputError, match="n <= m"):
        toy.solve_lp_relaxation(np.zeros((3, 2)))


# ----------------------------------------------------------------------------- the exact projection


def _simplex_projection(x):
    """Projection onto {x >= 0, sum x = 1} by sorting (the textbook algorithm, independent of toy)."""
    u = np.sort(x)[::-1]
    cumulative = np.cumsum(u) - 1
    k = np.flatnonzero(u - cumulative / (np.arange(len(x)) + 1) > 0)[-1]
    return np.maximum(x - cumulative[k] / (k + 1), 0)


def test_exact_projection_of_one_row_is_the_simplex_projection():
    rng = np.random.default_rng(1)
    for _ in range(5):
        x = rng.normal(0.3, 1.0, size=6)
        np.testing.assert_allclose(toy.exact_projection(x[None])[0], _simplex_projection(x), atol=1e-10)


def test_exact_projection_is_feasible_nearest_and_idempotent():
    rng = np.random.default_rng(2)
    for _ in range(5):
        X = rng.normal(0.2, 0.6, size=(3, 5))
        P = toy.exact_projection(X)
        assert np.abs(P.sum(1) - 1).max() < 1e-9 and P.sum(0).max() < 1 + 1e-9 and P.min() > -1e-12
        # no feasible point is nearer: try random feasible points (convex combinations of assignments)
        distance = np.linalg.norm(X - P)
        for _ in range(50):
            weights = rng.dirichlet(np.ones(4))
            Z = sum(w * np.eye(5)[rng.permutation(5)[:3]] for w in weights)
            assert np.linalg.norm(X - Z) >= distance - 1e-12
        np.testing.assert_allclose(toy.exact_projection(P), P, atol=1e-9)


def test_exact_projection_agrees_with_a_tiny_grid_search():
    # one 1 x 2 row: the feasible set is the segment {(t, 1 - t): 0 <= t <= 1}
    X = np.array([[1.7, -0.4]])
    t = np.linspace(0, 1, 100001)
    distances = (t - X[0, 0]) ** 2 + (1 - t - X[0, 1]) ** 2
    best = t[distances.argmin()]
    np.testing.assert_allclose(toy.exact_projection(X), [[best, 1 - best]], atol=1e-5)


# ----------------------------------------------------------------------------- pictures


def test_pictures_draw_without_error():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    example = toy.make_coin_example(seed=0)
    fig, (left, right) = plt.subplots(1, 2)
    toy.draw_masks(left, example.frame1, example.template_masks, names=["a", "b", "c", "d"], title="frame 1")
    cost = np.asarray(example.cost(), dtype=np.float64)
    truth = np.asarray(example.true_assignment())
    toy.plot_matrix(right, cost, title="cost", outline=truth)
    # each cell shows its own entry (two decimals) at (column j, row i); the sums follow, red where they
    # break Eq. 3 (a cost matrix's rows do not sum to 1)
    cells = {(t.get_position()[1], t.get_position()[0]): t.get_text() for t in right.texts[: example.n * example.m]}
    assert cells == {(i, j): f"{cost[i, j]:.2f}" for i in range(example.n) for j in range(example.m)}
    row_sums = right.texts[example.n * example.m: example.n * example.m + example.n]
    assert [t.get_text() for t in row_sums] == [f"Σ {s:.2f}" for s in cost.sum(1)]
    assert all((t.get_color() == "crimson") == (abs(s - 1) > 1e-6) for t, s in zip(row_sums, cost.sum(1)))
    # the true assignment is outlined: two frames (white under crimson) at each of its ones
    corners = sorted((p.get_xy(), p.get_edgecolor()) for p in right.patches if p.get_width() == 1)
    ones = np.argwhere(truth > 0.5)
    assert len(corners) == 2 * len(ones) == 2 * example.n
    assert {(j - 0.5, i - 0.5) for i, j in ones} == {xy for xy, _ in corners}
    # every template outline is drawn on the left, with its name
    assert [t.get_text() for t in left.texts] == ["a", "b", "c", "d"]
    plt.close(fig)

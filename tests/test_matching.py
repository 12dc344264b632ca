"""dmmlib.projections, dmmlib.matching and dmmlib.matchers: Eq. 3-7, Alg. 1 and the baseline matchers.

Every claim is checked against something independent of the code under test: scipy's
linprog (HiGHS) for the LP optimum, SLSQP for the Euclidean projection onto the
intersection, scipy's Hungarian method, and a literal transcription of Alg. 1.
"""

import collections

import numpy as np
import pytest
import torch
from scipy.optimize import linprog, minimize

from dmmlib.errors import DMMInputError
from dmmlib.matchers import greedy_match, hungarian_match, sinkhorn_match
from dmmlib.matching import (
    PAPER_SETTINGS,
    confident_assignment,
    dmm_match,
    greedy_one_hot_start,
    lp_objective,
    projection_weights,
)
from dmmlib.projections import (
    alternating_project,
    constraint_violation,
    dykstra_project,
    make_layout,
    project_columns_literal_eq6,
    project_columns_sum_at_most_one,
    project_nonnegative,
    project_rows_sum_to_one,
)

F64 = torch.float64


def rand(*shape, seed=0, dtype=F64, scale=1.0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype) * scale


def randn(*shape, seed=0, dtype=F64, scale=1.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype) * scale


def lp_optimum(C: np.ndarray) -> float:
    """min Tr(C X^T) s.t. X1 = 1, X^T 1 <= 1, X >= 0 (Eq. 3), by HiGHS."""
    n, m = C.shape
    rows_sum_to_one = np.kron(np.eye(n), np.ones((1, m)))
    columns_sum = np.kron(np.ones((1, n)), np.eye(m))
    result = linprog(C.ravel(), A_ub=columns_sum, b_ub=np.ones(m), A_eq=rows_sum_to_one, b_eq=np.ones(n),
                     bounds=(0, None), method="highs")
    assert result.status == 0
    return result.fun


def exact_projection(Y: np.ndarray) -> np.ndarray:
    """argmin ||X - Y||_F over the feasible set of Eq. 3, by SLSQP (not Dykstra)."""
    n, m = Y.shape
    rows, columns = np.kron(np.eye(n), np.ones((1, m))), np.kron(np.ones((1, n)), np.eye(m))
    constraints = [
        {"type": "eq", "fun": lambda x: rows @ x - 1, "jac": lambda x: rows},
        {"type": "ineq", "fun": lambda x: 1 - columns @ x, "jac": lambda x: -columns},
    ]
    y = Y.ravel()
    result = minimize(lambda x: 0.5 * ((x - y) ** 2).sum(), np.full(n * m, 1.0 / m), jac=lambda x: x - y,
                      bounds=[(0, None)] * (n * m), constraints=constraints, method="SLSQP",
                      options={"ftol": 1e-14, "maxiter": 1000})
    assert result.success, result.message
    return result.x.reshape(n, m)


# ----------------------------------------------------------------------------- projections


def test_each_projection_lands_in_its_set_and_is_idempotent():
    X = randn(3, 4, 7, scale=2.0)
    P1 = project_rows_sum_to_one(X)
    torch.testing.assert_close(P1.sum(-1), torch.ones(3, 4, dtype=F64))
    P2 = project_columns_sum_at_most_one(X)
    assert (P2.sum(-2) <= 1 + 1e-12).all()
    P3 = project_nonnegative(X)
    assert (P3 >= 0).all()
    for project, P in ((project_rows_sum_to_one, P1), (project_columns_sum_at_most_one, P2), (project_nonnegative, P3)):
        torch.testing.assert_close(project(P), P, rtol=0, atol=1e-12)


def test_projections_are_the_nearest_points_of_their_sets():
    # Euclidean projection onto a convex set S: <X - P(X), Z - P(X)> <= 0 for every Z in S.
    X = randn(4, 6, seed=1, scale=2.0)
    for seed, project in enumerate((project_rows_sum_to_one, project_columns_sum_at_most_one, project_nonnegative)):
        P = project(X)
        for k in range(20):
            Z = project(randn(4, 6, seed=100 * seed + k, scale=3.0))
            assert ((X - P) * (Z - P)).sum() <= 1e-10


def test_column_projection_only_moves_columns_that_exceed_and_literal_eq6_moves_all():
    X = torch.tensor([[0.9, 0.2, 0.1], [0.8, 0.3, 0.0]], dtype=F64)  # column 0 sums to 1.7
    P2 = project_columns_sum_at_most_one(X)
    torch.testing.assert_close(P2[:, 0], torch.tensor([0.55, 0.45], dtype=F64))
    torch.testing.assert_close(P2[:, 1:], X[:, 1:], rtol=0, atol=0)
    literal = project_columns_literal_eq6(X)
    assert (literal[:, 1:] > X[:, 1:]).all()  # the fine columns get raised to sum to 1
    assert torch.linalg.matrix_norm(literal - X) > torch.linalg.matrix_norm(P2 - X)
    fine = X * 0.3
    torch.testing.assert_close(project_columns_literal_eq6(fine), fine)


def test_dykstra_converges_to_the_exact_projection_and_alternating_does_not():
    # a point far outside the feasible set, where cycling without corrections stops elsewhere
    Y = torch.tensor([[2.0, -1.0, 0.5, 0.3], [1.5, 0.2, -0.4, 0.1], [0.9, 0.8, 0.7, -2.0]], dtype=F64)
    exact = torch.as_tensor(exact_projection(Y.numpy()))
    dykstra = dykstra_project(Y, 3000)
    alternating = alternating_project(Y, 3000)
    assert constraint_violation(exact) < 1e-8
    torch.testing.assert_close(dykstra, exact, rtol=0, atol=1e-6)
    assert constraint_violation(alternating) < 1e-8  # it does reach the set ...
    assert (alternating - exact).abs().max() > 1e-2  # ... but not its nearest point


@pytest.mark.parametrize("seed", range(4))
def test_dykstra_matches_exact_projection_on_random_points(seed):
    Y = randn(3, 5, seed=seed, scale=1.5)
    exact = torch.as_tensor(exact_projection(Y.numpy()))
    torch.testing.assert_close(dykstra_project(Y, 3000), exact, rtol=0, atol=1e-6)


def test_projections_respect_masks():
    X = randn(2, 4, 6, seed=3)
    template_mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    proposal_mask = torch.tensor([[True] * 5 + [False], [True] * 3 + [False] * 3])
    for fn in (project_rows_sum_to_one, project_columns_sum_at_most_one, project_nonnegative,
               project_columns_literal_eq6, lambda X, **k: dykstra_project(X, 7, **k),
               lambda X, **k: alternating_project(X, 7, **k)):
        out = fn(X, template_mask=template_mask, proposal_mask=proposal_mask)
        torch.testing.assert_close(out[0, :3, :5], fn(X[0, :3, :5]), rtol=0, atol=1e-12)
        torch.testing.assert_close(out[1, :2, :3], fn(X[1, :2, :3]), rtol=0, atol=1e-12)
        assert (out[0, 3:] == 0).all() and (out[0, :, 5:] == 0).all() and (out[1, 2:] == 0).all()


# ----------------------------------------------------------------------------- Alg. 1


def literal_alg1(C, n_grad, n_proj, lr):
    """Alg. 1 transcribed line by line, with the projection of dmmlib.projections.dykstra_project."""
    X = torch.zeros_like(C)
    iterates = []
    for _ in range(n_grad):
        X = dykstra_project(X - lr * C, n_proj)
        iterates.append(X)
    return torch.stack(iterates).mean(0)


def test_dmm_match_equals_a_literal_transcription_of_alg1():
    C = rand(3, 4, 9, seed=4)
    torch.testing.assert_close(dmm_match(C, n_grad=12, n_proj=4, lr=0.3), literal_alg1(C, 12, 4, 0.3),
                               rtol=0, atol=1e-12)
    torch.testing.assert_close(dmm_match(C), literal_alg1(C, 40, 5, 0.1), rtol=0, atol=1e-12)
    assert PAPER_SETTINGS == {"n_grad": 40, "n_proj": 5, "lr": 0.1}


def test_init_is_the_starting_point():
    C = rand(4, 7, seed=5)
    X0 = project_rows_sum_to_one(rand(4, 7, seed=6))
    expected = dykstra_project(X0 - 0.2 * C, 6)
    torch.testing.assert_close(dmm_match(C, n_grad=1, n_proj=6, lr=0.2, init=X0), expected, rtol=0, atol=1e-12)
    assert not torch.allclose(dmm_match(C, n_grad=1, n_proj=6, lr=0.2), expected)


def lp_cases():
    """Random and degenerate problems of different sizes, padded into one masked batch [B, 5, 10]."""
    ties = torch.randint(0, 3, (2, 4, 8), generator=torch.Generator().manual_seed(10)).to(F64) / 2
    cases = [*rand(3, 4, 8, seed=7), *rand(2, 5, 5, seed=8), *rand(2, 1, 9, seed=9), *ties,
             torch.full((3, 6), 0.7, dtype=F64)]
    C = torch.zeros(len(cases), 5, 10, dtype=F64)
    template_mask = torch.zeros(len(cases), 5, dtype=torch.bool)
    proposal_mask = torch.zeros(len(cases), 10, dtype=torch.bool)
    for b, case in enumerate(cases):
        n, m = case.shape
        C[b, :n, :m], template_mask[b, :n], proposal_mask[b, :m] = case, True, True
    return cases, C, template_mask, proposal_mask


def test_dmm_match_reaches_the_lp_optimum_on_random_and_degenerate_problems():
    cases, C, template_mask, proposal_mask = lp_cases()
    optimum = torch.tensor([lp_optimum(case.numpy()) for case in cases], dtype=F64)
    gaps = {}
    for n_grad in (250, 1000):
        X_hat = dmm_match(C, n_grad=n_grad, n_proj=50, lr=0.2, template_mask=template_mask,
                          proposal_mask=proposal_mask)
        gaps[n_grad] = (lp_objective(C, X_hat) - optimum).abs()
    print("objective gap after 1000 outer iterations:", [round(g, 4) for g in gaps[1000].tolist()])
    assert gaps[1000].max() < 0.015  # costs in [0, 1]; the gap of the average decays like 1 / N_grad
    assert constraint_violation(X_hat, template_mask, proposal_mask).max() < 0.01
    assert gaps[250][:-1].mean() > 2 * gaps[1000][:-1].mean()  # still converging (not the all-equal case)
    assert gaps[1000][-1] < 1e-9  # all-equal costs: every feasible X is optimal


def test_paper_settings_agree_with_hungarian_on_most_problems():
    C = rand(200, 5, 50, seed=11, dtype=torch.float32)
    X_hat = dmm_match(C)
    agree = (X_hat.argmax(-1) == hungarian_match(C).argmax(-1)).all(-1).float().mean().item()
    print(f"paper settings, 200 uniform 5x50 problems: row argmax agrees with Hungarian on {agree:.1%}")
    assert agree >= 0.75  # measured 79-85% over seeds (n = 5 exactly; about 90% over mixed n <= 5)


def test_gradcheck_float64():
    C = rand(3, 5, seed=12).requires_grad_()
    assert torch.autograd.gradcheck(lambda c: dmm_match(c, n_grad=6, n_proj=3, lr=0.3), (C,))
    Cb = rand(2, 2, 4, seed=13).requires_grad_()
    mask = torch.tensor([[True, True, True, True], [True, True, True, False]])
    assert torch.autograd.gradcheck(lambda c: dmm_match(c, n_grad=4, n_proj=3, proposal_mask=mask), (Cb,))


@pytest.mark.parametrize("variant", ["paper", "release"])
def test_checkpointed_backward_gives_the_same_gradients(variant):
    C = rand(3, 4, 10, seed=14).requires_grad_()
    weights = rand(3, 4, 10, seed=15)
    kwargs = {"n_grad": 8, "n_proj": 4} if variant == "paper" else {"n_grad": 20, "n_proj": 10}
    grads = [torch.autograd.grad((dmm_match(C, variant=variant, checkpoint=ckpt, **kwargs) * weights).sum(), C)[0]
             for ckpt in (False, True)]
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[1], grads[0], rtol=0, atol=1e-12)


@pytest.mark.parametrize("variant", ["paper", "release"])
def test_batched_equals_looped(variant):
    C = rand(6, 3, 12, seed=16)
    kwargs = {"n_grad": 60, "n_proj": 20} if variant == "release" else {}
    batched = dmm_match(C, variant=variant, **kwargs)
    looped = torch.stack([dmm_match(c, variant=variant, **kwargs) for c in C])
    torch.testing.assert_close(batched, looped, rtol=0, atol=1e-12)
    C32 = C.float()
    torch.testing.assert_close(dmm_match(C32), torch.stack([dmm_match(c) for c in C32]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("variant", ["paper", "release"])
def test_masked_padding_equals_the_unpadded_problem(variant):
    sizes = [(3, 7), (1, 4), (2, 2), (3, 9)]
    C = rand(4, 3, 9, seed=17)
    C[0, :, 7:] = float("inf")  # padding may hold anything
    C[1, 1:] = float("nan")
    template_mask = torch.tensor([[i < n for i in range(3)] for n, _ in sizes])
    proposal_mask = torch.tensor([[j < m for j in range(9)] for _, m in sizes])
    kwargs = {"n_grad": 50, "n_proj": 20} if variant == "release" else {}
    X = dmm_match(C, template_mask=template_mask, proposal_mask=proposal_mask, variant=variant, **kwargs)
    for b, (n, m) in enumerate(sizes):
        alone = dmm_match(C[b, :n, :m], variant=variant, **kwargs)
        torch.testing.assert_close(X[b, :n, :m], alone, rtol=0, atol=1e-12)
        assert (X[b, n:] == 0).all() and (X[b, :, m:] == 0).all()


def test_masks_in_the_other_matchers():
    C = rand(2, 3, 6, seed=18)
    template_mask = torch.tensor([[True, True, False], [True, True, True]])
    proposal_mask = torch.tensor([[True] * 4 + [False] * 2, [True] * 6])
    for match in (hungarian_match, greedy_match, lambda c, **k: sinkhorn_match(c, tau=0.05, **k)):
        X = match(C, template_mask=template_mask, proposal_mask=proposal_mask)
        torch.testing.assert_close(X[0, :2, :4], match(C[0, :2, :4]), rtol=0, atol=1e-12)
        torch.testing.assert_close(X[1], match(C[1]), rtol=0, atol=1e-12)
        assert (X[0, 2:] == 0).all() and (X[0, :, 4:] == 0).all()


def test_trace_holds_per_iteration_diagnostics():
    C = rand(3, 4, 10, seed=19)
    X_hat, trace = dmm_match(C, n_grad=30, n_proj=10, return_trace=True)
    for field in vars(trace).values():
        assert field.shape == (30, 3)
    torch.testing.assert_close(trace.objective_average[-1], lp_objective(C, X_hat))
    torch.testing.assert_close(trace.violation_average[-1], constraint_violation(X_hat))
    assert (trace.step_norm[0] > trace.step_norm[-1]).all()
    _, single = dmm_match(C[0], n_grad=30, n_proj=10, return_trace=True)
    assert single.objective_iterate.shape == (30,)
    torch.testing.assert_close(single.objective_iterate, trace.objective_iterate[:, 0])


# ----------------------------------------------------------------------------- release variant


def test_release_start_is_the_greedy_one_hot_matrix():
    C = torch.tensor([[0.1, 0.5, 0.9, 0.4], [0.2, 0.3, 0.8, 0.6], [0.9, 0.9, 0.9, 0.9]], dtype=F64)
    # columns' best templates: 0, 1, 1, 0 -> row 0 takes column 0 (0.1 < 0.4), row 1 column 1 (0.3 < 0.8),
    # row 2 is best for no column and starts empty
    expected = torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]], dtype=F64)
    torch.testing.assert_close(greedy_one_hot_start(C[None])[0], expected, rtol=0, atol=0)


def literal_release(C, n_grad, n_proj, lr, tol):
    """The release's loop for one [n, m] problem, written plainly: full correction matrices
    carried across outer iterations, a Python list of points to average, early stops."""
    X = greedy_one_hot_start(C[None])[0]
    corrections = [torch.zeros_like(C) for _ in range(3)]
    points, objective = [X], (C * X).sum()
    for _ in range(n_grad):
        pre = Y = X - lr * C
        for _ in range(n_proj):
            before = Y
            for k, project in enumerate((project_nonnegative, project_columns_sum_at_most_one,
                                         project_rows_sum_to_one)):
                corrected = Y + corrections[k]
                Y = project(corrected)
                corrections[k] = corrected - Y
            if (Y - before).abs().max() <= tol:
                break
        X = Y
        points += [pre, X]
        new_objective = (C * X).sum()
        if (new_objective - objective).abs() <= tol:
            break
        objective = new_objective
    return torch.stack(points).mean(0)


def test_release_variant_equals_a_plain_transcription():
    C = rand(5, 3, 10, seed=27)
    batched = dmm_match(C, variant="release", n_grad=80, n_proj=30, lr=0.2)
    for b in range(len(C)):
        torch.testing.assert_close(batched[b], literal_release(C[b], 80, 30, 0.2, 1e-6), rtol=0, atol=1e-10)


def test_release_variant_defaults_stops_early_and_approximates_hungarian():
    C = rand(40, 5, 50, seed=11, dtype=torch.float32)
    X_hat, trace = dmm_match(C, variant="release", return_trace=True)
    assert trace.step_norm.shape[0] <= 400
    stopped_early = (trace.step_norm[-1] == 0).float().mean().item()
    _, short = dmm_match(C, variant="release", n_grad=7, return_trace=True)
    assert short.step_norm.shape[0] == 7
    agree = (X_hat.argmax(-1) == hungarian_match(C).argmax(-1)).all(-1).float().mean().item()
    print(f"release variant, 40 uniform 5x50 problems: argmax agrees with Hungarian on {agree:.1%}; "
          f"{stopped_early:.0%} stopped before 400 outer iterations")
    assert agree >= 0.65  # measured 80% on 200 such problems
    assert stopped_early > 0.2
    # its average holds pre-projection points, so it differs from the paper's output
    assert not torch.allclose(X_hat, dmm_match(C, n_grad=400, n_proj=50), atol=1e-3)


def test_release_variant_reads_the_host_a_few_times_per_outer_iteration(monkeypatch):
    """The early-stopping flags are read every RELEASE_CHECK_EVERY inner rounds, not after each (GPU syncs)."""
    import dmmlib.matching as matching

    reads = []
    real = matching.any_on_host
    monkeypatch.setattr(matching, "any_on_host", lambda flags: reads.append(1) or real(flags))
    C = rand(4, 3, 10, seed=28)
    X = dmm_match(C, variant="release", n_grad=30, n_proj=50, tol=0.0)  # tol 0: nothing stops early
    checks_per_outer = -(-50 // matching.RELEASE_CHECK_EVERY)  # ceil: the inner checks, the last one being the outer's
    assert len(reads) <= 2 + 30 * checks_per_outer  # 2: the cost checks of prepare_problem
    assert len(reads) > 30  # it does look: once per outer iteration at least
    torch.testing.assert_close(X[0], literal_release(C[0], 30, 50, 0.1, 0.0), rtol=0, atol=1e-10)


def _profiled(fn) -> "collections.Counter":
    import collections

    from torch.profiler import profile

    fn()
    with profile() as prof:
        fn()
    return collections.Counter(e.name for e in prof.events())


def test_the_fused_loop_has_no_dtype_conversion_and_few_operations_per_round():
    """What torch.profiler counts per call: conversions do not grow with the iterations, ~16 ops a round."""
    C = rand(5, 50, seed=29, dtype=torch.float32)
    with torch.no_grad():
        short, long = (_profiled(lambda: dmm_match(C, n_grad=n)) for n in (2, 12))
    for conversion in ("aten::to", "aten::_to_copy", "aten::copy_"):
        assert long[conversion] == short[conversion], conversion  # none inside the loop
    per_round = (sum(long.values()) - sum(short.values())) / (10 * PAPER_SETTINGS["n_proj"])
    print(f"profiler events per inner round: {per_round:.1f}")
    assert per_round <= 17  # 35 before the fused layer (7,000 a call at the paper's settings)


@pytest.mark.slow
def test_compiled_layer_is_one_graph_with_the_same_numbers_and_gradients():
    """torch.compile(fullgraph=True) of an outer iteration (a graph break would raise), forward and backward."""
    C = rand(3, 4, 9, seed=30, dtype=torch.float32).requires_grad_()
    weights = rand(3, 4, 9, seed=31, dtype=torch.float32)
    eager = dmm_match(C, n_grad=6, n_proj=3)
    compiled = dmm_match(C, n_grad=6, n_proj=3, compiled=True)
    torch.testing.assert_close(compiled, eager, rtol=0, atol=1e-6)
    grads = [torch.autograd.grad((X * weights).sum(), C)[0] for X in (eager, compiled)]
    torch.testing.assert_close(grads[1], grads[0], rtol=0, atol=1e-6)
    with torch.no_grad():
        one = rand(5, 50, seed=32, dtype=torch.float32)
        ops = _profiled(lambda: dmm_match(one, compiled=True))
        torch.testing.assert_close(dmm_match(one, compiled=True), dmm_match(one), rtol=0, atol=1e-6)
    aten = sum(count for name, count in ops.items() if name.startswith("aten::"))
    print(f"compiled dmm_match, one 5x50 problem, paper settings: {aten} aten operations a call")
    assert aten <= 500
    with pytest.raises(DMMInputError, match="compiled=True is for variant='paper'"):
        dmm_match(one, variant="release", compiled=True)


# ----------------------------------------------------------------------------- other matchers


def test_confident_assignment_keeps_row_maxima_and_passes_gradients():
    X = torch.tensor([[0.2, 0.7, 0.1], [0.5, 0.5, 0.0]], dtype=F64, requires_grad=True)
    X_tilde = confident_assignment(X)
    torch.testing.assert_close(X_tilde.detach(), torch.tensor([[0, 0.7, 0], [0.5, 0.5, 0]], dtype=F64))
    (grad,) = torch.autograd.grad((X_tilde * torch.arange(6.0, dtype=F64).view(2, 3)).sum(), X)
    torch.testing.assert_close(grad, torch.tensor([[0, 1.0, 0], [3, 4, 0]], dtype=F64))


def test_confident_assignment_is_the_row_maximum_not_a_threshold():
    """X~ = X^ * 1[X^ = row max] (Sec. 4.1) on hand-made X^: a row whose maximum is below 0.5 keeps
    its maximum; a tie keeps every maximal entry; a second entry above 0.5 is still dropped."""
    X = torch.tensor([
        [[0.30, 0.20, 0.25, 0.25],   # maximum below 0.5: kept alone
         [0.40, 0.10, 0.40, 0.10],   # a tie below 0.5: both kept
         [0.55, 0.60, 0.00, 0.50]],  # two entries above 0.5: only the larger
        [[0.00, 0.00, 0.00, 0.00],   # an all-zero (padding) row stays zero
         [0.01, 0.02, 0.03, 0.04],   # tiny values: the maximum is kept, however small
         [0.25, 0.25, 0.25, 0.25]],  # all tied: the row is unchanged
    ], dtype=F64)
    expected = torch.tensor([
        [[0.30, 0, 0, 0], [0.40, 0, 0.40, 0], [0, 0.60, 0, 0]],
        [[0, 0, 0, 0], [0, 0, 0, 0.04], [0.25, 0.25, 0.25, 0.25]],
    ], dtype=F64)
    assert torch.equal(confident_assignment(X), expected)
    assert torch.equal(confident_assignment(X[0]), expected[0])  # [n, m] as well as [B, n, m]


def test_confident_assignment_names_its_argument_and_the_greedy_start_stays_on_the_costs_device():
    with pytest.raises(DMMInputError, match=r"^X_hat has shape \[3\]; expected at least 2 dimensions"):
        confident_assignment(torch.rand(3))
    # meta tensors carry no data but check devices: a helper tensor made on the CPU would not mix
    X0 = greedy_one_hot_start(torch.rand(2, 3, 4, device="meta"))
    assert X0.device.type == "meta" and X0.shape == (2, 3, 4)


def test_lp_objective_is_the_trace_and_its_errors_name_the_argument():
    C = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=F64)
    X = torch.tensor([[0.0, 1.0], [0.5, 0.5]], dtype=F64)
    assert lp_objective(C, X).item() == torch.trace(C @ X.T).item() == 2.0 + 3.5  # Tr(C X^T), Eq. 2
    with pytest.raises(DMMInputError, match=r"^cost has shape \[2\]"):
        lp_objective(C[0], X)
    with pytest.raises(DMMInputError, match=r"^X has shape \[2\]"):
        lp_objective(C, X[0])


def test_projection_weights_take_the_matrixs_dtype_and_device():
    """Alg. 1's constants are made in X's dtype and device (a float32 constant would upcast a bf16 X;
    one on the CPU would not mix with a GPU X). Meta tensors check both without data."""
    like = torch.zeros(2, 3, 4, dtype=torch.bfloat16, device="meta")
    weights = projection_weights(make_layout(like.shape, None, None, like.dtype, like.device), like)
    for name, value in weights._asdict().items():
        assert (value.dtype, value.device.type) == (torch.bfloat16, "meta"), name
    C = rand(2, 3, 4, seed=3, dtype=F64)
    weights = projection_weights(make_layout(C.shape, None, None, C.dtype, C.device), C)
    assert weights.col_share.unique().tolist() == [0.25] and weights.inv_n.unique().tolist() == [1 / 3]


def test_confident_assignment_of_alg1_at_paper_settings_keeps_one_entry_per_row():
    """At the paper's settings X^ is an average of iterates that start at 0, so on random costs most
    row maxima lie below 0.5; X~ keeps exactly each row's largest entry, with its value."""
    cost = rand(20, 5, 50, seed=31, dtype=torch.float32)
    X_hat = dmm_match(cost)
    row_max = X_hat.amax(-1)
    assert (row_max < 0.5).float().mean() > 0.9  # the case a threshold at 0.5 would get wrong
    X_tilde = confident_assignment(X_hat)
    assert ((X_tilde > 0).sum(-1) == 1).all()
    assert torch.equal(X_tilde.amax(-1), row_max)
    assert torch.equal(X_tilde.argmax(-1), X_hat.argmax(-1))


def test_hungarian_and_greedy_return_assignments_of_the_same_form():
    C = rand(5, 3, 8, seed=21, dtype=torch.float32)
    for match in (hungarian_match, greedy_match):
        X = match(C)
        assert X.shape == C.shape and X.dtype == C.dtype and X.device == C.device
        assert ((X == 0) | (X == 1)).all()
        assert (X.sum(-1) == 1).all() and (X.sum(-2) <= 1).all()
    optimum = torch.tensor([lp_optimum(c.double().numpy()) for c in C])
    torch.testing.assert_close(lp_objective(C, hungarian_match(C)), optimum.float(), rtol=0, atol=1e-5)
    assert hungarian_match(C[0]).shape == (3, 8)


def test_greedy_variants_on_a_known_example():
    C = torch.tensor([[0.0, 1.0], [1.0, 100.0]])
    torch.testing.assert_close(greedy_match(C), torch.eye(2))  # global cheapest first: cost 100
    torch.testing.assert_close(hungarian_match(C), torch.tensor([[0.0, 1], [1, 0]]))  # cost 2
    per_template = greedy_match(torch.tensor([[0.0, 1.0], [0.5, 2.0]]), strategy="per_template")
    torch.testing.assert_close(per_template, torch.tensor([[1.0, 0], [1, 0]]))  # both take column 0


def test_sinkhorn_rows_sum_to_one_and_small_tau_approaches_the_lp():
    C = rand(6, 4, 10, seed=22)
    optimum = torch.tensor([lp_optimum(c.numpy()) for c in C], dtype=F64)
    X = sinkhorn_match(C, tau=0.01, n_iter=500)
    torch.testing.assert_close(X.sum(-1), torch.ones(6, 4, dtype=F64))
    assert (X.sum(-2) <= 1 + 1e-3).all() and (X >= 0).all()
    assert (lp_objective(C, X) - optimum).abs().max() < 0.1
    coarse = sinkhorn_match(C, tau=0.5, n_iter=500)
    assert (lp_objective(C, coarse) - optimum).mean() > (lp_objective(C, X) - optimum).mean()
    square = sinkhorn_match(rand(3, 3, seed=23), tau=0.1, n_iter=500)  # no leftover mass: no dummy row
    torch.testing.assert_close(square.sum(-2), torch.ones(3, dtype=F64), rtol=0, atol=1e-6)
    Cg = rand(2, 4, seed=24).requires_grad_()
    assert torch.autograd.gradcheck(lambda c: sinkhorn_match(c, tau=0.2, n_iter=10), (Cg,))


# ----------------------------------------------------------------------------- bad input


def test_more_templates_than_proposals_is_an_error_with_a_remedy():
    C = rand(3, 2, seed=25)
    with pytest.raises(DMMInputError, match=r"n=3 templates but only m=2 proposals.*no_proposal_cost"):
        dmm_match(C)
    with pytest.raises(DMMInputError, match="problem 1 of the batch"):
        hungarian_match(torch.rand(2, 3, 4), proposal_mask=torch.tensor([[True] * 4, [True, True, False, False]]))
    # expensive "no proposal": both real proposals get used; free: nobody is matched
    X = hungarian_match(C, no_proposal_cost=10.0)
    assert X.shape == (3, 2) and (X.sum(-2) == 1).all() and X.sum() == 2
    assert hungarian_match(C, no_proposal_cost=-10.0).sum() == 0
    X_hat = dmm_match(C, n_grad=400, n_proj=50, no_proposal_cost=10.0)
    assert X_hat.shape == (3, 2) and (X_hat.sum(-1) <= 1 + 1e-3).all()
    torch.testing.assert_close(X_hat.sum(), torch.tensor(2.0, dtype=F64), rtol=0, atol=0.05)


@pytest.mark.parametrize("bad, message", [
    (torch.tensor([[0.1, float("nan")]]), "NaN or infinite"),
    (torch.tensor([[0.1, float("inf")]]), "NaN or infinite"),
    (torch.rand(5), r"expected at least 2 dimensions"),
    (torch.rand(2, 2, 2, 2), r"expected \[n, m\] or \[B, n, m\]"),
    (torch.ones(2, 3, dtype=torch.int64), "expected a floating dtype"),
    (np.ones((2, 3)), "must be a torch.Tensor"),
    (torch.rand(0, 3), "n >= 1"),
])
def test_bad_costs_are_clear_errors(bad, message):
    with pytest.raises(DMMInputError, match=message):
        dmm_match(bad)


def test_bad_arguments_are_clear_errors():
    C = torch.rand(2, 3, 5)
    cases = [
        (dict(lr=0.0), r"lr=0.0; expected a finite number > 0"),
        (dict(lr=-1), "lr=-1"),
        (dict(n_grad=0), r"n_grad=0; expected an integer >= 1"),
        (dict(n_proj=2.5), "n_proj=2.5"),
        (dict(variant="fast"), "variant='fast'"),
        (dict(template_mask=torch.ones(2, 4, dtype=torch.bool)),
         r"template_mask has shape \[2, 4\]; expected \[2, 3\]"),
        (dict(proposal_mask=torch.ones(2, 5)), "proposal_mask must have dtype torch.bool"),
        (dict(init=torch.zeros(3, 5)), r"init has shape \[3, 5\]; expected \[2, 3, 5\]"),
        (dict(no_proposal_cost=float("nan")), "no_proposal_cost=nan"),
        (dict(variant="release", init=torch.zeros(2, 3, 5)), "init is not used by variant='release'"),
        (dict(variant="release", tol=-1.0), "tol=-1.0"),
    ]
    for kwargs, message in cases:
        with pytest.raises(DMMInputError, match=message):
            dmm_match(C, **kwargs)
    with pytest.raises(DMMInputError, match="cost has shape"):
        lp_objective(C, torch.rand(2, 3, 4))
    with pytest.raises(DMMInputError, match="strategy="):
        greedy_match(C, strategy="best")
    with pytest.raises(DMMInputError, match="tau="):
        sinkhorn_match(C, tau=0)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    C = rand(8, 4, 30, seed=26, dtype=torch.float32)
    mask = torch.ones(8, 30, dtype=torch.bool)
    mask[::2, 20:] = False
    for fn in (lambda c, **k: dmm_match(c, **k), lambda c, **k: dmm_match(c, variant="release", n_grad=50, **k),
               hungarian_match, greedy_match, sinkhorn_match):
        on_gpu = fn(C.cuda(), proposal_mask=mask.cuda())
        assert on_gpu.device.type == "cuda"
        torch.testing.assert_close(on_gpu.cpu(), fn(C, proposal_mask=mask), rtol=0, atol=1e-4)


def test_constraint_violations_are_per_problem_and_per_constraint_by_hand():
    """Eq. 3's three constraints measured on two problems at once: each problem gets its own maxima."""
    X = torch.tensor([
        [[1.0, 0.5, 0.0], [0.5, 0.5, 0.0]],     # rows 1.5 and 1; columns 1.5, 1, 0; no negative entry
        [[1.0, 0.0, 0.0], [0.0, 1.2, -0.2]],    # rows 1 and 1; columns 1, 1.2, -0.2; one entry -0.2
    ], dtype=torch.float64)
    rows, columns, negativity = constraint_violation(X, per_constraint=True)
    torch.testing.assert_close(rows, torch.tensor([0.5, 0.0], dtype=torch.float64))
    torch.testing.assert_close(columns, torch.tensor([0.5, 0.2], dtype=torch.float64))
    torch.testing.assert_close(negativity, torch.tensor([0.0, 0.2], dtype=torch.float64))
    torch.testing.assert_close(constraint_violation(X), torch.tensor([0.5, 0.2], dtype=torch.float64))


def test_literal_eq6_by_hand():
    """The paper's Eq. 6 read literally: when a column sum exceeds 1, every column j moves by (s_j - 1) / n."""
    X = torch.tensor([[0.9, 0.3], [0.6, 0.1]], dtype=torch.float64)  # column sums 1.5 and 0.4, n = 2
    expected = torch.tensor([[0.65, 0.6], [0.35, 0.4]], dtype=torch.float64)
    torch.testing.assert_close(project_columns_literal_eq6(X), expected)
    # a column sum of exactly 1 does not exceed 1: nothing moves
    at_bound = torch.tensor([[0.5, 0.2], [0.5, 0.2]], dtype=torch.float64)
    torch.testing.assert_close(project_columns_literal_eq6(at_bound), at_bound)

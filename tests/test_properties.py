"""Property-based tests (hypothesis): for any input, the matching layer and the metrics either give a
valid result or raise :class:`DMMInputError` -- never NaN, never an absurd value, never a crash.

What "valid" means for ``dmm_match`` is what Alg. 1 can promise. N_proj Dykstra rounds stop short
of the exact projection (Theorem 1 bounds the error by rho c^N_proj; with the paper's own settings
row sums of X^ are about 0.1 off for costs in [-1, 1]), so X^ is not exactly feasible. What holds:

* ``variant="paper"``: X^ >= 0 (P3 comes last in each round), and for any feasible F (below: an
  assignment), ||X^ - F||_F <= ||X^0 - F||_F + N_grad alpha ||C||_F. For N_proj = 1 this is a theorem:
  each projection is onto a convex set that holds F, so it moves no point away from F, and X^ is an
  average of such iterates. For more rounds (Dykstra's corrections) it is checked here, and held in
  4,000 hypothesis examples searched for a counterexample. Rows then sum to 1 within
  sqrt(m) times that distance, entries stay below 1 plus it.
* ``variant="release"`` averages the pre-projection points X - alpha C too, and carries the corrections
  across outer iterations: X^ may be negative; ||X^ - F||_F <= ||X^0 - F||_F + 2 N_grad alpha ||C||_F
  (X^0 its greedy start) held in 4,000 examples with a margin above 4x.

The accepted range (``lr * max|C| <= 10``, a finite init in [-10, 10]) keeps these bounds meaningful.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from dmmlib.errors import DMMInputError
from dmmlib.evaluation.metrics import boundary_f, db_statistics, jaccard
from dmmlib.matching import dmm_match, greedy_one_hot_start
from dmmlib.problem import MAX_STEP

# derandomized: the same examples on every run, so a failure reproduces (3,000 random examples per test
# passed when these tests were written); no example database is written into the checkout
FAST = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32, "float64": torch.float64,
          "int64": torch.int64, "bool": torch.bool}
SPECIAL = [0.0, -0.0, 1.0, -1.0, 1e-30, 1e30, -1e30, math.inf, -math.inf, math.nan]


def _values(draw, shape, low: float, high: float) -> torch.Tensor:
    """float64 values in [low, high] of ``shape``; now and then one of them is a special value (inf, NaN, 1e30 ...)."""
    size = math.prod(shape)
    values = draw(st.lists(st.floats(low, high), min_size=size, max_size=size))
    if size and draw(st.integers(0, 3)) == 0:
        values[draw(st.integers(0, size - 1))] = draw(st.sampled_from(SPECIAL))
    return torch.tensor(values, dtype=torch.float64).reshape(shape)


@st.composite
def matching_problems(draw):
    """A cost [n, m] or [B, n, m] of a random dtype, with random finite or non-finite entries, and the options.

    Mostly well-formed problems, so that most examples reach a result; each kind of bad input
    (empty or infeasible shapes, integer dtypes, special values, bad lr or init) comes now and then.
    """
    batched = draw(st.booleans())
    n = draw(st.integers(1, 5)) if draw(st.integers(0, 9)) else 0
    m = n + draw(st.integers(0, 4)) if draw(st.integers(0, 5)) else draw(st.integers(0, 4))
    shape = (draw(st.integers(1, 3)), n, m) if batched else (n, m)
    names = ["float32", "float64"] * 4 + sorted(DTYPES)
    dtype = DTYPES[draw(st.sampled_from(names))]
    cost = _values(draw, shape, -3, 3)
    cost = cost.to(dtype) if dtype.is_floating_point else cost.nan_to_num().clamp(-3, 3).to(dtype)
    good_lr = st.floats(1e-4, 3.0)
    options = {
        "lr": draw(good_lr if draw(st.integers(0, 5)) else st.sampled_from([0.0, -0.1, 1e30, math.nan, math.inf])),
        "n_grad": draw(st.integers(1, 12)),
        "n_proj": draw(st.integers(1, 6)),
        "variant": draw(st.sampled_from(["paper", "release"])),
    }
    if n > m or draw(st.integers(0, 3)) == 0:
        options["no_proposal_cost"] = draw(st.one_of(st.floats(-1, 1), st.sampled_from([math.nan, 1e30])))
    if options["variant"] == "paper" and draw(st.booleans()):
        init_dtype = dtype if dtype.is_floating_point else torch.float64
        options["init"] = _values(draw, shape, -2, 2).to(init_dtype)
    return cost, options


@FAST
@given(matching_problems())
def test_dmm_match_gives_a_valid_matching_or_a_clear_error(problem):
    cost, options = problem
    try:
        X = dmm_match(cost, **options)
    except DMMInputError as error:
        assert str(error)  # a message, never an empty one
        event("refused")
        return
    event(f"solved ({options['variant']})")
    assert X.shape == cost.shape and X.dtype == cost.dtype
    assert torch.isfinite(X).all(), "NaN or inf in the output"
    assert 0 < options["lr"] and math.isfinite(options["lr"])
    # the problem as solved: float64, batched, with the "no proposal" columns, and a feasible F
    C = cost.double().reshape(-1, *cost.shape[-2:])
    X = X.double().reshape(C.shape)
    b, n, m = C.shape
    X0 = options["init"].double().reshape(C.shape) if "init" in options else torch.zeros_like(C)
    if "no_proposal_cost" in options:  # F: every template in its own "no proposal" column
        C = torch.cat([C, torch.full((b, n, n), float(options["no_proposal_cost"]), dtype=C.dtype)], -1)
        X0 = torch.cat([X0, X0.new_zeros(b, n, n)], -1)
        F = torch.cat([torch.zeros(b, n, m), torch.eye(n).expand(b, n, n)], -1).double()
    else:  # F: template i takes proposal i
        F = torch.eye(n, m).expand(b, n, m).double()
    assert options["lr"] * float(C.abs().amax()) <= MAX_STEP * (1 + 1e-6)  # the accepted range
    # the "no proposal" columns of X^ are not returned; the distance over the others is no larger
    distance = torch.linalg.matrix_norm(X - F[..., :m])  # [B]
    if options["variant"] == "paper":
        assert (X >= 0).all()
        bound = torch.linalg.matrix_norm(X0 - F) + options["n_grad"] * options["lr"] * torch.linalg.matrix_norm(C)
    else:
        start = greedy_one_hot_start(C)
        bound = torch.linalg.matrix_norm(start - F) + 2 * options["n_grad"] * options["lr"] * torch.linalg.matrix_norm(C)
    rounding = 1e-2 if cost.dtype in (torch.float16, torch.bfloat16) else 1e-5  # of the returned dtype
    assert (distance <= bound + rounding * (1 + bound) * (n * m) ** 0.5).all(), (distance, bound)


def test_dmm_match_states_the_accepted_range():
    cost = torch.rand(3, 5, dtype=torch.float64)
    with pytest.raises(DMMInputError, match=r"expected lr in \(0, .*lr \* max\|cost\| <= 10"):
        dmm_match(cost, lr=1e30)
    with pytest.raises(DMMInputError, match="init holds NaN or infinite entries"):
        dmm_match(cost, init=torch.full((3, 5), math.nan, dtype=torch.float64))
    with pytest.raises(DMMInputError, match=r"init has entries up to 1e\+30"):
        dmm_match(cost, init=torch.full((3, 5), 1e30, dtype=torch.float64))
    for lr in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(DMMInputError, match="lr="):
            dmm_match(cost, lr=lr)
    half = dmm_match(cost.half())  # solved in float32, returned in float16
    assert half.dtype == torch.float16 and torch.isfinite(half).all()
    torch.testing.assert_close(half.double(), dmm_match(cost.float()).double(), rtol=0, atol=2e-3)


MASK_DTYPES = [np.bool_, np.uint8, np.int32, np.int64, np.float16, np.float32, np.float64]


@st.composite
def mask_pairs(draw):
    """gt and pred of random dtypes and shapes: mostly equal [H, W] or [T, H, W]; now and then of other
    sizes or dimensions, empty, or (floats) holding a NaN or an infinity."""
    dims = draw(st.integers(2, 3)) if draw(st.integers(0, 4)) else draw(st.sampled_from([0, 1, 4]))
    shape = tuple(draw(st.integers(1 if draw(st.integers(0, 9)) else 0, 6)) for _ in range(dims))
    arrays = []
    for _ in range(2):
        dtype = np.dtype(draw(st.sampled_from(MASK_DTYPES)))
        own = shape if draw(st.integers(0, 9)) else tuple(draw(st.integers(1, 6)) for _ in range(dims))
        array = draw(hnp.arrays(dtype, own, elements=st.sampled_from([0, 1]) if dtype.kind != "b" else None))
        if dtype.kind == "f" and array.size and draw(st.integers(0, 5)) == 0:
            array.flat[draw(st.integers(0, array.size - 1))] = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
        arrays.append(array)
    return arrays


@FAST
@given(mask_pairs())
def test_jaccard_and_boundary_f_lie_in_0_1_or_refuse(masks):
    gt, pred = masks
    for metric in (jaccard, boundary_f):
        try:
            value = np.asarray(metric(gt, pred), dtype=np.float64)
        except DMMInputError as error:
            assert str(error)
            event("refused")
            continue
        event("scored")
        assert value.shape == (() if gt.ndim == 2 else gt.shape[:1])
        assert np.isfinite(value).all() and (value >= 0).all() and (value <= 1).all(), value


@FAST
@given(hnp.arrays(np.float64, hnp.array_shapes(min_dims=0, max_dims=2, max_side=12),
                  elements=st.one_of(st.floats(0, 1), st.sampled_from([math.nan, math.inf, -0.5, 1.5]))))
def test_db_statistics_lie_in_range_or_refuse(per_frame):
    try:
        stats = db_statistics(per_frame)
    except DMMInputError as error:
        assert str(error)
        return
    finite = per_frame[~np.isnan(per_frame)]
    assert 0 <= stats.recall <= 1
    if finite.size:  # NaN marks a frame without a score; with none scored the mean is NaN, as officially
        assert 0 <= stats.mean <= 1
    assert math.isnan(stats.decay) or -1 <= stats.decay <= 1

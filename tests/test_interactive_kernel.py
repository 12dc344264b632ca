"""The live explorers, driven through a real Jupyter kernel the way JupyterLab drives them.

A kernel is started with ``jupyter_client``; the three live figures (chapter 2's projection
stepper, chapter 3's convergence explorer, chapter 4's gradient explorer) are built in it; then
every control is set to several values by sending the widget's model the ``comm_msg`` "update"
a browser sends. Each change must redraw: the ``ipywidgets.Output`` receives a new HTML block
whose JSON state differs from the previous one, equals the state the same description computes
here (so the live figure shows what the static page shows), and carries numbers that are
recomputed here from the library, independently. The seconds per change are recorded (printed
and stored as test properties); ``benchmarks/interactive.py`` reports them -- nothing here is
timed against a goal.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from interactive import LiveKernel, kernel_env  # noqa: E402

from dmmlib.lessons.convergence import lp_optimum, realistic_costs  # noqa: E402
from dmmlib.lessons.cost_learning import matching_loss  # noqa: E402
from dmmlib.lessons.interactive import fixed, payload_of, sci  # noqa: E402
from dmmlib.lessons.toy import exact_projection  # noqa: E402
from dmmlib.matchers import hungarian_match, sinkhorn_match  # noqa: E402
from dmmlib.matching import dmm_match, lp_objective  # noqa: E402
from dmmlib.projections import alternating_project, constraint_violation, dykstra_project  # noqa: E402

pytestmark = pytest.mark.slow

#: Run in the kernel and here: the three figures at test sizes.
CASES = r'''
import numpy as np
from dmmlib.lessons.convergence import convergence_description, realistic_costs
from dmmlib.lessons.explorers import gradient_description, stepper_description
GRID = {"sizes": ((5, 50), (3, 9)), "seeds": 2, "lr": (0.1, 2.0), "n_grad": (5, 40), "n_proj": (1, 5),
        "lam": (0.3, 0.9), "default": {"lr": 0.1, "n_grad": 40, "n_proj": 5, "lam": 0.3}}
STEPPER = {"triangle": np.array([[1.2, 0.3, -0.5]]), "3 x 4": np.random.default_rng(5).normal(0.3, 0.4, (3, 4))}
GRADIENT = realistic_costs(1, 3, 9, seed=5)
DESCRIPTIONS = {
    "convergence": lambda: convergence_description(GRID),
    "stepper": lambda: stepper_description(STEPPER, rounds=(0, 1, 2, 5, 30)),
    "gradient": lambda: gradient_description(GRADIENT.cost[0], GRADIENT.true_proposal[0], deltas=(-0.3, 0.0, 0.3)),
}
'''
CASE = {}
exec(CASES, CASE)


@pytest.fixture(scope="module")
def kernel():
    live = LiveKernel({**kernel_env("smoke"), "OMP_NUM_THREADS": "1"})
    try:
        done = live.execute(CASES + "\nimport json\nfrom dmmlib.lessons.interactive import LiveExplorer\nfigures = {}")
        assert done["error"] is None, done["error"]
        yield live
    finally:
        live.close()


# ----------------------------------------------------------------------------- independent checks


def _check_convergence(setting: dict, state: dict) -> None:
    n, m = setting["size"]
    problems = realistic_costs(CASE["GRID"]["seeds"], n, m, seed=2019)
    cost = problems.with_lambda(setting["lam"])[setting["seed"]]
    X_hat = dmm_match(cost, n_grad=setting["n_grad"], n_proj=setting["n_proj"], lr=setting["lr"])
    optimum = lp_optimum(cost[None])[0].item()
    objective = lp_objective(cost, X_hat).item()
    agree = bool((X_hat.argmax(-1) == hungarian_match(cost).argmax(-1)).all())
    shown = state["readout"]
    assert shown[:4] == [fixed(objective, 4), fixed(optimum, 4), sci(abs(objective - optimum)),
                         sci(constraint_violation(X_hat).item())]
    assert (shown[4] == "yes") == agree
    np.testing.assert_array_equal(np.array(state["x"]), np.round(X_hat.numpy() * 100))


def _check_stepper(setting: dict, state: dict) -> None:
    X = torch.from_numpy(CASE["STEPPER"][setting["example"]])
    exact = exact_projection(X.numpy())
    k = setting["rounds"]
    for method, shown in ((dykstra_project, state["readout"][0]), (alternating_project, state["readout"][1])):
        Y = X if k == 0 else method(X, k)
        assert float(shown) == pytest.approx(np.linalg.norm(Y.numpy() - exact), rel=5e-3, abs=1e-14)


def _check_gradient(setting: dict, state: dict) -> None:
    cost, true = CASE["GRADIENT"].cost[0].clone(), CASE["GRADIENT"].true_proposal[0]
    i, j = setting["row"], setting["col"]
    cost[i, j] += setting["delta"]
    for k, layer in enumerate((dmm_match, lambda c: sinkhorn_match(c, tau=0.1))):
        leaf = cost.clone().requires_grad_(True)
        X = layer(leaf)
        loss = matching_loss(X[None], true[None])
        (grad,) = torch.autograd.grad(loss, leaf)
        assert state["readout"][4 * k: 4 * k + 3] == [fixed(loss.item(), 4), fixed(X[i, j].item(), 4),
                                                       sci(grad[i, j].item())]


CHECKS = {"convergence": _check_convergence, "stepper": _check_stepper, "gradient": _check_gradient}


# ----------------------------------------------------------------------------- the test


@pytest.mark.parametrize("figure", ["convergence", "stepper", "gradient"])
def test_every_control_of_the_live_figure_redraws_it_with_the_right_numbers(kernel, figure, record_property):
    done = kernel.execute(
        f"figures[{figure!r}] = LiveExplorer(DESCRIPTIONS[{figure!r}]())\n"
        f"print(json.dumps({{n: w.model_id for n, w in figures[{figure!r}].controls.items()}}))")
    assert done["error"] is None, done["error"]
    ids = json.loads(done["stdout"].strip().splitlines()[-1])
    explorer = CASE["DESCRIPTIONS"][figure]()
    current = list(explorer.default_indices())
    previous = None
    seconds = []
    for position, c in enumerate(explorer.controls):
        wanted = [i for i in range(len(c.values)) if i != c.default] + [c.default]  # every value, then back
        for index in wanted:
            elapsed, markup, error = kernel.move(ids[c.name], index)
            assert error is None, error
            assert markup is not None, f"{figure}: setting {c.name} to {c.labels[index]} drew nothing"
            seconds.append(elapsed)
            current[position] = index
            payload = payload_of(markup)
            key = explorer.key(current)
            assert payload["current"] == key, f"{figure}: the kernel drew {payload['current']}, not {key}"
            state = payload["states"][key]
            assert state != previous, f"{figure}: setting {c.name} to {c.labels[index]} changed nothing"
            # the state the static page holds for this setting, computed here by the same description
            assert state == json.loads(json.dumps(explorer.run([current]).states[0], ensure_ascii=False))
            CHECKS[figure](explorer.setting(current), state)
            previous = state
    done = kernel.execute(f"print(json.dumps(figures[{figure!r}].cpu_seconds[1:]))")  # [0]: the first drawing
    cpu = json.loads(done["stdout"])
    assert len(cpu) == len(seconds), "the kernel did not update once per change"
    median, worst = statistics.median(seconds), max(seconds)
    record_property(f"{figure}: changes", len(seconds))
    record_property(f"{figure}: median seconds per change", round(median, 4))
    record_property(f"{figure}: worst seconds per change", round(worst, 4))
    record_property(f"{figure}: median kernel CPU seconds per change", round(statistics.median(cpu), 4))
    print(f"\n{figure}: {len(seconds)} changes through the kernel, median {median:.3f} s, worst {worst:.3f} s "
          f"(kernel CPU: median {statistics.median(cpu):.3f} s, worst {max(cpu):.3f} s)")
    assert len(seconds) >= 2 * len(explorer.controls)


def test_the_kernel_runs_this_worktrees_dmmlib(kernel):
    done = kernel.execute("import dmmlib, os; print(dmmlib.__file__); print(os.environ['DMM_LIVE'])")
    path, live = done["stdout"].split()
    assert Path(path).resolve().is_relative_to(ROOT) and live == "1", (path, os.environ.get("PYTHONPATH"))

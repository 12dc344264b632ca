"""dmmlib.lessons.interactive and the explorers of chapters 2 and 4: one description, two hosts."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from dmmlib.errors import DMMInputError
from dmmlib.lessons import interactive
from dmmlib.lessons.convergence import realistic_costs
from dmmlib.lessons.cost_learning import matching_loss
from dmmlib.lessons.explorers import GRADIENT_DELTAS, gradient_description, stepper_description
from dmmlib.lessons.interactive import Computed, Explorer, LiveExplorer, control, payload_of, static_figure
from dmmlib.lessons.toy import exact_projection
from dmmlib.matchers import hungarian_match, sinkhorn_match
from dmmlib.matching import dmm_match
from dmmlib.projections import alternating_project, dykstra_project

TRIANGLE = np.array([[1.2, 0.3, -0.5]])
SQUARE = np.random.default_rng(5).normal(0.3, 0.4, size=(3, 4))


def _index(explorer, **values):
    return tuple(c.values.index(values[c.name]) if c.name in values else c.default for c in explorer.controls)


@pytest.fixture(scope="module")
def stepper():
    return stepper_description({"triangle": TRIANGLE, "3 x 4": SQUARE}, rounds=(0, 1, 2, 5, 30))


@pytest.fixture(scope="module")
def gradient():
    problem = realistic_costs(1, 3, 9, seed=5)
    return gradient_description(problem.cost[0], problem.true_proposal[0], deltas=(-0.3, -0.1, 0.0, 0.2)), problem


# ----------------------------------------------------------------------------- the description


@pytest.mark.parametrize("kwargs, message", [
    (dict(values=()), "empty"),
    (dict(values=(1, 2), labels=("one",)), "one label per value"),
    (dict(values=(1, 2), default=3), "not one of its values"),
    (dict(values=(1, 2), kind="knob"), "kind"),
])
def test_controls_reject_bad_descriptions(kwargs, message):
    with pytest.raises(DMMInputError, match=message):
        control("x", "x", **kwargs)


def test_an_explorer_checks_what_compute_returns():
    good = dict(kind="stepper", title="t", controls=(control("k", "k", (1, 2)),), readout=("a =",),
                notes={"n": "k is {k}"})
    with pytest.raises(DMMInputError, match="kind"):
        Explorer(**{**good, "kind": "pie"}, compute=lambda s: Computed([{"readout": ["1"]} for _ in s]))
    with pytest.raises(DMMInputError, match="0 readout values for 1 labels"):
        Explorer(**good, compute=lambda s: Computed([{"readout": []} for _ in s])).run([(0,)])
    with pytest.raises(DMMInputError, match="does not have"):
        Explorer(**good, compute=lambda s: Computed([{"readout": ["1"], "notes": [["m", {}]]} for _ in s])).run([(0,)])
    with pytest.raises(DMMInputError, match="lacks the fields"):
        Explorer(**good, compute=lambda s: Computed([{"readout": ["1"], "notes": [["n", {}]]} for _ in s])).run([(0,)])
    with pytest.raises(DMMInputError, match="index 5"):
        Explorer(**good, compute=lambda s: Computed([{"readout": ["1"]} for _ in s])).run([(5,)])
    ok = Explorer(**good, compute=lambda s: Computed([{"readout": ["1"], "notes": [["n", {"k": str(x["k"])}]]} for x in s]))
    assert ok.note_texts(ok.run([(1,)]).states[0]) == ["k is 2"]


def test_number_formats_are_fixed():
    assert interactive.fixed(-0.00001, 4) == "0.0000" and interactive.fixed(-3.14159, 4) == "-3.1416"
    assert interactive.sci(0.0766) == "7.66e-02" and interactive.sig(0.012345) == 0.0123
    with pytest.raises(DMMInputError):
        interactive.sig(float("nan"))


# ----------------------------------------------------------------------------- the two hosts


def test_live_and_static_hosts_offer_the_same_values_with_the_same_labels(stepper):
    page = static_figure(stepper)
    live = LiveExplorer(stepper)
    markup = page._repr_html_()
    for c in stepper.controls:
        widget = live.controls[c.name]
        assert [label for label, _ in widget.options] == list(c.labels)
        assert widget.value == c.default
        if c.kind == "choice":
            assert re.findall(r"<option value=\"\d+\"[^>]*>([^<]*)</option>", markup) == list(c.labels)
        else:
            assert f'data-name="{c.name}" min="0" max="{len(c.values) - 1}"' in markup
    assert page.payload["spec"] == payload_of(live.markup)["spec"]


def test_the_live_host_recomputes_on_every_move_and_sends_the_static_state(stepper):
    page = static_figure(stepper)
    live = LiveExplorer(stepper)
    seen = [json.dumps(live.state, sort_keys=True)]
    for values in (dict(rounds=5), dict(rounds=30), dict(example="3 x 4"), dict(rounds=0)):
        live.set(**values)
        sent = payload_of(live.markup)
        key = stepper.key(live.indices())
        assert sent["current"] == key and 'data-host="live"' in live.markup
        assert sent["states"][key] == page.payload["states"][key]  # the same state as the static page's
        seen.append(json.dumps(sent["states"][key], sort_keys=True))
    assert len(set(seen)) == len(seen), "a move left the figure as it was"
    assert len(live.seconds) == 1 + 4
    with pytest.raises(DMMInputError, match="not one of the values"):
        live.set(rounds=3)
    with pytest.raises(DMMInputError, match="no control named"):
        live.set(alpha=0.1)


def test_show_explorer_picks_the_host(stepper, monkeypatch):
    monkeypatch.setenv("DMM_LIVE", "1")
    assert isinstance(interactive.show_explorer(stepper), LiveExplorer)
    monkeypatch.setenv("DMM_LIVE", "0")
    assert isinstance(interactive.show_explorer(stepper), interactive.ExplorerHTML)


# ----------------------------------------------------------------------------- the projection stepper


def test_the_stepper_shows_dykstra_and_alternating_projections_and_their_distances(stepper):
    exact = exact_projection(TRIANGLE)
    X = torch.from_numpy(TRIANGLE)
    for k in (0, 2, 30):
        computed = stepper.run([_index(stepper, example="triangle", rounds=k)])
        state = computed.states[0]
        dykstra = X if k == 0 else dykstra_project(X, k)
        alternating = X if k == 0 else alternating_project(X, k)
        np.testing.assert_allclose(state["dykstra"], dykstra.numpy(), atol=5e-4)
        np.testing.assert_allclose(state["alternating"], alternating.numpy(), atol=5e-4)
        assert float(state["readout"][0]) == pytest.approx(np.linalg.norm(dykstra.numpy() - exact), rel=5e-3, abs=1e-15)
        assert float(state["readout"][1]) == pytest.approx(np.linalg.norm(alternating.numpy() - exact), rel=5e-3)
        codes = [code for code, _ in state["notes"]]
        assert ("start" in codes) == (k == 0)
    # after 30 rounds Dykstra has arrived and alternating projections are stuck (chapter 2's triangle)
    assert {"dykstra_there", "alternating_stuck"} <= set(codes)
    table = computed.tables["examples"]["triangle"]
    assert table["rounds"] == [1, 2, 5, 30] and table["exact"] == np.round(exact, 3).tolist()


def test_the_stepper_refuses_matrices_with_more_rows_than_columns():
    with pytest.raises(DMMInputError, match="n <= m"):
        stepper_description({"tall": np.ones((3, 2))})


# ----------------------------------------------------------------------------- the gradient explorer


def test_the_gradient_explorer_shows_each_layers_loss_and_gradient(gradient):
    explorer, problem = gradient
    cost, true = problem.cost[0], problem.true_proposal[0]
    i, j, delta = 0, 3, -0.3
    state = explorer.run([_index(explorer, row=i, col=j, delta=delta)]).states[0]
    moved = cost.clone()
    moved[i, j] += delta
    for k, (layer, method) in enumerate([(dmm_match, state["methods"][0]),
                                          (lambda c: sinkhorn_match(c, tau=0.1), state["methods"][1])]):
        leaf = moved.clone().requires_grad_(True)
        X = layer(leaf)
        loss = matching_loss(X[None], true[None])
        (grad,) = torch.autograd.grad(loss, leaf)
        assert float(state["readout"][4 * k]) == pytest.approx(loss.item(), abs=5e-5)
        assert float(state["readout"][4 * k + 1]) == pytest.approx(X[i, j].item(), abs=5e-5)
        assert float(state["readout"][4 * k + 2]) == pytest.approx(grad[i, j].item(), rel=5e-3)
        np.testing.assert_array_equal(np.array(method["g"]), np.round(grad.numpy() * 10000))
        np.testing.assert_array_equal(np.array(method["x"]), np.round(X.detach().numpy() * 100))
    # lowering C[0, 3] by 0.3 makes it Hungarian's choice for row 0: the explorer notes the jump
    assert int(hungarian_match(moved)[0].argmax()) == 3 != int(true[0])
    assert [code for code, _ in state["notes"]] == ["jump"]
    assert state["readout"][-1] == "proposal 3 (not the true one)"


def test_the_gradient_explorer_starts_at_row_0s_strongest_rival(gradient):
    explorer, problem = gradient
    weights = dmm_match(problem.cost[0])[0].clone()
    weights[problem.true_proposal[0][0]] = -1
    start = {c.name: c.values[c.default] for c in explorer.controls}
    assert start == {"row": 0, "col": int(weights.argmax()), "delta": 0.0}
    assert 0.0 in GRADIENT_DELTAS
    with pytest.raises(DMMInputError, match="must contain 0"):
        gradient_description(problem.cost[0], problem.true_proposal[0], deltas=(0.1, 0.2))


def test_the_live_host_says_when_a_setting_cannot_be_computed():
    def compute(settings):
        if settings[0]["k"] == 2:
            raise DMMInputError("k=2 is not allowed here")
        return Computed([{"readout": []} for _ in settings])

    live = LiveExplorer(Explorer(kind="stepper", title="t", controls=(control("k", "k", (1, 2)),), compute=compute))
    assert "computed in the kernel" in live.status.value
    with pytest.raises(DMMInputError):
        live.set(k=2)
    assert "could not compute" in live.status.value and "k=2 is not allowed" in live.status.value

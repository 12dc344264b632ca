"""The static figures work in a browser with no kernel and no network.

One page holds the three static explorers (chapter 2's projection stepper, chapter 3's
convergence explorer, chapter 4's gradient explorer) and a static slider. Headless Chromium
moves every control with the keyboard (range inputs) or by choosing an option (drop-downs) and
checks that the figure and the numbers change, that the numbers are those of the state the
description computed for that setting, that a diverging setting shows its note and leaves the
colour scale visibly, and that no request leaves the machine.
"""

from __future__ import annotations

import numpy as np
import pytest

from dmmlib.lessons.convergence import convergence_description, realistic_costs
from dmmlib.lessons.explorers import gradient_description, stepper_description
from dmmlib.lessons.interactive import static_figure
from dmmlib.lessons.viz import static_slider

GRID = {"sizes": ((5, 50), (3, 9)), "seeds": 2, "lr": (0.1, 2.0), "n_grad": (5, 40), "n_proj": (1, 5),
        "lam": (0.3, 0.9), "default": {"lr": 0.1, "n_grad": 40, "n_proj": 5, "lam": 0.3}}


@pytest.fixture(scope="module")
def figures():
    problem = realistic_costs(1, 3, 9, seed=5)
    return {
        "convergence": static_figure(convergence_description(GRID)),
        "stepper": static_figure(stepper_description({"triangle": np.array([[1.2, 0.3, -0.5]]),
                                                      "3 x 4": np.random.default_rng(5).normal(0.3, 0.4, (3, 4))},
                                                     rounds=(0, 1, 2, 5, 30))),
        "gradient": static_figure(gradient_description(problem.cost[0], problem.true_proposal[0],
                                                       deltas=(-0.3, 0.0, 0.3))),
    }


def _page(tmp_path, body: str):
    path = tmp_path / "figures.html"
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'></head><body>{body}</body></html>",
                    encoding="utf-8")
    return path.as_uri()


def _shown(root):
    return {"key": root.get_attribute("data-key"), "figure": root.locator(".dmm-explorer-figure").inner_html(),
            "readout": root.locator(".dmm-explorer-number b").all_inner_texts(),
            "notes": root.locator(".dmm-explorer-note").all_inner_texts()}


@pytest.mark.browser
def test_the_static_explorers_answer_every_control(offline_page, tmp_path, figures):
    page, problems = offline_page
    page.goto(_page(tmp_path, "".join(f._repr_html_() for f in figures.values())), wait_until="load")
    for kind, figure in figures.items():
        root = page.locator(f".dmm-explorer[data-kind='{kind}']")
        states, spec = figure.payload["states"], figure.payload["spec"]
        shown = _shown(root)
        assert shown["key"] == ",".join(str(c["default"]) for c in spec["controls"])
        assert shown["readout"] == states[shown["key"]]["readout"]
        assert root.locator(".dmm-explorer-figure svg").count() >= 2
        for position, c in enumerate(spec["controls"]):
            field = root.locator(f"[data-name='{c['name']}']:not(output)")
            target = (c["default"] + 1) % len(c["labels"])
            if c["kind"] == "choice":
                field.select_option(str(target))
            else:
                field.focus()
                page.keyboard.press("ArrowRight" if target > c["default"] else "Home")
            moved = _shown(root)
            assert moved["key"].split(",")[position] == str(target), f"{kind}: {c['name']} did not move"
            assert moved["figure"] != shown["figure"], f"{kind}: moving {c['name']} left the figure as it was"
            assert moved["readout"] == states[moved["key"]]["readout"], f"{kind}: {c['name']}"
            assert c["labels"][target] in root.locator(".dmm-explorer-caption").inner_text()
            if c["kind"] == "slider":
                assert field.get_attribute("aria-valuetext") == c["labels"][target]
                assert root.locator(f"output[data-name='{c['name']}']").inner_text() == c["labels"][target]
            shown = moved
    page.screenshot(path=str(tmp_path / "figures.png"), full_page=True)
    assert not problems, problems


@pytest.mark.browser
def test_a_diverging_setting_says_so_and_leaves_the_colour_scale_visibly(offline_page, tmp_path, figures):
    page, problems = offline_page
    page.goto(_page(tmp_path, figures["convergence"]._repr_html_()), wait_until="load")
    root = page.locator(".dmm-explorer")
    for name, index in (("lr", "1"), ("n_proj", "0")):  # alpha = 2 with one projection round
        root.locator(f"input[data-name='{name}']").evaluate(
            f"(el) => {{ el.value = '{index}'; el.dispatchEvent(new Event('input')); }}")
    shown = _shown(root)
    assert any("does not converge" in note for note in shown["notes"]), shown["notes"]
    assert any("leaves [0, 1]" in note for note in shown["notes"])
    assert root.locator("svg polygon.dmm-over").count() == 1, "the colour bar does not say that values exceed 1"
    assert root.locator("rect.dmm-cell[fill='#ff2d95']").count() >= 1, "no cell drawn in the 'above 1' colour"
    # the gap curve stays inside its axes: every point of the polyline lies in the plot's frame
    ys = root.locator("polyline.dmm-series").first.get_attribute("points").split()
    frame = root.locator(".dmm-explorer-figure svg").nth(2).locator("rect").first
    top, height = float(frame.get_attribute("y")), float(frame.get_attribute("height"))
    assert all(top - 0.5 <= float(p.split(",")[1]) <= top + height + 0.5 for p in ys)
    assert not problems, problems


@pytest.mark.browser
def test_the_static_slider_plays_and_stops_at_the_last_frame(offline_page, tmp_path):
    page, problems = offline_page
    frames = [np.full((4, 6, 3), 40 * k, dtype=np.uint8) for k in range(5)]
    slider = static_slider(frames, title="five frames", interval_ms=60)
    page.goto(_page(tmp_path, slider._repr_html_()), wait_until="load")
    root = page.locator(".dmm-slider")
    play = root.locator("button.dmm-play")
    assert root.get_attribute("data-current") == "0" and play.get_attribute("aria-pressed") == "false"
    play.focus()
    page.keyboard.press("Space")  # a native button: the keyboard plays it
    assert play.get_attribute("aria-pressed") == "true"
    page.wait_for_function("() => document.querySelector('.dmm-slider').getAttribute('data-playing') === '0'",
                           timeout=5000)
    assert root.get_attribute("data-current") == "4", "playing did not stop at the last frame"
    assert play.get_attribute("aria-label") == "play"
    assert [root.locator("img").nth(k).is_visible() for k in range(5)] == [False] * 4 + [True]
    # from the last frame, play starts again at the first; moving the slider pauses
    play.click()
    page.wait_for_function("() => document.querySelector('.dmm-slider').getAttribute('data-current') !== '4'",
                           timeout=5000)
    root.locator("input[type=range]").focus()
    page.keyboard.press("End")
    assert root.get_attribute("data-playing") == "0" and root.get_attribute("data-current") == "4"
    page.wait_for_timeout(200)
    assert root.get_attribute("data-current") == "4", "the slider kept playing after it was moved"
    assert not problems, problems

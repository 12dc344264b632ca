"""The static convergence explorer works in a browser with no kernel and no network."""


import pytest
import torch

from dmmlib.lessons.convergence import explorer_data, realistic_costs, static_explorer
from dmmlib.matching import lp_objective

GRID = {"lr": (0.05, 0.1), "n_grad": (5, 40), "n_proj": (1, 5), "lam": (0.3, 0.9)}


@pytest.mark.browser
def test_static_explorer_responds_to_its_sliders(offline_page, tmp_path):
    page, problems = offline_page
    data = explorer_data(realistic_costs(2, 3, 9, seed=21), GRID)
    page_file = tmp_path / "explorer.html"
    page_file.write_text(f"<!doctype html><html><body>{static_explorer(data)._repr_html_()}</body></html>")
    page.goto(page_file.as_uri(), wait_until="load")

    def state():
        colours = page.eval_on_selector_all("svg.dmm-heat rect[fill^='rgb']", "rs => rs.map(r => r.getAttribute('fill'))")
        readout = page.inner_text(".dmm-readout")
        return colours, readout

    colours, readout = state()
    assert len(colours) == 3 * 9, "one heat-map cell per entry of X_hat"
    # defaults: alpha=0.1, N_grad=40, N_proj=5, lambda=0.3, problem 0; the page's objective is Tr(C X^T)
    run = data["runs"]["0.1|5|0.3|0"]
    x = torch.tensor(run["x"][1], dtype=torch.float64)
    cost = torch.tensor(data["problems"]["0.3|0"]["cost"], dtype=torch.float64)
    shown = float(readout.split("Tr(C X\u0302\u1d40) = ")[1].split()[0])
    assert shown == pytest.approx(lp_objective(cost, x).item(), abs=1e-3)
    agrees = bool((x.argmax(-1) == torch.tensor(data["problems"]["0.3|0"]["hungarian"])).all())
    assert ("argmax = Hungarian: yes" in readout) == agrees

    for name, index in (("n_grad", 0), ("n_proj", 0), ("lam", 1), ("seed", 1)):
        page.eval_on_selector(f"input[data-name='{name}']",
                              f"(el) => {{ el.value = '{index}'; el.dispatchEvent(new Event('input')); }}")
        new_colours, new_readout = state()
        assert new_readout != readout, f"moving the {name} slider changed nothing"
        colours, readout = new_colours, new_readout
    assert page.inner_text("output[data-name='lam']") == "0.9"
    page.screenshot(path=str(tmp_path / "explorer.png"))
    assert not problems, problems

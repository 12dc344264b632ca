"""How fast do the book's interactive figures answer a move, live in a kernel and in the static page?

    python benchmarks/interactive.py [--quick] [--no-browser] [--lab] [--profile smoke|cpu|gpu]

Live: a Jupyter kernel is started with ``jupyter_client`` (no browser), each live explorer is
built in it, and every control is moved the way JupyterLab moves it: a ``comm_msg`` "update"
to the widget's model. A move is timed from sending that message to the arrival of the redrawn
figure (the ``display_data`` the explorer's ``ipywidgets.Output`` receives) -- the kernel's
share of a move; JupyterLab then parses a few kilobytes of JSON and draws SVG (the static
column measures that drawing). Printed per figure and setting: moves, median and worst seconds.

* convergence explorer at the chapter's setting (5 x 50, alpha = 0.1, N_grad x N_proj = 40 x 5),
  every control moved through its values and back;
* the same at the heavy setting N_grad x N_proj = 400 x 50 (the cpu grid's largest; smoke stops at
  100 x 50), moving the other controls;
* the projection stepper (chapter 2) and the gradient explorer (chapter 4).

Static: the same figures' static pages in headless Chromium (Debian's /usr/bin/chromium): a
move is timed from the input event to the redrawn figure (the drawing is synchronous).

JupyterLab (``--lab``): the three live figures in a notebook in a real JupyterLab, driven by
headless Chromium: a move is timed from the key press on a slider to the figure showing the new
setting -- the whole round trip a reader feels (key, comm message, kernel, Output, renderer).

The goal (issue 15): under 0.2 s per move at the chapter's settings on 2 cores, under 1 s at
400 x 50. This script measures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Built in the kernel (and, for the static column, here): the three live figures of the book.
FIGURES = r'''
import json, numpy as np, torch
from dmmlib.lessons.convergence import convergence_description, realistic_costs
from dmmlib.lessons.explorers import gradient_description, stepper_description
from dmmlib.lessons.interactive import LiveExplorer
from dmmlib.lessons.settings import CONVERGENCE_EXPLORER
from dmmlib.profiles import by_profile

def stepper_examples():
    rng = np.random.default_rng(5)
    examples = {"triangle": np.array([[1.2, 0.3, -0.5]]), "3 x 4": rng.normal(0.3, 0.4, size=(3, 4))}
    rng = np.random.default_rng(2019)
    for alpha in (0.1, 1.0):
        weights = rng.dirichlet(np.ones(3))
        feasible = sum(w * np.eye(9)[rng.permutation(9)[:4]] for w in weights)
        examples[f"alpha = {alpha}"] = feasible - alpha * rng.uniform(-1.0, 0.7, size=(4, 9))
    return examples

_gradient_problem = realistic_costs(1, 3, 9, seed=5)
DESCRIPTIONS = {
    "convergence": lambda profile: convergence_description(by_profile(CONVERGENCE_EXPLORER, profile)),
    "stepper": lambda profile: stepper_description(stepper_examples()),
    "gradient": lambda profile: gradient_description(_gradient_problem.cost[0], _gradient_problem.true_proposal[0]),
}
'''


class LiveKernel:
    """A Jupyter kernel driven like JupyterLab drives it: execute requests, and widget moves as comm messages."""

    def __init__(self, env: dict | None = None, timeout: float = 120):
        from jupyter_client.manager import KernelManager

        self.manager = KernelManager(kernel_name="python3")
        self.manager.start_kernel(env={**os.environ, **(env or {})}, cwd=str(ROOT))
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=timeout)

    def _collect(self, msg_id: str, timeout: float) -> list[tuple[float, dict]]:
        """The iopub messages answering ``msg_id``, each with its arrival time, up to the kernel's idle."""
        messages, deadline = [], time.monotonic() + timeout
        while True:
            try:
                msg = self.client.get_iopub_msg(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"no idle status for {msg_id} within {timeout} s") from None
            arrived = time.perf_counter()
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            messages.append((arrived, msg))
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                return messages

    def execute(self, code: str, timeout: float = 600) -> dict:
        """Run ``code``; returns its stdout, the text/html it displayed, and the error if any."""
        msg_id = self.client.execute(code)
        stdout, htmls, error = [], [], None
        for _, msg in self._collect(msg_id, timeout):
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream" and content["name"] == "stdout":
                stdout.append(content["text"])
            elif kind in ("display_data", "execute_result") and "text/html" in content["data"]:
                htmls.append(content["data"]["text/html"])
            elif kind == "error":
                error = "\n".join(content["traceback"])
        return {"stdout": "".join(stdout), "html": htmls, "error": error}

    def move(self, model_id: str, index: int, timeout: float = 120) -> tuple[float, str | None, str | None]:
        """Move a selection widget to option ``index`` as the front end does.

        Returns ``(seconds until the redrawn figure arrived, its HTML, the error if any)``.
        """
        msg = self.client.session.msg("comm_msg", {"comm_id": model_id, "data": {
            "method": "update", "state": {"index": index}, "buffer_paths": []}})
        start = time.perf_counter()
        self.client.shell_channel.send(msg)
        seconds, markup, error = None, None, None
        for arrived, reply in self._collect(msg["header"]["msg_id"], timeout):
            content = reply["content"]
            if reply["msg_type"] == "display_data" and "text/html" in content["data"] and seconds is None:
                seconds, markup = arrived - start, content["data"]["text/html"]
            elif reply["msg_type"] == "error":
                error = "\n".join(content["traceback"])
        return seconds, markup, error

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


def kernel_env(profile: str) -> dict:
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "DMM_PROFILE": profile, "DMM_LIVE": "1", "MPLBACKEND": "Agg"}


def sweep(controls: list[dict], current: dict, values_per_control: int | None, skip=()) -> list[tuple[str, int]]:
    """Moves that take every control (but ``skip``) through its values (or ``values_per_control`` of them) and back."""
    moves = []
    for c in controls:
        if c["name"] in skip:
            continue
        count, original = len(c["labels"]), current[c["name"]]
        wanted = list(range(count))
        if values_per_control and count > values_per_control:
            step = (count - 1) / (values_per_control - 1)
            wanted = sorted({round(k * step) for k in range(values_per_control)})
        moves += [(c["name"], index) for index in wanted if index != original]
        if moves and moves[-1][0] == c["name"]:
            moves.append((c["name"], original))
    return moves


def live_times(kernel: LiveKernel, figure: str, profile: str, start: dict | None, values_per_control: int | None):
    """Build ``figure`` live, optionally move to ``start`` ({name: index}), then time a sweep of the other controls.

    Returns the wall seconds of each move and the kernel CPU seconds the explorer spent on it.
    """
    done = kernel.execute(
        f"fig = LiveExplorer(DESCRIPTIONS[{figure!r}]({profile!r}))\n"
        "print(json.dumps({'ids': {n: w.model_id for n, w in fig.controls.items()}, "
        "'controls': fig.explorer.spec()['controls'], 'current': {n: w.value for n, w in fig.controls.items()}}))")
    if done["error"]:
        raise RuntimeError(done["error"])
    info = json.loads(done["stdout"].strip().splitlines()[-1])
    for name, index in (start or {}).items():
        kernel.move(info["ids"][name], index)
        info["current"][name] = index
    times = []
    for name, index in sweep(info["controls"], info["current"], values_per_control, skip=tuple(start or ())):
        seconds, markup, error = kernel.move(info["ids"][name], index)
        if error or seconds is None:
            raise RuntimeError(f"moving {name} to {index} drew nothing: {error}")
        times.append(seconds)
    cpu = json.loads(kernel.execute("print(json.dumps(fig.cpu_seconds))")["stdout"])[-len(times):]
    return times, cpu


def static_times(figure: str, profile: str, repeats: int) -> list[float]:
    """Time moves in the static page in headless Chromium: input event -> redrawn figure (and say the page's size)."""
    from playwright.sync_api import sync_playwright

    namespace: dict = {}
    exec(FIGURES, namespace)
    from dmmlib.lessons.interactive import static_figure

    built = time.perf_counter()
    markup = static_figure(namespace["DESCRIPTIONS"][figure](profile))._repr_html_()
    built = time.perf_counter() - built
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        page_file = Path(tmp) / "figure.html"
        page_file.write_text(f"<!doctype html><html><head><meta charset='utf-8'></head><body>{markup}</body></html>",
                             encoding="utf-8")
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        page.goto(page_file.as_uri())
        times = page.evaluate("""(repeats) => {
          const root = document.querySelector('.dmm-explorer'), times = [];
          const inputs = Array.from(root.querySelectorAll('input[type=range], select'));
          for (let r = 0; r < repeats; r++) for (const el of inputs) {
            const count = el.tagName === 'SELECT' ? el.options.length : parseInt(el.max, 10) + 1;
            for (let i = 0; i < count; i++) {
              const start = performance.now();
              el.value = String(i);
              el.dispatchEvent(new Event(el.tagName === 'SELECT' ? 'change' : 'input'));
              root.querySelector('.dmm-explorer-figure').getBoundingClientRect();  // force layout
              times.push((performance.now() - start) / 1000);
            }
          }
          return times;
        }""", repeats)
        browser.close()
    print(f"  ({figure}: static page of {len(markup.encode()) / 1e6:.2f} MB, pre-computed in {built:.1f} s)")
    return times


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def lab_times(profile: str, presses: int) -> dict[str, list[float]]:
    """End to end in JupyterLab: a key press on a live explorer's slider -> its redrawn figure.

    A JupyterLab server is started on a notebook that builds the three live figures; headless
    Chromium runs it and presses ArrowRight / ArrowLeft on every slider (``presses`` per slider),
    timing each from the key press to the figure's new setting in the page.
    """
    import nbformat
    from playwright.sync_api import sync_playwright

    figures = ("convergence", "stepper", "gradient")
    with tempfile.TemporaryDirectory() as tmp:
        notebook = nbformat.v4.new_notebook()
        notebook.cells = [nbformat.v4.new_code_cell(FIGURES)] + [
            nbformat.v4.new_code_cell(f"LiveExplorer(DESCRIPTIONS[{name!r}]({profile!r}))") for name in figures]
        notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(notebook, os.path.join(tmp, "live.ipynb"))
        port = _free_port()
        env = {**os.environ, **kernel_env(profile), "JUPYTER_CONFIG_DIR": os.path.join(tmp, "config"),
               "JUPYTER_RUNTIME_DIR": os.path.join(tmp, "runtime")}
        env.pop("DMM_LIVE")  # JupyterLab's kernels are live by themselves (JPY_SESSION_NAME)
        command = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ServerApp.token=",
                   "--ServerApp.password=", f"--ServerApp.root_dir={tmp}"] + (["--allow-root"] if os.geteuid() == 0 else [])
        server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                for _ in range(60):
                    try:
                        page.goto(f"http://127.0.0.1:{port}/lab/tree/live.ipynb")
                        break
                    except Exception:  # the server is still starting
                        time.sleep(1)
                page.wait_for_selector(".jp-Notebook .jp-Cell .jp-InputArea-editor", timeout=120_000)
                page.wait_for_function("() => /\\| Idle/.test(document.body.innerText)", timeout=120_000)  # the kernel
                page.click(".jp-Notebook .jp-Cell .jp-InputArea-editor")
                for _ in range(1 + len(figures)):
                    page.keyboard.press("Shift+Enter")
                try:
                    page.wait_for_function(
                        "() => document.querySelectorAll(\".dmm-explorer[data-host='live']\").length >= 3", timeout=int(os.environ.get("DMM_LAB_TIMEOUT_MS", "300000")))
                except Exception:
                    page.screenshot(path=os.path.join(tempfile.gettempdir(), "interactive-lab-failure.png"), full_page=True)
                    raise
                times = {}
                for name in figures:
                    live = f".dmm-explorer[data-host='live'][data-kind='{name}']"
                    cell = page.locator(".jp-Notebook .jp-Cell").filter(has=page.locator(live))
                    handles = cell.locator(".widget-hslider .noUi-handle")
                    times[name] = []
                    for h in range(handles.count()):
                        for press in range(presses):
                            before = page.locator(live).get_attribute("data-key")
                            handles.nth(h).focus()
                            start = time.perf_counter()
                            page.keyboard.press("ArrowRight" if press % 2 == 0 else "ArrowLeft")
                            try:
                                page.wait_for_function(
                                    "([selector, before]) => { const root = document.querySelector(selector); "
                                    "return root !== null && root.getAttribute('data-key') !== before; }",
                                    arg=[live, before], timeout=30_000)
                                times[name].append(time.perf_counter() - start)
                            except Exception:  # the key did not move the slider (e.g. at its end): not a move
                                pass
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=30)
    return times


def row(name: str, times: list[float], cpu: list[float] | None = None) -> str:
    text = f"{name:<48} {len(times):>5} {statistics.median(times):>9.3f} {max(times):>9.3f}"
    return text + (f" {statistics.median(cpu):>9.3f} {max(cpu):>9.3f}" if cpu else "")


def load() -> str:
    return "load average " + ", ".join(f"{x:.1f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="cpu", choices=("smoke", "cpu", "gpu"),
                        help="whose explorer grid to use (default cpu, the book's; its heavy setting is 400 x 50)")
    parser.add_argument("--quick", action="store_true", help="three values per control, no heavy sweep")
    parser.add_argument("--no-browser", action="store_true", help="skip the static-page timings")
    parser.add_argument("--lab", action="store_true",
                        help="also time key presses end to end in JupyterLab (starts a server and Chromium)")
    args = parser.parse_args(argv)
    per_control = 3 if args.quick else None

    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPU cores, profile {args.profile}, {load()}")
    print("live: wall time from the comm message to the redrawn figure; kernel CPU: its CPU time for the move")
    print(f"{'live (kernel)':<48} {'moves':>5} {'median s':>9} {'worst s':>9} {'CPU med':>9} {'CPU worst':>9}")
    kernel = LiveKernel(kernel_env(args.profile))
    try:
        done = kernel.execute(FIGURES)
        if done["error"]:
            raise RuntimeError(done["error"])
        print(row("convergence, chapter's setting (40 x 5, 5 x 50)",
                  *live_times(kernel, "convergence", args.profile, None, per_control)), flush=True)
        if not args.quick:
            grid = json.loads(kernel.execute(
                "print(json.dumps({k: list(v) for k, v in by_profile(CONVERGENCE_EXPLORER, "
                f"{args.profile!r}).items() if k in ('n_grad', 'n_proj')}}))")["stdout"])
            heavy = {"n_grad": len(grid["n_grad"]) - 1, "n_proj": len(grid["n_proj"]) - 1}
            label = f"convergence, heavy ({grid['n_grad'][-1]} x {grid['n_proj'][-1]})"
            print(row(label, *live_times(kernel, "convergence", args.profile, heavy, per_control)), flush=True)
        for figure in ("stepper", "gradient"):
            print(row(figure, *live_times(kernel, figure, args.profile, None, per_control)), flush=True)
    finally:
        kernel.close()
    if not args.no_browser:
        print(f"{'static page (Chromium: input event -> redrawn)':<48} {'moves':>5} {'median s':>9} {'worst s':>9}")
        for figure in ("convergence", "stepper", "gradient"):
            print(row(figure, static_times(figure, args.profile, 1 if args.quick else 3)), flush=True)
    if args.lab:
        print(f"{'JupyterLab (key press -> redrawn figure)':<48} {'moves':>5} {'median s':>9} {'worst s':>9}")
        for figure, times in lab_times(args.profile, 2 if args.quick else 4).items():
            print(row(figure, times) if times else f"{figure:<48} no move redrew the figure", flush=True)
    print(load())
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Interactive figures with one description and two hosts: the static page and a live kernel.

An :class:`Explorer` describes a figure once: its controls (the values each one offers, in
order, and how each value is shown, rounded), the renderer that draws it
(``static/explorer_<kind>.js``), the labels of the numbers it shows, and a batched ``compute``
that turns settings into JSON *states* -- the matrices, curves, formatted numbers and notes one
setting shows. Both hosts hand states to the same browser-side renderer:

* :func:`static_figure` computes the state of every combination of control values and embeds
  them, with the renderer, in one self-contained HTML block: the book's static page (no
  kernel, no network);
* :class:`LiveExplorer` shows ``ipywidgets`` controls over the same values with the same
  labels; each change computes one state in the kernel and sends it, a few kilobytes of JSON,
  to an ``ipywidgets.Output`` where the same renderer draws it -- no matplotlib figure and no
  PNG per move;
* :func:`show_explorer` picks the host: live when a person runs the notebook in Jupyter,
  static in the headless book build (:func:`dmmlib.lessons.viz.running_live`).

Because the numbers are formatted in Python, inside the state, the two hosts cannot disagree
on them; tests compare a live state with the static page's state for the same setting.
"""

from __future__ import annotations

import html
import itertools
import json
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import ipywidgets
import torch
from IPython.display import HTML, clear_output, display

from dmmlib.errors import DMMInputError
from dmmlib.lessons.viz import new_dom_id, running_live, static_asset

__all__ = ["Control", "Computed", "Explorer", "control", "note", "static_figure", "LiveExplorer", "show_explorer",
           "fixed", "sci", "sig", "payload_of"]

#: The renderers of ``static/``: ``explorer_<kind>.js`` draws a state of that kind.
KINDS = ("convergence", "stepper", "gradient")


# ----------------------------------------------------------------------------- numbers


def fixed(value: float, decimals: int) -> str:
    """``value`` with ``decimals`` decimals ("-3.1416"); "-0.0000" is written "0.0000"."""
    text = f"{value:.{decimals}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def sci(value: float, digits: int = 2) -> str:
    """``value`` in scientific notation with ``digits`` decimals ("7.66e-02")."""
    return f"{value:.{digits}e}"


def sig(value: float, digits: int = 3) -> float:
    """``value`` rounded to ``digits`` significant digits (a float, for the JSON of a state)."""
    if not math.isfinite(value):
        raise DMMInputError(f"sig: value={value!r}; expected a finite number")
    return float(f"{value:.{digits}g}")


def note(code: str, **fields: str) -> list:
    """A note a state raises: the code of one of its explorer's ``notes`` and the texts of its fields."""
    return [code, {name: str(value) for name, value in fields.items()}]


# ----------------------------------------------------------------------------- the description


@dataclass(frozen=True)
class Control:
    """One control of an explorer: the same values, order and labels in both hosts.

    ``values`` are what ``compute`` receives; ``labels`` are how each value is shown (rounded);
    ``default`` is the index of the value shown first; ``kind`` is ``"slider"`` (a range over the
    values: ``<input type=range>`` / ``ipywidgets.SelectionSlider``) or ``"choice"``
    (``<select>`` / ``ipywidgets.Dropdown``); ``symbol`` names it in the figure's caption.
    """

    name: str
    label: str
    values: tuple
    labels: tuple[str, ...]
    default: int = 0
    kind: str = "slider"
    symbol: str = ""

    def __post_init__(self):
        if not self.values:
            raise DMMInputError(f"control {self.name!r}: values is empty; expected at least one value")
        if len(self.labels) != len(self.values):
            raise DMMInputError(f"control {self.name!r}: {len(self.labels)} labels for {len(self.values)} values; "
                                "expected one label per value")
        if not 0 <= self.default < len(self.values):
            raise DMMInputError(f"control {self.name!r}: default index {self.default} is outside "
                                f"0..{len(self.values) - 1}")
        if self.kind not in ("slider", "choice"):
            raise DMMInputError(f"control {self.name!r}: kind={self.kind!r}; expected 'slider' or 'choice'")

    def spec(self) -> dict:
        return {"name": self.name, "label": self.label, "symbol": self.symbol or self.label,
                "values": list(self.values), "labels": list(self.labels), "default": self.default, "kind": self.kind}


def control(name: str, label: str, values: Sequence, *, default: Any = None, labels: Sequence[str] | None = None,
            fmt: str = "{:g}", kind: str = "slider", symbol: str = "") -> Control:
    """A :class:`Control` whose labels are ``fmt.format(value)`` unless given; ``default`` is a value."""
    values = tuple(values)
    labels = tuple(str(label_) for label_ in labels) if labels is not None else tuple(fmt.format(v) for v in values)
    if default is None:
        index = 0
    elif default in values:
        index = values.index(default)
    else:
        raise DMMInputError(f"control {name!r}: default={default!r} is not one of its values {list(values)}")
    return Control(name, label, values, labels, index, kind, symbol)


@dataclass(frozen=True)
class Computed:
    """What ``compute`` returns: one state per setting, and the tables states refer to by key.

    ``tables`` maps a table name to ``{key: JSON}``: data several states share (a problem's cost
    matrix, a run's gap curve), stored once in the static page.
    """

    states: list[dict]
    tables: dict[str, dict] = field(default_factory=dict)


@dataclass(frozen=True)
class Explorer:
    """One interactive figure, described once for both hosts.

    ``kind`` picks the renderer ``static/explorer_<kind>.js``; ``readout`` labels the formatted
    numbers every state carries (``state["readout"]``, same order); ``notes`` maps a code to the
    text of a note with ``{name}`` fields, which a state raises as ``[code, {name: text}]``
    (:func:`note`; stored once, not per state); ``legend`` says what the marks mean; ``extra`` is
    JSON the renderer reads from the spec (e.g. the iterations a curve samples).
    ``compute(settings)`` gets a list of ``{control name: value}`` and returns a :class:`Computed`.
    """

    kind: str
    title: str
    controls: tuple[Control, ...]
    compute: Callable[[list[dict]], Computed]
    readout: tuple[str, ...] = ()
    notes: dict[str, str] = field(default_factory=dict)
    legend: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise DMMInputError(f"explorer kind={self.kind!r}; expected one of {KINDS}")
        names = [c.name for c in self.controls]
        if len(set(names)) != len(names):
            raise DMMInputError(f"explorer {self.title!r}: control names repeat: {names}")

    def spec(self) -> dict:
        return {"kind": self.kind, "title": self.title, "controls": [c.spec() for c in self.controls],
                "readout": list(self.readout), "notes": dict(self.notes), "legend": self.legend, **self.extra}

    def note_texts(self, state: dict) -> list[str]:
        """The notes a state shows, as the renderer writes them (``{name}`` fields filled in)."""
        return [re.sub(r"\{(\w+)\}", lambda match: params[match.group(1)], self.notes[code])
                for code, params in state.get("notes", ())]

    def setting(self, indices: Sequence[int]) -> dict:
        """``{name: value}`` for one index per control."""
        if len(indices) != len(self.controls):
            raise DMMInputError(f"explorer {self.title!r}: got {len(indices)} indices for {len(self.controls)} controls")
        for c, i in zip(self.controls, indices):
            if not 0 <= i < len(c.values):
                raise DMMInputError(f"control {c.name!r}: index {i} is outside 0..{len(c.values) - 1}")
        return {c.name: c.values[i] for c, i in zip(self.controls, indices)}

    @staticmethod
    def key(indices: Sequence[int]) -> str:
        """The key of a state: its control indices joined by commas (the renderer builds the same)."""
        return ",".join(str(int(i)) for i in indices)

    def default_indices(self) -> tuple[int, ...]:
        return tuple(c.default for c in self.controls)

    def all_indices(self) -> list[tuple[int, ...]]:
        return list(itertools.product(*(range(len(c.values)) for c in self.controls)))

    def run(self, index_list: Sequence[Sequence[int]]) -> Computed:
        """``compute`` for these index tuples, checked: one JSON-ready state per setting.

        It runs with one torch thread: the explorers' tensors are tiny, and on a laptop's two
        shared cores a second thread only makes each of their thousands of small operations wait.
        """
        settings = [self.setting(indices) for indices in index_list]
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            computed = self.compute(settings)
        finally:
            torch.set_num_threads(threads)
        if len(computed.states) != len(index_list):
            raise DMMInputError(f"explorer {self.title!r}: compute returned {len(computed.states)} states for "
                                f"{len(index_list)} settings")
        for state in computed.states:
            if len(state.get("readout", ())) != len(self.readout):
                raise DMMInputError(f"explorer {self.title!r}: a state has {len(state.get('readout', ()))} readout "
                                    f"values for {len(self.readout)} labels")
            for code, params in state.get("notes", ()):
                if code not in self.notes:
                    raise DMMInputError(f"explorer {self.title!r}: a state raises the note {code!r}, which its "
                                        f"description does not have (expected one of {list(self.notes)})")
                missing = set(re.findall(r"\{(\w+)\}", self.notes[code])) - set(params)
                if missing:
                    raise DMMInputError(f"explorer {self.title!r}: note {code!r} lacks the fields {sorted(missing)}")
        return computed


# ----------------------------------------------------------------------------- markup


def payload_of(markup: str) -> dict:
    """The JSON payload embedded in an explorer's markup (what the renderer draws): for tests."""
    opening = '<script type="application/json" class="dmm-explorer-data">'
    start = markup.index(opening) + len(opening)
    end = markup.index("</script>", start)
    return json.loads(markup[start:end].replace("<\\/", "</"))


def _script(kind: str, root_id: str) -> str:
    parts = [static_asset(name) for name in ("explorer_kit.js", f"explorer_{kind}.js", "explorer_host.js")]
    return "(function () {\n" + "\n".join(parts).replace("ROOT_ID", json.dumps(root_id)) + "\n})();"


def _controls_html(explorer: Explorer, root_id: str) -> str:
    items = []
    for c in explorer.controls:
        label = html.escape(c.label)
        field_id = f"{root_id}-{c.name}"
        if c.kind == "choice":
            options = "".join(f'<option value="{i}"{" selected" if i == c.default else ""}>{html.escape(text)}</option>'
                              for i, text in enumerate(c.labels))
            widget = f'<select id="{field_id}" data-name="{c.name}">{options}</select>'
        else:
            widget = (f'<input id="{field_id}" type="range" data-name="{c.name}" min="0" max="{len(c.values) - 1}" '
                      f'step="1" value="{c.default}" aria-valuetext="{html.escape(c.labels[c.default])}">'
                      f'<output data-name="{c.name}" for="{field_id}">{html.escape(c.labels[c.default])}</output>')
        items.append(f'<span class="dmm-explorer-control"><label for="{field_id}">{label}</label> {widget}</span>')
    return f'<div class="dmm-explorer-controls">{"".join(items)}</div>'


def explorer_markup(explorer: Explorer, payload: dict, host: str) -> str:
    """The HTML block of one host: the figure's frame, its JSON payload and the renderer."""
    root_id = new_dom_id("dmm-explorer")
    controls = _controls_html(explorer, root_id) if host == "static" else ""
    data = json.dumps(payload, separators=(",", ":"), allow_nan=False, ensure_ascii=False).replace("</", "<\\/")
    # tex2jax_ignore / mathjax_ignore: the figure holds no TeX, so MathJax (in JupyterLab and in the book) skips it
    return f"""<div class="dmm-explorer tex2jax_ignore mathjax_ignore" id="{root_id}" data-kind="{explorer.kind}" data-host="{host}" role="group" aria-label="{html.escape(explorer.title)}">
<style>{static_asset("explorer.css")}</style>
<div class="dmm-explorer-title">{html.escape(explorer.title)}</div>
{controls}
<div class="dmm-explorer-caption" aria-live="polite"></div>
<div class="dmm-explorer-figure"></div>
<div class="dmm-explorer-readout"></div>
<div class="dmm-explorer-notes" role="status"></div>
<div class="dmm-explorer-legend">{html.escape(explorer.legend)}</div>
<script type="application/json" class="dmm-explorer-data">{data}</script>
<script>{_script(explorer.kind, root_id)}</script>
</div>"""


class ExplorerHTML:
    """The static host's HTML block, for IPython display; ``payload`` is its JSON, ``nbytes`` its size."""

    def __init__(self, markup: str, payload: dict):
        self.data = markup
        self.payload = payload

    @property
    def nbytes(self) -> int:
        return len(self.data.encode("utf-8"))

    def _repr_html_(self) -> str:
        return self.data

    def __repr__(self) -> str:
        return f"<static explorer {self.payload['spec']['title']!r}: {len(self.payload['states'])} states, {self.nbytes:,} bytes>"


def static_figure(explorer: Explorer) -> ExplorerHTML:
    """The static host: every combination of control values pre-computed, drawn in the page by JavaScript."""
    index_list = explorer.all_indices()
    computed = explorer.run(index_list)
    payload = {"spec": explorer.spec(), "tables": computed.tables,
               "states": {explorer.key(ix): state for ix, state in zip(index_list, computed.states)}}
    return ExplorerHTML(explorer_markup(explorer, payload, "static"), payload)


# ----------------------------------------------------------------------------- the live host


def _widget(c: Control):
    options = [(text, i) for i, text in enumerate(c.labels)]
    common = dict(options=options, value=c.default, description=c.label, style={"description_width": "initial"})
    if c.kind == "choice":
        return ipywidgets.Dropdown(**common)
    # continuous_update=False: a drag recomputes once, on release; every key press recomputes
    return ipywidgets.SelectionSlider(**common, continuous_update=False, layout=ipywidgets.Layout(width="420px"))


class LiveExplorer(ipywidgets.VBox):
    """The live host: ``ipywidgets`` controls; each change recomputes one state in the kernel.

    The state goes, with the renderer, into an ``ipywidgets.Output`` as one HTML block that
    the static page's JavaScript draws. ``controls`` maps control names to widgets,
    ``state`` is the state shown, ``seconds`` the wall time of each update (compute and send)
    and ``cpu_seconds`` the kernel's CPU time for it (what it costs on an otherwise idle machine).
    """

    def __init__(self, explorer: Explorer):
        self.explorer = explorer
        self.controls = {c.name: _widget(c) for c in explorer.controls}
        self.output = ipywidgets.Output()
        self.seconds: list[float] = []
        self.cpu_seconds: list[float] = []
        self.state: dict | None = None
        self.markup = ""
        boxes = ipywidgets.Box(list(self.controls.values()),
                               layout=ipywidgets.Layout(display="flex", flex_flow="row wrap"))
        # says at once that a move is being computed (a slow setting takes a second), then how long it took
        self.status = ipywidgets.HTML(layout=ipywidgets.Layout(min_height="1.4em"))
        super().__init__([boxes, self.status, self.output])
        for widget in self.controls.values():
            widget.observe(self._changed, names="value")
        self.update()

    def indices(self) -> tuple[int, ...]:
        return tuple(int(self.controls[c.name].value) for c in self.explorer.controls)

    def set(self, **values) -> None:
        """Move controls to these values (as a reader would); each move recomputes."""
        for name, value in values.items():
            if name not in self.controls:
                raise DMMInputError(f"set: no control named {name!r}; expected one of {list(self.controls)}")
            c = next(c for c in self.explorer.controls if c.name == name)
            if value not in c.values:
                raise DMMInputError(f"set: {name}={value!r} is not one of the values {list(c.values)}")
            self.controls[name].value = c.values.index(value)

    def _changed(self, change) -> None:
        self.update()

    def update(self) -> None:
        """Compute the state of the controls' setting and draw it."""
        start, cpu_start = time.perf_counter(), time.process_time()
        self.status.value = "<i>computing in the kernel \u2026</i>"
        indices = self.indices()
        try:
            computed = self.explorer.run([indices])
        except Exception as error:  # say it where the reader looks, not only in the log
            self.status.value = f"<b>could not compute this setting:</b> {html.escape(str(error))}"
            raise
        key = self.explorer.key(indices)
        payload = {"spec": self.explorer.spec(), "tables": computed.tables, "states": {key: computed.states[0]},
                   "current": key}
        self.state = computed.states[0]
        self.markup = explorer_markup(self.explorer, payload, "live")
        with self.output:
            clear_output(wait=True)
            display(HTML(self.markup))
        self.seconds.append(time.perf_counter() - start)
        self.cpu_seconds.append(time.process_time() - cpu_start)
        self.status.value = f"<small>computed in the kernel in {self.seconds[-1]:.2f} s</small>"


def show_explorer(explorer: Explorer, live: bool | None = None):
    """The figure for this session: :class:`LiveExplorer` in Jupyter, :func:`static_figure` in the book build."""
    if live is None:
        live = running_live()
    return LiveExplorer(explorer) if live else static_figure(explorer)

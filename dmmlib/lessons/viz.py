"""Plotting and display helpers shared by every chapter.

* :func:`show_source` -- a function's or class's source, syntax-highlighted, in JupyterLab and
  in the static book (so chapters show the library's code, never a copy of it).
* :func:`static_slider` -- an interactive figure that needs no kernel: pre-rendered frames
  embedded as base64 PNGs behind a small, self-contained HTML + JavaScript range slider.
* :func:`live_or_static` -- one call that gives an ``ipywidgets`` slider when a person runs the
  notebook in Jupyter, and a :func:`static_slider` over the same frames in the built book.
* :func:`pipeline_diagram` -- the DMM-Net pipeline (Fig. 2 of the paper, redrawn).
* :func:`overlay_masks` -- label masks coloured over an image with the DAVIS palette.

Nothing here fetches anything from the network: the rendered book must read offline.
"""

from __future__ import annotations

import base64
import html
import inspect
import io
import itertools
import json
import os
import re
import textwrap
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Sequence

import ipywidgets
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Image as IPythonImage
from IPython.display import display
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch
from PIL import Image

from dmmlib.data.masks import davis_palette
from dmmlib.errors import DMMInputError

__all__ = [
    "SourceView",
    "show_source",
    "static_slider",
    "live_or_static",
    "pipeline_diagram",
    "overlay_masks",
]


# --------------------------------------------------------------------------------------------
# show_source


class SourceView:
    """The source of a Python object, rendered as a fenced ``python`` Markdown block.

    Markdown (not HTML) is what both renderers understand natively: JupyterLab highlights the
    fence itself, and myst-nb turns it into a Sphinx code block, highlighted by Pygments in the
    book's own theme (with the copy button), without foreign CSS.
    """

    def __init__(self, source: str, qualname: str, filename: str | None, first_line: int | None):
        self.source = source
        self.qualname = qualname
        self.filename = filename
        self.first_line = first_line

    @property
    def caption(self) -> str:
        where = ""
        if self.filename is not None and self.first_line is not None:
            last = self.first_line + self.source.count("\n") - 1
            where = f" ({self.filename}, lines {self.first_line}-{last})"
        return f"Source of `{self.qualname}`{where}:"

    def _repr_markdown_(self) -> str:
        # A fence longer than any backtick run inside the source, so docstrings cannot close it.
        longest = max((len(run) for run in re.findall(r"`+", self.source)), default=0)
        fence = "`" * max(3, longest + 1)
        return f"{self.caption}\n\n{fence}python\n{self.source.rstrip()}\n{fence}\n"

    def __repr__(self) -> str:
        return f"# {self.caption}\n{self.source.rstrip()}"


def _display_name(obj: Any) -> str:
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or repr(obj)
    return f"{module}.{qualname}" if module and module != "__main__" else qualname


def show_source(obj: Any) -> SourceView:
    """Return the source of ``obj`` (function, class, method or module) for display.

    The last expression of a notebook cell displays it; ``.source`` holds the plain text.
    Raises :class:`DMMInputError` if Python cannot find the source (builtins, C extensions,
    objects defined interactively).
    """
    target = inspect.unwrap(obj) if callable(obj) else obj
    try:
        lines, first_line = inspect.getsourcelines(target)
        filename = inspect.getsourcefile(target)
    except (TypeError, OSError) as error:
        raise DMMInputError(
            f"show_source: cannot find the source of {_display_name(obj)} ({error}); "
            "expected a Python function, class, method or module defined in a file"
        ) from None
    source = textwrap.dedent("".join(lines))
    shown_file = None
    if filename is not None:
        # Show the path relative to the package's parent (dmmlib/matching.py), not the
        # machine-specific absolute path.
        package_root = str(Path(__file__).resolve().parents[2])
        absolute = os.path.abspath(filename)
        shown_file = os.path.relpath(absolute, package_root) if absolute.startswith(package_root) else os.path.basename(absolute)
    return SourceView(source, _display_name(obj), shown_file, first_line if lines else None)


# --------------------------------------------------------------------------------------------
# static_slider


_ids = itertools.count()


def new_dom_id(prefix: str = "dmm-slider") -> str:
    """A DOM id unique per call and per process run.

    The counter separates calls in one kernel, the random part separates notebooks that are
    rendered into the same HTML page.
    """
    return f"{prefix}-{os.urandom(4).hex()}-{next(_ids)}"


def _png_bytes(frame: Any, index: int, dpi: int) -> bytes:
    """One frame as PNG bytes: a matplotlib figure, PNG bytes, or an image array."""
    if isinstance(frame, (bytes, bytearray, memoryview)):
        data = bytes(frame)
        if not data.startswith(b"\x89PNG\r\n\x1a\n"):
            raise DMMInputError(f"static_slider: frame {index} is bytes but not a PNG file")
        return data
    if hasattr(frame, "savefig"):  # a matplotlib Figure, without importing pyplot here
        buffer = io.BytesIO()
        frame.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
        return buffer.getvalue()
    if isinstance(frame, np.ndarray):
        return _array_to_png(frame, index)
    raise DMMInputError(
        f"static_slider: frame {index} is a {type(frame).__name__}; expected a matplotlib Figure, "
        "PNG bytes or an image array [H, W], [H, W, 3] or [H, W, 4]"
    )


SLIDER_FORMATS = ("png", "jpeg")


def _png_to_jpeg(png: bytes, quality: int = 90) -> bytes:
    """PNG bytes re-encoded as JPEG (transparency flattened onto white)."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        rgba = image.convert("RGBA")
    flat = Image.new("RGB", rgba.size, (255, 255, 255))
    flat.paste(rgba, mask=rgba.getchannel("A"))
    buffer = io.BytesIO()
    flat.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _array_to_png(array: np.ndarray, index: int) -> bytes:
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise DMMInputError(
            f"static_slider: frame {index} has shape {array.shape}; expected [H, W], [H, W, 3] or [H, W, 4]"
        )
    if array.size == 0:
        raise DMMInputError(f"static_slider: frame {index} is empty (shape {array.shape})")
    if array.dtype == np.uint8:
        pixels = array
    elif np.issubdtype(array.dtype, np.floating) or array.dtype == bool:
        values = array.astype(np.float64)
        if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
            raise DMMInputError(
                f"static_slider: frame {index} is a float image with values outside [0, 1]; "
                "scale it to [0, 1] or pass uint8"
            )
        pixels = np.round(values * 255).astype(np.uint8)
    else:
        raise DMMInputError(
            f"static_slider: frame {index} has dtype {array.dtype}; expected uint8 or floats in [0, 1]"
        )
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def static_asset(name: str) -> str:
    """The text of ``dmmlib/lessons/static/<name>``: the CSS and JavaScript the static figures embed."""
    return (resources.files("dmmlib.lessons") / "static" / name).read_text(encoding="utf-8")


def embedded_script(name: str, root_id: str) -> str:
    """``static/<name>`` with its ``ROOT_ID`` placeholder bound to the figure's DOM id, for an inline <script>."""
    return static_asset(name).replace("ROOT_ID", json.dumps(root_id))


class _SliderHTML:
    """An HTML object for IPython display that also exposes the DOM id (handy in tests)."""

    def __init__(self, markup: str, dom_id: str, n_frames: int):
        self.data = markup
        self.dom_id = dom_id
        self.n_frames = n_frames

    def _repr_html_(self) -> str:
        return self.data

    def __repr__(self) -> str:
        return f"<static_slider {self.dom_id}: {self.n_frames} frames>"


def static_slider(
    frames: Sequence[Any],
    labels: Sequence[str] | None = None,
    title: str | None = None,
    *,
    start: int = 0,
    dpi: int = 100,
    close_figures: bool = True,
    play: bool = True,
    interval_ms: int = 500,
    image_format: str = "png",
) -> _SliderHTML:
    """An interactive figure that works without a kernel: a range slider over pre-rendered frames.

    ``frames`` are matplotlib figures, PNG bytes or image arrays (``uint8`` or floats in [0, 1],
    ``[H, W]``, ``[H, W, 3]`` or ``[H, W, 4]``). Every frame is embedded as a base64 PNG; a few
    lines of inline JavaScript (no external script, no CDN) show one at a time. The slider is a
    native ``<input type=range>``, so arrow keys, Home and End work; the previous/next buttons
    are focusable. Each call gets fresh DOM ids, so many sliders can share a page. Without
    JavaScript the first frame (``start``) is shown.

    With ``play`` (the default) a play/pause button steps through the frames every
    ``interval_ms`` milliseconds and stops at the last one (a video "playing" in the static
    page); it is a native button, so Tab reaches it and Space or Enter toggle it, and moving
    the slider or the previous/next buttons pauses it. Playing from the last frame starts
    again at the first.

    Figures are closed after rendering (``close_figures``) so that the notebook does not show
    them a second time.

    ``image_format="jpeg"`` embeds the frames as JPEGs (quality 90) instead: a quarter of the
    bytes for video frames, at the price of slight blur on sharp label edges.
    """
    frames = list(frames)
    if not frames:
        raise DMMInputError("static_slider: frames is empty; expected at least one frame")
    if labels is None:
        labels = [f"{i + 1} / {len(frames)}" for i in range(len(frames))]
    labels = [str(label) for label in labels]
    if len(labels) != len(frames):
        raise DMMInputError(f"static_slider: got {len(labels)} labels for {len(frames)} frames; expected one label per frame")
    if not 0 <= start < len(frames):
        raise DMMInputError(f"static_slider: start={start} is outside 0..{len(frames) - 1}")
    if isinstance(interval_ms, bool) or not isinstance(interval_ms, int) or interval_ms < 20:
        raise DMMInputError(f"static_slider: interval_ms={interval_ms!r}; expected an integer of at least 20 (milliseconds)")

    if image_format not in SLIDER_FORMATS:
        raise DMMInputError(f"static_slider: image_format={image_format!r}; expected one of {', '.join(SLIDER_FORMATS)}")
    encoded = [_png_bytes(frame, i, dpi) for i, frame in enumerate(frames)]
    if image_format == "jpeg":
        encoded = [_png_to_jpeg(png) for png in encoded]
    if close_figures:
        figures = [frame for frame in frames if hasattr(frame, "savefig")]
        if figures:
            for figure in figures:
                plt.close(figure)

    dom_id = new_dom_id()
    name = html.escape(title or "Interactive figure")
    images = "\n".join(
        f'<img class="dmm-slider-frame" src="data:image/{image_format};base64,{base64.b64encode(data).decode("ascii")}" '
        f'alt="{name}: {html.escape(label)}"{"" if i == start else " hidden"}>'
        for i, (data, label) in enumerate(zip(encoded, labels))
    )

    title_html = f'<div class="dmm-slider-title" id="{dom_id}-title">{name}</div>' if title else ""
    play_button = ('<button type="button" class="dmm-play" aria-pressed="false" aria-label="play" '
                   'title="play the frames">&#9654;&#xFE0E; play</button>\n') if play else ""
    markup = f"""<div class="dmm-slider" id="{dom_id}" data-labels="{html.escape(json.dumps(labels))}" data-current="{start}" data-interval="{interval_ms}" data-playing="0" role="group" aria-label="{name}">
<style>{static_asset("slider.css")}</style>
{title_html}
<div class="dmm-slider-controls">
{play_button}<button type="button" class="dmm-prev" aria-label="previous frame" title="previous">&#9664;</button>
<input type="range" min="0" max="{len(frames) - 1}" step="1" value="{start}" aria-label="{name}: frame" aria-valuetext="{html.escape(labels[start])}">
<button type="button" class="dmm-next" aria-label="next frame" title="next">&#9654;</button>
<output aria-live="polite">{html.escape(labels[start])}</output>
</div>
{images}
<script>{embedded_script("slider.js", dom_id)}</script>
</div>"""
    return _SliderHTML(markup, dom_id, len(frames))


# --------------------------------------------------------------------------------------------
# live_or_static


def running_live() -> bool:
    """True when a person drives this kernel from Jupyter (not a headless book build).

    ``DMM_LIVE=1`` / ``DMM_LIVE=0`` decide explicitly. Otherwise Jupyter Server sets
    ``JPY_SESSION_NAME`` for the kernels it starts for a notebook (JupyterLab, Notebook 7),
    while the book build and nbval (nbclient, headless) do not.
    """
    explicit = os.environ.get("DMM_LIVE", "").strip()
    if explicit in ("0", "1"):
        return explicit == "1"
    if explicit:
        raise DMMInputError(f"environment variable DMM_LIVE={explicit!r}; expected 0 or 1")
    return bool(os.environ.get("JPY_SESSION_NAME"))


def live_or_static(
    render: Callable[[Any], Any],
    values: Sequence[Any],
    *,
    name: str = "value",
    labels: Sequence[str] | None = None,
    title: str | None = None,
    live: bool | None = None,
):
    """Pair a live ``ipywidgets`` slider (in Jupyter) with a :func:`static_slider` (in the book).

    ``render(value)`` draws one state -- a matplotlib figure or an image array. In a live session
    (see :func:`running_live`; ``live=True``/``False`` overrides) this returns an
    ``ipywidgets.interactive`` whose slider calls ``render`` on demand; in the headless book build
    it calls ``render`` once per value and returns a static slider over the frames, which works
    in the HTML with no kernel. A chapter writes one line for both::

        live_or_static(lambda n: plot_gap(n_grad=n), [5, 10, 20, 40], name="N_grad")
    """
    values = list(values)
    if not values:
        raise DMMInputError("live_or_static: values is empty; expected at least one value")
    if labels is None:
        labels = [f"{name} = {value}" for value in values]
    labels = [str(label) for label in labels]
    if len(labels) != len(values):
        raise DMMInputError(f"live_or_static: got {len(labels)} labels for {len(values)} values")
    if live is None:
        live = running_live()
    if not live:
        return static_slider([render(value) for value in values], labels=labels, title=title)

    def show(choice):
        frame = render(choice)
        display(IPythonImage(data=_png_bytes(frame, values.index(choice), dpi=100), format="png"))
        if hasattr(frame, "savefig"):
            plt.close(frame)

    slider = ipywidgets.SelectionSlider(
        options=list(zip(labels, values)), value=values[0], description=name,
        continuous_update=False, layout=ipywidgets.Layout(width="60%"),
    )
    widget = ipywidgets.interactive(show, choice=slider)
    if title:
        return ipywidgets.VBox([ipywidgets.HTML(f"<b>{html.escape(title)}</b>"), widget])
    return widget


# --------------------------------------------------------------------------------------------
# pipeline_diagram

_COLOURS = {
    "input": "#eeeeee",
    "learned": "#cfe2f3",
    "matching": "#fff2b3",
    "output": "#d9ead3",
}


def pipeline_diagram(figsize: tuple[float, float] = (10.0, 5.4)):
    """The DMM-Net pipeline for one frame ``t`` (Sec. 3 and Fig. 2 of the paper), as a figure.

    Top row: the frame's Mask R-CNN proposals and the first-frame templates are embedded by
    ``f_theta``, compared in the cost ``C`` (Eq. 1) and matched by the matching layer (Alg. 1).
    Bottom row, right to left: the soft assignment ``X_hat`` is sharpened to ``X_tilde``
    (Sec. 4.1), contracted with the proposal masks (Eq. 8) and refined by ConvLSTM layers.
    The matched masks feed the IoU term of the next frame's cost.
    """
    fig, ax = plt.subplots(figsize=figsize)
    ax.set_xlim(0, 12.4)
    ax.set_ylim(0, 6.6)
    ax.set_axis_off()

    width, height = 2.2, 1.3
    boxes: dict[str, tuple[float, float]] = {}

    def box(key, x, y, text, kind):
        boxes[key] = (x, y)
        ax.add_patch(FancyBboxPatch(
            (x - width / 2, y - height / 2), width, height,
            boxstyle="round,pad=0.04,rounding_size=0.12", linewidth=1.2,
            edgecolor="#444444", facecolor=_COLOURS[kind], zorder=2,
        ))
        ax.text(x, y, text, ha="center", va="center", fontsize=12, zorder=3, linespacing=1.3)

    def arrow(a, b, text=None, *, rad=0.0, start=None, end=None, style="-|>", colour="#333333",
              dashed=False, text_at=None, text_kw=None):
        p = start or boxes[a]
        q = end or boxes[b]
        ax.add_patch(FancyArrowPatch(
            p, q, arrowstyle=style, mutation_scale=14, linewidth=1.4, color=colour,
            connectionstyle=f"arc3,rad={rad}", shrinkA=0, shrinkB=0, zorder=1,
            linestyle=(0, (4, 3)) if dashed else "-",
        ))
        if text:
            tx, ty = text_at or ((p[0] + q[0]) / 2, (p[1] + q[1]) / 2)
            ax.text(tx, ty, text, ha="center", va="center", fontsize=10.5, color=colour, zorder=4,
                    bbox=dict(boxstyle="round,pad=0.15", facecolor="white", edgecolor="none"),
                    **(text_kw or {}))

    top, bottom, above = 3.85, 1.15, 5.85
    xs = [1.15, 3.67, 6.2, 8.72, 11.25]
    half_w, half_h = width / 2 + 0.04, height / 2 + 0.04

    box("frame", xs[0], top, "frame $t$\n(RGB image)", "input")
    box("proposals", xs[1], top, "Mask R-CNN:\ntop-50 proposals\n$\\tilde P$ ($m$ masks)", "input")
    box("templates", xs[1], above, "first frame:\n$n$ templates $R$", "input")
    box("features", xs[2], top, "features $f_\\theta$\nof proposals\nand templates", "learned")
    box("cost", xs[3], top, "cost $C$ (Eq. 1):\ncosine + IoU\nwith prev. mask", "matching")
    box("match", xs[4], top, "matching layer\nAlg. 1: projected\ngradient, Dykstra", "matching")
    box("xhat", xs[4], bottom, "$\\hat X$ ($n \\times m$):\nsoft assignment", "matching")
    box("xtilde", xs[3], bottom, "$\\tilde X$: keep the\nmaxima of $\\hat X$", "matching")
    box("matched", xs[2], bottom, "matched masks\n$\\hat P = \\tilde X \\otimes \\tilde P$\n(Eq. 8)", "matching")
    box("refine", xs[1], bottom, "refinement:\n4 ConvLSTM layers", "learned")
    box("output", xs[0], bottom, "output masks\nof frame $t$", "output")

    def right(k):
        return (boxes[k][0] + half_w, boxes[k][1])

    def left(k):
        return (boxes[k][0] - half_w, boxes[k][1])

    def up(k, dx=0.0):
        return (boxes[k][0] + dx, boxes[k][1] + half_h)

    def down(k, dx=0.0):
        return (boxes[k][0] + dx, boxes[k][1] - half_h)

    arrow("frame", "proposals", start=right("frame"), end=left("proposals"))
    arrow("proposals", "features", start=right("proposals"), end=left("features"))
    arrow("templates", "features", start=right("templates"), end=up("features", -0.3), rad=-0.25)
    arrow("features", "cost", start=right("features"), end=left("cost"))
    arrow("cost", "match", start=right("cost"), end=left("match"))
    arrow("match", "xhat", start=down("match"), end=up("xhat"))
    arrow("xhat", "xtilde", start=left("xhat"), end=right("xtilde"))
    arrow("xtilde", "matched", start=left("xtilde"), end=right("matched"))
    arrow("matched", "refine", start=left("matched"), end=right("refine"))
    arrow("refine", "output", start=left("refine"), end=right("output"))
    # The proposal masks themselves enter Eq. 8.
    arrow("proposals", "matched", "proposal masks $\\tilde P$", start=down("proposals", 0.35),
          end=up("matched", -0.45), colour="#555555", text_at=(4.75, 2.5))
    # Feedback: the matched masks give the IoU term of the next frame's cost.
    arrow("matched", "cost", "$\\hat P$ $\\to$ IoU in $C$ at $t+1$",
          start=up("matched", 0.45), end=down("cost", -0.35), colour="#b45f06", dashed=True,
          text_at=(7.45, 2.5))
    # Frame features (conv2-5) and the template masks also enter the refinement.
    arrow("frame", "refine", "backbone features", start=down("frame", 0.3), end=up("refine", -0.5),
          colour="#555555", dashed=True, text_at=(2.1, 2.5))

    ax.legend(
        handles=[Patch(facecolor=_COLOURS[k], edgecolor="#444444", label=label) for k, label in (
            ("input", "input / fixed"), ("learned", "learned network"),
            ("matching", "matching (differentiable)"), ("output", "output"))],
        loc="upper right", bbox_to_anchor=(1.0, 1.02), fontsize=10.5, frameon=False, ncol=1,
    )
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# overlay_masks


def overlay_masks(image: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Colour label masks over an image with the DAVIS palette.

    ``image`` is ``[H, W, 3]`` (or ``[H, W]`` grey) ``uint8``, or floats in [0, 1]; ``labels``
    is ``[H, W]`` integers in 0..255 (0 background, left untouched; ``k`` object ``k``; 255
    void, drawn in the palette's void colour). Each labelled pixel becomes
    ``(1 - alpha) * image + alpha * palette[label]``. Returns ``uint8 [H, W, 3]``.
    """
    image = np.asarray(image)
    labels = np.asarray(labels)
    if not 0.0 <= float(alpha) <= 1.0:
        raise DMMInputError(f"overlay_masks: alpha={alpha} is outside [0, 1]")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise DMMInputError(f"overlay_masks: image has shape {image.shape}; expected [H, W, 3] or [H, W]")
    image = image[:, :, :3]
    if labels.ndim != 2 or labels.shape != image.shape[:2]:
        raise DMMInputError(
            f"overlay_masks: labels have shape {labels.shape}; expected [H, W] = {image.shape[:2]} to match the image"
        )
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise DMMInputError(f"overlay_masks: labels have dtype {labels.dtype}; expected integers (object ids)")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise DMMInputError(f"overlay_masks: labels lie in {labels.min()}..{labels.max()}; expected 0..255")
    if image.dtype == np.uint8:
        base = image.astype(np.float64)
    elif np.issubdtype(image.dtype, np.floating):
        if image.size and (not np.isfinite(image).all() or image.min() < 0 or image.max() > 1):
            raise DMMInputError("overlay_masks: float image has values outside [0, 1]; expected [0, 1] or uint8")
        base = image.astype(np.float64) * 255.0
    else:
        raise DMMInputError(f"overlay_masks: image has dtype {image.dtype}; expected uint8 or floats in [0, 1]")

    palette = np.asarray(davis_palette(), dtype=np.float64).reshape(256, 3)
    colours = palette[labels.astype(np.intp)]
    blended = (1.0 - alpha) * base + alpha * colours
    out = np.where((labels != 0)[:, :, None], blended, base)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)

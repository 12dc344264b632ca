"""dmmlib.viz: self-contained sliders, overlays in the DAVIS palette, source display."""

from __future__ import annotations

import base64
import inspect
import io
import re

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from dmmlib.data.masks import davis_palette  # noqa: E402
from dmmlib.errors import DMMInputError  # noqa: E402
from dmmlib.lessons import viz  # noqa: E402
from dmmlib.profiles import by_profile  # noqa: E402

EXTERNAL = re.compile(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", re.IGNORECASE)


def _frames(n):
    frames = []
    for i in range(n):
        image = np.zeros((6, 8, 3), dtype=np.uint8)
        image[:, i % 8] = 255  # a distinct column per frame, so the PNGs differ
        frames.append(image)
    return frames


def _embedded_pngs(markup):
    return [base64.b64decode(data) for data in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', markup)]


def test_static_slider_embeds_one_image_per_frame_and_nothing_external():
    slider = viz.static_slider(_frames(5), labels=[f"step {i}" for i in range(5)], title="five frames")
    markup = slider._repr_html_()
    assert markup.count("<img ") == 5
    pngs = _embedded_pngs(markup)
    assert len(pngs) == 5
    decoded = [np.array(Image.open(io.BytesIO(png))) for png in pngs]
    assert all(not np.array_equal(decoded[0], other) for other in decoded[1:])
    np.testing.assert_array_equal(decoded[3], _frames(5)[3])
    # Only the first frame is visible before any script runs.
    assert len(re.findall(r"<img [^>]*\bhidden\b", markup)) == 4
    assert 'max="4"' in markup and 'type="range"' in markup
    assert "step 0" in markup and "step 4" in markup
    # Self-contained: inline script and style only, no URL to any host, no src= other than data:.
    assert not EXTERNAL.search(markup), EXTERNAL.search(markup)
    assert re.findall(r'\bsrc="([^"]*)"', markup) and all(
        src.startswith("data:image/png;base64,") for src in re.findall(r'\bsrc="([^"]*)"', markup))
    assert "<script>" in markup and "<script src" not in markup


def test_static_slider_can_embed_jpegs_that_are_smaller_and_close_to_the_frames():
    rng = np.random.default_rng(0)
    # video-like frames: smooth gradients with texture, where JPEG pays off
    base = np.linspace(0, 200, 96 * 128).reshape(96, 128)
    frames = [np.clip(base[..., None] + rng.normal(0, 3, (96, 128, 3)) + 10 * i, 0, 255).astype(np.uint8)
              for i in range(3)]
    as_png = viz.static_slider(frames)._repr_html_()
    as_jpeg = viz.static_slider(frames, image_format="jpeg")._repr_html_()
    jpegs = [base64.b64decode(d) for d in re.findall(r'src="data:image/jpeg;base64,([A-Za-z0-9+/=]+)"', as_jpeg)]
    assert len(jpegs) == 3 and not _embedded_pngs(as_jpeg)
    assert all(j.startswith(b"\xff\xd8") for j in jpegs)  # JPEG files
    assert len(as_jpeg) < 0.6 * len(as_png)
    decoded = np.array(Image.open(io.BytesIO(jpegs[1]))).astype(float)
    assert np.abs(decoded - frames[1]).mean() < 4  # quality 90: a few grey levels off on average
    with pytest.raises(DMMInputError, match="image_format='gif'"):
        viz.static_slider(frames, image_format="gif")


def test_static_slider_ids_are_unique_per_call():
    first = viz.static_slider(_frames(2))
    second = viz.static_slider(_frames(2))
    assert first.dom_id != second.dom_id
    assert f'id="{first.dom_id}"' in first._repr_html_()
    assert first.dom_id not in second._repr_html_()


def test_static_slider_accepts_figures_and_png_bytes_and_closes_figures():
    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([0, 1], [1, 0])
    buffer = io.BytesIO()
    Image.fromarray(_frames(1)[0]).save(buffer, format="PNG")
    slider = viz.static_slider([fig, buffer.getvalue()], labels=["figure", "bytes"])
    assert len(_embedded_pngs(slider._repr_html_())) == 2
    assert not plt.fignum_exists(fig.number)


@pytest.mark.parametrize("frames, labels, message", [
    ([], None, "empty"),
    ([np.zeros((4, 4), np.uint8)] * 2, ["one"], "labels"),
    ([np.zeros((4, 4, 2), np.uint8)], None, "shape"),
    ([np.full((4, 4), 2.0)], None, "outside"),
    ([b"GIF89a"], None, "not a PNG"),
    (["frame.png"], None, "str"),
])
def test_static_slider_rejects_bad_input(frames, labels, message):
    with pytest.raises(DMMInputError, match=message):
        viz.static_slider(frames, labels=labels)


def test_live_or_static_gives_a_static_slider_in_a_headless_build(monkeypatch):
    monkeypatch.delenv("DMM_LIVE", raising=False)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    calls = []

    def render(value):
        calls.append(value)
        return _frames(value + 1)[value]

    result = viz.live_or_static(render, [0, 1, 2], name="n")
    assert calls == [0, 1, 2]
    markup = result._repr_html_()
    assert markup.count("<img ") == 3 and "n = 2" in markup


def test_live_or_static_gives_a_widget_in_jupyter(monkeypatch):
    ipywidgets = pytest.importorskip("ipywidgets")
    monkeypatch.delenv("DMM_LIVE", raising=False)
    monkeypatch.setenv("JPY_SESSION_NAME", "/home/reader/book/03_convergence.ipynb")
    calls = []
    widget = viz.live_or_static(lambda v: calls.append(v) or _frames(4)[v], [1, 3], name="n")
    assert isinstance(widget, ipywidgets.interactive)
    assert calls == [1]  # only the shown state is rendered, on demand
    monkeypatch.setenv("DMM_LIVE", "0")
    assert hasattr(viz.live_or_static(lambda v: _frames(4)[v], [1, 3]), "_repr_html_")
    monkeypatch.setenv("DMM_LIVE", "yes")
    with pytest.raises(DMMInputError, match="DMM_LIVE"):
        viz.live_or_static(lambda v: _frames(4)[v], [1])


def test_overlay_masks_uses_the_davis_palette():
    palette = np.array(davis_palette()).reshape(256, 3)
    image = np.full((2, 3, 3), 100, dtype=np.uint8)
    labels = np.array([[0, 1, 2], [3, 255, 0]], dtype=np.uint8)
    out = viz.overlay_masks(image, labels, alpha=0.5)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 3)
    np.testing.assert_array_equal(out[0, 0], [100, 100, 100])  # background untouched
    np.testing.assert_array_equal(out[1, 2], [100, 100, 100])
    for (r, c) in [(0, 1), (0, 2), (1, 0), (1, 1)]:
        expected = np.round(0.5 * 100 + 0.5 * palette[labels[r, c]]).astype(np.uint8)
        np.testing.assert_array_equal(out[r, c], expected)
    # DAVIS colours: object 1 red, object 2 green.
    np.testing.assert_array_equal(palette[1], [128, 0, 0])
    np.testing.assert_array_equal(palette[2], [0, 128, 0])
    full = viz.overlay_masks(image, labels, alpha=1.0)
    np.testing.assert_array_equal(full[0, 1], palette[1])
    np.testing.assert_array_equal(viz.overlay_masks(image, labels, alpha=0.0), image)


def test_overlay_masks_accepts_grey_and_float_images():
    grey = np.full((2, 2), 0.5)
    out = viz.overlay_masks(grey, np.array([[0, 1], [0, 0]]), alpha=1.0)
    np.testing.assert_array_equal(out[0, 0], [128, 128, 128])
    np.testing.assert_array_equal(out[0, 1], [128, 0, 0])


@pytest.mark.parametrize("image, labels, alpha, message", [
    (np.zeros((2, 2, 3), np.uint8), np.zeros((3, 2), np.uint8), 0.5, "shape"),
    (np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2), np.uint8), 1.5, "alpha"),
    (np.zeros((2, 2, 3), np.uint8), np.full((2, 2), 0.5), 0.5, "dtype"),
    (np.full((2, 2, 3), 3.0), np.zeros((2, 2), np.uint8), 0.5, "outside"),
    (np.zeros((2, 2, 3), np.uint8), np.full((2, 2), 300), 0.5, "0..255"),
])
def test_overlay_masks_rejects_bad_input(image, labels, alpha, message):
    with pytest.raises(DMMInputError, match=message):
        viz.overlay_masks(image, labels, alpha=alpha)


def test_show_source_contains_the_source_in_a_python_fence():
    view = viz.show_source(by_profile)
    assert view.source == inspect.getsource(by_profile)
    markdown = view._repr_markdown_()
    assert markdown.count("```python") == 1
    assert "def by_profile(settings" in markdown
    assert "dmmlib.profiles.by_profile" in markdown
    assert "dmmlib/profiles.py" in markdown


def test_show_source_fence_survives_backticks_in_the_source(tmp_path, monkeypatch):
    (tmp_path / "fenced_example.py").write_text(
        'def documented():\n    """Example:\n\n    ````python\n    documented()\n    ````\n    """\n    return 1\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    import fenced_example

    view = viz.show_source(fenced_example.documented)
    markdown = view._repr_markdown_()
    assert markdown.startswith("Source of `fenced_example.documented` (fenced_example.py, lines 1-8):")
    fence = re.match(r"[^\n]*\n\n(`+)python\n", markdown).group(1)
    assert len(fence) == 5  # longer than the docstring's own four-backtick fence
    assert markdown.rstrip().endswith("\n" + fence)
    assert view.source in markdown


def test_show_source_of_a_builtin_is_a_clear_error():
    with pytest.raises(DMMInputError, match="cannot find the source of"):
        viz.show_source(len)


def test_pipeline_diagram_draws_every_stage():
    fig = viz.pipeline_diagram()
    try:
        text = " ".join(t.get_text() for t in fig.axes[0].texts)
        for stage in ("Mask R-CNN", "top-50", "f_\\theta", "Eq. 1", "Alg. 1", "Dykstra",
                      "\\hat X", "\\tilde X", "Eq. 8", "ConvLSTM", "IoU in $C$ at $t+1$"):
            assert stage in text, stage
    finally:
        plt.close(fig)

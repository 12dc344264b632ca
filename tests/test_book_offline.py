"""The rendered book reads offline: maths, figures and widgets with no network at all.

A one-chapter subset of the book (book/00_how_to_use plus a small page with a saved widget and a
static explorer) is built in the smoke profile into the pytest tmp dir -- never into ``_build``,
whose cache belongs to the cpu profile. Then

* every built HTML page is scanned for scripts, stylesheets, images, fonts or frames that point
  at another host (plain hyperlinks ``<a href>`` are fine);
* headless Chromium (Debian's ``/usr/bin/chromium`` driven by playwright) opens the pages from a
  local web server with every non-local request blocked and recorded, and checks that MathJax
  typeset the equations, that the static slider changes frame, that the ipywidgets embed
  manager rendered a widget from the saved state, and that a static explorer draws and answers
  its slider.

Without Chromium the browser test FAILS (``make test`` installs it); set ``DMM_SKIP_BROWSER=1``
to skip it deliberately.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
import urllib.parse
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools" / "offline_assets"))
from book_guards import ResourceScanner, find_external_resources, is_external  # noqa: E402
from conftest import CHROMIUM_ARGS  # noqa: E402

CHAPTER = "book/00_how_to_use"
WIDGET_PAGE = "book/widget_fixture"
LOCAL_HOSTS = {"127.0.0.1", "localhost"}  # what the browser may fetch from

WIDGET_NOTEBOOK = {
    "cells": [
        {"cell_type": "markdown", "metadata": {}, "source": "# Widget fixture\n\nA saved ipywidgets slider."},
        {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [], "source":
            "import ipywidgets\nipywidgets.IntSlider(value=7, min=0, max=10, description='fixture')"},
        {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [], "source":
            "import numpy as np\nfrom dmmlib.lessons.explorers import projection_stepper\n"
            "projection_stepper({'triangle': np.array([[1.2, 0.3, -0.5]])}, rounds=(0, 1, 5), live=False)"},
    ],
    "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                 "language_info": {"name": "python"}},
    "nbformat": 4, "nbformat_minor": 5,
}


# ---------------------------------------------------------------------------------------------
# Building the subset


@pytest.fixture(scope="module")
def built_book(tmp_path_factory) -> Path:
    """Build CHAPTER and a widget page with the book's own _config.yml; return the html folder."""
    vendor = ROOT / "book" / "_static" / "vendor"
    missing = [p for p in ("mathjax/tex-mml-chtml.js", "requirejs/require.js", "html-manager/embed-amd.js")
               if not (vendor / p).is_file()]
    if missing:
        pytest.fail(f"offline assets missing under {vendor}: {missing}; run `make setup` "
                    "(npm ci in tools/offline_assets + vendor.py)")

    work = tmp_path_factory.mktemp("book-offline")
    source = work / "src"
    (source / "book").mkdir(parents=True)
    shutil.copy2(ROOT / f"{CHAPTER}.ipynb", source / f"{CHAPTER}.ipynb")
    import json

    (source / f"{WIDGET_PAGE}.ipynb").write_text(json.dumps(WIDGET_NOTEBOOK))

    # The book's configuration, with its relative paths made absolute so they still point into
    # the repository from the temporary source folder.
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    sphinx = config.setdefault("sphinx", {})
    sphinx["local_extensions"] = {name: str((ROOT / path).resolve())
                                  for name, path in (sphinx.get("local_extensions") or {}).items()}
    sphinx["config"]["html_static_path"] = [str((ROOT / p).resolve()) for p in sphinx["config"]["html_static_path"]]
    (source / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    (source / "_toc.yml").write_text(
        f"format: jb-book\nroot: {CHAPTER}\nchapters:\n  - file: {WIDGET_PAGE}\n")

    output = work / "out"
    env = dict(os.environ, DMM_PROFILE="smoke")
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    result = subprocess.run(
        [str(jupyter_book), "build", str(source), "--path-output", str(output), "--builder", "html",
         "-W", "-n", "--keep-going"],
        env=env, capture_output=True, text=True, timeout=900,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, f"book build failed (exit {result.returncode}):\n{log[-6000:]}"
    html_dir = output / "_build" / "html"
    assert (html_dir / f"{CHAPTER}.html").is_file(), log[-3000:]
    return html_dir


# ---------------------------------------------------------------------------------------------
# Static scan of the HTML


@pytest.mark.slow
def test_built_html_references_no_other_host(built_book):
    assert (built_book / f"{CHAPTER}.html").is_file()
    offending, seen = find_external_resources(built_book)
    assert seen > 20, "the scanner found almost no resources; is it parsing the pages?"
    assert not offending, "built HTML loads resources from other hosts:\n" + "\n".join(offending)


def test_resource_scanner_catches_cdn_references():
    """The scan above must be able to fail: feed it what a default jupyter-book build emits."""
    scanner = ResourceScanner()
    scanner.feed(
        '<script src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"></script>'
        '<link rel="stylesheet" href="//maxcdn.bootstrapcdn.com/font-awesome/4.4.0/css/font-awesome.min.css">'
        '<img src="http://example.org/a.png"><style>@font-face{src:url(https://fonts.gstatic.com/x.woff2)}</style>'
        '<script>const THEBE_JS_URL = "https://unpkg.com/thebe@0.8.2/lib/index.js"</script>'
        '<a href="https://arxiv.org/abs/1909.12471">the paper</a>'
        '<script src="../_static/vendor/requirejs/require.js"></script><img src="data:image/png;base64,AAAA">'
    )
    external = [url for _, url in scanner.urls if is_external(url)]
    assert len(external) == 5, external
    assert not any("arxiv" in url for url in external)


# ---------------------------------------------------------------------------------------------
# Headless Chromium


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server(built_book):
    handler = functools.partial(_QuietHandler, directory=str(built_book))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


# pydata-sphinx-theme logs this with console.error on a first visit (no stored light/dark choice).
BENIGN_CONSOLE = ("Got invalid theme mode",)

# Fonts load lazily, when first used; load every declared @font-face now so that a font the page
# cannot fetch fails the test every time, not only when some glyph happens to need it.
LOAD_ALL_FONTS_JS = """async () => {
  const faces = Array.from(document.fonts);
  await Promise.allSettled(faces.map(f => f.load()));
  return faces.length;
}"""

CLEAN_TEXT_JS = """() => {
  const article = document.querySelector('article') || document.body;
  const copy = article.cloneNode(true);
  copy.querySelectorAll('pre, code, script, style, mjx-container, .MathJax').forEach(e => e.remove());
  return copy.innerText;
}"""


@pytest.mark.browser
@pytest.mark.slow
def test_book_reads_offline_in_headless_chromium(chromium, server, tmp_path):
    from playwright.sync_api import sync_playwright

    blocked, failed, bad_status, console_errors = [], [], [], []

    def guard(route):
        url = route.request.url
        host = urllib.parse.urlsplit(url).hostname
        if url.startswith(("data:", "blob:", "about:")) or host in LOCAL_HOSTS:
            route.continue_()
        else:
            blocked.append(url)
            route.abort("blockedbyclient")

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(chromium),
            args=CHROMIUM_ARGS,
        )
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.route("**/*", guard)
            page = context.new_page()
            page.on("requestfailed", lambda r: failed.append(f"{r.url} ({r.failure})"))
            page.on("response", lambda r: r.status >= 400 and bad_status.append(f"{r.status} {r.url}"))
            page.on("console", lambda m: m.type == "error" and not m.text.startswith(BENIGN_CONSOLE)
                    and console_errors.append(m.text))
            page.on("pageerror", lambda e: console_errors.append(str(e)))

            # --- the chapter: MathJax, the numbered figure, the static slider
            page.goto(f"{server}/{CHAPTER}.html", wait_until="load")
            page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise",
                                   timeout=30_000)
            page.evaluate("() => MathJax.startup.promise")
            page.evaluate(LOAD_ALL_FONTS_JS)
            n_math = page.locator("mjx-container").count()
            n_display = page.locator('mjx-container[display="true"]').count()
            assert n_math >= 10, f"MathJax typeset only {n_math} formulas"
            assert n_display >= 1, "the display equation (Eq. eq-cost) was not typeset"
            assert page.locator("mjx-merror").count() == 0, "MathJax reported a TeX error"
            assert page.locator("span.eqno").count() >= 1, "the labelled equation has no number"
            text = page.evaluate(CLEAN_TEXT_JS)
            for raw in (r"\(", r"\[", "$$"):
                assert raw not in text, f"raw TeX delimiter {raw!r} left in the visible text"
            leftover = re.findall(r"\$[^$\n]{1,80}\$", text)
            assert not leftover, f"untypeset $...$ maths in the visible text: {leftover[:5]}"
            assert page.locator("figure#fig-pipeline img").count() == 1, "pipeline figure missing"
            assert re.search(r"Fig\.\s*\d", text), "no numbered reference to the pipeline figure"

            slider = page.locator(".dmm-slider").first
            frames = slider.locator("img.dmm-slider-frame")
            assert frames.count() == 8

            def shown():
                visible = [i for i in range(frames.count()) if frames.nth(i).is_visible()]
                assert len(visible) == 1, f"expected exactly one visible frame, got {visible}"
                return visible[0]

            assert shown() == 0 and slider.locator("output").inner_text() == "frame 0"
            first_src = frames.nth(0).get_attribute("src")
            slider.scroll_into_view_if_needed()
            page.screenshot(path=str(tmp_path / "slider-frame0.png"))
            range_input = slider.locator("input[type=range]")
            range_input.focus()
            for _ in range(3):
                page.keyboard.press("ArrowRight")
            assert shown() == 3, "the arrow keys did not move the slider"
            assert slider.locator("output").inner_text() == "frame 3"
            assert frames.nth(3).get_attribute("src") != first_src
            slider.locator("button.dmm-next").click()
            assert shown() == 4
            range_input.focus()
            page.keyboard.press("End")
            assert shown() == 7 and range_input.get_attribute("aria-valuetext") == "frame 7"
            slider.scroll_into_view_if_needed()
            page.screenshot(path=str(tmp_path / "slider-frame7.png"))

            range_input.focus()
            page.keyboard.press("Home")
            page.evaluate("() => window.scrollTo(0, 0)")
            screenshot = tmp_path / "00_how_to_use.png"
            page.screenshot(path=str(screenshot), full_page=True)
            print(f"\nscreenshot of {CHAPTER}: {screenshot}")

            # --- a page with saved ipywidgets state: require.js and the local embed manager
            page.goto(f"{server}/{WIDGET_PAGE}.html", wait_until="load")
            page.wait_for_selector(".widget-slider, .jupyter-widgets.widget-hslider", timeout=30_000)
            assert "fixture" in page.locator(".jupyter-widgets").first.inner_text()
            assert page.evaluate(LOAD_ALL_FONTS_JS) > 0, "the widget page declares no fonts"
            # ... and a static explorer, drawn in the book's theme by its own script
            explorer = page.locator(".dmm-explorer")
            assert explorer.locator(".dmm-explorer-figure svg").count() >= 3, "the explorer drew nothing"
            before = explorer.locator(".dmm-explorer-readout").inner_text()
            explorer.locator("input[data-name='rounds']").focus()
            page.keyboard.press("ArrowRight")
            assert explorer.get_attribute("data-key") == "0,2"
            assert explorer.locator(".dmm-explorer-readout").inner_text() != before
            page.screenshot(path=str(tmp_path / "widget_fixture.png"))
        finally:
            browser.close()

    assert not blocked, "the book tried to fetch from other hosts:\n" + "\n".join(blocked)
    assert not failed, "requests failed:\n" + "\n".join(failed)
    assert not bad_status, "requests answered with errors:\n" + "\n".join(bad_status)
    assert not console_errors, "JavaScript errors:\n" + "\n".join(console_errors)

"""Shared fixtures: one torch thread for model tests, and a headless Chromium page for tests of interactive HTML."""

import os
from pathlib import Path

import pytest
import torch

# Debian's browser; DMM_CHROMIUM names another Chromium binary (e.g. /usr/bin/chromium-browser).
CHROMIUM = Path(os.environ.get("DMM_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def require_chromium() -> Path:
    """Debian's Chromium, or a clear failure (skip only when DMM_SKIP_BROWSER=1 asks for it)."""
    if os.environ.get("DMM_SKIP_BROWSER") == "1":
        pytest.skip("DMM_SKIP_BROWSER=1: headless-browser check skipped on request")
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (`make test` does it: "
                    "apt-get install chromium) or set DMM_SKIP_BROWSER=1 to skip this check")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.fail("the python package playwright is missing: pip install -e '.[test]'")
    return CHROMIUM


@pytest.fixture(scope="session")
def chromium() -> Path:
    """The browser binary, checked before any slow setup so a missing one fails at once."""
    return require_chromium()


@pytest.fixture
def offline_page(chromium):
    """A Playwright page in headless Chromium that may load nothing but file:// and data: URLs.

    Yields ``(page, problems)``; ``problems`` collects blocked requests and JavaScript errors,
    which a test should assert empty.
    """
    from playwright.sync_api import sync_playwright

    problems: list[str] = []

    def guard(route):
        url = route.request.url
        if url.startswith(("file:", "data:", "blob:", "about:")):
            route.continue_()
        else:
            problems.append(f"blocked request {url}")
            route.abort("blockedbyclient")

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1100, "height": 700})
            context.route("**/*", guard)
            page = context.new_page()
            page.on("pageerror", lambda error: problems.append(f"page error {error}"))
            page.on("console", lambda m: m.type == "error" and problems.append(f"console {m.text}"))
            yield page, problems
        finally:
            browser.close()


@pytest.fixture
def one_torch_thread():
    """One intra-op thread: on a shared 2-core machine torch's pool spins and small ops get several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def smoke_benchmark(tmp_path_factory):
    from dmmlib.data import ensure_synthetic

    return ensure_synthetic(root=tmp_path_factory.mktemp("synthetic") / "smoke", profile="smoke", progress=False)

"""Two guards for the book build, loaded by ``_config.yml`` (``sphinx.local_extensions``).

1. **Offline.** On every HTML page, drop sphinx-thebe's scripts (jupyter-book always loads
   sphinx-thebe, whose script would fetch thebe from unpkg.com when launched; this book has no
   thebe launch button), and warn -- an error under ``-W`` -- about any script or stylesheet that
   still points at another host, naming the page and the URL. A new extension or setting that
   pulls a file from a CDN thus fails the build instead of silently breaking the offline book.
   After the build, every written page and stylesheet is scanned the same way (scripts, styles,
   images, fonts, frames; not plain ``<a href>`` links), which also catches raw HTML in notebook
   outputs, e.g. matplotlib's ``to_jshtml`` linking Font Awesome from a CDN.
   MathJax, require.js and the widget manager are served from ``_static/vendor``
   (tools/offline_assets/vendor.py) via ``mathjax_path`` and ``nb_ipywidgets_js``.

2. **Failed notebooks fail every build.** myst-nb reports a failing cell as a warning only
   while it reads the notebook. Sphinx does not read an unchanged document again, so without
   this guard the *next* ``make book`` would succeed and publish the half-executed notebook. At
   the end of every build, each notebook whose recorded execution failed is reported again.
"""

from __future__ import annotations

import html.parser
import re
import urllib.parse
from pathlib import Path

from sphinx.util import logging

logger = logging.getLogger(__name__)

EXTERNAL = re.compile(r"^\s*(?:[a-z][a-z0-9+.-]*:)?//", re.IGNORECASE)
LOCAL_HOSTS = {"127.0.0.1", "localhost"}


def _is_thebe(asset) -> bool:
    filename = str(getattr(asset, "filename", asset) or "")
    body = str(getattr(asset, "attributes", {}).get("body", "") or "")
    return filename.endswith("sphinx-thebe.js") or "THEBE_JS_URL" in body


def _strip_and_check(app, pagename, templatename, context, doctree):
    for key in ("script_files", "css_files"):
        assets = context.get(key)
        if not assets:
            continue
        kept = [asset for asset in assets if not _is_thebe(asset)]
        for asset in kept:
            filename = str(getattr(asset, "filename", asset) or "")
            if EXTERNAL.match(filename):
                logger.warning(
                    "page %s loads %s from another host; the book must read offline "
                    "(vendor it under book/_static/vendor, see tools/offline_assets)",
                    pagename, filename, type="offline", subtype="external",
                )
        assets[:] = kept


def _report_failed_notebooks(app, exception):
    if exception is not None or app.env is None:
        return
    metadata = getattr(app.env, "nb_metadata", {}) or {}
    for docname in sorted(metadata):
        execution = metadata[docname].get("exec_data") or {}
        if execution and not execution.get("succeeded", True):
            logger.warning(
                "notebook %s failed to execute (%s); see _build/html/reports/%s.err.log. "
                "Fix it and build again: it is re-executed once its source changes",
                app.env.doc2path(docname, False), execution.get("error") or "error", docname,
                type="book", subtype="execution",
            )


class ResourceScanner(html.parser.HTMLParser):
    """Collect every URL the browser would fetch by itself (not the ones a reader clicks)."""

    FETCHING = {
        ("script", "src"), ("img", "src"), ("img", "srcset"), ("iframe", "src"), ("embed", "src"),
        ("source", "src"), ("source", "srcset"), ("video", "src"), ("video", "poster"), ("audio", "src"),
        ("object", "data"), ("input", "src"), ("track", "src"), ("image", "href"), ("use", "href"),
    }
    NAVIGATION_RELS = {"canonical", "prev", "next", "index", "search", "author", "license", "alternate", "help"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.urls: list[tuple[str, str]] = []  # (where, url)
        self._in = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name, value in attrs.items():
            if value is None:
                continue
            if (tag, name) in self.FETCHING:
                for part in value.split(","):
                    self.urls.append((f"<{tag} {name}>", part.strip().split(" ")[0]))
            if name == "style":
                self.urls += [(f"<{tag} style>", u) for u in css_urls(value)]
        if tag == "link" and attrs.get("href"):
            rels = set((attrs.get("rel") or "").lower().split())
            if not rels or not rels <= self.NAVIGATION_RELS:
                self.urls.append((f"<link rel={attrs.get('rel')}>", attrs["href"]))
        if tag == "script" and not attrs.get("src"):
            kind = (attrs.get("type") or "text/javascript").lower()
            if "javascript" in kind or kind == "module":
                self._in = "script"
        if tag == "style":
            self._in = "style"

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._in = None

    def handle_data(self, data):
        if self._in == "style":
            self.urls += [("<style>", u) for u in css_urls(data)]
        elif self._in == "script":
            self.urls += [("<script> body", u) for u in re.findall(r"""(?:https?:)?//[a-z0-9-]+(?:\.[a-z0-9-]+)+[^\s"'`)]*""", data, re.I)]


def css_urls(css: str) -> list[str]:
    found = re.findall(r"""url\(\s*['"]?([^'")\s]+)""", css)
    found += re.findall(r"""@import\s+['"]([^'"]+)""", css)
    return found


def is_external(url: str) -> bool:
    parsed = urllib.parse.urlsplit(url.strip())
    if parsed.scheme in ("", "data", "blob", "about", "javascript"):
        return bool(parsed.netloc) and parsed.hostname not in LOCAL_HOSTS  # "//host/x" is external
    if parsed.scheme == "file":
        return False
    return parsed.hostname not in LOCAL_HOSTS


def find_external_resources(html_dir) -> tuple[list[str], int]:
    """Scan every page and stylesheet under ``html_dir``; return (offending lines, URLs seen)."""
    html_dir = Path(html_dir)
    offending, seen = [], 0
    for page in sorted(html_dir.rglob("*.html")):
        scanner = ResourceScanner()
        scanner.feed(page.read_text(encoding="utf-8", errors="replace"))
        seen += len(scanner.urls)
        offending += [f"{page.relative_to(html_dir)}: {where} {url}" for where, url in scanner.urls if is_external(url)]
    for sheet in sorted((html_dir / "_static").rglob("*.css")):
        offending += [f"{sheet.relative_to(html_dir)}: url() {url}"
                      for url in css_urls(sheet.read_text(encoding="utf-8", errors="replace")) if is_external(url)]
    return offending, seen


def _scan_output(app, exception):
    if exception is not None or app.builder is None or app.builder.format != "html":
        return
    offending, _ = find_external_resources(app.outdir)
    for line in offending:
        logger.warning("%s is loaded from another host; the book must read offline (vendor it "
                       "under book/_static/vendor, see tools/offline_assets)", line,
                       type="offline", subtype="external")


def setup(app):
    # After sphinx-thebe and myst-nb have added their files (default priority 500).
    app.connect("html-page-context", _strip_and_check, priority=900)
    app.connect("build-finished", _report_failed_notebooks)
    app.connect("build-finished", _scan_output)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}

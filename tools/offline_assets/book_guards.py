"""Two guards for the book build, loaded by ``_config.yml`` (``sphinx.local_extensions``).

1. **Offline.** On every HTML page, drop sphinx-thebe's scripts (jupyter-book always loads
   sphinx-thebe, whose script would fetch thebe from unpkg.com when launched; this book has no
   thebe launch button), and warn -- an error under ``-W`` -- about any script or stylesheet that
   still points at another host, naming the page and the URL. A new extension or setting that
   pulls a file from a CDN thus fails the build instead of silently breaking the offline book.
   MathJax, require.js and the widget manager are served from ``_static/vendor``
   (tools/offline_assets/vendor.py) via ``mathjax_path`` and ``nb_ipywidgets_js``.

2. **Failed notebooks fail every build.** myst-nb reports a failing cell as a warning only
   while it reads the notebook. Sphinx does not read an unchanged document again, so without
   this guard the *next* ``make book`` would succeed and publish the half-executed notebook. At
   the end of every build, each notebook whose recorded execution failed is reported again.
"""

from __future__ import annotations

import re

from sphinx.util import logging

logger = logging.getLogger(__name__)

EXTERNAL = re.compile(r"^\s*(?:[a-z][a-z0-9+.-]*:)?//", re.IGNORECASE)


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


def setup(app):
    # After sphinx-thebe and myst-nb have added their files (default priority 500).
    app.connect("html-page-context", _strip_and_check, priority=900)
    app.connect("build-finished", _report_failed_notebooks)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}

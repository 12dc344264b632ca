"""Scan the built book for what a reader should never see: stderr, temporary paths, printed dicts.

A page of the book shows program output only where the output teaches. Three kinds of output
never do, and all three slip in easily when a chapter is edited:

* a **stderr block** (a warning, a progress bar, a traceback fragment): myst-nb renders it as
  ``<div class="output stderr ...">``;
* a **temporary path** (``/tmp/...``): it names a folder on the build machine that the reader
  does not have, and changes with every build;
* a **printed dict** (``print(settings)`` or a dict as a cell's last value): an output text
  block that parses as a Python dict literal, or a line with a dict repr in it such as
  ``profile cpu: {'steps': 40}``. Tables belong in styled DataFrames, sizes in sentences.

``python -m dmmlib.lessons.check_html _build/html`` prints one line per finding and exits 1 when
there is any (0 when the pages are clean, 2 when there is no built book): the Makefile's
``book`` target runs it after every build, and ``tests/test_book_html.py`` runs it on a build
that exists.
"""
from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

# Output blocks of myst-nb: <div class="output stream ...">, "output stderr", "output text_plain".
OUTPUT_KINDS = ("stderr", "stream", "text_plain")
TEMPORARY_PATH = re.compile(r"(?<![\w.])/tmp/")
# A dict repr inside a line: {'key': ...} or {"key": ...}.
DICT_REPR = re.compile(r"""\{\s*(?:'[^'\n]*'|"[^"\n]*")\s*:\s""")
SKIPPED_FOLDERS = ("_static", "_sources", "_images", "_sphinx_design_static")


@dataclass(frozen=True)
class Finding:
    """One thing a page must not show: its file, what kind, and the offending text (shortened)."""

    page: str
    kind: str  # "stderr" | "temporary path" | "printed dict"
    text: str

    def __str__(self) -> str:
        return f"{self.page}: {self.kind}: {self.text}"


class _OutputCollector(HTMLParser):
    """Collects the text of every output block (by kind) and the page's visible text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[tuple[str, str]] = []  # (kind, text)
        self.visible: list[str] = []
        self._div_depth = 0
        self._open: list[tuple[int, str, list[str]]] = []  # (depth at open, kind, pieces)
        self._hidden = 0  # inside <script> or <style>

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self._hidden += 1
        if tag != "div":
            return
        self._div_depth += 1
        classes = (dict(attrs).get("class") or "").split()
        if "output" in classes:
            kind = next((k for k in OUTPUT_KINDS if k in classes), None)
            if kind is not None:
                self._open.append((self._div_depth, kind, []))

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._hidden = max(0, self._hidden - 1)
        if tag != "div":
            return
        if self._open and self._open[-1][0] == self._div_depth:
            _, kind, pieces = self._open.pop()
            self.blocks.append((kind, "".join(pieces)))
        self._div_depth -= 1

    def handle_data(self, data):
        if self._hidden:
            return
        self.visible.append(data)
        for _, _, pieces in self._open:
            pieces.append(data)


def _is_dict_literal(text: str) -> bool:
    try:
        return isinstance(ast.literal_eval(text.strip()), dict)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False


def _short(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def scan_page(html: str, page: str = "<page>") -> list[Finding]:
    """The findings of one HTML page (see the module docstring for what counts)."""
    parser = _OutputCollector()
    parser.feed(html)
    parser.close()
    findings = []
    for kind, text in parser.blocks:
        if kind == "stderr" and text.strip():
            findings.append(Finding(page, "stderr", _short(text)))
            continue
        dict_line = next((line for line in text.splitlines() if DICT_REPR.search(line)), None)
        if _is_dict_literal(text) or dict_line is not None:
            findings.append(Finding(page, "printed dict", _short(dict_line or text)))
    visible = "".join(parser.visible)
    for match in TEMPORARY_PATH.finditer(visible):
        findings.append(Finding(page, "temporary path", _short(visible[max(0, match.start() - 40): match.end() + 60])))
    return findings


def book_pages(html_dir: Path) -> list[Path]:
    """The built pages under ``html_dir``, without Sphinx's static and source copies."""
    return sorted(p for p in Path(html_dir).rglob("*.html")
                  if not any(part in SKIPPED_FOLDERS for part in p.relative_to(html_dir).parts))


def scan_book(html_dir: Path) -> list[Finding]:
    """The findings of every page of a built book (``_build/html``)."""
    html_dir = Path(html_dir)
    findings = []
    for page in book_pages(html_dir):
        text = page.read_text(encoding="utf-8", errors="replace")
        findings.extend(scan_page(text, str(page.relative_to(html_dir))))
    return findings


def main(argv: list[str]) -> int:
    """``python -m dmmlib.lessons.check_html [HTML_DIR]``: 0 clean, 1 findings, 2 no built book."""
    html_dir = Path(argv[0] if argv else "_build/html")
    pages = book_pages(html_dir) if html_dir.is_dir() else []
    if not pages:
        print(f"error: no built pages under {html_dir} (build the book first: make book)", file=sys.stderr)
        return 2
    findings = scan_book(html_dir)
    for finding in findings:
        print(finding)
    print(f"check_html: {len(pages)} pages, {len(findings)} finding(s)"
          + ("" if not findings else " -- stderr, /tmp/ paths and printed dicts do not belong on a page"))
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

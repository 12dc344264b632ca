"""The built book shows no stderr, no /tmp/ paths and no printed dicts (dmmlib.lessons.check_html).

CI does not build the book, so the scan of the real pages runs only where a build exists
(`make book` runs the same scan after every build and fails on a finding). The scanner itself is
checked here on pages written the way myst-nb writes cell outputs, so that it can fail.
"""
from pathlib import Path

import pytest

from dmmlib.lessons.check_html import main, scan_book, scan_page

ROOT = Path(__file__).resolve().parents[1]
BUILT = ROOT / "_build" / "html"


def cell(kind: str, text: str) -> str:
    # the markup myst-nb 1.x gives a cell output (stream, stderr, text/plain)
    return (f'<div class="cell_output docutils container"><div class="output {kind} highlight-myst-ansi notranslate">'
            f'<div class="highlight"><pre><span></span>{text}\n</pre></div></div></div>')


def page(*outputs: str) -> str:
    return ("<html><head><script>var state = {'a': 1, 'path': '/tmp/x'};</script></head><body>"
            "<h1>A chapter</h1><p>Some prose.</p>" + "".join(outputs) + "</body></html>")


def kinds(html: str) -> list[str]:
    return [finding.kind for finding in scan_page(html, "chapter.html")]


def test_clean_page_has_no_findings():
    html = page(cell("stream", "recall@0.5: ours 0.812 vs random 0.104"),
                cell("text_plain", "array([1, 2, 3])"), cell("stream", "a set {1, 2} and braces {x}"))
    assert kinds(html) == []  # script content (widget state) is not what the reader sees


@pytest.mark.parametrize("text", [
    "{&#39;coin_examples&#39;: 20, &#39;lp_checks&#39;: 200}",          # print(SETTINGS), escaped as Sphinx does
    "profile cpu: {'coin_examples': 20, 'lp_checks': 200}",            # a dict inside a sentence
    '{\n  "network": "abc",\n  "top_k": 50\n}',                         # a JSON file printed as is
])
def test_printed_dict_is_found(text):
    assert kinds(page(cell("stream", text))) == ["printed dict"]
    assert kinds(page(cell("text_plain", text))) == ["printed dict"]


def test_stderr_and_temporary_paths_are_found():
    html = page(cell("stderr", "UserWarning: something"), cell("stream", "wrote 12 PNGs to /tmp/dmm-ch5-x1/results"))
    assert sorted(kinds(html)) == ["stderr", "temporary path"]
    assert kinds(page("<p>run it in <code>/tmp/easy</code></p>")) == ["temporary path"]
    assert kinds(page(cell("stream", "data/tmp/ is fine, so is $WORK/davis"))) == []


def test_command_line_reports_and_fails(tmp_path, capsys):
    assert main([str(tmp_path / "missing")]) == 2
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "clean.html").write_text(page(cell("stream", "ok")))
    assert main([str(tmp_path)]) == 0
    (tmp_path / "book" / "dirty.html").write_text(page(cell("stream", "{'a': 1}")))
    (tmp_path / "_static").mkdir()
    (tmp_path / "_static" / "skipped.html").write_text(page(cell("stderr", "not a page of the book")))
    assert main([str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "book/dirty.html: printed dict" in out and "skipped" not in out


@pytest.mark.skipif(not (BUILT / "book").is_dir(),
                    reason="no built book under _build/html (CI does not build it; `make book` runs this scan itself)")
def test_built_book_is_clean():
    findings = scan_book(BUILT)
    assert not findings, "the built book shows:\n" + "\n".join(map(str, findings))

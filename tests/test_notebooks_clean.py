"""Notebooks are committed without outputs: the book build and nbval execute them."""

import json
from pathlib import Path

import pytest

BOOK = Path(__file__).resolve().parents[1] / "book"
NOTEBOOKS = sorted(BOOK.glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_has_no_outputs(path):
    notebook = json.loads(path.read_text())
    dirty = [i for i, cell in enumerate(notebook["cells"])
             if cell["cell_type"] == "code" and (cell.get("outputs") or cell.get("execution_count"))]
    assert not dirty, f"{path.name}: cells {dirty} carry outputs; clear them before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_reads_the_profile_switch(path):
    notebook = json.loads(path.read_text())
    code = "\n".join("".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code")
    assert "active_profile()" in code, f"{path.name} does not read the DMM_PROFILE switch"


def test_chapters_use_only_public_names_of_dmmlib():
    """A chapter shows and calls the library's public code: no ``_private`` name, no removed module path."""
    import re

    private = re.compile(r"from dmmlib[\w.]* import [^\n]*\b_[a-z]\w*|\bdmmlib(?:\.\w+)*\._[a-z]\w*|"
                         r"\b(?:rep|real|toy|measure|training|matching|projections|fixtures)\._[a-z]\w*")
    offenders = []
    for path in NOTEBOOKS:
        notebook = json.loads(path.read_text(encoding="utf-8"))
        for cell in notebook["cells"]:
            if cell["cell_type"] == "code":
                offenders += [f"{path.name}: {m.group(0)}" for m in private.finditer("".join(cell["source"]))]
    assert not offenders, offenders

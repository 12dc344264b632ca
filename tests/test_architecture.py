"""The shape of dmmlib: layered imports, no cycles, argparse only at the command line, small functions.

The import contracts live in ``pyproject.toml`` (``[tool.importlinter]``) and are checked
with import-linter. Each check is also run once on a copy of the package with a deliberate
violation planted, so a contract that stopped checking anything would be caught too.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "dmmlib"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
MAX_FUNCTION_LINES = 60  # code lines, docstring excluded, outside dmmlib.lessons
MAX_MODULE_LINES = 500


def lint_imports(package_parent: Path) -> subprocess.CompletedProcess:
    """Run import-linter with the project's contracts on the ``dmmlib`` found in ``package_parent``."""
    env = dict(os.environ, PYTHONPATH=str(package_parent))
    return subprocess.run([str(LINT_IMPORTS), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
                          capture_output=True, text=True, cwd=package_parent, env=env)


def test_the_import_contracts_hold():
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


@pytest.mark.parametrize("module, planted, broken", [
    ("matching.py", "import dmmlib.lessons.settings\n", "layers"),          # the core reaching up to the book
    ("data/masks.py", "import dmmlib.model\n", "data knows nothing"),       # data depending on the network
    ("cost.py", "import dmmlib.data.masks\n", "the network knows nothing"),
    ("proposals/frames.py", "import dmmlib.proposals.sources\n", "proposals package"),
    ("evaluation/metrics.py", "import dmmlib.evaluation.davis\n", "cycles"),  # davis imports metrics
    ("tracking.py", "import argparse\n", "argparse"),
])
def test_a_planted_violation_breaks_a_contract(tmp_path, module, planted, broken):
    shutil.copytree(PACKAGE, tmp_path / "dmmlib", ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "dmmlib" / module
    source = target.read_text(encoding="utf-8")
    anchor = "from __future__ import annotations\n"
    target.write_text(source.replace(anchor, anchor + planted, 1), encoding="utf-8")
    done = lint_imports(tmp_path)
    assert done.returncode != 0, f"planting {planted.strip()!r} in {module} broke no contract:\n{done.stdout}"
    assert "BROKEN" in done.stdout and broken in done.stdout.lower()


def _code_lines(node: ast.AST) -> int:
    """Lines of a function without its docstring."""
    first = node.body[0]
    doc = first.end_lineno - first.lineno + 1 if (
        isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str)
    ) else 0
    return node.end_lineno - node.lineno + 1 - doc


def library_modules() -> list[Path]:
    return [p for p in PACKAGE.rglob("*.py") if "lessons" not in p.relative_to(PACKAGE).parts]


def test_library_functions_and_modules_stay_small():
    too_long = []
    for path in library_modules():
        source = path.read_text(encoding="utf-8")
        if len(source.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{path.relative_to(ROOT)}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _code_lines(node) > MAX_FUNCTION_LINES:
                too_long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {_code_lines(node)} lines")
    assert not too_long, "split these:\n" + "\n".join(too_long)


def test_the_library_imports_dmmlib_modules_at_the_top():
    """Imports inside functions hide the dependency graph; only the command table loads lazily."""
    hidden = []
    for path in library_modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.ImportFrom) and (inner.module or "").startswith("dmmlib"):
                        hidden.append(f"{path.relative_to(ROOT)}:{inner.lineno} from {inner.module}")
                    if isinstance(inner, ast.Import) and any(a.name.startswith("dmmlib") for a in inner.names):
                        hidden.append(f"{path.relative_to(ROOT)}:{inner.lineno} import dmmlib...")
    assert not hidden, "\n".join(hidden)


def test_the_public_api_is_importable_and_documented():
    import dmmlib

    undocumented = [name for name in dmmlib.__all__ if callable(getattr(dmmlib, name)) and not getattr(dmmlib, name).__doc__]
    assert not undocumented, f"public names without a docstring: {undocumented}"

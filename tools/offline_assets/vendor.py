"""Copy the browser scripts the book needs from node_modules into book/_static/vendor/.

Run by ``make`` after ``npm ci`` in this folder. The rendered book then loads
MathJax, require.js and the Jupyter-widgets embed manager from ``_static/vendor``
instead of from CDNs, so it reads with no network.

Layout written (git-ignored, rebuilt from scratch each run, then swapped in whole):

    vendor/mathjax/           MathJax 3 ``es5`` folder (tex-mml-chtml.js, its lazily loaded
                              components and the CHTML woff-v2 fonts)
    vendor/requirejs/require.js
    vendor/html-manager/      @jupyter-widgets/html-manager ``dist/embed-amd.js`` (the AMD
                              bundle that defines @jupyter-widgets/base, /controls and
                              /html-manager itself, so standard ipywidgets render without
                              fetching modules) plus the font files it references
    vendor/VERSIONS.txt       the exact package versions copied
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
MODULES = HERE / "node_modules"
DEST = ROOT / "book" / "_static" / "vendor"

FONT_SUFFIXES = (".woff2", ".woff", ".ttf", ".eot", ".svg")


def _package(name: str) -> Path:
    folder = MODULES / name
    if not (folder / "package.json").is_file():
        sys.exit(f"error: {folder} is missing; run `npm ci` in {HERE} first (or `make setup`)")
    return folder


def _version(folder: Path) -> str:
    return json.loads((folder / "package.json").read_text())["version"]


def _require(path: Path) -> Path:
    if not path.is_file():
        sys.exit(f"error: expected file {path} is missing from the npm package")
    return path


def build(stage: Path) -> list[str]:
    versions = []

    mathjax = _package("mathjax")
    _require(mathjax / "es5" / "tex-mml-chtml.js")
    shutil.copytree(mathjax / "es5", stage / "mathjax")
    versions.append(f"mathjax {_version(mathjax)}")

    requirejs = _package("requirejs")
    (stage / "requirejs").mkdir()
    shutil.copy2(_require(requirejs / "require.js"), stage / "requirejs" / "require.js")
    versions.append(f"requirejs {_version(requirejs)}")

    manager = _package("@jupyter-widgets/html-manager")
    dist = manager / "dist"
    (stage / "html-manager").mkdir()
    shutil.copy2(_require(dist / "embed-amd.js"), stage / "html-manager" / "embed-amd.js")
    # webpack emitted the Font Awesome / Lato fonts beside the bundle under hashed names and
    # the bundle's CSS points at them relative to its own location.
    for font in sorted(dist.iterdir()):
        if font.suffix in FONT_SUFFIXES:
            shutil.copy2(font, stage / "html-manager" / font.name)
    versions.append(f"@jupyter-widgets/html-manager {_version(manager)}")

    (stage / "VERSIONS.txt").write_text("\n".join(versions) + "\n")
    return versions


def main() -> int:
    DEST.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the destination, then swap: a failed run never leaves half a vendor folder.
    stage = Path(tempfile.mkdtemp(prefix=".vendor-", dir=DEST.parent))
    old = DEST.parent / f".vendor-old-{stage.name}"
    try:
        stage.chmod(0o755)  # mkdtemp makes it private; a web server must be able to read it
        versions = build(stage)
        if DEST.exists():
            DEST.rename(old)
        stage.rename(DEST)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    print(f"vendored into {DEST.relative_to(ROOT)}: {', '.join(versions)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Every chapter of book/ runs in the smoke profile (nbval, ``--nbval-lax``: each cell must run, and the
cells that check a claim end in an ``assert``), in reading order, on one kernel per notebook.

The notebooks run in a pytest of their own (a subprocess), so that ``make test``'s two pytest-xdist
workers can run this chain beside the other tests without splitting a notebook's cells between
workers; the chapters share the smoke profile's caches under ``data/`` (later chapters read what
earlier ones trained). A failure shows nbval's report of the failing cell.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_every_notebook_runs_in_the_smoke_profile():
    notebooks = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "book").glob("[0-9][0-9]_*.ipynb"))
    assert len(notebooks) >= 12
    env = dict(os.environ, DMM_PROFILE="smoke",
               PYTHONPATH=os.pathsep.join(p for p in [str(ROOT), os.environ.get("PYTHONPATH", "")] if p))
    env.pop("DMM_DRY_RUN", None)
    done = subprocess.run([sys.executable, "-m", "pytest", *notebooks, "--nbval-lax", "-p", "no:cacheprovider", "-q"],
                          cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout[-20000:] + done.stderr[-5000:]
    assert " passed" in done.stdout.splitlines()[-1]

"""Where datasets and experiment results live on disk.

``data_dir()`` is ``$DMM_DATA_DIR`` if set, else ``data/`` of the source checkout,
else ``./data``: datasets (``data/DAVIS``, ``data/youtube-vos``, ``data/SegTrackv2``),
the generated synthetic benchmark (``data/synthetic-<profile>``) and cached runs
(``data/runs``) all go there. A dry run (``DMM_DRY_RUN=1``, :mod:`dmmlib.profiles`) uses
``<data dir>/dry-run`` instead: its tiny models, caches and results never meet a real run's.
"""

from __future__ import annotations

import os
from pathlib import Path

from dmmlib.profiles import dry_run

DATA_DIR_ENV_VAR = "DMM_DATA_DIR"


DRY_RUN_FOLDER = "dry-run"


def data_dir() -> Path:
    """Where datasets live: ``$DMM_DATA_DIR``, else ``data/`` in the source checkout, else ``./data``.

    In a dry run, the ``dry-run`` folder inside it (a dry run's cache keys hash capped settings,
    but the synthetic benchmark's folder, the default model and the stored results are named by
    the profile alone: a folder of their own keeps them apart from a real gpu run's).
    """
    value = os.environ.get(DATA_DIR_ENV_VAR, "").strip()
    checkout = Path(__file__).resolve().parents[2]
    if value:
        base = Path(value).expanduser()
    elif (checkout / "pyproject.toml").is_file():
        base = checkout / "data"
    else:
        base = Path.cwd() / "data"
    return base / DRY_RUN_FOLDER if dry_run() else base


def runs_dir() -> Path:
    """Where cached experiment runs live: ``<data_dir()>/runs``."""
    return data_dir() / "runs"

"""Where datasets and experiment results live on disk.

``data_dir()`` is ``$DMM_DATA_DIR`` if set, else ``data/`` of the source checkout,
else ``./data``: datasets (``data/DAVIS``, ``data/youtube-vos``, ``data/SegTrackv2``),
the generated synthetic benchmark (``data/synthetic-<profile>``) and cached runs
(``data/runs``) all go there.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV_VAR = "DMM_DATA_DIR"


def data_dir() -> Path:
    """Where datasets live: ``$DMM_DATA_DIR``, else ``data/`` in the source checkout, else ``./data``."""
    value = os.environ.get(DATA_DIR_ENV_VAR, "").strip()
    if value:
        return Path(value).expanduser()
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file():
        return checkout / "data"
    return Path.cwd() / "data"


def runs_dir() -> Path:
    """Where cached experiment runs live: ``<data_dir()>/runs``."""
    return data_dir() / "runs"

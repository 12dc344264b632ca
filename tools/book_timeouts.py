"""The book build's per-cell time limit, by profile (loaded by ``_config.yml``, ``sphinx.local_extensions``).

``_config.yml``'s ``execute.timeout`` is one number for every profile, but a gpu-profile
build that did not run ``python -m dmmlib.lessons.run all`` first trains its models inside
its cells, for hours. When the configuration is read, this extension sets myst-nb's
``nb_execution_timeout`` to ``dmmlib.lessons.settings.cell_timeout($DMM_PROFILE)``;
``$DMM_CELL_TIMEOUT`` (seconds) overrides it for one build.
"""

from __future__ import annotations

import os

from sphinx.util import logging

from dmmlib.errors import DMMInputError
from dmmlib.lessons.settings import cell_timeout
from dmmlib.profiles import active_profile

logger = logging.getLogger(__name__)

TIMEOUT_ENV_VAR = "DMM_CELL_TIMEOUT"


def build_timeout() -> int:
    """Seconds a cell may run in this build: ``$DMM_CELL_TIMEOUT``, else the active profile's limit."""
    value = os.environ.get(TIMEOUT_ENV_VAR, "").strip()
    if not value:
        return cell_timeout(active_profile())
    if not value.isdigit() or int(value) < 1:
        raise DMMInputError(f"environment variable {TIMEOUT_ENV_VAR}={value!r}; expected a number of seconds >= 1")
    return int(value)


def _set_timeout(app, config):
    config.nb_execution_timeout = build_timeout()
    logger.info("per-cell timeout: %d s (profile %s)", config.nb_execution_timeout, active_profile())


def setup(app):
    app.connect("config-inited", _set_timeout)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}

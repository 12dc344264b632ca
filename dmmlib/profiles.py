"""The one switch that sizes every experiment: ``DMM_PROFILE``.

* ``smoke`` -- continuous integration: each notebook runs in seconds.
* ``cpu``   -- the default book build on a 2-core laptop: faithful enough to
  show every result, the whole book well under 30 minutes.
* ``gpu``   -- the full reproduction on a GPU workstation.

Modules keep their own per-profile settings as a mapping
``{"smoke": ..., "cpu": ..., "gpu": ...}`` and read them with
:func:`by_profile`, so no notebook copies a number that depends on the profile.
"""

from __future__ import annotations

import os
from typing import Mapping, TypeVar

from dmmlib.errors import DMMInputError

PROFILE_ENV_VAR = "DMM_PROFILE"
PROFILES = ("smoke", "cpu", "gpu")
DEFAULT_PROFILE = "cpu"

T = TypeVar("T")


def active_profile() -> str:
    """Return the profile named by ``$DMM_PROFILE`` (default ``cpu``).

    Raises :class:`DMMInputError` for any value that is not a known profile,
    rather than silently falling back to a default.
    """
    value = os.environ.get(PROFILE_ENV_VAR, "").strip()
    if not value:
        return DEFAULT_PROFILE
    if value not in PROFILES:
        raise DMMInputError(
            f"environment variable {PROFILE_ENV_VAR}={value!r} is not a known profile; "
            f"expected one of {', '.join(PROFILES)}"
        )
    return value


def by_profile(settings: Mapping[str, T], profile: str | None = None) -> T:
    """Pick the entry of ``settings`` for ``profile`` (default: the active one).

    ``settings`` must have one entry per profile; a missing entry is a
    programming error in ``dmmlib`` and is reported as such.
    """
    name = active_profile() if profile is None else profile
    if name not in PROFILES:
        raise DMMInputError(f"profile={name!r} is not a known profile; expected one of {', '.join(PROFILES)}")
    missing = [p for p in PROFILES if p not in settings]
    if missing:
        raise KeyError(f"per-profile settings lack an entry for {missing}")
    return settings[name]

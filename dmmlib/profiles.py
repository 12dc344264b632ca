"""The one switch that sizes every experiment: ``DMM_PROFILE``.

* ``smoke`` -- continuous integration: each notebook runs in seconds.
* ``cpu``   -- the default book build on a 2-core laptop: faithful enough to
  show every result, the whole book within 30 minutes (12.8 measured from an empty data/, 2026-11-30).
* ``gpu``   -- the full reproduction on a GPU workstation.

Modules keep their own per-profile settings as a mapping
``{"smoke": ..., "cpu": ..., "gpu": ...}`` and read them with
:func:`by_profile`, so no notebook copies a number that depends on the profile.

The dry run (``DMM_DRY_RUN=1``, gpu profile only): every ``by_profile`` lookup of the gpu
profile gives the gpu entry *capped* at the smoke entry (:func:`capped`: counts, sizes,
steps, videos, seeds and draws no larger than smoke's; architectures, weights, rates, flags
and every other choice stay the gpu profile's), so a CPU machine runs every branch the gpu
profile takes -- its configs, its R50 networks, its cache keys, its resume paths and its
timeouts -- in minutes. ``dmmlib.data.paths.data_dir`` puts a dry run's files in a folder of
their own, so a dry run never serves its tiny results to a real gpu build.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, TypeVar

from dmmlib.errors import DMMInputError

PROFILE_ENV_VAR = "DMM_PROFILE"
PROFILES = ("smoke", "cpu", "gpu")
DEFAULT_PROFILE = "cpu"
DRY_RUN_ENV_VAR = "DMM_DRY_RUN"

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
    if name == "gpu" and dry_run():
        return capped(settings["gpu"], settings["smoke"])
    return settings[name]


def dry_run() -> bool:
    """Whether ``$DMM_DRY_RUN`` asks for a dry run (``1``; unset, empty or ``0``: no).

    Only the gpu profile has a dry run (:func:`by_profile`); any other value is an error,
    not silently "no".
    """
    value = os.environ.get(DRY_RUN_ENV_VAR, "").strip()
    if value not in ("", "0", "1"):
        raise DMMInputError(f"environment variable {DRY_RUN_ENV_VAR}={value!r}; expected 1 (a dry run) or 0")
    return value == "1"


def smoke_sized(profile: str | None = None) -> bool:
    """Whether the experiments run at smoke sizes: the smoke profile, or a dry run of the gpu profile.

    Checks of a paper's claim that need more than a handful of steps, videos or seeds to hold
    are skipped when this is true (the code paths still run).
    """
    name = active_profile() if profile is None else profile
    return name == "smoke" or (name == "gpu" and dry_run())


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def capped(real: T, small: Any) -> T:
    """``real`` (a gpu setting) with its sizes capped at ``small`` (the smoke setting of the same name).

    * an ``int`` becomes ``min(real, small)``; ``None`` ("all", no limit) becomes ``small``;
    * a sequence of numbers: element by element if both have the same length (a frame size),
      else ``small`` (a list of seeds, a grid of values: smoke's shorter list);
    * a dict or a dataclass: field by field (keys smoke lacks keep the gpu value);
    * everything else -- floats (rates, weights), booleans, strings (architectures, weights,
      losses), sequences of strings (feature levels) -- keeps the gpu value.
    """
    if isinstance(real, bool) or isinstance(small, bool):
        return real
    if isinstance(real, int) and isinstance(small, int):
        return min(real, small)
    if real is None and isinstance(small, int):
        return small
    if isinstance(real, (list, tuple)) and isinstance(small, (list, tuple)):
        if not (all(map(_is_number, real)) and all(map(_is_number, small))):
            return real
        if len(real) != len(small):
            return small
        return type(real)(capped(a, b) for a, b in zip(real, small))
    if isinstance(real, Mapping) and isinstance(small, Mapping):
        return type(real)({k: capped(v, small[k]) if k in small else v for k, v in real.items()})
    if dataclasses.is_dataclass(real) and not isinstance(real, type) and type(small) is type(real):
        return dataclasses.replace(real, **{f.name: capped(getattr(real, f.name), getattr(small, f.name))
                                            for f in dataclasses.fields(real) if f.init})
    return real

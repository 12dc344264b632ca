"""The facts ``python -m dmmlib info`` prints: versions, the active profile and the torch device."""

from __future__ import annotations

import os
import platform

import numpy
import torch
import torchvision

from dmmlib import __version__
from dmmlib.device import pick_device
from dmmlib.profiles import PROFILE_ENV_VAR, active_profile


def _profile_line() -> str:
    """The active profile and where it comes from: ``$DMM_PROFILE`` only when that is set."""
    if os.environ.get(PROFILE_ENV_VAR, "").strip():
        return f"{active_profile()} (from ${PROFILE_ENV_VAR})"
    return f"{active_profile()} (the default; set ${PROFILE_ENV_VAR} to smoke, cpu or gpu to change it)"


def describe() -> dict[str, str]:
    """The facts ``info`` prints, as a dict (also handy in notebooks)."""
    facts = {
        "dmmlib": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "profile": _profile_line(),
        "device": str(pick_device()),
        "torch threads": str(torch.get_num_threads()),
    }
    if torch.cuda.is_available():
        facts["gpu"] = torch.cuda.get_device_name(0)
    return facts

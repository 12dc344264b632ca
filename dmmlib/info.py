"""``python -m dmmlib info``: versions, the active profile and the torch device."""

from __future__ import annotations

import argparse
import os
import platform

from dmmlib import __version__
from dmmlib.profiles import PROFILE_ENV_VAR, active_profile


def pick_device(device: str = "auto") -> "torch.device":  # noqa: F821
    """Resolve ``"auto"`` to CUDA (``cuda:$LOCAL_RANK`` under torchrun), then Apple MPS, then CPU; pass other names through."""
    import torch

    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        # under torchrun each process owns the GPU of its LOCAL_RANK, not GPU 0
        local_rank = os.environ.get("LOCAL_RANK")
        return torch.device("cuda", int(local_rank)) if local_rank and local_rank.isdigit() else torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def describe() -> dict[str, str]:
    """The facts ``info`` prints, as a dict (also handy in notebooks)."""
    import numpy
    import torch
    import torchvision

    facts = {
        "dmmlib": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "profile": f"{active_profile()} (from ${PROFILE_ENV_VAR})",
        "device": str(pick_device()),
        "torch threads": str(torch.get_num_threads()),
    }
    if torch.cuda.is_available():
        facts["gpu"] = torch.cuda.get_device_name(0)
    return facts


def configure(parser: argparse.ArgumentParser) -> None:
    del parser  # no options


def main(args: argparse.Namespace) -> int:
    del args
    facts = describe()
    width = max(map(len, facts))
    for key, value in facts.items():
        print(f"{key:<{width}}  {value}")
    return 0

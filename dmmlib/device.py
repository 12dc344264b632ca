"""Which torch device to run on: :func:`pick_device` is the one place that decides."""

from __future__ import annotations

import os

import torch


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """Resolve ``"auto"`` to CUDA (``cuda:$LOCAL_RANK`` under torchrun), then Apple MPS, then CPU; pass other names through."""
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

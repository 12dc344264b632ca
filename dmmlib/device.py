"""Which torch device to run on, and how to run fast there: the one place that decides.

* :func:`pick_device` -- ``"auto"``: CUDA (the GPU of ``LOCAL_RANK`` under torchrun), then MPS, then CPU.
* :func:`speed_settings` -- TF32 matrix products and convolutions, ``cudnn.benchmark``: switched on
  here, once, for a CUDA device (what the tracker, training and prediction call).
* :data:`AMP_DTYPES`, :func:`check_amp`, :func:`autocast` -- optional mixed precision (bf16 / fp16
  autocast), off by default; :func:`full_precision` switches it off again where float32 matters
  (the cost of Eq. 1 and Alg. 1: :mod:`dmmlib.model` runs them in float32).
* :func:`to_device` -- a host tensor to the device, non-blocking from pinned memory; uint8 frames
  travel as bytes and become float [0, 1] on the device (:func:`frames_to_device`).
* :func:`any_on_host` -- the library's one way to read a yes/no from a device tensor. Each call is
  a device -> host synchronisation, so library code calls it only at a few explicit checks.
"""

from __future__ import annotations

import contextlib
import os

import torch
from torch._subclasses.fake_tensor import FakeTensor

from dmmlib.errors import DMMInputError

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


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


def speed_settings(device: torch.device) -> None:
    """On CUDA: TF32 for float32 matrix products and convolutions, and ``cudnn.benchmark``.

    TF32 keeps float32's range with a 10-bit mantissa inside the tensor cores (Ampere and later):
    the backbone and the refinement head are convolutions, where it is the usual speed-up.
    ``cudnn.benchmark`` picks the fastest convolution algorithm per input size; tracking and
    training run at one size, so the search is paid once. Nothing changes on a CPU or MPS device.
    """
    if torch.device(device).type != "cuda":
        return
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True


def check_amp(amp: str | None, what: str = "amp") -> str | None:
    """``amp`` (None, "bf16" or "fp16") checked; a :class:`DMMInputError` names ``what`` otherwise."""
    if amp is not None and amp not in AMP_DTYPES:
        raise DMMInputError(f"{what}={amp!r}; expected null (float32), {' or '.join(map(repr, AMP_DTYPES))}")
    return amp


def autocast(device: torch.device, amp: str | None):
    """``torch.autocast`` to ``amp``'s dtype on ``device``, or a no-op context for ``amp=None``."""
    if check_amp(amp) is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=AMP_DTYPES[amp])


def full_precision(device: torch.device):
    """Switch autocast off inside (if it is on for ``device``'s type): the code inside runs in its inputs' dtype."""
    kind = torch.device(device).type
    if kind in ("cpu", "cuda", "mps") and torch.is_autocast_enabled(kind):
        return torch.autocast(kind, enabled=False)
    return contextlib.nullcontext()


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` on ``device``; non-blocking when it sits in pinned host memory (a DataLoader with
    ``pin_memory=True`` puts it there), so the copy overlaps with work already queued on the GPU.

    A pageable tensor is copied plainly: pinning it first would cost a second copy.
    """
    device = torch.device(device)
    pinned = tensor.device.type == "cpu" and not isinstance(tensor, FakeTensor) and tensor.is_pinned()
    return tensor.to(device, non_blocking=pinned and device.type == "cuda")


def frames_to_device(frames: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Frames ``[..., 3, H, W]`` on ``device`` as float in [0, 1].

    uint8 frames cross to the device as bytes (a quarter of float32's traffic) and are scaled there;
    float frames are moved as they are.
    """
    moved = to_device(frames, device)
    if moved.dtype == torch.uint8:
        return moved.float().div_(255.0)
    return moved


def any_on_host(flags: torch.Tensor) -> bool:
    """Whether any element of ``flags`` is true, as a Python bool: a device -> host synchronisation.

    The library's checks that need a value from the device call this, so that the points where
    the host waits for a GPU are few and can be found by name. Under torch's ``FakeTensorMode``
    (tensors that carry a shape and a device but no values, which the tests use to trace device
    placement without a GPU) there is no value to read: the check reports nothing found.
    """
    if isinstance(flags, FakeTensor):
        return False
    return bool(flags.any())


def max_on_host(values: torch.Tensor, fake: float = 0.0) -> float:
    """The largest element of ``values`` as a Python float (NaN / inf propagate): a device -> host read.

    Like :func:`any_on_host`, the one named way to read a number back; under ``FakeTensorMode``
    there is no value, and ``fake`` is returned.
    """
    if isinstance(values, FakeTensor):
        return fake
    return float(values.amax())

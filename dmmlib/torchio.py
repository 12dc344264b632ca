"""Reading torch files safely: every checkpoint and weights file in dmmlib is loaded through :func:`load_torch_file`."""

from __future__ import annotations

import os
import pickle
import re

import torch

from dmmlib.errors import DMMInputError, existing_file


def _reason(error: Exception) -> str:
    """Why torch could not read a file, in our words: torch's advice to lift the safety check is never repeated."""
    text = str(error)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return (f"holds Python objects ({found.group(1)}) beyond tensors and plain data, which dmmlib never loads "
                "because loading them could run code; use a file written by dmmlib or a plain state dict")
    if isinstance(error, pickle.UnpicklingError) or "weights_only" in text:
        return ("is not a readable torch file: it is corrupt, truncated, or not written by torch.save "
                "(dmmlib reads only tensors and plain data from it)")
    first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    return f"is not a readable torch file (corrupt or truncated?): {first}"


def load_torch_file(path: str | os.PathLike, what: str, map_location="cpu"):
    """``torch.load(path, weights_only=True)`` with clear errors naming ``what`` and the file.

    A missing file, a folder, or one torch cannot read (truncated, corrupt, foreign, or holding
    objects that ``weights_only`` refuses), raises :class:`DMMInputError`.
    """
    path = existing_file(path, what, "a torch file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for truncated or foreign files
        raise DMMInputError(f"{what} {path} {_reason(error)}") from None

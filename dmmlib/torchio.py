"""Reading torch files safely: every checkpoint and weights file in dmmlib is loaded through :func:`load_torch_file`."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from dmmlib.errors import DMMInputError


def load_torch_file(path: str | os.PathLike, what: str, map_location="cpu"):
    """``torch.load(path, weights_only=True)`` with clear errors naming ``what`` and the file.

    A missing file, or one torch cannot read (truncated, corrupt, foreign, or holding
    objects that ``weights_only`` refuses), raises :class:`DMMInputError`.
    """
    path = Path(path)
    if not path.is_file():
        raise DMMInputError(f"{what} {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for truncated or foreign files
        raise DMMInputError(f"{what} {path} is not a readable torch file (corrupt or truncated?): {error}") from None

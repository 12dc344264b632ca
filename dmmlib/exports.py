"""Lazy exports: a package lists ``name -> module`` and the module is imported on first use.

``import dmmlib`` (and ``dmmlib.data``, ``dmmlib.proposals``, ``dmmlib.evaluation``) stays
cheap -- no torch, no OpenCV -- while ``from dmmlib import dmm_match`` still works.
"""

from __future__ import annotations

import importlib
from typing import Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` exporting each name from the module ``exports`` maps it to."""

    def __getattr__(name: str):
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__

"""Results the chapters share: measured once per profile, stored as JSON, read by every chapter that cites them.

A chapter that measures something another chapter also reports (chapter 3's agreement
with Hungarian, chapter 4's learning curves; both cited by the report card) computes it
through :func:`remember`: the first call runs the experiment and stores the result under
``data/runs/book-<profile>/<name>-<key>.json``; later calls read it. The key hashes the
experiment's settings *and the source code of the modules that compute it*, so a change
to the library invalidates the stored figures instead of serving stale ones.

Stored values are JSON: numbers, strings, lists, dicts, pandas DataFrames, torch tensors
and dataclasses of ``dmmlib.lessons`` (no pickle: reading a result never runs code).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import inspect
import json
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, TypeVar

import pandas as pd
import torch

from dmmlib.data.paths import runs_dir
from dmmlib.errors import DMMInputError
from dmmlib.fileio import atomic_write_text
from dmmlib.profiles import active_profile

T = TypeVar("T")
_TYPE = "__dmm_type__"


def source_digest(*modules: ModuleType) -> str:
    """SHA-256 (16 hex digits) of the source files of ``modules``: changes when their code changes."""
    digest = hashlib.sha256()
    for module in modules:
        digest.update(inspect.getsource(module).encode("utf-8"))
    return digest.hexdigest()[:16]


def _encode(value: Any) -> Any:
    if isinstance(value, pd.DataFrame):
        return {_TYPE: "DataFrame", "split": _encode(value.to_dict(orient="split")), "index_name": value.index.name}
    if isinstance(value, torch.Tensor):
        return {_TYPE: "Tensor", "dtype": str(value.dtype).removeprefix("torch."), "data": value.tolist()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        kind = type(value)
        fields = {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {_TYPE: "dataclass", "class": f"{kind.__module__}:{kind.__qualname__}", "fields": fields}
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalars
        return value.item()
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    kind = value.get(_TYPE)
    if kind == "DataFrame":
        split = _decode(value["split"])
        frame = pd.DataFrame(split["data"], index=split["index"], columns=split["columns"])
        frame.index.name = value["index_name"]
        return frame
    if kind == "Tensor":
        return torch.tensor(value["data"], dtype=getattr(torch, value["dtype"]))
    if kind == "dataclass":
        module_name, qualname = value["class"].split(":")
        if not module_name.startswith("dmmlib.lessons."):
            raise DMMInputError(f"stored result names class {value['class']}; only dmmlib.lessons dataclasses are read")
        cls = getattr(importlib.import_module(module_name), qualname)
        return cls(**{k: _decode(v) for k, v in value["fields"].items()})
    return {k: _decode(v) for k, v in value.items()}


def stored_path(name: str, *, settings: dict | None = None, code: tuple[ModuleType, ...] = (),
                profile: str | None = None) -> Path:
    """Where :func:`remember` stores ``name``'s result for these settings and code (it exists once measured)."""
    profile = active_profile() if profile is None else profile
    key = hashlib.sha256(json.dumps({"settings": settings, "code": source_digest(*code)}, sort_keys=True,
                                    default=str).encode()).hexdigest()[:12]
    return runs_dir() / f"book-{profile}" / f"{name}-{key}.json"


def remember(name: str, compute: Callable[[], T], *, settings: dict | None = None,
             code: tuple[ModuleType, ...] = (), profile: str | None = None) -> T:
    """The result of ``compute()`` for this profile, computed once and then read from disk.

    ``name`` names the experiment; ``settings`` (JSON-able) and the source of the ``code``
    modules form the key, so other settings or changed code compute afresh.
    """
    path = stored_path(name, settings=settings, code=code, profile=profile)
    if path.is_file():
        try:
            return _decode(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, KeyError, TypeError, AttributeError):
            path.unlink()  # a result file we wrote but cannot read back: measure again
    value = compute()
    atomic_write_text(path, json.dumps(_encode(value)))
    return _decode(_encode(value))  # what a later build reads: the same types either way

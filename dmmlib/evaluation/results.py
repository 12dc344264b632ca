"""Results on disk: reading a method's label PNGs, writing score tables and JSON.

Every evaluator (DAVIS, YouTube-VOS, SegTrack v2) reads result frames through
:func:`read_result` and finds a video's folder with :func:`result_folder`, so a result
of the wrong size, or holding ids the sequence does not have, is refused the same way
everywhere; scores are written with :func:`write_scores_json` (NaN as ``null``), to a path
checked by :func:`check_json_path`.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from dmmlib.data.masks import VOID_LABEL, read_label_png
from dmmlib.errors import DMMInputError, existing_file
from dmmlib.fileio import atomic_write_text, check_destination


def result_folder(results_dir: str | os.PathLike, name: str) -> Path:
    """The results of video ``name``: ``<results>/Annotations/<name>`` (submission layout) or ``<results>/<name>``."""
    results_dir = Path(results_dir)
    for folder in (results_dir / "Annotations" / name, results_dir / name):
        if folder.is_dir():
            return folder
    raise DMMInputError(f"no results for video {name!r}: expected {results_dir / 'Annotations' / name}/ "
                        f"or {results_dir / name}/")


def read_result(path: str | os.PathLike, shape: tuple[int, int], annotation: str | os.PathLike | None = None,
                n_objects: int | None = None) -> np.ndarray:
    """A result label PNG uint8 ``[H, W]``, checked against the ground truth it is scored on.

    ``shape``: the annotation's ``(H, W)`` (nothing is resized); ``annotation``: that file,
    named in errors; ``n_objects``: the largest valid id (the void label 255 and larger ids
    are then errors, as results hold 0 and object ids only).
    """
    against = f" for annotation {annotation}" if annotation is not None else ""
    path = existing_file(path, "result", f"a label PNG{against}")
    labels = read_label_png(path, what="result")
    if labels.shape != tuple(shape):
        raise DMMInputError(
            f"result {path} is {labels.shape[0]}x{labels.shape[1]} (HxW) but the ground truth{against} is "
            f"{shape[0]}x{shape[1]}; results must have the annotation's size (nothing is resized)"
        )
    if n_objects is not None:
        top = int(labels.max(initial=0))
        if top == VOID_LABEL:
            raise DMMInputError(
                f"result {path} contains the void label 255; results hold 0 (background) and object ids 1..{n_objects}"
                f"{against}"
            )
        if top > n_objects:
            raise DMMInputError(
                f"result {path} contains object id {top} but the sequence has {n_objects} objects; "
                f"expected ids 0..{n_objects}{against}"
            )
    return labels


def finite_or_none(value):
    """``value`` with NaN as ``None`` (JSON has no NaN)."""
    return None if isinstance(value, float) and math.isnan(value) else value


def _clean(value):
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    if isinstance(value, Path):
        return str(value)
    return finite_or_none(value)


def check_json_path(path: str | os.PathLike, force: bool = False) -> Path:
    """Check where a scores JSON goes: a name ending in ``.json`` (so that it can never replace a result PNG
    or a table), not a folder, new unless ``force``, in a writable folder."""
    path = Path(path)
    if path.suffix.lower() != ".json":
        raise DMMInputError(f"JSON file {path} does not end in .json; expected a file name like scores.json")
    return check_destination(path, force, what="JSON file")


def scores_json_text(scores: dict) -> str:
    """``scores`` (nested dicts / lists of numbers and strings) as JSON text, NaN as null."""
    return json.dumps(_clean(scores), indent=1, ensure_ascii=False, allow_nan=False) + "\n"


def write_scores_json(scores: dict, path: str | os.PathLike, force: bool = False) -> Path:
    """Write ``scores`` as JSON (:func:`scores_json_text`) to ``path`` atomically.

    ``path`` is checked by :func:`check_json_path`: an existing file is refused unless ``force``.
    """
    path = check_json_path(path, force)
    atomic_write_text(path, scores_json_text(scores))
    return path

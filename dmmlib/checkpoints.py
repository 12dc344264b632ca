"""Checkpoint files: a trained DMMNet, and the state of a training run.

* :func:`save_checkpoint` / :func:`load_checkpoint` -- a :class:`~dmmlib.model.DMMNet`
  (its :class:`~dmmlib.model.ModelConfig` and weights) for ``track`` and ``predict``;
* :func:`save_training_checkpoint` / :func:`load_training_checkpoint` -- everything a
  training run needs to continue bit for bit (model, optimiser, step, RNG states,
  config), one file per saved step under ``RUN/checkpoints/``;
* :func:`publish_default_model` / :func:`default_model` -- the trained model ``track`` and
  ``predict`` use when no ``--checkpoint`` is given: ``data/runs/default-model-<profile>/``
  (the book's chapter 8 puts its trained DMM-Net there), with a record of where it came
  from and which proposal net it was trained with.

Everything is written atomically and read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch

from dmmlib.data.paths import runs_dir
from dmmlib.errors import DMMInputError
from dmmlib.fileio import atomic_path, atomic_write_text, refuse_overwrite
from dmmlib.model import DMMNet, ModelConfig
from dmmlib.profiles import active_profile
from dmmlib.torchio import load_torch_file

CHECKPOINT_FORMAT = "dmmlib.DMMNet"
CHECKPOINT_VERSION = 1
TRAINING_CHECKPOINT_FORMAT = "dmmlib-train-v1"
TRAINING_CHECKPOINT_DIR = "checkpoints"


def save_checkpoint(path: str | os.PathLike, model: DMMNet, extra: dict | None = None, overwrite: bool = False) -> Path:
    """Write ``model`` (config + weights) and ``extra`` to ``path`` atomically.

    ``extra`` must hold only what ``torch.load(weights_only=True)`` accepts (numbers,
    strings, lists, dicts, tensors). An existing file is kept unless ``overwrite``.
    """
    path = Path(path)
    refuse_overwrite(path, overwrite, what="checkpoint", flag="overwrite=True")
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": asdict(model.config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": {} if extra is None else extra,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu", return_extra: bool = False):
    """Read a checkpoint written by :func:`save_checkpoint` -> DMMNet in eval mode (and ``extra``).

    Raises DMMInputError for a missing, unreadable, foreign or incompatible file.
    """
    path = Path(path)
    payload = load_torch_file(path, "checkpoint", map_location)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise DMMInputError(f"checkpoint {path} is not a DMM-Net checkpoint (expected format={CHECKPOINT_FORMAT!r})")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise DMMInputError(f"checkpoint {path} has version {payload.get('version')}; this dmmlib reads version {CHECKPOINT_VERSION}")
    known = {f.name for f in fields(ModelConfig)}
    config = payload.get("config")
    if not isinstance(config, dict) or set(config) - known:
        raise DMMInputError(f"checkpoint {path} has an unknown model config: {sorted(set(config or {}) - known)}")
    config.setdefault("refine_mode", "plain")  # files written before the pass-through head had the paper's head
    model = DMMNet(ModelConfig(**config))
    try:
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, KeyError, TypeError) as error:
        raise DMMInputError(f"checkpoint {path} does not fit its own model config: {error}") from None
    model.to(map_location).eval()
    return (model, payload.get("extra", {})) if return_extra else model


def checkpoint_paths(run_dir: str | os.PathLike) -> list[Path]:
    """The run's checkpoints, oldest first."""
    folder = Path(run_dir) / TRAINING_CHECKPOINT_DIR
    return sorted(folder.glob("step_*.pt")) if folder.is_dir() else []


def _readable_older(paths: list[Path]) -> tuple[Path, int] | None:
    """The newest of ``paths`` (oldest first) that loads, with its step; None if none does."""
    for path in reversed(paths):
        try:
            return path, int(load_training_checkpoint(path)["step"])
        except (DMMInputError, KeyError, TypeError, ValueError):
            continue
    return None


def newest_training_checkpoint(run_dir: str | os.PathLike) -> tuple[Path, dict] | None:
    """``(path, state)`` of the run's newest checkpoint, None if it has none.

    An unreadable newest checkpoint is a :class:`DMMInputError` that names the older one that
    is still readable (if any) and how to resume from it; nothing is moved or deleted here.
    """
    paths = checkpoint_paths(run_dir)
    if not paths:
        return None
    newest = paths[-1]
    try:
        return newest, load_training_checkpoint(newest)
    except DMMInputError as error:
        older = _readable_older(paths[:-1])
        if older is None:
            advice = "no older checkpoint of this run is readable; pass --force to start the run over"
        else:
            advice = (f"the older checkpoint {older[0]} (step {older[1]}) is readable: move {newest.name} out of "
                      f"{newest.parent} (e.g. `mv {newest} {newest}.broken`) and run again with --resume to "
                      f"continue from step {older[1]}")
        raise DMMInputError(f"{error}; {advice}") from None


def load_training_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a training checkpoint with ``weights_only=True``; a foreign or broken file is a DMMInputError."""
    path = Path(path)
    state = load_torch_file(path, "training checkpoint", map_location)
    if not isinstance(state, dict) or state.get("format") != TRAINING_CHECKPOINT_FORMAT:
        raise DMMInputError(f"checkpoint {path} is not a dmmlib training checkpoint (format {TRAINING_CHECKPOINT_FORMAT})")
    if not isinstance(state.get("step"), int):
        raise DMMInputError(f"training checkpoint {path} has no step number; it is not a complete dmmlib checkpoint")
    return state


def save_training_checkpoint(run_dir: Path, state: dict, keep: int) -> Path:
    """Write ``state`` as ``RUN/checkpoints/step_XXXXXXX.pt`` atomically; keep the newest ``keep`` files."""
    path = run_dir / TRAINING_CHECKPOINT_DIR / f"step_{state['step']:07d}.pt"
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    for old in checkpoint_paths(run_dir)[:-keep]:
        old.unlink()
    return path


DEFAULT_MODEL_RECORD = "model.json"


def default_model_dir(profile: str | None = None) -> Path:
    """``data/runs/default-model-<profile>``: where the default trained model of ``track``/``predict`` lives."""
    return runs_dir() / f"default-model-{active_profile() if profile is None else profile}"


def publish_default_model(checkpoint: str | os.PathLike, profile: str | None = None, record: dict | None = None) -> Path:
    """Copy ``checkpoint`` (a :func:`save_checkpoint` file) to :func:`default_model_dir` with ``record`` beside it.

    ``record`` (JSON) says where the model came from, e.g. ``{"trained_by": ..., "proposal_checkpoint": ...}``.
    Returns the copied checkpoint's path.
    """
    load_checkpoint(checkpoint)  # refuse to publish a file track could not read
    folder = default_model_dir(profile)
    target = folder / "model.pt"
    with atomic_path(target) as tmp:
        shutil.copyfile(checkpoint, tmp)
    atomic_write_text(folder / DEFAULT_MODEL_RECORD, json.dumps({"checkpoint": str(target), **(record or {})}, indent=1))
    return target


def default_model(profile: str | None = None) -> tuple[Path, dict] | None:
    """``(checkpoint path, record)`` of the published default model of ``profile``, or None if there is none."""
    folder = default_model_dir(profile)
    target, record = folder / "model.pt", folder / DEFAULT_MODEL_RECORD
    if not (target.is_file() and record.is_file()):
        return None
    try:
        return target, json.loads(record.read_text(encoding="utf-8"))
    except ValueError:
        raise DMMInputError(f"{record} is not valid JSON; delete {folder} or publish the model again") from None


def capture_rng() -> dict:
    """The python, numpy and torch (CPU and CUDA) RNG states as tensors/lists (loadable with weights_only=True)."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    """Put back the RNG states of :func:`capture_rng`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])

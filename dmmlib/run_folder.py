"""A training run's folder: what a run may write there, where it must not be, and undoing a failed start.

``RUN/`` holds ``checkpoints/step_XXXXXXX.pt`` (:mod:`dmmlib.checkpoints`), ``train_log.jsonl``,
``config.yaml`` and ``model.pt`` -- :data:`RUN_ENTRIES`, the only entries a run writes,
replaces with ``--force`` or removes again. Anything else in the folder belongs to the user
and stays. :func:`prepare_run_dir` checks the folder before anything is built;
:class:`RunFiles` puts it back as it was when a new run fails before its first checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

from dmmlib.checkpoints import (
    TRAINING_CHECKPOINT_DIR,
    checkpoint_paths,
    newest_training_checkpoint,
)
from dmmlib.data.generate import default_root
from dmmlib.errors import DMMInputError
from dmmlib.fileio import (
    SetAside,
    check_apart,
    check_writable_folder,
    read_text_file,
    remove_empty,
)
from dmmlib.train_config import RESUMABLE_CHANGES, TrainConfig

LOG_NAME = "train_log.jsonl"
# what a run writes into its folder; --force replaces only these, anything else there stays
RUN_ENTRIES = (TRAINING_CHECKPOINT_DIR, LOG_NAME, "config.yaml", "model.pt")


def run_inputs(cfg) -> dict:
    """The folders and files a run of ``cfg`` (a TrainConfig) reads, by config key: the run folder lies apart from them."""
    data = cfg.data if cfg.data is not None else (default_root(cfg.profile) if cfg.dataset == "synthetic" else None)
    files = {key: getattr(cfg, key) for key in ("proposal_weights", "backbone_weights", "init_checkpoint")
             if getattr(cfg, key) is not None and os.path.exists(getattr(cfg, key))}
    return {"the data folder (config key `data` / --data)": data, "the proposal_cache": cfg.proposal_cache,
            **{f"the {key}": value for key, value in files.items()}}


def prepare_run_dir(run_dir: Path, resume: bool, force: bool, inputs: dict) -> tuple[Path, dict] | None:
    """Check the run folder; return the checkpoint to resume from, ``(path, state)``, or None.

    The folder must lie apart from the run's ``inputs`` (:func:`run_inputs`) and be writable;
    an existing non-empty one needs ``resume`` (which needs a readable newest checkpoint:
    :func:`dmmlib.checkpoints.newest_training_checkpoint`) or ``force``.
    """
    check_apart(run_dir, "run folder", inputs)
    if os.path.lexists(run_dir) and not run_dir.is_dir():
        raise DMMInputError(f"run folder {run_dir} is a file; expected a folder")
    check_writable_folder(run_dir, f"run folder {run_dir}")
    if resume:
        found = newest_training_checkpoint(run_dir)
        if found is not None:
            return found
    if run_dir.exists() and any(run_dir.iterdir()):
        if resume:
            raise DMMInputError(f"run folder {run_dir} holds no checkpoint to resume from; pass --force to start over")
        if not force:
            raise DMMInputError(
                f"run folder {run_dir} already exists; refusing to write into it (pass --resume to continue it "
                f"or --force to start over)"
            )
    return None


@dataclass
class RunFiles:
    """What a run changed in its folder, to undo it when the run fails before its first checkpoint."""

    run_dir: Path
    fresh: bool  # a new run (not a resumed one)
    previous: SetAside | None = None  # an earlier run's files, set aside by --force
    created: list[Path] = field(default_factory=list)  # folders this run made

    def failed(self) -> None:
        """A failed new run without a checkpoint leaves the folder as it was; one with a checkpoint stays (to resume)."""
        if self.fresh and not checkpoint_paths(self.run_dir):
            for name in RUN_ENTRIES:
                path = self.run_dir / name
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)
            if self.previous is not None:
                self.previous.restore()
            remove_empty(self.created)
        elif self.previous is not None:
            self.previous.discard()

    def succeeded(self) -> None:
        """The run is complete: the earlier run's files (set aside by --force) go."""
        if self.previous is not None:
            self.previous.discard()


def read_log(run_dir: str | os.PathLike) -> list[dict]:
    """The JSON-lines training log of a run as a list of dicts (empty if there is none yet)."""
    path = Path(run_dir) / LOG_NAME
    if not path.is_file():
        return []
    records = []
    for number, line in enumerate(read_text_file(path, "training log").splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            raise DMMInputError(f"training log {path}: line {number} is not JSON; expected one record per line") from None
    return records


def resume_point(cfg: TrainConfig, run_dir: Path, resume: bool, force: bool, talk: bool) -> dict | None:
    """The checked run folder's checkpoint to continue (None: a new run); ``talk`` says which one."""
    found = prepare_run_dir(run_dir, resume, force, run_inputs(cfg))  # every rank checks: none may hang on a refusal
    if found is None:
        return None
    path, checkpoint = found
    check_resume_config(cfg, checkpoint["config"], run_dir)
    if talk:
        print(f"resuming from step {int(checkpoint['step'])} ({path})", flush=True)
    return checkpoint


def check_resume_config(cfg: TrainConfig, saved: dict, run_dir: Path) -> None:
    """Refuse to resume with a config that changes the training (only :data:`RESUMABLE_CHANGES` may differ;
    under ``lr_schedule: cosine`` not the run's length either: the schedule spans it)."""
    now = cfg.to_dict()
    changed = sorted(k for k in now if k not in RESUMABLE_CHANGES and now[k] != saved.get(k))
    length = ("clips_per_epoch", "batch_size", "epochs", "max_steps")
    saved_total = replace(cfg, **{k: saved[k] for k in length if k in saved}).total_steps()
    cosine = now["lr_schedule"] == "cosine"
    if cosine and not changed and saved_total != cfg.total_steps():
        changed = [k for k in ("epochs", "max_steps") if now[k] != saved.get(k)]
    if changed:
        details = "; ".join(f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in changed)
        raise DMMInputError(
            f"run folder {run_dir}: the config differs from the checkpoint's in keys that change the "
            f"training ({details}); only {', '.join(sorted(RESUMABLE_CHANGES))} may change on --resume"
            + (" (but not the number of steps under lr_schedule: cosine, whose decay spans the run)" if cosine else "")
        )

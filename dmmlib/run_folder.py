"""A training run's folder: what a run may write there, where it must not be, and undoing a failed start.

``RUN/`` holds ``checkpoints/step_XXXXXXX.pt`` (:mod:`dmmlib.checkpoints`), ``train_log.jsonl``,
``config.yaml`` and ``model.pt`` -- :data:`RUN_ENTRIES`, the only entries a run writes,
replaces with ``--force`` or removes again. Anything else in the folder belongs to the user
and stays. :func:`prepare_run_dir` checks the folder before anything is built;
:class:`RunFiles` puts it back as it was when a new run fails before its first checkpoint.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from dmmlib.checkpoints import TRAINING_CHECKPOINT_DIR, checkpoint_paths, newest_training_checkpoint
from dmmlib.data.generate import default_root
from dmmlib.errors import DMMInputError
from dmmlib.fileio import SetAside, check_apart, check_writable_folder, remove_empty

LOG_NAME = "train_log.jsonl"
# what a run writes into its folder; --force replaces only these, anything else there stays
RUN_ENTRIES = (TRAINING_CHECKPOINT_DIR, LOG_NAME, "config.yaml", "model.pt")


def run_inputs(cfg) -> dict:
    """The folders and files a run of ``cfg`` (a TrainConfig) reads, by config key: the run folder lies apart from them."""
    data = cfg.data if cfg.data is not None else (default_root(cfg.profile) if cfg.dataset == "synthetic" else None)
    files = {key: getattr(cfg, key) for key in ("proposal_weights", "backbone_weights")
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

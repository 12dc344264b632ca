"""A training run's settings: :class:`TrainConfig`, read from YAML with ``--set`` overrides.

The configs shipped with dmmlib (``dmmlib/configs/*.yaml``: one per profile, and the
paper's DAVIS 2017 and YouTube-VOS settings of Sec. 4.1) are package data, found with
:func:`packaged_config` whether dmmlib is installed editable or from a wheel. A config
file sets a subset of the keys; the rest keep the defaults below. Every value is
checked, and an error names the file and the key.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import yaml

from dmmlib.device import AMP_DTYPES
from dmmlib.errors import DMMInputError
from dmmlib.fileio import read_text_file
from dmmlib.losses import DEFAULT_LOSS, LOSSES
from dmmlib.profiles import PROFILES, by_profile
from dmmlib.proposals.net import WEIGHT_KINDS, proposal_weights_kind

PROPOSAL_SOURCES = ("oracle-noisy", "network", "cache")
DATASETS = ("synthetic", "davis", "youtube-vos")
LR_SCHEDULES = ("constant", "cosine")
# Below this rate for every parameter a run fine-tunes (DAVIS: 1e-7, Sec. 4.1): a random network would not move.
FINE_TUNE_LR = 1e-5
# Keys that may change when a run is resumed: they do not alter the trajectory (the number of steps does,
# under lr_schedule: cosine; dmmlib.run_folder.check_resume_config refuses it then).
RESUMABLE_CHANGES = {"max_steps", "epochs", "checkpoint_every", "keep_checkpoints", "log_every", "num_workers", "device"}


@dataclass
class TrainConfig:
    """Every setting of a training run; ``configs/*.yaml`` set a subset, the rest default."""

    profile: str = "cpu"  # size of the synthetic benchmark when dataset is "synthetic"
    seed: int = 0
    dataset: str = "synthetic"  # one of DATASETS
    data: str | None = None  # dataset root; None: the synthetic benchmark's default folder
    split: str = "train"
    frame_size: list[int] = field(default_factory=lambda: [96, 160])  # [H, W] of the training clips
    max_objects: int = 3  # templates per clip (n); objects beyond it are ignored
    unroll: int = 2  # frames after the template frame that step() is unrolled over
    # At most this many frames tracked without gradient or loss before the unrolled ones (a "burn-in",
    # as in R2D2): each step draws 0..burn_in, so the head trains on ConvLSTM memory of the ages it has
    # in a long video, not only on memory 1..unroll frames old. Clips are 1 + burn_in + unroll frames.
    burn_in: int = 0
    clips_per_epoch: int = 64
    batch_size: int = 4
    epochs: int = 1
    max_steps: int | None = None  # stop early (None: epochs * clips_per_epoch // batch_size)
    lr_pretrained: float = 1e-4
    lr_random: float = 1e-3
    weight_decay: float = 0.0
    # "constant" (the paper's) or "cosine": every learning rate decays to 0 along half a cosine over the
    # run's total steps, so a short run ends with small steps instead of the last batches' noise
    lr_schedule: str = "constant"
    grad_clip: float | None = None  # max gradient norm (None: no clipping)
    loss: str = DEFAULT_LOSS  # one of dmmlib.losses.LOSSES
    assignment_loss_weight: float = 0.0
    assignment_min_iou: float = 0.5  # a GT-best proposal below this IoU gives no assignment target
    proposals: str = "oracle-noisy"  # one of PROPOSAL_SOURCES
    proposal_noise: int = 8  # distractor proposals per frame (oracle-noisy)
    proposal_jitter: float = 0.1  # box jitter as a fraction of the box size (oracle-noisy)
    proposal_cache: str | None = None  # folder of a ProposalCache (proposals: cache)
    proposal_weights: str | None = None  # ProposalNet weights (proposals: network): "coco" or a checkpoint path
    augment: bool = True  # random affine augmentation of the clips
    # scale, shift and flip only (no rotation or shear): boxes stay boxes, so cached proposals follow the clip
    augment_axis_aligned: bool = False
    checkpoint_every: int = 50
    keep_checkpoints: int = 2
    log_every: int = 1
    num_workers: int = 0
    device: str = "auto"
    ddp_find_unused_parameters: bool = False  # True if some parameters get no gradient in a step
    model: dict = field(default_factory=dict)  # overrides of dmmlib.model.default_config(profile)
    backbone_weights: str | None = None  # None (random init), "imagenet" or a local state_dict path
    # A trained DMMNet checkpoint (`RUN/model.pt` of an earlier run) to start every weight from: what
    # fine-tuning needs (davis2017.yaml); its architecture must match `model`.
    init_checkpoint: str | None = None
    amp: str | None = None  # mixed precision: null (float32), "bf16" or "fp16" autocast (fp16 with loss scaling)

    def total_steps(self) -> int:
        per_epoch = self.clips_per_epoch // self.batch_size
        total = self.epochs * per_epoch
        return total if self.max_steps is None else min(total, self.max_steps)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check_config(cfg: TrainConfig, source: str) -> None:
    def need(ok: bool, key: str, expected: str) -> None:
        if not ok:
            raise DMMInputError(f"{source}: {key}={getattr(cfg, key)!r} is invalid; expected {expected}")

    need(cfg.profile in PROFILES, "profile", f"one of {', '.join(PROFILES)}")
    need(cfg.dataset in DATASETS, "dataset", f"one of {', '.join(DATASETS)}")
    need(cfg.loss in LOSSES, "loss", f"one of {', '.join(LOSSES)}")
    need(cfg.lr_schedule in LR_SCHEDULES, "lr_schedule", f"one of {', '.join(LR_SCHEDULES)}")
    need(cfg.proposals in PROPOSAL_SOURCES, "proposals", f"one of {', '.join(PROPOSAL_SOURCES)}")
    need(isinstance(cfg.frame_size, (list, tuple)) and len(cfg.frame_size) == 2
         and all(isinstance(v, int) and v > 0 for v in cfg.frame_size), "frame_size", "[H, W] of positive integers")
    for key in ("max_objects", "unroll", "clips_per_epoch", "batch_size", "epochs", "checkpoint_every",
                "keep_checkpoints", "log_every"):
        need(isinstance(getattr(cfg, key), int) and getattr(cfg, key) >= 1, key, "an integer >= 1")
    for key in ("burn_in", "proposal_noise", "num_workers"):
        need(isinstance(getattr(cfg, key), int) and getattr(cfg, key) >= 0, key, "an integer >= 0")
    need(cfg.max_steps is None or (isinstance(cfg.max_steps, int) and cfg.max_steps >= 0), "max_steps",
         "null or an integer >= 0")
    need(cfg.clips_per_epoch >= cfg.batch_size, "clips_per_epoch", f">= batch_size={cfg.batch_size}")
    for key in ("lr_pretrained", "lr_random", "weight_decay", "assignment_loss_weight", "proposal_jitter"):
        need(isinstance(getattr(cfg, key), (int, float)) and getattr(cfg, key) >= 0, key, "a number >= 0")
    need(cfg.grad_clip is None or (isinstance(cfg.grad_clip, (int, float)) and cfg.grad_clip > 0), "grad_clip",
         "null or a number > 0")
    need(isinstance(cfg.model, dict), "model", "a mapping of ModelConfig arguments")
    need(cfg.amp is None or cfg.amp in AMP_DTYPES, "amp", f"null or one of {', '.join(AMP_DTYPES)}")
    need(cfg.init_checkpoint is not None or max(cfg.lr_pretrained, cfg.lr_random) >= FINE_TUNE_LR, "init_checkpoint",
         f"a trained DMMNet checkpoint when every learning rate is below {FINE_TUNE_LR:g} (lr_pretrained="
         f"{cfg.lr_pretrained:g}, lr_random={cfg.lr_random:g}): such rates fine-tune a trained model, and a random "
         f"network would not learn at them")
    if cfg.proposals == "network":
        need(cfg.proposal_weights is not None, "proposal_weights",
             '"coco" or the path of trained ProposalNet weights when proposals: network (an untrained one proposes noise)')
    if cfg.proposals == "cache":
        need(cfg.proposal_cache is not None, "proposal_cache", "the folder of a ProposalCache when proposals: cache")
        need(not cfg.augment or cfg.augment_axis_aligned, "augment",
             "false when proposals: cache, or augment_axis_aligned: true (cached proposals are warped along with "
             "an axis-aligned augmentation, but cannot follow a rotation or shear)")


def check_run_inputs(cfg: TrainConfig, proposal_source_given: bool = False, model_given: bool = False) -> None:
    """The files a run starts from, checked before it starts: ``init_checkpoint`` exists, and a
    ``proposals: network`` run has a usable proposal net -- COCO's heads used class-agnostically or
    trained heads, not a COCO backbone with random heads (:func:`~dmmlib.proposals.net.proposal_weights_kind`).
    Parts the caller passes itself (a model, a proposal source) are not checked."""
    if cfg.init_checkpoint is not None and not model_given and not Path(cfg.init_checkpoint).is_file():
        raise DMMInputError(
            f"init_checkpoint {cfg.init_checkpoint} does not exist; expected a DMMNet checkpoint to fine-tune "
            f"(the RUN/model.pt of a training run, e.g. with youtube-vos.yaml), or --set init_checkpoint=PATH")
    if cfg.proposals == "network" and not proposal_source_given:
        kind = proposal_weights_kind(cfg.proposal_weights)
        if kind in ("random", "untrained-heads"):
            raise DMMInputError(
                f"proposal_weights={cfg.proposal_weights!r} is {WEIGHT_KINDS[kind]}; expected 'coco' ({WEIGHT_KINDS['coco-merged']}) "
                f"or a trained proposal-net checkpoint")


def _parse_value(text: str) -> Any:
    return yaml.safe_load(text)


def config_from_dict(values: dict, source: str = "config") -> TrainConfig:
    """Build and validate a :class:`TrainConfig`; an unknown key is a :class:`DMMInputError` naming it."""
    if not isinstance(values, dict):
        raise DMMInputError(f"{source}: expected a mapping of settings at the top level")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise DMMInputError(f"{source}: unknown key {unknown[0]!r}; expected keys from: {', '.join(sorted(known))}")
    values = dict(values)
    if isinstance(values.get("frame_size"), tuple):
        values["frame_size"] = list(values["frame_size"])
    for key in ("lr_pretrained", "lr_random", "weight_decay", "assignment_loss_weight"):
        # YAML 1.1 reads "1e-4" (no dot) as a string; accept it as the number it means
        if isinstance(values.get(key), str):
            try:
                values[key] = float(values[key])
            except ValueError:
                pass
    cfg = TrainConfig(**values)
    _check_config(cfg, source)
    return cfg


def apply_overrides(values: dict, overrides: Sequence[str], source: str = "--set") -> dict:
    """Apply ``key=value`` strings (YAML values; ``model.key=value`` for nested keys) to a dict copy."""
    values = copy.deepcopy(values)
    for item in overrides:
        if "=" not in item:
            raise DMMInputError(f"{source} {item!r}: expected key=value")
        key, text = item.split("=", 1)
        value = _parse_value(text)
        if key.startswith("model."):
            values.setdefault("model", {})[key[len("model."):]] = value
        else:
            values[key] = value
    return values


def load_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a YAML training config, apply ``--set`` overrides, validate; errors name the file."""
    path = Path(path)
    text = read_text_file(path, "config file")
    try:
        values = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise DMMInputError(f"config file {path} is not valid YAML: {error}") from None
    if not isinstance(values, dict):
        raise DMMInputError(f"config file {path}: expected a mapping of settings at the top level")
    values = apply_overrides(values, overrides)
    return config_from_dict(values, source=f"config file {path}")


def packaged_config(name: str) -> Path:
    """The path of ``dmmlib/configs/<name>.yaml``, shipped inside the package (editable or wheel).

    ``name``: a profile (``smoke``, ``cpu``, ``gpu``) or a benchmark (``davis2017``, ``youtube-vos``).
    """
    resource = resources.files("dmmlib.configs") / f"{name}.yaml"
    if not resource.is_file():
        known = sorted(p.name[: -len(".yaml")] for p in resources.files("dmmlib.configs").iterdir()
                       if p.name.endswith(".yaml"))
        raise DMMInputError(f"no packaged config {name!r}; expected one of {', '.join(known)}")
    return Path(str(resource))


def config_path(name_or_path: str | os.PathLike) -> Path:
    """A config file: ``name_or_path`` if such a file exists, else the packaged config of that name."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.suffix or len(path.parts) > 1:
        raise DMMInputError(f"config file {path} does not exist")
    return packaged_config(str(name_or_path))


def profile_config_path(profile: str | None = None) -> Path:
    """The packaged ``<profile>.yaml`` for the given (default: active) profile."""
    return packaged_config(by_profile({p: p for p in PROFILES}, profile))


def profile_config(profile: str | None = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """The training config of a profile (what the chapters use)."""
    return load_config(profile_config_path(profile), overrides)

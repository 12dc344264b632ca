"""Training DMM-Net end to end through the matching layer (Sec. 4.1, "Fine-tune").

One training example is a *clip* of ``unroll + 1`` consecutive frames
``[T, 3, H, W]`` with labels ``[T, H, W]`` (from the data loader, with one random
affine augmentation shared by all frames). The ground-truth masks of the clip's
first frame are the templates (their features are computed on that frame), then
``model.step`` runs over the next ``unroll`` frames with the proposals of each,
carrying the tracking state (ConvLSTM memory, the matched mask used for the next
frame's IoU, the template features) from frame to frame. The loss of every
unrolled frame is back-propagated through the refinement head, the matching layer
(Alg. 1) and the matching features, so the cost matrix (Eq. 1) is learned. The
paper unrolls 2 steps (Table 4: 3 was no better and costs more memory).

Proposals come from one of three *sources* (config key ``proposals``):

* ``oracle-noisy`` -- :func:`dmmlib.proposals.proposals_from_labels` on the augmented
  labels: one jittered box + mask per object plus ``proposal_noise`` random
  distractors. Needs no proposal network; the smoke, cpu and gpu profiles use it.
* ``network`` -- a :class:`dmmlib.proposals.ProposalNet` (``proposal_weights``: ``"coco"`` or
  a trained checkpoint) run on every augmented frame; youtube-vos.yaml uses it.
* ``cache`` -- a :class:`dmmlib.proposals.ProposalCache` filled beforehand by the
  proposal network (``proposal_cache``: its folder). Cached proposals are for the
  *unaugmented* frames, so this source requires ``augment: false``; davis2017.yaml uses it.

Optimiser: Adam, ``lr_pretrained`` (1e-4) for weights loaded from a pretrained
model and ``lr_random`` (1e-3) for randomly initialised ones, as two parameter groups.

Runs are deterministic for a seed and resumable bit for bit (on CPU): every
``checkpoint_every`` steps the model, the optimiser, the step, the sampler position,
the python/numpy/torch RNG states and the config are written atomically to
``RUN/checkpoints/step_XXXXXXX.pt``; ``resume=True`` continues from the newest one.
Losses and metrics go to ``RUN/train_log.jsonl``, one JSON object per step; the
final DMMNet also goes to ``RUN/model.pt`` (:func:`dmmlib.model.save_checkpoint`
format, for ``python -m dmmlib predict --checkpoint RUN/model.pt``).

Multi-GPU: start the same command with ``torchrun --nproc_per_node=N -m dmmlib train ...``;
see :mod:`dmmlib.distributed` (each process trains ``batch_size // N`` clips per step,
gradients are averaged by DistributedDataParallel, only rank 0 writes files).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn as nn

from dmmlib import distributed
from dmmlib.errors import DMMInputError
from dmmlib.fileio import atomic_path, atomic_write_text, load_torch_file
from dmmlib.losses import DEFAULT_LOSS, LOSSES, assignment_loss, best_proposal, mask_iou, mask_loss
from dmmlib.profiles import PROFILES, by_profile

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
PROPOSAL_SOURCES = ("oracle-noisy", "network", "cache")
DATASETS = ("synthetic", "davis", "youtube-vos")
LOG_NAME = "train_log.jsonl"
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_FORMAT = "dmmlib-train-v1"
# Keys that may change when a run is resumed: they do not alter the trajectory.
RESUMABLE_CHANGES = {"max_steps", "epochs", "checkpoint_every", "keep_checkpoints", "log_every", "num_workers", "device"}


# ----------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------


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
    clips_per_epoch: int = 64
    batch_size: int = 4
    epochs: int = 1
    max_steps: int | None = None  # stop early (None: epochs * clips_per_epoch // batch_size)
    lr_pretrained: float = 1e-4
    lr_random: float = 1e-3
    weight_decay: float = 0.0
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
    checkpoint_every: int = 50
    keep_checkpoints: int = 2
    log_every: int = 1
    num_workers: int = 0
    device: str = "auto"
    ddp_find_unused_parameters: bool = False  # True if some parameters get no gradient in a step
    model: dict = field(default_factory=dict)  # overrides of dmmlib.model.default_config(profile)
    backbone_weights: str | None = None  # None (random init), "imagenet" or a local state_dict path

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
    need(cfg.proposals in PROPOSAL_SOURCES, "proposals", f"one of {', '.join(PROPOSAL_SOURCES)}")
    need(isinstance(cfg.frame_size, (list, tuple)) and len(cfg.frame_size) == 2
         and all(isinstance(v, int) and v > 0 for v in cfg.frame_size), "frame_size", "[H, W] of positive integers")
    for key in ("max_objects", "unroll", "clips_per_epoch", "batch_size", "epochs", "checkpoint_every",
                "keep_checkpoints", "log_every"):
        need(isinstance(getattr(cfg, key), int) and getattr(cfg, key) >= 1, key, "an integer >= 1")
    need(cfg.max_steps is None or (isinstance(cfg.max_steps, int) and cfg.max_steps >= 0), "max_steps",
         "null or an integer >= 0")
    need(cfg.clips_per_epoch >= cfg.batch_size, "clips_per_epoch", f">= batch_size={cfg.batch_size}")
    for key in ("lr_pretrained", "lr_random", "weight_decay", "assignment_loss_weight", "proposal_jitter"):
        need(isinstance(getattr(cfg, key), (int, float)) and getattr(cfg, key) >= 0, key, "a number >= 0")
    need(cfg.grad_clip is None or (isinstance(cfg.grad_clip, (int, float)) and cfg.grad_clip > 0), "grad_clip",
         "null or a number > 0")
    need(isinstance(cfg.proposal_noise, int) and cfg.proposal_noise >= 0, "proposal_noise", "an integer >= 0")
    need(isinstance(cfg.num_workers, int) and cfg.num_workers >= 0, "num_workers", "an integer >= 0")
    need(isinstance(cfg.model, dict), "model", "a mapping of ModelConfig arguments")
    if cfg.proposals == "network":
        need(cfg.proposal_weights is not None, "proposal_weights",
             '"coco" or the path of trained ProposalNet weights when proposals: network (an untrained one proposes noise)')
    if cfg.proposals == "cache":
        need(cfg.proposal_cache is not None, "proposal_cache", "the folder of a ProposalCache when proposals: cache")
        need(not cfg.augment, "augment", "false when proposals: cache (cached proposals fit the unaugmented frames)")


def _parse_value(text: str) -> Any:
    import yaml

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
    import yaml

    path = Path(path)
    if not path.is_file():
        raise DMMInputError(f"config file {path} does not exist")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise DMMInputError(f"config file {path} is not valid YAML: {error}") from None
    if not isinstance(values, dict):
        raise DMMInputError(f"config file {path}: expected a mapping of settings at the top level")
    values = apply_overrides(values, overrides)
    return config_from_dict(values, source=f"config file {path}")


def profile_config_path(profile: str | None = None) -> Path:
    """``configs/<profile>.yaml`` for the given (default: active) profile."""
    name = by_profile({p: p for p in PROFILES}, profile)
    return CONFIG_DIR / f"{name}.yaml"


def profile_config(profile: str | None = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """The training config of a profile (what the chapters use)."""
    return load_config(profile_config_path(profile), overrides)


# ----------------------------------------------------------------------------------------------
# Building the pieces: model, data, proposals
# ----------------------------------------------------------------------------------------------


def build_model(cfg: TrainConfig) -> nn.Module:
    """``DMMNet`` with the profile's defaults updated by ``cfg.model``; torch RNG seeded by ``cfg.seed``.

    Seeding here gives every DDP rank the same initial weights (DDP also broadcasts rank 0's).
    """
    from dmmlib.model import DMMNet, default_config

    torch.manual_seed(cfg.seed)
    try:
        model_config = default_config(cfg.profile, **cfg.model)
    except TypeError as error:
        raise DMMInputError(f"config key model: {error}") from None
    return DMMNet(model_config, backbone_weights=cfg.backbone_weights)


def pretrained_prefixes(cfg: TrainConfig) -> tuple[str, ...]:
    """Parameter-name prefixes loaded from pretrained weights: the backbone when ``backbone_weights`` is set."""
    return ("features.",) if cfg.backbone_weights is not None else ()


def build_dataset(cfg: TrainConfig, data_root: str | os.PathLike | None = None):
    """The clip dataset of ``cfg``: item ``i`` is a clip of ``unroll + 1`` frames, fixed by the seed and ``i``."""
    from dmmlib import data as vos

    root = data_root if data_root is not None else cfg.data
    if cfg.dataset == "synthetic":
        root = vos.ensure_synthetic(root=root, profile=cfg.profile, seed=0, progress=False)
        sequences = vos.DavisDataset(root, cfg.split)
    elif cfg.dataset == "davis":
        sequences = vos.DavisDataset(_need_root(root, cfg), cfg.split)
    else:
        sequences = vos.YouTubeVOSDataset(_need_root(root, cfg), cfg.split)
    sampler = vos.ClipSampler(
        sequences,
        clip_length=cfg.unroll + 1,
        seed=cfg.seed,
        size=tuple(cfg.frame_size),
        augment=vos.AffineAugment() if cfg.augment else None,
        max_objects=cfg.max_objects,
    )
    return vos.ClipDataset(sampler, cfg.clips_per_epoch)


def _need_root(root, cfg: TrainConfig) -> Path:
    if root is None:
        raise DMMInputError(f"dataset={cfg.dataset!r} needs a data root: set `data:` in the config or pass --data ROOT")
    return Path(root)


ProposalSource = Callable[[torch.Tensor, torch.Tensor, dict, np.random.Generator], Any]
"""``source(frame [3, H, W], labels [H, W], meta, rng) -> FrameProposals`` for one frame of one clip."""


def make_proposal_source(cfg: TrainConfig, device: torch.device | None = None) -> ProposalSource:
    """The proposal source named by ``cfg.proposals`` (see the module docstring)."""
    from dmmlib import proposals as props

    if cfg.proposals == "oracle-noisy":
        def oracle(frame, labels, meta, rng):
            del frame, meta
            return props.proposals_from_labels(
                labels.cpu().numpy().astype(np.uint8), n_noise=cfg.proposal_noise, jitter=cfg.proposal_jitter, rng=rng
            )
        return oracle
    if cfg.proposals == "network":
        net = props.ProposalNet(weights=cfg.proposal_weights, profile=cfg.profile).eval()
        if device is not None:
            net = net.to(device)

        def network(frame, labels, meta, rng):
            del labels, meta, rng
            with torch.no_grad():
                return net.propose(frame)
        return network
    cache = props.ProposalCache(cfg.proposal_cache)

    def cached(frame, labels, meta, rng):
        del labels, rng
        found = cache.get(meta["sequence"], meta["frame_id"])
        if found is None:
            raise DMMInputError(
                f"proposal cache {cfg.proposal_cache} has no proposals for {meta['sequence']} frame {meta['frame_id']}; "
                f"fill it with the proposals command first"
            )
        return found
    return cached


def _clip_parts(item) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Normalise a dataset item to ``(frames [T, 3, H, W] float, labels [T, H, W] long, meta)``."""
    if isinstance(item, dict):
        frames, labels = item["frames"], item["labels"]
        meta = {k: v for k, v in item.items() if k not in ("frames", "labels")}
    else:
        frames, labels = item[0], item[1]
        meta = item[2] if len(item) > 2 and isinstance(item[2], dict) else {}
    frames = torch.as_tensor(frames, dtype=torch.float32)
    labels = torch.as_tensor(np.asarray(labels)).long()
    if frames.dim() != 4 or frames.shape[1] != 3 or labels.shape != (frames.shape[0], *frames.shape[2:]):
        raise DMMInputError(
            f"a training clip must be frames [T, 3, H, W] with labels [T, H, W]; "
            f"got {tuple(frames.shape)} and {tuple(labels.shape)}"
        )
    return frames, labels, meta


def collate_clips(items: list) -> tuple[torch.Tensor, torch.Tensor, list[dict]]:
    """Stack clips: ``(frames [B, T, 3, H, W], labels [B, T, H, W], metas)``."""
    parts = [_clip_parts(item) for item in items]
    return torch.stack([p[0] for p in parts]), torch.stack([p[1] for p in parts]), [p[2] for p in parts]


def object_masks(labels: torch.Tensor, n: int) -> torch.Tensor:
    """One binary mask per object id 1..n: labels ``[..., H, W]`` -> ``[..., n, H, W]`` float (255, void, is no object)."""
    ids = torch.arange(1, n + 1, device=labels.device).view(-1, 1, 1)
    return (labels.unsqueeze(-3) == ids).float()


def clip_proposals(frames: torch.Tensor, labels: torch.Tensor, metas: list[dict], keys: list[tuple[int, ...]],
                   source: ProposalSource, seed: int) -> list[list]:
    """Proposals for frames 1..T-1 of every clip: ``[T-1][B]`` FrameProposals.

    The noise of clip ``b``, frame ``t`` is drawn from a generator seeded by
    ``(seed, *keys[b], t)`` -- the clip's epoch and index, not the process -- so a
    clip gets the same proposals whichever rank trains it and whenever it is resumed.
    """
    steps = []
    for t in range(1, frames.shape[1]):
        per_clip = []
        for b in range(frames.shape[0]):
            meta = dict(metas[b])
            if "frame_indices" in meta:
                meta["frame_id"] = int(meta["frame_indices"][t])
            rng = np.random.default_rng([seed, *keys[b], t])
            per_clip.append(source(frames[b, t], labels[b, t], meta, rng))
        steps.append(per_clip)
    return steps


# ----------------------------------------------------------------------------------------------
# The unrolled clip: the differentiable graph of one training example
# ----------------------------------------------------------------------------------------------


class UnrolledClip(nn.Module):
    """Runs the model over a batch of clips and returns the loss (wrapped by DDP as one forward).

    ``forward(frames [B, T, 3, H, W], labels [B, T, H, W], proposals [T-1][B]) -> (loss, stats)``
    where ``stats`` holds detached scalars: the mask and assignment losses, the hard IoU
    of the predictions and the fraction of templates whose largest ``X_hat`` entry is the
    GT-best proposal. Frame 0 gives the templates; frames 1..T-1 are predicted.
    """

    def __init__(self, model: nn.Module, cfg: TrainConfig):
        super().__init__()
        self.model = model
        self.loss_kind = cfg.loss
        self.n = cfg.max_objects
        self.assignment_weight = float(cfg.assignment_loss_weight)
        self.assignment_min_iou = float(cfg.assignment_min_iou)

    def forward(self, frames: torch.Tensor, labels: torch.Tensor, proposals: list[list]):
        masks = object_masks(labels, self.n)  # [B, T, n, H, W]
        valid = masks[:, 0].flatten(2).any(-1)  # [B, n]: objects with a template in frame 0
        state = self.model.init_state(frames[:, 0], masks[:, 0], valid)
        total = frames.new_zeros(())
        sums = {"mask_loss": 0.0, "assignment_loss": 0.0, "iou": 0.0, "assignment_accuracy": 0.0}
        counts = {"iou": 0.0, "assignment_accuracy": 0.0}
        for t in range(1, frames.shape[1]):
            out, state = self.model.step(frames[:, t], proposals[t - 1], state)
            target = masks[:, t]
            frame_loss = mask_loss(out.logits, target, valid, self.loss_kind)
            sums["mask_loss"] += float(frame_loss.detach())
            # the model's own P~ [B, m, H, W] (after its top-k and padding), so columns line up with X_hat
            best = torch.stack([
                best_proposal(target[b], out.proposal_masks[b].detach(), self.assignment_min_iou)
                for b in range(target.shape[0])
            ])  # [B, n]
            if self.assignment_weight > 0:
                a_loss = assignment_loss(out.x_hat, best, valid)
                sums["assignment_loss"] += float(a_loss.detach())
                frame_loss = frame_loss + self.assignment_weight * a_loss
            total = total + frame_loss
            with torch.no_grad():
                predicted = out.logits > 0  # sigmoid > 0.5
                iou = mask_iou(predicted.unsqueeze(-3), target.bool().unsqueeze(-3))[..., 0, 0]  # [B, n]
                sums["iou"] += float(iou[valid].sum())
                counts["iou"] += float(valid.sum())
                scored = valid & (best >= 0)
                hits = (out.x_hat.argmax(-1) == best) & scored
                sums["assignment_accuracy"] += float(hits.sum())
                counts["assignment_accuracy"] += float(scored.sum())
        unrolled = frames.shape[1] - 1
        loss = total / unrolled
        stats = {
            "mask_loss": sums["mask_loss"] / unrolled,
            "assignment_loss": sums["assignment_loss"] / unrolled,
            "iou": sums["iou"] / max(counts["iou"], 1.0),
            "assignment_accuracy": sums["assignment_accuracy"] / max(counts["assignment_accuracy"], 1.0),
        }
        return loss, stats


# ----------------------------------------------------------------------------------------------
# Optimiser, RNG state, checkpoints
# ----------------------------------------------------------------------------------------------


def parameter_groups(model: nn.Module, lr_pretrained: float, lr_random: float, weight_decay: float = 0.0,
                     pretrained: Sequence[str] = ()) -> list[dict]:
    """Adam parameter groups (Sec. 4.1): pretrained weights at ``lr_pretrained``, the rest at ``lr_random``.

    ``pretrained``: name prefixes of the parameters loaded from a pretrained model
    (see :func:`pretrained_prefixes`); all others count as randomly initialised.
    Frozen parameters (``requires_grad=False``) are left out.
    """
    prefixes = tuple(pretrained)
    loaded, fresh = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (loaded if prefixes and name.startswith(prefixes) else fresh).append(parameter)
    pretrained = loaded
    groups = []
    if pretrained:
        groups.append({"params": pretrained, "lr": lr_pretrained, "weight_decay": weight_decay, "name": "pretrained"})
    if fresh:
        groups.append({"params": fresh, "lr": lr_random, "weight_decay": weight_decay, "name": "random"})
    if not groups:
        raise DMMInputError("the model has no trainable parameters")
    return groups


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
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_paths(run_dir: str | os.PathLike) -> list[Path]:
    """The run's checkpoints, oldest first."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    return sorted(folder.glob("step_*.pt")) if folder.is_dir() else []


def load_training_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a training checkpoint with ``weights_only=True``; a foreign or broken file is a DMMInputError."""
    path = Path(path)
    state = load_torch_file(path, "training checkpoint", map_location)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise DMMInputError(f"checkpoint {path} is not a dmmlib training checkpoint (format {CHECKPOINT_FORMAT})")
    return state


def _save_checkpoint(run_dir: Path, state: dict, keep: int) -> Path:
    path = run_dir / CHECKPOINT_DIR / f"step_{state['step']:07d}.pt"
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    for old in checkpoint_paths(run_dir)[:-keep]:
        old.unlink()
    return path


def read_log(run_dir: str | os.PathLike) -> list[dict]:
    """The JSON-lines training log of a run as a list of dicts (empty if there is none yet)."""
    path = Path(run_dir) / LOG_NAME
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# ----------------------------------------------------------------------------------------------
# The training loop
# ----------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What :func:`train` returns: the trained (unwrapped) model, the run folder, the final step and the log."""

    model: nn.Module
    run_dir: Path
    step: int
    log: list[dict]
    config: TrainConfig


def _prepare_run_dir(run_dir: Path, resume: bool, force: bool) -> dict | None:
    """Check the run folder; return the checkpoint to resume from (or None)."""
    if resume:
        found = checkpoint_paths(run_dir)
        if found:
            return load_training_checkpoint(found[-1])
    if run_dir.exists() and any(run_dir.iterdir()):
        if resume:
            raise DMMInputError(f"run folder {run_dir} holds no checkpoint to resume from; pass --force to start over")
        if not force:
            raise DMMInputError(
                f"run folder {run_dir} already exists; refusing to write into it (pass --resume to continue it "
                f"or --force to start over)"
            )
    return None


def _clear_run_dir(run_dir: Path) -> None:
    """Remove what an earlier run wrote (only our own files) before a --force restart."""
    shutil.rmtree(run_dir / CHECKPOINT_DIR, ignore_errors=True)
    for name in (LOG_NAME, "config.yaml", "model.pt"):
        (run_dir / name).unlink(missing_ok=True)


def _check_resume_config(cfg: TrainConfig, saved: dict, run_dir: Path) -> None:
    now = cfg.to_dict()
    changed = sorted(k for k in now if k not in RESUMABLE_CHANGES and now[k] != saved.get(k))
    if changed:
        details = "; ".join(f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in changed)
        raise DMMInputError(
            f"run folder {run_dir}: the config differs from the checkpoint's in keys that change the "
            f"training ({details}); only {', '.join(sorted(RESUMABLE_CHANGES))} may change on --resume"
        )


def train(
    config: TrainConfig | str | os.PathLike,
    run_dir: str | os.PathLike,
    *,
    resume: bool = False,
    force: bool = False,
    data_root: str | os.PathLike | None = None,
    model: nn.Module | None = None,
    dataset=None,
    proposal_source: ProposalSource | None = None,
    progress: bool = True,
    on_log: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Train (or continue training) DMM-Net; see the module docstring.

    ``model``, ``dataset`` and ``proposal_source`` default to what the config builds
    (:func:`build_model`, :func:`build_dataset`, :func:`make_proposal_source`); passing
    them lets tests and chapters train any module with the ``init_state``/``step``
    interface. ``on_log(record)`` is called with every log record (live plots).
    Resuming a finished run trains nothing and returns it as it is.
    """
    cfg = config if isinstance(config, TrainConfig) else load_config(config)
    run_dir = Path(run_dir)
    world = distributed.world_from_env()
    from dmmlib.info import pick_device

    device = pick_device(cfg.device)
    if device.type == "cuda" and world.distributed:
        device = torch.device("cuda", world.local_rank)

    checkpoint = _prepare_run_dir(run_dir, resume, force)  # every rank checks: none may hang on a refusal
    if checkpoint is not None:
        _check_resume_config(cfg, checkpoint["config"], run_dir)
    world = distributed.setup(device, world)
    try:
        return _train(cfg, run_dir, world, device, checkpoint, force, data_root, model, dataset, proposal_source,
                      progress, on_log)
    finally:
        distributed.teardown(world)


def _train(cfg, run_dir, world, device, checkpoint, force, data_root, model, dataset, proposal_source, progress,
           on_log) -> TrainResult:
    from tqdm.auto import tqdm

    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    if model is None:
        model = build_model(cfg)
    model = model.to(device)
    model.train()
    optimizer = torch.optim.Adam(
        parameter_groups(model, cfg.lr_pretrained, cfg.lr_random, cfg.weight_decay, pretrained_prefixes(cfg))
    )
    step = 0
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        step = int(checkpoint["step"])
        rng = checkpoint["rng"]  # one state per rank when saved by a multi-process run
        if isinstance(rng, list):
            # a resume with another number of processes is allowed (the sampler does not depend on it),
            # but only the same world size continues every rank's RNG exactly
            rng = rng[world.rank] if world.rank < len(rng) else rng[0]
        restore_rng(rng)
    if dataset is None:
        dataset = build_dataset(cfg, data_root)
    if proposal_source is None:
        proposal_source = make_proposal_source(cfg, device)
    n_clips = len(dataset)
    if n_clips < cfg.batch_size:
        raise DMMInputError(f"the training set has {n_clips} clips, fewer than batch_size={cfg.batch_size}")
    steps_per_epoch = n_clips // cfg.batch_size
    total_steps = cfg.epochs * steps_per_epoch if cfg.max_steps is None else min(cfg.epochs * steps_per_epoch,
                                                                                 cfg.max_steps)
    unrolled = UnrolledClip(model, cfg)
    if world.distributed:
        unrolled = nn.parallel.DistributedDataParallel(
            unrolled, device_ids=None, find_unused_parameters=cfg.ddp_find_unused_parameters
        )

    if world.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if checkpoint is None:
            if force:
                _clear_run_dir(run_dir)
            atomic_write_text(run_dir / "config.yaml", _config_yaml(cfg))
        else:
            # drop records logged after the checkpoint (an interrupted run may have gone further)
            logged = read_log(run_dir)
            kept = [r for r in logged if r["step"] <= step]
            if len(kept) < len(logged):
                atomic_write_text(run_dir / LOG_NAME, "".join(json.dumps(r) + "\n" for r in kept))

    def save(final: bool = False) -> None:
        rng = capture_rng()
        if world.distributed:
            everyone: list = [None] * world.size
            torch.distributed.all_gather_object(everyone, rng)
            rng = everyone
        if world.is_main:
            epoch, position = divmod(step, steps_per_epoch)
            _save_checkpoint(run_dir, {
                "format": CHECKPOINT_FORMAT,
                "step": step,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "rng": rng,
                "sampler": {"epoch": epoch, "position": position, "n_clips": n_clips, "batch_size": cfg.batch_size,
                            "seed": cfg.seed, "world_size": world.size},
                "config": cfg.to_dict(),
                "final": final,
            }, cfg.keep_checkpoints)

    bar = tqdm(total=total_steps, initial=step, desc="train", disable=not (progress and world.is_main))
    while step < total_steps:
        epoch, position = divmod(step, steps_per_epoch)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        batches = distributed.epoch_batches(n_clips, cfg.batch_size, epoch, cfg.seed, world)[position:]
        loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=batches, collate_fn=collate_clips, num_workers=cfg.num_workers,
            # the loader's own seed, so that it never draws from (and shifts) the global torch RNG
            generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch),
        )
        for indices, (frames, labels, metas) in zip(batches, loader):
            if step >= total_steps:
                break
            started = time.perf_counter()
            keys = [(epoch, i) for i in indices]
            proposals = clip_proposals(frames, labels, metas, keys, proposal_source, cfg.seed)
            proposals = [[p.to(device) for p in per_frame] for per_frame in proposals]
            loss, stats = unrolled(frames.to(device), labels.to(device), proposals)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            step += 1
            if not math.isfinite(float(loss.detach())):
                raise FloatingPointError(f"training diverged: loss {float(loss)} at step {step}")
            if step % cfg.log_every == 0 or step == total_steps:
                record = {"step": step, "epoch": epoch, "loss": float(loss.detach()), **stats}
                record = distributed.mean_over_ranks(record, world)
                record.update(step=step, epoch=epoch, seconds=round(time.perf_counter() - started, 4),
                              world_size=world.size)
                if world.is_main:
                    with open(run_dir / LOG_NAME, "a", encoding="utf-8") as log:
                        log.write(json.dumps(record) + "\n")
                    if on_log is not None:
                        on_log(record)
                bar.set_postfix(loss=f"{record['loss']:.4f}", iou=f"{record['iou']:.3f}")
            bar.update(1)
            if step % cfg.checkpoint_every == 0 and step < total_steps:
                save()
    bar.close()
    if checkpoint is None or step > int(checkpoint["step"]):
        save(final=True)
        if world.is_main and _is_dmmnet(model):
            # the model alone, in dmmlib.model's format, for `predict --checkpoint RUN/model.pt`
            from dmmlib.model import save_checkpoint

            save_checkpoint(run_dir / "model.pt", model, extra={"step": step}, overwrite=True)
    model.eval()
    return TrainResult(model=model, run_dir=run_dir, step=step, log=read_log(run_dir) if world.is_main else [],
                       config=cfg)


def _is_dmmnet(model: nn.Module) -> bool:
    from dmmlib.model import DMMNet

    return isinstance(model, DMMNet)


def _config_yaml(cfg: TrainConfig) -> str:
    import yaml

    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML training config (configs/*.yaml)")
    parser.add_argument("--out", required=True, help="run folder: checkpoints, train_log.jsonl, config.yaml")
    parser.add_argument("--resume", action="store_true", help="continue from the run folder's newest checkpoint")
    parser.add_argument("--force", action="store_true", help="start over in an existing run folder")
    parser.add_argument("--data", default=None, help="dataset root (overrides the config's `data`)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (YAML value; model.KEY for model settings); repeatable")


def main(args: argparse.Namespace) -> int:
    if args.resume and args.force:
        raise DMMInputError("--resume and --force contradict each other; pass one of them")
    cfg = load_config(args.config, args.overrides)
    result = train(cfg, args.out, resume=args.resume, force=args.force, data_root=args.data)
    if distributed.world_from_env().is_main:
        last = result.log[-1] if result.log else {}
        print(f"trained {result.step} steps; last loss {last.get('loss', float('nan')):.4f}; run folder {result.run_dir}")
    return 0


# ----------------------------------------------------------------------------------------------
# Evaluation helper for the chapters
# ----------------------------------------------------------------------------------------------


def evaluate_model(model: nn.Module, data_root: str | os.PathLike, split: str = "val",
                   proposals_source: str = "oracle-noisy", matcher: str | None = None, *, proposal_noise: int = 8,
                   proposal_jitter: float = 0.1, seed: int = 0, device: str = "auto", progress: bool = False) -> dict:
    """Track every sequence of a DAVIS-layout ``split`` and score it with the official DAVIS protocol.

    ``proposals_source``: ``"oracle-noisy"`` (proposals built from each frame's ground
    truth, jittered, plus ``proposal_noise`` distractors: measures matching and
    refinement given a decent proposal set), or the folder of a
    :class:`dmmlib.proposals.ProposalCache` (any other string or path).
    ``matcher``: run with another matcher ("dmm", "hungarian", "greedy") on a copy of
    the model. Results are written as PNGs into a temporary folder and scored by
    :func:`dmmlib.evaluation.evaluate_davis`.

    Returns ``{"J_M", "F_M", "JF_M", "J_per_object"}`` (J_M, F_M: means over all objects, as DAVIS).
    """
    import tempfile

    from dmmlib import proposals as props
    from dmmlib.data import DavisDataset
    from dmmlib.evaluation import evaluate_davis
    from dmmlib.tracking import image_files, track, write_track

    data_root = Path(data_root)
    dataset = DavisDataset(data_root, split)
    if matcher is not None:
        model = copy.deepcopy(model)
        model.config = dataclasses.replace(model.config, matcher=matcher)  # validated by ModelConfig
    cache = None if proposals_source == "oracle-noisy" else props.ProposalCache(proposals_source)
    with tempfile.TemporaryDirectory(prefix="dmm-eval-") as results:
        for number, name in enumerate(dataset.names):
            sequence = dataset.sequence(name)
            frames_dir = data_root / "JPEGImages" / dataset.resolution / name
            first_mask = sequence.labels(0)
            if cache is not None:
                source = props_cache_source(cache, name)
            else:
                def source(index, frame, sequence=sequence, number=number):
                    del frame
                    rng = np.random.default_rng([seed, number, index])
                    return props.proposals_from_labels(sequence.labels(index), n_noise=proposal_noise,
                                                       jitter=proposal_jitter, rng=rng)
            labels = track(frames_dir, first_mask, model=model, proposals=source, device=device, progress=False,
                           sequence=name)
            write_track(labels, Path(results) / name, [p.stem for p in image_files(frames_dir)])
        scores = evaluate_davis(data_root, results, split, progress=progress, workers=1)
    table = scores.global_scores
    return {
        "J_M": table["J-Mean"],
        "F_M": table["F-Mean"],
        "JF_M": table["J&F-Mean"],
        "J_per_object": {name: j for name, j, _ in scores.per_sequence_rows()},
    }


def props_cache_source(cache, name: str):
    """``(index, frame) -> FrameProposals`` read from ``cache`` for sequence ``name``."""
    def from_cache(index, frame):
        del frame
        found = cache.get(name, index)
        if found is None:
            raise DMMInputError(f"proposal cache {cache.root} has no proposals for {name} frame {index}")
        return found
    return from_cache


# ----------------------------------------------------------------------------------------------
# What the learned cost does: measurements for the chapters
# ----------------------------------------------------------------------------------------------


HELD_OUT_CLIPS = {"smoke": 8, "cpu": 24, "gpu": 200}  # clips the chapters measure a model on


def matching_margins(model: nn.Module, dataset, proposal_source: ProposalSource, n_clips: int, seed: int = 0,
                     min_iou: float = 0.5, loss: str = DEFAULT_LOSS) -> dict:
    """How well the cosine part of Eq. 1 (and the whole cost) singles out the right proposal.

    For each of the first ``n_clips`` clips of ``dataset``: templates from frame 0, one
    ``model.step`` on frame 1 with ``proposal_source``'s proposals. For every valid
    template whose ground truth has a proposal with IoU >= ``min_iou`` (the "right"
    one, ``j*``), against the other real proposals (the distractors):

    * ``cosine_top1`` -- is ``cos[i, j*]`` the largest cosine of the row?
    * ``cosine_margin`` -- ``cos[i, j*] - max_{j != j*} cos[i, j]`` (> 0: separated);
    * ``cost_top1`` -- is ``C[i, j*]`` the smallest cost of the row (cosine and IoU)?

    Also ``loss``: the mask loss ``loss`` of frame 1, one entry per clip (a held-out
    loss: the same clips and proposals for every model measured).

    Returns those as float arrays (one entry per template) plus ``examples``: for the
    first clip with the most objects, ``(cosine [n, m] of its real proposals and valid
    templates, right [n])``.
    """
    was_training = model.training
    model.eval()
    top1, margin, cost_top1, clip_loss, examples = [], [], [], [], None
    with torch.no_grad():
        for index in range(n_clips):
            frames, labels, metas = collate_clips([dataset[index]])
            n = int(labels[:, 0].max())
            masks = object_masks(labels, n)
            valid = masks[:, 0].flatten(2).any(-1)
            (frame_proposals,) = clip_proposals(frames[:, :2], labels[:, :2], metas, [(index,)], proposal_source, seed)
            state = model.init_state(frames[:, 0], masks[:, 0], valid)
            out, _ = model.step(frames[:, 1], frame_proposals, state)
            clip_loss.append(float(mask_loss(out.logits, masks[:, 1], valid, loss)))
            real = out.proposal_valid[0] if hasattr(out, "proposal_valid") else torch.ones(out.cost.shape[-1], dtype=bool)
            right = best_proposal(masks[0, 1], out.proposal_masks[0], min_iou)
            cosine, cost = out.cosine[0][:, real], out.cost[0][:, real]
            for i in range(n):
                j = int(right[i])
                if not bool(valid[0, i]) or j < 0 or cosine.shape[1] < 2:
                    continue
                others = torch.cat([cosine[i, :j], cosine[i, j + 1:]])
                top1.append(float(cosine[i].argmax() == j))
                margin.append(float(cosine[i, j] - others.max()))
                cost_top1.append(float(cost[i].argmin() == j))
            if examples is None or int(valid.sum()) > len(examples[1]):
                examples = (cosine[valid[0]].cpu().numpy(), right[valid[0]].cpu().numpy())
    model.train(was_training)
    return {"cosine_top1": np.array(top1), "cosine_margin": np.array(margin), "cost_top1": np.array(cost_top1),
            "loss": np.array(clip_loss), "examples": examples}


def plot_log(log: list[dict], axes=None, smooth: int = 5):
    """Plot a training log (loss, IoU of the predictions, assignment accuracy) against the step.

    Thin lines are the per-step values, thick ones a running mean over ``smooth`` steps.
    Returns the matplotlib figure.
    """
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    steps = np.array([r["step"] for r in log])
    for ax, key, title in zip(axes, ("loss", "iou", "assignment_accuracy"),
                              ("training loss", "IoU of the predicted masks", "argmax X_hat = GT-best proposal")):
        ax.clear()
        values = np.array([r[key] for r in log], dtype=float)
        ax.plot(steps, values, color="tab:blue", alpha=0.3, lw=1)
        if len(values) >= smooth:
            running = np.convolve(values, np.ones(smooth) / smooth, mode="valid")
            ax.plot(steps[smooth - 1:], running, color="tab:blue", lw=2)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].figure.tight_layout()
    return axes[0].figure

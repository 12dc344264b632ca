"""Training the class-agnostic Mask R-CNN proposal net on a benchmark in the DAVIS layout (Sec. 4.1).

The paper trains its proposal net on COCO and then on COCO + YouTube-VOS
("learning rate 0.02, batch size 8 and number of training iteration 200,000").
Here no pretrained weights can be fetched, so the net learns from scratch on the
train split of our synthetic benchmark: every instance of ``Instances/`` (tracked
objects and distractors alike) is a "thing" of the single foreground class, and
the losses are torchvision's standard Mask R-CNN ones (RPN objectness and box
regression, box classification and regression, mask BCE).

Determinism: the model init, the frame order, the flips and torchvision's
sampling all draw from seeded generators whose states are stored in the
checkpoint, so a run resumed from any checkpoint ends bit-identical to one that
never stopped.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from dmmlib.data.davis import annotation_folder, frame_files, read_split
from dmmlib.data.images import read_frame
from dmmlib.data.masks import object_ids, read_label_png
from dmmlib.device import pick_device
from dmmlib.errors import DMMInputError
from dmmlib.fileio import (
    atomic_path,
    atomic_write_text,
    check_apart,
    check_destinations,
    refuse_overwrite,
)
from dmmlib.profiles import by_profile
from dmmlib.proposals.net import CHECKPOINT_FORMAT, ProposalNet
from dmmlib.torchio import load_torch_file


@dataclass(frozen=True)
class ProposalTrainConfig:
    """Every setting of a proposal-net training run."""

    architecture: str = "resnet18_fpn_lite"
    # starting weights: None (random, from the seed), "coco" (torchvision's COCO Mask R-CNN, resnet50_fpn
    # only; the paper starts from COCO) or a path to a state dict / checkpoint
    init_weights: str | None = None
    steps: int = 500
    batch_size: int = 2
    optimizer: str = "adam"  # "adam" or "sgd" (the paper: SGD, lr 0.02, batch 8)
    lr: float = 1e-3  # the paper's rate for randomly initialised weights (Sec. 4.1) is 1e-3 with Adam
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_steps: int = 50  # linear warm-up: a random Mask R-CNN diverges at full rate from step 0
    flip_prob: float = 0.5
    grad_clip: float = 10.0
    checkpoint_every: int = 100

    def __post_init__(self) -> None:
        def need(ok: bool, name: str, expected: str) -> None:
            if not ok:
                raise DMMInputError(f"ProposalTrainConfig.{name}={getattr(self, name)!r}; expected {expected}")

        need(self.steps >= 0, "steps", "a count >= 0")
        need(self.batch_size >= 1, "batch_size", "at least 1")
        need(self.optimizer in ("adam", "sgd"), "optimizer", "'adam' or 'sgd'")
        need(self.lr > 0, "lr", "a rate > 0")
        need(0 <= self.flip_prob <= 1, "flip_prob", "a probability")
        need(self.checkpoint_every >= 1, "checkpoint_every", "at least 1")
        need(self.warmup_steps >= 0, "warmup_steps", "a count >= 0")

    def replace(self, **changes) -> "ProposalTrainConfig":
        return dataclasses.replace(self, **changes)


# smoke: a handful of steps in seconds; cpu: about two minutes on 2 cores at 120 x 216;
# gpu: the paper's R50-FPN from COCO weights (a download; --init-weights FILE offline), SGD at the
# paper's lr 0.02 and batch 8, on 240 x 432 frames.
TRAIN_CONFIGS = {
    "smoke": ProposalTrainConfig(steps=6, batch_size=2, warmup_steps=2, checkpoint_every=3),
    "cpu": ProposalTrainConfig(steps=450, batch_size=2, warmup_steps=50, checkpoint_every=150),
    "gpu": ProposalTrainConfig(
        architecture="resnet50_fpn", init_weights="coco", steps=20000, batch_size=8, optimizer="sgd", lr=0.02,
        warmup_steps=500, checkpoint_every=1000,
    ),
}


def train_config_for_profile(profile: str | None = None) -> ProposalTrainConfig:
    return by_profile(TRAIN_CONFIGS, profile)


# ----------------------------------------------------------------------------------------------
# Samples
# ----------------------------------------------------------------------------------------------


def instance_targets(instances: np.ndarray) -> dict[str, torch.Tensor]:
    """torchvision Mask R-CNN targets from an instance label map ``[H, W]`` (0 background, 255 void).

    Returns ``boxes [N, 4]`` float32 (tight, pixel-edge coordinates), ``labels [N]`` int64
    (all 1: one class-agnostic "object" class) and ``masks [N, H, W]`` uint8.
    """
    ids = object_ids(instances)
    masks = np.stack([instances == i for i in ids]).astype(np.uint8) if ids else np.zeros((0, *instances.shape), np.uint8)
    boxes = []
    for mask in masks:
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        boxes.append((cols[0], rows[0], cols[-1] + 1, rows[-1] + 1))
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.ones(len(ids), dtype=torch.int64),
        "masks": torch.from_numpy(masks),
    }


def _flip(image: torch.Tensor, target: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Horizontal flip of an image ``[3, H, W]`` and its targets (boxes mirrored about the width)."""
    width = image.shape[-1]
    boxes = target["boxes"].clone()
    boxes[:, [0, 2]] = width - target["boxes"][:, [2, 0]]
    return image.flip(-1), {"boxes": boxes, "labels": target["labels"], "masks": target["masks"].flip(-1)}


def training_frames(data_root: str | os.PathLike, split: str = "train") -> list[tuple[Path, Path]]:
    """(frame JPEG, instance PNG) pairs of every frame of ``split``; instances fall back to Annotations."""
    root = Path(data_root)
    pairs = []
    for seq in read_split(root, split):
        for frame in frame_files(root, seq):
            instances = annotation_folder(root, seq, annotations="Instances") / f"{frame.stem}.png"
            if not instances.is_file():
                instances = annotation_folder(root, seq) / f"{frame.stem}.png"
            if not instances.is_file():
                raise DMMInputError(f"frame {frame} has no instance mask: expected {instances}")
            pairs.append((frame, instances))
    if not pairs:
        raise DMMInputError(f"split {split!r} of {root} holds no frames")
    return pairs


def _load_sample(frame: Path, instances: Path) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    image = torch.from_numpy(read_frame(frame)).permute(2, 0, 1).float() / 255.0
    labels = read_label_png(instances)
    if labels.shape != tuple(image.shape[1:]):
        raise DMMInputError(f"instance mask {instances} is {labels.shape}; expected the frame size {tuple(image.shape[1:])}")
    return image, instance_targets(labels)


# ----------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------


def _make_optimizer(net: ProposalNet, config: ProposalTrainConfig) -> torch.optim.Optimizer:
    params = [p for p in net.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


def loss_log_path(checkpoint: str | os.PathLike) -> Path:
    """``<checkpoint>.losses.csv``: the per-step losses of a training run."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name + ".losses.csv")


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A proposal-net training checkpoint (``torch.load(weights_only=True)``), checked."""
    path = Path(path)
    state = load_torch_file(path, "proposal-net checkpoint")
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise DMMInputError(f"{path} is not a proposal-net checkpoint (expected format {CHECKPOINT_FORMAT!r})")
    return state


# ----------------------------------------------------------------------------------------------
# The training loop
# ----------------------------------------------------------------------------------------------


_RESUMABLE_CHANGES = ("steps", "checkpoint_every")
FLUSH_EVERY = 20  # steps between two host reads of the losses (and progress-bar updates)


def _learning_rate(config: ProposalTrainConfig, step: int) -> float:
    if config.warmup_steps and step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    return config.lr


def _start_state(out_path: Path, config: ProposalTrainConfig, seed: int, resume: bool, force: bool) -> dict | None:
    """The checkpoint a ``resume`` continues (checked to be the same run), or None for a fresh start."""
    if not resume:
        refuse_overwrite(out_path, force, what="proposal-net checkpoint")
        return None
    if not out_path.exists():
        return None
    state = load_checkpoint(out_path)
    if state["architecture"] != config.architecture:
        raise DMMInputError(
            f"--resume: checkpoint {out_path} trains {state['architecture']!r}; the config asks for {config.architecture!r}"
        )
    if int(state["seed"]) != int(seed):
        raise DMMInputError(f"--resume: checkpoint {out_path} was trained with seed {state['seed']}, not {seed}")
    # only the length of a run may change on resume; anything else would splice two different runs
    stored = {k: v for k, v in state["config"].items() if k not in _RESUMABLE_CHANGES}
    wanted = {k: v for k, v in dataclasses.asdict(config).items() if k not in _RESUMABLE_CHANGES}
    changed = sorted(k for k in wanted if stored.get(k) != wanted[k])
    if changed:
        raise DMMInputError(
            f"--resume: checkpoint {out_path} was trained with other settings ({', '.join(changed)}); "
            "train to a new file or pass --force without --resume"
        )
    return state


@dataclass
class _ProposalRun:
    """A proposal-net training run while it trains: what a checkpoint stores."""

    out_path: Path
    config: ProposalTrainConfig
    seed: int
    net: ProposalNet
    optimizer: torch.optim.Optimizer
    sampler: torch.Generator
    device: torch.device
    losses: dict = field(default_factory=dict)
    step: int = 0
    seconds: float = 0.0
    pending: list = field(default_factory=list)  # per-step loss tensors, still on the device

    def flush(self) -> None:
        """Read the pending steps' losses on the host (one synchronisation); raise at the first non-finite one."""
        if not self.pending:
            return
        names = list(self.pending[0])
        values = torch.stack([torch.stack([step[n] for n in names]) for step in self.pending]).tolist()
        first = self.step - len(self.pending) + 1
        for offset, row in enumerate(values):
            if not all(math.isfinite(v) for v in row):
                raise FloatingPointError(f"proposal-net loss is {row[names.index('total')]} at step {first + offset}; "
                                         f"lower the lr")
            for name, value in zip(names, row):
                self.losses.setdefault(name, []).append(value)
        self.pending = []

    def restore(self, state: dict) -> None:
        self.net.detector.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.sampler.set_state(state["sampler_state"])
        torch.set_rng_state(state["torch_rng_state"])
        self.losses = {k: v.tolist() for k, v in state["losses"].items()}
        self.step, self.seconds = int(state["step"]), float(state["seconds"])

    def save(self) -> None:
        """The checkpoint at ``out_path`` (atomically) and the loss log ``<out_path>.losses.csv`` beside it."""
        state = {
            "format": CHECKPOINT_FORMAT,
            "architecture": self.net.architecture,
            "model": self.net.detector.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "config": dataclasses.asdict(self.config),
            "seed": int(self.seed),
            "step": int(self.step),
            "sampler_state": self.sampler.get_state(),
            "torch_rng_state": torch.get_rng_state(),
            "losses": {k: torch.tensor(v, dtype=torch.float64) for k, v in self.losses.items()},
            "seconds": float(self.seconds),
        }
        with atomic_path(self.out_path) as tmp:
            torch.save(state, tmp)
        names = sorted(self.losses)  # one CSV row per step
        rows = [",".join(["step", *names])]
        rows += [",".join([str(i + 1), *(f"{self.losses[n][i]:.6f}" for n in names)])
                 for i in range(len(self.losses.get("total", [])))]
        atomic_write_text(loss_log_path(self.out_path), "\n".join(rows) + "\n")


def _draw_batch(run: _ProposalRun, pairs: list[tuple[Path, Path]]) -> tuple[list, list]:
    """``batch_size`` random training frames (flipped at random) and their targets, on the run's device."""
    config = run.config
    picks = torch.randint(len(pairs), (config.batch_size,), generator=run.sampler).tolist()
    flips = (torch.rand(config.batch_size, generator=run.sampler) < config.flip_prob).tolist()
    images, targets = [], []
    for index, flip in zip(picks, flips):
        image, target = _load_sample(*pairs[index])
        if flip:
            image, target = _flip(image, target)
        images.append(image.to(run.device))
        targets.append({k: v.to(run.device) for k, v in target.items()})
    return images, targets


def _train_step(run: _ProposalRun, images: list, targets: list) -> None:
    """One SGD / Adam step at the warm-up schedule's rate; the losses are appended to ``run.losses``."""
    for group in run.optimizer.param_groups:
        group["lr"] = _learning_rate(run.config, run.step)
    loss_parts = run.net(images, targets)
    total = sum(loss_parts.values())
    run.optimizer.zero_grad(set_to_none=True)
    total.backward()
    torch.nn.utils.clip_grad_norm_(run.net.parameters(), run.config.grad_clip)
    run.optimizer.step()
    run.step += 1
    # read on the host every few steps (run.flush), not after each one: each read waits for the GPU
    run.pending.append({name: value.detach() for name, value in [*loss_parts.items(), ("total", total)]})


def train_proposal_net(
    data_root: str | os.PathLike,
    out_path: str | os.PathLike,
    config: ProposalTrainConfig | None = None,
    seed: int = 0,
    resume: bool = False,
    progress: bool = True,
    *,
    force: bool = False,
    device: str = "auto",
) -> dict:
    """Train a :class:`~dmmlib.proposals.ProposalNet` on the train split of ``data_root``; save to ``out_path``.

    ``config`` defaults to the active profile's (:data:`TRAIN_CONFIGS`). With
    ``resume=True`` an existing checkpoint at ``out_path`` is continued (up to
    ``config.steps``; one that is already there is returned as is); without it an
    existing ``out_path`` is an error unless ``force``. Checkpoints are written
    atomically every ``config.checkpoint_every`` steps and at the end, with the loss
    log ``<out_path>.losses.csv``.

    Returns ``{"checkpoint", "steps", "seconds", "losses"}`` where ``losses`` maps each
    torchvision loss name (and ``"total"``) to its per-step values.
    """
    config = train_config_for_profile() if config is None else config
    out_path = Path(out_path)
    check_apart(out_path, "proposal-net checkpoint", {"the data folder": data_root})
    check_destinations({out_path: "proposal-net checkpoint", loss_log_path(out_path): "loss log"}, force or resume)
    pairs = training_frames(data_root, "train")
    start_state = _start_state(out_path, config, seed, resume, force)
    torch_device = pick_device(device)
    # fresh class-agnostic heads on a COCO (or other multi-class) start: training makes them useful
    net = ProposalNet(config.architecture, weights=config.init_weights, seed=seed, heads="fresh").to(torch_device)
    run = _ProposalRun(out_path, config, int(seed), net, _make_optimizer(net, config),
                       torch.Generator().manual_seed(int(seed)), torch_device)
    with torch.random.fork_rng(devices=[]):  # torchvision's RoI sampling draws from the global RNG
        torch.manual_seed(int(seed) + 1)
        if start_state is not None:
            run.restore(start_state)
        net.train()
        began = time.perf_counter() - run.seconds
        with tqdm(total=config.steps, initial=min(run.step, config.steps), desc="proposal net",
                  disable=not progress) as bar:
            while run.step < config.steps:
                _train_step(run, *_draw_batch(run, pairs))
                bar.update(1)
                if run.step % FLUSH_EVERY == 0 or run.step % config.checkpoint_every == 0 or run.step == config.steps:
                    run.flush()  # before any checkpoint: a diverged net is never saved
                    bar.set_postfix(loss=f"{run.losses['total'][-1]:.3f}")
                if run.step % config.checkpoint_every == 0 or run.step == config.steps:
                    run.seconds = time.perf_counter() - began
                    run.save()
        if start_state is None and config.steps == 0:
            run.save()
    return {"checkpoint": out_path, "steps": run.step, "seconds": run.seconds, "losses": run.losses}


def load_proposal_net(checkpoint: str | os.PathLike, device: str = "auto") -> ProposalNet:
    """A :class:`~dmmlib.proposals.ProposalNet` with the weights of a training checkpoint, in eval mode.

    The architecture is the one the checkpoint names, whatever the active profile.
    """
    net = ProposalNet(weights=checkpoint)
    return net.to(pick_device(device)).eval()

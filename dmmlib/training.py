"""Training DMM-Net end to end through the matching layer (Sec. 4.1, "Fine-tune").

Each step draws a batch of clips (random affine augmentation shared by a clip's frames,
:mod:`dmmlib.data.clips`), gets proposals for their frames from the configured source,
and back-propagates the loss of the unrolled clips (:class:`dmmlib.unrolled.UnrolledClip`)
through the refinement head, the matching layer (Alg. 1) and the matching features, so
the cost matrix (Eq. 1) is learned. The paper unrolls 2 steps (Table 4: 3 was no better
and costs more memory).

Proposals come from one of three sources (config key ``proposals``, see
:mod:`dmmlib.proposals.sources`):

* ``oracle-noisy`` -- built from the augmented labels: one jittered box + mask per
  object plus ``proposal_noise`` random distractors. Needs no proposal network.
* ``network`` -- a :class:`dmmlib.proposals.ProposalNet` (``proposal_weights``: ``"coco"``
  or a trained checkpoint) run on every augmented frame; youtube-vos.yaml uses it.
* ``cache`` -- a :class:`dmmlib.proposals.ProposalCache` filled beforehand
  (``proposal_cache``: its folder). Cached proposals are for the stored frames; they are
  warped along with a clip's resize and augmentation, which must then be axis-aligned
  (``augment_axis_aligned: true``: scale, shift, flip) or off (``augment: false``); davis2017.yaml uses it.

Optimiser: Adam, ``lr_pretrained`` (1e-4) for weights loaded from a pretrained
model and ``lr_random`` (1e-3) for randomly initialised ones, as two parameter groups,
held constant as in the paper or (``lr_schedule: cosine``, our option) decayed to 0
over the run (:func:`lr_factor`).

Runs are deterministic for a seed and resumable bit for bit (on CPU): every
``checkpoint_every`` steps the model, the optimiser, the step, the sampler position,
the python/numpy/torch RNG states and the config are written atomically to
``RUN/checkpoints/step_XXXXXXX.pt`` (:mod:`dmmlib.checkpoints`); ``resume=True``
continues from the newest one. Losses and metrics go to ``RUN/train_log.jsonl``, one
JSON object per step; the final DMMNet also goes to ``RUN/model.pt``, for
``python -m dmmlib predict --checkpoint RUN/model.pt``.

Speed: one DataLoader for the whole run (persistent workers, pinned uint8 frames, host-side
proposals made in the workers, a proposal network's in one batch per step), statistics kept
on the device and read at log steps only, optional ``amp`` (bf16 / fp16 autocast), TF32 and
``cudnn.benchmark`` on CUDA (:func:`dmmlib.device.speed_settings`).

Multi-GPU: start the same command with ``torchrun --nproc_per_node=N -m dmmlib train ...``;
see :mod:`dmmlib.distributed` (each process trains ``batch_size // N`` clips per step,
gradients are averaged by DistributedDataParallel, only rank 0 writes files).
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import yaml
from tqdm.auto import tqdm

from dmmlib import distributed
from dmmlib.checkpoints import (
    TRAINING_CHECKPOINT_FORMAT,
    capture_rng,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
    save_training_checkpoint,
)
from dmmlib.data.clips import AXIS_ALIGNED, AffineAugment, ClipDataset, ClipSampler
from dmmlib.data.davis import DavisDataset
from dmmlib.data.generate import ensure_synthetic
from dmmlib.data.youtube_vos import YouTubeVOSDataset
from dmmlib.device import (
    any_on_host,
    autocast,
    frames_to_device,
    pick_device,
    speed_settings,
    to_device,
)
from dmmlib.errors import DMMInputError
from dmmlib.fileio import SetAside, atomic_write_text, make_folders
from dmmlib.model import DMMNet, default_config
from dmmlib.proposals.cache import ProposalCache
from dmmlib.proposals.net import ProposalNet
from dmmlib.proposals.sources import (
    ProposalSource,
    cached_source,
    network_source,
    oracle_source,
)
from dmmlib.run_folder import LOG_NAME, RUN_ENTRIES, RunFiles, read_log, resume_point
from dmmlib.train_config import (
    LR_SCHEDULES,
    TrainConfig,
    check_run_inputs,
    load_config,
)
from dmmlib.unrolled import UnrolledClip, burn_in_frames, clip_length, clip_loader, clip_proposals

# ----------------------------------------------------------------------------------------------
# Building the pieces: model, data, proposals, optimiser
# ----------------------------------------------------------------------------------------------


def build_model(cfg: TrainConfig) -> DMMNet:
    """``DMMNet`` with the profile's defaults updated by ``cfg.model``; torch RNG seeded by ``cfg.seed``.

    Seeding here gives every DDP rank the same initial weights (DDP also broadcasts rank 0's).
    With ``cfg.init_checkpoint`` (a DMMNet checkpoint, e.g. ``RUN/model.pt`` of a YouTube-VOS run)
    every weight starts from that file, which must fit the configured architecture.
    """
    torch.manual_seed(cfg.seed)
    try:
        model_config = default_config(cfg.profile, **cfg.model)
    except TypeError as error:
        raise DMMInputError(f"config key model: {error}") from None
    model = DMMNet(model_config, backbone_weights=cfg.backbone_weights)
    if cfg.init_checkpoint is not None:
        trained = load_checkpoint(cfg.init_checkpoint)
        try:
            model.load_state_dict(trained.state_dict())
        except RuntimeError as error:
            raise DMMInputError(f"init_checkpoint {cfg.init_checkpoint} does not fit the configured model "
                                f"(config key model): {str(error).splitlines()[0][:300]}") from None
    return model


def pretrained_prefixes(cfg: TrainConfig) -> tuple[str, ...]:
    """Parameter-name prefixes loaded from pretrained weights: everything with ``init_checkpoint``,
    the backbone when ``backbone_weights`` is set."""
    if cfg.init_checkpoint is not None:
        return ("",)
    return ("features.",) if cfg.backbone_weights is not None else ()


def build_dataset(cfg: TrainConfig) -> ClipDataset:
    """The clip dataset of ``cfg``: item ``i`` is a clip of ``1 + burn_in + unroll`` frames, fixed by the seed and ``i``."""
    if cfg.dataset == "synthetic" and cfg.data is None:
        sequences = DavisDataset(ensure_synthetic(profile=cfg.profile, seed=0, progress=False), cfg.split)
    elif cfg.dataset == "synthetic":
        # a folder the user named is used as it is (a `data synth --seed 7` benchmark stays seed 7), never regenerated
        if not Path(cfg.data).is_dir():
            raise DMMInputError(f"data folder {cfg.data} (config key `data` / --data) does not exist; make a "
                                f"benchmark there with `python -m dmmlib data synth --out {cfg.data}`")
        sequences = DavisDataset(cfg.data, cfg.split)
    elif cfg.data is None:
        raise DMMInputError(f"dataset={cfg.dataset!r} needs a data root: set `data:` in the config or pass --data ROOT")
    elif cfg.dataset == "davis":
        sequences = DavisDataset(cfg.data, cfg.split)
    else:
        sequences = YouTubeVOSDataset(cfg.data, cfg.split)
    sampler = ClipSampler(
        sequences,
        clip_length=clip_length(cfg),
        seed=cfg.seed,
        size=tuple(cfg.frame_size),
        augment=(AXIS_ALIGNED if cfg.augment_axis_aligned else AffineAugment()) if cfg.augment else None,
        max_objects=cfg.max_objects,
    )
    return ClipDataset(sampler, cfg.clips_per_epoch)


def make_proposal_source(cfg: TrainConfig, device: torch.device | None = None) -> ProposalSource:
    """The proposal source named by ``cfg.proposals`` (see the module docstring)."""
    if cfg.proposals == "oracle-noisy":
        return oracle_source(cfg.proposal_noise, cfg.proposal_jitter)
    if cfg.proposals == "network":
        net = ProposalNet(weights=cfg.proposal_weights, profile=cfg.profile).eval()
        return network_source(net if device is None else net.to(device))
    return cached_source(ProposalCache(cfg.proposal_cache))


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
    groups = []
    if loaded:
        groups.append({"params": loaded, "lr": lr_pretrained, "weight_decay": weight_decay, "name": "pretrained"})
    if fresh:
        groups.append({"params": fresh, "lr": lr_random, "weight_decay": weight_decay, "name": "random"})
    if not groups:
        raise DMMInputError("the model has no trainable parameters")
    return groups


# ----------------------------------------------------------------------------------------------
# The run folder
# ----------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What :func:`train` returns: the trained (unwrapped) model, the run folder, the final step and the log."""

    model: nn.Module
    run_dir: Path
    step: int
    log: list[dict]
    config: TrainConfig


# ----------------------------------------------------------------------------------------------
# The training loop, step by step
# ----------------------------------------------------------------------------------------------


@dataclass
class _Run:
    """Everything one training run holds while it trains."""

    cfg: TrainConfig
    run_dir: Path
    world: distributed.World
    device: torch.device
    model: nn.Module
    optimizer: torch.optim.Optimizer
    unrolled: nn.Module
    dataset: object
    source: ProposalSource
    step: int
    steps_per_epoch: int
    total_steps: int
    on_log: Callable[[dict], None] | None
    scaler: torch.amp.GradScaler | None = None  # enabled for fp16 autocast only
    finite: torch.Tensor | None = None  # on the device: every loss since the last check was finite
    checked: int = 0  # the step up to which ``finite`` has been read
    clock: tuple[int, float] = (0, 0.0)  # (step, time) of the last log record


def _restore(model: nn.Module, optimizer: torch.optim.Optimizer, checkpoint: dict, world: distributed.World) -> int:
    """Load model, optimiser and RNG states from ``checkpoint``; return its step."""
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    rng = checkpoint["rng"]  # one state per rank when saved by a multi-process run
    if isinstance(rng, list):
        # a resume with another number of processes is allowed (the sampler does not depend on it),
        # but only the same world size continues every rank's RNG exactly
        rng = rng[world.rank] if world.rank < len(rng) else rng[0]
    restore_rng(rng)
    return int(checkpoint["step"])


def _schedule(cfg: TrainConfig, n_clips: int) -> tuple[int, int]:
    """``(steps per epoch, total steps)`` for a training set of ``n_clips`` clips."""
    if n_clips < cfg.batch_size:
        raise DMMInputError(f"the training set has {n_clips} clips, fewer than batch_size={cfg.batch_size}")
    steps_per_epoch = n_clips // cfg.batch_size
    total = cfg.epochs * steps_per_epoch
    return steps_per_epoch, total if cfg.max_steps is None else min(total, cfg.max_steps)


def _start_files(run: _Run, resumed: bool, force: bool) -> RunFiles:
    """A new run writes its config.yaml (an earlier run's files set aside with --force); a resumed one drops
    log records written after its checkpoint."""
    files = RunFiles(run.run_dir, fresh=not resumed and run.world.is_main)  # only rank 0 writes, or undoes
    if not run.world.is_main:
        return files
    if not resumed:
        if force:
            files.previous = SetAside(run.run_dir / name for name in RUN_ENTRIES)
        files.created = make_folders(run.run_dir)
        atomic_write_text(run.run_dir / "config.yaml", yaml.safe_dump(run.cfg.to_dict(), sort_keys=False))
        return files
    logged = read_log(run.run_dir)  # an interrupted run may have logged past its last checkpoint
    kept = [r for r in logged if r["step"] <= run.step]
    if len(kept) < len(logged):
        atomic_write_text(run.run_dir / LOG_NAME, "".join(json.dumps(r) + "\n" for r in kept))
    return files


def _save(run: _Run, final: bool = False) -> None:
    """A training checkpoint of the current step (every rank's RNG state; rank 0 writes)."""
    rng = capture_rng()
    if run.world.distributed:
        everyone: list = [None] * run.world.size
        torch.distributed.all_gather_object(everyone, rng)
        rng = everyone
    if not run.world.is_main:
        return
    epoch, position = divmod(run.step, run.steps_per_epoch)
    save_training_checkpoint(run.run_dir, {
        "format": TRAINING_CHECKPOINT_FORMAT, "step": run.step, "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(), "rng": rng,
        "sampler": {"epoch": epoch, "position": position, "n_clips": len(run.dataset),
                    "batch_size": run.cfg.batch_size, "seed": run.cfg.seed, "world_size": run.world.size},
        "config": run.cfg.to_dict(), "final": final,
        "scaler": run.scaler.state_dict(),
    }, run.cfg.keep_checkpoints)


def _loader(run: _Run) -> torch.utils.data.DataLoader:
    """One DataLoader for the rest of the run (see :func:`dmmlib.unrolled.clip_loader`)."""
    keys = distributed.epoch_keys(len(run.dataset), run.cfg.batch_size, run.cfg.seed, run.world, run.step,
                                  run.total_steps)
    return clip_loader(run.dataset, keys, run.source, run.cfg.seed, run.cfg.num_workers, run.device)


def _forward(run: _Run, keys: list[tuple[int, int]], batch, proposals) -> tuple[torch.Tensor, dict]:
    """The batch on the device, its proposals (from the loader, or the device's network), the loss.

    With a burn-in, the step's clips are cut to the template frame, the step's burn-in and the
    unrolled frames (:func:`~dmmlib.unrolled.burn_in_frames`); the frames after them are not used.
    """
    frames, labels, metas = batch
    burn_in = burn_in_frames(run.cfg, keys)
    used = 1 + burn_in + run.cfg.unroll
    frames, labels = frames_to_device(frames[:, :used], run.device), labels[:, :used]
    if proposals is None:  # a source that runs on the device (a proposal network): one batched call
        proposals = clip_proposals(frames, labels, metas, keys, run.source, run.cfg.seed)
    proposals = [[p.to(run.device) for p in per_frame] for per_frame in proposals[: used - 1]]
    with autocast(run.device, run.cfg.amp):
        return run.unrolled(frames, to_device(labels, run.device), proposals, burn_in)


def lr_factor(schedule: str, step: int, total_steps: int) -> float:
    """The multiple of the configured learning rates that step ``step`` (0-based) of ``total_steps`` uses.

    ``"constant"``: 1. ``"cosine"``: ``(1 + cos(pi * step / total_steps)) / 2``, from 1 at the first step
    down towards 0 at the last. A function of the step alone, so a resumed run continues the same curve.
    """
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * step / max(total_steps, 1)))
    raise DMMInputError(f"lr_schedule={schedule!r} is not a known schedule; expected one of {', '.join(LR_SCHEDULES)}")


def _set_learning_rates(run: _Run) -> None:
    """Set each parameter group's learning rate for the coming step from the config and the schedule."""
    factor = lr_factor(run.cfg.lr_schedule, run.step, run.total_steps)
    base = {"pretrained": run.cfg.lr_pretrained, "random": run.cfg.lr_random}
    for group in run.optimizer.param_groups:
        group["lr"] = base[group["name"]] * factor


def _train_step(run: _Run, keys: list[tuple[int, int]], batch, proposals) -> tuple[torch.Tensor, dict]:
    """One optimiser step on one batch of clips; returns the loss and the statistics, still on the device."""
    loss, stats = _forward(run, keys, batch, proposals)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()  # the scaler passes everything through unless amp is fp16
    run.scaler.unscale_(run.optimizer)
    _set_learning_rates(run)
    if run.cfg.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.cfg.grad_clip)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.step += 1
    loss = loss.detach()
    finite = torch.isfinite(loss)
    run.finite = finite if run.finite is None else run.finite & finite
    return loss, stats


def _check_finite(run: _Run) -> None:
    """Read the device's finiteness flag (a host sync, only at log and checkpoint steps); raise if a loss was not."""
    if run.finite is not None and any_on_host(~run.finite):
        raise FloatingPointError(f"training diverged: a non-finite loss between steps {run.checked + 1} and {run.step}")
    run.checked, run.finite = run.step, None


def _log(run: _Run, epoch: int, loss: torch.Tensor, stats: dict) -> dict:
    """Average the step's figures over ranks; rank 0 appends them to the log and calls ``on_log``.

    The one place where the step's tensors are read on the host; ``seconds`` is the mean wall
    time of the steps since the last record (a GPU step's time only shows once it is read).
    """
    values = {"loss": float(loss), **{k: float(v) for k, v in stats.items()}}
    _check_finite(run)
    now, (last_step, last_time) = time.perf_counter(), run.clock
    seconds = (now - last_time) / max(run.step - last_step, 1)
    run.clock = (run.step, now)
    record = distributed.mean_over_ranks({"step": run.step, "epoch": epoch, **values}, run.world)
    record.update(step=run.step, epoch=epoch, seconds=round(seconds, 4), world_size=run.world.size)
    if run.world.is_main:
        with open(run.run_dir / LOG_NAME, "a", encoding="utf-8") as log:
            log.write(json.dumps(record) + "\n")
        if run.on_log is not None:
            run.on_log(record)
    return record


def _loop(run: _Run, progress: bool) -> None:
    """Train from ``run.step`` to ``run.total_steps``, logging and checkpointing as configured."""
    with tqdm(total=run.total_steps, initial=run.step, desc="train",
              disable=not (progress and run.world.is_main)) as bar:
        _steps(run, bar)


def _steps(run: _Run, bar) -> None:
    """The steps of :func:`_loop`, shown on ``bar``."""
    cfg = run.cfg
    run.checked, run.clock = run.step, (run.step, time.perf_counter())
    for keys, batch, proposals in _loader(run):
        epoch = keys[0][0]
        loss, stats = _train_step(run, keys, batch, proposals)
        if run.step % cfg.log_every == 0 or run.step == run.total_steps:
            record = _log(run, epoch, loss, stats)
            bar.set_postfix(loss=f"{record['loss']:.4f}", iou=f"{record['iou']:.3f}")
        bar.update(1)
        if run.step % cfg.checkpoint_every == 0 and run.step < run.total_steps:
            _check_finite(run)  # never write a checkpoint of a diverged model
            _save(run)
    _check_finite(run)


def train(
    config: TrainConfig | str | os.PathLike,
    run_dir: str | os.PathLike,
    *,
    resume: bool = False,
    force: bool = False,
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
    check_run_inputs(cfg, proposal_source_given=proposal_source is not None, model_given=model is not None)
    run_dir = Path(run_dir)
    world = distributed.world_from_env()
    device = pick_device(cfg.device)
    if device.type == "cuda" and world.distributed:
        device = torch.device("cuda", world.local_rank)
    speed_settings(device)
    checkpoint = resume_point(cfg, run_dir, resume, force, progress and world.is_main)
    world = distributed.setup(device, world)
    try:
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        model = (build_model(cfg) if model is None else model).to(device).train()
        optimizer = torch.optim.Adam(
            parameter_groups(model, cfg.lr_pretrained, cfg.lr_random, cfg.weight_decay, pretrained_prefixes(cfg)))
        step = 0 if checkpoint is None else _restore(model, optimizer, checkpoint, world)
        dataset = build_dataset(cfg) if dataset is None else dataset
        source = make_proposal_source(cfg, device) if proposal_source is None else proposal_source
        steps_per_epoch, total_steps = _schedule(cfg, len(dataset))
        unrolled = UnrolledClip(model, cfg)
        if world.distributed:
            unrolled = nn.parallel.DistributedDataParallel(
                unrolled, device_ids=None, find_unused_parameters=cfg.ddp_find_unused_parameters)
        run = _Run(cfg, run_dir, world, device, model, optimizer, unrolled, dataset, source, step,
                   steps_per_epoch, total_steps, on_log, _scaler(cfg, device, checkpoint))
        files = _start_files(run, checkpoint is not None, force)
        try:
            _loop(run, progress)
            _finish(run, checkpoint)
        except BaseException:
            files.failed()
            raise
        files.succeeded()
    finally:
        distributed.teardown(world)
    return TrainResult(model=model.eval(), run_dir=run_dir, step=run.step,
                       log=read_log(run_dir) if world.is_main else [], config=cfg)


def _scaler(cfg: TrainConfig, device: torch.device, checkpoint: dict | None) -> torch.amp.GradScaler:
    """fp16 autocast needs loss scaling (its gradients underflow); for bf16 and float32 it is switched off."""
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
    if checkpoint is not None and checkpoint.get("scaler"):
        scaler.load_state_dict(checkpoint["scaler"])
    return scaler


def _finish(run: _Run, checkpoint: dict | None) -> None:
    """The final training checkpoint and, for a DMMNet, ``RUN/model.pt`` -- unless nothing was trained."""
    if checkpoint is not None and run.step <= int(checkpoint["step"]):
        return
    _save(run, final=True)
    if run.world.is_main and isinstance(run.model, DMMNet):
        # the model alone, in dmmlib.checkpoints' format, for `predict --checkpoint RUN/model.pt`
        save_checkpoint(run.run_dir / "model.pt", run.model, extra={"step": run.step}, overwrite=True)

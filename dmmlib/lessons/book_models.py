"""The book's shared models: one proposal net and its caches, f_theta's starting weights, and the DMM-Nets.

The paper builds DMM-Net on COCO-pretrained networks: a Mask R-CNN proposal net, and a
*separate* copy of a Mask R-CNN backbone as the matching features f_theta ("sharing backbone
leads to worse results", Sec. 4.1). Nothing can be downloaded where the book is built, so
the book's "COCO" is the synthetic benchmark's train split: chapter 6 trains one
class-agnostic Mask R-CNN on it (:func:`prepare_proposals`), runs it once over the train and
val splits into :class:`~dmmlib.proposals.ProposalCache` folders (the proposals every later
model trains and is evaluated on), and copies its ResNet trunk into a file from which every
DMM-Net of chapters 8, 9 and 11 initialises f_theta (a copy: the proposal net is never
trained again).

Everything is cached under ``data/proposals-<profile>-<key>/``; the key hashes the
benchmark's ``meta.json``, the proposal net's training settings and the source of the code
that trains and runs it, so a change to any of them trains afresh instead of serving stale
proposals. Every step is idempotent and resumable: an interrupted training continues from
its last checkpoint, a half-filled cache from its last frame.

The DMM-Nets (:func:`train_unit`). Every model the book trains is one *unit*: a model
``kind`` (:data:`KINDS`) and a ``seed``, trained once per (settings, code) under
``data/runs/book-models-<profile>/<kind>-s<seed>-<key>/`` with checkpoints every few steps,
so a killed run resumes where it stopped. The seed fixes the refinement head's initial
weights, the training clips and their augmentation; f_theta always starts from the
proposal net's trunk. Next to the training loss, each unit logs a *held-out* loss --
its training objective on fixed clips of the val split -- every few steps: the learning
curves of chapters 8 and 9. Chapter 8 trains the book's model (``ft2``, seed 0); chapter 9
the rest of Table 4; :func:`publish_book_model` makes the first the default of
``python -m dmmlib track`` and ``predict``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dmmlib import (
    cost,
    features,
    losses,
    matchers,
    matching,
    model as model_module,
    projections,
    refinement,
    train_config as train_config_module,
    training,
    unrolled,
)
from dmmlib.checkpoints import TRAINING_CHECKPOINT_DIR, checkpoint_paths, load_checkpoint, publish_default_model
from dmmlib.data import clips as data_clips
from dmmlib.data.clips import ClipDataset, ClipSampler
from dmmlib.data.davis import DavisDataset
from dmmlib.data.generate import ensure_synthetic
from dmmlib.data.paths import data_dir, runs_dir
from dmmlib.device import pick_device
from dmmlib.fileio import atomic_path, atomic_write_text, exclusive
from dmmlib.lessons.results import source_digest
from dmmlib.lessons.settings import BOOK_MODELS, WORKERS
from dmmlib.model import DMMNet
from dmmlib.profiles import active_profile, by_profile
from dmmlib.proposals import sources as proposals_sources
from dmmlib.proposals.cache import ProposalCache
from dmmlib.proposals.sources import cached_source
from dmmlib.train_config import TrainConfig, profile_config
from dmmlib.unrolled import UnrolledClip, clip_length, clip_proposals, collate_clips
from dmmlib.proposals import compute as proposals_compute
from dmmlib.proposals import frames as proposals_frames
from dmmlib.proposals import net as proposals_net
from dmmlib.proposals import train as proposals_train
from dmmlib.proposals.compute import compute_proposals
from dmmlib.proposals.train import load_proposal_net, train_config_for_profile, train_proposal_net

SPLITS = ("train", "val")


@dataclass(frozen=True)
class ProposalAssets:
    """Where the book's pretrained pieces of a profile are.

    ``root``: the synthetic benchmark; ``work``: their folder; ``checkpoint``: the trained
    proposal net; ``caches``: split -> ProposalCache folder of its top-50 proposals;
    ``f_theta``: its ResNet trunk as a torchvision ``state_dict`` (conv1 .. layer3 on the CPU net).
    """

    root: Path
    work: Path
    checkpoint: Path
    caches: dict
    f_theta: Path


def proposal_work_dir(profile: str | None = None) -> Path:
    """``data/proposals-<profile>-<key>``: key = benchmark + training settings + code (see the module docstring)."""
    profile = active_profile() if profile is None else profile
    root = ensure_synthetic(profile=profile, progress=False)
    config = dataclasses.asdict(train_config_for_profile(profile))
    code = source_digest(proposals_net, proposals_train, proposals_compute, proposals_frames)
    payload = json.dumps({"meta": hashlib.sha1((root / "meta.json").read_bytes()).hexdigest(), "config": config,
                          "code": code}, sort_keys=True)
    return data_dir() / f"proposals-{profile}-{hashlib.sha1(payload.encode()).hexdigest()[:10]}"


_PREPARED: dict = {}  # work folder -> ProposalAssets prepared by this process


def prepare_proposals(profile: str | None = None, progress: bool = False) -> ProposalAssets:
    """Train (or reuse) the profile's proposal net, fill its train and val caches, save f_theta's trunk.

    Idempotent: a second call only checks that every file is there (within one process, that the
    files it prepared still exist).
    """
    profile = active_profile() if profile is None else profile
    root = ensure_synthetic(profile=profile, progress=False)
    work = proposal_work_dir(profile)
    known = _PREPARED.get(work)
    if known is not None and known.checkpoint.is_file() and known.f_theta.is_file():
        return known
    with exclusive(work):  # one process trains and fills; the others wait, then read
        _PREPARED[work] = _prepare_locked(profile, root, work, progress)
    return _PREPARED[work]


def _prepare_locked(profile: str, root: Path, work: Path, progress: bool) -> ProposalAssets:
    checkpoint = work / "proposal_net.pt"
    train_proposal_net(root, checkpoint, train_config_for_profile(profile), seed=0, resume=True, progress=progress)
    net = load_proposal_net(checkpoint)
    digest = net.digest()[:10]
    caches = {split: work / f"cache-{split}-{digest}" for split in SPLITS}
    for split in SPLITS:
        compute_proposals(root, split, net, caches[split], progress=progress)
    f_theta = work / f"f_theta-{digest}.pt"
    if not f_theta.is_file():
        with atomic_path(f_theta) as tmp:
            torch.save(net.backbone_state_dict(), tmp)
    return ProposalAssets(root, work, checkpoint, caches, f_theta)


def proposals_prepared(profile: str | None = None) -> bool:
    """Whether :func:`prepare_proposals` of ``profile`` has finished (f_theta's file is written last)."""
    return any(proposal_work_dir(profile).glob("f_theta-*.pt"))


def unit_trained(kind: str, seed: int, profile: str | None = None) -> bool:
    """Whether :func:`train_unit` of ``kind`` and ``seed`` has finished (then it only reads the model)."""
    return (run_dir(kind, seed, profile) / "done.json").is_file()


# -- the DMM-Nets --------------------------------------------------------------------------------

#: ``frozen``: f_theta (so the cost of Eq. 1) frozen at the proposal net's trunk, only the refinement
#: head trains (Table 4's rows 1-3); ``ft1``/``ft2``/``ft3``: trained end to end through the matching
#: layer with 1/2/3 unrolled frames (rows 4-6); ``ft2-plain``: ``ft2`` with the paper's plain head.
KINDS = ("frozen", "ft1", "ft2", "ft3", "ft2-plain")
FROZEN_UNROLL = 2  # the frozen model's head trains on the paper's default clips
BOOK_MODEL = ("ft2", 0)  # the book's model: chapter 8 trains it, track/predict use it
VERSION = 1  # bump when something that changes the trained models changes outside the hashed code
#: Seconds per training step of each kind relative to the frozen model's (cpu, 2026-11-30, burn-in 4):
#: the order in which :func:`train_units` starts them.
RELATIVE_COST = {"frozen": 1.0, "ft1": 0.9, "ft2": 1.35, "ft2-plain": 1.3, "ft3": 1.75}
HELDOUT_SEED = 90210  # the held-out clips are the same for every model
HELDOUT_LOG = "heldout_log.jsonl"

# the modules whose source decides what a training run produces: a change to any retrains
TRAINING_CODE = (cost, features, losses, matchers, matching, model_module, projections, refinement,
                 train_config_module, training, unrolled, data_clips, proposals_sources)


def model_budget(profile: str | None = None) -> dict:
    """The profile's :data:`dmmlib.lessons.settings.BOOK_MODELS` entry, as a fresh dict."""
    return dict(by_profile(BOOK_MODELS, profile))


def kind_unroll(kind: str) -> int:
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}; expected one of {KINDS}")
    return FROZEN_UNROLL if kind == "frozen" else int(kind[2])


def train_config(kind: str, seed: int, profile: str | None = None, budget: dict | None = None) -> TrainConfig:
    """The :class:`~dmmlib.train_config.TrainConfig` of model ``kind`` for ``seed``.

    Starts from the profile's config (losses, learning rates) and sets the book's budget:
    ``steps`` steps of ``batch`` clips for every kind (the same number of training clips),
    every step logged (the chapters plot every step; gpu.yaml logs every 10th),
    the trained proposal net's cached proposals warped along with an axis-aligned
    augmentation, f_theta initialised from the proposal net's trunk, the pass-through head
    (the paper's plain head for ``ft2-plain``) on the trunk's levels.
    """
    profile = active_profile() if profile is None else profile
    budget = model_budget(profile) if budget is None else budget
    assets = prepare_proposals(profile)
    base = profile_config(profile)
    levels = list(budget["levels"])
    model = dict(base.model, refine=True, refine_width=budget["refine_width"], pool_levels=levels,
                 refine_levels=levels, refine_mode="plain" if kind.endswith("plain") else "pass-through")
    steps = int(budget["steps"])
    return dataclasses.replace(
        base, seed=int(seed), unroll=kind_unroll(kind), batch_size=budget["batch"], max_steps=steps,
        clips_per_epoch=max(steps, 1) * budget["batch"], epochs=1, frame_size=list(budget["frame_size"]),
        checkpoint_every=budget["checkpoint_every"], keep_checkpoints=1, log_every=1, model=model,
        proposals="cache", proposal_cache=str(assets.caches["train"]), augment=True, augment_axis_aligned=True,
        backbone_weights=str(assets.f_theta), lr_pretrained=budget["lr_pretrained"], lr_random=budget["lr_random"],
        assignment_loss_weight=budget["assignment_loss_weight"], loss=budget.get("loss", base.loss),
        burn_in=budget.get("burn_in", 0), lr_schedule=budget.get("lr_schedule", base.lr_schedule),
    )


def build_model(cfg: TrainConfig, frozen: bool) -> DMMNet:
    """The model of ``cfg`` (head initialised from ``cfg.seed``); ``frozen``: f_theta does not train."""
    model = training.build_model(cfg)
    if frozen:
        model.features.requires_grad_(False)  # Adam gets only the refinement head (training.parameter_groups)
    return model


def _key(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


def run_dir(kind: str, seed: int, profile: str | None = None, budget: dict | None = None) -> Path:
    """``data/runs/book-models-<profile>/<kind>-s<seed>-<key>``: key = settings + the training code."""
    profile = active_profile() if profile is None else profile
    budget = model_budget(profile) if budget is None else budget
    cfg = train_config(kind, seed, profile, budget)
    key = _key({"version": VERSION, "kind": kind, "config": cfg.to_dict(), "budget": budget,
                "code": source_digest(*TRAINING_CODE)})
    return runs_dir() / f"book-models-{profile}" / f"{kind}-s{seed}-{key}"


@dataclass
class TrainedModel:
    """A trained unit: the model (eval mode, CPU), its folder, its training log and held-out log, training seconds."""

    model: DMMNet
    run_dir: Path
    log: list
    heldout: list
    seconds: float


def heldout_clips(cfg: TrainConfig, profile: str, budget: dict) -> ClipDataset:
    """``budget["heldout_clips"]`` fixed clips of the val split (no augmentation) with ``cfg``'s length and size."""
    root = ensure_synthetic(profile=profile, progress=False)
    sampler = ClipSampler(DavisDataset(root, "val"), clip_length=clip_length(cfg), seed=HELDOUT_SEED,
                          size=tuple(cfg.frame_size), augment=None, max_objects=cfg.max_objects)
    return ClipDataset(sampler, budget["heldout_clips"])


def heldout_stats(model: DMMNet, cfg: TrainConfig, profile: str | None = None, budget: dict | None = None) -> dict:
    """The training objective of ``cfg`` (its unroll, loss, proposals) on the held-out clips; no gradient.

    Returns the means over the clips of the objective (``loss``) and of its parts as
    :class:`~dmmlib.unrolled.UnrolledClip` logs them (``mask_loss``, ``assignment_loss``, the
    thresholded ``iou``, ``assignment_accuracy``). With a burn-in, the clips carry the longest one
    (``cfg.burn_in``): the objective on the oldest memory the model trains on.
    """
    profile = active_profile() if profile is None else profile
    budget = model_budget(profile) if budget is None else budget
    clips = heldout_clips(cfg, profile, budget)
    source = cached_source(ProposalCache(prepare_proposals(profile).caches["val"]))
    unrolled_clip = UnrolledClip(model, cfg)
    was_training = model.training
    model.eval()
    device = model.device
    sums: dict[str, torch.Tensor] = {}  # summed on the device, read once at the end
    with torch.no_grad():
        for start in range(0, len(clips), 8):
            indices = range(start, min(start + 8, len(clips)))
            frames, labels, metas = collate_clips([clips[i] for i in indices])
            proposals = clip_proposals(frames, labels, metas, [(0, i) for i in indices], source, HELDOUT_SEED)
            proposals = [[p.to(device) for p in per_frame] for per_frame in proposals]
            loss, stats = unrolled_clip(frames.to(device), labels.to(device), proposals, cfg.burn_in)
            for name, value in {"loss": loss, **stats}.items():
                sums[name] = sums.get(name, 0.0) + value.detach().float() * len(indices)
    model.train(was_training)
    return {name: float(value) / len(clips) for name, value in sums.items()}


def read_jsonl(path: Path) -> list:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def _record_heldout(folder: Path, step: int, values: dict) -> None:
    """Add the held-out statistics of ``step`` to the folder's log, replacing those a resumed run logged before."""
    kept = [r for r in read_jsonl(folder / HELDOUT_LOG) if r["step"] < step]
    atomic_write_text(folder / HELDOUT_LOG, "".join(json.dumps(r) + "\n" for r in [*kept, {"step": step, **values}]))


def train_unit(kind: str, seed: int, profile: str | None = None, budget: dict | None = None,
               progress: bool = False) -> TrainedModel:
    """Train model ``kind`` of ``seed`` (or read it back): idempotent, and resumable after a kill.

    A finished unit (``done.json``) is loaded from its ``model.pt``; an unfinished one continues
    from its last checkpoint. The held-out loss is logged at step 0 and every ``heldout_every``
    steps (``heldout_log.jsonl``).
    """
    profile = active_profile() if profile is None else profile
    budget = model_budget(profile) if budget is None else budget
    folder = run_dir(kind, seed, profile, budget)
    done = folder / "done.json"
    if not done.is_file():
        with exclusive(folder):  # a second process asking waits, then reads
            if not done.is_file():
                _train(kind, seed, profile, budget, folder, progress)
    log = training.read_log(folder)
    return TrainedModel(load_checkpoint(folder / "model.pt"), folder, log, read_jsonl(folder / HELDOUT_LOG),
                        float(json.loads(done.read_text())["seconds"]))


def _train(kind: str, seed: int, profile: str, budget: dict, folder: Path, progress: bool) -> None:
    cfg = train_config(kind, seed, profile, budget)
    # on the device training.train will use, already for the held-out loss at step 0
    model = build_model(cfg, frozen=kind == "frozen").to(pick_device(cfg.device))
    every = int(budget["heldout_every"])

    def on_log(record: dict) -> None:
        if record["step"] % every == 0 or record["step"] == cfg.max_steps:
            _record_heldout(folder, int(record["step"]), heldout_stats(model, cfg, profile, budget))

    resume = bool(checkpoint_paths(folder))
    if not resume:
        folder.mkdir(parents=True, exist_ok=True)
        _record_heldout(folder, 0, heldout_stats(model, cfg, profile, budget))
    result = training.train(cfg, folder, resume=resume, force=not resume, model=model, progress=progress,
                            on_log=on_log)
    if result.step != cfg.max_steps:
        raise RuntimeError(f"{folder}: trained {result.step} of {cfg.max_steps} steps")
    seconds = float(sum(r["seconds"] for r in training.read_log(folder)))
    atomic_write_text(folder / "done.json", json.dumps({"seconds": seconds, "steps": result.step}))
    shutil.rmtree(folder / TRAINING_CHECKPOINT_DIR, ignore_errors=True)  # model.pt is all a finished unit needs


def _one_torch_thread() -> None:
    torch.set_num_threads(1)


def in_processes(function, calls: list[tuple], workers: int) -> None:
    """``function(*args)`` for every ``args`` of ``calls``, ``workers`` at a time, each in a process of its own.

    For the book's cached, idempotent steps (:func:`train_unit`, ``table4.evaluate_unit``): their results
    are files, so nothing comes back but an error, which is raised here. The processes are spawned, not
    forked (a fork of a process whose torch thread pools are running can hang), and run one torch thread
    each. With ``workers`` <= 1 or a single call, the calls run here, one after the other.
    """
    if workers <= 1 or len(calls) <= 1:
        for args in calls:
            function(*args)
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(workers, len(calls)), mp_context=context, initializer=_one_torch_thread) as pool:
        for future in [pool.submit(function, *args) for args in calls]:
            future.result()


def _train_only(kind: str, seed: int, profile: str) -> None:
    train_unit(kind, seed, profile)  # the model stays on disk: nothing to send back


def train_units(units: list[tuple[str, int]], profile: str | None = None,
                workers: int | None = None) -> dict[tuple[str, int], TrainedModel]:
    """:func:`train_unit` for every ``(kind, seed)`` of ``units``, the untrained ones ``workers`` at a time.

    ``workers`` defaults to the profile's :data:`dmmlib.lessons.settings.WORKERS`. The longest units start
    first (:data:`RELATIVE_COST`), so that the workers finish together. Returns the trained units, read
    back here, in the order given.
    """
    profile = active_profile() if profile is None else profile
    workers = by_profile(WORKERS, profile) if workers is None else workers
    todo = sorted(((kind, seed, profile) for kind, seed in units if not unit_trained(kind, seed, profile)),
                  key=lambda call: -RELATIVE_COST[call[0]])
    in_processes(_train_only, todo, workers)
    return {(kind, seed): train_unit(kind, seed, profile) for kind, seed in units}


def publish_book_model(profile: str | None = None) -> Path:
    """Make the book's model (:data:`BOOK_MODEL`, trained if needed) the default of ``track`` and ``predict``."""
    profile = active_profile() if profile is None else profile
    kind, seed = BOOK_MODEL
    unit = train_unit(kind, seed, profile)
    assets = prepare_proposals(profile)
    return publish_default_model(unit.run_dir / "model.pt", profile, {
        "trained_by": f"the book, chapter 8 ({kind}, seed {seed})", "run": str(unit.run_dir),
        "proposal_checkpoint": str(assets.checkpoint), "frame_size": list(model_budget(profile)["frame_size"]),
    })

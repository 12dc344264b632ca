"""Table 4 of the paper on our synthetic benchmark (Sec. 4.3, "Greedy vs. Hungarian vs. Our
Matching Layer", "End-to-End Fine-tuning", "Number of Unrolled Steps").

The experiment (chapter 9 of the book):

* **Rows 1-3, frozen cost.** One model per seed whose matching features f_theta (and so
  the cost C of Eq. 1) are *not* trained -- frozen at initialisation (random here,
  ImageNet/COCO-pretrained when weights are available) -- while its refinement head
  *is* trained with the features frozen, so it produces sensible masks. The same
  weights are evaluated with three matchers: greedy, Hungarian and the DMM layer
  (Alg. 1 at the paper's settings). Only the matcher differs.
* **Rows 4-6, fine-tuned through the layer.** Per seed, the same initial model trained
  end to end -- features, cost and refinement together, the gradient passing through
  Alg. 1 -- with 1, 2 and 3 unrolled steps, evaluated with the DMM layer. Every model
  of a seed has the same budget: ``steps x batch`` training clips (:data:`TABLE4`).

Proposals. The training config's ``oracle-noisy`` source cuts proposals from the
*tracked* objects only, so no proposal ever looks like a tracked object except the
right one and matching is trivial. A real class-agnostic proposal network proposes
*every* object. :func:`instance_proposals` mimics a good one on our benchmark: one
jittered proposal per instance of the ``Instances`` map (tracked objects *and* their
look-alike distractors), jittered duplicates, fragments (part of an instance), random
noise boxes, scores that do not reveal which instance is tracked, top-50 kept. Every
row is trained and evaluated with it (the paper's "same set of mask proposals"); the
val split's proposals are computed once into a :class:`dmmlib.proposals.ProposalCache`.

Results are cached: each model under ``data/runs/table4-<profile>/<key>/`` (``key``
hashes everything that determines the run), its evaluations beside it as JSON, so a
second :func:`run_table4` only reads files.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dmmlib.errors import DMMInputError
from dmmlib.fileio import atomic_write_text
from dmmlib.profiles import active_profile, by_profile

VERSION = 1  # bump when anything that changes the numbers changes: old caches are then ignored

# -- the rows --------------------------------------------------------------------------------

ROWS = ("greedy", "hungarian", "dmm-frozen", "ft-unroll1", "ft-unroll2", "ft-unroll3")
ROW_LABELS = {
    "greedy": "Greedy (frozen cost)",
    "hungarian": "Hungarian (frozen cost)",
    "dmm-frozen": "DMM layer (frozen cost)",
    "ft-unroll1": "DMM layer, fine-tuned, unroll 1",
    "ft-unroll2": "DMM layer, fine-tuned, unroll 2",
    "ft-unroll3": "DMM layer, fine-tuned, unroll 3",
}
# row -> (which trained model, matcher at evaluation)
ROW_MODEL = {
    "greedy": ("frozen", "greedy"),
    "hungarian": ("frozen", "hungarian"),
    "dmm-frozen": ("frozen", "dmm"),
    "ft-unroll1": ("ft1", "dmm"),
    "ft-unroll2": ("ft2", "dmm"),
    "ft-unroll3": ("ft3", "dmm"),
}
FROZEN_UNROLL = 2  # the frozen model's head trains on the paper's default clips (unroll 2)

# The paper's Table 4 (YouTube-VOS train-val split, J_M / F_M in %), from
# shared/notes/paper-vs-code.md. Proposal net X101 throughout; the paper has no unroll-1 row.
PAPER_TABLE4 = {
    "greedy": (57.1, 68.1),
    "hungarian": (57.3, 68.4),
    "dmm-frozen": (57.3, 68.3),
    "ft-unroll1": (None, None),
    "ft-unroll2": (59.0, 71.7),
    "ft-unroll3": (58.2, 71.4),
}
PAPER_OTHER_ROWS = {  # rows of Table 4 we do not run (other proposal networks)
    "fine-tuned, unroll 2, proposal net R50": (58.5, 71.4),
    "fine-tuned, unroll 2, proposal net fine-tuned on YouTube-VOS": (60.2, 73.0),
}

# -- budgets -----------------------------------------------------------------------------------

TABLE4 = {
    # steps x batch training clips per model; frame_size [H, W] at which models train and run;
    # seeds: one set of models each; val_videos: the first N of the val split (None: all);
    # refine: with the refinement head (see REFINE_NOTE) and its width.
    "smoke": {"steps": 2, "batch": 2, "frame_size": [32, 56], "seeds": (0,), "val_videos": 1,
              "refine": False, "refine_width": 8},
    "cpu": {"steps": 30, "batch": 2, "frame_size": [64, 112], "seeds": (0, 1, 2), "val_videos": 6,
            "refine": False, "refine_width": 16},
    "gpu": {"steps": 2000, "batch": 24, "frame_size": [240, 432], "seeds": (0, 1, 2, 3, 4), "val_videos": None,
            "refine": True, "refine_width": 64},
}
REFINE_NOTE = (
    "Without the refinement head (refine: False) the output is the matched proposal itself, so the table "
    "measures matching alone. The frozen model then has nothing to train, and the fine-tuned models keep "
    "X^ > 0.01 while training (the authors' release; ModelConfig.train_keep_threshold): with the paper's row-max "
    "X~ the matched proposal P^ / max X~ does not depend on X^ at all, so no gradient would reach the cost. "
    "We use it in the smoke and cpu profiles because the refinement head does not learn to output masks "
    "within a CPU budget (40-80 steps leave its IoU near 0; chapter 8)."
)
TRAIN_KEEP_THRESHOLD = 0.01


def table4_budget(profile: str | None = None) -> dict:
    """The :data:`TABLE4` entry of ``profile`` (default: the active one), as a fresh dict."""
    return dict(by_profile(TABLE4, profile))


# -- the idealised proposal network ------------------------------------------------------------


@dataclass(frozen=True)
class IdealProposals:
    """Settings of :func:`instance_proposals`, "an idealised class-agnostic proposal network".

    Per instance of the instance map (visible area >= ``min_area`` pixels): one main
    proposal whose box edges move by up to ``jitter`` of the box side (the mask is the
    instance cut by that box, so a shrunk box clips it); ``duplicates`` more with twice
    that jitter; ``fragments`` proposals covering a random 35-70 % slice of the box.
    Plus ``noise`` random boxes with elliptical masks. Scores are drawn so that main
    proposals tend to rank first, but they carry no hint of which instance is tracked.
    At most ``top_k`` proposals are kept (Sec. 3: top-50).
    """

    jitter: float = 0.08
    duplicates: int = 1
    fragments: int = 1
    noise: int = 10
    min_area: int = 4
    top_k: int = 50
    mask_size: int = 28

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _crop(binary: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """RoIAlign of full-image masks ``[k, H, W]`` over boxes ``[k, 4]`` -> ``[k, S, S]`` (the inverse of paste)."""
    from torchvision.ops import roi_align

    if boxes.shape[0] == 0:
        return torch.zeros(0, size, size)
    rois = torch.cat([torch.arange(boxes.shape[0], dtype=torch.float32)[:, None], boxes], dim=1)
    crops = roi_align(binary[:, None].float(), rois, (size, size), spatial_scale=1.0, sampling_ratio=2, aligned=True)
    return crops[:, 0].clamp(0.0, 1.0)


def _jittered(box: np.ndarray, amount: float, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    d = rng.uniform(-amount, amount, size=4) * np.array([w, h, w, h])
    x1, x2 = sorted((float(np.clip(x1 + d[0], 0, width)), float(np.clip(x2 + d[2], 0, width))))
    y1, y2 = sorted((float(np.clip(y1 + d[1], 0, height)), float(np.clip(y2 + d[3], 0, height))))
    return np.array([x1, y1, max(x2, x1 + 1), max(y2, y1 + 1)])


def _fragment(box: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random slice (35-70 %) of a box along a random axis, from a random end."""
    x1, y1, x2, y2 = box
    part = rng.uniform(0.35, 0.7)
    if rng.random() < 0.5:
        cut = (x2 - x1) * part
        return np.array([x1, y1, x1 + cut, y2]) if rng.random() < 0.5 else np.array([x2 - cut, y1, x2, y2])
    cut = (y2 - y1) * part
    return np.array([x1, y1, x2, y1 + cut]) if rng.random() < 0.5 else np.array([x1, y2 - cut, x2, y2])


def instance_proposals(instances: np.ndarray, rng: np.random.Generator, settings: IdealProposals = IdealProposals()):
    """Proposals for one frame from its instance map ``[H, W]`` (0 background, 255 void, else instance ids).

    Returns a :class:`dmmlib.proposals.FrameProposals` sorted by score, at most
    ``settings.top_k`` of them; deterministic for a given ``rng`` state.
    """
    from dmmlib.proposals import FrameProposals

    instances = np.asarray(instances)
    if instances.ndim != 2:
        raise DMMInputError(f"instance_proposals: instances must be a 2-D map [H, W]; got shape {instances.shape}")
    height, width = instances.shape
    boxes, scores, sources = [], [], []
    for instance in (int(i) for i in np.unique(instances) if i not in (0, 255)):
        mask = instances == instance
        if int(mask.sum()) < settings.min_area:
            continue  # a sliver: a real detector misses it too
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        tight = np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.float64)
        boxes.append(_jittered(tight, settings.jitter, rng, height, width))
        scores.append(rng.uniform(0.6, 1.0))
        sources.append(instance)
        for _ in range(settings.duplicates):
            boxes.append(_jittered(tight, 2 * settings.jitter, rng, height, width))
            scores.append(rng.uniform(0.4, 0.9))
            sources.append(instance)
        for _ in range(settings.fragments):
            boxes.append(_jittered(_fragment(tight, rng), settings.jitter, rng, height, width))
            scores.append(rng.uniform(0.2, 0.8))
            sources.append(instance)
    box_tensor = torch.tensor(np.array(boxes), dtype=torch.float32).reshape(-1, 4)
    full = torch.from_numpy(np.stack([instances == s for s in sources])) if sources else torch.zeros(0, height, width)
    masks = _crop(full, box_tensor, settings.mask_size)

    # noise: random boxes with a filled ellipse, low scores
    noise_boxes = np.zeros((settings.noise, 4))
    for k in range(settings.noise):
        w, h = rng.uniform(0.05, 0.5) * width, rng.uniform(0.05, 0.5) * height
        x1, y1 = rng.uniform(0, width - w), rng.uniform(0, height - h)
        noise_boxes[k] = (x1, y1, x1 + w, y1 + h)
    grid = (torch.arange(settings.mask_size, dtype=torch.float32) + 0.5) / settings.mask_size * 2 - 1
    ellipse = ((grid[:, None] ** 2 + grid[None, :] ** 2) <= 1.0).float()
    noise_scores = rng.uniform(0.0, 0.6, size=settings.noise)

    all_boxes = torch.cat([box_tensor, torch.tensor(noise_boxes, dtype=torch.float32)])
    all_masks = torch.cat([masks, ellipse.expand(settings.noise, -1, -1)])
    all_scores = torch.tensor(np.concatenate([np.array(scores, dtype=np.float64), noise_scores]), dtype=torch.float32)
    order = torch.argsort(all_scores, descending=True, stable=True)[: settings.top_k]
    return FrameProposals(all_boxes[order].contiguous(), all_scores[order].contiguous(),
                          all_masks[order].contiguous(), (height, width))


def instance_proposal_source(settings: IdealProposals = IdealProposals()):
    """A training proposal source (see :data:`dmmlib.training.ProposalSource`) built on :func:`instance_proposals`.

    It needs clips that carry their instance maps (``meta["instances"]`` ``[T, H, W]``,
    from a :class:`dmmlib.data.ClipSampler` made with ``instances=``); the frame is
    found by ``meta["frame_id"]`` in ``meta["frame_indices"]``.
    """

    def source(frame, labels, meta, rng):
        del frame, labels
        if "instances" not in meta:
            raise DMMInputError("instance proposals need clips with instance maps: build the ClipSampler with instances=")
        t = [int(i) for i in meta["frame_indices"]].index(int(meta["frame_id"]))
        instances = np.asarray(meta["instances"][t]).astype(np.int64)
        return instance_proposals(instances, rng, settings)

    return source


PROPOSAL_SEED = 20190  # the val proposals are the same for every row and every seed


def val_proposal_cache(root: str | Path, names: list[str], folder: str | Path,
                       settings: IdealProposals = IdealProposals()):
    """Fill (once) a ProposalCache with :func:`instance_proposals` for frames 1.. of the val ``names``."""
    from dmmlib.data import DavisDataset
    from dmmlib.proposals import ProposalCache

    cache = ProposalCache(folder)
    instances = DavisDataset(root, "val", annotations="Instances")
    all_names = instances.names
    for name in names:
        sequence = instances.sequence(name)
        for index in range(1, len(sequence)):
            if not cache.has(name, index):
                rng = np.random.default_rng([PROPOSAL_SEED, all_names.index(name), index])
                cache.put(name, index, instance_proposals(sequence.labels(index), rng, settings))
    return cache


# -- configs, models, training ------------------------------------------------------------------


def _key(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


def train_config(kind: str, seed: int, profile: str | None = None, budget: dict | None = None):
    """The :class:`dmmlib.training.TrainConfig` of model ``kind`` ("frozen", "ft1", "ft2", "ft3") for ``seed``.

    Starts from the profile's training config (``configs/<profile>.yaml``: losses, learning
    rates, augmentation) and sets the Table 4 budget: ``steps`` steps of ``batch`` clips
    for every kind, so every model sees the same number of training clips.
    """
    from dmmlib import training

    profile = active_profile() if profile is None else profile
    budget = table4_budget(profile) if budget is None else budget
    unroll = FROZEN_UNROLL if kind == "frozen" else int(kind[2:])
    cfg = training.profile_config(profile)
    model = dict(cfg.model)
    model["refine"] = bool(budget["refine"])
    model["refine_width"] = budget["refine_width"]
    if not budget["refine"] and kind != "frozen":
        model["train_keep_threshold"] = TRAIN_KEEP_THRESHOLD  # see REFINE_NOTE
    steps = 0 if kind == "frozen" and not budget["refine"] else budget["steps"]  # nothing to train
    return dataclasses.replace(
        cfg, seed=int(seed), unroll=unroll, batch_size=budget["batch"], max_steps=steps,
        clips_per_epoch=max(budget["steps"], 1) * budget["batch"], epochs=1, frame_size=list(budget["frame_size"]),
        checkpoint_every=max(budget["steps"], 1), keep_checkpoints=1, model=model, num_workers=0,
        proposals="oracle-noisy",  # unused: train() receives the instance-proposal source
    )


def build_model(cfg, frozen: bool):
    """The model of ``cfg`` (initialised from ``cfg.seed``); ``frozen``: feature weights do not train."""
    from dmmlib import training

    model = training.build_model(cfg)
    if frozen:
        model.features.requires_grad_(False)  # Adam gets only the refinement head (see parameter_groups)
    return model


def clip_dataset(cfg, root: str | Path):
    """Training clips of ``cfg`` from the synthetic train split, carrying their instance maps."""
    from dmmlib import data as vos

    sampler = vos.ClipSampler(
        vos.DavisDataset(root, cfg.split), clip_length=cfg.unroll + 1, seed=cfg.seed, size=tuple(cfg.frame_size),
        augment=vos.AffineAugment() if cfg.augment else None, max_objects=cfg.max_objects,
        instances=vos.DavisDataset(root, cfg.split, annotations="Instances"),
    )
    return vos.ClipDataset(sampler, cfg.clips_per_epoch)


def run_root(profile: str | None = None) -> Path:
    from dmmlib.data import data_dir

    profile = active_profile() if profile is None else profile
    return data_dir() / "runs" / f"table4-{profile}"


def model_key(kind: str, cfg, settings: IdealProposals) -> str:
    """The cache folder name of a model: its kind, seed and a hash of everything that determines it.

    Settings that are None are left out of the hash, so a new, unset TrainConfig field (another
    module's feature, off by default) does not invalidate the cache; any value that is set counts.
    """
    config = {k: v for k, v in cfg.to_dict().items() if v is not None}
    return f"{kind}-seed{cfg.seed}-{_key({'v': VERSION, 'kind': kind, 'cfg': config, 'props': settings.to_dict()})}"


def train_model(kind: str, seed: int, profile: str | None = None, budget: dict | None = None,
                settings: IdealProposals = IdealProposals(), progress: bool = False):
    """Train (or load from the cache) model ``kind`` for ``seed``; returns ``(model, run_dir, log)``."""
    from dmmlib import data as vos
    from dmmlib import training
    from dmmlib.model import load_checkpoint

    profile = active_profile() if profile is None else profile
    cfg = train_config(kind, seed, profile, budget)
    run_dir = run_root(profile) / model_key(kind, cfg, settings)
    if (run_dir / "model.pt").is_file() and (run_dir / "done.json").is_file():
        return load_checkpoint(run_dir / "model.pt"), run_dir, training.read_log(run_dir)
    root = vos.ensure_synthetic(profile=profile, progress=False)
    model = build_model(cfg, frozen=kind == "frozen")
    if not any(p.requires_grad for p in model.parameters()) or cfg.max_steps == 0:
        from dmmlib.model import save_checkpoint  # nothing to train: the initial model is the model

        run_dir.mkdir(parents=True, exist_ok=True)
        save_checkpoint(run_dir / "model.pt", model, extra={"step": 0}, overwrite=True)
        atomic_write_text(run_dir / "done.json", json.dumps({"seconds": 0.0, "steps": 0}))
        return model.eval(), run_dir, []
    before = {k: v.clone() for k, v in model.features.state_dict().items()} if kind == "frozen" else None
    started = time.perf_counter()
    result = training.train(cfg, run_dir, force=True, model=model, dataset=clip_dataset(cfg, root),
                            proposal_source=instance_proposal_source(settings), progress=progress)
    seconds = time.perf_counter() - started
    if before is not None:  # the frozen model's cost must be the one it started with
        after = result.model.features.state_dict()
        if any(not torch.equal(before[k], after[k].cpu()) for k in before):
            raise RuntimeError("the frozen model's feature weights changed during head training")
    atomic_write_text(run_dir / "done.json", json.dumps({"seconds": seconds, "steps": result.step}))
    for path in (run_dir / training.CHECKPOINT_DIR).glob("*.pt"):  # model.pt is all the table needs
        path.unlink()
    return result.model, run_dir, result.log


# -- evaluation -------------------------------------------------------------------------------------


def _resize_templates(templates: torch.Tensor, size) -> torch.Tensor:
    import torch.nn.functional as F

    soft = F.interpolate(templates, size=tuple(size), mode="area")
    peak = soft.amax(dim=(-1, -2), keepdim=True)
    return (soft >= peak.clamp(max=0.5)).float()


def track_sequence(model, sequence, cache, size, diagnostics: dict | None = None) -> list[np.ndarray]:
    """Track one val sequence with ``model`` on the cached proposals; label maps at the frames' size.

    The model runs at ``size`` (frames resized bilinearly, templates by area, proposal boxes
    rescaled by the model); logits are resized back. If ``diagnostics`` (a dict of lists)
    is given, one entry per (frame, tracked object visible in the ground truth) is appended:
    ``has_right`` (some proposal has IoU >= 0.5 with the object), ``match_ok`` (the matched
    proposal has IoU >= 0.5 with it: the right object, perhaps a duplicate proposal of it),
    ``matched_iou`` / ``output_iou`` (IoU with the ground truth of the matched proposal and
    of the output), ``agree_hungarian`` (argmax of X^ equals the Hungarian assignment of
    the same cost matrix), ``match_error`` (a right proposal exists but another was matched).
    IoUs are measured at the model's ``size``.
    """
    import torch.nn.functional as F

    from dmmlib import matching
    from dmmlib.losses import best_proposal, mask_iou
    from dmmlib.model import labels_from_logits

    first = sequence.labels(0)
    ids = [int(i) for i in np.unique(first) if i not in (0, 255)]
    lookup = np.array([0] + ids, dtype=np.uint8)
    height, width = first.shape
    size = tuple(int(v) for v in size)

    def frame_tensor(index):
        tensor = torch.from_numpy(sequence.frame(index)).permute(2, 0, 1)[None].float().div_(255.0)
        return F.interpolate(tensor, size=size, mode="bilinear", antialias=True, align_corners=False)

    labels = [first.astype(np.uint8)]
    model.eval()
    with torch.no_grad():
        templates = torch.from_numpy(np.stack([first == i for i in ids])).float()[None]
        state = model.init_state(frame_tensor(0), _resize_templates(templates, size))
        for index in range(1, len(sequence)):
            proposals = cache.get(sequence.name, index)
            out, state = model.step(frame_tensor(index), [proposals], state)
            logits = F.interpolate(out.logits, size=(height, width), mode="bilinear", align_corners=False)
            labels.append(lookup[labels_from_logits(logits, out.present)[0].numpy()])
            if diagnostics is not None:
                truth = sequence.labels(index)
                gt = torch.from_numpy(np.stack([truth == i for i in ids])).float()[None]
                gt_small = (F.interpolate(gt, size=size, mode="area") >= 0.5).float()[0]  # [n, h, w]
                visible = gt_small.flatten(1).any(1)
                best = best_proposal(gt_small, out.proposal_masks[0], 0.5)  # [n], -1: no proposal reaches 0.5
                real = out.proposal_valid[0] | out.no_proposal[0]
                hungarian = matching.hungarian_match(out.cost, template_mask=state.template_valid,
                                                     proposal_mask=real[None])[0].argmax(-1)
                matched = (out.matched_masks[0] / out.x_tilde[0].amax(-1).clamp_min(1e-6)[:, None, None]) > 0.5
                predicted = out.logits[0] > 0
                matched_iou = mask_iou(matched[:, None], gt_small.bool()[:, None])[:, 0, 0]
                output_iou = mask_iou(predicted[:, None], gt_small.bool()[:, None])[:, 0, 0]
                for i in range(len(ids)):
                    if not bool(visible[i]):
                        continue
                    ok = bool(out.present[0, i]) and float(matched_iou[i]) >= 0.5
                    diagnostics.setdefault("match_ok", []).append(float(ok))
                    diagnostics.setdefault("match_error", []).append(float(bool(best[i] >= 0) and not ok))
                    diagnostics.setdefault("has_right", []).append(float(best[i] >= 0))
                    diagnostics.setdefault("matched_iou", []).append(float(matched_iou[i]))
                    diagnostics.setdefault("output_iou", []).append(float(output_iou[i]))
                    diagnostics.setdefault("agree_hungarian", []).append(
                        float(out.x_hat[0, i].argmax() == hungarian[i]))
    return labels


def val_names(profile: str | None = None, budget: dict | None = None) -> list[str]:
    from dmmlib.data import DavisDataset, ensure_synthetic

    profile = active_profile() if profile is None else profile
    budget = table4_budget(profile) if budget is None else budget
    names = DavisDataset(ensure_synthetic(profile=profile, progress=False), "val").names
    return names if budget["val_videos"] is None else names[: budget["val_videos"]]


def evaluate(model, matcher: str, root: str | Path, names: list[str], cache, size) -> dict:
    """J_M, F_M (the official DAVIS semantics, :func:`dmmlib.evaluation.evaluate_davis`) and diagnostics.

    The val ``names`` are tracked with ``model`` using ``matcher`` (on a copy of the model),
    written as PNGs into a temporary DAVIS-layout view of the benchmark that lists only
    ``names``, and scored there.
    """
    import tempfile

    from dmmlib.data import DavisDataset
    from dmmlib.evaluation import evaluate_davis
    from dmmlib.maskio import write_label_png

    root = Path(root)
    model = copy.deepcopy(model)
    model.config = dataclasses.replace(model.config, matcher=matcher)
    dataset = DavisDataset(root, "val")
    diagnostics: dict = {}
    with tempfile.TemporaryDirectory(prefix="dmm-table4-") as tmp:
        view = Path(tmp) / "view"
        (view / "ImageSets" / "2017").mkdir(parents=True)
        for folder in ("JPEGImages", "Annotations"):
            (view / folder).symlink_to(root / folder, target_is_directory=True)
        (view / "ImageSets" / "2017" / "val.txt").write_text("\n".join(names) + "\n")
        results = Path(tmp) / "results"
        for name in names:
            sequence = dataset.sequence(name)
            labels = track_sequence(model, sequence, cache, size, diagnostics)
            for frame_name, label in zip(sequence.frame_names, labels):
                write_label_png(results / name / f"{Path(frame_name).stem}.png", label)
        scores = evaluate_davis(view, results, "val", progress=False, workers=1)
    table = scores.global_scores
    summary = {key: float(np.mean(values)) if values else float("nan") for key, values in diagnostics.items()}
    return {"J_M": float(table["J-Mean"]), "F_M": float(table["F-Mean"]), **summary,
            "n_pairs": len(diagnostics.get("match_ok", []))}


# -- the whole table ----------------------------------------------------------------------------------


def run_table4(profile: str | None = None, progress: bool = True, budget: dict | None = None,
               settings: IdealProposals = IdealProposals()):
    """Train (or load) every model and evaluate every row for every seed; one DataFrame row per (seed, row).

    Columns: ``seed, row, label, model, matcher, unroll, J_M, F_M`` (fractions in [0, 1]),
    the diagnostics of :func:`track_sequence` (means over (frame, object) pairs),
    ``loss_first`` / ``loss_last`` (mean training loss of the first / last 20 % of steps)
    and ``train_seconds``. Everything is cached under :func:`run_root`.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    from dmmlib.data import ensure_synthetic

    profile = active_profile() if profile is None else profile
    budget = table4_budget(profile) if budget is None else budget
    root = ensure_synthetic(profile=profile, progress=False)
    names = val_names(profile, budget)
    cache = val_proposal_cache(root, names, run_root(profile) / f"val-proposals-{_key(settings.to_dict())}", settings)
    kinds = ("frozen", "ft1", "ft2", "ft3")
    records = []
    bar = tqdm(total=len(budget["seeds"]) * len(ROWS), desc="table 4", disable=not progress)
    for seed in budget["seeds"]:
        for kind in kinds:
            model, run_dir, log = train_model(kind, seed, profile, budget, settings)
            losses = [r["loss"] for r in log] or [float("nan")]
            fifth = max(1, len(losses) // 5)
            done = json.loads((run_dir / "done.json").read_text())
            for row in ROWS:
                if ROW_MODEL[row][0] != kind:
                    continue
                matcher = ROW_MODEL[row][1]
                path = run_dir / f"eval-{matcher}-{_key({'names': names, 'size': budget['frame_size']})}.json"
                if path.is_file():
                    scores = json.loads(path.read_text())
                else:
                    scores = evaluate(model, matcher, root, names, cache, budget["frame_size"])
                    atomic_write_text(path, json.dumps(scores))
                records.append({
                    "seed": seed, "row": row, "label": ROW_LABELS[row], "model": kind, "matcher": matcher,
                    "unroll": FROZEN_UNROLL if kind == "frozen" else int(kind[2:]),
                    **scores,
                    "loss_first": float(np.mean(losses[:fifth])), "loss_last": float(np.mean(losses[-fifth:])),
                    "train_seconds": float(done["seconds"]), "run_dir": str(run_dir),
                })
                bar.update(1)
    bar.close()
    return pd.DataFrame.from_records(records)


def evaluate_variant(kind: str, seed: int, matcher: str, profile: str | None = None, budget: dict | None = None,
                     settings: IdealProposals = IdealProposals(), **config) -> dict:
    """Evaluate a cached Table 4 model with changed :class:`dmmlib.model.ModelConfig` settings (cached too).

    For the investigation, e.g. ``evaluate_variant("frozen", 0, "hungarian", lam=1.0)``:
    matching by the IoU term of Eq. 1 alone.
    """
    profile = active_profile() if profile is None else profile
    budget = table4_budget(profile) if budget is None else budget
    from dmmlib.data import ensure_synthetic

    root = ensure_synthetic(profile=profile, progress=False)
    names = val_names(profile, budget)
    cache = val_proposal_cache(root, names, run_root(profile) / f"val-proposals-{_key(settings.to_dict())}", settings)
    model, run_dir, _ = train_model(kind, seed, profile, budget, settings)
    path = run_dir / f"eval-{matcher}-{_key({'names': names, 'size': budget['frame_size'], 'config': config})}.json"
    if path.is_file():
        return json.loads(path.read_text())
    model.config = dataclasses.replace(model.config, **config)
    scores = evaluate(model, matcher, root, names, cache, budget["frame_size"])
    atomic_write_text(path, json.dumps(scores))
    return scores


def fixed_clip_loss(model, kind: str, seed: int, profile: str | None = None, budget: dict | None = None,
                    n_clips: int = 8, settings: IdealProposals = IdealProposals()) -> float:
    """The training objective of model ``kind`` (its clips, its unroll) averaged over the first
    ``n_clips`` training clips of the seed, without augmentation noise between calls: the same
    clips and proposals every time, so a trained and an initial model can be compared."""
    from dmmlib import training
    from dmmlib.data import ensure_synthetic

    profile = active_profile() if profile is None else profile
    cfg = train_config(kind, seed, profile, budget)
    clips = clip_dataset(cfg, ensure_synthetic(profile=profile, progress=False))
    source = instance_proposal_source(settings)
    unrolled = training.UnrolledClip(model, cfg)
    was_training = model.training
    model.train()  # the objective as trained (ModelConfig.train_keep_threshold applies in training mode)
    total = 0.0
    with torch.no_grad():
        for index in range(n_clips):
            frames, labels, metas = training.collate_clips([clips[index]])
            proposals = training.clip_proposals(frames, labels, metas, [(0, index)], source, cfg.seed)
            loss, _ = unrolled(frames, labels, proposals)
            total += float(loss)
    model.train(was_training)
    return total / n_clips


def summarise_table4(df):
    """Mean, std (over seeds, ddof=1) and n of J_M and F_M per row, in percent, rows in table order."""
    import pandas as pd

    out = []
    for row in ROWS:
        part = df[df["row"] == row]
        if part.empty:
            continue
        entry = {"row": row, "label": ROW_LABELS[row], "n": len(part)}
        for metric in ("J_M", "F_M"):
            values = 100 * part[metric].to_numpy(dtype=float)
            entry[f"{metric} mean"] = float(values.mean())
            entry[f"{metric} std"] = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
        entry["paper J_M"], entry["paper F_M"] = PAPER_TABLE4[row]
        out.append(entry)
    return pd.DataFrame(out).set_index("row")


def paired_difference(df, row: str, reference: str, metric: str = "J_M") -> dict:
    """Per seed ``row - reference`` of ``metric`` (percent points): values, mean, standard error, n."""
    a = df[df["row"] == row].set_index("seed")[metric]
    b = df[df["row"] == reference].set_index("seed")[metric]
    seeds = sorted(set(a.index) & set(b.index))
    diffs = np.array([100 * (a[s] - b[s]) for s in seeds], dtype=float)
    n = len(diffs)
    se = float(diffs.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return {"row": row, "reference": reference, "metric": metric, "seeds": seeds, "diffs": diffs,
            "mean": float(diffs.mean()) if n else float("nan"), "se": se, "n": n}


NOISE_SE = 2.0  # a paired difference counts as real when |mean| > NOISE_SE standard errors
EQUIVALENCE_POINTS = 1.0  # "performs like": mean +- NOISE_SE standard errors inside +-1 J point


def _paper_diff(row: str, reference: str, metric: str) -> float:
    k = 0 if metric == "J_M" else 1
    return round(PAPER_TABLE4[row][k] - PAPER_TABLE4[reference][k], 2)


def verdicts(df):
    """One claim per row of Table 4, checked against our numbers; a DataFrame with a ``sentence`` each.

    The claims (Sec. 4.3): greedy is worse than Hungarian; the DMM layer without fine-tuning
    matches Hungarian; fine-tuning through the layer (unroll 2) beats the frozen cost with
    Hungarian matching; unroll 3 is no better than unroll 2. Unroll 1 (no paper row) is
    compared with the frozen Hungarian row like unroll 2. A difference is *resolved* when
    |mean paired difference| > :data:`NOISE_SE` standard errors over seeds (paired by seed);
    "performs like" holds when the whole interval mean +- NOISE_SE standard errors lies within
    +-:data:`EQUIVALENCE_POINTS` J points (an equivalence test, since with shared proposals and
    val videos even a 0.1-point systematic difference can be resolved).
    """
    import pandas as pd

    claims = [
        ("greedy", "hungarian", "lower", "greedy matching is worse than Hungarian matching"),
        ("hungarian", None, "reference", "Hungarian matching on the frozen cost is the reference row"),
        ("dmm-frozen", "hungarian", "equal", "the DMM layer without fine-tuning performs like Hungarian matching"),
        ("ft-unroll1", "hungarian", "higher", "fine-tuning through the layer (unroll 1) beats Hungarian on the frozen cost"),
        ("ft-unroll2", "hungarian", "higher", "fine-tuning through the layer (unroll 2) beats Hungarian on the frozen cost"),
        ("ft-unroll3", "ft-unroll2", "not higher", "unrolling 3 steps is no better than 2"),
    ]
    out = []
    for row, reference, expected, claim in claims:
        entry = {"row": row, "claim": claim, "reference": reference, "expected": expected}
        if reference is None:
            part = 100 * df[df["row"] == row]["J_M"].to_numpy(dtype=float)
            pj, pf = PAPER_TABLE4[row]
            entry.update(verdict="reference", mean=float("nan"), se=float("nan"), n=len(part))
            entry["sentence"] = (
                f"{ROW_LABELS[row]}: J_M = {part.mean():.1f} here (paper {pj}); it is the reference of the "
                f"other rows, and absolute numbers are not comparable (synthetic benchmark, random features, "
                f"tiny budget).")
            out.append(entry)
            continue
        d = paired_difference(df, row, reference, "J_M")
        f = paired_difference(df, row, reference, "F_M")
        resolved = d["n"] > 1 and abs(d["mean"]) > NOISE_SE * d["se"]
        if d["n"] < 2:
            verdict = "undecided (one seed)"
        elif expected == "lower":
            verdict = "reproduces" if resolved and d["mean"] < 0 else "does not reproduce"
        elif expected == "higher":
            verdict = "reproduces" if resolved and d["mean"] > 0 else "does not reproduce"
        elif expected == "not higher":
            verdict = "does not reproduce" if resolved and d["mean"] > 0 else "reproduces"
        else:  # equal: the NOISE_SE interval inside the equivalence margin
            inside = abs(d["mean"]) + NOISE_SE * d["se"] < EQUIVALENCE_POINTS
            verdict = "reproduces" if inside else "does not reproduce"
        paper = _paper_diff(row, reference, "J_M") if PAPER_TABLE4[row][0] is not None else None
        paper_text = f"paper {paper:+.1f}" if paper is not None else "no paper row"
        se_text = f"{d['se']:.2f}" if d["n"] > 1 else "n/a"
        entry.update(verdict=verdict, mean=d["mean"], se=d["se"], n=d["n"], F_mean=f["mean"], F_se=f["se"],
                     paper_diff=paper)
        phrase = {"reproduces": "reproduces here", "does not reproduce": "does not reproduce here"}.get(
            verdict, "cannot be decided with one seed")
        entry["sentence"] = (
            f"{ROW_LABELS[row]}: the paper's claim that {claim} {phrase} -- J_M {row} - {reference} = "
            f"{d['mean']:+.2f} points (standard error {se_text}, {d['n']} seeds; {paper_text}), "
            f"F_M {f['mean']:+.2f}.")
        out.append(entry)
    return pd.DataFrame(out).set_index("row")


def plot_table4(df, ax=None):
    """Strip plot of J_M per row: one dot per seed, the mean as a bar, the paper's value as a cross."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(9, 3.6))
    for k, row in enumerate(ROWS):
        values = 100 * df[df["row"] == row]["J_M"].to_numpy(dtype=float)
        if values.size == 0:
            continue
        offsets = np.linspace(-0.12, 0.12, values.size) if values.size > 1 else np.zeros(1)
        ax.scatter(k + offsets, values, color="tab:blue", zorder=3, s=22, label="one seed" if k == 0 else None)
        ax.hlines(values.mean(), k - 0.3, k + 0.3, color="tab:blue", lw=2, label="mean over seeds" if k == 0 else None)
    ax.set_xticks(range(len(ROWS)))
    ax.set_xticklabels([ROW_LABELS[r].replace(", ", ",\n").replace(" (", "\n(") for r in ROWS], fontsize=8)
    ax.set_ylabel("J_M on val (%)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return ax.figure

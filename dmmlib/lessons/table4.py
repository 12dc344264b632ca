"""Table 4 of the paper on our benchmark (Sec. 4.3): the runs, one function per unit of work.

The experiment (chapter 9):

* **Baselines.** ``static``: the first-frame mask copied to every frame; ``ceiling``: per frame
  and object the cached proposal with the highest IoU with the ground truth (perfect
  matching: what any matcher on these proposals can reach at best, before refinement);
  ``iou-only``: the frozen-cost model matched by the IoU term of Eq. 1 alone (lambda = 1,
  Hungarian).
* **The paper's rows 1-3, frozen cost.** Per seed one model whose f_theta is the proposal
  net's trunk, frozen (pretrained, not trained for matching, as the paper's COCO features),
  and whose refinement head is trained; the *same weights* are run with greedy matching,
  the Hungarian algorithm and the DMM layer (Alg. 1 at the paper's settings).
* **Rows 4-6, fine-tuned.** Per seed the same initial model trained end to end through the
  matching layer with 1, 2 and 3 unrolled frames, evaluated with the DMM layer.
* **The refinement ablation.** ``ft-unroll2-plain``: unroll 2 with the paper's plain head.

Every model has the same budget (:data:`dmmlib.lessons.settings.BOOK_MODELS`) and sees the
trained proposal net's proposals, in training and on the val videos.

Units of work, each idempotent and cached (a separate command can run them ahead of the
book): :func:`dmmlib.lessons.book_models.train_unit` trains a model;
:func:`evaluate_unit` scores one row of one seed on the val videos and stores per object J
and F and per video diagnostics as JSON under ``data/runs/book-models-<profile>/evals/``,
keyed by the model, the videos, the frame size and the source of the code that computes
it; :func:`run_table4` collects every unit into two long tables.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from dmmlib import tracking
from dmmlib.cost import mask_iou
from dmmlib.data.davis import DavisDataset
from dmmlib.data.generate import ensure_synthetic, read_meta
from dmmlib.data.masks import VOID_LABEL
from dmmlib.data.paths import runs_dir
from dmmlib.evaluation import davis as evaluation_davis
from dmmlib.evaluation import metrics as evaluation_metrics
from dmmlib.fileio import atomic_write_text
from dmmlib.lessons import book_models, measure
from dmmlib.lessons.book_models import TRAINING_CODE, model_budget, prepare_proposals, train_unit
from dmmlib.lessons.measure import VideoScoring, score_label_maps, score_videos
from dmmlib.lessons.results import source_digest
from dmmlib.lessons.settings import TABLE4, WORKERS
from dmmlib.model import SUPPRESSED_LOGIT, labels_from_logits
from dmmlib.profiles import active_profile, by_profile
from dmmlib.proposals.cache import ProposalCache
from dmmlib.proposals.sources import cached_source

VERSION = 1  # bump when something outside the hashed code changes the numbers

BASELINES = ("static", "ceiling", "iou-only")
PAPER_ROWS = ("greedy", "hungarian", "dmm-frozen", "ft-unroll1", "ft-unroll2", "ft-unroll3")
ROWS = BASELINES + PAPER_ROWS
ABLATIONS = ("ft-unroll2-plain",)
ROW_LABELS = {
    "static": "static (first mask copied)",
    "ceiling": "matching ceiling (best proposal per frame)",
    "iou-only": "IoU only (lambda = 1), Hungarian, frozen cost",
    "greedy": "Greedy (frozen cost)",
    "hungarian": "Hungarian (frozen cost)",
    "dmm-frozen": "DMM layer (frozen cost)",
    "ft-unroll1": "DMM layer, fine-tuned, unroll 1",
    "ft-unroll2": "DMM layer, fine-tuned, unroll 2",
    "ft-unroll3": "DMM layer, fine-tuned, unroll 3",
    "ft-unroll2-plain": "DMM layer, fine-tuned, unroll 2, paper's plain head",
}
# row -> (model kind, matcher, ModelConfig changes at evaluation); None: the row needs no model
ROW_MODEL = {
    "static": None,
    "ceiling": None,
    "iou-only": ("frozen", "hungarian", {"lam": 1.0}),
    "greedy": ("frozen", "greedy", {}),
    "hungarian": ("frozen", "hungarian", {}),
    "dmm-frozen": ("frozen", "dmm", {}),
    "ft-unroll1": ("ft1", "dmm", {}),
    "ft-unroll2": ("ft2", "dmm", {}),
    "ft-unroll3": ("ft3", "dmm", {}),
    "ft-unroll2-plain": ("ft2-plain", "dmm", {}),
}
DIAGNOSTICS = ("has_right", "match_ok", "match_error", "matched_iou", "output_iou", "agree_hungarian")


def table4_settings(profile: str | None = None) -> dict:
    """The profile's :data:`dmmlib.lessons.settings.TABLE4` entry, as a fresh dict."""
    return dict(by_profile(TABLE4, profile))


def val_names(profile: str | None = None, settings: dict | None = None) -> list[str]:
    """The val videos of the table: the first ``val_videos`` of the split (all if None)."""
    profile = active_profile() if profile is None else profile
    settings = table4_settings(profile) if settings is None else settings
    names = DavisDataset(ensure_synthetic(profile=profile, progress=False), "val").names
    return names if settings["val_videos"] is None else names[: settings["val_videos"]]


def video_difficulties(profile: str | None = None) -> dict[str, str]:
    """``{video name: difficulty}`` of the benchmark (``meta.json``: "lookalike" or "crossing")."""
    meta = read_meta(ensure_synthetic(profile=profile, progress=False))
    return {name: info.get("difficulty", "lookalike") for name, info in meta["sequences"].items()}


# -- the baselines --------------------------------------------------------------------------------


def static_labels(sequence):
    """The static baseline: frame 0's mask (void as background) for every frame of ``sequence``."""
    first = sequence.labels(0)
    first = np.where(first == VOID_LABEL, 0, first).astype(np.uint8)
    return (first for _ in range(len(sequence)))


def ceiling_labels(sequence, cache: ProposalCache, size: tuple[int, int]):
    """The matching ceiling: per frame and object the cached proposal with the highest IoU with the truth.

    Done at the model's ``size`` like the model's own output (proposals pasted there, the truth
    area-resized, the chosen soft proposal's logit resized back to the frame); an object
    invisible at that size is absent. Yields uint8 label maps [H, W].
    """
    first = sequence.labels(0)
    ids = [i for i in np.unique(first) if i not in (0, VOID_LABEL)]
    yield np.where(first == VOID_LABEL, 0, first).astype(np.uint8)
    height, width = (int(v) for v in size)
    for t in range(1, len(sequence)):
        truth = torch.from_numpy(np.stack([sequence.labels(t) == i for i in ids])).float()[None]
        small = F.interpolate(truth, size=(height, width), mode="area")[0] >= 0.5  # as frame_diagnostics
        proposals = cache.get(sequence.name, sequence.frame_names[t])
        pasted = proposals.paste(height, width)  # [m, h, w] soft
        logits = torch.full((1, len(ids), height, width), SUPPRESSED_LOGIT)
        if len(proposals):
            iou = mask_iou(small, pasted > 0.5)  # [n, m]
            best_iou, best = iou.max(dim=-1)
            chosen = torch.logit(pasted[best].clamp(1e-4, 1 - 1e-4))[None]
            visible = (small.flatten(1).sum(1) > 0) & (best_iou > 0)
            logits = torch.where(visible[None, :, None, None], chosen, logits)
        logits = F.interpolate(logits, size=first.shape, mode="bilinear", align_corners=False)
        rows = labels_from_logits(logits)[0].numpy()
        yield np.array([0, *ids], dtype=np.uint8)[rows]


# -- evaluation units -------------------------------------------------------------------------------


def _eval_code() -> str:
    return source_digest(*TRAINING_CODE, tracking, measure, book_models, evaluation_davis, evaluation_metrics,
                         sys.modules[__name__])


def eval_path(row: str, seed: int | None, profile: str, budget: dict, settings: dict) -> Path:
    """The JSON file of one evaluation unit: key = row, model, videos, size and code."""
    spec = ROW_MODEL[row]
    model = None if spec is None else book_models.run_dir(spec[0], seed, profile, budget).name
    payload = {"version": VERSION, "row": row, "seed": seed, "model": model, "spec": spec,
               "videos": val_names(profile, settings), "size": list(budget["frame_size"]), "code": _eval_code()}
    key = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return runs_dir() / f"book-models-{profile}" / "evals" / f"{row}-s{seed}-{key}.json"


def evaluate_unit(row: str, seed: int | None, profile: str | None = None, budget: dict | None = None,
                  settings: dict | None = None) -> dict:
    """Score ``row`` of ``seed`` on the val videos (trains its model if needed); cached.

    Returns ``{"objects": [{"video", "object", "J", "F"}, ...], "videos": {video: {diagnostic: mean,
    "pairs": n}}, "frames": {"t": {"matched_iou", "output_iou", "pairs"}}}`` (diagnostics:
    :func:`dmmlib.lessons.measure.frame_diagnostics`; ``frames``: their means over every video's frame
    ``t``, i.e. by the age of the refinement head's memory; model rows only).
    ``static`` and ``ceiling`` do not depend on a seed: pass ``seed=None``.
    """
    profile = active_profile() if profile is None else profile
    budget = model_budget(profile) if budget is None else budget
    settings = table4_settings(profile) if settings is None else settings
    path = eval_path(row, seed, profile, budget, settings)
    if path.is_file():
        return json.loads(path.read_text())
    assets = prepare_proposals(profile)
    names, cache = val_names(profile, settings), ProposalCache(assets.caches["val"])
    dataset, size = DavisDataset(assets.root, "val"), tuple(budget["frame_size"])
    if row == "static":
        result = {"objects": score_label_maps(assets.root, names, lambda n: static_labels(dataset.sequence(n)))["objects"]}
    elif row == "ceiling":
        scored = score_label_maps(assets.root, names, lambda n: ceiling_labels(dataset.sequence(n), cache, size))
        result = {"objects": scored["objects"]}
    else:
        result = _score_model(row, seed, profile, budget, names, cache)
    atomic_write_text(path, json.dumps(result))
    return result


def _score_model(row: str, seed: int, profile: str, budget: dict, names: list[str], cache: ProposalCache) -> dict:
    kind, matcher, changes = ROW_MODEL[row]
    model = train_unit(kind, seed, profile, budget).model
    model.config = dataclasses.replace(model.config, matcher=matcher, **changes)
    diagnostics: dict = {}
    source = cached_source(cache)
    scored = score_videos(model, prepare_proposals(profile).root, names, lambda name: source,
                          VideoScoring(tuple(budget["frame_size"]), None, diagnostics))
    videos = {}
    for name in names:
        rows = [k for k, v in enumerate(diagnostics.get("video", [])) if v == name]
        videos[name] = {key: float(np.mean([diagnostics[key][k] for k in rows])) if rows else float("nan")
                        for key in DIAGNOSTICS}
        videos[name]["pairs"] = len(rows)
    frame = np.asarray(diagnostics.get("frame", []))
    ious = {key: np.asarray(diagnostics.get(key, [])) for key in ("matched_iou", "output_iou")}
    frames = {str(t): {key: float(values[frame == t].mean()) for key, values in ious.items()}
              | {"pairs": int((frame == t).sum())} for t in np.unique(frame)}
    return {"objects": scored["objects"], "videos": videos, "frames": frames}


def row_seeds(row: str, settings: dict) -> tuple:
    """The seeds ``row`` runs on: ``settings["row_seeds"]`` where given, else ``settings["seeds"]``."""
    return tuple(settings["row_seeds"].get(row, settings["seeds"]))


def units_needed(rows: tuple[str, ...] = ROWS + ABLATIONS, settings: dict | None = None,
                 profile: str | None = None) -> list[tuple[str, int]]:
    """The ``(kind, seed)`` training units the ``rows`` rest on, each once, seed by seed."""
    settings = table4_settings(profile) if settings is None else settings
    units = []
    for row in rows:
        if ROW_MODEL[row] is not None:
            units += [(ROW_MODEL[row][0], seed) for seed in row_seeds(row, settings) if (ROW_MODEL[row][0], seed) not in units]
    return sorted(units, key=lambda unit: (unit[1], book_models.KINDS.index(unit[0])))


def run_table4(profile: str | None = None, rows: tuple[str, ...] = ROWS + ABLATIONS, progress: bool = False,
               budget: dict | None = None, settings: dict | None = None,
               workers: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every unit of ``rows`` for every seed: ``(objects, videos)`` DataFrames.

    ``objects``: one line per (seed, row, video, object) with ``difficulty``, ``J``, ``F`` and
    ``JF`` = (J + F) / 2 (fractions); ``videos``: one line per (seed, row, video) of a model row
    with the mean diagnostics and ``pairs`` (visible (frame, object) pairs). The seedless
    baselines are computed once and repeated for every seed, so that every pair of rows
    can be compared seed by seed. The evaluations not cached yet run ``workers`` at a time
    (default: the profile's :data:`dmmlib.lessons.settings.WORKERS`) when the profile's own budget
    and settings are used.
    """
    profile = active_profile() if profile is None else profile
    own_settings = budget is None and settings is None  # a process of its own rebuilds them from the profile
    budget = model_budget(profile) if budget is None else budget
    settings = table4_settings(profile) if settings is None else settings
    if own_settings:
        workers = by_profile(WORKERS, profile) if workers is None else workers
        calls = [(row, seed, profile) for row in rows
                 for seed in ([None] if ROW_MODEL[row] is None else row_seeds(row, settings))
                 if not eval_path(row, seed, profile, budget, settings).is_file()]
        book_models.in_processes(evaluate_unit, calls, workers)
    difficulty = video_difficulties(profile)
    objects, videos = [], []
    for row in rows:
        once = evaluate_unit(row, None, profile, budget, settings) if ROW_MODEL[row] is None else None
        for seed in row_seeds(row, settings):
            result = once if once is not None else evaluate_unit(row, seed, profile, budget, settings)
            if progress:
                print(f"table 4: {row}, seed {seed}", flush=True)
            for entry in result["objects"]:
                objects.append({"seed": seed, "row": row, "difficulty": difficulty[entry["video"]], **entry,
                                "JF": (entry["J"] + entry["F"]) / 2})
            for video, values in result.get("videos", {}).items():
                videos.append({"seed": seed, "row": row, "video": video, "difficulty": difficulty[video], **values})
    return pd.DataFrame.from_records(objects), pd.DataFrame.from_records(videos)

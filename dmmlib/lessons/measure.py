"""Measuring a DMM-Net for the chapters: scores on val videos, what the learned cost does, training curves.

* :func:`score_videos` -- track val videos with a model (the library's tracking loop) and
  score them with the official DAVIS semantics; optionally the per-step
  :func:`frame_diagnostics` (was the right proposal there, was it matched, ...);
  :func:`score_label_maps` scores any label maps (baselines) the same way;
* :func:`ground_truth_proposals` -- oracle proposals cut from each val frame's ground truth;
* :func:`matching_margins` -- how well the cosine of Eq. 1 singles out the right proposal;
* :func:`appearance_separability` -- how often the cosine alone prefers an object's own proposal
  to a proposal of another object (which backbone levels tell objects apart);
* :func:`plot_log` -- a training log's loss and IoU curves.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from dmmlib.cost import mask_iou
from dmmlib.data.davis import DavisDataset
from dmmlib.device import frames_to_device, to_device
from dmmlib.evaluation.davis import evaluate_davis
from dmmlib.features import masks_to_boxes
from dmmlib.losses import DEFAULT_LOSS, best_proposal, mask_loss
from dmmlib.matchers import hungarian_match
from dmmlib.predict import write_labels
from dmmlib.proposals.sources import FrameQuery, ProposalSource, oracle_source
from dmmlib.tracking import TrackOptions, TrackStep, track_steps
from dmmlib.unrolled import clip_proposals, collate_clips, object_masks


@dataclass
class VideoScoring:
    """How :func:`score_videos` runs: the model's frame ``size`` (None: the frames' own), another
    ``matcher`` than the model's ("dmm", "hungarian", "greedy"; None: the model's), and a dict of
    lists to which every step's :func:`frame_diagnostics` are appended (None: not measured)."""

    size: tuple[int, int] | None = None
    matcher: str | None = None
    diagnostics: dict | None = field(default=None)


def score_videos(model: nn.Module, root: str | os.PathLike, names: list[str],
                 proposals_for: Callable[[str], ProposalSource], scoring: VideoScoring | None = None) -> dict:
    """Track the val ``names`` of the DAVIS-layout ``root`` and score them like the official evaluation.

    Returns :func:`score_label_maps`' dict. ``model`` itself is not changed (a copy runs another
    matcher). With ``scoring.diagnostics``, every step's :func:`frame_diagnostics` are appended
    to it, and its lists ``"video"`` and ``"frame"`` name the video and the frame index of each entry.
    """
    scoring = VideoScoring() if scoring is None else scoring
    if scoring.matcher is not None:
        model = copy.deepcopy(model)
        model.config = dataclasses.replace(model.config, matcher=scoring.matcher)  # validated by ModelConfig
    dataset = DavisDataset(root, "val")

    def labels_for(name: str):
        sequence = dataset.sequence(name)
        options = TrackOptions(size=scoring.size, progress=False, sequence=name)
        steps = track_steps(sequence.frame_paths, sequence.labels(0), model, proposals_for(name), options=options)
        return (_observe(step, sequence, scoring) for step in steps)

    return score_label_maps(root, names, labels_for)


def score_label_maps(root: str | os.PathLike, names: list[str], labels_for: Callable[[str], Iterable[np.ndarray]]) -> dict:
    """Score the label maps ``labels_for(name)`` (uint8 [H, W] per frame) of the val ``names`` of ``root``.

    The maps are written into a temporary folder and scored with the official DAVIS semantics
    on a view of ``root`` whose val split lists only ``names``. Returns ``{"J_M", "F_M", "JF_M"}``
    (means over all objects, as DAVIS), ``"J_per_object"`` and ``"objects"``: one
    ``{"video", "object", "J", "F"}`` per object (its J-Mean and F-Mean over the scored frames).
    """
    root = Path(root)
    dataset = DavisDataset(root, "val")
    with tempfile.TemporaryDirectory(prefix="dmm-score-") as tmp:
        view = Path(tmp) / "view"
        (view / "ImageSets" / "2017").mkdir(parents=True)
        for folder in ("JPEGImages", "Annotations"):
            (view / folder).symlink_to(root / folder, target_is_directory=True)
        (view / "ImageSets" / "2017" / "val.txt").write_text("\n".join(names) + "\n")
        for name in names:
            write_labels(labels_for(name), Path(tmp) / "results" / name, dataset.sequence(name).frame_names)
        table = evaluate_davis(view, Path(tmp) / "results", "val", progress=False, workers=1)
    scores = table.global_scores
    objects = [{"video": o.sequence, "object": int(o.object_id), "J": float(o.j_stats.mean), "F": float(o.f_stats.mean)}
               for o in table.objects]
    return {"J_M": float(scores["J-Mean"]), "F_M": float(scores["F-Mean"]), "JF_M": float(scores["J&F-Mean"]),
            "J_per_object": {name: j for name, j, _ in table.per_sequence_rows()}, "objects": objects}


def _observe(step: TrackStep, sequence, scoring: VideoScoring) -> np.ndarray:
    """The step's labels, after adding its diagnostics to ``scoring.diagnostics`` (if asked for)."""
    if scoring.diagnostics is not None and step.output is not None:
        size = scoring.size or step.labels.shape
        rows = frame_diagnostics(step, sequence.labels(step.index), size)
        for key, values in rows.items():
            scoring.diagnostics.setdefault(key, []).extend(values)
        count = len(next(iter(rows.values()), []))
        scoring.diagnostics.setdefault("video", []).extend([sequence.name] * count)
        scoring.diagnostics.setdefault("frame", []).extend([step.index] * count)
    return step.labels


def ground_truth_proposals(root: str | os.PathLike, split: str = "val", n_noise: int = 8, jitter: float = 0.1,
                           seed: int = 0) -> Callable[[str], ProposalSource]:
    """``video name -> proposal source`` of oracle proposals cut from each frame's ground truth (an ablation).

    The noise of video ``v`` (its position in the split), frame ``t`` is drawn from ``(seed, v, t)``.
    """
    dataset = DavisDataset(root, split)
    oracle = oracle_source(n_noise, jitter)

    def proposals_for(name: str) -> ProposalSource:
        sequence, number = dataset.sequence(name), dataset.names.index(name)

        def source(query: FrameQuery):
            return oracle(dataclasses.replace(query, labels=sequence.labels(query.index),
                                              rng=np.random.default_rng([seed, number, query.index])))

        return source

    return proposals_for


def frame_diagnostics(step: TrackStep, truth: np.ndarray, size) -> dict[str, list[float]]:
    """What one tracking step did, per tracked object visible in the ground truth ``truth`` [H, W].

    ``has_right`` (some proposal has IoU >= 0.5 with the object), ``match_ok`` (the matched
    proposal has IoU >= 0.5 with it: the right object, perhaps a duplicate proposal of it),
    ``matched_iou`` / ``output_iou`` (IoU with the ground truth of the matched proposal and
    of the output), ``agree_hungarian`` (argmax of X^ equals the Hungarian assignment of
    the same cost matrix), ``match_error`` (a right proposal exists but another was matched).
    IoUs are measured at the model's ``size``.
    """
    out, ids = step.output, step.object_ids
    gt = torch.from_numpy(np.stack([truth == i for i in ids])).float()[None]
    gt_small = (F.interpolate(gt, size=tuple(size), mode="area") >= 0.5).float()[0]  # [n, h, w]
    visible = gt_small.flatten(1).any(1)
    best = best_proposal(gt_small, out.proposal_masks[0].cpu(), 0.5)  # [n], -1: no proposal reaches 0.5
    real = out.proposal_valid[0] | out.no_proposal[0]
    hungarian = hungarian_match(out.cost, template_mask=step.state.template_valid,
                                proposal_mask=real[None])[0].argmax(-1).cpu()
    matched = out.matched_proposals[0].cpu() > 0.5
    predicted = out.logits[0].cpu() > 0
    matched_iou = mask_iou(matched[:, None], gt_small.bool()[:, None])[:, 0, 0]
    output_iou = mask_iou(predicted[:, None], gt_small.bool()[:, None])[:, 0, 0]
    present, x_hat = out.present[0].cpu(), out.x_hat[0].cpu()
    rows: dict[str, list[float]] = {}
    for i in range(len(ids)):
        if not bool(visible[i]):
            continue
        ok = bool(present[i]) and float(matched_iou[i]) >= 0.5
        for key, value in (("match_ok", ok), ("match_error", bool(best[i] >= 0) and not ok),
                           ("has_right", best[i] >= 0), ("matched_iou", matched_iou[i]),
                           ("output_iou", output_iou[i]), ("agree_hungarian", x_hat[i].argmax() == hungarian[i])):
            rows.setdefault(key, []).append(float(value))
    return rows


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
    device = model.device
    top1, margin, cost_top1, clip_loss, examples = [], [], [], [], None
    with torch.no_grad():
        for index in range(n_clips):
            frames, labels, metas = collate_clips([dataset[index]])
            n = int(labels[:, 0].max())
            (frame_proposals,) = clip_proposals(frames[:, :2], labels[:, :2], metas, [(index,)], proposal_source, seed)
            frames, labels = frames_to_device(frames, device), to_device(labels, device)  # where the model is
            frame_proposals = [p.to(device) for p in frame_proposals]
            masks = object_masks(labels, n)
            valid = masks[:, 0].flatten(2).any(-1)
            state = model.init_state(frames[:, 0], masks[:, 0], valid)
            out, _ = model.step(frames[:, 1], frame_proposals, state)
            clip_loss.append(float(mask_loss(out.logits, masks[:, 1], valid, loss)))
            # the per-template reads below are on the host: one copy per clip, not one sync per number
            real = (out.proposal_valid[0] if hasattr(out, "proposal_valid")
                    else torch.ones(out.cost.shape[-1], dtype=bool, device=device)).cpu()
            right = best_proposal(masks[0, 1], out.proposal_masks[0], min_iou).cpu()
            cosine, cost, valid = out.cosine[0].cpu()[:, real], out.cost[0].cpu()[:, real], valid.cpu()
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


def appearance_separability(features: nn.Module, root: str | os.PathLike, names: list[str], cache,
                            size: tuple[int, int], every: int = 2) -> dict:
    """How often the cosine of Eq. 1 alone prefers an object's own proposal to a *confuser*.

    For every ``every``-th frame t >= 1 of the val videos ``names`` (frames resized to ``size``):
    templates are the ground-truth masks of frame 0 (features pooled on frame 0), proposals are
    ``cache``'s. For each tracked object i visible at t, its *right* proposal is the one that
    overlaps it best (IoU >= 0.5 at ``size``); its *confusers* are the proposals that overlap
    another instance (tracked object or distractor) by IoU >= 0.5. Returns per video the
    fraction of such (frame, object) pairs whose right proposal has a higher cosine with
    ``f(r_i)`` than every confuser: ``{video: (wins, pairs)}``. ``features`` is a
    :class:`dmmlib.features.FeatureExtractor` (any levels).
    """
    instances_set = DavisDataset(root, "val", annotations="Instances")
    out = {}
    with torch.no_grad():
        for name in names:
            sequence = instances_set.sequence(name)
            tracked = DavisDataset(root, "val").sequence(name)
            ids = tracked.object_ids
            first = _resized_frame(sequence.frame(0), size)
            templates = _resized_masks(tracked.labels(0), ids, size)
            template_vectors = _pool_masks(features, first, templates)
            wins = pairs = 0
            for t in range(1, len(sequence), every):
                frame = _resized_frame(sequence.frame(t), size)
                instance_map = sequence.labels(t)
                all_ids = [int(i) for i in np.unique(instance_map) if i not in (0, 255)]
                truth = _resized_masks(instance_map, all_ids, size).bool()
                proposals = cache.get(name, sequence.frame_names[t])
                if len(proposals) == 0:
                    continue
                pasted = proposals.paste(*size) > 0.5
                iou = mask_iou(truth, pasted)  # [instances, m]
                maps = features(frame[None])
                boxes = proposals.boxes * proposals.boxes.new_tensor([size[1] / proposals.image_size[1],
                                                                      size[0] / proposals.image_size[0]] * 2)
                vectors = features.pool(maps, torch.cat([torch.zeros(len(boxes), 1), boxes], dim=1))
                cosine = F.normalize(template_vectors, dim=-1) @ F.normalize(vectors, dim=-1).T  # [n, m]
                for i, obj in enumerate(ids):
                    if obj not in all_ids or float(iou[all_ids.index(obj)].max()) < 0.5:
                        continue
                    own = int(iou[all_ids.index(obj)].argmax())
                    others = [k for k, other in enumerate(all_ids) if other != obj]
                    confusers = (iou[others] >= 0.5).any(0) if others else torch.zeros(len(boxes), dtype=torch.bool)
                    confusers[own] = False
                    if not bool(confusers.any()):
                        continue
                    pairs += 1
                    wins += int(float(cosine[i, own]) > float(cosine[i][confusers].max()))
            out[name] = (wins, pairs)
    return out


def _resized_frame(frame: np.ndarray, size) -> torch.Tensor:
    image = torch.from_numpy(frame).permute(2, 0, 1).float()[None] / 255.0
    return F.interpolate(image, size=tuple(size), mode="bilinear", antialias=True)[0]


def _resized_masks(labels: np.ndarray, ids, size) -> torch.Tensor:
    masks = torch.from_numpy(np.stack([labels == i for i in ids])).float()[None]
    return (F.interpolate(masks, size=tuple(size), mode="area")[0] >= 0.5).float()


def _pool_masks(features: nn.Module, frame: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """f(r_i) [n, d] of the masks [n, h, w] (their tight boxes) on ``frame`` [3, h, w]."""
    from_boxes = masks_to_boxes(masks)
    rois = torch.cat([torch.zeros(len(masks), 1), from_boxes], dim=1)
    return features.pool(features(frame[None]), rois, masks)

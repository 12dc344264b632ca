"""Proposals cut from ground truth: oracle proposals, an idealised proposal network, random boxes.

None of these is DMM-Net's proposal network (:mod:`dmmlib.proposals.net`); they stand in
for it in tests, ablations and chapters where the question is matching, not detection:

* :func:`proposals_from_labels` -- one proposal per object of a label map (optionally
  jittered) plus random "noise" boxes;
* :func:`instance_proposals` -- an *idealised class-agnostic proposal network*: every
  instance of an instance map (tracked objects and look-alike distractors), with jittered
  duplicates, fragments and noise, scores that do not reveal which instance is tracked;
* :func:`random_box_proposals` -- the trivial baseline of the recall chapter.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.ops import roi_align

from dmmlib.data.masks import object_ids
from dmmlib.errors import DMMInputError
from dmmlib.proposals.frames import DEFAULT_MASK_SIZE, TOP_K, FrameProposals


def _crop_masks(binary: torch.Tensor, boxes: torch.Tensor, mask_size: int) -> torch.Tensor:
    """RoIAlign of full-image binary masks over boxes: ``[m, H, W], [m, 4] -> [m, S, S]``.

    ``aligned=True`` samples mask cell centres at ``x1 + (s + 0.5) * w / S`` in pixel-edge
    coordinates, the exact inverse of :meth:`FrameProposals.paste`.
    """
    if boxes.shape[0] == 0:
        return torch.zeros(0, mask_size, mask_size)
    rois = torch.cat([torch.arange(boxes.shape[0], dtype=torch.float32)[:, None], boxes], dim=1)
    crops = roi_align(binary[:, None].float(), rois, (mask_size, mask_size), spatial_scale=1.0, sampling_ratio=2, aligned=True)
    return crops[:, 0].clamp(0.0, 1.0)


def _tight_box(mask: np.ndarray) -> np.ndarray:
    """``(x1, y1, x2, y2)`` float64 of a non-empty bool mask ``[H, W]``, pixel-edge coordinates."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.float64)


def _noise_proposals(rng: np.random.Generator, count: int, height: int, width: int,
                     mask_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` random boxes ``[k, 4]`` (sides 5-50 % of the frame's) holding a filled ellipse ``[k, S, S]``."""
    boxes = np.zeros((count, 4))
    for k in range(count):
        w, h = rng.uniform(0.05, 0.5) * width, rng.uniform(0.05, 0.5) * height
        x1, y1 = rng.uniform(0, width - w), rng.uniform(0, height - h)
        boxes[k] = (x1, y1, x1 + w, y1 + h)
    grid = (torch.arange(mask_size, dtype=torch.float32) + 0.5) / mask_size * 2 - 1
    ellipse = ((grid[:, None] ** 2 + grid[None, :] ** 2) <= 1.0).float()
    return torch.tensor(boxes, dtype=torch.float32), ellipse.expand(count, mask_size, mask_size).clone()


def proposals_from_labels(
    labels: np.ndarray,
    *,
    n_noise: int = 0,
    jitter: float = 0.0,
    rng: np.random.Generator | None = None,
    mask_size: int = DEFAULT_MASK_SIZE,
) -> FrameProposals:
    """"Oracle" proposals: one per instance id of ``labels`` ``[H, W]`` uint8 (0 background, 255 void).

    Each instance gives its tight box and the RoIAlign crop of its mask (score 1), so
    that ``paste()`` gives the instance back. ``jitter`` moves every box edge by up to
    ``jitter`` times the box's width/height (uniform) and re-crops the instance mask in
    the moved box, like a detector that is slightly off. ``n_noise`` adds random boxes
    with elliptical masks scored below every oracle proposal. Instances come in
    increasing id order. ``rng`` drives jitter and noise (default: seed 0).
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise DMMInputError(f"proposals_from_labels: labels must be a 2-D array [H, W]; got shape {labels.shape}")
    if n_noise < 0 or jitter < 0 or mask_size <= 0:
        raise DMMInputError(
            f"proposals_from_labels: n_noise and jitter must be >= 0 and mask_size > 0; got {n_noise}, {jitter}, {mask_size}"
        )
    rng = np.random.default_rng(0) if rng is None else rng
    height, width = labels.shape
    ids = object_ids(labels)

    boxes = []
    for instance in ids:
        tight = _tight_box(labels == instance)
        boxes.append(_jittered(tight, jitter, rng, height, width) if jitter > 0 else tight)
    oracle_boxes = torch.tensor(np.array(boxes), dtype=torch.float32).reshape(-1, 4)
    instance_masks = torch.from_numpy(np.stack([labels == i for i in ids])) if ids else torch.zeros(0, height, width)
    oracle_masks = _crop_masks(instance_masks, oracle_boxes, mask_size)
    # scores in (0, 1), so the oracle proposals (score 1) stay on top
    noise_boxes, noise_masks = _noise_proposals(rng, n_noise, height, width, mask_size)
    noise_scores = np.sort(rng.uniform(0.01, 0.99, size=n_noise))[::-1].astype(np.float32)

    return FrameProposals(
        boxes=torch.cat([oracle_boxes, noise_boxes]),
        scores=torch.cat([torch.ones(len(ids)), torch.from_numpy(noise_scores.copy())]),
        masks=torch.cat([oracle_masks, noise_masks]),
        image_size=(height, width),
    )


def random_box_proposals(
    image_size: tuple[int, int], count: int = TOP_K, rng: np.random.Generator | None = None, mask_size: int = DEFAULT_MASK_SIZE
) -> FrameProposals:
    """A trivial baseline: ``count`` random boxes whose masks fill the whole box, random scores.

    Box sides are uniform in [5 %, 60 %] of the frame side, positions uniform inside it.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    height, width = image_size
    sides = rng.uniform(0.05, 0.6, size=(count, 2)) * np.array([width, height])
    corners = rng.uniform(0, 1, size=(count, 2)) * (np.array([width, height]) - sides)
    boxes = torch.from_numpy(np.concatenate([corners, corners + sides], axis=1)).float()
    scores = torch.from_numpy(np.sort(rng.uniform(0, 1, size=count))[::-1].copy()).float()
    return FrameProposals(boxes, scores, torch.ones(count, mask_size, mask_size), (height, width))


# ----------------------------------------------------------------------------------------------
# An idealised class-agnostic proposal network
# ----------------------------------------------------------------------------------------------


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
    instances = np.asarray(instances)
    if instances.ndim != 2:
        raise DMMInputError(f"instance_proposals: instances must be a 2-D map [H, W]; got shape {instances.shape}")
    height, width = instances.shape
    boxes, scores, sources = [], [], []
    for instance in object_ids(instances):
        mask = instances == instance
        if int(mask.sum()) < settings.min_area:
            continue  # a sliver: a real detector misses it too
        tight = _tight_box(mask)
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
    masks = _crop_masks(full, box_tensor, settings.mask_size)

    noise_boxes, noise_masks = _noise_proposals(rng, settings.noise, height, width, settings.mask_size)
    noise_scores = rng.uniform(0.0, 0.6, size=settings.noise)  # low: noise tends to rank last

    all_boxes = torch.cat([box_tensor, noise_boxes])
    all_masks = torch.cat([masks, noise_masks])
    all_scores = torch.tensor(np.concatenate([np.array(scores, dtype=np.float64), noise_scores]), dtype=torch.float32)
    order = torch.argsort(all_scores, descending=True, stable=True)[: settings.top_k]
    return FrameProposals(all_boxes[order].contiguous(), all_scores[order].contiguous(),
                          all_masks[order].contiguous(), (height, width))

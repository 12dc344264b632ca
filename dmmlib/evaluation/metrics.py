"""Video object segmentation metrics: DAVIS J, F, recall, decay; YouTube-VOS G; SegTrack v2 mIoU.

Everything here reproduces the numbers of the official DAVIS 2017 evaluation
(Pont-Tuset et al. 2017; Perazzi et al. 2016, Sec. 3); the paper evaluates with it
(Sec. 4.1, "Evaluation", following its reference [30]).

* J, region similarity: intersection over union of the object masks.
* F, boundary measure: precision/recall F-score of boundary pixels matched within a
  tolerance of ``ceil(0.008 * image diagonal)`` pixels.
* Per object: mean, recall (fraction of frames scoring > 0.5) and decay (first
  quarter minus last quarter of the sequence).

Mask arguments are ``[H, W]`` (one value) or stacks ``[T, H, W]`` (one value per
frame); any dtype, non-zero meaning foreground. All functions are vectorised over
pixels; the only Python loop is over frames in :func:`boundary_f`.
"""

from __future__ import annotations

import math
import warnings
from typing import Iterable, NamedTuple, Sequence

import cv2
import numpy as np
from skimage.morphology import disk

from dmmlib.errors import DMMInputError

DEFAULT_BOUND_TH = 0.008


# ----------------------------------------------------------------------------- input checks


def _check_mask_values(mask: np.ndarray, name: str) -> None:
    """A mask must be bool, integer or float (non-zero = foreground), and a float one finite."""
    if mask.dtype.kind not in "biuf":
        raise DMMInputError(f"{name} has dtype {mask.dtype}; expected a bool, integer or float mask (non-zero = object)")
    if mask.dtype.kind == "f" and not np.isfinite(mask).all():
        raise DMMInputError(f"{name} holds NaN or infinite values; expected a binary mask (bool, or 0 / 1)")


def _as_masks(gt, pred, void=None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Cast ``gt``/``pred``/``void`` to bool and check they are equal ``[H, W]`` or ``[T, H, W]``."""
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    _check_mask_values(gt, "gt")
    _check_mask_values(pred, "pred")
    if gt.ndim not in (2, 3):
        raise DMMInputError(f"gt must be a mask [H, W] or a stack [T, H, W]; got shape {gt.shape}")
    if pred.shape != gt.shape:
        raise DMMInputError(f"pred has shape {pred.shape} but gt has shape {gt.shape}; they must be equal")
    if gt.shape[-1] == 0 or gt.shape[-2] == 0:
        raise DMMInputError(f"gt has shape {gt.shape}; masks need at least one pixel")
    if void is not None:
        void = np.asarray(void)
        _check_mask_values(void, "void")
        if void.shape != gt.shape:
            raise DMMInputError(f"void has shape {void.shape} but gt has shape {gt.shape}; they must be equal")
        void = void.astype(bool, copy=False)
    return gt.astype(bool, copy=False), pred.astype(bool, copy=False), void


def _count_per_frame(mask: np.ndarray) -> np.ndarray:
    """Foreground pixels per frame of ``[.., H, W]`` bool -> int64 ``[..]``.

    ``count_nonzero`` of a whole contiguous frame is far faster than a sum over
    axes (which first widens every bool), so loop over the (few) frames.
    """
    flat = mask.reshape(-1, mask.shape[-2] * mask.shape[-1])
    counts = np.fromiter((np.count_nonzero(frame) for frame in flat), dtype=np.int64, count=flat.shape[0])
    return counts.reshape(mask.shape[:-2])


# ----------------------------------------------------------------------------- J


def jaccard(gt, pred, void=None):
    """Region similarity J = |gt ∧ pred ∧ ¬void| / |(gt ∨ pred) ∧ ¬void| (DAVIS ``db_eval_iou``).

    ``gt``, ``pred``, ``void``: ``[H, W]`` or ``[T, H, W]``. Returns a float for one
    mask and a float64 array ``[T]`` for a stack. An empty union (both masks empty
    outside the void) scores 1, as in the official code, whose ``np.isclose(union, 0)``
    is exactly ``union == 0`` for pixel counts. J is symmetric.
    """
    gt, pred, void = _as_masks(gt, pred, void)
    inter = gt & pred
    union = gt | pred
    if void is not None:
        inter &= ~void
        union &= ~void
    inter_count = _count_per_frame(inter)
    union_count = _count_per_frame(union)
    with np.errstate(invalid="ignore", divide="ignore"):
        j = inter_count / union_count.astype(np.float64)
    j = np.where(union_count == 0, 1.0, j)
    return float(j) if gt.ndim == 2 else j


# ----------------------------------------------------------------------------- F


def boundary_tolerance(shape: Sequence[int], bound_th: float = DEFAULT_BOUND_TH) -> float:
    """Boundary matching tolerance in pixels for an image of ``shape`` ``(H, W)``.

    ``bound_th`` if it is >= 1 (a pixel count), else ``ceil(bound_th * ||(H, W)||_2)``,
    computed in float64 like the official code (float32 gives 4 instead of 3 at 225x300).
    Returns a float: 8.0 for 480x854, 3.0 for 225x300.
    """
    if not (isinstance(bound_th, (int, float, np.floating, np.integer)) and math.isfinite(bound_th) and bound_th > 0):
        raise DMMInputError(f"bound_th must be a positive finite number; got {bound_th!r}")
    if len(shape) != 2 or min(shape) < 1:
        raise DMMInputError(f"shape must be (H, W) with H, W >= 1; got {tuple(shape)}")
    if bound_th >= 1:
        return float(bound_th)
    return float(np.ceil(bound_th * np.linalg.norm(np.asarray(shape, dtype=np.float64))))


def boundary_map(mask) -> np.ndarray:
    """One-pixel boundary of a binary mask, DAVIS ``_seg2bmap`` semantics. ``[.., H, W]`` -> bool.

    Pixel (i, j) is on the boundary iff it differs from its east, south or
    south-east neighbour, where the neighbours beyond the last row/column are
    copies of that row/column (edge replication). Hence the image border is never
    a boundary (an all-ones mask has none), the map sits half a pixel towards the
    origin (background pixels left of / above an object are boundary pixels), and
    the bottom-right corner pixel is never a boundary.
    """
    mask = np.asarray(mask)
    _check_mask_values(mask, "mask")
    mask = mask.astype(bool)
    if mask.ndim < 2 or mask.shape[-1] == 0 or mask.shape[-2] == 0:
        raise DMMInputError(f"mask must be [H, W] or [T, H, W] with at least one pixel; got shape {mask.shape}")
    pad = [(0, 0)] * (mask.ndim - 2) + [(0, 1), (0, 1)]
    padded = np.pad(mask, pad, mode="edge")
    east = padded[..., :-1, 1:]
    south = padded[..., 1:, :-1]
    south_east = padded[..., 1:, 1:]
    return (mask != east) | (mask != south) | (mask != south_east)


def _footprint(bound_pix: float) -> np.ndarray:
    # skimage's disk with a strict radius is what the official code dilates with;
    # using it (not our own disk) keeps even non-integer pixel tolerances identical.
    return disk(bound_pix).astype(np.uint8)


def _crop_box(*masks: np.ndarray) -> tuple[slice, slice] | None:
    """Rows/cols holding every foreground pixel of ``masks`` [H, W], grown by one pixel each side.

    Boundary pixels of a mask lie in its bounding box grown by one pixel towards
    the origin; one more row/column below and right, or the image edge, lets the
    edge-replicating boundary rule see true neighbours, so the crop's boundary map
    equals the full image's restricted to the crop and is empty outside it.
    """
    union = masks[0]
    for other in masks[1:]:
        union = union | other
    rows = np.flatnonzero(union.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(union.any(axis=0))
    height, width = union.shape
    return (
        slice(max(rows[0] - 1, 0), min(rows[-1] + 2, height)),
        slice(max(cols[0] - 1, 0), min(cols[-1] + 2, width)),
    )


def f_measure_frame(gt: np.ndarray, pred: np.ndarray, footprint: np.ndarray) -> float:
    """F for one frame of bool masks ``[H, W]`` (void already removed)."""
    box = _crop_box(gt, pred)
    if box is None:
        return 1.0  # both boundaries empty
    gt_boundary = boundary_map(gt[box])
    pred_boundary = boundary_map(pred[box])
    n_gt = np.count_nonzero(gt_boundary)
    n_pred = np.count_nonzero(pred_boundary)
    # Empty *boundaries* (not empty masks) decide these cases: full vs empty scores 1.
    if n_pred == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    elif n_pred == 0:
        precision, recall = 1.0, 0.0
    elif n_gt == 0:
        precision, recall = 0.0, 1.0
    else:
        # Every boundary pixel lies inside the crop and cv2 treats pixels outside as
        # 0, so dilating the crop is exact.
        gt_dilated = cv2.dilate(gt_boundary.view(np.uint8), footprint).view(bool)
        pred_dilated = cv2.dilate(pred_boundary.view(np.uint8), footprint).view(bool)
        precision = np.count_nonzero(pred_boundary & gt_dilated) / float(n_pred)
        recall = np.count_nonzero(gt_boundary & pred_dilated) / float(n_gt)
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def boundary_f(gt, pred, bound_th: float = DEFAULT_BOUND_TH, void=None):
    """Boundary measure F (DAVIS ``db_eval_boundary``). ``[H, W]`` -> float; ``[T, H, W]`` -> ``[T]``.

    Boundaries come from :func:`boundary_map` (after zeroing void pixels in both
    masks); each is dilated by the disk {dy^2 + dx^2 <= r^2}, r =
    :func:`boundary_tolerance`, with pixels outside the image counting as 0.
    Precision P = |pred_b ∧ dilate(gt_b)| / |pred_b|, recall R = |gt_b ∧ dilate(pred_b)| / |gt_b|;
    an empty pred boundary gives P = 1, an empty gt boundary R = 1, and the other
    one 0 if that boundary is not also empty. F = 2PR / (P + R), or 0 if P + R = 0.
    F is symmetric in (gt, pred).
    """
    gt, pred, void = _as_masks(gt, pred, void)
    footprint = _footprint(boundary_tolerance(gt.shape[-2:], bound_th))
    if void is not None:
        gt = gt & ~void
        pred = pred & ~void
    if gt.ndim == 2:
        return f_measure_frame(gt, pred, footprint)
    return np.array([f_measure_frame(g, p, footprint) for g, p in zip(gt, pred)], dtype=np.float64)


# ----------------------------------------------------------------------------- per-object statistics


class Statistics(NamedTuple):
    """Per-object summary of per-frame scores (DAVIS ``db_statistics``)."""

    mean: float
    recall: float
    decay: float


def decay_bin_ids(n: int) -> np.ndarray:
    """The five frame indices that delimit the four decay bins of an ``n``-frame sequence.

    ids[k] = round(1 + k (n - 1) / 4) - 1 with halves rounded up, stored as uint8
    in the official code: we reproduce its wrap-around (ids modulo 256) for n > 256.
    """
    if n < 1:
        raise DMMInputError(f"decay needs at least one frame; got n={n}")
    ids = np.round(np.linspace(1, n, 5) + 1e-10).astype(np.int64) - 1
    return ids % 256


def _nanmean(values: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)  # all-NaN or empty -> NaN, as official
        return float(np.nanmean(values))


def db_statistics(per_frame) -> Statistics:
    """Mean, recall and decay of one object's per-frame scores ``[T]`` (J or F).

    * mean = nanmean(x);
    * recall = nanmean(x > 0.5): strictly above 0.5, NaN counts as a miss;
    * decay = nanmean(x[ids0 : ids1 + 1]) - nanmean(x[ids3 : ids4 + 1]) with
      ``ids = decay_bin_ids(T)``: the first minus the last of four bins that share
      their end frames. T = 1 gives 0; for T > 256 the uint8 wrap of the official
      ids is reproduced (T = 257 empties the last bin, so decay is NaN).
    """
    try:
        x = np.asarray(per_frame, dtype=np.float64)
    except (TypeError, ValueError):
        raise DMMInputError(f"per_frame must be a 1-D array of scores [T]; got {type(per_frame).__name__}") from None
    if x.ndim != 1 or x.size == 0:
        raise DMMInputError(f"per_frame must be a non-empty 1-D array of scores [T]; got shape {x.shape}")
    if ((x < 0) | (x > 1) | np.isinf(x)).any():
        raise DMMInputError("per_frame holds scores outside [0, 1]; expected J or F per frame (NaN marks a frame "
                            "without a score)")
    ids = decay_bin_ids(x.size)
    first_bin = x[ids[0] : ids[1] + 1]
    last_bin = x[ids[3] : ids[4] + 1]
    return Statistics(
        mean=_nanmean(x),
        recall=float(np.mean(x > 0.5)),
        decay=_nanmean(first_bin) - _nanmean(last_bin),
    )


# ----------------------------------------------------------------------------- YouTube-VOS


class YouTubeVOSScores(NamedTuple):
    """YouTube-VOS summary: J and F split into seen/unseen categories, and their mean G."""

    j_seen: float
    j_unseen: float
    f_seen: float
    f_unseen: float
    overall: float


def youtube_vos_g(j_seen: float, j_unseen: float, f_seen: float, f_unseen: float) -> float:
    """Overall YouTube-VOS score G = (J_seen + J_unseen + F_seen + F_unseen) / 4 (paper Table 1, G_M)."""
    return (float(j_seen) + float(j_unseen) + float(f_seen) + float(f_unseen)) / 4.0


def youtube_vos_scores(
    objects: Iterable[tuple[str, float, float]], seen_categories: Iterable[str]
) -> YouTubeVOSScores:
    """J/F seen/unseen and G from per-object results ``(category, J-mean, F-mean)``.

    Each group's score is the mean over the objects whose category is (not) in
    ``seen_categories`` of their per-object means, i.e. objects weigh equally,
    as in the DAVIS global table. A group with no objects scores NaN (and so G).
    """
    seen = set(seen_categories)
    groups: dict[bool, tuple[list[float], list[float]]] = {True: ([], []), False: ([], [])}
    for index, item in enumerate(objects):
        try:
            category, j_mean, f_mean = item
        except (TypeError, ValueError):
            raise DMMInputError(
                f"objects[{index}] must be a (category, J-mean, F-mean) triple; got {item!r}"
            ) from None
        j_list, f_list = groups[category in seen]
        j_list.append(float(j_mean))
        f_list.append(float(f_mean))

    def mean(values: list[float]) -> float:
        return float(np.mean(values)) if values else float("nan")

    j_seen, f_seen = (mean(v) for v in groups[True])
    j_unseen, f_unseen = (mean(v) for v in groups[False])
    return YouTubeVOSScores(j_seen, j_unseen, f_seen, f_unseen, youtube_vos_g(j_seen, j_unseen, f_seen, f_unseen))


# ----------------------------------------------------------------------------- SegTrack v2


def segtrack_ious(gt, pred, *, exclude_first: bool = True, present=None) -> np.ndarray:
    """IoU of each instance in each frame of one SegTrack v2 video, NaN where it does not count.

    ``gt``, ``pred``: ``[K, T, H, W]`` binary masks, one per instance (SegTrack v2
    annotates each object separately). Returns float64 ``[K, T]``.

    Which (instance, frame) pairs count -- the paper (Sec. 4.1) only says "the
    frames where the instance has appeared":

    * ``present`` ``[K, T]`` bool: the pairs that count; by default those whose
      ground truth is non-empty (the instance is visible). A prediction on a frame
      where the instance is absent is then not penalised.
    * ``exclude_first``: drop frame 0, whose masks are given to the tracker.
    """
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.ndim != 4:
        raise DMMInputError(f"gt must be [K, T, H, W] (instances, frames, height, width); got shape {gt.shape}")
    if pred.shape != gt.shape:
        raise DMMInputError(f"pred has shape {pred.shape} but gt has shape {gt.shape}; they must be equal")
    k, t = gt.shape[:2]
    if present is None:
        counted = np.asarray(gt.reshape(k, t, -1).any(axis=2))
    else:
        counted = np.asarray(present, dtype=bool)
        if counted.shape != (k, t):
            raise DMMInputError(f"present must have shape (K, T) = {(k, t)}; got {counted.shape}")
        counted = counted.copy()
    if exclude_first and t > 0:
        counted[:, 0] = False
    ious = np.full((k, t), np.nan)
    for instance in range(k):
        if counted[instance].any():
            ious[instance, counted[instance]] = jaccard(gt[instance][counted[instance]], pred[instance][counted[instance]])
    return ious


def _iou_tables(ious) -> list[np.ndarray]:
    tables = [ious] if isinstance(ious, np.ndarray) else list(ious)
    checked = []
    for index, table in enumerate(tables):
        table = np.asarray(table, dtype=np.float64)
        if table.ndim != 2:
            raise DMMInputError(f"ious[{index}] must be a [K, T] table from segtrack_ious; got shape {table.shape}")
        checked.append(table)
    if not checked:
        raise DMMInputError("ious is empty; expected at least one [K, T] table")
    return checked


def miou_per_frame(ious) -> float:
    """SegTrack v2 mIoU* (paper Table 3): IoU averaged over the instances counted in each frame, then over frames.

    ``ious``: one ``[K, T]`` table from :func:`segtrack_ious` or a list of them (one
    per video); frames of all videos are pooled, each frame weighing 1. Frames
    where no instance counts are skipped.
    """
    return _pooled_mean_of_means(ious, axis=0, name="mIoU*")


def miou_per_instance(ious) -> float:
    """SegTrack v2 mIoU† (paper Table 3): IoU per instance over the frames where it counts, then over instances.

    ``ious``: one ``[K, T]`` table from :func:`segtrack_ious` or a list of them;
    instances of all videos are pooled, each weighing 1. Instances that count in
    no frame are skipped.
    """
    return _pooled_mean_of_means(ious, axis=1, name="mIoU†")


def _pooled_mean_of_means(ious, axis: int, name: str) -> float:
    """Mean over the pooled groups of the mean of the counted IoUs in each group.

    ``[K, T]`` tables: ``axis=0`` groups by frame (mean over instances first), ``axis=1`` by
    instance (mean over frames first). NaN marks a pair that does not count; a group with
    no counted pair is skipped.
    """
    group_means = []
    for table in _iou_tables(ious):
        counted = ~np.isnan(table)
        has_any = counted.any(axis=axis)
        sums = np.where(counted, table, 0.0).sum(axis=axis)
        group_means.append(sums[has_any] / counted.sum(axis=axis)[has_any])
    values = np.concatenate(group_means)
    if values.size == 0:
        raise DMMInputError(f"no (instance, frame) pair counts; {name} is undefined")
    return float(values.mean())

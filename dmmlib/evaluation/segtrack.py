"""SegTrack v2 scoring (Table 3): mIoU* (per frame, then over frames) and mIoU† (per instance).

Results are label PNGs ``<results>/<seq>/<frame>.png`` (object k = ground-truth folder k).
Frames that count for an instance: those after its template frame (its first non-empty
mask) in which its ground truth is non-empty.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from dmmlib.data.segtrack import SegTrackV2Dataset
from dmmlib.evaluation.metrics import miou_per_frame, miou_per_instance, segtrack_ious
from dmmlib.evaluation.results import read_result, result_folder


def evaluate_segtrack(root, results_dir, sequences: list[str] | None = None) -> dict:
    """mIoU* and mIoU† (Table 3) of label-PNG results ``<results>/<seq>/<frame>.png``.

    Frames that count for an instance: those after its template frame (its first
    non-empty mask; frame 0 for every real SegTrack v2 object) in which its ground
    truth is non-empty. mIoU*: mean over those instances per frame, then over all
    frames of all sequences; mIoU†: mean per instance, then over all instances.
    Returns ``{"mIoU*", "mIoU†", "per_instance": [...], "frames": count}``.
    """
    results_dir = Path(results_dir)
    dataset = SegTrackV2Dataset(root)
    tables, per_instance, counted_frames = [], [], 0
    for name in dataset.names if sequences is None else sequences:
        sequence = dataset.sequence(name)
        folder = result_folder(results_dir, name)
        indices = sequence.annotated_indices
        ids = sequence.ground_truth_ids
        gt = np.stack([sequence.object_masks(i) for i in indices], axis=1)  # [K, T, H, W], overlaps kept
        pred_labels = np.stack([read_result(folder / f"{sequence.frame_names[i]}.png", gt.shape[2:])
                                for i in indices])
        pred = np.stack([pred_labels == object_id for object_id in ids])
        present = gt.reshape(len(ids), len(indices), -1).any(axis=2)
        for k in range(len(ids)):
            seen_at = np.flatnonzero(present[k])
            if seen_at.size:
                present[k, : seen_at[0] + 1] = False  # the template frame is given, not predicted
        ious = segtrack_ious(gt, pred, exclude_first=True, present=present)
        tables.append(ious)
        counted_frames += int((~np.isnan(ious)).any(axis=0).sum())
        for k, object_id in enumerate(ids):
            values = ious[k][~np.isnan(ious[k])]
            per_instance.append({"sequence": name, "object": object_id, "frames": int(values.size),
                                 "IoU": float(values.mean()) if values.size else math.nan})
    return {"mIoU*": miou_per_frame(tables), "mIoU†": miou_per_instance(tables),
            "per_instance": per_instance, "frames": counted_frames}

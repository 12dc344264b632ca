"""How many annotated objects the top-k proposals cover: the recall that justifies top-50 (Sec. 3)."""

from __future__ import annotations

import os

import numpy as np
import torch

from dmmlib.cost import mask_iou
from dmmlib.data.davis import annotation_folder, frame_files, read_split
from dmmlib.data.masks import object_ids, read_label_png
from dmmlib.errors import DMMInputError
from dmmlib.proposals.cache import ProposalCache
from dmmlib.proposals.frames import TOP_K, FrameProposals


def best_proposal_iou(objects: torch.Tensor, proposals: FrameProposals, top_k: int = TOP_K) -> torch.Tensor:
    """For each object mask ``[n, H, W]`` (bool), the best mask IoU over the top-k proposals: ``[n]``.

    Proposals are pasted and thresholded at 0.5 (Mask R-CNN's binarisation).
    """
    chosen = proposals.top(top_k)
    if objects.shape[0] == 0 or len(chosen) == 0:
        return torch.zeros(objects.shape[0])
    height, width = objects.shape[-2:]
    pasted = chosen.paste(height, width, threshold=0.5) > 0  # [m, H, W]
    return mask_iou(objects.bool(), pasted).max(dim=1).values


def proposal_recall(
    data_root: str | os.PathLike,
    split: str,
    cache_root: str | os.PathLike | ProposalCache,
    iou_thresholds: tuple[float, ...] = (0.5, 0.7),
    top_k: int = TOP_K,
) -> dict:
    """Recall of the tracked objects by the cached top-k proposals (why top-50 suffices, Sec. 3).

    For every frame of every sequence of ``split`` and every object of its
    ``Annotations`` label map that is visible there (non-empty mask), take the best
    mask IoU over the frame's top-``top_k`` proposals; the recall at threshold ``tau``
    is the fraction of such (object, frame) pairs with best IoU >= ``tau``.

    Returns ``{"recall": {tau: fraction}, "pairs": count, "mean_best_iou": float,
    "best_ious": [per-pair values]}``. A frame missing from the cache is an error.
    """
    cache = cache_root if isinstance(cache_root, ProposalCache) else ProposalCache(cache_root)
    if top_k < 1:
        raise DMMInputError(f"top_k={top_k}; expected at least 1")
    best: list[float] = []
    for seq in read_split(data_root, split):
        for frame in frame_files(data_root, seq):
            annotation = annotation_folder(data_root, seq) / f"{frame.stem}.png"
            if not annotation.is_file():
                continue  # unannotated frames (e.g. DAVIS test-dev) cannot be scored
            labels = read_label_png(annotation)
            ids = object_ids(labels)
            if not ids:
                continue
            proposals = cache.get(seq, frame.stem)
            if proposals is None:
                raise DMMInputError(
                    f"no cached proposals for {seq}/{frame.stem} in {cache.root}; run `python -m dmmlib proposals compute` first"
                )
            objects = torch.from_numpy(np.stack([labels == i for i in ids]))
            best += best_proposal_iou(objects, proposals, top_k).tolist()
    values = np.asarray(best, dtype=np.float64)
    recall = {float(t): (float((values >= t).mean()) if values.size else float("nan")) for t in iou_thresholds}
    return {
        "recall": recall,
        "pairs": int(values.size),
        "mean_best_iou": float(values.mean()) if values.size else float("nan"),
        "best_ious": best,
    }

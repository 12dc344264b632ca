"""YouTube-VOS scoring (Table 1, Table 4): J and F seen / unseen and G, on a split with ground truth.

The official validation ground truth is not public (scores come from the evaluation
server); :func:`evaluate_youtube_vos` scores a *held-out split with ground truth* in the
train layout -- the paper's "train-val" split of the training set (Sec. 4.2) -- the way
the server scores ``valid``: objects may enter late, each is scored on the annotated
frames after its template frame, and G = mean(J_seen, J_unseen, F_seen, F_unseen).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dmmlib.data.youtube_vos import YouTubeVOSDataset
from dmmlib.errors import DMMInputError
from dmmlib.evaluation.metrics import boundary_f, jaccard, youtube_vos_scores
from dmmlib.evaluation.results import read_result, result_folder
from dmmlib.fileio import plain_name, read_json_file


def seen_categories_of(root, split: str = "train") -> set[str]:
    """The categories of ``<root>/<split>/meta.json`` (the training set's: "seen")."""
    path = Path(root) / plain_name(split, "seen split") / "meta.json"
    if not path.is_file():
        raise DMMInputError(f"{path} does not exist; seen categories are those of the training split's meta.json")
    meta = read_json_file(path, "YouTube-VOS meta file")
    if not isinstance(meta, dict):
        raise DMMInputError(f"{path} is not a YouTube-VOS meta file; expected {{'videos': {{...}}}}")
    try:
        return {str(o["category"]) for v in meta.get("videos", {}).values() for o in v.get("objects", {}).values()
                if o.get("category") is not None}
    except (AttributeError, TypeError) as error:
        raise DMMInputError(f"{path} is not a YouTube-VOS meta file ({error}); expected "
                            "{'videos': {video: {'objects': {id: {'category': ...}}}}}") from None


def evaluate_youtube_vos(root, split: str, results_dir, seen_categories=None, seen_split: str = "train") -> dict:
    """J / F per object on a split whose every 6 fps frame is annotated; seen / unseen; G.

    Frames scored for an object: the annotated frames *after* its template frame (the
    first one it appears in), up to the last, frames where it is absent included (J = F
    = 1 when the prediction is empty too, as DAVIS). Per-object means are grouped by
    whether the object's category is in ``seen_categories`` (default: the categories of
    ``<root>/<seen_split>/meta.json``) and combined by :func:`dmmlib.evaluation.metrics.youtube_vos_scores`.
    Returns ``{"J_seen", "J_unseen", "F_seen", "F_unseen", "G", "objects": [...]}`` (NaN for an empty group).
    """
    results_dir = Path(results_dir)
    dataset = YouTubeVOSDataset(root, split, all_frames_root=False)
    seen = seen_categories_of(root, seen_split) if seen_categories is None else set(seen_categories)
    rows = []
    for name in dataset.names:
        sequence = dataset.sequence(name)
        folder = result_folder(results_dir, name)
        for obj in sequence.objects:
            frames = [i for i in sequence.annotated_indices if i > obj.first_frame]
            if not frames:
                continue  # an object that only exists in the last annotated frame scores nothing
            gt = np.stack([sequence.labels(i) == obj.id for i in frames])
            pred = np.stack([read_result(folder / f"{sequence.frame_names[i]}.png", gt.shape[1:]) == obj.id
                             for i in frames])
            j, f = np.atleast_1d(jaccard(gt, pred)), np.atleast_1d(boundary_f(gt, pred))
            rows.append({"video": name, "object": obj.id, "category": obj.category,
                         "seen": obj.category in seen, "frames": len(frames),
                         "J": float(np.nanmean(j)), "F": float(np.nanmean(f))})
    if not rows:
        raise DMMInputError(f"split {split!r} of {root} has no object with an annotated frame after its first one")
    scores = youtube_vos_scores([(r["category"], r["J"], r["F"]) for r in rows], seen)
    return {"J_seen": scores.j_seen, "J_unseen": scores.j_unseen, "F_seen": scores.f_seen,
            "F_unseen": scores.f_unseen, "G": scores.overall, "objects": rows}

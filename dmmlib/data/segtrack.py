"""SegTrack v2: 14 videos, 24 objects, one binary mask per object and frame.

::

    <root>/JPEGImages/<seq>/<frame>.png|.bmp|.jpg   mixed formats across sequences
    <root>/GroundTruth/<seq>/<frame>.png|.bmp       one object: binary masks directly, or
    <root>/GroundTruth/<seq>/1/<frame>.png ...      several objects: one numbered folder each

Masks may be greyscale (0/255 or 0/1), 1-bit or RGB; each is thresholded at
half its maximum and the objects are combined into one label map (object k
from folder k; where masks overlap the higher id wins). Masks are matched to
frames by file name without extension; if no names match but the counts do,
by sorted order.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from dmmlib.data.images import FRAME_EXTENSIONS, list_images
from dmmlib.data.masks import read_label_png
from dmmlib.data.sequence import ObjectInfo, VOSDataset, VOSSequence
from dmmlib.errors import DMMInputError


def read_binary_mask(path: Path) -> np.ndarray:
    """A binary ground-truth mask (grey, 1-bit or RGB; any image format) as bool ``[H, W]``."""
    values = read_label_png(path, allow_binary_rgb=True)
    top = int(values.max(initial=0))
    return values > top / 2 if top > 0 else np.zeros(values.shape, bool)


class SegTrackSequence(VOSSequence):
    """A SegTrack v2 video: ``annotations[i]`` is the tuple of per-object mask files of frame ``i``."""

    def __init__(self, name, frame_paths, annotations, object_ids: list[int]):
        super().__init__(name, frame_paths, annotations)
        self._object_ids = object_ids

    @property
    def ground_truth_ids(self) -> list[int]:
        """The object ids of the ground-truth folders (1 for a single object), whether or not visible."""
        return list(self._object_ids)

    def object_masks(self, index: int) -> np.ndarray:
        """Each object's own mask of frame ``index``, overlaps kept: bool ``[K, H, W]`` in :attr:`ground_truth_ids` order."""
        return np.stack([read_binary_mask(path) for path in self.annotations[index]])

    def _read_raw(self, index: int) -> np.ndarray:
        expected = self.frame_size(index)
        labels = np.zeros(expected, np.uint8)
        for object_id, path in zip(self._object_ids, self.annotations[index]):
            mask = read_binary_mask(path)
            if mask.shape != expected:
                raise DMMInputError(
                    f"ground truth {path} is {mask.shape[1]}x{mask.shape[0]} (WxH) but its frame "
                    f"{self.frame_paths[index]} is {expected[1]}x{expected[0]}; expected equal sizes"
                )
            labels[mask] = object_id
        return labels

    def _find_objects(self) -> list[ObjectInfo]:
        # an object's template is its first non-empty mask; SegTrack objects are present from
        # frame 0, but checking costs little on 14 short videos and is correct either way
        first = {}
        for index in self.annotations:
            labels = self.labels(index)
            for object_id in self._object_ids:
                if object_id not in first and (labels == object_id).any():
                    first[object_id] = index
            if len(first) == len(self._object_ids):
                break
        return [ObjectInfo(i, first[i]) for i in self._object_ids if i in first]


class SegTrackV2Dataset(VOSDataset):
    """SegTrack v2 sequences found under ``<root>/JPEGImages`` (all of them, sorted by name)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        frames_dir = self.root / "JPEGImages"
        if not frames_dir.is_dir():
            raise DMMInputError(f"SegTrack v2 frame folder {frames_dir} does not exist")
        if not (self.root / "GroundTruth").is_dir():
            raise DMMInputError(f"SegTrack v2 ground-truth folder {self.root / 'GroundTruth'} does not exist")
        self.names = sorted(p.name for p in frames_dir.iterdir() if p.is_dir())
        if not self.names:
            raise DMMInputError(f"SegTrack v2 frame folder {frames_dir} holds no sequence folders")
        for name in self.names:
            if not (self.root / "GroundTruth" / name).is_dir():
                raise DMMInputError(
                    f"sequence {name!r} has frames in {frames_dir / name} but no ground truth folder "
                    f"{self.root / 'GroundTruth' / name}"
                )

    def _object_folders(self, gt_dir: Path) -> list[tuple[int, Path]]:
        numbered = sorted((int(p.name), p) for p in gt_dir.iterdir() if p.is_dir() and p.name.isdigit())
        if numbered:
            return numbered
        return [(1, gt_dir)]

    def _make_sequence(self, name: str) -> SegTrackSequence:
        frame_dir = self.root / "JPEGImages" / name
        frames = list_images(frame_dir)
        if not frames:
            raise DMMInputError(f"frame folder {frame_dir} holds no images ({', '.join(FRAME_EXTENSIONS)})")
        stems = [p.stem for p in frames]
        if len(set(stems)) != len(stems):
            raise DMMInputError(f"frame folder {frame_dir} holds two images with the same name and different formats")
        index_of = {s: i for i, s in enumerate(stems)}

        gt_dir = self.root / "GroundTruth" / name
        per_object: list[dict[int, Path]] = []
        object_ids = []
        for object_id, folder in self._object_folders(gt_dir):
            masks = list_images(folder, what="ground-truth folder")
            if not masks:
                raise DMMInputError(f"ground-truth folder {folder} holds no mask images")
            by_name = {p.stem: p for p in masks}
            if any(s in index_of for s in by_name):
                unmatched = [p for p in masks if p.stem not in index_of]
                if unmatched:
                    raise DMMInputError(f"ground truth {unmatched[0]} has no frame named {unmatched[0].stem}.* in {frame_dir}")
                per_object.append({index_of[s]: p for s, p in by_name.items()})
            elif len(masks) == len(frames):
                per_object.append(dict(enumerate(masks)))
            else:
                raise DMMInputError(
                    f"ground-truth folder {folder} has {len(masks)} masks whose names match none of the "
                    f"{len(frames)} frames in {frame_dir}; expected masks named like the frames"
                )
            object_ids.append(object_id)

        indices = sorted(per_object[0])
        for object_id, masks in zip(object_ids[1:], per_object[1:]):
            missing = sorted(set(indices) ^ set(masks))
            if missing:
                stem = stems[missing[0]]
                raise DMMInputError(
                    f"ground truth of sequence {name!r}: object {object_id} and object {object_ids[0]} do not "
                    f"annotate the same frames (frame {stem} differs) in {gt_dir}"
                )
        annotations = {i: tuple(masks[i] for masks in per_object) for i in indices}
        return SegTrackSequence(name, frames, annotations, object_ids)

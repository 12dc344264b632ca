"""DAVIS 2017 (and our synthetic benchmark, which uses the same layout).

::

    <root>/JPEGImages/<resolution>/<seq>/00000.jpg ...
    <root>/Annotations/<resolution>/<seq>/00000.png ...   palette PNGs, 255 = void
    <root>/ImageSets/2017/<split>.txt                     one sequence name per line

The objects of a sequence are the ids in its first annotation (semi-supervised
DAVIS gives every object in frame 0).
"""

from __future__ import annotations

import os
from pathlib import Path

from dmmlib.data.images import check_consecutive, list_images
from dmmlib.data.sequence import VOSDataset, VOSSequence
from dmmlib.errors import DMMInputError


def read_split_file(path: Path) -> list[str]:
    """Sequence names listed one per line in ``path`` (blank lines ignored)."""
    if not path.is_file():
        raise DMMInputError(f"split file {path} does not exist")
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not names:
        raise DMMInputError(f"split file {path} is empty; expected one sequence name per line")
    return names


class DavisSequence(VOSSequence):
    """A DAVIS sequence: every frame a JPEG, annotations (all frames, or only the first) as palette PNGs."""


class DavisDataset(VOSDataset):
    """DAVIS 2017 semi-supervised sequences of ``split`` at ``resolution`` ("480p" or "Full-Resolution").

    ``dataset.sequence(name)`` gives a lazily read :class:`DavisSequence`; labels
    have void (255) set to 0 and the void mask is returned separately.
    ``annotations="Instances"`` reads the synthetic benchmark's instance maps
    (tracked objects and distractors), for training a class-agnostic proposal network.
    """

    def __init__(self, root: str | os.PathLike, split: str = "val", resolution: str = "480p", year: int = 2017,
                 annotations: str = "Annotations"):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DMMInputError(f"DAVIS root {self.root} does not exist")
        self.split = split
        self.resolution = resolution
        self.frames_dir = self.root / "JPEGImages" / resolution
        self.annotations_dir = self.root / annotations / resolution
        if not self.annotations_dir.is_dir():
            raise DMMInputError(f"annotation folder {self.annotations_dir} does not exist")
        self.names = read_split_file(self.root / "ImageSets" / str(year) / f"{split}.txt")
        for name in self.names:
            if not (self.frames_dir / name).is_dir():
                raise DMMInputError(
                    f"sequence {name!r} is listed in {self.root / 'ImageSets' / str(year) / f'{split}.txt'} "
                    f"but its frame folder {self.frames_dir / name} does not exist"
                )

    def _make_sequence(self, name: str) -> DavisSequence:
        frame_dir = self.frames_dir / name
        frames = list_images(frame_dir, (".jpg", ".jpeg"))
        if not frames:
            raise DMMInputError(f"frame folder {frame_dir} holds no JPEG frames")
        check_consecutive(frames, frame_dir)
        index_of = {p.stem: i for i, p in enumerate(frames)}
        annotation_dir = self.annotations_dir / name
        annotations = {}
        for path in list_images(annotation_dir, (".png",), what="annotation folder"):
            if path.stem not in index_of:
                raise DMMInputError(
                    f"annotation {path} has no frame: expected {frame_dir / (path.stem + '.jpg')}"
                )
            annotations[index_of[path.stem]] = path
        if 0 not in annotations:
            raise DMMInputError(
                f"sequence {name!r} lacks its first-frame annotation {annotation_dir / (frames[0].stem + '.png')}"
            )
        return DavisSequence(name, frames, annotations)

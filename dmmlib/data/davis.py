"""DAVIS 2017 (and our synthetic benchmark, which uses the same layout): the one home of its layout.

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
from dmmlib.fileio import plain_name, read_text_file

RESOLUTION = "480p"  # the DAVIS folder name; the synthetic benchmark keeps it for smaller frames
YEAR = 2017


def split_path(root: str | os.PathLike, split: str, year: int = YEAR) -> Path:
    """``<root>/ImageSets/<year>/<split>.txt``; ``split`` must be a plain name (no separators, no ``..``)."""
    return Path(root) / "ImageSets" / str(year) / f"{plain_name(split, 'split')}.txt"


def read_split(root: str | os.PathLike, split: str, year: int = YEAR) -> list[str]:
    """The sequence names of ``split``: the lines of ``ImageSets/<year>/<split>.txt``, in file order.

    Blank lines are skipped; a missing, empty or non-UTF-8 file, a name listed twice, or a
    line that is a path rather than a name, is a :class:`DMMInputError` naming the file.
    """
    path = split_path(root, split, year)
    if not path.is_file() and not path.is_dir():
        raise DMMInputError(f"split file {path} does not exist; expected one sequence name per line "
                            f"(is {root} a dataset in the DAVIS layout?)")
    lines = read_text_file(path, "split file").splitlines()
    names = [plain_name(line.strip(), f"split file {path}: line {k + 1},") for k, line in enumerate(lines)
             if line.strip()]
    if not names:
        raise DMMInputError(f"split file {path} lists no sequences; expected one sequence name per line")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DMMInputError(f"split file {path} lists {', '.join(repeated)} more than once")
    return names


def frame_folder(root: str | os.PathLike, sequence: str, resolution: str = RESOLUTION) -> Path:
    """``<root>/JPEGImages/<resolution>/<sequence>`` (both plain names)."""
    return Path(root) / "JPEGImages" / plain_name(resolution, "resolution") / plain_name(sequence, "sequence")


def frame_files(root: str | os.PathLike, sequence: str, resolution: str = RESOLUTION) -> list[Path]:
    """The JPEG frames of ``sequence``, sorted by name; a folder without any is a :class:`DMMInputError`."""
    return list_images(frame_folder(root, sequence, resolution), (".jpg", ".jpeg"), required=True)


def annotation_folder(root: str | os.PathLike, sequence: str, resolution: str = RESOLUTION,
                      annotations: str = "Annotations") -> Path:
    """``<root>/<annotations>/<resolution>/<sequence>`` (``annotations="Instances"``: the synthetic instance maps)."""
    return Path(root) / annotations / plain_name(resolution, "resolution") / plain_name(sequence, "sequence")


class DavisSequence(VOSSequence):
    """A DAVIS sequence: every frame a JPEG, annotations (all frames, or only the first) as palette PNGs."""


class DavisDataset(VOSDataset):
    """DAVIS 2017 semi-supervised sequences of ``split`` at ``resolution`` ("480p" or "Full-Resolution").

    ``dataset.sequence(name)`` gives a lazily read :class:`DavisSequence`; labels
    have void (255) set to 0 and the void mask is returned separately.
    ``annotations="Instances"`` reads the synthetic benchmark's instance maps
    (tracked objects and distractors), for training a class-agnostic proposal network.
    """

    def __init__(self, root: str | os.PathLike, split: str = "val", resolution: str = RESOLUTION, year: int = YEAR,
                 annotations: str = "Annotations"):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DMMInputError(f"DAVIS root {self.root} does not exist")
        self.split = split
        self.resolution = plain_name(resolution, "resolution")
        self.frames_dir = self.root / "JPEGImages" / resolution
        self.annotations_dir = self.root / annotations / resolution
        if not self.annotations_dir.is_dir():
            raise DMMInputError(f"annotation folder {self.annotations_dir} does not exist")
        self.names = read_split(self.root, split, year)
        for name in self.names:
            if not (self.frames_dir / name).is_dir():
                raise DMMInputError(
                    f"sequence {name!r} is listed in {split_path(self.root, split, year)} "
                    f"but its frame folder {self.frames_dir / name} does not exist"
                )

    def _make_sequence(self, name: str) -> DavisSequence:
        frame_dir = self.frames_dir / name
        frames = frame_files(self.root, name, self.resolution)
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

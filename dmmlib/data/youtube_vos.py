"""YouTube-VOS 2018 / 2019.

::

    <root>/<split>/meta.json                    {"videos": {vid: {"objects": {"1": {"category": .., "frames": [..]}}}}}
    <root>/<split>/JPEGImages/<vid>/00000.jpg   every 5th frame of the 30 fps video (6 fps)
    <root>/<split>/Annotations/<vid>/00000.png  palette PNGs
    <root>/<split>_all_frames/JPEGImages/<vid>/ every frame (e.g. ``valid_all_frames``), optional

Objects may enter after the first frame: each object's template is its mask in
the first frame its ``frames`` list names. In ``valid`` only those template
frames are annotated; in ``train`` every 6 fps frame is. With the all-frames
folder, a sequence runs over every frame and annotations keep their own frame
names (``00005.png`` annotates the frame ``00005.jpg``).
"""

from __future__ import annotations

import os
from pathlib import Path

from dmmlib.data.images import check_consecutive, list_images
from dmmlib.data.sequence import ObjectInfo, VOSDataset, VOSSequence
from dmmlib.errors import DMMInputError
from dmmlib.fileio import plain_name, read_json_file


class YouTubeVOSSequence(VOSSequence):
    """A YouTube-VOS video whose objects (from ``meta.json``) may start at later frames."""

    def __init__(self, name, frame_paths, annotations, objects: list[ObjectInfo]):
        super().__init__(name, frame_paths, annotations)
        self._objects = objects

    def _find_objects(self) -> list[ObjectInfo]:
        return list(self._objects)


def _frame_number(name: str) -> tuple[int, str]:
    return (int(name), name) if name.isdigit() else (1 << 62, name)


class YouTubeVOSDataset(VOSDataset):
    """YouTube-VOS videos of ``split`` ("train" or "valid", or any folder with the same layout).

    ``all_frames_root``: the folder holding ``JPEGImages/<vid>/`` with every frame;
    ``None`` looks for a sibling ``<split>_all_frames`` and uses it if present;
    ``False`` keeps the 6 fps frames.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train",
                 all_frames_root: str | os.PathLike | None | bool = None):
        self.root = Path(root)
        self.split = plain_name(split, "split")
        self.split_dir = self.root / split
        if not self.split_dir.is_dir():
            raise DMMInputError(f"YouTube-VOS split folder {self.split_dir} does not exist")
        meta_path = self.split_dir / "meta.json"
        if not meta_path.is_file():
            raise DMMInputError(f"YouTube-VOS meta file {meta_path} does not exist; expected {{'videos': {{...}}}}")
        meta = read_json_file(meta_path, "YouTube-VOS meta file")
        try:
            videos = meta["videos"]
            if not isinstance(videos, dict):
                raise TypeError("'videos' is not a mapping")
        except (KeyError, TypeError) as error:
            raise DMMInputError(f"{meta_path} is not a YouTube-VOS meta file ({error}); expected {{'videos': {{...}}}}") from None
        if not videos:
            raise DMMInputError(f"{meta_path} lists no videos")
        for name in videos:
            plain_name(name, f"{meta_path}: video")
        self.meta_path = meta_path
        self.videos = videos
        self.names = sorted(videos)

        if all_frames_root is None:
            sibling = self.root / f"{split}_all_frames"
            self.all_frames_root = sibling if (sibling / "JPEGImages").is_dir() else None
        elif all_frames_root is False:
            self.all_frames_root = None
        else:
            self.all_frames_root = Path(all_frames_root)
            if not (self.all_frames_root / "JPEGImages").is_dir():
                raise DMMInputError(f"all-frames folder {self.all_frames_root / 'JPEGImages'} does not exist")

        for name in self.names:
            if not (self.split_dir / "JPEGImages" / name).is_dir():
                raise DMMInputError(
                    f"video {name!r} is listed in {meta_path} but its frame folder "
                    f"{self.split_dir / 'JPEGImages' / name} does not exist"
                )

    def _make_sequence(self, name: str) -> YouTubeVOSSequence:
        if self.all_frames_root is not None:
            frame_dir = self.all_frames_root / "JPEGImages" / name
            frames = list_images(frame_dir, (".jpg", ".jpeg"))
            check_consecutive(frames, frame_dir)
        else:
            frame_dir = self.split_dir / "JPEGImages" / name
            frames = list_images(frame_dir, (".jpg", ".jpeg"))
        if not frames:
            raise DMMInputError(f"frame folder {frame_dir} holds no JPEG frames")
        index_of = {p.stem: i for i, p in enumerate(frames)}

        annotation_dir = self.split_dir / "Annotations" / name
        annotations = {}
        if annotation_dir.is_dir():
            for path in list_images(annotation_dir, (".png",), what="annotation folder"):
                if path.stem not in index_of:
                    raise DMMInputError(f"annotation {path} has no frame: expected {frame_dir / (path.stem + '.jpg')}")
                annotations[index_of[path.stem]] = path

        objects = []
        for key, entry in self.videos[name].get("objects", {}).items():
            where = f"object {key!r} of video {name!r} in {self.meta_path}"
            if not str(key).isdigit() or not isinstance(entry, dict) or not entry.get("frames"):
                raise DMMInputError(f"{where} needs an integer id and a non-empty 'frames' list")
            first = min((str(f) for f in entry["frames"]), key=_frame_number)
            if first not in index_of:
                raise DMMInputError(f"{where} starts at frame {first!r} but {frame_dir / (first + '.jpg')} does not exist")
            if index_of[first] not in annotations:
                raise DMMInputError(
                    f"{where} starts at frame {first!r} but its template {annotation_dir / (first + '.png')} does not exist"
                )
            objects.append(ObjectInfo(int(key), index_of[first], entry.get("category")))
        objects.sort(key=lambda o: o.id)
        return YouTubeVOSSequence(name, frames, annotations, objects)

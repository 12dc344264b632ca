"""What every dataset loader returns: lazily read video sequences.

A :class:`VOSSequence` holds only file paths. Frames and annotations are read
when asked for, so iterating over a long video keeps one frame in memory at a
time. All arrays are numpy: frames uint8 RGB ``[H, W, 3]``, labels uint8
``[H, W]`` (0 background, k object k, void pixels set to 0), void masks bool
``[H, W]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from dmmlib.data.images import image_size, read_frame
from dmmlib.data.masks import VOID_LABEL, object_ids, read_label_png
from dmmlib.errors import DMMInputError


@dataclass(frozen=True)
class ObjectInfo:
    """One annotated object: its label ``id``, the index of the frame that gives its template, its category."""

    id: int
    first_frame: int
    category: str | None = None


@dataclass
class FrameRecord:
    """One frame of a sequence: ``image`` [H, W, 3] uint8; ``labels`` [H, W] uint8 and ``void`` [H, W] bool
    where the frame is annotated, else ``None``."""

    index: int
    name: str
    image: np.ndarray
    labels: np.ndarray | None
    void: np.ndarray | None


class VOSSequence:
    """A video: ordered frame files and, for some frames, annotation files.

    ``annotations`` maps a frame index to its annotation file(s). Subclasses
    override :meth:`_read_raw` for formats other than one label PNG per frame and
    :meth:`_find_objects` where objects are not all present in the first frame.
    """

    def __init__(self, name: str, frame_paths: Sequence[Path], annotations: dict[int, object]):
        if not frame_paths:
            raise DMMInputError(f"sequence {name!r} has no frames")
        self.name = name
        self.frame_paths = list(frame_paths)
        self.annotations = dict(sorted(annotations.items()))

    def __len__(self) -> int:
        return len(self.frame_paths)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, frames={len(self)}, annotated={len(self.annotations)})"

    @property
    def frame_names(self) -> list[str]:
        return [p.stem for p in self.frame_paths]

    @property
    def annotated_indices(self) -> list[int]:
        return list(self.annotations)

    def has_annotation(self, index: int) -> bool:
        return index in self.annotations

    def _check_index(self, index: int) -> int:
        if not -len(self) <= index < len(self):
            raise DMMInputError(f"frame index {index} is out of range for sequence {self.name!r} of {len(self)} frames")
        return index % len(self)

    def frame(self, index: int) -> np.ndarray:
        """Frame ``index`` as uint8 RGB ``[H, W, 3]``."""
        return read_frame(self.frame_paths[self._check_index(index)])

    def frame_size(self, index: int = 0) -> tuple[int, int]:
        """``(H, W)`` of frame ``index`` from the file header."""
        return image_size(self.frame_paths[self._check_index(index)])

    def annotation_path(self, index: int) -> Path:
        entry = self.annotations[index]
        return entry[0] if isinstance(entry, (list, tuple)) else entry

    def _read_raw(self, index: int) -> np.ndarray:
        return read_label_png(self.annotations[index])

    def annotation(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """``(labels, void)`` of frame ``index``: labels uint8 ``[H, W]`` with void set to 0, void bool ``[H, W]``."""
        index = self._check_index(index)
        if index not in self.annotations:
            raise DMMInputError(f"frame {self.frame_paths[index]} of sequence {self.name!r} has no annotation")
        raw = self._read_raw(index)
        expected = self.frame_size(index)
        if raw.shape != expected:
            raise DMMInputError(
                f"annotation {self.annotation_path(index)} is {raw.shape[1]}x{raw.shape[0]} (WxH) but its frame "
                f"{self.frame_paths[index]} is {expected[1]}x{expected[0]}; expected equal sizes"
            )
        void = raw == VOID_LABEL
        labels = np.where(void, 0, raw).astype(np.uint8)
        return labels, void

    def labels(self, index: int) -> np.ndarray:
        """Labels uint8 ``[H, W]`` of frame ``index`` (void set to 0)."""
        return self.annotation(index)[0]

    def void(self, index: int) -> np.ndarray:
        """Void mask bool ``[H, W]`` of frame ``index`` (pixels to ignore in evaluation)."""
        return self.annotation(index)[1]

    def _find_objects(self) -> list[ObjectInfo]:
        if 0 not in self.annotations:
            raise DMMInputError(f"sequence {self.name!r}: the first frame {self.frame_paths[0]} has no annotation")
        return [ObjectInfo(i, 0) for i in object_ids(self.labels(0))]

    @cached_property
    def objects(self) -> list[ObjectInfo]:
        """The objects to segment, each with the frame that gives its template."""
        return self._find_objects()

    @property
    def object_ids(self) -> list[int]:
        return [o.id for o in self.objects]

    def first_frame_labels(self) -> np.ndarray:
        """Labels uint8 ``[H, W]`` of frame 0 (objects entering later are absent here; see :meth:`templates`)."""
        return self.labels(0)

    def templates(self) -> dict[int, tuple[int, np.ndarray]]:
        """``{object id: (frame index, mask bool [H, W])}``: each object's mask in its first annotated frame."""
        cache: dict[int, np.ndarray] = {}
        result = {}
        for obj in self.objects:
            if obj.first_frame not in cache:
                cache[obj.first_frame] = self.labels(obj.first_frame)
            result[obj.id] = (obj.first_frame, cache[obj.first_frame] == obj.id)
        return result

    def __iter__(self) -> Iterator[FrameRecord]:
        """Stream the frames in order, reading each file only when it is reached."""
        for index, path in enumerate(self.frame_paths):
            labels = void = None
            if index in self.annotations:
                labels, void = self.annotation(index)
            yield FrameRecord(index, path.stem, self.frame(index), labels, void)


class VOSDataset:
    """A set of named sequences; subclasses build each :class:`VOSSequence` on demand."""

    names: list[str]

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self) -> Iterator[VOSSequence]:
        for name in self.names:
            yield self.sequence(name)

    def __getitem__(self, key: int | str) -> VOSSequence:
        return self.sequence(self.names[key] if isinstance(key, int) else key)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({getattr(self, 'root', '')!s}, sequences={len(self)})"

    def sequence(self, name: str) -> VOSSequence:
        """The sequence ``name``; built once (file listing only), then reused."""
        if name not in self.names:
            raise DMMInputError(f"sequence {name!r} is not in {self!r}")
        cache = self.__dict__.setdefault("_sequences", {})
        if name not in cache:
            cache[name] = self._make_sequence(name)
        return cache[name]

    def _make_sequence(self, name: str) -> VOSSequence:
        raise NotImplementedError

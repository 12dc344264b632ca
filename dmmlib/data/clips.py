"""Random training clips of T consecutive annotated frames, with a random affine augmentation.

The paper trains on short clips with "random affine augmentation" (Sec. 4.1).
One affine transform is drawn per clip and applied to every frame and mask of
it, bilinear for frames and nearest-neighbour for masks, so labels stay integer
and aligned with the pixels they label. Everything is a pure function of
``(seed, epoch, index)``, so a clip can be re-created exactly.

Consecutive means consecutive *annotated* frames: DAVIS and the synthetic
benchmark annotate every frame; YouTube-VOS ``train`` annotates every 5th.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from dmmlib.data.sequence import VOSDataset
from dmmlib.errors import DMMInputError


@dataclass(frozen=True)
class AffineAugment:
    """Ranges of the random affine transform: rotation and shear in degrees (symmetric),
    scale factor range, translation as a fraction of the output size, horizontal flip probability.

    With ``rotation = shear = 0`` the transform is axis-aligned (scale, shift, flip): boxes stay
    boxes, so proposals cached for the stored frames can be warped along with a clip
    (:meth:`dmmlib.proposals.FrameProposals.transformed`); :data:`AXIS_ALIGNED` is that setting."""

    rotation: float = 10.0
    scale: tuple[float, float] = (0.9, 1.1)
    translate: float = 0.08
    shear: float = 5.0
    flip_prob: float = 0.0

    def sample(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        """A random 2x3 matrix acting on output pixel coordinates, centred on the image centre."""
        angle = np.deg2rad(rng.uniform(-self.rotation, self.rotation))
        shear = np.deg2rad(rng.uniform(-self.shear, self.shear))
        scale = rng.uniform(*self.scale)
        flip = -1.0 if rng.random() < self.flip_prob else 1.0
        shift = rng.uniform(-self.translate, self.translate, 2) * np.array([width, height])
        rotate = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        linear = rotate @ np.array([[1.0, np.tan(shear)], [0.0, 1.0]]) @ np.diag([flip * scale, scale])
        centre = np.array([(width - 1) / 2, (height - 1) / 2])
        return np.concatenate([linear, (centre - linear @ centre + shift)[:, None]], axis=1)


#: The augmentation that cached proposals can follow: scale 0.9-1.1, shift up to 8 %, horizontal flips.
AXIS_ALIGNED = AffineAugment(rotation=0.0, shear=0.0, flip_prob=0.5)


def resize_matrix(in_size: tuple[int, int], out_size: tuple[int, int]) -> np.ndarray:
    """The 2x3 matrix taking input pixel centres to output pixel centres for a plain resize."""
    sy, sx = out_size[0] / in_size[0], out_size[1] / in_size[1]
    return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5]])


def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """2x3 matrix of ``outer`` applied after ``inner``."""
    full = np.vstack([outer, [0, 0, 1]]) @ np.vstack([inner, [0, 0, 1]])
    return full[:2]


def warp_clip(frames: np.ndarray, labels: np.ndarray, void: np.ndarray, matrix: np.ndarray,
              out_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Warp frames ``[T, H, W, 3]`` (bilinear) and labels / void ``[T, H, W]`` (nearest) by one 2x3 matrix.

    Pixels that come from outside the input become black, background and not void.
    """
    size = (int(out_size[1]), int(out_size[0]))
    warped_frames = np.stack([
        cv2.warpAffine(f, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        for f in frames
    ])
    warped_labels = np.stack([
        cv2.warpAffine(m, matrix, size, flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        for m in labels
    ])
    warped_void = np.stack([
        cv2.warpAffine(v.astype(np.uint8), matrix, size, flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                       borderValue=0)
        for v in void
    ]).astype(bool)
    return warped_frames, warped_labels, warped_void


@dataclass
class Clip:
    """A training clip (numpy). ``frames`` uint8 ``[T, H, W, 3]``; ``labels`` uint8 ``[T, H, W]`` with the
    clip's objects renumbered 1..K in the order of ``object_ids`` (their ids in the dataset); ``void`` bool
    ``[T, H, W]``; ``frame_indices`` the frames' indices in ``sequence`` and ``frame_names`` their file
    stems; ``instances`` uint8 ``[T, H, W]`` (the sampler's instance maps, ids as stored, warped like the
    labels) or None; ``matrix`` the 2x3 map from the stored frames' pixel centres to the clip's (resize and
    augmentation), with which cached proposals of the stored frames are warped to fit the clip."""

    frames: np.ndarray
    labels: np.ndarray
    void: np.ndarray
    sequence: str
    frame_indices: list[int]
    object_ids: list[int]
    instances: np.ndarray | None = None
    frame_names: list[str] | None = None
    matrix: np.ndarray | None = None


class ClipSampler:
    """Draws clips of ``clip_length`` consecutive annotated frames from ``dataset``.

    A sequence is chosen uniformly among those long enough, then a start frame
    whose annotation shows at least one object. The clip's objects are those in
    its first frame (at most ``max_objects``, a random subset beyond that);
    objects entering later in the clip are set to background, since the model
    tracks only objects it has a template for. ``size=(H, W)`` resizes every clip;
    ``augment=None`` switches the affine augmentation off. ``instances``: a dataset
    with the same sequences whose labels are instance maps (e.g. ``DavisDataset(root,
    split, annotations="Instances")`` of the synthetic benchmark); each clip then
    also carries them, warped like the labels (for proposals of every instance).
    """

    def __init__(self, dataset: VOSDataset, clip_length: int, seed: int = 0, size: tuple[int, int] | None = None,
                 augment: AffineAugment | None = AffineAugment(), max_objects: int | None = None,
                 attempts: int = 20, instances: VOSDataset | None = None):
        if clip_length < 1:
            raise DMMInputError(f"clip_length={clip_length}; expected at least 1 frame")
        if max_objects is not None and max_objects < 1:
            raise DMMInputError(f"max_objects={max_objects}; expected at least 1 or None")
        self.dataset = dataset
        self.clip_length = clip_length
        self.seed = seed
        self.size = None if size is None else (int(size[0]), int(size[1]))
        self.augment = augment
        self.max_objects = max_objects
        self.attempts = attempts
        self.instances = instances
        self.names = [n for n in dataset.names if len(dataset.sequence(n).annotated_indices) >= clip_length]
        if not self.names:
            raise DMMInputError(f"no sequence in {dataset!r} has {clip_length} annotated frames; use a shorter clip_length")

    def clip(self, index: int, epoch: int = 0) -> Clip:
        """Clip number ``index`` of ``epoch``: the same arguments always give the same clip."""
        rng = np.random.default_rng([int(self.seed), int(epoch), int(index)])
        for _ in range(self.attempts):
            sequence = self.dataset.sequence(self.names[int(rng.integers(len(self.names)))])
            annotated = sequence.annotated_indices
            start = int(rng.integers(len(annotated) - self.clip_length + 1))
            first_labels = sequence.labels(annotated[start])
            present = [int(i) for i in np.unique(first_labels) if i != 0]
            if present:
                break
        else:
            raise DMMInputError(f"found no clip with an object in its first frame in {self.attempts} tries in {self.dataset!r}")
        if self.max_objects is not None and len(present) > self.max_objects:
            present = sorted(int(i) for i in rng.choice(present, self.max_objects, replace=False))

        indices = annotated[start : start + self.clip_length]
        frames = np.stack([sequence.frame(i) for i in indices])
        pairs = [sequence.annotation(i) for i in indices]
        raw_labels = np.stack([p[0] for p in pairs])
        void = np.stack([p[1] for p in pairs])
        relabel = np.zeros(256, np.uint8)
        relabel[present] = np.arange(1, len(present) + 1)
        labels = relabel[raw_labels]

        instances = None
        if self.instances is not None:  # read before any further draw from rng: clips stay as without it
            instance_sequence = self.instances.sequence(sequence.name)
            instances = np.stack([instance_sequence.annotation(i)[0] for i in indices])

        in_size = frames.shape[1:3]
        out_size = self.size or in_size
        matrix = resize_matrix(in_size, out_size)
        if self.augment is not None:
            matrix = compose(self.augment.sample(rng, *out_size), matrix)
        if self.augment is not None or out_size != in_size:
            if instances is not None:  # nearest neighbour, like the labels
                instances = np.stack([
                    cv2.warpAffine(m, matrix, (int(out_size[1]), int(out_size[0])), flags=cv2.INTER_NEAREST,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=0)
                    for m in instances
                ])
            frames, labels, void = warp_clip(frames, labels, void, matrix, out_size)
        names = [sequence.frame_names[i] for i in indices]
        return Clip(frames, labels, void, sequence.name, list(indices), present, instances, names, matrix)


class ClipDataset:
    """A map-style dataset for ``torch.utils.data.DataLoader`` over ``length`` clips of a :class:`ClipSampler`.

    Item ``i`` is a dict: ``frames`` float32 ``[T, 3, H, W]`` in [0, 1] (uint8 ``[T, 3, H, W]`` with
    ``uint8_frames=True``, for a loader that ships bytes to the GPU and scales them there),
    ``labels`` int64 ``[T, H, W]``, ``void`` bool ``[T, H, W]``, ``num_objects`` int, ``sequence`` str,
    ``frame_indices`` int64 ``[T]``, ``frame_names`` (list of T file stems), ``transform`` float64 ``[2, 3]``
    (:attr:`Clip.matrix`), and
    ``instances`` int64 ``[T, H, W]`` when the sampler has instance maps.
    Call :meth:`set_epoch` to draw new clips each epoch, deterministically.
    """

    def __init__(self, sampler: ClipSampler, length: int, uint8_frames: bool = False):
        if length < 1:
            raise DMMInputError(f"length={length}; expected at least 1 clip per epoch")
        self.sampler = sampler
        self.length = length
        self.epoch = 0
        self.uint8_frames = bool(uint8_frames)

    def with_uint8_frames(self) -> "ClipDataset":
        """The same clips with frames as uint8 (a quarter of the bytes to move to a GPU)."""
        view = ClipDataset(self.sampler, self.length, uint8_frames=True)
        view.epoch = self.epoch
        return view

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.length:
            raise IndexError(f"clip index {index} out of range for {self.length} clips")
        clip = self.sampler.clip(index, epoch=self.epoch)
        frames = torch.from_numpy(clip.frames).permute(0, 3, 1, 2)
        if not self.uint8_frames:
            frames = frames.float().div_(255.0)
        item = {
            "frames": frames.contiguous(),
            "labels": torch.from_numpy(clip.labels.astype(np.int64)),
            "void": torch.from_numpy(clip.void),
            "num_objects": len(clip.object_ids),
            "sequence": clip.sequence,
            "frame_indices": torch.tensor(clip.frame_indices, dtype=torch.int64),
            "frame_names": list(clip.frame_names or []),
            "transform": torch.from_numpy(np.asarray(clip.matrix, dtype=np.float64)),
        }
        if clip.instances is not None:
            item["instances"] = torch.from_numpy(clip.instances.astype(np.int64))
        return item

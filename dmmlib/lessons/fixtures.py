"""Small fixtures in the real on-disk formats of DAVIS 2017, YouTube-VOS and SegTrack v2.

No real dataset can be shipped with the book, yet every loader, command and
chapter must be proven on the exact layouts the reader will download. These
writers produce tiny datasets in those layouts, with frames that look like video
(textured shapes moving over a photographic background, rendered by
:func:`dmmlib.data.synthetic.render_video`), so a tracker has something to follow:

* :func:`write_davis_fixture` -- ``JPEGImages/480p``, palette ``Annotations/480p``
  with a void (255) strip, ``ImageSets/2017/<split>.txt``;
* :func:`write_youtube_vos_fixture` -- ``train/`` (every 6 fps frame annotated),
  ``valid/`` (only each object's first frame annotated, holding only that object),
  ``valid_all_frames/`` (every 30 fps frame), a held-out split in the train layout
  (default ``train-val``, as the paper splits YouTube-VOS train, Sec. 4.2) and
  ``meta.json`` files; one object per video *enters late*, emerging from behind;
* :func:`write_segtrack_fixture` -- mixed frame formats (.png, .jpg, .bmp), one
  object's masks directly in ``GroundTruth/<seq>/`` or one numbered folder per
  object, masks as greyscale 0/255 and 0/1, 1-bit .bmp and RGB .png.

Each writer returns a :class:`Fixture` holding what it wrote (frames before
compression, full ground truth), so tests compare what a loader reads against it.
Everything is deterministic in ``seed``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from PIL import Image

from dmmlib.checkpoints import save_checkpoint
from dmmlib.data.masks import VOID_LABEL, object_ids, write_label_png
from dmmlib.data.synth_config import SynthConfig
from dmmlib.data.synthetic import render_video
from dmmlib.errors import DMMInputError
from dmmlib.fileio import atomic_path, atomic_write_text
from dmmlib.model import DMMNet, default_config
from dmmlib.proposals.cache import ProposalCache
from dmmlib.proposals.oracle import proposals_from_labels

DEFAULT_SIZE = (64, 112)  # the smoke benchmark's frame size: enough for the backbone's stride 32


@dataclass
class FixtureVideo:
    """One written video.

    ``frame_names``: the frame files' stems in order; ``frames`` uint8 ``[T, H, W, 3]`` as
    rendered (before JPEG compression); ``labels`` uint8 ``[T, H, W]``: the full ground
    truth of every frame (255 = void), whether or not the format annotates that frame;
    ``annotated``: indices of the frames whose annotation was written;
    ``objects``: ``{id: (index of its first frame, category or None)}``.
    """

    name: str
    frame_names: list[str]
    frames: np.ndarray
    labels: np.ndarray
    annotated: list[int]
    objects: dict[int, tuple[int, str | None]]
    all_frame_names: list[str] | None = None  # YouTube-VOS valid: the 30 fps frames,
    all_frames: np.ndarray | None = None  # their pixels [T30, H, W, 3]
    all_labels: np.ndarray | None = None  # and their (unpublished) ground truth [T30, H, W]


@dataclass
class Fixture:
    """A written dataset: its ``root``, ``format`` and ``videos[split]`` (SegTrack v2: split ``"all"``)."""

    root: Path
    format: str
    videos: dict[str, list[FixtureVideo]] = field(default_factory=dict)

    def video(self, split: str, name: str) -> FixtureVideo:
        for video in self.videos[split]:
            if video.name == name:
                return video
        raise KeyError(f"no video {name!r} in split {split!r}")


# ---------------------------------------------------------------------------- rendering


def _config(frames: int, size: tuple[int, int], objects: int, distractors: bool, speed: float = 0.02):
    height, width = (int(v) for v in size)
    return SynthConfig(
        frames=frames, height=height, width=width, min_objects=objects, max_objects=objects,
        exit_prob=0.0, occlusion_prob=0.0, distractor_prob=0.5 if distractors else 0.0, max_distractors=1,
        object_size=(0.45, 0.6), speed=speed, min_first_visible=0.7, max_rotation=20.0, scale_change=0.15,
    )


def render_clip(frames: int, size: tuple[int, int] = DEFAULT_SIZE, objects: int = 2, seed: int = 0,
                index: int = 0, distractors: bool = True, speed: float = 0.02) -> tuple[np.ndarray, np.ndarray]:
    """A short video: frames uint8 ``[T, H, W, 3]`` and labels uint8 ``[T, H, W]`` (objects 1..``objects``).

    Objects stay in the frame (no exits, no forced occlusions); with ``distractors``
    some videos hold an untracked look-alike, as real videos hold unannotated things.
    """
    if frames < 2:
        raise DMMInputError(f"frames={frames}; a fixture video needs at least 2 frames")
    video = render_video(_config(frames, size, objects, distractors, speed), seed=seed, index=index, split="val")
    return video.frames, video.labels


def _enter_late(frames: np.ndarray, labels: np.ndarray, entering_at: int, step: int, seed: int, index: int,
                object_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Paste another video's object *behind* the objects of ``labels``, invisible before ``entering_at``.

    It emerges as if from behind something: for ``step`` frames from ``entering_at`` its
    left quarter (by columns) is hidden, then all of it shows.
    """
    T, H, W = labels.shape
    other_frames, other_labels = render_clip(T, (H, W), objects=1, seed=seed + 7919, index=index,
                                             distractors=False, speed=_speed(step))
    frames, labels = frames.copy(), labels.copy()
    for t in range(entering_at, T):
        mask = (other_labels[t] == 1) & (labels[t] == 0)
        if t < entering_at + step and mask.any():
            cols = np.flatnonzero(mask.any(axis=0))
            mask[:, : cols[0] + (cols[-1] + 1 - cols[0]) // 4] = False
        frames[t][mask] = other_frames[t][mask]
        labels[t][mask] = object_id
    if not (labels[entering_at] == object_id).any():
        raise RuntimeError("the entering object is not visible at its first frame; choose another seed")
    return frames, labels


def _speed(step: int) -> float:
    """Per-frame speed: objects move about as far between two annotated frames as in the DAVIS fixture."""
    return 0.02 / step


def _write_image(path: Path, array: np.ndarray, **options) -> None:
    image = Image.fromarray(array)  # uint8 [H, W] -> greyscale "L", [H, W, 3] -> "RGB"
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP"}[path.suffix.lower()]
    with atomic_path(path) as tmp:
        image.save(tmp, format=fmt, **options)


def _write_jpeg(path: Path, rgb: np.ndarray) -> None:
    _write_image(path, rgb, quality=90)


def _first_frames(labels: np.ndarray) -> dict[int, int]:
    ids = object_ids(labels)
    return {i: int(np.flatnonzero((labels == i).reshape(len(labels), -1).any(axis=1))[0]) for i in ids}


# ---------------------------------------------------------------------------- DAVIS 2017


def write_davis_fixture(root: str | os.PathLike,
                        sequences: Mapping[str, Sequence[str]] | Sequence[str] = None,
                        frames: int = 6, size: tuple[int, int] = DEFAULT_SIZE, objects: int = 2,
                        seed: int = 0, void: bool = True) -> Fixture:
    """A DAVIS 2017 semi-supervised layout under ``root``.

    ``sequences``: ``{split: [names]}`` (default two train and two val sequences), or a
    plain list of names, all in ``val``. Every frame is annotated (palette PNG); with
    ``void`` the top row is 255, as DAVIS marks ambiguous pixels. Objects 1..``objects``
    are all in the first frame (the DAVIS protocol)::

        JPEGImages/480p/<seq>/00000.jpg   Annotations/480p/<seq>/00000.png   ImageSets/2017/<split>.txt
    """
    root = Path(root)
    if sequences is None:
        sequences = {"train": ("train-a", "train-b"), "val": ("val-a", "val-b")}
    elif not isinstance(sequences, Mapping):
        sequences = {"val": tuple(sequences)}
    fixture = Fixture(root, "davis")
    index = 0
    for split, names in sequences.items():
        videos = []
        for name in names:
            rgb, labels = render_clip(frames, size, objects, seed, index)
            index += 1
            if void:
                labels = labels.copy()
                labels[:, 0, :] = VOID_LABEL
            stems = [f"{t:05d}" for t in range(frames)]
            for t, stem in enumerate(stems):
                _write_jpeg(root / "JPEGImages/480p" / name / f"{stem}.jpg", rgb[t])
                write_label_png(root / "Annotations/480p" / name / f"{stem}.png", labels[t])
            first = _first_frames(labels)
            videos.append(FixtureVideo(name, stems, rgb, labels, list(range(frames)),
                                       {i: (f, None) for i, f in first.items()}))
        atomic_write_text(root / "ImageSets/2017" / f"{split}.txt", "".join(f"{n}\n" for n in names))
        fixture.videos[split] = videos
    return fixture


# ---------------------------------------------------------------------------- YouTube-VOS

TRAIN_CATEGORIES = ("cat", "dog", "duck")
UNSEEN_CATEGORIES = ("zebra", "owl")


def write_youtube_vos_fixture(root: str | os.PathLike, videos: int = 2, frames: int = 26, step: int = 5,
                              entering_at: int = 10, size: tuple[int, int] = DEFAULT_SIZE, seed: int = 0,
                              heldout_split: str | None = "train-val") -> Fixture:
    """A YouTube-VOS 2018/2019 layout under ``root``.

    Each video has ``frames`` frames at 30 fps (``00000`` ...); the dataset keeps every
    ``step``-th (6 fps). Object 1 is there from the first frame; object 2 emerges (three
    quarters of it, then all) at frame ``entering_at`` (a multiple of ``step``), so its
    template is that frame's mask. Splits written:

    * ``train/`` -- every 6 fps frame annotated (all objects), categories from
      :data:`TRAIN_CATEGORIES` (the "seen" ones);
    * ``<heldout_split>/`` (default ``train-val``; ``None``: not written) -- the train
      layout, fully annotated, one object per video of an *unseen* category: a held-out
      split with ground truth, to score J/F seen/unseen locally;
    * ``valid/`` -- 6 fps frames, annotations only at each object's first frame and holding
      only that object (the official validation layout); ``valid_all_frames/`` -- every frame.

    ``meta.json``: ``{"videos": {vid: {"objects": {"1": {"category": .., "frames": [..]}}}}}``,
    where ``frames`` lists the 6 fps frames from the object's first appearance on.
    """
    root = Path(root)
    if entering_at % step or not 0 < entering_at < frames:
        raise DMMInputError(f"entering_at={entering_at}; expected a multiple of step={step} inside the video")
    fixture = Fixture(root, "youtube-vos")
    kept = list(range(0, frames, step))
    plan = [("train", "full"), ("valid", "first")]
    if heldout_split:
        plan.insert(1, (heldout_split, "full"))
    index = 0
    for split, annotation in plan:
        meta_videos, written = {}, []
        for v in range(videos):
            name = f"{split.replace('-', '')}{v:02d}"
            rgb, labels = render_clip(frames, size, objects=1, seed=seed, index=index, distractors=False,
                                      speed=_speed(step))
            rgb, labels = _enter_late(rgb, labels, entering_at, step, seed, index, object_id=2)
            index += 1
            if split == "train":
                categories = {1: TRAIN_CATEGORIES[v % 3], 2: TRAIN_CATEGORIES[(v + 1) % 3]}
            else:  # object 1 seen, object 2 of a category the train split lacks
                categories = {1: TRAIN_CATEGORIES[v % 3], 2: UNSEEN_CATEGORIES[v % 2]}
            sub = labels[kept]
            first = _first_frames(sub)  # index into the 6 fps frames
            stems = [f"{t:05d}" for t in kept]
            objects = {}
            for object_id, f in first.items():
                objects[str(object_id)] = {"category": categories[object_id], "frames": stems[f:]}
            meta_videos[name] = {"objects": objects}
            for k, t in enumerate(kept):
                _write_jpeg(root / split / "JPEGImages" / name / f"{stems[k]}.jpg", rgb[t])
            if annotation == "full":
                annotated = list(range(len(kept)))
                for k in annotated:
                    write_label_png(root / split / "Annotations" / name / f"{stems[k]}.png", sub[k])
            else:
                annotated = sorted(set(first.values()))
                for k in annotated:
                    starting = [i for i, f in first.items() if f == k]
                    only_new = np.where(np.isin(sub[k], starting), sub[k], 0).astype(np.uint8)
                    write_label_png(root / split / "Annotations" / name / f"{stems[k]}.png", only_new)
            video = FixtureVideo(name, stems, rgb[kept], sub, annotated,
                                 {i: (f, categories[i]) for i, f in first.items()})
            if split == "valid":
                all_stems = [f"{t:05d}" for t in range(frames)]
                for t, stem in enumerate(all_stems):
                    _write_jpeg(root / "valid_all_frames" / "JPEGImages" / name / f"{stem}.jpg", rgb[t])
                video.all_frame_names, video.all_frames, video.all_labels = all_stems, rgb, labels
            written.append(video)
        atomic_write_text(root / split / "meta.json", json.dumps({"videos": meta_videos}, indent=1))
        fixture.videos[split] = written
    return fixture


# ---------------------------------------------------------------------------- SegTrack v2

# (sequence, frame format, object folders): "" = masks directly in GroundTruth/<seq>/
_SEGTRACK_LAYOUT = (
    ("bird", ".png", (("", ".png", "L255"),)),
    ("frog", ".jpg", (("", ".bmp", "1bit"),)),
    ("penguin", ".bmp", (("1", ".png", "RGB"), ("2", ".bmp", "L01"))),
)


def _mask_image(mask: np.ndarray, kind: str) -> tuple[np.ndarray, str]:
    if kind == "L255":
        return mask.astype(np.uint8) * 255, "L"
    if kind == "L01":
        return mask.astype(np.uint8), "L"
    if kind == "RGB":
        return np.repeat(mask[:, :, None], 3, axis=2).astype(np.uint8) * 255, "RGB"
    return mask, "1bit"


def write_segtrack_fixture(root: str | os.PathLike, frames: int = 5, size: tuple[int, int] = DEFAULT_SIZE,
                          seed: int = 0) -> Fixture:
    """A SegTrack v2 layout under ``root``: three sequences in the formats the real archive mixes.

    * ``bird`` -- .png frames, one object, greyscale 0/255 .png masks directly in ``GroundTruth/bird/``;
    * ``frog`` -- .jpg frames, one object, 1-bit .bmp masks;
    * ``penguin`` -- .bmp frames, two objects: ``GroundTruth/penguin/1/`` RGB .png masks and
      ``GroundTruth/penguin/2/`` greyscale 0/1 .bmp masks.

    Files are named ``<seq>_<00000>.<ext>``; every frame has a mask per object. The
    fixture's videos are in split ``"all"`` (SegTrack v2 has no splits).
    """
    root = Path(root)
    fixture = Fixture(root, "segtrack")
    videos = []
    for index, (name, frame_ext, folders) in enumerate(_SEGTRACK_LAYOUT):
        rgb, labels = render_clip(frames, size, objects=len(folders), seed=seed, index=index)
        stems = [f"{name}_{t:05d}" for t in range(frames)]
        for t, stem in enumerate(stems):
            _write_image(root / "JPEGImages" / name / f"{stem}{frame_ext}", rgb[t],
                         **({"quality": 90} if frame_ext == ".jpg" else {}))
            for object_id, (folder, mask_ext, kind) in enumerate(folders, start=1):
                array, mode = _mask_image(labels[t] == object_id, kind)
                path = root / "GroundTruth" / name / folder / f"{stem}{mask_ext}" if folder else \
                    root / "GroundTruth" / name / f"{stem}{mask_ext}"
                if mode == "1bit":
                    image = Image.fromarray(array).convert("1")
                    with atomic_path(path) as tmp:
                        image.save(tmp, format="BMP")
                else:
                    _write_image(path, array)
        first = _first_frames(labels)
        videos.append(FixtureVideo(name, stems, rgb, labels, list(range(frames)),
                                   {i: (f, None) for i, f in first.items()}))
    fixture.videos["all"] = videos
    return fixture


# ---------------------------------------------------------------------------- oracle checks


def write_oracle_proposals(fixture: Fixture, cache_root: str | os.PathLike, split: str, noise: int = 3,
                           seed: int = 0, all_frames: bool = True) -> Path:
    """Fill a :class:`dmmlib.proposals.ProposalCache` with "oracle" proposals cut from the fixture's ground truth.

    One proposal per object and frame (its exact mask) plus ``noise`` random distractors,
    keyed by frame *name*; YouTube-VOS ``valid`` videos get every 30 fps frame when
    ``all_frames``. Paired with :func:`write_oracle_checkpoint`, a tracker that works
    reproduces the ground truth, so the prediction and scoring commands must score 1:
    a check of the plumbing (layouts, names, late objects), not of a learned model.
    """
    cache = ProposalCache(cache_root)
    for v, video in enumerate(fixture.videos[split]):
        if all_frames and video.all_labels is not None:
            names, labels = video.all_frame_names, video.all_labels
        else:
            names, labels = video.frame_names, video.labels
        for t, (name, label) in enumerate(zip(names, labels)):
            label = np.where(label == VOID_LABEL, 0, label).astype(np.uint8)
            rng = np.random.default_rng([seed, v, t])
            cache.put(video.name, name, proposals_from_labels(label, n_noise=noise, rng=rng))
    return cache.root


def write_oracle_checkpoint(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """A DMMNet checkpoint that follows oracle proposals exactly: Eq. 1 driven by IoU (lambda 0.99), no refinement.

    A template whose best proposal overlaps its last mask by IoU < 0.3 counts as absent in that frame."""
    model = DMMNet(default_config("smoke", lam=0.99, refine=False, no_proposal_cost=-0.3))
    return save_checkpoint(path, model, overwrite=overwrite)

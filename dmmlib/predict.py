"""Predicting a whole dataset: one plan per video, tracked and written as result PNGs.

One path for DAVIS 2017, YouTube-VOS and SegTrack v2: each video becomes a
:class:`VideoPlan` -- its frame files, the first frame's label mask, the masks of
objects entering later (YouTube-VOS), the frames whose results are written --
and :func:`predict_videos` tracks every plan with :func:`dmmlib.tracking.track`
(after the paper's online learning on its first frame when asked, Sec. 4.1) and writes
``<out>/<video>/<frame>.png``, the layout the evaluators read:

* DAVIS 2017 (:func:`plan_davis`): every frame of the split's sequences; the first
  frame's result is the given annotation (void set to 0);
* YouTube-VOS (:func:`plan_youtube_vos`): each object's template is its first
  annotated frame (``meta.json``); with ``<split>_all_frames`` beside the split every
  30 fps frame is tracked, and results are written for the 6 fps frames only; the
  submission layout is ``<out>/Annotations/<video>/`` (see :func:`results_folder`);
* SegTrack v2 (:func:`plan_segtrack`): every object from its first non-empty mask.

Every destination is checked before the first video is tracked; each video's PNGs are
written into a hidden folder beside its result folder and moved in when the video is
complete, so a failure mid-video leaves nothing of that video.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from tqdm.auto import tqdm

from dmmlib.data.davis import RESOLUTION, DavisDataset
from dmmlib.data.images import read_frame
from dmmlib.data.masks import object_ids, write_label_png
from dmmlib.data.segtrack import SegTrackV2Dataset
from dmmlib.data.sequence import VOSSequence
from dmmlib.data.youtube_vos import YouTubeVOSDataset
from dmmlib.device import check_amp, pick_device
from dmmlib.errors import DMMInputError
from dmmlib.fileio import check_apart, plain_name, refuse_overwrite, staged_folder
from dmmlib.model import DMMNet
from dmmlib.online import OnlineOptions, online_finetune
from dmmlib.proposals.sources import ProposalSource
from dmmlib.tracking import TrackOptions, track

DATASETS = ("davis", "youtube-vos", "segtrack")


@dataclass
class VideoPlan:
    """What tracking one video needs: frame files, frame-0 labels, later templates, which results to write."""

    name: str
    frame_paths: list[Path]
    first_mask: np.ndarray  # uint8 [H, W]: the objects whose template is frame 0
    later_masks: dict[int, np.ndarray]  # frame index -> uint8 [H, W] of the objects starting there
    write_names: list[str] | None = None  # frame stems to write (None: all)

    def __post_init__(self) -> None:
        plain_name(self.name, "video name")  # it names the video's result folder

    @property
    def frame_names(self) -> list[str]:
        return [p.stem for p in self.frame_paths]


@dataclass
class PredictOptions:
    """How :func:`predict_videos` runs: the tracking ``device`` and model ``size``, ``online_steps``
    of online learning per video (0: off; trained on the same device, at the same size), ``force``
    to replace existing result PNGs, a ``progress`` bar, ``amp`` (None, "bf16" or "fp16" autocast)."""

    device: str = "auto"
    size: tuple[int, int] | None = None
    online_steps: int = 0
    force: bool = False
    progress: bool = True
    amp: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.online_steps, bool) or not isinstance(self.online_steps, int) or self.online_steps < 0:
            raise DMMInputError(f"online_steps={self.online_steps!r}; expected an integer >= 0")
        check_amp(self.amp, "amp")
        self.size = TrackOptions(size=self.size).size  # checked now, not when the first video starts


def first_template(plan: VideoPlan) -> tuple[int, np.ndarray]:
    """``(frame index, label mask)`` of the video's first frame that gives templates (online learning trains on it)."""
    if object_ids(plan.first_mask) or not plan.later_masks:
        return 0, plan.first_mask
    index = min(plan.later_masks)
    return index, plan.later_masks[index]


def plan_from_sequence(sequence: VOSSequence, write_names: list[str] | None = None) -> VideoPlan:
    """The plan of a loaded sequence: its templates grouped by frame; frame 0's make the first mask."""
    height, width = sequence.frame_size(0)
    by_frame: dict[int, np.ndarray] = {}
    for object_id, (index, mask) in sequence.templates().items():
        labels = by_frame.setdefault(index, np.zeros((height, width), np.uint8))
        labels[mask] = object_id
    if not by_frame:
        raise DMMInputError(f"video {sequence.name!r} has no object to track")
    first = by_frame.pop(0, np.zeros((height, width), np.uint8))
    return VideoPlan(sequence.name, list(sequence.frame_paths), first, by_frame, write_names)


def _chosen(names: list[str], wanted: list[str] | None, where: str) -> list[str]:
    """``wanted`` (all ``names`` if None), each checked to be a plain name listed in ``where``."""
    if wanted is None:
        return names
    for name in wanted:
        plain_name(name, "sequence")
        if name not in names:
            raise DMMInputError(f"sequence {name!r} is not in {where}; expected one of {', '.join(names[:8])}"
                                f"{' ...' if len(names) > 8 else ''}")
    return list(wanted)


def plan_davis(root: str | os.PathLike, split: str = "val", resolution: str = RESOLUTION,
               sequences: list[str] | None = None) -> list[VideoPlan]:
    """One plan per sequence of a DAVIS-layout ``split`` (all frames written)."""
    dataset = DavisDataset(root, split, resolution)
    names = _chosen(dataset.names, sequences, f"split {split!r} of {root}")
    return [plan_from_sequence(dataset.sequence(n)) for n in names]


def plan_youtube_vos(root: str | os.PathLike, split: str = "valid", sequences: list[str] | None = None,
                     all_frames: bool | None = None) -> list[VideoPlan]:
    """One plan per video of ``<root>/<split>``; results for the 6 fps frames.

    ``all_frames``: ``None`` uses ``<split>_all_frames`` when it exists, ``False`` tracks
    the 6 fps frames only, ``True`` requires the all-frames folder.
    """
    dataset = YouTubeVOSDataset(root, split, all_frames_root=False if all_frames is False else None)
    if all_frames and dataset.all_frames_root is None:
        raise DMMInputError(f"all_frames=True but {Path(root) / (split + '_all_frames')} does not exist")
    names = _chosen(dataset.names, sequences, f"{dataset.meta_path}")
    six_fps = dataset if dataset.all_frames_root is None else YouTubeVOSDataset(root, split, all_frames_root=False)
    return [plan_from_sequence(dataset.sequence(n), six_fps.sequence(n).frame_names) for n in names]


def plan_segtrack(root: str | os.PathLike, sequences: list[str] | None = None) -> list[VideoPlan]:
    """One plan per SegTrack v2 sequence (all frames written)."""
    dataset = SegTrackV2Dataset(root)
    names = _chosen(dataset.names, sequences, f"{root}/JPEGImages")
    return [plan_from_sequence(dataset.sequence(n)) for n in names]


def plan_videos(dataset: str, root: str | os.PathLike, split: str | None = None,
                sequences: list[str] | None = None, resolution: str = RESOLUTION) -> list[VideoPlan]:
    """The plans of ``dataset`` ("davis", "youtube-vos" or "segtrack"); ``split`` defaults to val / valid."""
    if dataset == "davis":
        return plan_davis(root, split or "val", resolution, sequences)
    if dataset == "youtube-vos":
        return plan_youtube_vos(root, split or "valid", sequences)
    if dataset == "segtrack":
        return plan_segtrack(root, sequences)
    raise DMMInputError(f"dataset={dataset!r}; expected one of {', '.join(DATASETS)}")


def results_folder(dataset: str, out_dir: str | os.PathLike) -> Path:
    """Where the videos' result folders go: ``<out>/Annotations`` for YouTube-VOS (the submission layout), else ``<out>``."""
    return Path(out_dir) / "Annotations" if dataset == "youtube-vos" else Path(out_dir)


def check_outputs(plans: list[VideoPlan], out_dir: str | os.PathLike, force: bool = False) -> None:
    """Refuse before anything runs if ``out_dir`` is, lies inside or contains a video's frame folder,
    or if a video's result folder already holds PNGs (unless ``force``)."""
    for plan in plans:
        if plan.frame_paths:
            check_apart(out_dir, "output folder", {f"the frame folder of video {plan.name!r}": plan.frame_paths[0].parent})
        folder = Path(out_dir) / plan.name
        if os.path.lexists(folder) and not folder.is_dir():
            raise DMMInputError(f"output {folder} (the results of video {plan.name!r}) is a file; expected a folder")
        if folder.is_dir() and any(folder.glob("*.png")):
            refuse_overwrite(folder, force, what="output folder (with PNGs)")


def write_labels(labels: Iterable[np.ndarray], out_dir: str | os.PathLike, names: Iterable[str],
                 wanted: list[str] | None = None) -> int:
    """Write each label mask as ``out_dir/<name>.png`` (only the ``wanted`` names, if given); returns the count."""
    keep = None if wanted is None else set(wanted)
    count = 0
    for name, label in zip(names, labels):
        if keep is None or name in keep:
            write_label_png(Path(out_dir) / f"{name}.png", label)
            count += 1
    return count


def predict_videos(plans: list[VideoPlan], out_dir: str | os.PathLike, model: DMMNet,
                   proposals_for: Callable[[str], ProposalSource], options: PredictOptions | None = None) -> list[str]:
    """Track every planned video into ``out_dir/<video>/<frame>.png``; returns the videos written.

    ``proposals_for(video name)`` gives the video's proposal source (e.g. a cache lookup
    with a network for missing frames). ``model`` is moved to the tracking device first (where a
    checkpoint loaded on the CPU belongs). With ``options.online_steps > 0`` a copy of it is then
    fine-tuned on the video's first template frame and its mask, on that device and at the
    tracking size (:func:`dmmlib.online.online_finetune`); ``model``'s weights are not changed.
    """
    options = PredictOptions() if options is None else options
    check_outputs(plans, out_dir, options.force)
    device = pick_device(options.device)
    model = model.to(device)
    for plan in tqdm(plans, desc="predict", unit="video", disable=not options.progress):
        video_model = model
        if options.online_steps:
            index, mask = first_template(plan)
            video_model = online_finetune(model, read_frame(plan.frame_paths[index]), mask, OnlineOptions(
                steps=options.online_steps, size=options.size, amp=options.amp, progress=options.progress))
        track_options = TrackOptions(device=str(device), size=options.size, progress=False, sequence=plan.name,
                                     amp=options.amp)
        labels = track(plan.frame_paths, plan.first_mask, video_model, proposals_for(plan.name),
                       plan.later_masks, track_options)
        with staged_folder(Path(out_dir) / plan.name) as staging:  # all of the video's PNGs, or none
            write_labels(labels, staging, plan.frame_names, plan.write_names)
    return [plan.name for plan in plans]

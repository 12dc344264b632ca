"""Track objects through a video from a first-frame mask: the one frame-by-frame loop.

Semi-supervised VOS as in the paper: the first frame's label mask gives the
templates R (Sec. 3); every later frame gets proposals and one step of
:class:`dmmlib.model.DMMNet`. Frames are streamed: only the current frame and
the model's :class:`~dmmlib.model.TrackState` are held, so memory does not grow
with the length of the video.

* :func:`track_steps` yields a :class:`TrackStep` per frame: the label mask and the
  model's tensors of that step (cost, X^, X~, matched masks ...), for anyone who
  wants to look inside (Table 4's diagnostics are computed from them);
* :func:`track` yields the label masks alone;
* :func:`open_video` checks a video and its masks without any model (a command calls it
  first, so bad input is reported before the slow model building), :func:`video_steps`
  then tracks the :class:`VideoInput` it returns.

Conventions (documented choices):

* The first frame's result is the given first mask (with void 255 set to 0, as results
  files have no void).
* A video needs at least two frames: with one frame there is nothing to track,
  and that is reported as a :class:`DMMInputError` rather than silently echoing the mask.
* Object ids are those of the first mask (any of 1..254, not necessarily
  contiguous); objects that appear only later are not tracked (DAVIS protocol)
  unless their masks are given in ``later_masks`` (YouTube-VOS protocol: an
  object's first annotated frame gives its template). Such an object joins the
  tracked set at that frame: its template features are computed on that frame,
  its ConvLSTM memory starts at zero, and the result of that frame holds its
  given mask; from the next frame on it is matched like every other object.
* ``TrackOptions.size``: the model runs at ``(H', W')`` (the paper uses 255 x 448 for
  YouTube-VOS); frames are resized bilinearly, templates by area (threshold 1/2, keeping
  at least each object's densest pixel), proposals by their boxes (inside the model); the
  logits are resized back, so outputs always have the frames' size.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from dmmlib.data.images import frame_file, iter_frames, read_ahead
from dmmlib.data.masks import VOID_LABEL, as_label_mask, object_ids
from dmmlib.device import autocast, check_amp, pick_device, speed_settings
from dmmlib.errors import DMMInputError
from dmmlib.model import DMMNet, StepOutput, TrackState, labels_from_logits
from dmmlib.proposals.net import ProposalNet
from dmmlib.proposals.sources import FrameQuery, ProposalSource, as_source


@dataclass
class TrackOptions:
    """How to run the loop: ``device`` ("auto": CUDA, MPS, CPU), the model's frame ``size``
    ``(H', W')`` (None: the frames' own), a ``progress`` bar, the video's ``sequence``
    name (a proposal cache's key; default: the frames folder's or video file's name), ``amp``
    (None: float32; "bf16" / "fp16": autocast of the backbone and the refinement head, see
    :meth:`dmmlib.model.DMMNet.step`) and ``read_ahead`` frames decoded by a background thread."""

    device: str = "auto"
    size: tuple[int, int] | None = None
    progress: bool = True
    sequence: str | None = None
    amp: str | None = None
    read_ahead: int = 2

    def __post_init__(self) -> None:
        check_amp(self.amp, "TrackOptions.amp")
        if self.size is not None:
            try:
                size = tuple(int(v) for v in self.size)
            except (TypeError, ValueError):
                size = ()
            if len(size) != 2 or min(size) < 16:
                raise DMMInputError(f"size={self.size!r}; expected (height, width), each at least 16 pixels")
            self.size = size


@dataclass
class VideoInput:
    """A checked video (:func:`open_video`): frame 0's label mask ``[H, W]``, later templates, the frame stream.

    ``frames`` yields uint8 RGB ``[H, W, 3]`` from the first frame on; ``names`` are the frame
    names when read from files; ``source`` is what the user passed (files are named in errors).
    """

    mask: np.ndarray
    later: dict[int, np.ndarray]
    frames: Iterator[np.ndarray]
    total: int | None
    names: list[str] | None
    sequence: str
    source: object


@dataclass
class TrackStep:
    """One frame of tracking.

    ``labels`` uint8 ``[H, W]`` at the frame's size; ``output`` the model's
    :class:`~dmmlib.model.StepOutput` at the model's size (``None`` for the first frame
    and while no object is tracked); ``state`` the :class:`~dmmlib.model.TrackState`
    after the step; ``object_ids[i]`` is the object id of row ``i`` of their tensors.
    """

    index: int
    name: str
    labels: np.ndarray
    output: StepOutput | None
    state: TrackState | None
    object_ids: list[int]


def resized_templates(templates: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Binary templates ``[B, n, H, W]`` at ``size``: area-resized, > 1/2, never emptied (each keeps its densest pixel)."""
    soft = F.interpolate(templates, size=tuple(size), mode="area")
    peak = soft.amax(dim=(-1, -2), keepdim=True)
    return (soft >= peak.clamp(max=0.5)).float()


def add_objects(model: DMMNet, state: TrackState | None, frame: torch.Tensor, masks: torch.Tensor) -> TrackState:
    """``state`` with the templates ``masks`` [B, k, H, W] of ``frame`` [B, 3, H, W] appended (objects entering late).

    The new objects' features f(r_i) come from ``frame`` (their first annotated frame),
    their IoU template r_hat_i is their given mask and their ConvLSTM memory is zero;
    ``state`` may be ``None`` (no object so far). Returns the new TrackState.
    """
    added = model.init_state(frame, masks)
    if state is None:
        return added
    lstm = None
    if state.lstm is not None:
        b, n, k = masks.shape[0], state.template_masks.shape[1], masks.shape[1]

        def grow(t: torch.Tensor) -> torch.Tensor:  # [B * n, C, h, w], object-major within each video
            t = t.view(b, n, *t.shape[1:])
            return torch.cat([t, t.new_zeros(b, k, *t.shape[2:])], dim=1).flatten(0, 1)

        lstm = [(grow(hidden), grow(cell)) for hidden, cell in state.lstm]
    return TrackState(
        torch.cat([state.template_features, added.template_features], dim=1),
        torch.cat([state.template_masks, added.template_masks], dim=1),
        torch.cat([state.template_valid, added.template_valid], dim=1),
        torch.cat([state.previous_masks, added.previous_masks], dim=1),
        lstm,
        state.frame_index,
    )


class Tracker:
    """The loop's state for one video: the model, the proposal source, the tracked ids.

    :meth:`start` takes frame 0 and its mask; :meth:`step` every later frame. Both
    return a :class:`TrackStep`. Runs under ``torch.no_grad()`` when driven by :func:`track_steps`.
    Everything runs on the model's device, which must be ``device``; a frame's result leaves
    the device at one point only, :meth:`step`'s label map (:meth:`advance` is the step
    before that point).
    """

    def __init__(self, model: DMMNet, source: ProposalSource, sequence: str, shape: tuple[int, int],
                 device: torch.device, size: tuple[int, int] | None, amp: str | None = None):
        self.model, self.source, self.sequence = model, source, sequence
        self.shape, self.device, self.amp = tuple(shape), torch.device(device), check_amp(amp)
        self.size = None if size is None or tuple(size) == self.shape else tuple(size)
        self.ids: list[int] = []
        self.state: TrackState | None = None

    def _model_input(self, image: torch.Tensor) -> torch.Tensor:
        """Frame float [3, H, W] -> [1, 3, H', W'] at the model's size."""
        batch = image[None]
        return F.interpolate(batch, size=self.size, mode="bilinear", antialias=True) if self.size else batch

    def _templates(self, labels: np.ndarray, ids: list[int]) -> torch.Tensor:
        templates = torch.from_numpy(np.stack([labels == i for i in ids])).to(self.device).float()[None]
        return resized_templates(templates, self.size) if self.size else templates

    def _image(self, frame: np.ndarray) -> torch.Tensor:
        """uint8 [H, W, 3] -> float [3, H, W] in [0, 1], moved as bytes and scaled on the device."""
        return torch.from_numpy(frame).to(self.device).permute(2, 0, 1).float().div_(255.0)

    def _join(self, image: torch.Tensor, labels: np.ndarray, new_ids: list[int]) -> None:
        with autocast(self.device, self.amp):
            added = add_objects(self.model, self.state, self._model_input(image), self._templates(labels, new_ids))
        self.state = added
        self.ids += new_ids

    @torch.no_grad()
    def advance(self, index: int, image: torch.Tensor, name: str) -> tuple[StepOutput, torch.Tensor]:
        """One model step on frame ``image`` [3, H, W] (on the device): proposals, match, refine.

        Returns the :class:`~dmmlib.model.StepOutput` and the row map [H, W] (long, on the
        device: 0 background, k for the k-th tracked object) at the frame's size.
        """
        proposals = self.source(FrameQuery(self.sequence, index, name, image))
        with autocast(self.device, self.amp):
            output, self.state = self.model.step(self._model_input(image), [proposals], self.state)
        logits = output.logits
        if self.size:
            logits = F.interpolate(logits.float(), size=self.shape, mode="bilinear", align_corners=False)
        return output, labels_from_logits(logits, output.present)[0]

    @torch.no_grad()
    def start(self, frame: np.ndarray, mask: np.ndarray, name: str = "00000") -> TrackStep:
        """Frame 0: the templates of every object of ``mask`` (uint8 [H, W]); its result is ``mask`` itself."""
        ids = object_ids(mask)
        if ids:
            self._join(self._image(frame), mask, ids)
        given = np.where(mask == VOID_LABEL, 0, mask).astype(np.uint8)
        return TrackStep(0, name, given, None, self.state, list(self.ids))

    @torch.no_grad()
    def step(self, index: int, frame: np.ndarray, name: str, later_mask: np.ndarray | None = None) -> TrackStep:
        """Frame ``index`` >= 1: match, refine, label; objects of ``later_mask`` not yet tracked join here."""
        if frame.shape[:2] != self.shape:
            raise DMMInputError(f"frame {index} ({name}) of {self.sequence} is {frame.shape[0]}x{frame.shape[1]}; "
                                f"expected {self.shape[0]}x{self.shape[1]} like the first frame")
        image = self._image(frame)
        output = None
        labels = np.zeros(self.shape, np.uint8)
        if self.state is not None:
            output, rows = self.advance(index, image, name)
            # the frame's result leaves the device here, as uint8 ids (a quarter of int64's bytes)
            ids = torch.tensor([0] + self.ids, dtype=torch.uint8, device=rows.device)
            labels = ids[rows].cpu().numpy()
        new_ids = [i for i in object_ids(later_mask) if i not in self.ids] if later_mask is not None else []
        if new_ids:
            self._join(image, later_mask, new_ids)
            for i in new_ids:  # an object's first annotated frame: its given mask is the result
                labels[later_mask == i] = i
        return TrackStep(index, name, labels, output, self.state, list(self.ids))


def _read_later_masks(later_masks, shape: tuple[int, int]) -> dict[int, np.ndarray]:
    """``{frame index: uint8 [H, W]}`` from ``later_masks``, checked."""
    if later_masks is None:
        return {}
    if not isinstance(later_masks, Mapping):
        raise DMMInputError(f"later_masks must map frame indices to label masks; got {type(later_masks).__name__}")
    checked = {}
    for index, value in later_masks.items():
        if not isinstance(index, (int, np.integer)) or index < 1:
            raise DMMInputError(f"later_masks key {index!r}: expected a frame index >= 1 (frame 0 is first_frame_masks)")
        mask = as_label_mask(value, f"later_masks[{index}]")
        if mask.shape != tuple(shape):
            raise DMMInputError(
                f"later_masks[{index}] has size {mask.shape[0]}x{mask.shape[1]}; expected {shape[0]}x{shape[1]} like the first mask"
            )
        checked[int(index)] = mask
    return checked


def _default_model() -> DMMNet:
    warnings.warn("track: no model given; using an untrained DMMNet (results are not meaningful)", stacklevel=3)
    return DMMNet()


def _default_proposals() -> ProposalNet:
    warnings.warn("track: no proposals given; using an untrained ProposalNet (results are not meaningful)", stacklevel=3)
    return ProposalNet()


def open_video(frames, first_frame_masks, later_masks: Mapping[int, object] | None = None,
               sequence: str | None = None, mask_name: str = "first_frame_masks") -> VideoInput:
    """Check a video and its masks and read its first two frames; no model is needed.

    frames: a folder of images, a video file, or an iterable (a generator is fine) of
    uint8 RGB [H, W, 3] arrays, float [3, H, W] tensors or image paths.
    first_frame_masks: label mask [H, W] (0 background, 1..254 objects, 255 void) or a PNG
    path; ``mask_name`` names it in errors (``"--mask"`` on the command line).
    later_masks: ``{frame index >= 1: label mask [H, W] or PNG path}`` giving objects that
    enter after the first frame (the first mask may then be empty).
    sequence: the video's name (a proposal cache's key; default: the frames folder's or file's name).

    Raises :class:`DMMInputError` for a first mask without objects or of another size than the
    frames, fewer than two frames, or a folder without images.
    """
    mask = as_label_mask(first_frame_masks, mask_name)
    later = _read_later_masks(later_masks, mask.shape)
    if not object_ids(mask) and not any(object_ids(m) for m in later.values()):
        raise DMMInputError(f"{mask_name} holds no object (only background 0 / void 255); expected at least one object id")
    frame_iter, total, names = iter_frames(frames)
    first, second = next(frame_iter, None), next(frame_iter, None)
    if first is None:
        raise DMMInputError("frames is empty; expected a video of at least two frames")
    if first.shape[:2] != mask.shape:
        path = frame_file(frames, 0)
        raise DMMInputError(
            f"{mask_name} has size {mask.shape[0]}x{mask.shape[1]} but the first frame{'' if path is None else f' {path}'}"
            f" is {first.shape[0]}x{first.shape[1]}; expected the mask of the first frame, at its size"
        )
    if second is None:
        raise DMMInputError("frames holds a single frame; tracking needs at least two (the first one's mask is given)")
    if sequence is None:
        sequence = Path(frames).stem if isinstance(frames, (str, os.PathLike)) else "video"
    return VideoInput(mask, later, chain([first, second], frame_iter), total, names, sequence, frames)


def _where(frames, index: int, name: str) -> str:
    """Frame ``index`` in words: its file when it was read from one, else its index and name."""
    path = frame_file(frames, index)
    return f"{index} ({name})" if path is None else str(path)


def video_steps(video: VideoInput, model: DMMNet | None = None, proposals=None,
                options: TrackOptions | None = None) -> Iterator[TrackStep]:
    """Track a :class:`VideoInput`; yield one :class:`TrackStep` per frame (see :func:`track_steps`)."""
    options = TrackOptions() if options is None else options
    device = pick_device(options.device)
    speed_settings(device)
    model = (_default_model() if model is None else model).to(device).eval()
    proposals = _default_proposals() if proposals is None else proposals
    if isinstance(proposals, ProposalNet):
        proposals.to(device).eval()
    tracker = Tracker(model, as_source(proposals), options.sequence or video.sequence, video.mask.shape, device,
                      options.size, options.amp)
    video = dataclasses.replace(video, frames=read_ahead(video.frames, options.read_ahead))
    return _loop(tracker, video, options.progress)


def track_steps(frames, first_frame_masks, model: DMMNet | None = None, proposals=None,
                later_masks: Mapping[int, object] | None = None,
                options: TrackOptions | None = None) -> Iterator[TrackStep]:
    """Track the objects of ``first_frame_masks`` through ``frames``; yield one :class:`TrackStep` per frame.

    frames, first_frame_masks, later_masks: see :func:`open_video`.
    model: a :class:`dmmlib.model.DMMNet` (default: an untrained one, with a warning; it is
    moved to the device). proposals: a proposal source, a ProposalCache, a ProposalNet or a
    list (:func:`dmmlib.proposals.sources.as_source`); default: an untrained ProposalNet (warning).

    The inputs are checked now (:func:`open_video`); the returned iterator then runs one
    model step per frame under ``torch.no_grad()``. A frame that cannot be read, or whose
    size differs from the first one's, stops it with a :class:`DMMInputError` naming the file.
    """
    options = TrackOptions() if options is None else options
    video = open_video(frames, first_frame_masks, later_masks, options.sequence)
    return video_steps(video, model, proposals, options)


def _loop(tracker: Tracker, video: VideoInput, progress: bool) -> Iterator[TrackStep]:
    # no_grad wraps each step, not this generator: a generator left suspended (a consumer that
    # stops early) must not leave gradients switched off for the rest of the program
    with tqdm(total=video.total, disable=not progress, unit="frame", desc="track") as bar:
        for index, frame in enumerate(video.frames):
            name = video.names[index] if video.names is not None else f"{index:05d}"
            if index == 0:
                yield tracker.start(frame, video.mask, name)
            else:
                if frame.shape[:2] != video.mask.shape:
                    raise DMMInputError(
                        f"frame {_where(video.source, index, name)} of {tracker.sequence} is "
                        f"{frame.shape[0]}x{frame.shape[1]}; expected {video.mask.shape[0]}x{video.mask.shape[1]} "
                        "like the first frame")
                yield tracker.step(index, frame, name, video.later.get(index))
            bar.update(1)


def track(frames, first_frame_masks, model: DMMNet | None = None, proposals=None,
          later_masks: Mapping[int, object] | None = None, options: TrackOptions | None = None) -> Iterator[np.ndarray]:
    """Like :func:`track_steps`, but yield only the label masks: one uint8 [H, W] per frame."""
    steps = track_steps(frames, first_frame_masks, model, proposals, later_masks, options)
    return (step.labels for step in steps)

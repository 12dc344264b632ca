"""Online learning (Sec. 4.1): fine-tune a copy of the model on a test video's first frame.

"For online learning, we train both the proposal generator and the DMM-Net with
the refinement module on the first frame of the validation set ... the number of
epochs is 100." The first frame's mask is given at test time, so it is fair to
train on it. A clip is made of the first frame (the template frame) followed by
``unroll`` randomly affine-warped copies of it -- the model sees the objects move
without any other frame being looked at -- and trained exactly like
:class:`dmmlib.unrolled.UnrolledClip` trains on real clips. The proposals of the
warped copies are oracle-noisy ones built from the warped first mask (jittered
boxes plus distractors); the proposal network is not fine-tuned here.

Use it before tracking (``dmmlib.tracking.track`` is unchanged; ``predict --online-steps``
does this for every video of DAVIS, YouTube-VOS and SegTrack v2 alike)::

    tuned = online_finetune(model, first_frame, first_mask, OnlineOptions(steps=100))
    labels = list(track(frames, first_mask, model=tuned, proposals=...))
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from dmmlib.data.clips import AffineAugment, compose, resize_matrix, warp_clip
from dmmlib.data.images import as_rgb_frame
from dmmlib.data.masks import object_ids
from dmmlib.device import autocast, check_amp, pick_device
from dmmlib.errors import DMMInputError
from dmmlib.losses import DEFAULT_LOSS
from dmmlib.proposals.sources import oracle_source
from dmmlib.train_config import TrainConfig
from dmmlib.unrolled import UnrolledClip, clip_proposals


def first_frame_clips(first_frame, first_mask, length: int, count: int, seed: int = 0, augment=None,
                      size: tuple[int, int] | None = None):
    """``count`` clips of ``length`` frames made from one frame: frame 0 as given, then warped copies.

    ``first_mask`` ``[H, W]`` labels (0 background, 255 void, other ids any values) are
    renumbered 1..K in increasing id order. Returns frames ``[count, length, 3, H', W']``
    float in [0, 1] and labels ``[count, length, H', W']`` long, where ``(H', W') = size``
    (default: the frame's own size; the tracker's model size keeps training as cheap as
    tracking). Clip ``c`` is fixed by ``(seed, c)``.
    """
    augment = AffineAugment() if augment is None else augment
    frame = as_rgb_frame(first_frame, "first_frame")
    mask = np.asarray(first_mask)
    if mask.shape != frame.shape[:2]:
        raise DMMInputError(f"first_mask has shape {mask.shape}; expected [H, W] = {frame.shape[:2]} like first_frame")
    ids = object_ids(mask)
    if not ids:
        raise DMMInputError("first_mask holds no object (only background 0 / void 255)")
    relabel = np.zeros(256, np.uint8)
    relabel[ids] = np.arange(1, len(ids) + 1)
    labels = relabel[mask.astype(np.uint8)]
    height, width = labels.shape if size is None else (int(size[0]), int(size[1]))
    to_size = resize_matrix(labels.shape, (height, width))
    void = np.zeros((1, *labels.shape), bool)
    first = warp_clip(frame[None], labels[None], void, to_size, (height, width)) if size is not None else None
    all_frames, all_labels = [], []
    for c in range(count):
        rng = np.random.default_rng([seed, c])
        frames, masks = ([frame], [labels]) if first is None else ([first[0][0]], [first[1][0]])
        for _ in range(length - 1):
            matrix = compose(augment.sample(rng, height, width), to_size)
            warped_f, warped_l, _ = warp_clip(frame[None], labels[None], void, matrix, (height, width))
            frames.append(warped_f[0])
            masks.append(warped_l[0])
        all_frames.append(np.stack(frames))
        all_labels.append(np.stack(masks))
    frames = torch.from_numpy(np.stack(all_frames)).permute(0, 1, 4, 2, 3).float().div_(255.0)
    return frames, torch.from_numpy(np.stack(all_labels).astype(np.int64))


@dataclass
class OnlineOptions:
    """Settings of :func:`online_finetune`: ``steps`` updates of ``batch_size`` clips of ``unroll + 1``
    frames, Adam at ``lr`` (Sec. 4.1 keeps the fine-tuning rate), the ``loss``, oracle proposals with
    ``proposal_noise`` distractors and ``proposal_jitter``, the ``seed``, the warp ``augment``
    (None: :class:`~dmmlib.data.clips.AffineAugment` defaults), a ``progress`` bar, the ``device``
    the copy trains on (None: the model's), the clips' ``size`` (None: the frame's; predict uses the
    tracker's) and ``amp`` (None, "bf16" or "fp16" autocast)."""

    steps: int = 100
    lr: float = 1e-4
    unroll: int = 2
    batch_size: int = 1
    proposal_noise: int = 8
    proposal_jitter: float = 0.1
    loss: str = DEFAULT_LOSS
    seed: int = 0
    augment: AffineAugment | None = None
    progress: bool = False
    device: str | None = None
    size: tuple[int, int] | None = None
    amp: str | None = None

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_size < 1 or self.unroll < 1:
            raise DMMInputError(f"OnlineOptions: steps >= 0, batch_size >= 1 and unroll >= 1 expected; "
                                f"got {self.steps}, {self.batch_size}, {self.unroll}")


def online_finetune(model: torch.nn.Module, first_frame, first_mask, options: OnlineOptions | None = None) -> torch.nn.Module:
    """Fine-tune a deep copy of ``model`` on one video's first frame; ``model`` itself is untouched.

    ``first_frame`` uint8 ``[H, W, 3]`` (or float ``[3, H, W]``), ``first_mask`` ``[H, W]``
    labels. Every parameter trains (all weights are trained ones by now). The copy trains on
    ``options.device`` (default: ``model``'s device -- where the tracker will use it) and stays
    there. Returns it in eval mode.
    """
    options = OnlineOptions() if options is None else options
    check_amp(options.amp, "OnlineOptions.amp")
    device = next(model.parameters()).device if options.device is None else pick_device(options.device)
    tuned = copy.deepcopy(model).to(device)
    tuned.train()
    cfg = TrainConfig(max_objects=max(len(object_ids(first_mask)), 1), unroll=options.unroll, loss=options.loss)
    unrolled = UnrolledClip(tuned, cfg)
    optimizer = torch.optim.Adam([p for p in tuned.parameters() if p.requires_grad], lr=options.lr)
    scaler = torch.amp.GradScaler(device.type, enabled=options.amp == "fp16")
    source = oracle_source(options.proposal_noise, options.proposal_jitter)
    for step in tqdm(range(options.steps), desc="online", leave=False, disable=not options.progress):
        frames, labels = first_frame_clips(first_frame, first_mask, options.unroll + 1, options.batch_size,
                                           seed=options.seed * 1_000_003 + step, augment=options.augment,
                                           size=options.size)
        keys = [(step, b) for b in range(options.batch_size)]
        proposals = clip_proposals(frames, labels, [{}] * options.batch_size, keys, source, options.seed)
        proposals = [[p.to(device) for p in per_frame] for per_frame in proposals]
        with autocast(device, options.amp):
            value, _ = unrolled(frames.to(device), labels.to(device), proposals)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(value).backward()
        scaler.step(optimizer)
        scaler.update()
    return tuned.eval()

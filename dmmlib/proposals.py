"""Mask proposals: the per-frame input DMM-Net matches against (paper Sec. 3, Sec. 4.1).

DMM-Net "first extract[s] mask proposals independently per frame with a
COCO-pretrained Mask R-CNN" and "only keep[s] the top-50 proposals based on
their scores"; the step "is performed off-line" (Sec. 3). This module holds

* :class:`FrameProposals` -- the proposals of one frame: boxes, scores and
  Mask R-CNN's box-relative ``S x S`` mask probabilities, with
  :meth:`FrameProposals.paste` giving the full-image masks ``P~`` of Eq. 8;
* :func:`proposals_from_labels` -- "oracle" proposals cut from a label mask
  (tests, ablations, the model chapter);
* :class:`ProposalCache` -- the off-line store, one file per frame;
* :class:`ProposalNet` -- a class-agnostic torchvision Mask R-CNN;
* :func:`compute_proposals` and :func:`proposal_recall` -- fill the cache for a
  split and measure how many tracked objects the top-50 proposals cover;
* the ``python -m dmmlib proposals`` command (train / compute / recall).

Training the proposal network lives in :mod:`dmmlib.proposal_training`.
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from dmmlib.errors import DMMInputError
from dmmlib.fileio import atomic_path

DEFAULT_MASK_SIZE = 28  # Mask R-CNN's mask head resolution (He et al. 2017), as in the paper's proposal net
TOP_K = 50  # "We only keep the top-50 proposals based on their scores" (Sec. 3)


# ----------------------------------------------------------------------------------------------
# FrameProposals
# ----------------------------------------------------------------------------------------------


def _box_axis_weights(low: torch.Tensor, high: torch.Tensor, size: int, mask_size: int) -> torch.Tensor:
    """Bilinear weights that resample a box-relative mask axis onto ``size`` image pixels.

    ``low, high``: ``[m]`` box edges along one axis, in pixel-edge coordinates (pixel
    ``p`` covers ``[p, p + 1)``). Returns ``[m, size, mask_size]``: row ``p`` holds the
    weights of the mask cells at image pixel centre ``p + 0.5``.

    Mask cell ``s`` of a box covers ``[low + s * w / S, low + (s + 1) * w / S)`` -- the
    RoIAlign grid Mask R-CNN predicts on. The triangle kernel ``max(0, 1 - |c - s|)`` is
    linear interpolation with zeros outside the mask, i.e. ``F.grid_sample(...,
    mode="bilinear", padding_mode="zeros", align_corners=False)`` along one axis. Since
    the box is axis-aligned the 2-D resampling is the product of two such 1-D maps.
    """
    centres = torch.arange(size, dtype=low.dtype, device=low.device) + 0.5  # [size]
    extent = (high - low).clamp(min=1e-6)  # degenerate boxes paste as (almost) nothing
    coord = (centres[None, :] - low[:, None]) / extent[:, None] * mask_size - 0.5  # [m, size]
    cells = torch.arange(mask_size, dtype=low.dtype, device=low.device)  # [S]
    return (1.0 - (coord[:, :, None] - cells[None, None, :]).abs()).clamp(min=0.0)


@dataclass
class FrameProposals:
    """The mask proposals ``P^t = {p_j^t | j = 1..m^t}`` of one frame (Sec. 3).

    Attributes
    ----------
    boxes : ``[m, 4]`` float32, ``(x1, y1, x2, y2)`` in frame pixels (pixel-edge
        coordinates: a box covering pixels 0..9 has ``x1 = 0, x2 = 10``).
    scores : ``[m]`` float32, sorted descending.
    masks : ``[m, S, S]`` float32 in [0, 1]: mask probabilities inside each box, as
        Mask R-CNN's mask head predicts them (``S = 28`` by default).
    image_size : ``(H, W)`` of the frame the boxes refer to.
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    masks: torch.Tensor
    image_size: tuple[int, int]

    def __post_init__(self) -> None:
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        m = self.boxes.shape[0] if self.boxes.ndim == 2 else -1
        if self.boxes.ndim != 2 or self.boxes.shape[1] != 4:
            raise DMMInputError(f"FrameProposals.boxes must have shape [m, 4]; got {tuple(self.boxes.shape)}")
        if tuple(self.scores.shape) != (m,):
            raise DMMInputError(f"FrameProposals.scores must have shape [{m}]; got {tuple(self.scores.shape)}")
        if self.masks.ndim != 3 or self.masks.shape[0] != m or self.masks.shape[1] != self.masks.shape[2]:
            raise DMMInputError(f"FrameProposals.masks must have shape [{m}, S, S]; got {tuple(self.masks.shape)}")
        if min(self.image_size) <= 0:
            raise DMMInputError(f"FrameProposals.image_size must be a positive (H, W); got {self.image_size}")
        for name in ("boxes", "scores", "masks"):
            if not torch.is_floating_point(getattr(self, name)):
                raise DMMInputError(f"FrameProposals.{name} must be a floating-point tensor")

    @property
    def mask_size(self) -> int:
        """``S``, the side of the box-relative masks."""
        return int(self.masks.shape[-1])

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @staticmethod
    def empty(image_size: tuple[int, int], mask_size: int = DEFAULT_MASK_SIZE) -> "FrameProposals":
        """No proposals (``m = 0``) for a frame of size ``image_size = (H, W)``."""
        return FrameProposals(
            boxes=torch.zeros(0, 4),
            scores=torch.zeros(0),
            masks=torch.zeros(0, mask_size, mask_size),
            image_size=image_size,
        )

    def to(self, device: torch.device | str) -> "FrameProposals":
        return FrameProposals(self.boxes.to(device), self.scores.to(device), self.masks.to(device), self.image_size)

    def top(self, k: int) -> "FrameProposals":
        """The ``k`` highest-scoring proposals (scores are kept sorted)."""
        return FrameProposals(self.boxes[:k], self.scores[:k], self.masks[:k], self.image_size)

    def paste(self, height: int | None = None, width: int | None = None, threshold: float | None = None) -> torch.Tensor:
        """Full-image masks ``P~`` ``[m, H, W]`` of Eq. 8: each box mask resized and pasted into a void image.

        "we first resize mask proposals such that they have the same resolution as the
        input image. We then paste them into void images" (Sec. 3, Mask Refinement).
        ``(height, width)`` default to ``image_size``; if they differ, the boxes are
        rescaled to the new size first. The result is soft (bilinear resampling of the
        mask probabilities, zero outside each box) unless ``threshold`` is given, in which
        case it is ``(soft > threshold)`` as 0/1 floats.

        All ``m`` boxes are done at once as two batched matrix products
        (``A_y [m, H, S] @ mask [m, S, S] @ A_x^T [m, S, W]``), no per-box loop.
        """
        height = self.image_size[0] if height is None else int(height)
        width = self.image_size[1] if width is None else int(width)
        if height <= 0 or width <= 0:
            raise DMMInputError(f"paste: height and width must be positive; got ({height}, {width})")
        dtype = self.masks.dtype if self.masks.dtype in (torch.float32, torch.float64) else torch.float32
        boxes = self.boxes.to(dtype)
        scale = boxes.new_tensor([width / self.image_size[1], height / self.image_size[0]] * 2)
        boxes = boxes * scale
        weights_y = _box_axis_weights(boxes[:, 1], boxes[:, 3], height, self.mask_size)  # [m, H, S]
        weights_x = _box_axis_weights(boxes[:, 0], boxes[:, 2], width, self.mask_size)  # [m, W, S]
        pasted = weights_y @ self.masks.to(dtype) @ weights_x.transpose(1, 2)  # [m, H, W]
        if threshold is not None:
            return (pasted > threshold).to(dtype)
        return pasted

    # -- storage -------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, torch.Tensor]:
        """A compact dict of tensors: boxes/scores float32, masks uint8 (probability * 255, rounded)."""
        return {
            "boxes": self.boxes.detach().to("cpu", torch.float32).contiguous(),
            "scores": self.scores.detach().to("cpu", torch.float32).contiguous(),
            # uint8 quantisation: error <= 1/510, invisible after thresholding, 4x smaller than float32
            "masks_u8": (self.masks.detach().cpu().float().clamp(0, 1) * 255).round().to(torch.uint8),
            "image_size": torch.tensor(self.image_size, dtype=torch.int64),
        }

    @classmethod
    def from_state_dict(cls, state: dict, source: str = "state") -> "FrameProposals":
        needed = {"boxes", "scores", "masks_u8", "image_size"}
        if not isinstance(state, dict) or not needed <= set(state):
            raise DMMInputError(f"{source} is not a FrameProposals file: expected the keys {sorted(needed)}")
        return cls(
            boxes=state["boxes"].float(),
            scores=state["scores"].float(),
            masks=state["masks_u8"].float() / 255.0,
            image_size=tuple(int(v) for v in state["image_size"].tolist()),
        )

    def save(self, path: str | os.PathLike) -> None:
        """Write to ``path`` atomically (``torch.save`` of :meth:`state_dict`)."""
        state = self.state_dict()
        with atomic_path(path) as tmp:
            torch.save(state, tmp)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FrameProposals":
        path = Path(path)
        if not path.is_file():
            raise DMMInputError(f"proposal file {path} does not exist")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # torch raises several types for truncated/foreign files
            raise DMMInputError(f"proposal file {path} is not readable as a FrameProposals file: {error}") from None
        return cls.from_state_dict(state, source=f"proposal file {path}")


# ----------------------------------------------------------------------------------------------
# Oracle proposals
# ----------------------------------------------------------------------------------------------


def _crop_masks(binary: torch.Tensor, boxes: torch.Tensor, mask_size: int) -> torch.Tensor:
    """RoIAlign of full-image binary masks over boxes: ``[m, H, W], [m, 4] -> [m, S, S]``.

    ``aligned=True`` samples mask cell centres at ``x1 + (s + 0.5) * w / S`` in pixel-edge
    coordinates, the exact inverse of :meth:`FrameProposals.paste`.
    """
    from torchvision.ops import roi_align

    if boxes.shape[0] == 0:
        return torch.zeros(0, mask_size, mask_size)
    rois = torch.cat([torch.arange(boxes.shape[0], dtype=torch.float32)[:, None], boxes], dim=1)
    crops = roi_align(binary[:, None].float(), rois, (mask_size, mask_size), spatial_scale=1.0, sampling_ratio=2, aligned=True)
    return crops[:, 0].clamp(0.0, 1.0)


def _tight_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)


def proposals_from_labels(
    labels: np.ndarray,
    *,
    n_noise: int = 0,
    jitter: float = 0.0,
    rng: np.random.Generator | None = None,
    mask_size: int = DEFAULT_MASK_SIZE,
) -> FrameProposals:
    """"Oracle" proposals: one per instance id of ``labels`` ``[H, W]`` uint8 (0 background, 255 void).

    Each instance gives its tight box and the RoIAlign crop of its mask (score 1), so
    that ``paste()`` gives the instance back. ``jitter`` moves every box edge by up to
    ``jitter`` times the box's width/height (uniform) and re-crops the instance mask in
    the moved box, like a detector that is slightly off. ``n_noise`` adds random boxes
    with elliptical masks scored below every oracle proposal. Instances come in
    increasing id order. ``rng`` drives jitter and noise (default: seed 0).
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise DMMInputError(f"proposals_from_labels: labels must be a 2-D array [H, W]; got shape {labels.shape}")
    if n_noise < 0 or jitter < 0 or mask_size <= 0:
        raise DMMInputError(
            f"proposals_from_labels: n_noise and jitter must be >= 0 and mask_size > 0; got {n_noise}, {jitter}, {mask_size}"
        )
    rng = np.random.default_rng(0) if rng is None else rng
    height, width = labels.shape
    ids = [int(i) for i in np.unique(labels) if i not in (0, 255)]

    boxes = []
    for instance in ids:
        x1, y1, x2, y2 = _tight_box(labels == instance)
        if jitter > 0:
            w, h = x2 - x1, y2 - y1
            dx1, dy1, dx2, dy2 = rng.uniform(-jitter, jitter, size=4) * np.array([w, h, w, h])
            x1, x2 = sorted((np.clip(x1 + dx1, 0, width), np.clip(x2 + dx2, 0, width)))
            y1, y2 = sorted((np.clip(y1 + dy1, 0, height), np.clip(y2 + dy2, 0, height)))
            x2, y2 = max(x2, x1 + 1), max(y2, y1 + 1)
        boxes.append((x1, y1, x2, y2))
    oracle_boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    instance_masks = torch.from_numpy(np.stack([labels == i for i in ids])) if ids else torch.zeros(0, height, width)
    oracle_masks = _crop_masks(instance_masks, oracle_boxes, mask_size)

    # Noise: random boxes holding a filled ellipse, scores in (0, 1) so oracle ones stay on top.
    noise_boxes = np.zeros((n_noise, 4), dtype=np.float32)
    for k in range(n_noise):
        w = rng.uniform(0.05, 0.5) * width
        h = rng.uniform(0.05, 0.5) * height
        x1, y1 = rng.uniform(0, width - w), rng.uniform(0, height - h)
        noise_boxes[k] = (x1, y1, x1 + w, y1 + h)
    grid = (torch.arange(mask_size, dtype=torch.float32) + 0.5) / mask_size * 2 - 1
    ellipse = ((grid[:, None] ** 2 + grid[None, :] ** 2) <= 1.0).float()
    noise_masks = ellipse.expand(n_noise, mask_size, mask_size).clone()
    noise_scores = np.sort(rng.uniform(0.01, 0.99, size=n_noise))[::-1].astype(np.float32)

    return FrameProposals(
        boxes=torch.cat([oracle_boxes, torch.from_numpy(noise_boxes)]),
        scores=torch.cat([torch.ones(len(ids)), torch.from_numpy(noise_scores.copy())]),
        masks=torch.cat([oracle_masks, noise_masks]),
        image_size=(height, width),
    )


# ----------------------------------------------------------------------------------------------
# The off-line cache
# ----------------------------------------------------------------------------------------------

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


def frame_key(frame_id: int | str) -> str:
    """File stem for a frame: ints as ``%05d`` (the DAVIS frame names), strings as given."""
    if isinstance(frame_id, (int, np.integer)):
        if frame_id < 0:
            raise DMMInputError(f"frame_id must be >= 0; got {frame_id}")
        return f"{int(frame_id):05d}"
    key = str(frame_id)
    if not _SAFE_NAME.match(key) or key in (".", ".."):
        raise DMMInputError(f"frame_id {key!r} must be an int or a plain file name (letters, digits, _ . -)")
    return key


class ProposalCache:
    """Proposals stored off-line, one file per frame: ``root/<seq>/<frame_id>.pt`` (Sec. 3).

    ``frame_id`` is an int (written ``%05d``, like the DAVIS frame files) or a plain
    name. Files are written atomically, so a crashed or parallel writer never leaves
    a half file for :meth:`get` to read.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path(self, seq: str, frame_id: int | str) -> Path:
        seq = str(seq)
        if not _SAFE_NAME.match(seq) or seq in (".", ".."):
            raise DMMInputError(f"sequence name {seq!r} must be a plain folder name (letters, digits, _ . -)")
        return self.root / seq / f"{frame_key(frame_id)}.pt"

    def has(self, seq: str, frame_id: int | str) -> bool:
        return self.path(seq, frame_id).is_file()

    def get(self, seq: str, frame_id: int | str) -> FrameProposals | None:
        """The cached proposals, or ``None`` if this frame has not been computed."""
        path = self.path(seq, frame_id)
        if not path.is_file():
            return None
        return FrameProposals.load(path)

    def put(self, seq: str, frame_id: int | str, proposals: FrameProposals) -> Path:
        """Store ``proposals`` (replacing an older file for the same frame); returns the path."""
        if not isinstance(proposals, FrameProposals):
            raise DMMInputError(f"ProposalCache.put expects FrameProposals; got {type(proposals).__name__}")
        path = self.path(seq, frame_id)
        proposals.save(path)
        return path

    def sequences(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def frames(self, seq: str) -> list[str]:
        folder = self.root / seq
        if not folder.is_dir():
            return []
        return sorted(p.stem for p in folder.glob("*.pt") if not p.name.startswith("."))

"""The proposals of one frame, :class:`FrameProposals`, and how they are pasted into full masks (Eq. 8).

DMM-Net "first extract[s] mask proposals independently per frame with a COCO-pretrained
Mask R-CNN" and "only keep[s] the top-50 proposals based on their scores" (Sec. 3).
A frame's proposals are boxes, scores and Mask R-CNN's box-relative ``S x S`` mask
probabilities; :meth:`FrameProposals.paste` gives the full-image masks ``P~`` of Eq. 8.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from dmmlib.device import to_device
from dmmlib.errors import DMMInputError
from dmmlib.fileio import atomic_path
from dmmlib.torchio import load_torch_file

DEFAULT_MASK_SIZE = 28  # Mask R-CNN's mask head resolution (He et al. 2017), as in the paper's proposal net
TOP_K = 50  # "We only keep the top-50 proposals based on their scores" (Sec. 3)


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
        """The same proposals on ``device`` (non-blocking from pinned memory)."""
        return FrameProposals(to_device(self.boxes, device), to_device(self.scores, device),
                              to_device(self.masks, device), self.image_size)

    def pin_memory(self) -> "FrameProposals":
        """A copy in pinned host memory: what a DataLoader with ``pin_memory=True`` makes of it."""
        return FrameProposals(self.boxes.pin_memory(), self.scores.pin_memory(), self.masks.pin_memory(), self.image_size)

    def top(self, k: int) -> "FrameProposals":
        """The ``k`` highest-scoring proposals (scores are kept sorted)."""
        return FrameProposals(self.boxes[:k], self.scores[:k], self.masks[:k], self.image_size)

    def transformed(self, matrix, image_size: tuple[int, int]) -> "FrameProposals":
        """The proposals of the frame warped by an axis-aligned 2x3 ``matrix`` into an image of ``image_size``.

        ``matrix`` maps pixel centres of this frame to pixel centres of the warped one (the
        convention of :func:`dmmlib.data.clips.resize_matrix`): ``x' = a x + b``, ``y' = d y + e``
        with no rotation or shear, so every box stays a box and its mask only flips when ``a``
        or ``d`` is negative. Box edges ``u`` (pixel-edge coordinates) map to ``a (u - 1/2) + b + 1/2``.
        This is how cached proposals follow a training clip's resize, scale, shift and flip.
        """
        m = torch.as_tensor(matrix, dtype=torch.float64)
        if tuple(m.shape) != (2, 3) or abs(float(m[0, 1])) > 1e-9 or abs(float(m[1, 0])) > 1e-9:
            raise DMMInputError(f"FrameProposals.transformed needs an axis-aligned 2x3 matrix (no rotation or shear); got {m.tolist()}")
        a, b, d, e = (float(v) for v in (m[0, 0], m[0, 2], m[1, 1], m[1, 2]))
        if a == 0 or d == 0:
            raise DMMInputError(f"FrameProposals.transformed: the matrix {m.tolist()} is singular")
        boxes = self.boxes.to(torch.float64)
        xs, ys = a * (boxes[:, [0, 2]] - 0.5) + b + 0.5, d * (boxes[:, [1, 3]] - 0.5) + e + 0.5
        masks = self.masks
        if a < 0:
            xs, masks = xs.flip(-1), masks.flip(-1)
        if d < 0:
            ys, masks = ys.flip(-1), masks.flip(-2)
        boxes = torch.stack([xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]], dim=1).to(self.boxes.dtype)
        return FrameProposals(boxes, self.scores, masks, image_size)

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
        state = load_torch_file(path, "proposal file")
        return cls.from_state_dict(state, source=f"proposal file {path}")

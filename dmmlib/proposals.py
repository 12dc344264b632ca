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
from dmmlib.fileio import atomic_path, load_torch_file

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
        state = load_torch_file(path, "proposal file")
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


# ----------------------------------------------------------------------------------------------
# ProposalNet: a class-agnostic torchvision Mask R-CNN
# ----------------------------------------------------------------------------------------------

ARCHITECTURES = ("resnet50_fpn", "resnet18_fpn_lite")

# Which architecture each profile uses, and the largest short side a frame is resized to.
# The paper resizes "the input image such that its short-side is no larger than 800" (Sec. 4.1);
# smaller frames are used at their native size (torchvision would otherwise upscale them to 800).
PROPOSAL_NET_SETTINGS = {
    "smoke": {"architecture": "resnet18_fpn_lite", "max_short_side": 800},
    "cpu": {"architecture": "resnet18_fpn_lite", "max_short_side": 800},
    "gpu": {"architecture": "resnet50_fpn", "max_short_side": 800},
}

CHECKPOINT_FORMAT = "dmmlib.proposal_net/1"


def _build_resnet50_fpn(coco: bool) -> torch.nn.Module:
    """torchvision's ``maskrcnn_resnet50_fpn`` (R50-FPN, the paper's Table 4 "R50" proposal net), 2 classes.

    With ``coco=True`` the COCO weights come from torchvision's weights API (a download).
    Their 91-class box and mask predictors are replaced by fresh class-agnostic
    (background / object) ones: the paper trains "the class-agnostic binary mask
    proposal network on COCO" (Sec. 4.1), which these heads would still need.
    """
    from torchvision.models.detection import maskrcnn_resnet50_fpn
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
    from torchvision.models.detection.mask_rcnn import MaskRCNN_ResNet50_FPN_Weights, MaskRCNNPredictor

    common = dict(box_detections_per_img=TOP_K, box_score_thresh=0.0)
    if not coco:
        return maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=2, **common)
    try:
        model = maskrcnn_resnet50_fpn(weights=MaskRCNN_ResNet50_FPN_Weights.COCO_V1, **common)
    except Exception as error:  # no network, proxy, corrupt download ...
        raise DMMInputError(
            f"weights='coco': could not get torchvision's COCO Mask R-CNN weights ({error}); "
            "without internet, pass a local weights file instead"
        ) from None
    heads = model.roi_heads
    heads.box_predictor = FastRCNNPredictor(heads.box_predictor.cls_score.in_features, 2)
    heads.mask_predictor = MaskRCNNPredictor(heads.mask_predictor.conv5_mask.in_channels, 256, 2)
    return model


def _build_resnet18_fpn_lite() -> torch.nn.Module:
    """A light Mask R-CNN for CPUs: ResNet-18's first three stages + a 64-channel FPN, slim heads.

    Same structure as the paper's proposal net (backbone + FPN, RPN, RoIAlign box and
    mask heads, 28 x 28 masks) at a small fraction of the compute and 3 M parameters:
    ResNet-18's last stage (8 M of its 11 M parameters) is dropped because synthetic
    frames are ~100 px high, so stride 16 (plus a max-pooled stride-32 level) already
    covers whole objects. BatchNorm is trainable (not frozen as in torchvision's
    pretrained recipe) because this net starts from random weights; anchors are
    8-64 px to match the objects of small frames.
    """
    from torchvision.models import resnet18
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    channels = 64
    trunk = resnet18(weights=None)
    del trunk.layer4, trunk.fc  # unused by the FPN below; dropping them keeps checkpoints small
    backbone = BackboneWithFPN(
        trunk,
        return_layers={"layer1": "0", "layer2": "1", "layer3": "2"},
        in_channels_list=[64, 128, 256],
        out_channels=channels,
        extra_blocks=LastLevelMaxPool(),
    )
    anchors = AnchorGenerator(sizes=((8,), (16,), (32,), (64,)), aspect_ratios=((0.5, 1.0, 2.0),) * 4)
    return MaskRCNN(
        backbone,
        num_classes=None,
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=600,
        rpn_post_nms_top_n_train=300,
        rpn_pre_nms_top_n_test=300,
        rpn_post_nms_top_n_test=150,
        rpn_batch_size_per_image=128,
        box_head=TwoMLPHead(channels * 7 * 7, 256),
        box_predictor=FastRCNNPredictor(256, 2),
        box_batch_size_per_image=128,
        box_detections_per_img=TOP_K,
        box_score_thresh=0.0,
        mask_head=MaskRCNNHeads(channels, (channels,) * 4, 1),
        mask_predictor=MaskRCNNPredictor(channels, channels, 2),
    )


def _predictor_keys(key: str) -> bool:
    """State-dict entries of the class-specific layers (replaced when the class count differs)."""
    return key.startswith("roi_heads.box_predictor.") or key.startswith("roi_heads.mask_predictor.mask_fcn_logits.")


def _read_weights_file(path: Path) -> tuple[dict[str, torch.Tensor], str | None]:
    """The state dict in ``path`` (a plain state dict or a dmmlib checkpoint) and, for a checkpoint, its architecture."""
    state = load_torch_file(path, "proposal-net weights file")
    architecture = None
    if isinstance(state, dict) and state.get("format") == CHECKPOINT_FORMAT:
        architecture, state = state.get("architecture"), state.get("model")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DMMInputError(f"proposal-net weights file {path} does not hold a state dict of tensors")
    return state, architecture


def _load_state(detector: torch.nn.Module, state: dict[str, torch.Tensor], path: Path, architecture: str) -> None:
    """Load ``state`` (read from ``path``) into ``detector``, strictly.

    A state dict whose only mismatch is the class-specific predictors (e.g. a COCO
    91-class torchvision file fetched elsewhere) loads everything but those layers,
    which keep their fresh class-agnostic initialisation.
    """
    own = detector.state_dict()
    foreign_heads = [k for k in state if _predictor_keys(k) and k in own and state[k].shape != own[k].shape]
    if foreign_heads:
        state = {k: v for k, v in state.items() if not _predictor_keys(k)}
        state.update({k: v for k, v in own.items() if _predictor_keys(k)})
    try:
        detector.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).strip().splitlines()
        raise DMMInputError(
            f"proposal-net weights file {path} does not fit the {architecture!r} architecture: "
            f"{' '.join(first[:3])[:400]}"
        ) from None


def frame_to_tensor(frame: np.ndarray | torch.Tensor, what: str = "frame") -> torch.Tensor:
    """A frame as float ``[3, H, W]`` in [0, 1]: from uint8 ``[H, W, 3]`` numpy or a float tensor ``[3, H, W]``."""
    if isinstance(frame, np.ndarray):
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise DMMInputError(f"{what} must be a uint8 array [H, W, 3]; got {frame.dtype} {frame.shape}")
        return torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1).float() / 255.0
    if isinstance(frame, torch.Tensor):
        if not torch.is_floating_point(frame) or frame.ndim != 3 or frame.shape[0] != 3:
            raise DMMInputError(f"{what} must be a float tensor [3, H, W] in [0, 1]; got {frame.dtype} {tuple(frame.shape)}")
        return frame
    raise DMMInputError(f"{what} must be a numpy uint8 [H, W, 3] array or a float tensor [3, H, W]; got {type(frame).__name__}")


class ProposalNet(torch.nn.Module):
    """Class-agnostic Mask R-CNN proposal generator (Sec. 3 "Mask Proposal Generation", Sec. 4.1).

    ``num_classes = 2`` (background / object), top-50 detections, ROI score threshold 0
    ("Score threshold of the ROI head is set to 0"), torchvision's default NMS.

    Parameters
    ----------
    architecture : ``"resnet50_fpn"`` (the paper's R50-FPN; its main model uses X101-FPN)
        or ``"resnet18_fpn_lite"`` (CPU); default: the one a dmmlib checkpoint in ``weights``
        names, else the profile's (:data:`PROPOSAL_NET_SETTINGS`).
    weights : ``None`` (random init from ``seed``), ``"coco"`` (torchvision COCO weights,
        resnet50_fpn only; needs a download) or a path to a state dict / dmmlib checkpoint
        (``torch.load(weights_only=True)``).
    max_short_side : frames are used at native size unless their short side exceeds this.
    """

    def __init__(
        self,
        architecture: str | None = None,
        weights: str | os.PathLike | None = None,
        *,
        seed: int = 0,
        max_short_side: int | None = None,
        profile: str | None = None,
    ):
        super().__init__()
        from dmmlib.profiles import by_profile

        settings = by_profile(PROPOSAL_NET_SETTINGS, profile)
        state, saved_architecture = (None, None)
        if weights is not None and weights != "coco":
            state, saved_architecture = _read_weights_file(Path(weights))
            if architecture is not None and saved_architecture not in (None, architecture):
                raise DMMInputError(
                    f"proposal-net checkpoint {weights} holds a {saved_architecture!r} network; expected {architecture!r}"
                )
        # a dmmlib checkpoint names its architecture; otherwise the profile's default
        architecture = architecture or saved_architecture or settings["architecture"]
        if architecture not in ARCHITECTURES:
            raise DMMInputError(f"architecture={architecture!r}; expected one of {', '.join(ARCHITECTURES)}")
        self.architecture = architecture
        self.max_short_side = int(settings["max_short_side"] if max_short_side is None else max_short_side)
        if weights == "coco" and architecture != "resnet50_fpn":
            raise DMMInputError(f"weights='coco' exists only for architecture 'resnet50_fpn', not {architecture!r}")
        with torch.random.fork_rng(devices=[]):  # seeded init without disturbing the caller's RNG
            torch.manual_seed(seed)
            if architecture == "resnet50_fpn":
                self.detector = _build_resnet50_fpn(coco=weights == "coco")
            else:
                self.detector = _build_resnet18_fpn_lite()
        if state is not None:
            _load_state(self.detector, state, Path(weights), architecture)

    @property
    def device(self) -> torch.device:
        return next(self.detector.parameters()).device

    def digest(self) -> str:
        """SHA-1 of the architecture and every weight: names the network whose proposals a cache holds."""
        import hashlib

        sha = hashlib.sha1(self.architecture.encode())
        for name, tensor in self.detector.state_dict().items():
            sha.update(name.encode())
            sha.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return sha.hexdigest()

    def fit_transform_to(self, height: int, width: int) -> None:
        """Make torchvision's resize keep ``(height, width)`` (short side capped at ``max_short_side``)."""
        short, long = min(height, width), max(height, width)
        scale = min(1.0, self.max_short_side / short)
        self.detector.transform.min_size = (max(1, int(round(short * scale))),)
        self.detector.transform.max_size = max(1, int(round(long * scale)))

    def forward(self, images: list[torch.Tensor], targets: list[dict] | None = None):
        """torchvision's Mask R-CNN call: losses in train mode, detections in eval mode."""
        height, width = images[0].shape[-2:]
        self.fit_transform_to(height, width)
        return self.detector(images, targets)

    @torch.inference_mode()
    def propose_batch(self, frames: Iterable[np.ndarray | torch.Tensor]) -> list[FrameProposals]:
        """Proposals for several frames of one size (one batched forward pass)."""
        images = [frame_to_tensor(f, f"frame {k}").to(self.device) for k, f in enumerate(frames)]
        if not images:
            return []
        sizes = {tuple(im.shape[-2:]) for im in images}
        if len(sizes) != 1:
            raise DMMInputError(f"propose_batch: frames must share one size; got {sorted(sizes)}")
        height, width = images[0].shape[-2:]
        was_training = self.detector.training
        self.detector.eval()
        try:
            self.fit_transform_to(height, width)
            # The steps of GeneralizedRCNN.forward, stopping before transform.postprocess,
            # which would paste the 28 x 28 masks into full frames; we keep them box-relative.
            batch, _ = self.detector.transform(images)
            features = self.detector.backbone(batch.tensors)
            boxes, _ = self.detector.rpn(batch, features)
            detections, _ = self.detector.roi_heads(features, boxes, batch.image_sizes)
        finally:
            self.detector.train(was_training)
        out = []
        for det, (h_in, w_in) in zip(detections, batch.image_sizes):
            scale = torch.tensor([width / w_in, height / h_in] * 2, device=det["boxes"].device)
            order = det["scores"].argsort(descending=True)[:TOP_K]
            out.append(
                FrameProposals(
                    boxes=(det["boxes"][order] * scale).float().cpu(),
                    scores=det["scores"][order].float().cpu(),
                    masks=det["masks"][order][:, 0].float().cpu(),
                    image_size=(int(height), int(width)),
                )
            )
        return out

    def propose(self, frame: np.ndarray | torch.Tensor) -> FrameProposals:
        """Top-50 proposals of one frame: uint8 ``[H, W, 3]`` numpy or float ``[3, H, W]`` tensor in [0, 1]."""
        return self.propose_batch([frame])[0]


# ----------------------------------------------------------------------------------------------
# Benchmarks in the DAVIS layout (the synthetic one included)
# ----------------------------------------------------------------------------------------------

RESOLUTION = "480p"  # the DAVIS folder name; the synthetic benchmark keeps it for smaller frames


def split_sequences(data_root: str | os.PathLike, split: str) -> list[str]:
    """Sequence names of ``split``: the lines of ``<root>/ImageSets/2017/<split>.txt``."""
    path = Path(data_root) / "ImageSets" / "2017" / f"{split}.txt"
    if not path.is_file():
        raise DMMInputError(f"split file {path} does not exist (is --data a benchmark in the DAVIS layout?)")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def frame_paths(data_root: str | os.PathLike, seq: str) -> list[Path]:
    """The sorted JPEG frames ``<root>/JPEGImages/480p/<seq>/*.jpg``."""
    folder = Path(data_root) / "JPEGImages" / RESOLUTION / seq
    frames = sorted(folder.glob("*.jpg"))
    if not frames:
        raise DMMInputError(f"frame folder {folder} holds no JPEG frames")
    return frames


def read_frame_rgb(path: str | os.PathLike) -> np.ndarray:
    """A frame as uint8 RGB ``[H, W, 3]``."""
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DMMInputError(f"frame {path} is not a readable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _shard(items: list[str], rank: int | None, world_size: int | None) -> list[str]:
    """Every ``world_size``-th item from ``rank`` on; defaults from ``$RANK``/``$WORLD_SIZE`` (torchrun)."""
    rank = int(os.environ.get("RANK", 0)) if rank is None else int(rank)
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else int(world_size)
    if world_size < 1 or not 0 <= rank < world_size:
        raise DMMInputError(f"rank={rank}, world_size={world_size}; expected 0 <= rank < world_size")
    return items[rank::world_size]


SOURCE_FILE = "proposal_source.json"


def _claim_cache(cache: ProposalCache, net: ProposalNet) -> None:
    """Record which network fills ``cache``; refuse to mix the proposals of two networks."""
    import json

    from dmmlib.fileio import atomic_write_text

    source = {"architecture": net.architecture, "weights_sha1": net.digest()}
    path = cache.root / SOURCE_FILE
    if path.is_file():
        try:
            recorded = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            raise DMMInputError(f"{path} is not valid JSON; expected the record of the network that filled the cache") from None
        if recorded != source:
            raise DMMInputError(
                f"cache {cache.root} holds proposals of another network ({recorded.get('architecture')}, "
                f"weights {str(recorded.get('weights_sha1'))[:12]}); use a new --cache folder or delete this one"
            )
        return
    if cache.sequences():
        raise DMMInputError(f"cache {cache.root} holds proposals of an unrecorded network (no {SOURCE_FILE}); use a new folder")
    atomic_write_text(path, json.dumps(source, indent=1))


def compute_proposals(
    data_root: str | os.PathLike,
    split: str,
    net: ProposalNet,
    cache_root: str | os.PathLike | ProposalCache,
    progress: bool = True,
    rank: int | None = None,
    world_size: int | None = None,
    batch_size: int = 4,
) -> dict[str, int]:
    """Run ``net`` on every frame of every sequence of ``split`` and store the top-50 in the cache.

    The off-line step of Sec. 3: frames already cached are skipped, so an interrupted
    run resumes where it stopped. With several processes (``torchrun``, or ``rank`` /
    ``world_size`` given) each takes every ``world_size``-th sequence; the atomic
    per-frame files mean no two writers ever see each other's half files.
    Returns ``{"computed": ..., "skipped": ..., "sequences": ...}`` for this process.
    """
    from tqdm.auto import tqdm

    cache = cache_root if isinstance(cache_root, ProposalCache) else ProposalCache(cache_root)
    sequences = _shard(split_sequences(data_root, split), rank, world_size)
    _claim_cache(cache, net)
    todo = []
    skipped = 0
    for seq in sequences:
        for frame in frame_paths(data_root, seq):
            if cache.has(seq, frame.stem):
                skipped += 1
            else:
                todo.append((seq, frame))
    net.eval()
    bar = tqdm(total=len(todo), desc=f"proposals {split}", disable=not progress)
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        images = [read_frame_rgb(frame) for _, frame in chunk]
        groups: dict[tuple, list[int]] = {}  # frames of one size go through the net together
        for k, image in enumerate(images):
            groups.setdefault(image.shape, []).append(k)
        for members in groups.values():
            for k, proposals in zip(members, net.propose_batch([images[k] for k in members])):
                cache.put(chunk[k][0], chunk[k][1].stem, proposals)
        bar.update(len(chunk))
    bar.close()
    return {"computed": len(todo), "skipped": skipped, "sequences": len(sequences)}


def random_box_proposals(
    image_size: tuple[int, int], count: int = TOP_K, rng: np.random.Generator | None = None, mask_size: int = DEFAULT_MASK_SIZE
) -> FrameProposals:
    """A trivial baseline: ``count`` random boxes whose masks fill the whole box, random scores.

    Box sides are uniform in [5 %, 60 %] of the frame side, positions uniform inside it.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    height, width = image_size
    sides = rng.uniform(0.05, 0.6, size=(count, 2)) * np.array([width, height])
    corners = rng.uniform(0, 1, size=(count, 2)) * (np.array([width, height]) - sides)
    boxes = torch.from_numpy(np.concatenate([corners, corners + sides], axis=1)).float()
    scores = torch.from_numpy(np.sort(rng.uniform(0, 1, size=count))[::-1].copy()).float()
    return FrameProposals(boxes, scores, torch.ones(count, mask_size, mask_size), (height, width))


def best_proposal_iou(objects: torch.Tensor, proposals: FrameProposals, top_k: int = TOP_K) -> torch.Tensor:
    """For each object mask ``[n, H, W]`` (bool), the best mask IoU over the top-k proposals: ``[n]``.

    Proposals are pasted and thresholded at 0.5 (Mask R-CNN's binarisation).
    """
    n = objects.shape[0]
    chosen = proposals.top(top_k)
    if n == 0 or len(chosen) == 0:
        return torch.zeros(n)
    height, width = objects.shape[-2:]
    pasted = chosen.paste(height, width, threshold=0.5).reshape(len(chosen), -1)  # [m, HW]
    flat = objects.reshape(n, -1).float()  # [n, HW]
    intersection = flat @ pasted.T  # [n, m]
    union = flat.sum(1, keepdim=True) + pasted.sum(1)[None, :] - intersection
    return (intersection / union.clamp(min=1)).max(dim=1).values


def proposal_recall(
    data_root: str | os.PathLike,
    split: str,
    cache_root: str | os.PathLike | ProposalCache,
    iou_thresholds: tuple[float, ...] = (0.5, 0.7),
    top_k: int = TOP_K,
) -> dict:
    """Recall of the tracked objects by the cached top-k proposals (why top-50 suffices, Sec. 3).

    For every frame of every sequence of ``split`` and every object of its
    ``Annotations`` label map that is visible there (non-empty mask), take the best
    mask IoU over the frame's top-``top_k`` proposals; the recall at threshold ``tau``
    is the fraction of such (object, frame) pairs with best IoU >= ``tau``.

    Returns ``{"recall": {tau: fraction}, "pairs": count, "mean_best_iou": float,
    "best_ious": [per-pair values]}``. A frame missing from the cache is an error.
    """
    from dmmlib.maskio import read_label_png

    cache = cache_root if isinstance(cache_root, ProposalCache) else ProposalCache(cache_root)
    if top_k < 1:
        raise DMMInputError(f"top_k={top_k}; expected at least 1")
    root = Path(data_root)
    best: list[float] = []
    for seq in split_sequences(root, split):
        for frame in frame_paths(root, seq):
            annotation = root / "Annotations" / RESOLUTION / seq / f"{frame.stem}.png"
            if not annotation.is_file():
                continue  # unannotated frames (e.g. DAVIS test-dev) cannot be scored
            labels = read_label_png(annotation)
            ids = [int(i) for i in np.unique(labels) if i not in (0, 255)]
            if not ids:
                continue
            proposals = cache.get(seq, frame.stem)
            if proposals is None:
                raise DMMInputError(
                    f"no cached proposals for {seq}/{frame.stem} in {cache.root}; run `python -m dmmlib proposals compute` first"
                )
            objects = torch.from_numpy(np.stack([labels == i for i in ids]))
            best += best_proposal_iou(objects, proposals, top_k).tolist()
    values = np.asarray(best, dtype=np.float64)
    recall = {float(t): (float((values >= t).mean()) if values.size else float("nan")) for t in iou_thresholds}
    return {
        "recall": recall,
        "pairs": int(values.size),
        "mean_best_iou": float(values.mean()) if values.size else float("nan"),
        "best_ious": best,
    }


# ----------------------------------------------------------------------------------------------
# python -m dmmlib proposals {train, compute, recall}
# ----------------------------------------------------------------------------------------------


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    train = sub.add_parser("train", help="train the class-agnostic Mask R-CNN on the train split")
    train.add_argument("--data", required=True, help="benchmark root in the DAVIS layout (with Instances/)")
    train.add_argument("--out", required=True, help="checkpoint file to write")
    train.add_argument("--profile", choices=("smoke", "cpu", "gpu"), help="settings table (default: $DMM_PROFILE)")
    train.add_argument("--steps", type=int, help="override the profile's number of steps")
    train.add_argument("--init-weights", help="starting weights: 'coco', 'none' (random) or a state-dict file "
                       "(default: the profile's)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device", default="auto")
    train.add_argument("--resume", action="store_true", help="continue the checkpoint at --out")
    train.add_argument("--force", action="store_true", help="replace an existing --out")

    compute = sub.add_parser("compute", help="compute and cache the top-50 proposals of every frame of a split")
    compute.add_argument("--data", required=True)
    compute.add_argument("--split", default="val")
    compute.add_argument("--checkpoint", required=True, help="a checkpoint from `proposals train`")
    compute.add_argument("--cache", required=True, help="cache folder (<cache>/<seq>/<frame>.pt)")
    compute.add_argument("--device", default="auto")

    recall = sub.add_parser("recall", help="recall of the annotated objects by the cached proposals")
    recall.add_argument("--data", required=True)
    recall.add_argument("--split", default="val")
    recall.add_argument("--cache", required=True)
    recall.add_argument("--top-k", type=int, default=TOP_K)
    recall.add_argument("--iou", type=float, nargs="+", default=[0.5, 0.7], help="IoU thresholds")


def main(args: argparse.Namespace) -> int:
    if args.action == "train":
        from dmmlib.proposal_training import train_config_for_profile, train_proposal_net

        config = train_config_for_profile(args.profile)
        if args.steps is not None:
            config = config.replace(steps=args.steps)
        if args.init_weights is not None:
            config = config.replace(init_weights=None if args.init_weights.lower() == "none" else args.init_weights)
        result = train_proposal_net(
            args.data, args.out, config, seed=args.seed, resume=args.resume, force=args.force, device=args.device
        )
        last = result["losses"].get("total", [float("nan")])[-1]
        print(f"trained {result['steps']} steps in {result['seconds']:.1f} s; last loss {last:.4f}; wrote {args.out}")
        return 0
    if args.action == "compute":
        from dmmlib.proposal_training import load_proposal_net

        net = load_proposal_net(args.checkpoint, device=args.device)
        counts = compute_proposals(args.data, args.split, net, args.cache)
        print(f"{counts['computed']} frames computed, {counts['skipped']} already cached, "
              f"{counts['sequences']} sequences -> {args.cache}")
        return 0
    result = proposal_recall(args.data, args.split, args.cache, tuple(args.iou), args.top_k)
    print(f"top-{args.top_k} proposal recall on {args.split} ({result['pairs']} object-frames, "
          f"mean best IoU {result['mean_best_iou']:.3f})")
    print(f"{'IoU >=':>8}  recall")
    for threshold, value in result["recall"].items():
        print(f"{threshold:>8.2f}  {value:.3f}")
    return 0

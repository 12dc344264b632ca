"""The proposal network: a class-agnostic torchvision Mask R-CNN (Sec. 3, Sec. 4.1).

The paper uses Mask R-CNN with a ResNeXt-101-FPN backbone (R50-FPN in an ablation),
COCO-pretrained and trained class-agnostic. ``detectron2`` is not on PyPI for our torch,
so :class:`ProposalNet` wraps torchvision's Mask R-CNN: ``resnet50_fpn`` (the paper's R50
ablation; COCO weights when torchvision can fetch them) or ``resnet18_fpn_lite`` (a light
net for CPUs). Proposals of another detector enter through :class:`dmmlib.proposals.ProposalCache`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from torchvision.models import resnet18
from torchvision.models.detection import MaskRCNN, maskrcnn_resnet50_fpn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import (
    MaskRCNN_ResNet50_FPN_Weights,
    MaskRCNNHeads,
    MaskRCNNPredictor,
)
from torchvision.ops import nms
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from dmmlib.errors import DMMInputError
from dmmlib.profiles import by_profile
from dmmlib.proposals.frames import TOP_K, FrameProposals
from dmmlib.torchio import load_torch_file

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


MERGED_DETECTIONS = 4 * TOP_K  # detections kept per frame before COCO's classes are merged into one
MERGE_IOU = 0.5  # class-agnostic NMS across COCO's classes (torchvision's per-class NMS threshold)
HEADS = ("keep", "fresh")


def _fresh_heads(model: torch.nn.Module) -> torch.nn.Module:
    """Replace the class-specific predictors by fresh class-agnostic (background / object) ones."""
    heads = model.roi_heads
    heads.box_predictor = FastRCNNPredictor(heads.box_predictor.cls_score.in_features, 2)
    heads.mask_predictor = MaskRCNNPredictor(heads.mask_predictor.conv5_mask.in_channels,
                                             heads.mask_predictor.conv5_mask.out_channels, 2)
    return model


def _build_resnet50_fpn(coco: bool, num_classes: int = 2) -> torch.nn.Module:
    """torchvision's ``maskrcnn_resnet50_fpn`` (R50-FPN, the paper's Table 4 "R50" proposal net).

    With ``coco=True`` the COCO weights come from torchvision's weights API (a download, or the
    file already in the torch hub cache), with their 91-class heads.
    """

    common = dict(box_detections_per_img=TOP_K, box_score_thresh=0.0)
    if not coco:
        return maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=num_classes, **common)
    try:
        return maskrcnn_resnet50_fpn(weights=MaskRCNN_ResNet50_FPN_Weights.COCO_V1, **common)
    except Exception as error:  # no network, proxy, corrupt download ...
        raise DMMInputError(
            f"weights='coco': could not get torchvision's COCO Mask R-CNN weights ({error}); "
            "without internet, put maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth in $TORCH_HOME/hub/checkpoints "
            "or pass a local weights file instead"
        ) from None


def _build_resnet18_fpn_lite(num_classes: int = 2) -> torch.nn.Module:
    """A light Mask R-CNN for CPUs: ResNet-18's first three stages + a 64-channel FPN, slim heads.

    Same structure as the paper's proposal net (backbone + FPN, RPN, RoIAlign box and
    mask heads, 28 x 28 masks) at a small fraction of the compute and 3 M parameters:
    ResNet-18's last stage (8 M of its 11 M parameters) is dropped because synthetic
    frames are ~100 px high, so stride 16 (plus a max-pooled stride-32 level) already
    covers whole objects. BatchNorm is trainable (not frozen as in torchvision's
    pretrained recipe) because this net starts from random weights; anchors are
    8-64 px to match the objects of small frames.
    """

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
        box_predictor=FastRCNNPredictor(256, num_classes),
        box_batch_size_per_image=128,
        box_detections_per_img=TOP_K,
        box_score_thresh=0.0,
        mask_head=MaskRCNNHeads(channels, (channels,) * 4, 1),
        mask_predictor=MaskRCNNPredictor(channels, channels, num_classes),
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


def _state_classes(state: dict[str, torch.Tensor]) -> int:
    """The class count of a Mask R-CNN state dict's box classifier (2: class-agnostic; COCO: 91)."""
    weight = state.get("roi_heads.box_predictor.cls_score.weight")
    return 2 if weight is None else int(weight.shape[0])


def _load_state(detector: torch.nn.Module, state: dict[str, torch.Tensor], path: Path, architecture: str) -> None:
    """Load ``state`` (read from ``path``) into ``detector``, strictly.

    With ``heads="fresh"`` a state dict whose only mismatch is the class-specific predictors
    (a COCO 91-class torchvision file fetched elsewhere) loads everything but those layers,
    which keep their fresh class-agnostic initialisation (what training starts from).
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


def frame_to_tensor(frame: np.ndarray | torch.Tensor, what: str = "frame",
                    device: torch.device | str | None = None) -> torch.Tensor:
    """A frame as float ``[3, H, W]`` in [0, 1] on ``device`` (default: where it is; numpy: the CPU).

    Accepts uint8 ``[H, W, 3]`` numpy, a uint8 tensor ``[3, H, W]`` or a float tensor ``[3, H, W]``.
    uint8 frames are moved as bytes and scaled on the device.
    """
    if isinstance(frame, np.ndarray):
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise DMMInputError(f"{what} must be a uint8 array [H, W, 3]; got {frame.dtype} {frame.shape}")
        frame = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)
    if not isinstance(frame, torch.Tensor):
        raise DMMInputError(f"{what} must be a numpy uint8 [H, W, 3] array or a float tensor [3, H, W]; "
                            f"got {type(frame).__name__}")
    if frame.ndim != 3 or frame.shape[0] != 3 or not (torch.is_floating_point(frame) or frame.dtype == torch.uint8):
        raise DMMInputError(f"{what} must be a float tensor [3, H, W] in [0, 1]; got {frame.dtype} {tuple(frame.shape)}")
    frame = frame if device is None else frame.to(device)
    return frame.float().div_(255.0) if frame.dtype == torch.uint8 else frame


WEIGHT_KINDS = {
    "random": "random weights (proposes noise)",
    "untrained-heads": "a proposal-net checkpoint trained for 0 steps: its class-agnostic heads are random",
    "coco-merged": "COCO's multi-class heads used class-agnostically (real proposals, no training)",
    "trained": "class-agnostic heads trained with `python -m dmmlib proposals train` (or a 2-class state dict)",
}


def proposal_weights_kind(weights: str | os.PathLike | None) -> str:
    """What ``ProposalNet(weights=...)`` would propose with: a key of :data:`WEIGHT_KINDS`.

    Tells a usable proposal net ("coco-merged", "trained") from one with random heads ("random",
    "untrained-heads"); reads the file's header only as far as it must. Errors name the file.
    """
    if weights is None:
        return "random"
    if weights == "coco":
        return "coco-merged"
    path = Path(weights)
    payload = load_torch_file(path, "proposal-net weights file")
    if isinstance(payload, dict) and payload.get("format") == CHECKPOINT_FORMAT:
        if _state_classes(payload.get("model") or {}) > 2:
            return "coco-merged"
        return "trained" if int(payload.get("step", 0)) > 0 else "untrained-heads"
    state, _ = _read_weights_file(path)
    return "coco-merged" if _state_classes(state) > 2 else "trained"


def _build_detector(architecture: str, weights, state: dict | None, heads: str) -> torch.nn.Module:
    """The torchvision Mask R-CNN of ``architecture`` with ``weights`` (see :class:`ProposalNet`)."""
    classes = _state_classes(state) if state is not None and heads == "keep" else 2
    if architecture == "resnet50_fpn":
        detector = _build_resnet50_fpn(coco=weights == "coco", num_classes=classes)
        if weights == "coco" and heads == "fresh":
            detector = _fresh_heads(detector)
    else:
        detector = _build_resnet18_fpn_lite(classes)
    if state is not None:
        _load_state(detector, state, Path(weights), architecture)
    # several classes are merged after the detector's own per-class NMS: keep enough detections for that
    multi_class = detector.roi_heads.box_predictor.cls_score.out_features > 2
    detector.roi_heads.detections_per_img = MERGED_DETECTIONS if multi_class else TOP_K
    return detector


class ProposalNet(torch.nn.Module):
    """Class-agnostic Mask R-CNN proposal generator (Sec. 3 "Mask Proposal Generation", Sec. 4.1).

    Top-50 detections, ROI score threshold 0 ("Score threshold of the ROI head is set to 0"),
    torchvision's default NMS. Its box and mask heads are either class-agnostic
    (background / object: random, or trained with ``python -m dmmlib proposals train``) or
    COCO's 91-class heads used class-agnostically: every detection counts as "an object" whatever
    its class, and the detections of all classes go through one more NMS (IoU > 0.5: the same
    object found as two classes is kept once) before the top 50 -- real proposals without training.

    Parameters
    ----------
    architecture : ``"resnet50_fpn"`` (the paper's R50-FPN; its main model uses X101-FPN)
        or ``"resnet18_fpn_lite"`` (CPU); default: the one a dmmlib checkpoint in ``weights``
        names, else the profile's (:data:`PROPOSAL_NET_SETTINGS`).
    weights : ``None`` (random init from ``seed``), ``"coco"`` (torchvision COCO weights,
        resnet50_fpn only; a download, or the file in the torch hub cache) or a path to a state
        dict / dmmlib checkpoint (``torch.load(weights_only=True)``).
    heads : ``"keep"`` (default) uses the class heads of ``weights`` as they are (COCO's 91
        classes merged as above); ``"fresh"`` replaces a multi-class head by fresh class-agnostic
        ones (what ``proposals train`` starts from: a COCO backbone with random heads proposes noise
        until trained).
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
        heads: str = "keep",
    ):
        super().__init__()
        settings = by_profile(PROPOSAL_NET_SETTINGS, profile)
        if heads not in HEADS:
            raise DMMInputError(f"heads={heads!r}; expected one of {', '.join(HEADS)}")
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
            self.detector = _build_detector(architecture, weights, state, heads)

    @property
    def classes(self) -> int:
        """Classes of the box head, background included: 2 (class-agnostic) or COCO's 91 (merged)."""
        return int(self.detector.roi_heads.box_predictor.cls_score.out_features)

    @property
    def device(self) -> torch.device:
        return next(self.detector.parameters()).device

    def digest(self) -> str:
        """SHA-1 of the architecture and every weight: names the network whose proposals a cache holds."""
        sha = hashlib.sha1(self.architecture.encode())
        for name, tensor in self.detector.state_dict().items():
            sha.update(name.encode())
            sha.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return sha.hexdigest()

    def backbone_state_dict(self) -> dict[str, torch.Tensor]:
        """The detector's ResNet trunk as a torchvision ResNet ``state_dict`` (``conv1``, ``bn1``, ``layer1`` ...).

        What the matching features f_theta can start from (:class:`dmmlib.features.FeatureExtractor`
        reads such a file): the paper's f_theta is "a COCO-pretrained Mask R-CNN" backbone, a
        copy separate from the proposal net (Sec. 4.1). The lite net's trunk has no ``layer4``.
        Batch-norm statistics come as they are (``num_batches_tracked`` dropped).
        """
        prefix = "backbone.body."
        return {k[len(prefix):]: v.detach().cpu().clone() for k, v in self.detector.state_dict().items()
                if k.startswith(prefix) and not k.endswith("num_batches_tracked")}

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
        """Proposals for several frames of one size (one batched forward pass), on the net's device.

        Frames: uint8 ``[H, W, 3]`` numpy, uint8 or float ``[3, H, W]`` tensors; moved to the net's
        device first (uint8 as bytes) and scaled there. The proposals stay on that device.
        """
        images = [frame_to_tensor(f, f"frame {k}", self.device) for k, f in enumerate(frames)]
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
        return [self._top(det, (height, width), size) for det, size in zip(detections, batch.image_sizes)]

    def _top(self, det: dict, frame_size: tuple[int, int], net_size: tuple[int, int]) -> FrameProposals:
        """The top-50 of one frame's detections, boxes in frame pixels; classes merged if there are several."""
        height, width = frame_size
        scale = torch.tensor([width / net_size[1], height / net_size[0]] * 2, device=det["boxes"].device)
        if self.classes > 2:  # one "object" class: the same object detected as two classes counts once
            order = nms(det["boxes"].float(), det["scores"].float(), MERGE_IOU)[:TOP_K]
        else:
            order = det["scores"].argsort(descending=True)[:TOP_K]
        return FrameProposals(
            boxes=(det["boxes"][order] * scale).float(),
            scores=det["scores"][order].float(),
            masks=det["masks"][order][:, 0].float(),
            image_size=(int(height), int(width)),
        )

    def propose(self, frame: np.ndarray | torch.Tensor) -> FrameProposals:
        """Top-50 proposals of one frame: uint8 ``[H, W, 3]`` numpy or float ``[3, H, W]`` tensor in [0, 1]."""
        return self.propose_batch([frame])[0]

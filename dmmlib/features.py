"""The matching features f_theta of Eq. 1 (Sec. 4.1): a ResNet and RoIAlign.

DMM-Net describes every mask (a first-frame template r_i or a proposal p_j) by
one vector: RoI-pool the box of the mask on the conv2..conv5 feature maps of a
backbone, average each pooled map spatially and concatenate the levels
(Sec. 4.1, "Differentiable Mask Matching"). The backbone is *separate* from the
proposal network: the paper reports that sharing it hurt.

* ``resnet50`` is the paper's choice; ``resnet18`` is the light CPU choice.
  :data:`DEFAULT_BACKBONE` picks one per profile.
* Weights: ``None`` (random init, the default -- nothing is downloaded),
  ``"imagenet"`` (the torchvision weights API; needs the weights in the torch
  cache or a network) or the path of a local torchvision ResNet ``state_dict``.
* Batch norm is frozen (:class:`torchvision.ops.FrozenBatchNorm2d`), as in
  detection backbones: training batches of one or two videos are far too small
  for batch statistics.

Pooling: ``pooling="box"`` (default, the paper's "ROI pooling ... then average
the feature spatially") averages all pooled cells of the box. That average of
RoIAlign's bilinear samples is a weighted sum of the map's cells whose weights
factor into a row profile times a column profile (the samples form a grid), so
it is computed as one small matrix product per image (:func:`box_average_weights`):
the same numbers as torchvision's ``roi_align`` followed by a mean, to rounding,
and a backward pass that is a matrix product too (the CPU backward of
``roi_align`` is a serial scatter that took ~40 % of a training step);
``pooling="mask"`` weights each cell by the mask's coverage of it, so a thin
object in a big box is not described mostly by its background. Both are
differentiable in the features (and ``"mask"`` also in the masks).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.ops import FrozenBatchNorm2d, roi_align

from dmmlib.errors import DMMInputError
from dmmlib.profiles import by_profile
from dmmlib.torchio import load_torch_file

# The four ResNet stages (conv2_x .. conv5_x in the ResNet paper's names).
LEVELS = ("conv2", "conv3", "conv4", "conv5")
STRIDES = {"conv2": 4, "conv3": 8, "conv4": 16, "conv5": 32}
SAMPLES = 2  # RoIAlign's sample points per bin side (sampling_ratio), as in Mask R-CNN
_STAGE_OF_LEVEL = {"conv2": "layer1", "conv3": "layer2", "conv4": "layer3", "conv5": "layer4"}

BACKBONES = {
    "resnet18": (torchvision.models.resnet18, "ResNet18_Weights", (64, 128, 256, 512)),
    "resnet50": (torchvision.models.resnet50, "ResNet50_Weights", (256, 512, 1024, 2048)),
}
DEFAULT_BACKBONE = {"smoke": "resnet18", "cpu": "resnet18", "gpu": "resnet50"}

# ImageNet statistics: every torchvision backbone was trained on inputs normalised with these.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def default_backbone(profile: str | None = None) -> str:
    """The backbone name for ``profile`` (default: the active one)."""
    return by_profile(DEFAULT_BACKBONE, profile)


def _load_weights(net: nn.Module, backbone: str, weights: str | os.PathLike | None,
                  stages: tuple[str, ...] = tuple(_STAGE_OF_LEVEL.values())) -> None:
    """Fill ``net`` (a torchvision ResNet) from ``weights``; see the module docstring.

    Only the stem and the ResNet ``stages`` the extractor keeps must be in the file: a
    backbone with fewer stages (e.g. a detector trunk without ``layer4``) fits an
    extractor that computes only the levels it has.
    """
    if weights is None:
        return
    if weights == "imagenet":
        enum = getattr(torchvision.models, BACKBONES[backbone][1]).IMAGENET1K_V1
        try:
            state = enum.get_state_dict(progress=False)
        except Exception as error:  # offline, proxy, corrupt cache: say what to do instead
            raise DMMInputError(
                f"weights='imagenet': could not obtain torchvision's {enum} ({type(error).__name__}: {error}); "
                "put the file in the torch hub cache or pass weights=<path of a local state_dict>"
            ) from None
        source = str(enum)
    else:
        path = Path(weights)
        state = load_torch_file(path, f"weights file (a torchvision {backbone} state_dict)")
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise DMMInputError(f"weights file {path} does not hold a state_dict (a dict of tensors)")
        source = str(path)
    # The classifier (fc) and the stages this extractor drops are not needed; everything else must fit.
    kept = ("conv1.", "bn1.", *(f"{stage}." for stage in stages))
    state = {k: v for k, v in state.items() if k.startswith(kept) and not k.endswith("num_batches_tracked")}
    own = {k: v for k, v in net.state_dict().items() if k.startswith(kept)}
    missing = sorted(set(own) - set(state))
    wrong_shape = sorted(k for k in own if k in state and state[k].shape != own[k].shape)
    if missing or wrong_shape:
        raise DMMInputError(
            f"weights {source} do not fit a {backbone}: missing {missing[:4]}{'...' if len(missing) > 4 else ''}, "
            f"wrong shape {wrong_shape[:4]}"
        )
    net.load_state_dict(state, strict=False)


def levels_to_compute(*needed: tuple[str, ...]) -> tuple[str, ...]:
    """The backbone levels to run for the ``needed`` ones: every stage up to the deepest (stages are sequential)."""
    deepest = max(LEVELS.index(level) for group in needed for level in group)
    return LEVELS[: deepest + 1]


class FeatureExtractor(nn.Module):
    """f_theta: frames -> conv2..conv5 maps, and boxes -> one feature vector each (Sec. 4.1).

    ``levels`` are the levels computed (a prefix of :data:`LEVELS`; stages beyond the last
    are not built, so their weights are neither needed nor stored) and ``channels`` their
    channel counts; ``pool_levels`` (a subset) the levels pooled into a feature vector
    (default all four), whose length ``dim`` is the sum of their channels.
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        weights: str | os.PathLike | None = None,
        pool_size: int = 7,
        pooling: str = "box",
        pool_levels: tuple[str, ...] = LEVELS,
        levels: tuple[str, ...] | None = None,
    ):
        super().__init__()
        pool_levels = tuple(pool_levels)
        if not pool_levels or not set(pool_levels) <= set(LEVELS):
            raise DMMInputError(f"pool_levels={pool_levels!r}; expected a non-empty subset of {LEVELS}")
        levels = levels_to_compute(pool_levels, tuple(levels or ()))
        if backbone not in BACKBONES:
            raise DMMInputError(f"backbone={backbone!r} is not supported; expected one of {', '.join(BACKBONES)}")
        if pooling not in ("box", "mask"):
            raise DMMInputError(f"pooling={pooling!r}; expected 'box' (the paper) or 'mask'")
        constructor, _, channels = BACKBONES[backbone]
        net = constructor(weights=None, norm_layer=FrozenBatchNorm2d)
        _load_weights(net, backbone, weights, tuple(_STAGE_OF_LEVEL[level] for level in levels))
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.levels = levels
        self.stages = nn.ModuleDict({level: getattr(net, _STAGE_OF_LEVEL[level]) for level in levels})
        self.channels = tuple(c for level, c in zip(LEVELS, channels) if level in levels)
        # The pooled vector concatenates the levels in LEVELS order (Sec. 4.1 uses all four).
        self.pool_levels = tuple(level for level in LEVELS if level in pool_levels)
        self.dim = sum(c for level, c in zip(LEVELS, channels) if level in self.pool_levels)
        self.pool_size = pool_size
        self.pooling = pooling
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, frames: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        """frames [B, 3, H, W] float in [0, 1] -> {level: [B, C_level, H/stride, W/stride]} for ``self.levels``."""
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise DMMInputError(f"frames must have shape [B, 3, H, W]; got {tuple(frames.shape)}")
        x = self.stem((frames - self.mean) / self.std)
        maps = OrderedDict()
        for level in self.levels:
            x = self.stages[level](x)
            maps[level] = x
        return maps

    def pool(
        self,
        feature_maps: "OrderedDict[str, torch.Tensor]",
        rois: torch.Tensor,
        masks: torch.Tensor | None = None,
        counts: list[int] | None = None,
    ) -> torch.Tensor:
        """One feature vector per box: RoIAlign on each level, spatial mean, concatenation.

        rois [K, 5]: (batch index, x1, y1, x2, y2) in frame pixels (pixel edges: a
        box covering columns 0..9 has x1 = 0, x2 = 10). masks [K, H, W] (full-frame
        masks of the boxes' objects, in [0, 1]) is used only with ``pooling="mask"``.
        counts: how many of the rois belong to each image, when the rois are grouped
        image by image (image 0's first) and the caller knows the counts; without
        them they are read from the rois' batch indices (one read from the device).
        Returns [K, dim].
        """
        if rois.numel() == 0:
            return rois.new_zeros(0, self.dim)
        if self.pooling == "box":
            n_images = feature_maps[self.pool_levels[0]].shape[0]
            if counts is None:  # read from the device once, for every level
                images = rois[:, 0].long()
                counts = torch.bincount(images, minlength=n_images).tolist()
                if len(images) > 1 and bool((images[1:] < images[:-1]).any()):  # pool them grouped, then put back
                    order = torch.argsort(images, stable=True)
                    return self.pool(feature_maps, rois[order], None, counts)[torch.argsort(order)]
            if sum(counts) != len(rois) or len(counts) > n_images:
                raise DMMInputError(f"counts={counts} must give the number of rois ({len(rois)}) of each of the "
                                    f"maps' {n_images} images")
            return torch.cat([_box_average(feature_maps[level], rois, STRIDES[level], self.pool_size, counts)
                              for level in self.pool_levels], dim=1)
        size = self.pool_size
        if masks is None:
            raise DMMInputError("pooling='mask' needs the masks of the boxes")
        # Coverage of each pooled cell by the mask, pooled with the very same boxes.
        per_box = torch.arange(len(rois), device=rois.device, dtype=rois.dtype)
        mask_rois = torch.cat([per_box[:, None], rois[:, 1:]], dim=1)
        weights = roi_align(masks[:, None].to(rois.dtype), mask_rois, size, 1.0, SAMPLES, aligned=True)
        # An empty mask would give 0/0: fall back to the plain box average for it.
        weights = weights + 1e-6
        weights = weights / weights.sum(dim=(-1, -2), keepdim=True)
        vectors = []
        for level in self.pool_levels:
            fmap = feature_maps[level]
            dtype = torch.promote_types(fmap.dtype, rois.dtype)  # see _box_average
            pooled = roi_align(fmap.to(dtype), rois.to(dtype), size, 1.0 / STRIDES[level], SAMPLES, aligned=True)
            vectors.append((pooled * weights).sum(dim=(-1, -2)))
        return torch.cat(vectors, dim=1)


def box_average_weights(starts: torch.Tensor, ends: torch.Tensor, cells: int, pool_size: int,
                        samples: int) -> torch.Tensor:
    """Along one axis, the weight RoIAlign's box average gives each cell of the map.

    starts, ends [K]: the boxes' edges on this axis in map cells, already shifted by
    aligned=True's half cell (pixel edge x maps to x / stride - 0.5). RoIAlign splits a
    box into ``pool_size`` bins, samples ``samples`` evenly spaced points in each, and
    reads every point bilinearly; points more than one cell outside the map read 0, the
    others are clamped to it (torchvision's rules). Returns [K, cells]: the mean over the
    ``pool_size * samples`` points of their interpolation weights. The box average of
    RoIAlign is then ``sum_yx rows[k, y] * columns[k, x] * map[y, x]``, because its 2-D
    sample points are the grid of the row points and the column points.
    """
    extent = (ends - starts) / pool_size  # a bin's size (aligned=True: no minimum)
    bins = torch.arange(pool_size, device=starts.device, dtype=starts.dtype)
    offsets = torch.arange(samples, device=starts.device, dtype=starts.dtype) + 0.5
    # the same operations in the same order as torchvision's kernels, so points agree to the last bit
    points = (starts[:, None, None] + bins[None, :, None] * extent[:, None, None]
              + offsets[None, None, :] * extent[:, None, None] / samples).flatten(1)  # [K, pool_size * samples]
    inside = (points >= -1.0) & (points <= cells)
    points = points.clamp_min(0.0)
    low = points.floor()
    at_edge = low >= cells - 1
    low = torch.where(at_edge, torch.full_like(low, cells - 1), low)
    frac = torch.where(at_edge, torch.zeros_like(points), points - low)
    high = torch.where(at_edge, low, low + 1)
    grid = torch.arange(cells, device=starts.device, dtype=starts.dtype)
    on = inside.to(starts.dtype)[..., None]
    weights = on * ((1 - frac)[..., None] * (grid == low[..., None]) + frac[..., None] * (grid == high[..., None]))
    return weights.mean(dim=1)


def _box_average(fmap: torch.Tensor, rois: torch.Tensor, stride: int, pool_size: int,
                 counts: list[int]) -> torch.Tensor:
    """RoIAlign (``samples`` = 2, aligned=True) of every roi on ``fmap`` [B, C, h, w], averaged over its bins: [K, C].

    The rois are grouped image by image, ``counts[b]`` of them on image b.
    """
    # the wider of the two dtypes: bf16 maps (autocast) must not round box corners to bf16
    dtype = torch.promote_types(fmap.dtype, rois.dtype)
    boxes = rois.detach().to(dtype)  # no gradient flows through a box, as with roi_align
    height, width = fmap.shape[-2:]
    scale = 1.0 / stride
    rows = box_average_weights(boxes[:, 2] * scale - 0.5, boxes[:, 4] * scale - 0.5, height, pool_size, SAMPLES)
    columns = box_average_weights(boxes[:, 1] * scale - 0.5, boxes[:, 3] * scale - 0.5, width, pool_size, SAMPLES)
    weights = (rows[:, :, None] * columns[:, None, :]).flatten(1)  # [K, h * w]
    flat = fmap.to(dtype).flatten(2)  # [B, C, h * w]
    # in the wider dtype even under autocast, as torchvision runs roi_align (autocast would make it bf16)
    with torch.autocast(fmap.device.type, enabled=False):
        parts = [w @ flat[image].transpose(0, 1) for image, w in enumerate(weights.split(counts)) if len(w)]
    return torch.cat(parts)  # at least one roi: pool returns early for none


def masks_to_boxes(masks: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Tight boxes of masks: [..., H, W] -> [..., 4] (x1, y1, x2, y2), pixel edges.

    An empty mask gets the box (0, 0, 0, 0). No gradient flows through a box.
    """
    on = masks.detach() > threshold
    height, width = on.shape[-2:]
    rows, cols = on.any(dim=-1), on.any(dim=-2)  # [..., H], [..., W]
    ys = torch.arange(height, device=masks.device)
    xs = torch.arange(width, device=masks.device)
    big = max(height, width) + 1
    y1 = torch.where(rows, ys, big).amin(dim=-1)
    y2 = torch.where(rows, ys + 1, -1).amax(dim=-1)
    x1 = torch.where(cols, xs, big).amin(dim=-1)
    x2 = torch.where(cols, xs + 1, -1).amax(dim=-1)
    boxes = torch.stack([x1, y1, x2, y2], dim=-1).float()
    empty = ~rows.any(dim=-1)
    return torch.where(empty[..., None], torch.zeros_like(boxes), boxes)


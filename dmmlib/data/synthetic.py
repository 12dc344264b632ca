"""A synthetic video-object-segmentation benchmark with the difficulties DMM-Net targets.

Each video shows 1-5 *tracked* objects (textured shapes cut from photographs)
moving smoothly over a slowly panning photographic background, plus optional
*distractors*. Five difficulties can be switched on and tuned in
:class:`SynthConfig`, and every one that occurs is recorded in the video's
``info`` dictionary (``info["difficulty"]`` names the video's main one, ``"lookalike"``
or ``"crossing"``, see :mod:`dmmlib.data.scenes`):

* occlusion -- an occluder is steered over a tracked object and away again, so
  the occluded object's visible area drops and then recovers;
* exit / re-entry -- a tracked object leaves the frame completely (its mask is
  empty for a few frames) and comes back;
* distractors -- extra objects with the *same* texture and a similar shape as a
  tracked object but their own trajectory, so appearance alone is ambiguous and
  the IoU term of the matching cost (paper Eq. 1) has to break the tie;
* crossings -- two tracked objects of *different* texture but the same shape and
  size cross, one in front of the other, so the IoU with the previous mask is
  ambiguous and the appearance term of Eq. 1 has to decide (``"crossing"`` videos);
* appearance drift -- colour gain, brightness and texture crop change slowly over
  the video, so a template taken at frame 0 no longer matches pixel-for-pixel.

:func:`render_video` builds one video in memory; :mod:`dmmlib.data.generate`
writes a whole benchmark to disk in the DAVIS 2017 layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from dmmlib.data.photos import load_photo
from dmmlib.data.scenes import Instance, sample_scene
from dmmlib.data.synth_config import SynthConfig, synth_config_for_profile
from dmmlib.errors import DMMInputError

GENERATOR_VERSION = 2  # 2: per-video difficulty (look-alikes or a crossing pair)
SPLITS = ("train", "val")
_MAX_SCENE_ATTEMPTS = 50


@dataclass
class SyntheticVideo:
    """One rendered video.

    ``frames`` uint8 RGB ``[T, H, W, 3]``; ``labels`` uint8 ``[T, H, W]`` (0 background,
    1..K tracked objects); ``instances`` uint8 ``[T, H, W]`` (1..K tracked, K+1.. distractors);
    ``info`` a JSON-ready description of the scene and of the difficulties it contains.
    """

    frames: np.ndarray
    labels: np.ndarray
    instances: np.ndarray
    info: dict = field(default_factory=dict)


def _render_background(background: dict, fraction: float, config: SynthConfig) -> np.ndarray:
    image = load_photo(background["photo"])
    x, y = background["origin"] + fraction * background["pan"]
    crop_w, crop_h = background["crop"]
    # sub-pixel crop by an affine resample keeps the pan smooth at small frame sizes
    sx, sy = crop_w / config.width, crop_h / config.height
    matrix = np.array([[sx, 0, x + 0.5 * sx - 0.5], [0, sy, y + 0.5 * sy - 0.5]])
    frame = cv2.warpAffine(image, matrix, (config.width, config.height),
                           flags=cv2.INTER_AREA | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)
    sigma = config.background_blur * config.height / 120
    if sigma > 0:
        frame = cv2.GaussianBlur(frame, (0, 0), sigma)
    return frame + fraction * background["brightness_drift"]


def _instance_mask(instance: Instance, t: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Full (unoccluded) mask bool ``[H, W]`` of ``instance`` at frame ``t`` and its 2x2 object-to-frame matrix."""
    scale = instance.radius * instance.scales[t]
    cos, sin = np.cos(instance.angles[t]), np.sin(instance.angles[t])
    rotation = np.array([[cos, -sin], [sin, cos]]) * scale
    outline = instance.contour @ rotation.T + instance.positions[t]
    mask = np.zeros((height, width), np.uint8)
    # 4 fractional bits: outlines move smoothly rather than in whole-pixel jumps
    cv2.fillPoly(mask, [np.round(outline * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool), rotation


def _first_frame_visibility(instances: list[Instance], depth: list[int], height: int, width: int) -> np.ndarray:
    """Visible fraction ``[n]`` of each instance's full area in frame 0, after occlusion and cropping."""
    owner = np.zeros((height, width), np.int64)
    full = []
    for i in np.argsort(depth, kind="stable"):
        mask, _ = _instance_mask(instances[i], 0, height, width)
        owner[mask] = i + 1
    for i, inst in enumerate(instances):
        # area the outline would cover on an unbounded canvas: |det| of the linear map times the unit shape's area
        x, y = inst.contour[:, 0], inst.contour[:, 1]
        unit_area = 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))
        full.append(unit_area * (inst.radius * inst.scales[0]) ** 2)
    visible = np.array([(owner == i + 1).sum() for i in range(len(instances))], float)
    return visible / np.maximum(np.array(full), 1.0)


def _render_instance(instance: Instance, t: int, frame: np.ndarray, fraction: float) -> np.ndarray:
    """Paint ``instance`` at frame ``t`` over ``frame`` [H, W, 3] in place; return its full mask [H, W] bool."""
    height, width = frame.shape[:2]
    mask, rotation = _instance_mask(instance, t, height, width)
    if not mask.any():
        return mask
    rows, cols = np.nonzero(mask)
    y0, y1, x0, x1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    size = max(8, int(np.ceil(2 * instance.radius * instance.scales.max())))
    patch = instance.texture.patch(fraction, size)
    # patch pixel (u, v) -> object coords ((u, v) - c) / (size / 2) -> frame, shifted to the box
    centre = (size - 1) / 2
    linear = rotation / (size / 2)
    offset = instance.positions[t] - linear @ np.array([centre, centre]) - np.array([x0, y0])
    matrix = np.concatenate([linear, offset[:, None]], axis=1)
    painted = cv2.warpAffine(patch, matrix, (int(x1 - x0), int(y1 - y0)), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT)
    box = mask[y0:y1, x0:x1]
    frame[y0:y1, x0:x1][box] = painted[box]
    return mask


def _render_frames(background: dict, instances: list[Instance], depth: list[int], config: SynthConfig,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames uint8 ``[T, H, W, 3]``, instance maps uint8 ``[T, H, W]`` and each instance's unoccluded area ``[T, n]``."""
    T, H, W = config.frames, config.height, config.width
    frames = np.empty((T, H, W, 3), np.uint8)
    instance_maps = np.zeros((T, H, W), np.uint8)
    full_area = np.zeros((T, len(instances)), np.int64)
    back_to_front = np.argsort(depth, kind="stable")
    if config.noise > 0:
        noise_field = rng.standard_normal((2 * H, 2 * W, 3), dtype=np.float32) * np.float32(config.noise / 255.0)
    for t in range(T):
        fraction = t / (T - 1)
        canvas = _render_background(background, fraction, config)
        for i in back_to_front:
            mask = _render_instance(instances[i], t, canvas, fraction)
            full_area[t, i] = mask.sum()
            instance_maps[t][mask] = i + 1
        if config.noise > 0:
            # a random window of one per-video noise field: drawing fresh Gaussian noise for
            # every frame cost more than rendering it
            dy, dx = rng.integers(0, H + 1), rng.integers(0, W + 1)
            canvas += noise_field[dy : dy + H, dx : dx + W]
        frames[t] = np.clip(np.round(canvas * 255.0), 0, 255).astype(np.uint8)
    return frames, instance_maps, full_area


def render_video(config: SynthConfig | None = None, seed: int = 0, index: int = 0, split: str = "train") -> SyntheticVideo:
    """Render synthetic video ``index`` of ``split`` in memory, deterministically from ``seed``.

    The same (config, seed, split, index) always gives the same arrays, and each
    video depends only on these, so videos can be rendered in any order.
    Returns a :class:`SyntheticVideo` with frames ``[T, H, W, 3]`` uint8.
    """
    config = synth_config_for_profile() if config is None else config
    if split not in SPLITS:
        raise DMMInputError(f"split={split!r}; expected one of {', '.join(SPLITS)}")
    if index < 0:
        raise DMMInputError(f"index={index}; expected a video index >= 0")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), SPLITS.index(split), int(index)]))
    T, H, W = config.frames, config.height, config.width
    difficulty = config.difficulties[index % len(config.difficulties)]
    # redraw scenes in which a tracked object is mostly hidden in frame 0: frame 0's
    # annotation defines the objects, so each must be clearly given there
    for attempt in range(_MAX_SCENE_ATTEMPTS):
        background, instances, events = sample_scene(rng, config, difficulty)
        tracked = sum(1 for inst in instances if inst.lookalike_of is None)
        visible = _first_frame_visibility(instances, events["depth"], H, W)[:tracked]
        if visible.min() >= config.min_first_visible:
            break
    frames, instance_maps, full_area = _render_frames(background, instances, events["depth"], config, rng)
    labels = np.where(instance_maps <= tracked, instance_maps, 0).astype(np.uint8)
    visible_area = np.stack([(instance_maps == i + 1).sum(axis=(1, 2)) for i in range(len(instances))], axis=1)
    info = {
        "scene_attempts": attempt + 1,
        # below config.min_first_visible only if no scene in _MAX_SCENE_ATTEMPTS met it
        "first_frame_min_visible": round(float(visible.min()), 3) if tracked else None,
        "objects": tracked,
        "distractors": len(instances) - tracked,
        "frames": T,
        "background": background["photo"],
        "instances": [
            {
                "id": i + 1,
                "tracked": inst.lookalike_of is None,
                "lookalike_of": inst.lookalike_of,
                "shape": inst.shape,
                "texture": inst.texture.photo,
                "gain_drift": [round(float(g), 4) for g in inst.texture.gain_drift],
                "brightness_drift": round(inst.texture.brightness_drift, 4),
                "visible_area": visible_area[:, i].tolist(),
                "full_area": full_area[:, i].tolist(),
            }
            for i, inst in enumerate(instances)
        ],
        **events,
    }
    return SyntheticVideo(frames, labels, instance_maps, info)

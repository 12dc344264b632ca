"""A synthetic video-object-segmentation benchmark with the difficulties DMM-Net targets.

Each video shows 1-5 *tracked* objects (textured shapes cut from photographs)
moving smoothly over a slowly panning photographic background, plus optional
*distractors*. Four difficulties can be switched on and tuned in
:class:`SynthConfig`, and every one that occurs is recorded in the video's
``info`` dictionary:

* occlusion -- an occluder is steered over a tracked object and away again, so
  the occluded object's visible area drops and then recovers;
* exit / re-entry -- a tracked object leaves the frame completely (its mask is
  empty for a few frames) and comes back;
* distractors -- extra objects with the *same* texture and a similar shape as a
  tracked object but their own trajectory, so appearance alone is ambiguous and
  the IoU term of the matching cost (paper Eq. 1) has to break the tie;
* appearance drift -- colour gain, brightness and texture crop change slowly over
  the video, so a template taken at frame 0 no longer matches pixel-for-pixel.

:func:`render_video` builds one video in memory; :mod:`dmmlib.data.generate`
writes a whole benchmark to disk in the DAVIS 2017 layout.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy.interpolate import PchipInterpolator

from dmmlib.data.photos import ALL_PHOTOS, COLOUR_PHOTOS, GREY_PHOTOS, load_photo
from dmmlib.errors import DMMInputError
from dmmlib.profiles import by_profile

GENERATOR_VERSION = 1
SPLITS = ("train", "val")
_MAX_SCENE_ATTEMPTS = 50


@dataclass(frozen=True)
class SynthConfig:
    """Every size, count and probability of the synthetic benchmark.

    Lengths in pixels are derived from ``height``/``width`` so one config scales
    to any frame size. Probabilities are per video unless stated otherwise.
    """

    train_videos: int = 40
    val_videos: int = 12
    frames: int = 20
    height: int = 120
    width: int = 216
    min_objects: int = 1
    max_objects: int = 5
    # object diameter as a fraction of the frame height, drawn uniformly
    object_size: tuple[float, float] = (0.22, 0.42)
    # largest relative change of an object's scale over a video
    scale_change: float = 0.3
    # largest rotation over a video, degrees
    max_rotation: float = 90.0
    # largest displacement per frame, as a fraction of the frame width
    speed: float = 0.04
    # probability that a video contains a forced occlusion of a tracked object
    occlusion_prob: float = 0.6
    # probability, per tracked object, that it leaves the frame and comes back
    exit_prob: float = 0.25
    # probability that a video has distractors; then 1..max_distractors of them
    distractor_prob: float = 0.6
    max_distractors: int = 2
    # relative radial perturbation of a distractor's outline vs. its look-alike
    distractor_shape_jitter: float = 0.12
    # colour gain / brightness change reached at the last frame (0 disables)
    drift: float = 0.35
    # slide of the texture crop over the video, as a fraction of the crop size
    texture_drift: float = 0.3
    # background pan over the video, as a fraction of the background crop
    camera_pan: float = 0.15
    # Gaussian blur of the background (sigma, pixels at 120 px height): a shallow
    # depth of field keeps objects separable from a busy photo
    background_blur: float = 0.6
    # least visible fraction of every tracked object in frame 0 (scenes are redrawn until met)
    min_first_visible: float = 0.6
    # standard deviation of per-frame sensor noise, in 8-bit levels
    noise: float = 2.0
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        def need(ok: bool, name: str, expected: str) -> None:
            if not ok:
                raise DMMInputError(f"SynthConfig.{name}={getattr(self, name)!r}; expected {expected}")

        need(self.train_videos >= 0, "train_videos", "a count >= 0")
        need(self.val_videos >= 0, "val_videos", "a count >= 0")
        need(self.frames >= 2, "frames", "at least 2 frames per video")
        need(self.height >= 16, "height", "at least 16 pixels")
        need(self.width >= 16, "width", "at least 16 pixels")
        need(1 <= self.min_objects <= self.max_objects, "min_objects", "1 <= min_objects <= max_objects")
        need(self.max_objects + self.max_distractors <= 254, "max_objects", "at most 254 instances in all")
        low, high = self.object_size
        need(0 < low <= high <= 1.5, "object_size", "0 < low <= high <= 1.5")
        for name in ("occlusion_prob", "exit_prob", "distractor_prob"):
            need(0.0 <= getattr(self, name) <= 1.0, name, "a probability in [0, 1]")
        need(0.0 <= self.min_first_visible <= 0.95, "min_first_visible", "a fraction in [0, 0.95]")
        need(self.max_distractors >= 0, "max_distractors", "a count >= 0")
        need(1 <= self.jpeg_quality <= 100, "jpeg_quality", "1..100")
        for name in ("scale_change", "max_rotation", "speed", "distractor_shape_jitter", "drift",
                     "texture_drift", "camera_pan", "background_blur", "noise"):
            need(getattr(self, name) >= 0, name, "a value >= 0")
        need(self.scale_change < 1, "scale_change", "a value in [0, 1)")
        need(self.texture_drift <= 1 and self.camera_pan <= 1, "texture_drift", "fractions <= 1")

    def replace(self, **changes) -> "SynthConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


_PROFILE_CONFIGS = {
    "smoke": SynthConfig(train_videos=4, val_videos=2, frames=8, height=64, width=112),
    "cpu": SynthConfig(train_videos=40, val_videos=12, frames=20, height=120, width=216),
    "gpu": SynthConfig(train_videos=600, val_videos=60, frames=50, height=240, width=432),
}


def synth_config_for_profile(profile: str | None = None) -> SynthConfig:
    """The :class:`SynthConfig` preset for ``profile`` (default: ``$DMM_PROFILE``)."""
    return by_profile(_PROFILE_CONFIGS, profile)


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


@dataclass
class _Texture:
    photo: str
    tint: np.ndarray  # [3] multiplies the photo (grey photos get a colour)
    origin: np.ndarray  # [2] (x, y) of the crop in photo pixels at frame 0
    slide: np.ndarray  # [2] crop displacement reached at the last frame
    crop: int  # crop side in photo pixels
    gain_drift: np.ndarray  # [3] relative colour gain change reached at the last frame
    brightness_drift: float

    def patch(self, fraction: float, size: int) -> np.ndarray:
        """The texture at time ``fraction`` in [0, 1], resampled to ``[size, size, 3]`` float32."""
        photo = load_photo(self.photo)
        x, y = np.round(self.origin + fraction * self.slide).astype(int)
        crop = photo[y : y + self.crop, x : x + self.crop]
        patch = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA if self.crop > size else cv2.INTER_LINEAR)
        patch = patch * (self.tint * (1.0 + fraction * self.gain_drift)) + fraction * self.brightness_drift
        return np.clip(patch, 0.0, 1.0, out=patch)


@dataclass
class _Instance:
    contour: np.ndarray  # [N, 2] outline in unit object coordinates, max radius <= 1
    shape: str
    radius: float  # base radius in frame pixels
    positions: np.ndarray  # [T, 2] centre (x, y) in frame pixels
    scales: np.ndarray  # [T]
    angles: np.ndarray  # [T] radians
    texture: _Texture
    lookalike_of: int | None = None  # for a distractor: the tracked id it imitates


def _random_contour(rng: np.random.Generator, points: int = 72) -> tuple[str, np.ndarray]:
    """A random closed outline ``[points, 2]`` inside the unit disk: blob, ellipse or polygon."""
    theta = np.linspace(0.0, 2 * np.pi, points, endpoint=False)
    shape = str(rng.choice(["blob", "ellipse", "polygon"]))
    if shape == "blob":
        radius = np.ones_like(theta)
        for k in (2, 3, 4):
            radius += rng.uniform(0.0, 0.18) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
        outline = np.stack([radius * np.cos(theta), radius * np.sin(theta)], axis=1)
    elif shape == "ellipse":
        outline = np.stack([np.cos(theta), rng.uniform(0.45, 1.0) * np.sin(theta)], axis=1)
    else:
        corners = int(rng.integers(3, 8))
        angles = np.sort(rng.uniform(0, 2 * np.pi, corners)) if corners > 3 else np.arange(3) * 2 * np.pi / 3
        radii = rng.uniform(0.7, 1.0, corners)
        outline = np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
    outline = outline / np.linalg.norm(outline, axis=1).max()
    return shape, outline.astype(np.float64)


def _jitter_contour(rng: np.random.Generator, contour: np.ndarray, amount: float) -> np.ndarray:
    """A look-alike outline: ``contour`` with a smooth radial perturbation of relative size ``amount``."""
    angle = np.arctan2(contour[:, 1], contour[:, 0])
    factor = 1.0 + amount * (
        rng.uniform(-1, 1) * np.cos(2 * angle + rng.uniform(0, 2 * np.pi))
        + 0.5 * rng.uniform(-1, 1) * np.cos(3 * angle + rng.uniform(0, 2 * np.pi))
    )
    outline = contour * factor[:, None]
    return outline / np.linalg.norm(outline, axis=1).max()


def _random_texture(rng: np.random.Generator, photo: str, config: SynthConfig) -> _Texture:
    image = load_photo(photo)
    height, width = image.shape[:2]
    crop = int(rng.uniform(0.25, 0.5) * min(height, width))
    slide_len = config.texture_drift * crop
    direction = rng.normal(size=2)
    slide = direction / (np.linalg.norm(direction) + 1e-9) * slide_len
    # keep the crop inside the photo at both ends of the slide
    low = np.maximum(0, -slide)
    high = np.array([width - crop, height - crop]) - np.maximum(0, slide)
    origin = rng.uniform(low, np.maximum(low, high))
    tint = rng.uniform(0.35, 1.0, 3) if photo in GREY_PHOTOS else rng.uniform(0.8, 1.2, 3)
    gain = rng.normal(size=3)
    gain = gain / (np.linalg.norm(gain) + 1e-9) * config.drift
    brightness = rng.uniform(-0.5, 0.5) * config.drift
    return _Texture(photo, tint, origin, slide, crop, gain, float(brightness))


def _smooth_path(times: list[float], points: list[np.ndarray], frames: int) -> np.ndarray:
    """Positions ``[T, 2]`` through ``points`` at ``times``; PCHIP does not overshoot the waypoints."""
    order = np.argsort(times)
    times_sorted = np.asarray(times, float)[order]
    points_sorted = np.asarray(points, float)[order]
    return PchipInterpolator(times_sorted, points_sorted, axis=0)(np.arange(frames))


class _SceneSampler:
    """Draws one video's scene (background, instances, events) from a generator."""

    def __init__(self, rng: np.random.Generator, config: SynthConfig):
        self.rng = rng
        self.config = config
        self.T = config.frames
        self.H = config.height
        self.W = config.width

    def inside_point(self, extent: float) -> np.ndarray:
        margin_x = min(extent, self.W / 2)
        margin_y = min(extent, self.H / 2)
        return np.array([self.rng.uniform(margin_x, self.W - margin_x), self.rng.uniform(margin_y, self.H - margin_y)])

    def wander(self, start: np.ndarray, extent: float, times: list[float]) -> list[np.ndarray]:
        """Waypoints after ``start``, each within the speed limit of the previous and inside the frame."""
        points = [start]
        for previous_time, time in zip(times[:-1], times[1:]):
            step = self.config.speed * self.W * (time - previous_time)
            direction = self.rng.normal(size=2)
            direction /= np.linalg.norm(direction) + 1e-9
            candidate = points[-1] + direction * step * self.rng.uniform(0.4, 1.0)
            low = np.array([min(extent, self.W / 2), min(extent, self.H / 2)])
            high = np.array([self.W, self.H]) - low
            points.append(np.clip(candidate, low, high))
        return points

    def motion(self, radius: float) -> tuple[np.ndarray, np.ndarray]:
        """Per-frame scales ``[T]`` and angles ``[T]`` changing linearly."""
        change = self.config.scale_change
        scales = np.linspace(1.0, self.rng.uniform(1 - change, 1 + change), self.T)
        turn = np.deg2rad(self.rng.uniform(-1, 1) * self.config.max_rotation)
        angles = self.rng.uniform(0, 2 * np.pi) + np.linspace(0.0, turn, self.T)
        return scales, angles

    def free_path(self, extent: float) -> np.ndarray:
        waypoints = max(2, min(5, 1 + self.T // 6))
        times = list(np.linspace(0, self.T - 1, waypoints))
        return _smooth_path(times, self.wander(self.inside_point(extent), extent, times), self.T)

    def exit_path(self, extent: float, scales: np.ndarray) -> tuple[np.ndarray, int]:
        """A path that is fully outside the frame at a middle frame and back inside at the end."""
        exit_time = int(self.rng.integers(2, self.T - 2))
        start = self.inside_point(extent)
        # leave through the border nearest to the start, so the motion stays plausible
        distances = [start[0], self.W - start[0], start[1], self.H - start[1]]
        side = int(np.argmin(distances))
        outside_by = extent * scales[exit_time] / scales.max() + 2.0
        outside = start.copy()
        outside[side // 2] = -outside_by if side % 2 == 0 else (self.W, self.H)[side // 2] + outside_by
        end = self.inside_point(extent)
        end[side // 2] = start[side // 2]
        return _smooth_path([0, exit_time, self.T - 1], [start, outside, end], self.T), exit_time

    def far_point(self, extent: float, avoid: np.ndarray, tries: int = 8) -> np.ndarray:
        candidates = [self.inside_point(extent) for _ in range(tries)]
        return max(candidates, key=lambda p: float(np.linalg.norm(p - avoid)))


def _sample_scene(rng: np.random.Generator, config: SynthConfig) -> tuple[dict, list[_Instance], dict]:
    """Background description, instances (tracked first, then distractors) and event records."""
    sampler = _SceneSampler(rng, config)
    T, H, W = sampler.T, sampler.H, sampler.W
    background_photo = str(rng.choice(COLOUR_PHOTOS))
    texture_pool = [p for p in ALL_PHOTOS if p != background_photo]
    count = int(rng.integers(config.min_objects, config.max_objects + 1))
    # distinct photos for the tracked objects keep them apart by appearance; only
    # distractors share a tracked object's texture
    photos = rng.choice(texture_pool, size=count, replace=count > len(texture_pool))

    instances: list[_Instance] = []
    exits: list[dict] = []
    for index in range(count):
        shape, contour = _random_contour(rng)
        radius = rng.uniform(*config.object_size) * H / 2
        scales, angles = sampler.motion(radius)
        extent = radius * scales.max()
        if T >= 5 and rng.random() < config.exit_prob:
            positions, exit_time = sampler.exit_path(extent, scales)
            exits.append({"object": index + 1, "frame": exit_time})
        else:
            positions = sampler.free_path(extent)
        texture = _random_texture(rng, str(photos[index]), config)
        instances.append(_Instance(contour, shape, radius, positions, scales, angles, texture))

    lookalikes: list[dict] = []
    if config.max_distractors > 0 and rng.random() < config.distractor_prob:
        for _ in range(int(rng.integers(1, config.max_distractors + 1))):
            target_index = int(rng.integers(count))
            target = instances[target_index]
            contour = _jitter_contour(rng, target.contour, config.distractor_shape_jitter)
            radius = target.radius * rng.uniform(0.85, 1.15)
            scales, angles = sampler.motion(radius)
            texture = dataclasses.replace(target.texture, origin=target.texture.origin.copy())
            positions = sampler.free_path(radius * scales.max())
            instances.append(_Instance(contour, target.shape, radius, positions, scales, angles, texture,
                                       lookalike_of=target_index + 1))
            lookalikes.append({"id": len(instances), "lookalike_of": target_index + 1})

    depth = list(rng.permutation(len(instances)))  # depth[i]: larger is nearer the camera
    occlusions: list[dict] = []
    exiting = {e["object"] - 1 for e in exits}
    stay = [i for i in range(count) if i not in exiting]
    if T >= 5 and stay and rng.random() < config.occlusion_prob:
        occluded = int(rng.choice(stay))
        others = [i for i in range(len(instances)) if i != occluded and i not in exiting]
        if others:
            occluder = int(rng.choice(others))
            time = int(rng.integers(2, T - 2))
            target = instances[occluded]
            mover = instances[occluder]
            # the occluder must be big enough to hide most of the occluded object
            mover.radius = max(mover.radius, 1.2 * target.radius * target.scales[time] / mover.scales[time])
            extent = mover.radius * mover.scales.max()
            start = sampler.far_point(extent, target.positions[0])
            end = sampler.far_point(extent, target.positions[-1])
            mover.positions = _smooth_path([0, time, T - 1], [start, target.positions[time], end], T)
            if depth[occluder] < depth[occluded]:
                depth[occluder], depth[occluded] = depth[occluded], depth[occluder]
            occlusions.append({"occluder": occluder + 1, "occluded": occluded + 1, "frame": time})

    background = _sample_background(rng, background_photo, config)
    events = {"exits": exits, "occlusions": occlusions, "lookalikes": lookalikes, "depth": [int(d) for d in depth]}
    return background, instances, events


def _sample_background(rng: np.random.Generator, photo: str, config: SynthConfig) -> dict:
    image = load_photo(photo)
    photo_h, photo_w = image.shape[:2]
    aspect = config.width / config.height
    crop_h = min(photo_h * rng.uniform(0.55, 0.85), photo_w * 0.85 / aspect)
    crop_w = crop_h * aspect
    pan = rng.normal(size=2)
    pan = pan / (np.linalg.norm(pan) + 1e-9) * config.camera_pan * crop_w
    low = np.maximum(0, -pan)
    high = np.array([photo_w - crop_w, photo_h - crop_h]) - np.maximum(0, pan)
    origin = rng.uniform(low, np.maximum(low, high))
    return {
        "photo": photo,
        "origin": origin,
        "pan": pan,
        "crop": (crop_w, crop_h),
        "brightness_drift": float(rng.uniform(-0.5, 0.5) * config.drift),
    }


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


def _instance_mask(instance: _Instance, t: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Full (unoccluded) mask bool ``[H, W]`` of ``instance`` at frame ``t`` and its 2x2 object-to-frame matrix."""
    scale = instance.radius * instance.scales[t]
    cos, sin = np.cos(instance.angles[t]), np.sin(instance.angles[t])
    rotation = np.array([[cos, -sin], [sin, cos]]) * scale
    outline = instance.contour @ rotation.T + instance.positions[t]
    mask = np.zeros((height, width), np.uint8)
    # 4 fractional bits: outlines move smoothly rather than in whole-pixel jumps
    cv2.fillPoly(mask, [np.round(outline * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool), rotation


def _first_frame_visibility(instances: list[_Instance], depth: list[int], height: int, width: int) -> np.ndarray:
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


def _render_instance(instance: _Instance, t: int, frame: np.ndarray, fraction: float) -> np.ndarray:
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
    # redraw scenes in which a tracked object is mostly hidden in frame 0: frame 0's
    # annotation defines the objects, so each must be clearly given there
    for attempt in range(_MAX_SCENE_ATTEMPTS):
        background, instances, events = _sample_scene(rng, config)
        tracked = sum(1 for inst in instances if inst.lookalike_of is None)
        visible = _first_frame_visibility(instances, events["depth"], H, W)[:tracked]
        if visible.min() >= config.min_first_visible:
            break
    frames = np.empty((T, H, W, 3), np.uint8)
    instance_maps = np.zeros((T, H, W), np.uint8)
    full_area = np.zeros((T, len(instances)), np.int64)
    back_to_front = np.argsort(events["depth"], kind="stable")
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

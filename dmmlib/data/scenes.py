"""Drawing one synthetic video's scene: its objects, their paths, textures and events.

:func:`sample_scene` decides *what happens* in a video (which objects, where they move,
who occludes whom, which look-alike distractors appear, which two objects cross);
:mod:`dmmlib.data.synthetic` renders it. Everything draws from one
``numpy.random.Generator``, so a scene is a pure function of the generator's state.

Each video has one *difficulty* (:data:`DIFFICULTIES`), the thing that makes matching hard:

* ``"lookalike"`` -- distractors with the *same* texture and a similar shape as a tracked
  object (:func:`_add_lookalikes`): appearance cannot tell them apart, the IoU with the
  previous mask (Eq. 1) must;
* ``"crossing"`` -- two tracked objects of *different* texture but the same shape and
  size whose paths cross, one passing in front of the other (:func:`_add_crossing`): around
  the crossing the previous mask of one overlaps the other as much as itself, so the IoU
  term is ambiguous and the appearance (cosine) term of Eq. 1 must decide.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.interpolate import PchipInterpolator

from dmmlib.data.photos import ALL_PHOTOS, COLOUR_PHOTOS, GREY_PHOTOS, load_photo
from dmmlib.data.synth_config import DIFFICULTIES, SynthConfig


@dataclass
class Texture:
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
class Instance:
    contour: np.ndarray  # [N, 2] outline in unit object coordinates, max radius <= 1
    shape: str
    radius: float  # base radius in frame pixels
    positions: np.ndarray  # [T, 2] centre (x, y) in frame pixels
    scales: np.ndarray  # [T]
    angles: np.ndarray  # [T] radians
    texture: Texture
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


def _random_texture(rng: np.random.Generator, photo: str, config: SynthConfig) -> Texture:
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
    return Texture(photo, tint, origin, slide, crop, gain, float(brightness))


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


def _tracked_instances(sampler: _SceneSampler, photos) -> tuple[list[Instance], list[dict]]:
    """The tracked objects, one per photo (textures distinct, so appearance separates them), and their exits."""
    rng, config = sampler.rng, sampler.config
    instances, exits = [], []
    for index, photo in enumerate(photos):
        shape, contour = _random_contour(rng)
        radius = rng.uniform(*config.object_size) * sampler.H / 2
        scales, angles = sampler.motion(radius)
        extent = radius * scales.max()
        if sampler.T >= 5 and rng.random() < config.exit_prob:
            positions, exit_time = sampler.exit_path(extent, scales)
            exits.append({"object": index + 1, "frame": exit_time})
        else:
            positions = sampler.free_path(extent)
        texture = _random_texture(rng, str(photo), config)
        instances.append(Instance(contour, shape, radius, positions, scales, angles, texture))
    return instances, exits


def _add_lookalikes(sampler: _SceneSampler, instances: list[Instance], count: int) -> list[dict]:
    """Append distractors (with the texture and a jittered shape of a tracked object) to ``instances``."""
    rng, config = sampler.rng, sampler.config
    lookalikes: list[dict] = []
    if config.max_distractors == 0 or rng.random() >= config.distractor_prob:
        return lookalikes
    for _ in range(int(rng.integers(1, config.max_distractors + 1))):
        target_index = int(rng.integers(count))
        target = instances[target_index]
        contour = _jitter_contour(rng, target.contour, config.distractor_shape_jitter)
        radius = target.radius * rng.uniform(0.85, 1.15)
        scales, angles = sampler.motion(radius)
        texture = dataclasses.replace(target.texture, origin=target.texture.origin.copy())
        positions = sampler.free_path(radius * scales.max())
        instances.append(Instance(contour, target.shape, radius, positions, scales, angles, texture,
                                  lookalike_of=target_index + 1))
        lookalikes.append({"id": len(instances), "lookalike_of": target_index + 1})
    return lookalikes


def _add_crossing(sampler: _SceneSampler, instances: list[Instance]) -> list[dict]:
    """Make tracked objects 1 and 2 a crossing pair; return the crossing event.

    Object 2 takes object 1's outline (jittered like a look-alike's) and a radius within
    ``crossing_size_jitter`` of it, but keeps its own texture. Their paths pass through
    nearly the same point at a middle frame (offset by at most ``crossing_offset`` radii),
    coming from roughly opposite sides; the depth order decides which one passes in front.
    """
    rng, config, T = sampler.rng, sampler.config, sampler.T
    first, second = instances[0], instances[1]
    second.contour = _jitter_contour(rng, first.contour, config.distractor_shape_jitter)
    second.shape = first.shape
    second.radius = first.radius * rng.uniform(1 - config.crossing_size_jitter, 1 + config.crossing_size_jitter)
    second.scales = first.scales * rng.uniform(0.97, 1.03)
    time = min(int(rng.integers(max(1, T // 3), max(2, (2 * T) // 3 + 1))), T - 2)  # 0 < time < T - 1
    extent = max(first.radius * first.scales.max(), second.radius * second.scales.max())
    centre = sampler.inside_point(extent)
    heading = rng.uniform(0, 2 * np.pi)
    turn = heading + np.pi + np.deg2rad(rng.uniform(-60, 60))
    normal = np.array([-np.sin(heading), np.cos(heading)])
    offset = normal * rng.uniform(-1, 1) * config.crossing_offset * first.radius
    low = np.array([min(extent, sampler.W / 2), min(extent, sampler.H / 2)])
    high = np.array([sampler.W, sampler.H]) - low
    for instance, angle, meet in ((first, heading, centre), (second, turn, np.clip(centre + offset, low, high))):
        step = config.speed * sampler.W * rng.uniform(0.6, 1.0)
        direction = np.array([np.cos(angle), np.sin(angle)])
        start = np.clip(meet - direction * step * time, low, high)
        end = np.clip(meet + direction * step * (T - 1 - time), low, high)
        instance.positions = _smooth_path([0, time, T - 1], [start, meet, end], T)
    front = int(rng.integers(1, 3))
    return [{"objects": [1, 2], "frame": time, "front": front}]


def _force_occlusion(sampler: _SceneSampler, instances: list[Instance], count: int, exits: list[dict],
                     depth: list[int]) -> list[dict]:
    """Maybe steer one object over a tracked one at a middle frame (and in front of it); the event, if any."""
    rng, T = sampler.rng, sampler.T
    exiting = {e["object"] - 1 for e in exits}
    stay = [i for i in range(count) if i not in exiting]
    if T < 5 or not stay or rng.random() >= sampler.config.occlusion_prob:
        return []
    occluded = int(rng.choice(stay))
    others = [i for i in range(len(instances)) if i != occluded and i not in exiting]
    if not others:
        return []
    occluder = int(rng.choice(others))
    time = int(rng.integers(2, T - 2))
    target, mover = instances[occluded], instances[occluder]
    # the occluder must be big enough to hide most of the occluded object
    mover.radius = max(mover.radius, 1.2 * target.radius * target.scales[time] / mover.scales[time])
    extent = mover.radius * mover.scales.max()
    start = sampler.far_point(extent, target.positions[0])
    end = sampler.far_point(extent, target.positions[-1])
    mover.positions = _smooth_path([0, time, T - 1], [start, target.positions[time], end], T)
    if depth[occluder] < depth[occluded]:
        depth[occluder], depth[occluded] = depth[occluded], depth[occluder]
    return [{"occluder": occluder + 1, "occluded": occluded + 1, "frame": time}]


def sample_scene(rng: np.random.Generator, config: SynthConfig,
                 difficulty: str = "lookalike") -> tuple[dict, list[Instance], dict]:
    """Background description, instances (tracked first, then distractors) and event records.

    ``difficulty`` (one of :data:`DIFFICULTIES`) decides what makes the video hard: look-alike
    distractors, or a crossing pair of tracked objects (then no look-alikes and no forced occlusion).
    """
    sampler = _SceneSampler(rng, config)
    background_photo = str(rng.choice(COLOUR_PHOTOS))
    texture_pool = [p for p in ALL_PHOTOS if p != background_photo]
    crossing = difficulty == "crossing"
    low = max(2, config.min_objects) if crossing else config.min_objects
    count = int(rng.integers(low, max(low, config.max_objects) + 1))
    # distinct photos for the tracked objects keep them apart by appearance; only
    # distractors share a tracked object's texture
    photos = rng.choice(texture_pool, size=count, replace=count > len(texture_pool))
    instances, exits = _tracked_instances(sampler, photos)
    if crossing:
        lookalikes, occlusions = [], []
        exits = [e for e in exits if e["object"] > 2]  # the crossing pair stays in view
        crossings = _add_crossing(sampler, instances)
        depth = list(rng.permutation(len(instances)))
        front = crossings[0]["front"] - 1
        behind = 1 - front
        if depth[front] < depth[behind]:
            depth[front], depth[behind] = depth[behind], depth[front]
    else:
        lookalikes = _add_lookalikes(sampler, instances, count)
        crossings = []
        depth = list(rng.permutation(len(instances)))  # depth[i]: larger is nearer the camera
        occlusions = _force_occlusion(sampler, instances, count, exits, depth)
    background = _sample_background(rng, background_photo, config)
    events = {"difficulty": difficulty, "exits": exits, "occlusions": occlusions, "lookalikes": lookalikes,
              "crossings": crossings, "depth": [int(d) for d in depth]}
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

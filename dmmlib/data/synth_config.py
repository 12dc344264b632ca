"""The settings of the synthetic benchmark: :class:`SynthConfig` and its per-profile presets.

Every size, count and probability of :mod:`dmmlib.data.synthetic` lives here; the
presets (:func:`synth_config_for_profile`) size the benchmark each profile builds.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from dmmlib.errors import DMMInputError
from dmmlib.profiles import by_profile

#: What makes a video hard (see :mod:`dmmlib.data.scenes`): look-alike distractors of a tracked
#: object (appearance cannot decide, the IoU with the previous mask must), or two tracked objects
#: of different appearance and the same shape crossing (the IoU is ambiguous, appearance must decide).
DIFFICULTIES = ("lookalike", "crossing")


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
    # the difficulty of video i is difficulties[i % len(difficulties)] (one of DIFFICULTIES)
    difficulties: tuple[str, ...] = ("lookalike",)
    # crossing pair: largest relative size difference, and largest offset of the two paths at
    # the crossing, in radii of the first object
    crossing_size_jitter: float = 0.1
    crossing_offset: float = 0.5
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
        need(len(self.difficulties) >= 1 and set(self.difficulties) <= set(DIFFICULTIES), "difficulties",
             f"a non-empty tuple of {DIFFICULTIES}")
        need("crossing" not in self.difficulties or (self.frames >= 3 and self.max_objects >= 2), "difficulties",
             "'crossing' only with frames >= 3 and max_objects >= 2")
        need(0 <= self.crossing_size_jitter < 1 and self.crossing_offset >= 0, "crossing_size_jitter",
             "a fraction in [0, 1) (and crossing_offset >= 0)")
        need(self.texture_drift <= 1 and self.camera_pan <= 1, "texture_drift", "fractions <= 1")

    def replace(self, **changes) -> "SynthConfig":
        """A copy with some fields changed (validated again)."""
        if isinstance(changes.get("difficulties"), list):
            changes["difficulties"] = tuple(changes["difficulties"])
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


# Every preset alternates the two difficulties (even videos: look-alikes, odd videos: a crossing),
# and every look-alike video has at least one look-alike (distractor_prob 1).
_BOTH = {"difficulties": DIFFICULTIES, "distractor_prob": 1.0}
_PROFILE_CONFIGS = {
    "smoke": SynthConfig(train_videos=4, val_videos=2, frames=8, height=64, width=112, **_BOTH),
    "cpu": SynthConfig(train_videos=40, val_videos=12, frames=20, height=120, width=216, **_BOTH),
    "gpu": SynthConfig(train_videos=600, val_videos=60, frames=50, height=240, width=432, **_BOTH),
}


def synth_config_for_profile(profile: str | None = None) -> SynthConfig:
    """The :class:`SynthConfig` preset for ``profile`` (default: ``$DMM_PROFILE``)."""
    return by_profile(_PROFILE_CONFIGS, profile)

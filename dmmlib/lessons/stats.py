"""Paired comparisons of two rows of a table, with an uncertainty that covers seeds *and* videos.

Two rows of Table 4 (chapter 9) are run on the same val videos with the same seeds, so
they are compared *paired*: for seed ``s`` and video ``v`` the difference of their scores,
summed over the video's objects, ``D[s, v]``, with ``n[v]`` objects. The estimate is the
DAVIS-style mean over all objects and seeds,

    d = sum_{s, v} D[s, v] / (S * sum_v n[v]),

and its uncertainty comes from a two-way bootstrap: seeds and videos are drawn with
replacement, independently, and ``d`` is recomputed on each draw. Drawing videos covers
the video-to-video variation (a new benchmark of the same kind); drawing seeds covers the
training randomness (initial weights, clips, augmentation). With one seed only the videos
are drawn. :func:`paired_bootstrap` returns the mean, the bootstrap standard error and a
percentile interval; its half-width is the smallest effect the comparison can resolve.

This is statistics only: the *verdict rule* built on it (which claim holds, when two rows
perform alike) is the report card's (chapter 11).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dmmlib.errors import DMMInputError


@dataclass(frozen=True)
class PairedEstimate:
    """A paired difference (in the units of the scores): ``mean``, bootstrap ``se``, the ``level``
    interval ``[low, high]``, and the numbers of seeds, videos and objects behind it."""

    mean: float
    se: float
    low: float
    high: float
    level: float
    n_seeds: int
    n_videos: int
    n_objects: int

    @property
    def half_width(self) -> float:
        """Half the interval's width: differences smaller than this cannot be told from zero."""
        return (self.high - self.low) / 2


def paired_bootstrap(differences: np.ndarray, counts: np.ndarray, n_boot: int = 4000, seed: int = 0,
                     level: float = 0.95) -> PairedEstimate:
    """Bootstrap a paired difference over seeds and videos (see the module docstring).

    ``differences`` ``[S, V]``: per seed and video, the sum over the video's objects of
    (row - reference); ``counts`` ``[V]``: objects per video. Returns a :class:`PairedEstimate`.
    """
    differences = np.asarray(differences, dtype=float)
    counts = np.asarray(counts, dtype=float)
    if differences.ndim != 2 or counts.shape != (differences.shape[1],) or differences.size == 0:
        raise DMMInputError(f"paired_bootstrap: differences must be [S, V] and counts [V]; "
                            f"got {differences.shape} and {counts.shape}")
    if not np.all(np.isfinite(differences)) or counts.min() < 0 or counts.sum() <= 0:
        raise DMMInputError("paired_bootstrap: differences must be finite and counts non-negative with a positive sum")
    n_seeds, n_videos = differences.shape
    mean = float(differences.sum() / (n_seeds * counts.sum()))
    rng = np.random.default_rng(seed)
    videos = rng.integers(0, n_videos, size=(n_boot, n_videos))
    seeds = rng.integers(0, n_seeds, size=(n_boot, n_seeds)) if n_seeds > 1 else np.zeros((n_boot, 1), int)
    per_video = differences[seeds]  # [n_boot, S, V]: the drawn seeds
    totals = np.take_along_axis(per_video.sum(axis=1), videos, axis=1).sum(axis=1)  # [n_boot]
    objects = counts[videos].sum(axis=1) * n_seeds
    draws = totals / np.maximum(objects, 1e-12)
    tail = (1 - level) / 2
    low, high = np.quantile(draws, [tail, 1 - tail])
    return PairedEstimate(mean, float(draws.std(ddof=1)), float(low), float(high), level, n_seeds, n_videos,
                          int(counts.sum()))

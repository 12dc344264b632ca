"""Paired comparisons of two rows of a table, with an uncertainty that covers seeds *and* videos.

Two rows of Table 4 (chapter 9) are run on the same val videos with the same seeds, so
they are compared *paired*: for seed ``s`` and video ``v`` the difference of their scores,
summed over the video's objects, ``D[s, v]``, with ``n[v]`` objects. The estimate is the
DAVIS-style mean over all objects and seeds,

    d = sum_{s, v} D[s, v] / (S * sum_v n[v]).

``d`` is a ratio (videos hold different numbers of objects); its uncertainty is that of the
mean of the linearised cells ``y[s, v] = (D[s, v] - d * n[v]) / nbar`` (``nbar``: the mean number
of objects per video), the usual treatment of a ratio estimator. Seeds and videos are both
random draws (a new training run; a new benchmark of the same kind), so ``y`` follows the
two-way crossed random-effects model ``y[s, v] = mu + a[s] + b[v] + e[s, v]``, one observation
per cell. From its mean squares (seeds ``MS_S``, videos ``MS_V``, residual ``MS_E``), the variance
of the mean is estimated without bias by

    Var(d) = (MS_S + MS_V - MS_E) / (S * V),

with Satterthwaite's degrees of freedom for that combination of mean squares, and the
interval is ``d +- t_{df} * se``. A seed effect common to every video (a lucky seed) is
therefore counted with its own ``S - 1`` degrees of freedom, not hidden among the videos.
With one seed the model reduces to the paired t interval over videos (``V - 1`` degrees of
freedom). :func:`paired_difference` returns a :class:`PairedEstimate`; its half-width is the
smallest effect the comparison can resolve.

This is statistics only: the verdict rule built on it (when two rows perform alike, when a
claim reproduces) is :mod:`dmmlib.lessons.verdicts`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

from dmmlib.errors import DMMInputError


@dataclass(frozen=True)
class PairedEstimate:
    """A paired difference (in the units of the scores): ``mean``, standard error ``se``, the ``level``
    interval ``[low, high]`` with ``df`` degrees of freedom, and the numbers of seeds, videos and objects."""

    mean: float
    se: float
    low: float
    high: float
    level: float
    n_seeds: int
    n_videos: int
    n_objects: int
    df: float = float("nan")

    @property
    def half_width(self) -> float:
        """Half the interval's width: differences smaller than this cannot be told from zero."""
        return (self.high - self.low) / 2

    def text(self, unit: str = "J&F points", digits: int = 1) -> str:
        """``"+1.2 J&F points [-0.3, +2.7]"``: the mean and its interval (see :func:`interval_text`)."""
        return interval_text(self.mean, self.low, self.high, unit, digits)

    def scaled(self, factor: float) -> "PairedEstimate":
        """The same estimate in other units (``factor`` > 0, e.g. 100 for points)."""
        return PairedEstimate(factor * self.mean, factor * self.se, factor * self.low, factor * self.high,
                              self.level, self.n_seeds, self.n_videos, self.n_objects, self.df)


def interval_text(mean: float, low: float, high: float, unit: str = "J&F points", digits: int = 1) -> str:
    """How the book writes a difference and its interval: ``"+1.2 J&F points [-0.3, +2.7]"``.

    Without an interval (NaN bounds: one video) ``"+1.2 J&F points (one video: no interval)"``;
    ``unit=""`` leaves the unit out.
    """
    number = f"{mean:+.{digits}f}" + (f" {unit}" if unit else "")
    if not (np.isfinite(low) and np.isfinite(high)):
        return f"{number} (one video: no interval)"
    return f"{number} [{low:+.{digits}f}, {high:+.{digits}f}]"


def no_estimate(n_seeds: int = 0) -> PairedEstimate:
    """The estimate of an empty comparison (no video of a difficulty): every figure NaN."""
    nan = float("nan")
    return PairedEstimate(nan, nan, nan, nan, 0.95, n_seeds, 0, 0)


def mean_without_interval(differences: np.ndarray, counts: np.ndarray, level: float = 0.95) -> PairedEstimate:
    """The object-weighted mean of a comparison on one video: no interval can be formed (NaN).

    ``differences`` ``[S, 1]`` and ``counts`` ``[1]`` as in :func:`paired_difference`.
    """
    differences, counts = np.asarray(differences, dtype=float), np.asarray(counts, dtype=float)
    nan = float("nan")
    return PairedEstimate(_object_weighted_mean(differences, counts), nan, nan, nan, level, differences.shape[0],
                          differences.shape[1], int(counts.sum()))


def _object_weighted_mean(differences: np.ndarray, counts: np.ndarray) -> float:
    return float(differences.sum() / (differences.shape[0] * counts.sum()))


def _variance_of_mean(cells: np.ndarray) -> tuple[float, float]:
    """Variance of the mean of ``cells`` [S, V] under the two-way random-effects model, and its df."""
    n_seeds, n_videos = cells.shape
    if n_seeds == 1:
        return float(cells[0].var(ddof=1) / n_videos), float(n_videos - 1)
    grand = cells.mean()
    seed_means, video_means = cells.mean(axis=1), cells.mean(axis=0)
    ms_seeds = n_videos * np.sum((seed_means - grand) ** 2) / (n_seeds - 1)
    ms_videos = n_seeds * np.sum((video_means - grand) ** 2) / (n_videos - 1)
    residual = cells - seed_means[:, None] - video_means[None, :] + grand
    df_residual = (n_seeds - 1) * (n_videos - 1)
    ms_residual = np.sum(residual ** 2) / df_residual
    combined = ms_seeds + ms_videos - ms_residual
    if combined <= ms_residual:  # negative variance components: no more than the residual noise is known
        return float(ms_residual / cells.size), float(df_residual)
    denominator = ms_seeds ** 2 / (n_seeds - 1) + ms_videos ** 2 / (n_videos - 1) + ms_residual ** 2 / df_residual
    return float(combined / cells.size), float(combined ** 2 / denominator)


def paired_difference(differences: np.ndarray, counts: np.ndarray, level: float = 0.95) -> PairedEstimate:
    """The paired difference over seeds and videos with its t interval (see the module docstring).

    ``differences`` ``[S, V]``: per seed and video, the sum over the video's objects of
    (row - reference); ``counts`` ``[V]``: objects per video. Needs at least two videos.
    """
    differences = np.asarray(differences, dtype=float)
    counts = np.asarray(counts, dtype=float)
    if differences.ndim != 2 or counts.shape != (differences.shape[1],) or differences.shape[1] < 2:
        raise DMMInputError(f"paired_difference: differences must be [S, V] with V >= 2 videos and counts [V]; "
                            f"got {differences.shape} and {counts.shape}")
    if not np.all(np.isfinite(differences)) or counts.min() < 0 or counts.sum() <= 0:
        raise DMMInputError("paired_difference: differences must be finite and counts non-negative with a positive sum")
    n_seeds, n_videos = differences.shape
    mean = _object_weighted_mean(differences, counts)
    variance, df = _variance_of_mean((differences - mean * counts) / counts.mean())
    se = float(np.sqrt(max(variance, 0.0)))
    half = float(scipy_stats.t.ppf(0.5 + level / 2, df)) * se if se > 0 else 0.0
    return PairedEstimate(mean, se, mean - half, mean + half, level, n_seeds, n_videos, int(counts.sum()), df)

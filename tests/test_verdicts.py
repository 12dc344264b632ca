"""dmmlib.lessons.verdicts: one rule for every paired comparison of the report card."""

import numpy as np
import pytest

from dmmlib.lessons.stats import PairedEstimate, paired_difference
from dmmlib.lessons.verdicts import MINIMAL_EFFECT, outcome, point_outcome, verdict


def simulated(mean: float, video_sd: float, n_videos: int = 24, n_seeds: int = 3, seed: int = 0) -> PairedEstimate:
    """A paired J&F difference (points) over seeds and videos, one object per video."""
    rng = np.random.default_rng(seed)
    cells = mean + rng.normal(0, video_sd, size=(1, n_videos)) + rng.normal(0, 0.1 * video_sd, size=(n_seeds, n_videos))
    return paired_difference(cells, np.ones(n_videos))


@pytest.mark.parametrize("mean, video_sd, expected", [
    (4.0, 1.0, "better"),         # a large effect, measured precisely
    (-4.0, 1.0, "worse"),
    (0.2, 0.3, "alike"),          # a difference that is real but smaller than the minimal effect
    (-0.25, 0.3, "alike"),        # ... on either side: the rule is symmetric
    (0.5, 8.0, "inconclusive"),   # too noisy to tell
])
def test_outcomes_on_synthetic_paired_differences(mean, video_sd, expected):
    assert outcome(simulated(mean, video_sd)) == expected


def test_a_significant_but_tiny_difference_is_alike_on_both_sides():
    """The rule that scored +0.25 +- 0.02 'alike' and -0.035 +- 0.017 'worse' is gone: both are alike."""
    def estimate(mean, half):
        return PairedEstimate(mean, half / 2, mean - half, mean + half, 0.95, 3, 12, 30, 20)

    assert outcome(estimate(0.25, 0.04)) == outcome(estimate(-0.035, 0.034)) == "alike"
    assert outcome(estimate(1.5, 0.4)) == "better" and outcome(estimate(-1.5, 0.4)) == "worse"
    # a significant difference that may or may not matter is reported by its sign
    assert outcome(estimate(0.9, 0.4)) == "better"
    assert outcome(estimate(0.0, MINIMAL_EFFECT + 0.1)) == "inconclusive"
    assert outcome(PairedEstimate(*(float("nan"),) * 4, 0.95, 1, 1, 1)) == "inconclusive"


def test_the_same_threshold_for_every_row():
    """The rule has no per-row argument: a comparison's verdict depends only on its interval and expectation."""
    for mean in np.linspace(-3, 3, 13):
        e = PairedEstimate(mean, 0.1, mean - 0.2, mean + 0.2, 0.95, 3, 12, 30, 20)
        assert outcome(e) == point_outcome(mean) or abs(abs(mean) - MINIMAL_EFFECT) < 0.2


def test_verdicts_follow_the_expected_outcome():
    assert verdict("better", "better") == "reproduces"
    assert verdict("alike", "better") == "does not reproduce"
    assert verdict("worse", "better") == "does not reproduce"
    assert verdict("inconclusive", "better") == "inconclusive"
    assert verdict("alike", "alike") == "reproduces"
    assert verdict("better", "alike") == "does not reproduce"
    assert verdict("alike", "not better") == verdict("worse", "not better") == "reproduces"
    assert verdict("better", "not better") == "does not reproduce"
    with pytest.raises(ValueError, match="expected one of"):
        verdict("better", "higher")


def test_the_papers_own_differences_under_the_rule():
    assert point_outcome(0.2) == "alike"   # the paper's layer - greedy (57.3 - 57.1 J_M)
    assert point_outcome(1.7) == "better"  # fine-tuned unroll 2 - frozen layer
    assert point_outcome(-0.8) == "alike"  # unroll 3 - unroll 2

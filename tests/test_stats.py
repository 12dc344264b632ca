"""dmmlib.lessons.stats: paired differences over seeds and videos (two-way random effects, t interval)."""

import numpy as np
import pytest
from scipy import stats as scipy_stats

from dmmlib.errors import DMMInputError
from dmmlib.lessons.stats import interval_text, mean_without_interval, paired_difference


def test_constant_differences_have_no_uncertainty():
    counts = np.array([1, 2, 3])
    est = paired_difference(np.full((3, 3), 0.5) * counts, counts)  # every object: +0.5
    assert est.mean == pytest.approx(0.5) and est.se == pytest.approx(0.0, abs=1e-12)
    assert est.low == pytest.approx(0.5) and est.high == pytest.approx(0.5)
    assert (est.n_seeds, est.n_videos, est.n_objects) == (3, 3, 6)


def test_mean_is_the_object_weighted_mean_over_seeds():
    differences = np.array([[1.0, 4.0], [3.0, 0.0]])  # sums over objects
    counts = np.array([1, 3])
    assert paired_difference(differences, counts).mean == pytest.approx(8.0 / (2 * 4))


def test_one_seed_is_the_paired_t_interval_over_videos():
    videos = np.array([0.3, -0.1, 0.8, 0.4, 0.0, 0.6])
    est = paired_difference(videos[None, :], np.ones(6))
    reference = scipy_stats.ttest_1samp(videos, 0.0).confidence_interval(0.95)
    assert est.df == 5 and est.low == pytest.approx(reference.low) and est.high == pytest.approx(reference.high)


def test_two_way_variance_by_hand():
    # 2 seeds x 3 videos, one object each; mean squares computed by hand:
    # grand 2, seed means (1, 3) -> MS_S = 3 * (1 + 1) / 1 = 6; video means (1, 2, 3) -> MS_V = 2 * 2 / 2 = 2;
    # no interaction -> MS_E = 0; Var = (6 + 2 - 0) / 6; Satterthwaite df = 8^2 / (36 / 1 + 4 / 2) = 64 / 38.
    cells = np.array([[0.0, 1.0, 2.0], [2.0, 3.0, 4.0]])
    est = paired_difference(cells, np.ones(3))
    assert est.mean == pytest.approx(2.0)
    assert est.se == pytest.approx(np.sqrt(8 / 6))
    assert est.df == pytest.approx(64 / 38)
    assert est.high - est.mean == pytest.approx(scipy_stats.t.ppf(0.975, 64 / 38) * np.sqrt(8 / 6))


@pytest.mark.parametrize("n_seeds, seed_sd", [(1, 0.0), (3, 0.0), (3, 2.0), (5, 1.0)])
def test_intervals_cover_the_truth_at_their_level(n_seeds, seed_sd):
    """Simulated from the model the interval assumes: coverage near 95 %, also with a strong seed effect
    (which an interval over videos alone would miss)."""
    rng = np.random.default_rng(n_seeds * 10 + int(seed_sd))
    n_videos, trials, truth = 12, 600, 0.7
    covered = 0
    for _ in range(trials):
        cells = (truth + rng.normal(0, seed_sd, size=(n_seeds, 1)) + rng.normal(0, 2.0, size=(1, n_videos))
                 + rng.normal(0, 1.0, size=(n_seeds, n_videos)))
        est = paired_difference(cells, np.ones(n_videos))
        covered += est.low <= truth <= est.high
    assert 0.91 <= covered / trials <= 0.99


def test_a_seed_effect_widens_the_interval():
    rng = np.random.default_rng(1)
    videos = rng.normal(1.0, 2.0, size=30)
    same = paired_difference(np.stack([videos, videos, videos]), np.ones(30))
    spread = paired_difference(np.stack([videos - 3, videos, videos + 3]), np.ones(30))
    assert spread.half_width > 1.5 * same.half_width


def test_interval_shrinks_with_more_videos():
    rng = np.random.default_rng(2)
    widths = {n: np.mean([paired_difference(rng.normal(0, 5, size=(1, n)), np.ones(n)).half_width for _ in range(50)])
              for n in (10, 40)}
    assert widths[40] < 0.6 * widths[10]  # about 1/sqrt(4) = 0.5


def test_bad_inputs_are_refused():
    with pytest.raises(DMMInputError, match="\\[S, V\\]"):
        paired_difference(np.zeros(3), np.ones(3))
    with pytest.raises(DMMInputError, match="V >= 2"):
        paired_difference(np.zeros((2, 1)), np.ones(1))
    with pytest.raises(DMMInputError, match="finite"):
        paired_difference(np.array([[np.nan, 1.0]]), np.ones(2))


def test_one_video_gives_the_object_weighted_mean_and_no_interval():
    # 2 seeds, one video of 2 objects: per seed the sums 2 and 4 over its objects -> mean (2 + 4) / (2 * 2)
    estimate = mean_without_interval(np.array([[2.0], [4.0]]), np.array([2]))
    assert estimate.mean == pytest.approx(1.5)
    assert np.isnan(estimate.se) and np.isnan(estimate.low) and np.isnan(estimate.high)
    assert (estimate.n_seeds, estimate.n_videos, estimate.n_objects) == (2, 1, 2)
    # the same weighting as paired_difference's mean once there are two videos
    two = paired_difference(np.array([[2.0, 1.0], [4.0, 3.0]]), np.array([2, 1]))
    assert two.mean == pytest.approx((2 + 1 + 4 + 3) / (2 * 3))


def test_interval_text_is_how_the_book_writes_a_difference():
    assert interval_text(1.234, -0.31, 2.7) == "+1.2 J&F points [-0.3, +2.7]"
    assert interval_text(-0.5, float("nan"), float("nan")) == "-0.5 J&F points (one video: no interval)"
    assert interval_text(0.351, 0.1, 0.6, unit="", digits=2) == "+0.35 [+0.10, +0.60]"
    estimate = paired_difference(np.array([[2.0, 1.0], [4.0, 3.0]]), np.array([2, 1]))
    assert estimate.text() == interval_text(estimate.mean, estimate.low, estimate.high)

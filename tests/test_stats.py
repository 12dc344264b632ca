"""dmmlib.lessons.stats: the paired bootstrap over seeds and videos."""

import numpy as np
import pytest

from dmmlib.errors import DMMInputError
from dmmlib.lessons.stats import paired_bootstrap


def test_constant_differences_have_no_uncertainty():
    counts = np.array([1, 2, 3])
    est = paired_bootstrap(np.full((3, 3), 0.5) * counts, counts)  # every object: +0.5
    assert est.mean == pytest.approx(0.5) and est.se == pytest.approx(0.0, abs=1e-12)
    assert est.low == pytest.approx(0.5) and est.high == pytest.approx(0.5)
    assert (est.n_seeds, est.n_videos, est.n_objects) == (3, 3, 6)


def test_mean_is_the_object_weighted_mean_over_seeds():
    differences = np.array([[1.0, 4.0], [3.0, 0.0]])  # sums over objects
    counts = np.array([1, 3])
    assert paired_bootstrap(differences, counts).mean == pytest.approx(8.0 / (2 * 4))


def test_interval_shrinks_with_more_videos_and_covers_the_truth():
    rng = np.random.default_rng(0)
    widths, covered = {}, []
    for n_videos in (10, 40):
        for trial in range(60):
            per_video = rng.normal(0.0, 5.0, size=(2, n_videos)) + rng.normal(0, 1.0, size=(2, 1))  # videos + seeds
            est = paired_bootstrap(per_video, np.ones(n_videos), n_boot=800, seed=trial)
            widths.setdefault(n_videos, []).append(est.half_width)
            covered.append(est.low <= 0.0 <= est.high)
    assert np.mean(widths[40]) < 0.7 * np.mean(widths[10])  # about 1/sqrt(4) = 0.5 with the seed part
    assert 0.8 <= np.mean(covered) <= 1.0


def test_one_seed_draws_only_videos_and_seed_spread_widens_the_interval():
    rng = np.random.default_rng(1)
    videos = rng.normal(1.0, 2.0, size=30)
    one = paired_bootstrap(videos[None, :], np.ones(30))
    assert one.n_seeds == 1 and one.low < 1.0 < one.high + 1.0
    same = paired_bootstrap(np.stack([videos, videos, videos]), np.ones(30))
    spread = paired_bootstrap(np.stack([videos - 3, videos, videos + 3]), np.ones(30))
    assert spread.half_width > 1.5 * same.half_width


def test_bad_inputs_are_refused():
    with pytest.raises(DMMInputError, match="\\[S, V\\]"):
        paired_bootstrap(np.zeros(3), np.ones(3))
    with pytest.raises(DMMInputError, match="finite"):
        paired_bootstrap(np.array([[np.nan, 1.0]]), np.ones(2))

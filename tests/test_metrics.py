"""dmmlib.metrics against slow loop-based references written from notes/davis-metrics.md."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from dmmlib.errors import DMMInputError
from dmmlib.evaluation.metrics import (
    Statistics,
    boundary_f,
    boundary_map,
    boundary_tolerance,
    db_statistics,
    decay_bin_ids,
    jaccard,
    miou_per_frame,
    miou_per_instance,
    segtrack_ious,
    youtube_vos_g,
    youtube_vos_scores,
)

# ----------------------------------------------------------------------------- slow references


def ref_jaccard(gt, pred, void=None):
    h, w = gt.shape
    inter = union = 0
    for i in range(h):
        for j in range(w):
            if void is not None and void[i][j]:
                continue
            a, b = bool(gt[i][j]), bool(pred[i][j])
            inter += a and b
            union += a or b
    return 1.0 if union == 0 else inter / union


def ref_boundary(mask):
    """Pixel (i, j) differs from east, south or south-east, each clamped to the last row/col."""
    h, w = mask.shape
    out = np.zeros((h, w), bool)
    for i in range(h):
        for j in range(w):
            me = bool(mask[i][j])
            for di, dj in ((0, 1), (1, 0), (1, 1)):
                ni, nj = min(i + di, h - 1), min(j + dj, w - 1)
                if bool(mask[ni][nj]) != me:
                    out[i, j] = True
    return out


def ref_dilate(boundary, radius):
    h, w = boundary.shape
    r = int(radius)
    out = np.zeros((h, w), bool)
    for i in range(h):
        for j in range(w):
            if not boundary[i, j]:
                continue
            for dy in range(-r, r + 1):
                for dx in range(-r, r + 1):
                    if dy * dy + dx * dx <= r * r and 0 <= i + dy < h and 0 <= j + dx < w:
                        out[i + dy, j + dx] = True
    return out


def ref_tolerance(h, w, bound_th=0.008):
    return bound_th if bound_th >= 1 else math.ceil(bound_th * math.sqrt(h * h + w * w))


def ref_f(gt, pred, bound_th=0.008, void=None):
    gt = np.array(gt, bool)
    pred = np.array(pred, bool)
    if void is not None:
        gt &= ~void
        pred &= ~void
    r = ref_tolerance(*gt.shape, bound_th)
    gb, pb = ref_boundary(gt), ref_boundary(pred)
    n_gt, n_pred = int(gb.sum()), int(pb.sum())
    if n_pred == 0 and n_gt == 0:
        p, rc = 1.0, 1.0
    elif n_pred == 0:
        p, rc = 1.0, 0.0
    elif n_gt == 0:
        p, rc = 0.0, 1.0
    else:
        p = int((pb & ref_dilate(gb, r)).sum()) / n_pred
        rc = int((gb & ref_dilate(pb, r)).sum()) / n_gt
    return 0.0 if p + rc == 0 else 2 * p * rc / (p + rc)


def ref_ids(n):
    ids = []
    for k in range(5):
        ids.append(math.floor(1 + k * (n - 1) / 4 + 0.5) - 1)
    return [i % 256 for i in ids]


def ref_nanmean(values):
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else float("nan")


def ref_statistics(x):
    ids = ref_ids(len(x))
    recall = sum(1 for v in x if v > 0.5) / len(x)
    return ref_nanmean(x), recall, ref_nanmean(x[ids[0] : ids[1] + 1]) - ref_nanmean(x[ids[3] : ids[4] + 1])


# ----------------------------------------------------------------------------- random masks


def random_mask(rng, h, w):
    kind = rng.integers(0, 7)
    if kind == 0:
        return np.zeros((h, w), bool)
    if kind == 1:
        return np.ones((h, w), bool)
    if kind == 2:  # a single pixel, often at a border or corner
        m = np.zeros((h, w), bool)
        m[rng.choice([0, h - 1, rng.integers(0, h)]), rng.choice([0, w - 1, rng.integers(0, w)])] = True
        return m
    if kind == 3:  # a rectangle, often touching the border
        m = np.zeros((h, w), bool)
        r0, r1 = sorted(rng.integers(0, h + 1, 2))
        c0, c1 = sorted(rng.integers(0, w + 1, 2))
        m[r0:r1, c0:c1] = True
        return m
    if kind == 4:  # full minus a few pixels
        m = np.ones((h, w), bool)
        m[rng.integers(0, h, 2), rng.integers(0, w, 2)] = False
        return m
    return rng.random((h, w)) < rng.uniform(0.1, 0.9)


def random_pair(rng):
    h, w = int(rng.integers(1, 23)), int(rng.integers(1, 23))
    gt = random_mask(rng, h, w)
    if rng.random() < 0.3:  # a perturbed copy: shifted, so boundaries partly match
        pred = np.roll(gt, (int(rng.integers(-2, 3)), int(rng.integers(-2, 3))), axis=(0, 1))
    else:
        pred = random_mask(rng, h, w)
    return gt, pred


def test_boundary_map_matches_reference_on_random_masks():
    rng = np.random.default_rng(0)
    for _ in range(400):
        mask = random_mask(rng, int(rng.integers(1, 20)), int(rng.integers(1, 20)))
        np.testing.assert_array_equal(boundary_map(mask), ref_boundary(mask))


@pytest.mark.parametrize("seed", range(4))
def test_j_and_f_match_reference_on_random_masks(seed):
    rng = np.random.default_rng(seed)
    for _ in range(150):
        gt, pred = random_pair(rng)
        # A large relative tolerance makes small images use radii 1..4, not just 1.
        bound_th = float(rng.choice([0.008, 0.05, 0.1, 2.0, 3.0]))
        void = rng.random(gt.shape) < 0.1 if rng.random() < 0.3 else None
        assert jaccard(gt, pred, void) == pytest.approx(ref_jaccard(gt, pred, void), abs=1e-15)
        assert boundary_f(gt, pred, bound_th, void) == pytest.approx(ref_f(gt, pred, bound_th, void), abs=1e-15)


def test_stacks_give_one_value_per_frame():
    rng = np.random.default_rng(7)
    h, w = 9, 13
    gts = np.stack([random_mask(rng, h, w) for _ in range(12)])
    preds = np.stack([random_mask(rng, h, w) for _ in range(12)])
    j = jaccard(gts, preds)
    f = boundary_f(gts, preds, 0.2)
    assert j.shape == f.shape == (12,)
    for t in range(12):
        assert j[t] == pytest.approx(ref_jaccard(gts[t], preds[t]), abs=1e-15)
        assert f[t] == pytest.approx(ref_f(gts[t], preds[t], 0.2), abs=1e-15)
    np.testing.assert_array_equal(boundary_map(gts), np.stack([ref_boundary(g) for g in gts]))


def test_f_at_davis_resolution_matches_reference_near_borders():
    rng = np.random.default_rng(3)
    h, w = 48, 85  # tolerance 1 at this size; objects hug the borders
    for _ in range(6):
        gt = np.zeros((h, w), bool)
        gt[rng.integers(0, 10) :, : rng.integers(60, 86)] = True
        pred = np.roll(gt, int(rng.integers(-3, 4)), axis=1)
        pred[rng.random((h, w)) < 0.02] ^= True
        for bound_th in (0.008, 5.0):
            assert boundary_f(gt, pred, bound_th) == pytest.approx(ref_f(gt, pred, bound_th), abs=1e-15)


# ----------------------------------------------------------------------------- hand-computed cases


def test_full_vs_empty_full_vs_rectangle_full_minus_one_pixel():
    full = np.ones((30, 40), bool)
    empty = np.zeros_like(full)
    rect = empty.copy()
    rect[5:10, 5:10] = True
    almost = full.copy()
    almost[3, 3] = False
    assert jaccard(full, empty) == 0.0
    assert boundary_f(full, empty) == 1.0  # neither has a boundary
    assert boundary_f(full, rect) == 0.0
    assert jaccard(full, almost) == pytest.approx(1199 / 1200)
    assert boundary_f(full, almost) == 0.0
    assert jaccard(empty, empty) == 1.0
    assert boundary_f(empty, empty) == 1.0


def test_full_minus_one_pixel_j_is_about_0_9998():
    full = np.ones((50, 100), bool)
    almost = full.copy()
    almost[20, 30] = False
    assert jaccard(full, almost) == pytest.approx(0.9998, abs=1e-12)
    assert boundary_f(almost, full) == 0.0


def test_boundary_map_reads_non_zero_as_foreground_and_checks_its_input():
    labels = np.array([[1, 2, 0], [2, 1, 0], [0, 0, 0]])  # two non-zero values: one foreground
    np.testing.assert_array_equal(boundary_map(labels), boundary_map(labels > 0))
    assert not boundary_map(np.full((3, 3), 7)).any()
    for shape in [(5,), (0, 5), (5, 0), (2, 3, 0), (2, 0, 3)]:
        with pytest.raises(DMMInputError, match=r"^mask must be \[H, W\] or \[T, H, W\] with at least one pixel"):
            boundary_map(np.zeros(shape))
    with pytest.raises(DMMInputError, match="^mask holds NaN"):
        boundary_map(np.array([[0.0, np.nan]]))


def test_single_pixel_boundaries():
    m = np.zeros((5, 6), bool)
    m[2, 3] = True
    assert set(zip(*np.nonzero(boundary_map(m)))) == {(2, 3), (1, 3), (2, 2), (1, 2)}
    corner = np.zeros((5, 6), bool)
    corner[4, 5] = True  # bottom-right corner: never a boundary itself
    assert set(zip(*np.nonzero(boundary_map(corner)))) == {(3, 5), (4, 4), (3, 4)}
    origin = np.zeros((5, 6), bool)
    origin[0, 0] = True
    assert set(zip(*np.nonzero(boundary_map(origin)))) == {(0, 0)}
    assert not boundary_map(np.ones((5, 6))).any()
    assert not boundary_map(np.zeros((5, 6))).any()


@pytest.mark.parametrize(
    "shape, expected",
    [
        ((30, 40), 1),
        ((120, 216), 2),
        ((136, 240), 3),
        ((240, 427), 4),
        ((480, 640), 7),
        ((480, 854), 8),
        ((75, 100), 1),
        ((225, 300), 3),  # float32 would give 4
        ((450, 600), 6),  # float32 would give 7
    ],
)
def test_boundary_tolerance_table(shape, expected):
    value = boundary_tolerance(shape)
    assert isinstance(value, float) and value == expected


def test_boundary_tolerance_at_one_is_a_pixel_count_and_shapes_are_checked():
    # official: bound_pix = bound_th if bound_th >= 1 else ceil(bound_th * ||(H, W)||)
    assert boundary_tolerance((480, 854), 1) == 1.0 and boundary_tolerance((480, 854), 1.5) == 1.5
    for shape in [(5,), (0, 5), (5, 0), (2, 3, 4)]:
        with pytest.raises(DMMInputError, match="shape must be"):
            boundary_tolerance(shape)


def test_jaccard_of_one_mask_is_a_python_float_and_an_empty_union_is_quiet():
    a = np.zeros((4, 4), bool)
    b = a.copy()
    b[0, :2] = True
    assert type(jaccard(a, b)) is float and jaccard(a, b) == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 0/0 before the empty-union rule must not warn
        assert jaccard(a, a) == 1.0
        assert jaccard(np.stack([a, b]), np.stack([a, a])).tolist() == [1.0, 0.0]


def test_boundary_tolerance_pixel_count_and_bad_values():
    assert boundary_tolerance((10, 10), 3) == 3.0
    for bad in (0, -1, float("nan"), "x"):
        with pytest.raises(DMMInputError, match="bound_th"):
            boundary_tolerance((10, 10), bad)


def test_tolerance_is_used_by_f():
    # Two vertical edges 3 px apart at 225x300 (tolerance 3): matched; 4 px apart: not.
    gt = np.zeros((225, 300), bool)
    gt[:, :100] = True
    near = np.zeros_like(gt)
    near[:, :103] = True
    far = np.zeros_like(gt)
    far[:, :104] = True
    assert boundary_f(gt, near) == 1.0
    assert boundary_f(gt, far) == 0.0


def test_symmetry():
    rng = np.random.default_rng(11)
    for _ in range(30):
        gt, pred = random_pair(rng)
        assert jaccard(gt, pred) == jaccard(pred, gt)
        assert boundary_f(gt, pred, 0.1) == pytest.approx(boundary_f(pred, gt, 0.1), abs=1e-15)


def test_void_is_excluded_from_j_and_removed_before_boundaries():
    gt = np.zeros((10, 10), bool)
    gt[2:6, 2:6] = True
    pred = np.zeros_like(gt)
    pred[2:6, 2:8] = True
    void = np.zeros_like(gt)
    void[:, 6:] = True
    assert jaccard(gt, pred) == pytest.approx(16 / 24)
    assert jaccard(gt, pred, void) == 1.0
    assert boundary_f(gt, pred, 1.0, void) == 1.0


def test_bad_inputs_name_the_argument():
    with pytest.raises(DMMInputError, match="pred has shape"):
        jaccard(np.zeros((3, 4)), np.zeros((4, 3)))
    with pytest.raises(DMMInputError, match="gt must be"):
        boundary_f(np.zeros(5), np.zeros(5))
    with pytest.raises(DMMInputError, match="void has shape"):
        jaccard(np.zeros((3, 4)), np.zeros((3, 4)), np.zeros((3, 3)))


# ----------------------------------------------------------------------------- statistics


@pytest.mark.parametrize(
    "n, expected",
    [
        (10, [0, 2, 5, 7, 9]),
        (12, [0, 3, 6, 8, 11]),
        (14, [0, 3, 7, 10, 13]),
        (16, [0, 4, 8, 11, 15]),
        (18, [0, 4, 9, 13, 17]),
        (100, [0, 25, 50, 74, 99]),
        (1, [0, 0, 0, 0, 0]),
        (2, [0, 0, 1, 1, 1]),
        (257, [0, 64, 128, 192, 0]),  # uint8 wrap of the official code
    ],
)
def test_decay_ids(n, expected):
    assert decay_bin_ids(n).tolist() == expected
    assert ref_ids(n) == expected


def test_recall_is_strict_and_nan_counts_as_miss():
    stats = db_statistics([0.5, 0.5000001, np.nan, 0.9])
    assert stats.recall == 0.5
    assert stats.mean == pytest.approx((0.5 + 0.5000001 + 0.9) / 3)
    assert isinstance(stats, Statistics)


def test_decay_small_and_wrapped_sequences():
    assert db_statistics([0.7]).decay == 0.0
    assert db_statistics([0.9, 0.2]).decay == pytest.approx(0.7)
    # n = 10: first bin frames 0..2, last bin frames 7..9.
    x = np.arange(10) / 10
    assert db_statistics(x).decay == pytest.approx(np.mean(x[0:3]) - np.mean(x[7:10]))
    assert math.isnan(db_statistics(np.ones(257)).decay)  # last bin wraps to x[192:1], empty


def test_statistics_match_reference_on_random_series():
    rng = np.random.default_rng(5)
    for _ in range(200):
        n = int(rng.integers(1, 300))
        x = rng.random(n)
        x[rng.random(n) < 0.05] = np.nan
        ours = db_statistics(x)
        ref = ref_statistics(list(x))
        for a, b in zip(ours, ref):
            assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-12)


def test_statistics_reject_empty():
    with pytest.raises(DMMInputError, match="per_frame"):
        db_statistics([])


@pytest.mark.parametrize("bad", [[0.5, 1.5], [-0.1, 0.5], [0.5, np.inf], [1.0 + 1e-9]])
def test_statistics_reject_scores_outside_0_1(bad):
    """J and F lie in [0, 1]; a score outside is a bug upstream, not a frame to average."""
    with pytest.raises(DMMInputError, match=r"outside \[0, 1\]"):
        db_statistics(bad)
    assert db_statistics([0.0, 1.0, np.nan]).mean == 0.5  # the bounds themselves and NaN are fine


def test_statistics_reject_non_numbers_and_average_in_float64():
    with pytest.raises(DMMInputError, match="per_frame must be a 1-D array of scores"):
        db_statistics(["a", "b"])
    x = np.array([0.1, 0.2, 0.7, 0.3], dtype=np.float32)
    assert db_statistics(x).mean == np.mean(x.astype(np.float64))  # as the float64 scores of the evaluation


# ----------------------------------------------------------------------------- YouTube-VOS, SegTrack v2


def test_youtube_vos_scores():
    objects = [("cat", 0.8, 0.9), ("cat", 0.6, 0.7), ("yak", 0.2, 0.4)]
    scores = youtube_vos_scores(objects, seen_categories={"cat"})
    assert scores.j_seen == pytest.approx(0.7) and scores.f_seen == pytest.approx(0.8)
    assert scores.j_unseen == pytest.approx(0.2) and scores.f_unseen == pytest.approx(0.4)
    assert scores.overall == pytest.approx((0.7 + 0.8 + 0.2 + 0.4) / 4)
    assert youtube_vos_g(58.3, 41.6, 60.7, 46.3) == pytest.approx(51.725)  # paper Table 1 gives 51.7
    assert math.isnan(youtube_vos_scores([("cat", 1, 1)], {"cat"}).overall)
    with pytest.raises(DMMInputError, match=r"objects\[0\]"):
        youtube_vos_scores([("cat", 1)], {"cat"})


def segtrack_video():
    """Two instances, four 4x4 frames; instance 2 is absent in frame 2."""
    gt = np.zeros((2, 4, 4, 4), bool)
    pred = np.zeros_like(gt)
    gt[0, :, 0:2, 0:2] = True  # 4 px
    pred[0, :, 0:2, 0:1] = True  # IoU 0.5 in every frame
    gt[1, [0, 1, 3], 2:4, 2:4] = True
    pred[1, [0, 1, 3], 2:4, 2:4] = True  # IoU 1 where present
    pred[1, 2, 3, 3] = True  # a false positive where the instance is absent
    return gt, pred


def test_segtrack_miou_conventions():
    gt, pred = segtrack_video()
    ious = segtrack_ious(gt, pred)
    assert np.isnan(ious[:, 0]).all()  # first frame is given
    assert np.isnan(ious[1, 2])  # instance absent in frame 2
    # frames 1, 3: (0.5 + 1) / 2; frame 2: 0.5 only
    assert miou_per_frame(ious) == pytest.approx((0.75 + 0.5 + 0.75) / 3)
    # instance 1: 0.5; instance 2: 1
    assert miou_per_instance(ious) == pytest.approx(0.75)
    with_first = segtrack_ious(gt, pred, exclude_first=False)
    assert miou_per_frame(with_first) == pytest.approx((0.75 * 3 + 0.5) / 4)
    all_frames = segtrack_ious(gt, pred, present=np.ones((2, 4), bool))
    assert all_frames[1, 2] == 0.0  # the false positive now counts
    # pooled over videos: frames (resp. instances) weigh equally
    assert miou_per_frame([ious, ious[:1]]) == pytest.approx((0.75 + 0.5 + 0.75 + 0.5 * 3) / 6)
    assert miou_per_instance([ious, ious[:1]]) == pytest.approx((0.5 + 1 + 0.5) / 3)


def test_segtrack_bad_inputs():
    with pytest.raises(DMMInputError, match="K, T, H, W"):
        segtrack_ious(np.zeros((4, 4, 4)), np.zeros((4, 4, 4)))
    with pytest.raises(DMMInputError, match="present"):
        segtrack_ious(np.zeros((1, 2, 4, 4)), np.zeros((1, 2, 4, 4)), present=np.ones((2, 2)))
    with pytest.raises(DMMInputError, match="mIoU"):
        miou_per_frame(np.full((1, 3), np.nan))

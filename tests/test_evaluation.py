"""dmmlib.evaluation on a tiny hand-checkable DAVIS-layout fixture, and through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dmmlib.data.masks import write_label_png
from dmmlib.errors import DMMInputError
from dmmlib.evaluation.davis import (
    GLOBAL_COLUMNS,
    evaluate_davis,
    write_json,
    write_official_csvs,
)

H, W = 20, 30  # tolerance ceil(0.008 * 36.06) = 1 pixel


def rect(r0, r1, c0, c1):
    m = np.zeros((H, W), bool)
    m[r0:r1, c0:c1] = True
    return m


def labels_from(*masks):
    out = np.zeros((H, W), np.uint8)
    for k, m in enumerate(masks, start=1):
        out[m] = k
    return out


def write_sequence(root: Path, results: Path, name: str, gts: list[np.ndarray], preds: dict[int, np.ndarray]):
    for t, gt in enumerate(gts):
        image_dir = root / "JPEGImages" / "480p" / name
        image_dir.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (W, H)).save(image_dir / f"{t:05d}.jpg")
        write_label_png(root / "Annotations" / "480p" / name / f"{t:05d}.png", gt)
    for t, pred in preds.items():
        write_label_png(results / name / f"{t:05d}.png", pred)


@pytest.fixture()
def davis(tmp_path):
    """alpha: 5 frames, 2 objects (frames 1-3 scored); beta: 4 frames, 1 object, never predicted."""
    root, results = tmp_path / "DAVIS", tmp_path / "results"
    obj1, obj2 = rect(2, 6, 2, 8), rect(10, 14, 20, 28)
    void = rect(2, 6, 8, 10)
    gts = []
    for t in range(5):
        gt = labels_from(obj1, obj2)
        if t == 2:
            gt[void] = 255  # void is background in the semi-supervised evaluation
        if t == 3:
            gt[16:18, 0:3] = 3  # an id that appears only later above n_objects: ignored
        gts.append(gt)
    preds = {
        1: labels_from(obj1, obj2),  # both exact
        2: labels_from(obj1 | void, rect(0, 0, 0, 0)),  # object 1 spills onto the void, object 2 missed
        3: labels_from(obj1, rect(10, 14, 20, 24)),  # object 2 half: J = 0.5 exactly
    }
    write_sequence(root, results, "alpha", gts, preds)
    beta_gt = labels_from(rect(5, 15, 5, 25))
    write_sequence(root, results, "beta", [beta_gt] * 4, {1: np.zeros((H, W), np.uint8), 2: np.zeros((H, W), np.uint8)})
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("alpha\nbeta\n")
    return root, results


# F by hand, with the official rules: a rectangle of h x w pixels away from the image's last row and
# column has 2 (h + w) boundary pixels (its last row and column, and the row above and the column left
# of it, corner included); at 20 x 30 the tolerance is 1 pixel, i.e. a match lies within the cross
# {dy^2 + dx^2 <= 1}.
# * 4 x 6 object, prediction 4 x 8 (it spills 2 columns right): 20 and 24 boundary pixels; the GT
#   pixel (3, 7) of its right edge has no predicted boundary within reach (R = 19/20), nor have the 5
#   predicted pixels of column 9 and of (1, 9), (5, 9) beyond the GT's corners (P = 19/24):
#   F = 2PR / (P + R) = 361/418.
# * 4 x 8 object, prediction its left half (4 x 4): 24 and 16 boundary pixels; the predicted pixel in the
#   middle of the half's right edge is unmatched (P = 15/16), and so are the three rightmost pixels of
#   the GT's top and bottom rows and the three inner pixels of its right edge (R = 15/24): F = 3/4.
F_SPILL, F_HALF = 361 / 418, 3 / 4


def expected_figures():
    return {
        ("alpha", 1): ([1.0, 24 / 32, 1.0], [1.0, F_SPILL, 1.0]),
        ("alpha", 2): ([1.0, 0.0, 0.5], [1.0, 0.0, F_HALF]),
        ("beta", 1): ([0.0, 0.0], [0.0, 0.0]),
    }


def test_per_frame_scores_and_global_table(davis):
    root, results = davis
    result = evaluate_davis(root, results, progress=False, workers=1)
    expected = expected_figures()
    assert [(o.sequence, o.object_id) for o in result.objects] == list(expected)
    for o in result.objects:
        j, f = expected[(o.sequence, o.object_id)]
        np.testing.assert_allclose(o.j, j, rtol=0, atol=1e-15)
        np.testing.assert_allclose(o.f, f, rtol=0, atol=1e-15)
    assert result.objects[0].frames == ("00001", "00002", "00003")
    # By hand: recall is strict (object 2's 0.5 does not count); decay with n = 3 uses
    # bins x[0:2] and x[2:3]; n = 2 gives x0 - x1.
    a1, a2, b1 = result.objects
    assert a1.j_stats.mean == pytest.approx(2.75 / 3) and a1.j_stats.recall == 1.0
    assert a1.j_stats.decay == pytest.approx(0.875 - 1.0)
    assert a2.j_stats.mean == pytest.approx(0.5) and a2.j_stats.recall == pytest.approx(1 / 3)
    assert a2.j_stats.decay == pytest.approx(0.0)
    assert b1.j_stats == (0.0, 0.0, 0.0) and b1.f_stats == (0.0, 0.0, 0.0)
    g = result.global_scores
    j_mean = (2.75 / 3 + 0.5 + 0.0) / 3  # over all objects, not per sequence
    f_mean = (np.mean(expected[("alpha", 1)][1]) + np.mean(expected[("alpha", 2)][1])) / 3
    assert g["J-Mean"] == pytest.approx(j_mean)
    assert g["J-Recall"] == pytest.approx((1 + 1 / 3 + 0) / 3)
    assert g["J-Decay"] == pytest.approx(-0.125 / 3)
    assert g["F-Mean"] == pytest.approx(f_mean)
    assert g["J&F-Mean"] == pytest.approx((j_mean + f_mean) / 2)
    assert list(g) == list(GLOBAL_COLUMNS)


def test_pool_gives_the_same_numbers(davis):
    root, results = davis
    serial = evaluate_davis(root, results, progress=False, workers=1)
    pooled = evaluate_davis(root, results, progress=False, workers=2)
    assert serial.global_scores == pooled.global_scores
    for a, b in zip(serial.objects, pooled.objects):
        np.testing.assert_array_equal(a.f, b.f)


# ----------------------------------------------------------------------------- every column by hand

OBJ, SPILL, LINE = rect(2, 6, 2, 8), rect(10, 16, 14, 22), rect(14, 15, 5, 25)
WIDE, HALF = rect(2, 6, 18, 26), rect(2, 6, 18, 22)
# J and F of OBJ (4 x 6: 24 pixels, 20 boundary pixels) against each prediction, by hand (see above):
# * OBJ | SPILL: SPILL is 6 x 8 (48 pixels, 28 boundary pixels), far from OBJ: J = 24/72, and every
#   GT boundary pixel is a predicted one (R = 1) while P = 20/48: F = 10/17;
# * OBJ | LINE: LINE is 1 x 20 (20 pixels, 42 boundary pixels): J = 24/44, P = 20/62, R = 1: F = 20/41;
# * nothing: J = 0, and an empty predicted boundary against a non-empty one gives F = 0.
J_OF = {"exact": 1.0, "spill": 24 / 72, "line": 24 / 44, "empty": 0.0, "half": 0.5}
F_OF = {"exact": 1.0, "spill": 10 / 17, "line": 20 / 41, "empty": 0.0, "half": F_HALF}
PREDICTION = {"exact": OBJ, "spill": OBJ | SPILL, "line": OBJ | LINE, "empty": rect(0, 0, 0, 0)}


@pytest.fixture()
def hand_checked(tmp_path):
    """alpha: 7 frames, object 1 = OBJ, void (255) in the first annotation; beta: 5 frames, ids 1 and 3
    in the first annotation (so 3 objects; object 2 never appears), object 3 = WIDE."""
    root, results = tmp_path / "DAVIS", tmp_path / "results"
    first = labels_from(OBJ)
    first[12:16, 0:4] = 255
    alpha_cases = ["exact", "spill", "line", "line", "empty"]
    write_sequence(root, results, "alpha", [first] + [labels_from(OBJ)] * 6,
                   {t: labels_from(PREDICTION[case]) for t, case in enumerate(alpha_cases, start=1)})
    beta_gt = labels_from(OBJ, rect(0, 0, 0, 0), WIDE)
    beta_cases = [("exact", HALF), ("empty", WIDE), ("spill", WIDE)]
    write_sequence(root, results, "beta", [beta_gt] * 5,
                   {t: labels_from(PREDICTION[one], rect(0, 0, 0, 0), three)
                    for t, (one, three) in enumerate(beta_cases, start=1)})
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("alpha\nbeta\n")
    return root, results


def hand_statistics(x, decay):
    """(mean, recall, decay): recall counts scores strictly above 0.5; ``decay`` is given by hand."""
    return sum(x) / len(x), sum(v > 0.5 for v in x) / len(x), decay


def hand_objects():
    """Per object: J and F per scored frame and their (mean, recall, decay), all by hand.

    Decay: 5 scored frames give the bins x[0:2] and x[3:5]; 3 give x[0:2] and x[2:3]."""
    cases = ["exact", "spill", "line", "line", "empty"]
    a_j, a_f = [J_OF[c] for c in cases], [F_OF[c] for c in cases]
    b1_j, b1_f = [1.0, 0.0, 24 / 72], [1.0, 0.0, 10 / 17]
    b3_j, b3_f = [0.5, 1.0, 1.0], [F_HALF, 1.0, 1.0]
    return {
        "alpha_1": (a_j, a_f, hand_statistics(a_j, (1 + 1 / 3) / 2 - (6 / 11 + 0) / 2),
                    hand_statistics(a_f, (1 + 10 / 17) / 2 - (20 / 41 + 0) / 2)),
        "beta_1": (b1_j, b1_f, hand_statistics(b1_j, 1 / 2 - 1 / 3), hand_statistics(b1_f, 1 / 2 - 10 / 17)),
        "beta_2": ([1.0] * 3, [1.0] * 3, (1.0, 1.0, 0.0), (1.0, 1.0, 0.0)),  # empty GT, empty prediction
        "beta_3": (b3_j, b3_f, hand_statistics(b3_j, 3 / 4 - 1), hand_statistics(b3_f, (F_HALF + 1) / 2 - 1)),
    }


def hand_global():
    objects = hand_objects().values()
    column = lambda i, k: sum(o[i][k] for o in objects) / len(objects)  # noqa: E731 -- over all objects
    j_mean, f_mean = column(2, 0), column(3, 0)
    return {"J&F-Mean": (j_mean + f_mean) / 2, "J-Mean": j_mean, "J-Recall": column(2, 1), "J-Decay": column(2, 2),
            "F-Mean": f_mean, "F-Recall": column(3, 1), "F-Decay": column(3, 2)}


def test_object_count_is_the_largest_id_of_the_first_annotation_without_void(hand_checked):
    root, results = hand_checked
    result = evaluate_davis(root, results, progress=False, workers=1)
    assert [o.name for o in result.objects] == list(hand_objects())
    assert [o.frames for o in result.objects] == [tuple(f"{t:05d}" for t in range(1, 6))] + [("00001", "00002", "00003")] * 3


def test_a_first_annotation_with_void_but_no_object_contributes_nothing(tmp_path):
    """Void (255) is not an object: a sequence whose first annotation holds only background and void has no
    objects to score (as the official code), even when later frames and results show something."""
    root, results = tmp_path / "DAVIS", tmp_path / "results"
    only_void = labels_from()
    only_void[12:16, 0:4] = 255
    write_sequence(root, results, "gamma", [only_void] + [labels_from(OBJ)] * 3,
                   {t: labels_from(OBJ) for t in (1, 2)})
    write_sequence(root, results, "delta", [labels_from(OBJ)] * 4, {t: labels_from(OBJ) for t in (1, 2)})
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("gamma\ndelta\n")
    result = evaluate_davis(root, results, progress=False, workers=1)
    assert [o.name for o in result.objects] == ["delta_1"]


def test_every_figure_and_every_csv_column_by_hand(hand_checked, tmp_path):
    root, results = hand_checked
    result = evaluate_davis(root, results, progress=False, workers=1)
    expected = hand_objects()
    for o in result.objects:
        j, f, j_stats, f_stats = expected[o.name]
        np.testing.assert_allclose(o.j, j, rtol=0, atol=1e-15)
        np.testing.assert_allclose(o.f, f, rtol=0, atol=1e-15)
        np.testing.assert_allclose(o.j_stats, j_stats, rtol=0, atol=1e-15)
        np.testing.assert_allclose(o.f_stats, f_stats, rtol=0, atol=1e-15)
    g = hand_global()
    assert list(result.global_scores) == list(GLOBAL_COLUMNS)
    np.testing.assert_allclose([result.global_scores[c] for c in GLOBAL_COLUMNS], [g[c] for c in GLOBAL_COLUMNS],
                               rtol=0, atol=1e-15)
    # the figures differ from column to column, so a column filled from another would show
    assert len({round(v, 3) for v in g.values()}) == len(g)

    global_path, sequence_path = write_official_csvs(result, results, "val")
    assert global_path == results / "global_results-val.csv"
    assert sequence_path == results / "per-sequence_results-val.csv"
    assert global_path.read_text() == (
        "J&F-Mean,J-Mean,J-Recall,J-Decay,F-Mean,F-Recall,F-Decay\n"
        + ",".join(f"{g[c]:.3f}" for c in GLOBAL_COLUMNS) + "\n")
    rows = [f"{name},{j_stats[0]:.3f},{f_stats[0]:.3f}" for name, (_, _, j_stats, f_stats) in expected.items()]
    assert sequence_path.read_text() == "Sequence,J-Mean,F-Mean\n" + "\n".join(rows) + "\n"
    assert sequence_path.read_text().splitlines()[2] == "beta_1,0.444,0.529"  # (1 + 0 + 1/3) / 3, (1 + 10/17) / 3

    data = json.loads(write_json(result, tmp_path / "scores.json").read_text())
    assert data["split"] == "val"
    assert data["global"] == pytest.approx(g, rel=0, abs=1e-15)
    for item, (name, (j, f, j_stats, f_stats)) in zip(data["objects"], expected.items(), strict=True):
        assert item["name"] == name and f"{item['sequence']}_{item['object']}" == name
        assert item["J"] == pytest.approx(j, abs=1e-15) and item["F"] == pytest.approx(f, abs=1e-15)
        assert item["frames"] == list(result.objects[0].frames if name == "alpha_1" else ("00001", "00002", "00003"))
        for key, j_value, f_value in zip(("Mean", "Recall", "Decay"), j_stats, f_stats):
            assert item[f"J-{key}"] == pytest.approx(j_value, abs=1e-15), (name, key)
            assert item[f"F-{key}"] == pytest.approx(f_value, abs=1e-15), (name, key)


def test_existing_tables_are_refused_unless_forced(davis, tmp_path):
    root, results = davis
    result = evaluate_davis(root, results, progress=False, workers=1)
    global_path, sequence_path = write_official_csvs(result, results, "val")
    before = global_path.read_bytes(), sequence_path.read_bytes()
    with pytest.raises(DMMInputError, match="global_results-val.csv"):
        write_official_csvs(result, results, "val")
    assert (global_path.read_bytes(), sequence_path.read_bytes()) == before
    global_path.write_text("stale\n")
    write_official_csvs(result, results, "val", force=True)
    assert global_path.read_bytes() == before[0]
    json_path = write_json(result, tmp_path / "scores.json")
    with pytest.raises(DMMInputError, match="scores.json"):
        write_json(result, json_path)


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "dmmlib", "evaluate", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_prints_tables_and_writes_csvs(davis, tmp_path):
    root, results = davis
    out = run_cli("--davis-root", root, "--results", results, "--json", tmp_path / "s.json", "--workers", "1")
    assert out.returncode == 0, out.stderr
    assert "J&F-Mean" in out.stdout and "alpha_2" in out.stdout and "beta_1" in out.stdout
    assert (results / "global_results-val.csv").is_file() and (tmp_path / "s.json").is_file()
    again = run_cli("--davis-root", root, "--results", results, "--workers", "1")
    assert again.returncode == 2 and "already exists" in again.stderr and "Traceback" not in again.stderr


def _break_missing_frame(root, results):
    (results / "alpha" / "00002.png").unlink()
    return "alpha/00002.png"


def _break_wrong_size(root, results):
    write_label_png(results / "alpha" / "00003.png", np.zeros((H + 1, W), np.uint8))
    return "alpha/00003.png"


def _break_id_too_high(root, results):
    write_label_png(results / "beta" / "00002.png", np.full((H, W), 2, np.uint8))
    return "beta/00002.png"


def _break_void_in_result(root, results):
    write_label_png(results / "beta" / "00001.png", np.full((H, W), 255, np.uint8))
    return "beta/00001.png"


def _break_missing_split(root, results):
    (root / "ImageSets" / "2017" / "val.txt").unlink()
    return "val.txt"


def _break_empty_split(root, results):
    (root / "ImageSets" / "2017" / "val.txt").write_text("\n")
    return "val.txt"


@pytest.mark.parametrize(
    "breaker, words",
    [
        (_break_missing_frame, "does not exist; expected a label PNG for annotation"),
        (_break_wrong_size, "21x30"),
        (_break_id_too_high, "object id 2"),
        (_break_void_in_result, "255"),
        (_break_missing_split, "does not exist"),
        (_break_empty_split, "no sequences"),
    ],
)
def test_cli_errors_name_the_file(davis, breaker, words):
    root, results = davis
    named = breaker(root, results)
    out = run_cli("--davis-root", root, "--results", results, "--workers", "1", "--no-progress")
    assert out.returncode == 2
    assert out.stderr.startswith("error: ")
    assert named in out.stderr and words in out.stderr
    assert "Traceback" not in out.stderr
    assert not (results / "global_results-val.csv").exists()


def test_error_from_a_worker_thread_is_a_clear_error(davis):
    root, results = davis
    (results / "beta" / "00001.png").unlink()
    with pytest.raises(DMMInputError, match="beta/00001.png"):
        evaluate_davis(root, results, progress=False, workers=2)


@pytest.mark.parametrize("breaker, words", [(_break_id_too_high, "object id 2 but the sequence has 1 objects"),
                                             (_break_void_in_result, "void label 255")])
def test_result_ids_are_checked_against_the_annotation_in_process(davis, breaker, words):
    """A result PNG holds 0 and the ids 1..n_objects of its sequence's first annotation; the error names both files."""
    root, results = davis
    named = breaker(root, results)
    annotation = f"beta/{Path(named).name}"
    with pytest.raises(DMMInputError, match=words) as raised:
        evaluate_davis(root, results, progress=False, workers=1)
    message = str(raised.value)
    assert named in message
    assert f"for annotation {root / 'Annotations' / '480p' / annotation}" in message


def test_layout_errors_name_the_folder(davis):
    root, results = davis
    (results / "beta" / "00001.png").rename(results / "beta-moved")
    (results / "beta" / "00002.png").unlink()
    (results / "beta").rmdir()
    with pytest.raises(DMMInputError, match="results folder .*beta"):
        evaluate_davis(root, results, progress=False, workers=1)
    (root / "Annotations" / "480p" / "alpha" / "00004.png").unlink()
    with pytest.raises(DMMInputError, match="4 annotation PNGs .* 5 frames"):
        evaluate_davis(root, results, progress=False, workers=1)
    for jpg in (root / "JPEGImages" / "480p" / "alpha").glob("*.jpg"):
        jpg.unlink()
    with pytest.raises(DMMInputError, match="no JPEG frames in .*alpha"):
        evaluate_davis(root, results, progress=False, workers=1)


def test_too_short_sequences_and_mixed_sizes_are_errors(tmp_path):
    root, results = tmp_path / "D", tmp_path / "R"
    gt = labels_from(rect(2, 6, 2, 8))
    write_sequence(root, results, "short", [gt, gt], {})
    (results / "short").mkdir(parents=True)
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("short\n")
    with pytest.raises(DMMInputError, match="at least 3"):
        evaluate_davis(root, results, progress=False, workers=1)
    write_sequence(root, results, "mixed", [gt, np.zeros((H, W + 2), np.uint8), gt], {1: gt})
    (root / "ImageSets" / "2017" / "val.txt").write_text("mixed\n")
    with pytest.raises(DMMInputError, match="mixed/00001.png is 20x32"):
        evaluate_davis(root, results, progress=False, workers=1)


def test_sequence_without_objects_contributes_nothing(davis):
    root, results = davis
    empty = np.zeros((H, W), np.uint8)
    write_sequence(root, results, "gamma", [empty] * 3, {1: empty})
    (root / "ImageSets" / "2017" / "val.txt").write_text("alpha\nbeta\ngamma\n")
    with_gamma = evaluate_davis(root, results, progress=False, workers=1)
    assert [o.sequence for o in with_gamma.objects] == ["alpha", "alpha", "beta"]
